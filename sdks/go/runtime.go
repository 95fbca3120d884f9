package boxlite

/*
#include "bridge.h"
*/
import "C"

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Runtime is a boxlite runtime over one home directory: the C runtime, its image and
// volume handles, and the one goroutine that drains its events. Every method is safe
// for concurrent use. Close it when done.
type Runtime struct {
	// cmu guards the C runtime's lifetime: calls hold it for reading while they submit,
	// Close holds it for writing while it marks the runtime closed and frees it.
	cmu     sync.RWMutex
	c       *C.CBoxliteRuntime
	images  *C.CBoxliteImageHandle
	volumes *C.CBoxliteVolumeHandle
	closed  bool
	shut    atomic.Bool // Shutdown was accepted: C refuses every later call

	drainMS   int
	stop      chan struct{}
	drained   chan struct{}
	closeOnce sync.Once

	// Handles still open, freed by Close.
	hmu   sync.Mutex
	boxes map[*Box]struct{}
	execs map[*Execution]struct{}
}

// RuntimeOption configures NewRuntime.
type RuntimeOption func(*runtimeConfig)

type runtimeConfig struct {
	home    string
	drainMS int
}

// WithHomeDir sets the runtime's home directory (boxes, images, volumes). Without it,
// $BOXLITE_HOME, else ~/.boxlite.
func WithHomeDir(dir string) RuntimeOption {
	return func(c *runtimeConfig) { c.home = dir }
}

// WithDrainInterval sets how long one drain call waits for events (default 50 ms). It
// bounds how long Close waits for the drain goroutine; events are dispatched as soon
// as they arrive whatever its value.
func WithDrainInterval(d time.Duration) RuntimeOption {
	return func(c *runtimeConfig) {
		ms := d.Milliseconds()
		c.drainMS = int(min(max(ms, 1), 1000))
	}
}

// NewRuntime opens a runtime (synchronously) and starts its drain goroutine. Guest
// assets come from $BOXLITE_ASSETS or boxlite's default places.
func NewRuntime(opts ...RuntimeOption) (*Runtime, error) {
	cfg := runtimeConfig{drainMS: 50}
	for _, o := range opts {
		o(&cfg)
	}
	home := optCstr(cfg.home)
	defer freeC(home)
	var e C.FFIError
	var c *C.CBoxliteRuntime
	if code := C.boxlite_runtime_new(home, nil, 0, &c, &e); code != C.Ok {
		return nil, takeError(code, &e)
	}
	rt := &Runtime{
		c:       c,
		drainMS: cfg.drainMS,
		stop:    make(chan struct{}),
		drained: make(chan struct{}),
		boxes:   make(map[*Box]struct{}),
		execs:   make(map[*Execution]struct{}),
	}
	if code := C.boxlite_runtime_images(c, &rt.images, &e); code != C.Ok {
		err := takeError(code, &e)
		C.boxlite_runtime_free(c)
		return nil, err
	}
	if code := C.boxlite_runtime_volumes(c, &rt.volumes, &e); code != C.Ok {
		err := takeError(code, &e)
		C.boxlite_image_free(rt.images)
		C.boxlite_runtime_free(c)
		return nil, err
	}
	go rt.drainLoop()
	return rt, nil
}

// Version is the version of libboxlite.
func Version() string { return C.GoString(C.boxlite_version()) }

// drainLoop is the runtime's one drain goroutine: every C callback runs here, and the
// SDK's callbacks only copy, free and hand over (they never block nor run user code).
func (rt *Runtime) drainLoop() {
	defer close(rt.drained)
	c := rt.c // freed only after this goroutine ends
	for {
		select {
		case <-rt.stop:
			return
		default:
		}
		var e C.FFIError
		if C.boxlite_runtime_drain(c, C.int(rt.drainMS), &e) < 0 {
			C.boxlite_error_free(&e)
			time.Sleep(time.Duration(rt.drainMS) * time.Millisecond)
		}
	}
}

// Close closes the runtime: every call still in flight returns ErrRuntimeClosed at
// once (Wait included); the executions still open are closed, which kills their
// processes (Close waits up to 3 s for boxlite to confirm); the drain goroutine stops;
// the box handles still open are closed; and the C runtime is freed (its queued events
// are dropped, their payloads freed; work in flight is cancelled). Boxes keep running:
// they are durable (see Shutdown). Later calls return ErrRuntimeClosed. Close is
// idempotent and safe to call from any goroutine; it returns nil.
func (rt *Runtime) Close() error {
	rt.closeOnce.Do(func() {
		rt.cmu.Lock()
		rt.closed = true // no call submits after this
		rt.cmu.Unlock()
		sweepCalls(rt) // wake every caller

		// Free the executions still open while the drain runs: boxlite kills their
		// processes, then posts their exits. Freeing the runtime right away would cancel
		// those kills and leave the processes running in their boxes, so wait for the
		// exits (for a while: after Shutdown none comes; a dead box may never answer).
		rt.hmu.Lock()
		execs := make([]*Execution, 0, len(rt.execs))
		for x := range rt.execs {
			execs = append(execs, x)
		}
		rt.hmu.Unlock()
		for _, x := range execs {
			x.Close()
		}
		if !rt.shut.Load() {
			deadline := time.Now().Add(closeExitWait)
			for pendingExits(rt) > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}

		close(rt.stop)
		<-rt.drained
		sweep(rt) // what is left: no callback can come now

		rt.hmu.Lock()
		boxes := make([]*Box, 0, len(rt.boxes))
		for b := range rt.boxes {
			boxes = append(boxes, b)
		}
		rt.hmu.Unlock()
		for _, b := range boxes {
			b.Close()
		}
		rt.cmu.Lock()
		C.boxlite_image_free(rt.images)
		C.boxlite_volume_free(rt.volumes)
		C.boxlite_runtime_free(rt.c)
		rt.images, rt.volumes, rt.c = nil, nil, nil
		rt.cmu.Unlock()
	})
	return nil
}

// closeExitWait bounds how long Close waits for the exits of the executions it frees.
const closeExitWait = 3 * time.Second

// Shutdown stops the boxes this runtime started (each within timeout: 0 is boxlite's
// default of 10 s, a negative one waits as long as it takes) and returns when they
// have. The runtime refuses every call afterwards (ErrRuntimeClosed); Close it still.
// Boxes are stopped, not removed.
func (rt *Runtime) Shutdown(ctx context.Context, timeout time.Duration) error {
	secs := 0
	switch {
	case timeout < 0:
		secs = -1
	case timeout > 0:
		secs = int(min(math.Ceil(timeout.Seconds()), math.MaxInt32))
	}
	_, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		code := C.bxgo_runtime_shutdown(rt.c, C.int(secs), key, e)
		if code == C.Ok {
			rt.shut.Store(true)
		}
		return code
	})
	return err
}

// Create creates a box of image (for example "boxlite/busybox" or
// "docker.io/library/alpine:3.20"); it is created, not started (Start it, or Exec,
// which starts it). If ctx ends first, Create returns ctx.Err() and a box created
// after that is removed.
func (rt *Runtime) Create(ctx context.Context, image string, opts ...BoxOption) (*Box, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, err := buildOptions(image, opts)
	if err != nil {
		return nil, err
	}
	defer C.boxlite_options_free(o)
	v, err := rt.call(ctx, nil, removeLateBox, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_create_box(rt.c, o, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(boxResult).box, nil
}

// GetOrCreate returns the box named name, or creates it from image and opts (then
// created is true). If ctx ends first, a box it created after that is removed.
func (rt *Runtime) GetOrCreate(ctx context.Context, name, image string, opts ...BoxOption) (box *Box, created bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if name == "" {
		return nil, false, invalid("GetOrCreate needs a name")
	}
	o, err := buildOptions(image, append(append([]BoxOption(nil), opts...), WithName(name)))
	if err != nil {
		return nil, false, err
	}
	defer C.boxlite_options_free(o)
	v, err := rt.call(ctx, nil, removeLateCreated, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_get_or_create_box(rt.c, o, key, e)
	})
	if err != nil {
		return nil, false, err
	}
	r := v.(boxResult)
	return r.box, r.created, nil
}

// Get returns a handle to the box with this id, unique id prefix or name (ErrNotFound
// if there is none).
func (rt *Runtime) Get(ctx context.Context, idOrName string) (*Box, error) {
	if err := noNUL(idOrName); err != nil {
		return nil, err
	}
	k := cstr(idOrName)
	defer freeC(k)
	v, err := rt.call(ctx, nil, closeLateBox, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_get(rt.c, k, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(boxResult).box, nil
}

// Remove removes a box by id or name; force stops a running one first.
func (rt *Runtime) Remove(ctx context.Context, idOrName string, force bool) error {
	if err := noNUL(idOrName); err != nil {
		return err
	}
	k := cstr(idOrName)
	defer freeC(k)
	_, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_remove(rt.c, k, cbool(force), key, e)
	})
	return err
}

// GetInfo returns the info of a box by id or name.
func (rt *Runtime) GetInfo(ctx context.Context, idOrName string) (*BoxInfo, error) {
	if err := noNUL(idOrName); err != nil {
		return nil, err
	}
	k := cstr(idOrName)
	defer freeC(k)
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_get_info(rt.c, k, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*BoxInfo), nil
}

// ListInfo returns the info of every box in the home.
func (rt *Runtime) ListInfo(ctx context.Context) ([]BoxInfo, error) {
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_list_info(rt.c, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.([]BoxInfo), nil
}

// Metrics returns the runtime's counts.
func (rt *Runtime) Metrics(ctx context.Context) (*RuntimeMetrics, error) {
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_runtime_metrics(rt.c, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*RuntimeMetrics), nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (rt *Runtime) track(b *Box) {
	rt.hmu.Lock()
	rt.boxes[b] = struct{}{}
	rt.hmu.Unlock()
}

func (rt *Runtime) untrack(b *Box) {
	rt.hmu.Lock()
	delete(rt.boxes, b)
	rt.hmu.Unlock()
}

func (rt *Runtime) trackExec(x *Execution) {
	rt.hmu.Lock()
	rt.execs[x] = struct{}{}
	rt.hmu.Unlock()
}

func (rt *Runtime) untrackExec(x *Execution) {
	rt.hmu.Lock()
	delete(rt.execs, x)
	rt.hmu.Unlock()
}

// isClosed reports whether Close or Shutdown ran.
func (rt *Runtime) isClosed() bool {
	rt.cmu.RLock()
	defer rt.cmu.RUnlock()
	return rt.closed || rt.shut.Load()
}

// enter holds the runtime open for a synchronous C call; the caller runs unlock after.
func (rt *Runtime) enter() (unlock func(), err error) {
	rt.cmu.RLock()
	if rt.closed || rt.shut.Load() {
		rt.cmu.RUnlock()
		return nil, ErrRuntimeClosed
	}
	return rt.cmu.RUnlock, nil
}
