package boxlite

/*
#include "bridge.h"
*/
import "C"

import "context"

// Images is the runtime's image store.
type Images struct{ rt *Runtime }

// Images returns the runtime's image store.
func (rt *Runtime) Images() Images { return Images{rt} }

// Pull pulls ref from its registry (a built-in boxlite/... image is imported from the
// assets) and builds its root filesystem.
func (im Images) Pull(ctx context.Context, ref string) (*PullResult, error) {
	if err := noNUL(ref); err != nil {
		return nil, err
	}
	r := cstr(ref)
	defer freeC(r)
	rt := im.rt
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_image_pull(rt.images, r, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.(*PullResult), nil
}

// List lists the stored images.
func (im Images) List(ctx context.Context) ([]ImageInfo, error) {
	rt := im.rt
	v, err := rt.call(ctx, nil, nil, func(key C.uintptr_t, e *C.FFIError) C.enum_BoxliteErrorCode {
		return C.bxgo_image_list(rt.images, key, e)
	})
	if err != nil {
		return nil, err
	}
	return v.([]ImageInfo), nil
}
