package boxlite

/*
#include "bridge.h"
*/
import "C"

import "context"

// Volumes is the runtime's named volumes.
type Volumes struct{ rt *Runtime }

// Volumes returns the runtime's named volumes.
func (rt *Runtime) Volumes() Volumes { return Volumes{rt} }

// Create creates a volume with a generated name (vol- and 12 hex digits). If ctx ends
// first, a volume created after that is removed.
func (vs Volumes) Create(ctx context.Context) (*VolumeInfo, error) {
	rt := vs.rt
	v, err := rt.call(ctx, nil, removeLateVolume(rt), func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_volume_create(rt.volumes, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*VolumeInfo), nil
}

// List lists the volumes.
func (vs Volumes) List(ctx context.Context) ([]VolumeInfo, error) {
	rt := vs.rt
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_volume_list(rt.volumes, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.([]VolumeInfo), nil
}

// Get returns the volume of that name (ErrNotFound if there is none).
func (vs Volumes) Get(ctx context.Context, name string) (*VolumeInfo, error) {
	if err := noNUL(name); err != nil {
		return nil, err
	}
	n := cstr(name)
	defer freeC(n)
	rt := vs.rt
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_volume_get(rt.volumes, n, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*VolumeInfo), nil
}

// Remove removes a volume; force also succeeds when there is none.
func (vs Volumes) Remove(ctx context.Context, name string, force bool) error {
	if err := noNUL(name); err != nil {
		return err
	}
	n := cstr(name)
	defer freeC(n)
	rt := vs.rt
	_, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_volume_remove(rt.volumes, n, cbool(force), key, e)
	})
	return err
}

func removeLateVolume(rt *Runtime) func(any) {
	return func(v any) {
		n := cstr(v.(*VolumeInfo).Name)
		defer freeC(n)
		_ = rt.fire(nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
			return C.bxgo_volume_remove(rt.volumes, n, 1, key, e)
		})
	}
}
