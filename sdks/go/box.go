package boxlite

/*
#include "bridge.h"
*/
import "C"

import (
	"context"
	"sync"
)

// Box is a handle to a box. The box itself is durable: closing the handle (Close)
// neither stops nor removes it. Methods are safe for concurrent use.
type Box struct {
	rt *Runtime
	id string

	mu sync.Mutex
	c  *C.CBoxHandle // nil once closed
}

var errBoxClosed = &Error{Code: CodeInvalidState, Message: "the box handle is closed"}

// boxResult is what a box callback delivers.
type boxResult struct {
	box     *Box
	created bool
}

// adoptBox wraps a handle a callback received (the Box owns it from here).
func (rt *Runtime) adoptBox(h *C.CBoxHandle) *Box {
	id := C.boxlite_box_id(h)
	b := &Box{rt: rt, id: goStr(id), c: h}
	C.boxlite_free_string(id)
	rt.track(b)
	return b
}

// removeLateBox undoes a create whose caller gave up: the box is removed (force) and
// the handle freed.
func removeLateBox(v any) {
	r := v.(boxResult)
	removeQuietly(r.box)
	r.box.Close()
}

// removeLateCreated undoes a get-or-create whose caller gave up: a box it created is
// removed, one it found is kept; the handle is freed.
func removeLateCreated(v any) {
	r := v.(boxResult)
	if r.created {
		removeQuietly(r.box)
	}
	r.box.Close()
}

// removeQuietly queues a forced removal nobody waits for.
func removeQuietly(b *Box) {
	rt := b.rt
	id := cstr(b.id)
	defer freeC(id)
	_ = rt.fire(nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_remove(rt.c, id, 1, key, e)
	})
}

// closeLateBox frees a handle whose caller gave up (Get).
func closeLateBox(v any) { v.(boxResult).box.Close() }

// ID is the box's id.
func (b *Box) ID() string { return b.id }

func (b *Box) acquire() error {
	b.mu.Lock()
	if b.c == nil {
		b.mu.Unlock()
		if b.rt.isClosed() {
			return ErrRuntimeClosed
		}
		return errBoxClosed
	}
	return nil
}

func (b *Box) release() { b.mu.Unlock() }

// Close frees the handle (the box is neither stopped nor removed). Idempotent.
func (b *Box) Close() error {
	b.mu.Lock()
	c := b.c
	b.c = nil
	if c != nil {
		C.boxlite_box_free(c)
	}
	b.mu.Unlock()
	if c != nil {
		b.rt.untrack(b)
	}
	return nil
}

// Start boots the box (a running box is left as it is).
func (b *Box) Start(ctx context.Context) error {
	_, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_start_box(b.c, key, e)
	})
	return err
}

// Stop stops the box (its processes get 10 s to end, then the VM is killed).
func (b *Box) Stop(ctx context.Context) error {
	_, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_stop_box(b.c, key, e)
	})
	return err
}

// Remove removes the box (force stops it first if it runs). The handle stays open;
// Close it.
func (b *Box) Remove(ctx context.Context, force bool) error {
	return b.rt.Remove(ctx, b.id, force)
}

// Info returns the box's metadata.
func (b *Box) Info(ctx context.Context) (*BoxInfo, error) {
	v, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_box_info(b.c, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*BoxInfo), nil
}

// Metrics returns the box's figures.
func (b *Box) Metrics(ctx context.Context) (*BoxMetrics, error) {
	v, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_box_metrics(b.c, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*BoxMetrics), nil
}

// CopyInto copies a host file or directory into the box (as docker cp); a box that is
// not running is started first.
func (b *Box) CopyInto(ctx context.Context, hostSrc, guestDst string) error {
	if err := noNUL(hostSrc, guestDst); err != nil {
		return err
	}
	src, dst := cstr(hostSrc), cstr(guestDst)
	defer freeC(src)
	defer freeC(dst)
	_, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_copy_into(b.c, src, dst, key, e)
	})
	return err
}

// CopyOut copies a file or directory out of the box to the host (as docker cp).
func (b *Box) CopyOut(ctx context.Context, guestSrc, hostDst string) error {
	if err := noNUL(guestSrc, hostDst); err != nil {
		return err
	}
	src, dst := cstr(guestSrc), cstr(hostDst)
	defer freeC(src)
	defer freeC(dst)
	_, err := b.rt.call(ctx, b, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_copy_out(b.c, src, dst, key, e)
	})
	return err
}
