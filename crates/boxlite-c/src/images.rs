//! Images: pull and list, through a handle taken from the runtime (BoxLite's shape).

use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::runtime::{CBoxliteRuntime, Shared, need, submit_value};
use crate::util::{
    UserData, c_array, c_string, entry, free_c_string, no_panic, take_c_array, text,
};

/// Opaque handle to the runtime's images. Free it with `boxlite_image_free`.
#[derive(Debug)]
pub struct ImageHandle {
    sh: Arc<Shared>,
}

impl crate::runtime::Derived for ImageHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }
}

impl crate::runtime::OfRuntime for ImageHandle {
    fn of(sh: Arc<Shared>) -> Self {
        ImageHandle { sh }
    }
}

pub type CBoxliteImageHandle = ImageHandle;

/// A pulled image. `config_digest` is the manifest digest (the id boxlite keys images
/// by); `layer_count` is 0 for a built-in image, which is imported, not pulled.
#[repr(C)]
#[derive(Debug)]
pub struct CImagePullResult {
    pub reference: *mut c_char,
    pub config_digest: *mut c_char,
    pub layer_count: c_int,
}

/// Image pull completion: the callback owns the result and frees it with
/// `boxlite_free_image_pull_result`.
pub type CBoxImagePullCb =
    Option<unsafe extern "C" fn(*mut CImagePullResult, *mut crate::CBoxliteError, *mut c_void)>;

/// A stored image. `repository` and `tag` split `reference`; `id` is the manifest
/// digest; `cached_at` is 0 (not recorded); `size` is the bytes on disk.
#[repr(C)]
#[derive(Debug)]
pub struct CImageInfo {
    pub reference: *mut c_char,
    pub repository: *mut c_char,
    pub tag: *mut c_char,
    pub id: *mut c_char,
    pub cached_at: i64,
    pub size: u64,
    pub has_size: c_int,
}

/// An owned list of images.
#[repr(C)]
#[derive(Debug)]
pub struct CImageInfoList {
    pub items: *mut CImageInfo,
    pub count: c_int,
}

/// Image list completion: the callback owns the list and frees it with
/// `boxlite_free_image_info_list`.
pub type CBoxImageListCb =
    Option<unsafe extern "C" fn(*mut CImageInfoList, *mut crate::CBoxliteError, *mut c_void)>;

/// The runtime's image handle (synchronous). Free it with `boxlite_image_free`.
///
/// # Safety
/// `runtime` is a live handle; `out_handle` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_images(
    runtime: *mut CBoxliteRuntime,
    out_handle: *mut *mut CBoxliteImageHandle,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    crate::runtime::derive(runtime, out_handle, out_error)
}

struct Pulled {
    reference: String,
    digest: String,
    layers: usize,
}

fn pulled_raw(p: Pulled) -> *mut CImagePullResult {
    Box::into_raw(Box::new(CImagePullResult {
        reference: c_string(&p.reference),
        config_digest: c_string(&p.digest),
        layer_count: c_int::try_from(p.layers).unwrap_or(c_int::MAX),
    }))
}

/// Queue a pull of `image_ref` (from its registry; a built-in `boxlite/...` image is
/// imported from the assets) and the build of its root filesystem.
///
/// # Safety
/// `handle` is a live image handle; `image_ref` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_image_pull(
    handle: *mut CBoxliteImageHandle,
    image_ref: *const c_char,
    cb: CBoxImagePullCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let reference = text(image_ref, "image_ref")?;
        let lib = h.sh.lib.clone();
        let work = async move {
            let layers = AtomicUsize::new(0);
            let progress = |p: boxlite::images::registry::Progress| {
                if let boxlite::images::registry::Progress::Building { layers: n } = p {
                    layers.store(n, Ordering::Relaxed);
                }
            };
            let img = lib.pull(&reference, &progress).await?;
            Ok::<_, Failure>(Pulled {
                reference: img.reference,
                digest: img.digest,
                layers: layers.load(Ordering::Relaxed),
            })
        };
        submit_value(&h.sh, work, cb, UserData(user_data), pulled_raw);
        Ok(())
    })
}

/// `repo[:tag]` or `repo@digest` split at the tag (the last `:` after the last `/`).
fn split_reference(r: &str) -> (&str, &str) {
    let name = r.split('@').next().unwrap_or(r);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, ""),
    }
}

fn list_raw(v: Vec<boxlite::images::ImageInfo>) -> *mut CImageInfoList {
    let items = v
        .iter()
        .map(|i| {
            let (repo, tag) = split_reference(&i.reference);
            CImageInfo {
                reference: c_string(&i.reference),
                repository: c_string(repo),
                tag: c_string(tag),
                id: c_string(&i.digest),
                cached_at: 0,
                size: i.size,
                has_size: 1,
            }
        })
        .collect();
    let (items, count) = c_array(items);
    Box::into_raw(Box::new(CImageInfoList { items, count }))
}

/// Queue a list of the stored images.
///
/// # Safety
/// `handle` is a live image handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_image_list(
    handle: *mut CBoxliteImageHandle,
    cb: CBoxImageListCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let lib = h.sh.lib.clone();
        submit_value(
            &h.sh,
            async move { Ok(lib.images().await) },
            cb,
            UserData(user_data),
            list_raw,
        );
        Ok(())
    })
}

/// Free an image handle. NULL is a no-op.
///
/// # Safety
/// `handle` is NULL or a handle from `boxlite_runtime_images`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_image_free(handle: *mut CBoxliteImageHandle) {
    // SAFETY: the contract above is `free_boxed`'s.
    unsafe { crate::util::free_boxed(handle) }
}

/// Free an image list and its strings. NULL is a no-op.
///
/// # Safety
/// `list` is NULL or a list a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_image_info_list(list: *mut CImageInfoList) {
    no_panic((), || {
        if list.is_null() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `list_raw`, given back once.
        let l = unsafe { Box::from_raw(list) };
        // SAFETY: from one `c_array` call in `list_raw`.
        for i in unsafe { take_c_array(l.items, l.count) } {
            for p in [i.reference, i.repository, i.tag, i.id] {
                free_c_string(p);
            }
        }
    })
}

/// Free a pull result and its strings. NULL is a no-op.
///
/// # Safety
/// `result` is NULL or a result a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_image_pull_result(result: *mut CImagePullResult) {
    no_panic((), || {
        if !result.is_null() {
            // SAFETY: made by `Box::into_raw` in `pulled_raw`, given back once.
            let r = unsafe { Box::from_raw(result) };
            free_c_string(r.reference);
            free_c_string(r.config_digest);
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_split_at_the_tag() {
        use super::split_reference as s;
        assert_eq!(s("boxlite/busybox:latest"), ("boxlite/busybox", "latest"));
        assert_eq!(s("127.0.0.1:5000/a/b:1.0"), ("127.0.0.1:5000/a/b", "1.0"));
        assert_eq!(s("127.0.0.1:5000/a/b"), ("127.0.0.1:5000/a/b", ""));
        assert_eq!(s("alpine@sha256:abc"), ("alpine", ""));
    }
}
