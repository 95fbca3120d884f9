//! Boxes: create, find, start, stop, remove; their info, metrics and file copies.

use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::options::{BoxlitePortProtocol, CBoxliteOptions, options_of};
use crate::runtime::{
    CBoxliteRuntime, Shared, borrowed_event, need, runtime_ref, submit_unit, submit_value,
};
use crate::util::{
    UserData, c_array, c_string, entry, free_c_string, no_panic, opt_c_string, take_c_array, text,
};

/// Opaque handle to a box. Free it with `boxlite_box_free` (the box itself stays).
#[derive(Debug)]
pub struct BoxHandle {
    pub(crate) lb: boxlite::LiteBox,
    pub(crate) sh: Arc<Shared>,
}

pub type CBoxHandle = BoxHandle;

impl crate::runtime::Derived for BoxHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }
}

/// A box handle argument that must not be NULL, on a runtime still open.
pub(crate) fn box_ref<'a>(h: *mut BoxHandle) -> Result<&'a BoxHandle, Failure> {
    crate::runtime::derived_ref(h, "handle")
}

fn new_handle(sh: &Arc<Shared>, lb: boxlite::LiteBox) -> BoxHandle {
    BoxHandle { lb, sh: sh.clone() }
}

fn into_raw(b: BoxHandle) -> *mut BoxHandle {
    Box::into_raw(Box::new(b))
}

/// Box creation completion: the callback owns the handle (free it with
/// `boxlite_box_free`); the error is borrowed.
pub type CBoxCreateBoxCb =
    Option<unsafe extern "C" fn(*mut CBoxHandle, *mut crate::CBoxliteError, *mut c_void)>;
/// Get-or-create completion: as create, plus whether a new box was made.
pub type CBoxGetOrCreateBoxCb =
    Option<unsafe extern "C" fn(*mut CBoxHandle, bool, *mut crate::CBoxliteError, *mut c_void)>;
/// Box stop completion.
pub type CBoxStopBoxCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;
/// Box get completion: the handle, or NULL with an error (`NotFound`).
pub type CBoxGetBoxCb =
    Option<unsafe extern "C" fn(*mut CBoxHandle, *mut crate::CBoxliteError, *mut c_void)>;
/// Box remove completion.
pub type CBoxRemoveBoxCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;
/// Box start completion.
pub type CBoxStartBoxCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;
/// Copy (into / out of) completion.
pub type CBoxCopyCb = Option<unsafe extern "C" fn(*mut crate::CBoxliteError, *mut c_void)>;

/// Queue the creation of a box (created, not started: start it, or exec, which starts
/// it). The options are copied; free them whenever you like.
///
/// # Safety
/// `runtime` is a live handle; `opts` is live options; `out_error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_create_box(
    runtime: *mut CBoxliteRuntime,
    opts: *mut CBoxliteOptions,
    cb: CBoxCreateBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        let o = options_of(opts)?;
        rt.shared.check_open()?;
        let sh = rt.shared.clone();
        let work = async move {
            let lb = sh.lib.create(o).await?;
            Ok(new_handle(&sh, lb))
        };
        submit_value(&rt.shared, work, cb, UserData(user_data), into_raw);
        Ok(())
    })
}

/// Queue get-or-create by the options' name (required): the box of that name if there
/// is one (`false`), else a new one (`true`).
///
/// # Safety
/// As `boxlite_create_box`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_get_or_create_box(
    runtime: *mut CBoxliteRuntime,
    opts: *mut CBoxliteOptions,
    cb: CBoxGetOrCreateBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        let o = options_of(opts)?;
        let name = o.name.clone().ok_or_else(|| {
            Failure::invalid("get-or-create needs a name: call boxlite_options_set_name")
        })?;
        rt.shared.check_open()?;
        let sh = rt.shared.clone();
        let ud = UserData(user_data);
        let work = async move {
            let (lb, created) = sh.lib.get_or_create(&name, o).await?;
            Ok::<_, Failure>((new_handle(&sh, lb), created))
        };
        rt.shared.submit(work, move |r| {
            Box::new(move || {
                let ud = ud;
                match r {
                    Ok((b, created)) => {
                        // SAFETY: the caller's non-NULL callback; it takes the handle.
                        unsafe { cb(into_raw(b), created, std::ptr::null_mut(), ud.0) }
                    }
                    // SAFETY: as above; the error is borrowed for the call.
                    Err(f) => f.lend(|e| unsafe { cb(std::ptr::null_mut(), false, e, ud.0) }),
                }
            })
        });
        Ok(())
    })
}

/// Queue a lookup by id, unique id prefix or name.
///
/// # Safety
/// `runtime` is a live handle; `id_or_name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_get(
    runtime: *mut CBoxliteRuntime,
    id_or_name: *const c_char,
    cb: CBoxGetBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        let key = text(id_or_name, "id_or_name")?;
        rt.shared.check_open()?;
        let sh = rt.shared.clone();
        let work = async move { Ok(new_handle(&sh, sh.lib.get(&key).await?)) };
        submit_value(&rt.shared, work, cb, UserData(user_data), into_raw);
        Ok(())
    })
}

/// Queue the removal of a box by id or name; `force` stops a running one first.
///
/// # Safety
/// `runtime` is a live handle; `id_or_name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_remove(
    runtime: *mut CBoxliteRuntime,
    id_or_name: *const c_char,
    force: c_int,
    cb: CBoxRemoveBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        let key = text(id_or_name, "id_or_name")?;
        rt.shared.check_open()?;
        let lib = rt.shared.lib.clone();
        let work = async move {
            let b = lib.get(&key).await?;
            Ok(b.remove(force != 0).await?)
        };
        submit_unit(&rt.shared, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Queue a start (boots the VM; a running box is left as it is).
///
/// # Safety
/// `handle` is a live box handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_start_box(
    handle: *mut CBoxHandle,
    cb: CBoxStartBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let b = box_ref(handle)?;
        let cb = need(cb)?;
        let lb = b.lb.clone();
        submit_unit(
            &b.sh,
            async move { Ok(lb.start().await?) },
            cb,
            UserData(user_data),
        );
        Ok(())
    })
}

/// Queue a stop (the box's processes get 10 s to end, then the VM is killed).
///
/// # Safety
/// `handle` is a live box handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_stop_box(
    handle: *mut CBoxHandle,
    cb: CBoxStopBoxCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let b = box_ref(handle)?;
        let cb = need(cb)?;
        let lb = b.lb.clone();
        let work = async move { Ok(lb.stop(Duration::from_secs(10)).await?) };
        submit_unit(&b.sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// The box's id, a string the caller frees with `boxlite_free_string` (NULL for a NULL
/// handle). Works after the runtime was shut down.
///
/// # Safety
/// `handle` is NULL or a live box handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_box_id(handle: *mut CBoxHandle) -> *mut c_char {
    no_panic(std::ptr::null_mut(), || {
        if handle.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: not NULL; a live handle of the caller's.
        c_string(unsafe { &*handle }.lb.id())
    })
}

/// Free a box handle (the box is not stopped or removed). NULL is a no-op.
///
/// # Safety
/// `handle` is NULL or a handle this library gave, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_box_free(handle: *mut CBoxHandle) {
    // SAFETY: the contract above is `free_boxed`'s.
    unsafe { crate::util::free_boxed(handle) }
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy)]
enum Way {
    In,
    Out,
}

/// The body of both copy calls: `from` and `to` are named as the caller's arguments.
fn copy(
    handle: *mut CBoxHandle,
    paths: [(*const c_char, &str); 2],
    way: Way,
    cb: CBoxCopyCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let b = box_ref(handle)?;
        let cb = need(cb)?;
        let from = text(paths[0].0, paths[0].1)?;
        let to = text(paths[1].0, paths[1].1)?;
        let lb = b.lb.clone();
        let work = async move {
            let o = boxlite::CopyOptions::default();
            match way {
                Way::In => lb.copy_in(&from, &to, &o).await?,
                Way::Out => lb.copy_out(&from, &to, &o).await?,
            };
            Ok(())
        };
        submit_unit(&b.sh, work, cb, UserData(user_data));
        Ok(())
    })
}

/// Queue a copy of a host file or directory into the box (as `docker cp`). A box that
/// is not running is started first.
///
/// # Safety
/// `handle` is a live box handle; the paths are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_copy_into(
    handle: *mut CBoxHandle,
    host_src: *const c_char,
    guest_dst: *const c_char,
    cb: CBoxCopyCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    let paths = [(host_src, "host_src"), (guest_dst, "guest_dst")];
    copy(handle, paths, Way::In, cb, user_data, out_error)
}

/// Queue a copy of a file or directory out of the box to the host (as `docker cp`).
/// What the box sends is treated as hostile: no path escapes `host_dst`.
///
/// # Safety
/// `handle` is a live box handle; the paths are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_copy_out(
    handle: *mut CBoxHandle,
    guest_src: *const c_char,
    host_dst: *const c_char,
    cb: CBoxCopyCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    let paths = [(guest_src, "guest_src"), (host_dst, "host_dst")];
    copy(handle, paths, Way::Out, cb, user_data, out_error)
}

// ---- info ----

/// Network mode exposed by [`CNetworkInfo`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum BoxliteNetworkMode {
    BoxliteNetworkModeEnabled = 0,
    BoxliteNetworkModeDisabled = 1,
}

/// A host listener published to a guest port (owned by the enclosing info).
#[repr(C)]
#[derive(Debug)]
pub struct CPublishedPort {
    pub guest_port: u16,
    pub host_ip: *mut c_char,
    pub host_port: u16,
    pub protocol: BoxlitePortProtocol,
}

/// The published ports (owned by the enclosing [`CNetworkInfo`]).
#[repr(C)]
#[derive(Debug)]
pub struct CPublishedPortList {
    pub items: *mut CPublishedPort,
    pub count: c_int,
}

/// A box's network (owned by the enclosing [`CBoxInfo`]). `published_ports` is NULL
/// when the box is not running (the bindings are not known), else the active ones.
#[repr(C)]
#[derive(Debug)]
pub struct CNetworkInfo {
    pub mode: BoxliteNetworkMode,
    pub allow_net: *mut *mut c_char,
    pub allow_net_count: c_int,
    pub published_ports: *mut CPublishedPortList,
}

/// A box's metadata. Strings are owned by the structure; `name` may be NULL.
/// `status` is the state in lower case (`configured`, `running`, `stopped`, `paused`,
/// `failed`, ...). `created_at` is Unix seconds. `pid` is the VMM's (0 when stopped).
#[repr(C)]
#[derive(Debug)]
pub struct CBoxInfo {
    pub id: *mut c_char,
    pub name: *mut c_char,
    pub image: *mut c_char,
    pub status: *mut c_char,
    pub running: c_int,
    pub pid: c_int,
    pub cpus: c_int,
    pub memory_mib: c_int,
    pub auto_pause: u32,
    pub auto_delete: u32,
    pub auto_resume: c_int,
    pub created_at: i64,
    pub network: *mut CNetworkInfo,
}

/// An owned list of box infos.
#[repr(C)]
#[derive(Debug)]
pub struct CBoxInfoList {
    pub items: *mut CBoxInfo,
    pub count: c_int,
}

/// Box info completion: the callback owns the info and frees it with
/// `boxlite_free_box_info`.
pub type CBoxInfoCb =
    Option<unsafe extern "C" fn(*mut CBoxInfo, *mut crate::CBoxliteError, *mut c_void)>;
/// Box info list completion: the callback owns the list and frees it with
/// `boxlite_free_box_info_list`.
pub type CBoxInfoListCb =
    Option<unsafe extern "C" fn(*mut CBoxInfoList, *mut crate::CBoxliteError, *mut c_void)>;

fn int(n: u32) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

fn c_info(i: &boxlite::BoxInfo) -> CBoxInfo {
    let net = &i.config.network;
    let mode = match net.mode {
        boxlite::model::NetworkMode::None => BoxliteNetworkMode::BoxliteNetworkModeDisabled,
        _ => BoxliteNetworkMode::BoxliteNetworkModeEnabled,
    };
    let (allow, allow_n) = c_array(net.allow.iter().map(|a| c_string(a)).collect());
    let running = i.state == boxlite::BoxState::Running;
    let ports = running.then(|| {
        let (items, count) = c_array(
            i.network
                .ports
                .iter()
                .map(|p| CPublishedPort {
                    guest_port: p.guest_port,
                    host_ip: c_string(&p.host.ip().to_string()),
                    host_port: p.host.port(),
                    protocol: match p.proto {
                        boxlite_net::config::Proto::Udp => {
                            BoxlitePortProtocol::BoxlitePortProtocolUdp
                        }
                        _ => BoxlitePortProtocol::BoxlitePortProtocolTcp,
                    },
                })
                .collect(),
        );
        Box::into_raw(Box::new(CPublishedPortList { items, count }))
    });
    CBoxInfo {
        id: c_string(&i.id),
        name: opt_c_string(i.name.as_deref()),
        image: c_string(&i.image),
        status: c_string(&i.state.to_string().to_lowercase()),
        running: c_int::from(running),
        pid: i.vmm_pid.unwrap_or(0),
        cpus: int(i.config.cpus),
        memory_mib: int(i.config.memory_mib),
        auto_pause: i.config.auto_pause_secs,
        auto_delete: 0,
        auto_resume: 1,
        created_at: i64::try_from(i.created_at).unwrap_or(i64::MAX),
        network: Box::into_raw(Box::new(CNetworkInfo {
            mode,
            allow_net: allow,
            allow_net_count: allow_n,
            published_ports: ports.unwrap_or(std::ptr::null_mut()),
        })),
    }
}

/// Free the strings and parts a [`CBoxInfo`] owns (not the structure itself).
fn free_info_fields(i: &mut CBoxInfo) {
    for p in [i.id, i.name, i.image, i.status] {
        free_c_string(p);
    }
    if !i.network.is_null() {
        // SAFETY: made by `Box::into_raw` in `c_info`, freed once (the pointer is
        // cleared below).
        let n = unsafe { Box::from_raw(i.network) };
        // SAFETY: the array and count come from one `c_array` call in `c_info`.
        for s in unsafe { take_c_array(n.allow_net, n.allow_net_count) } {
            free_c_string(s);
        }
        if !n.published_ports.is_null() {
            // SAFETY: made by `Box::into_raw` in `c_info`, freed once here.
            let l = unsafe { Box::from_raw(n.published_ports) };
            // SAFETY: from one `c_array` call in `c_info`.
            for p in unsafe { take_c_array(l.items, l.count) } {
                free_c_string(p.host_ip);
            }
        }
    }
    *i = CBoxInfo {
        id: std::ptr::null_mut(),
        name: std::ptr::null_mut(),
        image: std::ptr::null_mut(),
        status: std::ptr::null_mut(),
        network: std::ptr::null_mut(),
        ..*i
    };
}

fn info_raw(i: boxlite::BoxInfo) -> *mut CBoxInfo {
    Box::into_raw(Box::new(c_info(&i)))
}

fn list_raw(v: Vec<boxlite::BoxInfo>) -> *mut CBoxInfoList {
    let (items, count) = c_array(v.iter().map(c_info).collect());
    Box::into_raw(Box::new(CBoxInfoList { items, count }))
}

/// Queue the box's info.
///
/// # Safety
/// `handle` is a live box handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_box_info(
    handle: *mut CBoxHandle,
    cb: CBoxInfoCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let b = box_ref(handle)?;
        let cb = need(cb)?;
        let lb = b.lb.clone();
        submit_value(
            &b.sh,
            async move { Ok(lb.info().await?) },
            cb,
            UserData(user_data),
            info_raw,
        );
        Ok(())
    })
}

/// Queue the info of a box by id or name.
///
/// # Safety
/// `runtime` is a live handle; `id_or_name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_get_info(
    runtime: *mut CBoxliteRuntime,
    id_or_name: *const c_char,
    cb: CBoxInfoCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        let key = text(id_or_name, "id_or_name")?;
        rt.shared.check_open()?;
        let lib = rt.shared.lib.clone();
        let work = async move { Ok(lib.get(&key).await?.info().await?) };
        submit_value(&rt.shared, work, cb, UserData(user_data), info_raw);
        Ok(())
    })
}

/// Queue the info of every box in the home.
///
/// # Safety
/// `runtime` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_list_info(
    runtime: *mut CBoxliteRuntime,
    cb: CBoxInfoListCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let rt = runtime_ref(runtime)?;
        let cb = need(cb)?;
        rt.shared.check_open()?;
        let lib = rt.shared.lib.clone();
        submit_value(
            &rt.shared,
            async move { Ok(lib.list().await?) },
            cb,
            UserData(user_data),
            list_raw,
        );
        Ok(())
    })
}

/// Free a box info and everything it owns. NULL is a no-op.
///
/// # Safety
/// `info` is NULL or an info a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_box_info(info: *mut CBoxInfo) {
    no_panic((), || {
        if !info.is_null() {
            // SAFETY: made by `Box::into_raw` in `info_raw`, given back once.
            let mut i = unsafe { Box::from_raw(info) };
            free_info_fields(&mut i);
        }
    })
}

/// Free a box info list, its entries and everything they own. NULL is a no-op.
///
/// # Safety
/// `list` is NULL or a list a callback received, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_free_box_info_list(list: *mut CBoxInfoList) {
    no_panic((), || {
        if !list.is_null() {
            // SAFETY: made by `Box::into_raw` in `list_raw`, given back once.
            let l = unsafe { Box::from_raw(list) };
            // SAFETY: from one `c_array` call in `list_raw`.
            for mut i in unsafe { take_c_array(l.items, l.count) } {
                free_info_fields(&mut i);
            }
        }
    })
}

// ---- metrics ----

/// A box's figures. Fields boxlite does not measure are 0 (`exec_errors`, `bytes_sent`,
/// `bytes_received`, `create_duration_ms`, `network_tcp_errors`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct CBoxMetrics {
    pub cpu_percent: f64,
    pub memory_bytes: i64,
    pub commands_executed: c_int,
    pub exec_errors: c_int,
    pub bytes_sent: i64,
    pub bytes_received: i64,
    pub create_duration_ms: i64,
    pub boot_duration_ms: i64,
    pub network_bytes_sent: i64,
    pub network_bytes_received: i64,
    pub network_tcp_connections: c_int,
    pub network_tcp_errors: c_int,
}

/// Per-box metrics completion; the metrics are borrowed for the call.
pub type CBoxMetricsCb =
    Option<unsafe extern "C" fn(*mut CBoxMetrics, *mut crate::CBoxliteError, *mut c_void)>;

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Queue the box's metrics (CPU, memory, commands, boot time, network counters).
///
/// # Safety
/// `handle` is a live box handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_box_metrics(
    handle: *mut CBoxHandle,
    cb: CBoxMetricsCb,
    user_data: *mut c_void,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        let b = box_ref(handle)?;
        let cb = need(cb)?;
        let lb = b.lb.clone();
        let work = async move {
            let m = lb.metrics().await?;
            let net = m.network.as_ref();
            Ok::<_, Failure>(CBoxMetrics {
                cpu_percent: m.cpu_percent.unwrap_or(0.0),
                memory_bytes: i64_of(m.vmm_rss_bytes.or(m.mem_used_bytes).unwrap_or(0)),
                commands_executed: c_int::try_from(m.execs_started.unwrap_or(0))
                    .unwrap_or(c_int::MAX),
                boot_duration_ms: m.boot.as_ref().map_or(0, |b| i64_of(b.ready_ms)),
                network_bytes_sent: net.map_or(0, |n| i64_of(n.bytes_out)),
                network_bytes_received: net.map_or(0, |n| i64_of(n.bytes_in)),
                network_tcp_connections: net.map_or(0, |n| {
                    c_int::try_from(n.tcp_connections).unwrap_or(c_int::MAX)
                }),
                ..CBoxMetrics::default()
            })
        };
        let ud = UserData(user_data);
        b.sh.submit(work, move |r| borrowed_event(r, cb, ud));
        Ok(())
    })
}
