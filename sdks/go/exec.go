package boxlite

/*
#include "bridge.h"
*/
import "C"

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Command describes a command to run in a box.
type Command struct {
	Name    string
	Args    []string
	Env     []string // "KEY=value" entries added to the box's environment
	Workdir string   // absolute; "" is the box's default
	User    string   // "nobody", "1000:1000", ...; "" is the image's user
	// Timeout, when positive, has the agent kill the command after it; the exit status
	// is then TimedOut.
	Timeout time.Duration
	// TTY runs the command under a terminal (24 rows, 80 columns; see ResizeTTY).
	TTY bool

	// Stdin, when set, is copied to the command's stdin, which is then closed. When
	// nil, write through Execution.Stdin (Box.Run closes it at once).
	Stdin io.Reader
	// Stdout and Stderr receive the output, byte for byte. OnStdout and OnStderr are
	// called with each chunk (the slice is theirs to keep). Both run on the
	// execution's own goroutine, in the order the chunks came, never on the drain
	// goroutine; Wait returns after the last of them.
	Stdout   io.Writer
	Stderr   io.Writer
	OnStdout func([]byte)
	OnStderr func([]byte)
}

// Execution is a command running in a box. Close it when done: closing kills a
// process that is still running. Methods are safe for concurrent use.
type Execution struct {
	rt *Runtime

	mu sync.Mutex
	c  *C.CExecutionHandle // nil once closed

	// Output, handed from the drain goroutine to the delivery goroutine.
	pmu    sync.Mutex
	queue  []chunk
	fin    *final
	wake   chan struct{}
	out    io.Writer
	errw   io.Writer
	outBad bool
	errBad bool
	wErr   error
	ctxErr error // guarded by pmu: the context that killed it

	done   chan struct{}
	status ExitStatus
	err    error
}

type chunk struct {
	stream int // 1 stdout, 2 stderr
	data   []byte
}

type final struct {
	status ExitStatus
	err    error
}

var errExecClosed = &Error{Code: CodeInvalidState, Message: "the execution is closed"}

// Exec starts name with args in the box (a box that is not running is started first)
// and returns at once. The command's output is discarded unless read through
// ExecCommand's Command; see ExecCommand for ctx.
func (b *Box) Exec(ctx context.Context, name string, args ...string) (*Execution, error) {
	return b.ExecCommand(ctx, Command{Name: name, Args: args})
}

// ExecCommand starts cmd in the box and returns at once. As with exec.CommandContext,
// if ctx ends before the command does, the command is killed (and Wait reports
// ctx.Err()).
func (b *Box) ExecCommand(ctx context.Context, cmd Command) (*Execution, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var env []string
	for _, kv := range cmd.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, invalid("env entry %q is not KEY=value", kv)
		}
		env = append(env, k, v)
	}
	all := append([]string{cmd.Name, cmd.Workdir, cmd.User}, cmd.Args...)
	if err := noNUL(append(all, env...)...); err != nil {
		return nil, err
	}
	if cmd.Timeout < 0 {
		return nil, invalid("timeout is %v; give 0 (none) or more", cmd.Timeout)
	}
	name := cstr(cmd.Name)
	defer freeC(name)
	args := newStrv(cmd.Args)
	defer args.free()
	envv := newStrv(env)
	defer envv.free()
	wd, user := optCstr(cmd.Workdir), optCstr(cmd.User)
	defer freeC(wd)
	defer freeC(user)
	cc := C.BoxliteCommand{
		command:      name,
		args:         args.ptr(),
		argc:         C.int(len(cmd.Args)),
		env_pairs:    envv.ptr(),
		env_count:    C.int(len(env)),
		workdir:      wd,
		user:         user,
		timeout_secs: C.double(cmd.Timeout.Seconds()),
		tty:          cbool(cmd.TTY),
	}

	x := &Execution{
		rt:   b.rt,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		out:  writers(cmd.Stdout, cmd.OnStdout),
		errw: writers(cmd.Stderr, cmd.OnStderr),
	}
	if err := x.start(b, &cc); err != nil {
		return nil, err
	}
	go x.pump()
	if cmd.Stdin != nil {
		go func() {
			_, _ = io.Copy(x.Stdin(), cmd.Stdin)
			_ = x.Stdin().Close()
		}()
	}
	if done := ctx.Done(); done != nil {
		go func() {
			select {
			case <-done:
				x.pmu.Lock()
				x.ctxErr = ctx.Err()
				x.pmu.Unlock()
				_ = x.rt.fire(x, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
					return C.bxgo_execution_kill(x.c, key, e)
				})
			case <-x.done:
			}
		}()
	}
	return x, nil
}

// start makes the C execution and registers its callbacks under one key.
func (x *Execution) start(b *Box, cc *C.BoxliteCommand) error {
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	rt := b.rt
	rt.cmu.RLock()
	defer rt.cmu.RUnlock()
	if rt.closed || rt.shut.Load() {
		return ErrRuntimeClosed
	}
	var e C.FFIError
	var xc *C.CExecutionHandle
	if code := C.boxlite_box_exec(b.c, cc, &xc, &e); code != C.Ok {
		return takeError(code, &e)
	}
	x.c = xc // before the key is registered: callbacks see it
	key := register(&entry{rt: rt, exec: x})
	var stage C.int
	if code := C.bxgo_execution_register(xc, C.uintptr_t(key), &stage, &e); code != C.Ok {
		err := takeError(code, &e)
		if mine, _ := take(key); mine != nil {
			mine.h.Delete()
		}
		// No exit callback is registered (it is the last), so no exit will come; a
		// chunk already queued finds no entry.
		C.boxlite_execution_free(xc)
		x.c = nil
		return err
	}
	rt.trackExec(x)
	return nil
}

func (x *Execution) acquire() error {
	x.mu.Lock()
	if x.c == nil {
		x.mu.Unlock()
		if x.rt.isClosed() {
			return ErrRuntimeClosed
		}
		return errExecClosed
	}
	return nil
}

func (x *Execution) release() { x.mu.Unlock() }

// push queues a chunk for the delivery goroutine (drain goroutine; never blocks).
func (x *Execution) push(stream int, data []byte) {
	x.pmu.Lock()
	if x.fin == nil {
		x.queue = append(x.queue, chunk{stream, data})
	}
	x.pmu.Unlock()
	x.notify()
}

func (x *Execution) notify() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// finalize records how the execution ended; the first word is kept. The delivery
// goroutine finishes the output, then wakes Wait.
func (x *Execution) finalize(s ExitStatus, err error) {
	x.pmu.Lock()
	if x.fin == nil {
		x.fin = &final{s, err}
	}
	x.pmu.Unlock()
	x.notify()
}

var errFailedUnknown = &Error{Code: CodeExecution, Message: "the command could not be started, or its exit could not be learned"}

// exited is the exit event (drain goroutine). For a failure boxlite keeps the reason
// for a wait: one is queued, and the status is final when it answers (or after 2 s).
func (x *Execution) exited(code int) {
	s := exitStatus(code)
	if code != exitFailed {
		x.finalize(s, nil)
		return
	}
	x.mu.Lock()
	c := x.c
	var err error = errFailedUnknown
	if c != nil {
		_, err = x.rt.post(func(r result) {
			why := r.err
			if why == nil {
				why = errFailedUnknown
			}
			x.finalize(s, why)
		}, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
			return C.bxgo_execution_wait(c, key, e)
		})
	}
	x.mu.Unlock()
	if c == nil || err != nil {
		x.finalize(s, errFailedUnknown)
		return
	}
	time.AfterFunc(2*time.Second, func() { x.finalize(s, errFailedUnknown) })
}

// pump is the execution's delivery goroutine: it writes the chunks in order, then
// makes the status final.
func (x *Execution) pump() {
	for {
		x.pmu.Lock()
		q := x.queue
		x.queue = nil
		fin := x.fin
		x.pmu.Unlock()
		for _, c := range q {
			x.write(c)
		}
		if len(q) > 0 {
			continue
		}
		if fin != nil {
			x.pmu.Lock()
			ctxErr := x.ctxErr
			x.pmu.Unlock()
			err := fin.err
			if err == nil && ctxErr != nil && !fin.status.Success() {
				err = ctxErr
			}
			if err == nil {
				err = x.wErr
			}
			x.status, x.err = fin.status, err
			close(x.done)
			return
		}
		<-x.wake
	}
}

func (x *Execution) write(c chunk) {
	w, bad := x.out, &x.outBad
	if c.stream == 2 {
		w, bad = x.errw, &x.errBad
	}
	if w == nil || *bad {
		return
	}
	if _, err := w.Write(c.data); err != nil {
		*bad = true
		if x.wErr == nil {
			x.wErr = err
		}
	}
}

// Wait waits for the execution to end and its output to be delivered. The error is
// nil for any exit of the process, a code or a signal; it tells why for a Failed
// status, is ErrRuntimeClosed if the runtime was closed first, and ctx.Err() if the
// context given to ExecCommand killed it. If ctx ends first, Wait returns an unknown
// status and ctx.Err() (the command goes on).
func (x *Execution) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-x.done:
		return x.status, x.err
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Done is closed when the execution has ended and its output has been delivered.
func (x *Execution) Done() <-chan struct{} { return x.done }

// Kill sends SIGKILL to the process and its process group.
func (x *Execution) Kill(ctx context.Context) error {
	_, err := x.rt.call(ctx, x, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_execution_kill(x.c, key, e)
	})
	return err
}

// Signal sends sig (1-64; boxlite refuses others with ErrInvalidArgument) to the
// process.
func (x *Execution) Signal(ctx context.Context, sig syscall.Signal) error {
	_, err := x.rt.call(ctx, x, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_execution_signal(x.c, C.int(sig), key, e)
	})
	return err
}

// ResizeTTY resizes the execution's terminal (rows and columns 1-65535).
func (x *Execution) ResizeTTY(ctx context.Context, rows, cols int) error {
	rows, cols = min(max(rows, -1), math.MaxInt32), min(max(cols, -1), math.MaxInt32) // boxlite checks 1-65535
	_, err := x.rt.call(ctx, x, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_execution_tty_resize(x.c, C.int(rows), C.int(cols), key, e)
	})
	return err
}

// Close frees the execution: a process not seen to exit is killed, and Wait then
// reports ForceClosed (unless its exit came first). Idempotent.
func (x *Execution) Close() error {
	x.mu.Lock()
	c := x.c
	x.c = nil
	if c != nil {
		C.boxlite_execution_free(c)
	}
	x.mu.Unlock()
	if c != nil {
		x.rt.untrackExec(x)
		if x.rt.isClosed() {
			// boxlite posts no force-closed exit once the runtime is shut down.
			x.finalize(exitStatus(exitForceClosed), nil)
		}
	}
	return nil
}

// Stdin is the command's stdin. Write queues bytes (copied) and waits while boxlite
// holds 16 MiB not yet read by the process; Close sends EOF once they are delivered.
func (x *Execution) Stdin() io.WriteCloser { return stdinPipe{x} }

type stdinPipe struct{ x *Execution }

const stdinChunk = 1 << 20

func (p stdinPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		piece := b[:min(len(b), stdinChunk)]
		err := p.x.stdinWrite(piece)
		var be *Error
		if err != nil && errors.As(err, &be) && be.Code == CodeResourceExhausted {
			select {
			case <-p.x.done:
				return n, err
			case <-time.After(5 * time.Millisecond):
				continue
			}
		}
		if err != nil {
			return n, err
		}
		n += len(piece)
		b = b[len(piece):]
	}
	return n, nil
}

func (p stdinPipe) Close() error {
	x := p.x
	if err := x.acquire(); err != nil {
		return err
	}
	defer x.release()
	unlock, err := x.rt.enter()
	if err != nil {
		return err
	}
	defer unlock()
	var e C.FFIError
	if code := C.boxlite_execution_stdin_close(x.c, &e); code != C.Ok {
		return takeError(code, &e)
	}
	return nil
}

func (x *Execution) stdinWrite(b []byte) error {
	if err := x.acquire(); err != nil {
		return err
	}
	defer x.release()
	unlock, err := x.rt.enter()
	if err != nil {
		return err
	}
	defer unlock()
	var e C.FFIError
	code := C.boxlite_execution_stdin_write(x.c, (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b)), &e)
	if code != C.Ok {
		return takeError(code, &e)
	}
	return nil
}

// Run runs cmd to its end and returns its output. Its stdin is closed at once unless
// cmd.Stdin is set. The error is as for Wait; if ctx ends first, the command is killed
// and Run returns ctx.Err().
func (b *Box) Run(ctx context.Context, cmd Command) (stdout, stderr []byte, status ExitStatus, err error) {
	var ob, eb bytes.Buffer
	cmd.Stdout = tee(cmd.Stdout, &ob)
	cmd.Stderr = tee(cmd.Stderr, &eb)
	x, err := b.ExecCommand(ctx, cmd)
	if err != nil {
		return nil, nil, ExitStatus{}, err
	}
	defer x.Close()
	if cmd.Stdin == nil {
		_ = x.Stdin().Close()
	}
	status, err = x.Wait(ctx)
	if !status.Known() {
		return nil, nil, status, err
	}
	return ob.Bytes(), eb.Bytes(), status, err
}

type funcWriter func([]byte)

func (f funcWriter) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}

func writers(w io.Writer, f func([]byte)) io.Writer {
	switch {
	case w != nil && f != nil:
		return io.MultiWriter(funcWriter(f), w)
	case f != nil:
		return funcWriter(f)
	default:
		return w
	}
}

func tee(w io.Writer, buf *bytes.Buffer) io.Writer {
	if w == nil {
		return buf
	}
	return io.MultiWriter(buf, w)
}
