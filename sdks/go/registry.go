package boxlite

/*
#include "bridge.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"sync"
	"sync/atomic"
)

// How a C callback finds its Go side, and who owns what.
//
// Every asynchronous call registers an entry under the value of a fresh cgo.Handle and
// passes that value to C as user_data. cgo.Handle values are never reused, so a key
// names one entry for ever. Whoever removes an entry from the registry owns it: it
// deletes the handle and delivers the outcome, exactly once. That is the callback when
// the result arrives, or Runtime.Close when it sweeps the runtime's entries. The loser
// finds no entry: a callback that finds none frees the C payload it was given and
// returns; nothing is delivered twice and no handle is used after its deletion
// (callbacks only look keys up in the map, they never call Handle.Value).
//
// An execution's entry stays registered across its output chunks (which only look it
// up) and is removed by its exit event, the last one, or by the sweep.

type result struct {
	val any
	err error
}

type entry struct {
	rt *Runtime
	h  cgo.Handle

	// One-shot calls. complete hands the outcome to the waiting caller and must not
	// block. late, when set, undoes a value that arrived after the caller gave up (a box
	// created after its context was cancelled is removed).
	complete  func(result)
	late      func(any)
	abandoned bool // guarded by reg.mu

	// Executions.
	exec *Execution
}

// Counts for the tests: outcomes that arrived after their caller gave up, late values
// undone, and payloads freed by a callback that found its entry gone (taken by Close).
var abandonedSettled, lateUndone, orphansFreed atomic.Int64

var reg = struct {
	mu sync.Mutex
	m  map[uintptr]*entry
}{m: make(map[uintptr]*entry)}

func register(e *entry) uintptr {
	e.h = cgo.NewHandle(e)
	key := uintptr(e.h)
	reg.mu.Lock()
	reg.m[key] = e
	reg.mu.Unlock()
	return key
}

// take removes the entry of key and makes the caller its owner; nil if another owner
// took it first.
func take(key uintptr) (e *entry, abandoned bool) {
	reg.mu.Lock()
	e = reg.m[key]
	if e != nil {
		delete(reg.m, key)
		abandoned = e.abandoned
	}
	reg.mu.Unlock()
	return e, abandoned
}

// lookupExec finds the execution of key without taking its entry (chunk callbacks).
func lookupExec(key uintptr) *Execution {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if e := reg.m[key]; e != nil {
		return e.exec
	}
	return nil
}

// abandon marks e as given up by its caller if it is still registered (its owner will
// then undo a late value). False: an owner took it, and its outcome is on the way.
func abandon(e *entry) bool {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.m[uintptr(e.h)] == e {
		e.abandoned = true
		return true
	}
	return false
}

// settle is the owner's half: the handle goes and the outcome is delivered (or undone).
func settle(e *entry, abandoned bool, r result) {
	e.h.Delete()
	if abandoned || e.complete == nil {
		if abandoned {
			abandonedSettled.Add(1)
		}
		if r.err == nil && r.val != nil && e.late != nil {
			lateUndone.Add(1)
			e.late(r.val)
		}
		return
	}
	e.complete(r)
}

// sweepCalls takes every call entry of rt and wakes its caller with ErrRuntimeClosed.
// Executions are woken too (their Wait returns ErrRuntimeClosed) but keep their
// entries: their exit events are still due, and take them (see Runtime.Close).
func sweepCalls(rt *Runtime) {
	var calls []*entry
	var flags []bool
	var execs []*Execution
	reg.mu.Lock()
	for k, e := range reg.m {
		if e.rt != rt {
			continue
		}
		if e.exec != nil {
			execs = append(execs, e.exec)
			continue
		}
		delete(reg.m, k)
		calls = append(calls, e)
		flags = append(flags, e.abandoned)
	}
	reg.mu.Unlock()
	for _, x := range execs {
		x.finalize(exitStatus(exitForceClosed), ErrRuntimeClosed)
	}
	for i, e := range calls {
		settle(e, flags[i], result{err: ErrRuntimeClosed})
	}
}

// sweep takes every entry of rt, calls and executions alike (the drain has stopped:
// no callback will come for them).
func sweep(rt *Runtime) {
	sweepCalls(rt)
	var mine []*entry
	reg.mu.Lock()
	for k, e := range reg.m {
		if e.rt == rt {
			delete(reg.m, k)
			mine = append(mine, e)
		}
	}
	reg.mu.Unlock()
	for _, e := range mine {
		e.h.Delete()
		e.exec.finalize(exitStatus(exitForceClosed), ErrRuntimeClosed)
	}
}

// pendingExits counts rt's executions whose exit event has not come.
func pendingExits(rt *Runtime) int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	n := 0
	for _, e := range reg.m {
		if e.rt == rt && e.exec != nil {
			n++
		}
	}
	return n
}

// guard is an object whose C handle must stay alive while a call is submitted (a box
// or an execution): acquire locks it and fails if it was closed.
type guard interface {
	acquire() error
	release()
}

type submitFn func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode

// post registers an entry and submits the call, under the runtime's read lock so that
// Close cannot free the C runtime meanwhile. On a synchronous failure the entry is
// taken back (no callback will come) and the error returned.
func (rt *Runtime) post(complete func(result), late func(any), submit submitFn) (*entry, error) {
	rt.cmu.RLock()
	defer rt.cmu.RUnlock()
	if rt.closed || rt.shut.Load() {
		return nil, ErrRuntimeClosed
	}
	e := &entry{rt: rt, complete: complete, late: late}
	key := register(e)
	var ferr C.FFIError
	if code := submit(C.uintptr_t(key), &ferr); code != C.Ok {
		if mine, _ := take(key); mine != nil {
			mine.h.Delete()
		}
		return nil, takeError(code, &ferr)
	}
	return e, nil
}

// call is an asynchronous call made synchronous for a Go caller: submit, then wait for
// the result, the context, or Close.
func (rt *Runtime) call(ctx context.Context, g guard, late func(any), submit submitFn) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan result, 1)
	if g != nil {
		if err := g.acquire(); err != nil {
			return nil, err
		}
	}
	e, err := rt.post(func(r result) { ch <- r }, late, submit)
	if g != nil {
		g.release()
	}
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.val, r.err
	case <-ctx.Done():
		if abandon(e) {
			return nil, ctx.Err()
		}
		// The result won the race; it is already being delivered.
		r := <-ch
		return r.val, r.err
	}
}

// fire submits a call nobody waits for (cleanups); its outcome is dropped, a late
// value undone by late.
func (rt *Runtime) fire(g guard, late func(any), submit submitFn) error {
	if g != nil {
		if err := g.acquire(); err != nil {
			return err
		}
		defer g.release()
	}
	_, err := rt.post(nil, late, submit)
	return err
}
