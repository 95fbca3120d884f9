package boxlite

import "fmt"

// The codes boxlite adds to a process's own (0-255) and to minus a signal (-1..-64).
const (
	exitFailed      = -128 // not started, or its exit could not be learned
	exitForceClosed = -129 // the execution was closed before it exited
	exitTimedOut    = -130 // Command.Timeout expired; the agent killed it
	exitOutOfMemory = -131 // the guest's OOM killer ended it
)

// ExitStatus is how an execution ended: an exit code, a signal, or one of boxlite's
// cases (failed, force-closed, timed out, out of memory). The zero value is unknown
// (every predicate false).
type ExitStatus struct {
	raw   int
	known bool
}

func exitStatus(raw int) ExitStatus { return ExitStatus{raw: raw, known: true} }

// Raw is boxlite's number for it: the code (0-255), minus the signal (-1..-64), or
// -128 failed, -129 force-closed, -130 timed out, -131 out of memory; 0 when unknown.
func (s ExitStatus) Raw() int { return s.raw }

// Known reports whether the status is known (the execution ended).
func (s ExitStatus) Known() bool { return s.known }

// Exited reports whether the process exited by itself with a code.
func (s ExitStatus) Exited() bool { return s.known && s.raw >= 0 }

// Code is the exit code, or -1 if the process did not exit by itself.
func (s ExitStatus) Code() int {
	if s.Exited() {
		return s.raw
	}
	return -1
}

// Success reports whether the process exited with code 0.
func (s ExitStatus) Success() bool { return s.known && s.raw == 0 }

// Signaled reports whether a signal killed the process.
func (s ExitStatus) Signaled() bool { return s.known && s.raw <= -1 && s.raw >= -64 }

// Signal is the signal that killed the process, or 0.
func (s ExitStatus) Signal() int {
	if s.Signaled() {
		return -s.raw
	}
	return 0
}

// Failed reports that the command could not be started, or that its exit could not be
// learned (the box stopped, the transport was lost); Wait's error says why.
func (s ExitStatus) Failed() bool { return s.known && s.raw == exitFailed }

// ForceClosed reports that the execution was closed before its process exited (the
// process was killed).
func (s ExitStatus) ForceClosed() bool { return s.known && s.raw == exitForceClosed }

// TimedOut reports that Command.Timeout expired and the process was killed.
func (s ExitStatus) TimedOut() bool { return s.known && s.raw == exitTimedOut }

// OutOfMemory reports that the guest's out-of-memory killer ended the process.
func (s ExitStatus) OutOfMemory() bool { return s.known && s.raw == exitOutOfMemory }

func (s ExitStatus) String() string {
	switch {
	case !s.known:
		return "unknown"
	case s.Exited():
		return fmt.Sprintf("exit status %d", s.raw)
	case s.Signaled():
		return fmt.Sprintf("signal %d", -s.raw)
	case s.Failed():
		return "failed"
	case s.ForceClosed():
		return "force-closed"
	case s.TimedOut():
		return "timed out"
	case s.OutOfMemory():
		return "out of memory"
	}
	return fmt.Sprintf("exit status %d", s.raw)
}
