// Package boxlite runs boxlite micro-VM boxes from Go: a cgo binding over libboxlite,
// boxlite's C ABI.
//
// A Runtime opens a home directory of boxes, images and volumes. Create makes a Box;
// Exec, ExecCommand and Run run commands in it, streaming their output and stdin;
// Images and Volumes manage the rest. Every call takes a context.Context.
//
// The C ABI is post-and-drain: each call queues its work and returns, and its result
// comes back as a callback run by boxlite_runtime_drain. Each Runtime has one
// goroutine that drains, so callbacks run on a Go-owned thread; the SDK's callbacks
// only copy, free and hand over, and never run user code. See README.md for building
// (CGO_LDFLAGS), ownership, threading, contexts, errors and exit statuses.
package boxlite
