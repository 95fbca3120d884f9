package boxlite

// The library directory is the user's: CGO_LDFLAGS=-L/path/to/dir (a directory holding
// only libboxlite.a links it statically; see README.md).

/*
#cgo CFLAGS: -I${SRCDIR}/../../crates/boxlite-c/include
#cgo LDFLAGS: -lboxlite -ldl -lm -lpthread -lrt
#include "bridge.h"
*/
import "C"

import "unsafe"

// takeError turns a synchronous failure into an *Error and frees its C message.
func takeError(code C.enum_BoxliteErrorCode, e *C.FFIError) error {
	msg := ""
	if e.message != nil {
		msg = C.GoString(e.message)
	}
	C.boxlite_error_free(e)
	c := ErrorCode(code)
	if c == CodeOK {
		c = CodeInternal
	}
	return &Error{Code: c, Message: msg}
}

// borrowedError copies an error a callback lends (NULL is no error). It is not freed:
// boxlite frees it after the callback returns.
func borrowedError(e *C.FFIError) error {
	if e == nil || e.code == C.Ok {
		return nil
	}
	msg := ""
	if e.message != nil {
		msg = C.GoString(e.message)
	}
	return &Error{Code: ErrorCode(e.code), Message: msg}
}

// cstr is a C copy of s, freed by the caller with freeC.
func cstr(s string) *C.char { return C.CString(s) }

func freeC(p *C.char) { C.free(unsafe.Pointer(p)) }

// optCstr is NULL for "" (boxlite's default), else a C copy.
func optCstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// strv is a C array of C strings, freed with free.
type strv struct {
	p **C.char
	n int
}

func newStrv(ss []string) strv {
	if len(ss) == 0 {
		return strv{}
	}
	v := C.bxgo_strv_new(C.int(len(ss)))
	for i, s := range ss {
		C.bxgo_strv_set(v, C.int(i), C.CString(s))
	}
	return strv{p: v, n: len(ss)}
}

func (v strv) ptr() **C.char { return v.p }

func (v strv) free() {
	if v.p != nil {
		C.bxgo_strv_free(v.p, C.int(v.n))
	}
}

func goStr(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

func goStrs(p **C.char, n C.int) []string {
	if p == nil || n <= 0 {
		return nil
	}
	items := unsafe.Slice(p, int(n))
	out := make([]string, 0, len(items))
	for _, s := range items {
		out = append(out, goStr(s))
	}
	return out
}
