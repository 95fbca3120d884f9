package boxlite

/*
#include "bridge.h"
*/
import "C"

import "unsafe"

// The C callbacks, one per shape; bridge.c's trampolines call them. They run only on
// a runtime's drain goroutine. Each takes its entry (becoming its owner) and delivers,
// or, finding none (Close took it), frees its payload and returns. A payload is freed
// exactly once: here, or by boxlite when the event is dropped unrun.

//export bxgoOnErr
func bxgoOnErr(e *C.FFIError, key C.uintptr_t) {
	ent, abandoned := take(uintptr(key))
	if ent == nil {
		orphansFreed.Add(1)
		return
	}
	settle(ent, abandoned, result{err: borrowedError(e)})
}

//export bxgoOnBox
func bxgoOnBox(h *C.CBoxHandle, created C.bool, e *C.FFIError, key C.uintptr_t) {
	ent, abandoned := take(uintptr(key))
	if ent == nil {
		orphansFreed.Add(1)
		if h != nil {
			C.boxlite_box_free(h)
		}
		return
	}
	err := borrowedError(e)
	if err == nil && h == nil {
		err = &Error{Code: CodeInternal, Message: "boxlite returned no box and no error"}
	}
	if err != nil {
		if h != nil {
			C.boxlite_box_free(h)
		}
		settle(ent, abandoned, result{err: err})
		return
	}
	settle(ent, abandoned, result{val: boxResult{box: ent.rt.adoptBox(h), created: bool(created)}})
}

//export bxgoOnBoxInfo
func bxgoOnBoxInfo(i *C.CBoxInfo, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_box_info(i)
	complete(key, e, i != nil, func() any {
		info := boxInfoOf(i)
		return &info
	})
}

//export bxgoOnBoxInfoList
func bxgoOnBoxInfoList(l *C.CBoxInfoList, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_box_info_list(l)
	complete(key, e, l != nil, func() any {
		return listOf(l.items, l.count, boxInfoOf)
	})
}

//export bxgoOnBoxMetrics
func bxgoOnBoxMetrics(m *C.CBoxMetrics, e *C.FFIError, key C.uintptr_t) {
	// Borrowed: nothing to free.
	complete(key, e, m != nil, func() any {
		return boxMetricsOf(m)
	})
}

//export bxgoOnRuntimeMetrics
func bxgoOnRuntimeMetrics(m *C.CRuntimeMetrics, e *C.FFIError, key C.uintptr_t) {
	// Borrowed: nothing to free.
	complete(key, e, m != nil, func() any {
		return runtimeMetricsOf(m)
	})
}

//export bxgoOnPull
func bxgoOnPull(r *C.CImagePullResult, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_image_pull_result(r)
	complete(key, e, r != nil, func() any {
		return &PullResult{
			Reference:    goStr(r.reference),
			ConfigDigest: goStr(r.config_digest),
			LayerCount:   int(r.layer_count),
		}
	})
}

//export bxgoOnImageList
func bxgoOnImageList(l *C.CImageInfoList, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_image_info_list(l)
	complete(key, e, l != nil, func() any {
		return listOf(l.items, l.count, imageInfoOf)
	})
}

//export bxgoOnVolume
func bxgoOnVolume(v *C.CVolumeInfo, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_volume_info(v)
	complete(key, e, v != nil, func() any {
		return volumeInfoOf(v)
	})
}

//export bxgoOnVolumeList
func bxgoOnVolumeList(l *C.CVolumeInfoList, e *C.FFIError, key C.uintptr_t) {
	defer C.boxlite_free_volume_info_list(l)
	complete(key, e, l != nil, func() any {
		return listOf(l.items, l.count, func(v *C.CVolumeInfo) VolumeInfo { return *volumeInfoOf(v) })
	})
}

// bxgoOnChunk is an output chunk (stream 1 stdout, 2 stderr); the bytes are borrowed,
// so they are copied. The execution's entry stays: only its exit removes it.
//
//export bxgoOnChunk
func bxgoOnChunk(p *C.uint8_t, n C.size_t, stream C.int, key C.uintptr_t) {
	x := lookupExec(uintptr(key))
	if x == nil || n == 0 {
		return
	}
	x.push(int(stream), C.GoBytes(unsafe.Pointer(p), C.int(n)))
}

// bxgoOnExit is an execution's exit, its last event.
//
//export bxgoOnExit
func bxgoOnExit(code C.int, key C.uintptr_t) {
	ent, _ := take(uintptr(key))
	if ent == nil {
		return
	}
	ent.h.Delete()
	if ent.exec != nil {
		ent.exec.exited(int(code))
	}
}

//export bxgoOnWait
func bxgoOnWait(code C.int, e *C.FFIError, key C.uintptr_t) {
	ent, abandoned := take(uintptr(key))
	if ent == nil {
		orphansFreed.Add(1)
		return
	}
	settle(ent, abandoned, result{val: int(code), err: borrowedError(e)})
}

// complete settles the call behind key with convert's value, or with the callback's
// error (or a missing value's); a call Close already took is only counted, its payload
// being freed by the caller's defer. convert runs before that defer.
func complete(key C.uintptr_t, e *C.FFIError, present bool, convert func() any) {
	ent, abandoned := take(uintptr(key))
	if ent == nil {
		orphansFreed.Add(1)
		return
	}
	if err := borrowedError(e); err != nil || !present {
		settle(ent, abandoned, result{err: orMissing(err)})
		return
	}
	settle(ent, abandoned, result{val: convert()})
}

// listOf converts a C array of count items (NULL when empty) to a Go slice, never nil.
func listOf[T, U any](items *T, count C.int, f func(*T) U) []U {
	out := make([]U, 0, max(int(count), 0))
	if items != nil && count > 0 {
		for i, all := 0, unsafe.Slice(items, int(count)); i < len(all); i++ {
			out = append(out, f(&all[i]))
		}
	}
	return out
}

func orMissing(err error) error {
	if err != nil {
		return err
	}
	return &Error{Code: CodeInternal, Message: "boxlite returned no value and no error"}
}
