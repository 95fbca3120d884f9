//! Named volumes through a handle taken from the runtime (BoxLite's shape).

use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;

use crate::error::{BoxliteErrorCode, FFIError};
use crate::runtime::{CBoxliteRuntime, Shared, need, submit_unit, submit_value};
use crate::util::{
    UserData, c_array, c_string, entry, free_c_string, no_panic, take_c_array, text,
};

/// Opaque handle to the runtime's named volumes. Free it with `boxlite_volume_free`.
#[derive(Debug)]
pub struct VolumeHandle {
    sh: Arc<Shared>,
}

impl crate::runtime::Derived for VolumeHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }
}

impl crate::runtime::OfRuntime for VolumeHandle {
    fn of(sh: Arc<Shared>) -> Self {
        VolumeHandle { sh }
    }
}

pub type CBoxliteVolumeHandle = VolumeHandle;

/// A volume: `id` is its name (pass it to `boxlite_options_add_volume`), `created_at`
/// RFC 3339; `size_bytes` is not measured (`has_size` is 0).
#[repr(C)]
#[derive(Debug)]
pub struct CVolumeInfo {
    pub id: *mut c_char,
    pub created_at: *mut c_char,
    pub size_bytes: u64,
    pub has_size: c_int,
}

/// An owned list of volumes.
#[repr(C)]
#[derive(Debug)]
pub struct CVolumeInfoList {
    pub items: *mut CVolumeInfo,
    pub count: c_int,
}

/// Volume create completion: the callback owns the info (`boxlite_free_volume_info`).
pub type CBoxVolumeCreateCb =
    Option<unsafe extern "C" fn(*mut CVolumeInfo, *mut crate::CBoxliteError, *mut c_void)>;
/// Volume list completion: the callback owns the list (`boxlite_free_volume_info_list`).
pub type CBoxVolumeListCb =
    Option<unsafe extern "C" fn(*mut CVolumeInfoList, *mut crate::CBoxliteError, *mut c_void)>;
/// Volume get completion, as create.
pub type CBoxVolumeGetCb =
    Option<unsafe extern "C" fn(*mut CVolumeInfo, *mut crate::CBoxliteError, *mut c_void)>;
/// Volume remove completion.
pub type CBoxVolumeRemoveCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;

fn c_volume(v: &boxlite::VolumeInfo) -> CVolumeInfo {
    CVolumeInfo {
        id: c_string(&v.name),
        created_at: c_string(&boxlite::model::time::rfc3339(v.created_at)),
        size_bytes: 0,
        has_size: 0,
    }
}

fn info_raw(v: boxlite::VolumeInfo) -> *mut CVolumeInfo {
    Box::into_raw(Box::new(c_volume(&v)))
}

fn list_raw(v: Vec<boxlite::VolumeInfo>) -> *mut CVolumeInfoList {
    let (items, count) = c_array(v.iter().map(c_volume).collect());
    Box::into_raw(Box::new(CVolumeInfoList { items, count }))
}

/// The runtime's volume handle (synchronous). Free it with `boxlite_volume_free`.
///
/// # Safety
/// `runtime` is a live handle; `out_handle` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_runtime_volumes(
    runtime: *mut CBoxliteRuntime,
    out_handle: *mut *mut CBoxliteVolumeHandle,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    crate::runtime::derive(runtime, out_handle, out_error)
}

/// Queue the creation of a volume with a generated name (`vol-` and 12 hex digits).
///
/// # Safety
/// `handle` is a live volume handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_volume_create(
    handle: *mut CBoxliteVolumeHandle,
    cb: CBoxVolumeCreateCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let name = format!("vol-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let lib = h.sh.lib.clone();
        let work = async move { Ok(lib.create_volume(&name).await?) };
        submit_value(&h.sh, work, cb, UserData(user_data), info_raw);
        Ok(())
    })
}

/// Queue a list of the volumes.
///
/// # Safety
/// `handle` is a live volume handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_volume_list(
    handle: *mut CBoxliteVolumeHandle,
    cb: CBoxVolumeListCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let lib = h.sh.lib.clone();
        submit_value(
            &h.sh,
            async move { Ok(lib.volumes().await?) },
            cb,
            UserData(user_data),
            list_raw,
        );
        Ok(())
    })
}

/// Queue a lookup of a volume by name (`NotFound` if there is none).
///
/// # Safety
/// `handle` is a live volume handle; `id` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_volume_get(
    handle: *mut CBoxliteVolumeHandle,
    id: *const c_char,
    cb: CBoxVolumeGetCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let name = text(id, "id")?;
        let lib = h.sh.lib.clone();
        submit_value(
            &h.sh,
            async move { Ok(lib.volume(&name).await?) },
            cb,
            UserData(user_data),
            info_raw,
        );
        Ok(())
    })
}

/// Queue the removal of a volume; `force` also succeeds when it does not exist.
///
/// # Safety
/// `handle` is a live volume handle; `id` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_volume_remove(
    handle: *mut CBoxliteVolumeHandle,
    id: *const c_char,
    force: c_int,
    cb: CBoxVolumeRemoveCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let h = crate::runtime::derived_ref(handle, "handle")?;
        let cb = need(cb)?;
        let name = text(id, "id")?;
        let lib = h.sh.lib.clone();
        let work = async move {
            match lib.remove_volume(&name, force != 0).await {
                Err(e) if force != 0 && e.kind() == boxlite::ErrorKind::NotFound => Ok(()),
                r => Ok(r?),
            }
        };
        submit_unit(&h.sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Free a volume handle. NULL is a no-op.
///
/// # Safety
/// `handle` is NULL or a handle from `boxlite_runtime_volumes`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_volume_free(handle: *mut CBoxliteVolumeHandle) {
    // SAFETY: the contract above is `free_boxed`'s.
    unsafe { crate::util::free_boxed(handle) }
}

/// Free a volume info and its strings. NULL is a no-op.
///
/// # Safety
/// `info` is NULL or an info a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_volume_info(info: *mut CVolumeInfo) {
    no_panic((), || {
        if !info.is_null() {
            // SAFETY: made by `Box::into_raw` in `info_raw`, given back once.
            let v = unsafe { Box::from_raw(info) };
            free_c_string(v.id);
            free_c_string(v.created_at);
        }
    })
}

/// Free a volume list, its entries and their strings. NULL is a no-op.
///
/// # Safety
/// `list` is NULL or a list a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_volume_info_list(list: *mut CVolumeInfoList) {
    no_panic((), || {
        if list.is_null() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `list_raw`, given back once.
        let l = unsafe { Box::from_raw(list) };
        // SAFETY: from one `c_array` call in `list_raw`.
        for v in unsafe { take_c_array(l.items, l.count) } {
            free_c_string(v.id);
            free_c_string(v.created_at);
        }
    })
}
