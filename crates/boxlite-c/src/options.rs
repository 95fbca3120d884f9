//! Box options: `boxlite_options_new` and its setters (BoxLite's names). The setters
//! return nothing, as in BoxLite, so a bad value is remembered and refused, naming it,
//! by the create call that uses the options.

use std::os::raw::{c_char, c_int};

use boxlite::model::network::{NetworkMode, PortSpec};
use boxlite::{BoxOptions, Secret, SecretSource, SecretValue, VolumeSpec};

use crate::error::{BoxliteErrorCode, FFIError, Failure};
use crate::util::{entry, no_panic, opt_text, put, text, texts};

/// Box options, filled by the setters and read by `boxlite_create_box`.
#[derive(Debug)]
pub struct OptionsHandle {
    pub(crate) opts: BoxOptions,
    /// The first bad value a setter was given.
    pub(crate) bad: Option<Failure>,
}

pub type CBoxliteOptions = OptionsHandle;

/// Transport protocol for a port forwarding rule.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxlitePortProtocol {
    BoxlitePortProtocolTcp = 0,
    BoxlitePortProtocolUdp = 1,
}

impl OptionsHandle {
    /// The options, or the first bad value a setter saw.
    pub(crate) fn checked(&self) -> Result<BoxOptions, Failure> {
        match &self.bad {
            Some(f) => Err(f.clone()),
            None => Ok(self.opts.clone()),
        }
    }

    fn refuse(&mut self, f: Failure) {
        if self.bad.is_none() {
            self.bad = Some(f);
        }
    }
}

/// Apply `f` to the options behind `opts` (NULL is a no-op), remembering its failure.
fn with(opts: *mut OptionsHandle, f: impl FnOnce(&mut OptionsHandle) -> Result<(), Failure>) {
    no_panic((), || {
        if opts.is_null() {
            return;
        }
        // SAFETY: not NULL; the caller passes options from `boxlite_options_new` that it
        // has not freed, and does not use them from two threads at once.
        let o = unsafe { &mut *opts };
        if let Err(e) = f(o) {
            o.refuse(e);
        }
    })
}

fn positive(n: c_int, what: &str) -> Result<u32, Failure> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Failure::invalid(format!("{what} is {n}; give 1 or more")))
}

fn unsupported(what: &str, why: &str) -> Failure {
    Failure::new(
        BoxliteErrorCode::Unsupported,
        format!("{what} is not supported: {why}"),
    )
}

/// New options for a box of `image` (a reference such as `boxlite/busybox` or
/// `docker.io/library/alpine:3.20`). Free them with `boxlite_options_free`.
///
/// # Safety
/// `image` is a NUL-terminated string; `out_opts` is writable; `out_error` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_new(
    image: *const c_char,
    out_opts: *mut *mut CBoxliteOptions,
    out_error: *mut FFIError,
) -> BoxliteErrorCode {
    entry(out_error, || {
        put(out_opts, std::ptr::null_mut(), "out_opts")?;
        let image = text(image, "image")?;
        if image.trim().is_empty() {
            return Err(Failure::invalid(
                "image is empty; give a reference such as boxlite/busybox",
            ));
        }
        let h = Box::new(OptionsHandle {
            opts: BoxOptions::new(image),
            bad: None,
        });
        put(out_opts, Box::into_raw(h), "out_opts")
    })
}

/// Boot from a root filesystem directory instead of an image: not supported (boxlite
/// boots images); the create call refuses options that set it.
///
/// # Safety
/// `opts` is NULL or live options; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_rootfs_path(
    opts: *mut CBoxliteOptions,
    path: *const c_char,
) {
    with(opts, |_| {
        Err(unsupported(
            "rootfs_path",
            "boxlite boots OCI images; build one with `boxlite build` or `boxlite load`",
        ))
    });
    let _ = path;
}

/// The box's name (unique in the home).
///
/// # Safety
/// `opts` is NULL or live options; `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_name(opts: *mut CBoxliteOptions, name: *const c_char) {
    with(opts, |o| {
        o.opts.name = opt_text(name, "name")?;
        Ok(())
    })
}

/// Virtual CPUs (1 or more).
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_cpus(opts: *mut CBoxliteOptions, cpus: c_int) {
    with(opts, |o| {
        o.opts.cpus = positive(cpus, "cpus")?;
        Ok(())
    })
}

/// Memory in MiB.
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_memory(opts: *mut CBoxliteOptions, memory_mib: c_int) {
    with(opts, |o| {
        o.opts.memory_mib = positive(memory_mib, "memory_mib")?;
        Ok(())
    })
}

/// Size of the box's writable disk in GiB.
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_disk_size_gb(
    opts: *mut CBoxliteOptions,
    disk_size_gb: c_int,
) {
    with(opts, |o| {
        let gb = positive(disk_size_gb, "disk_size_gb")?;
        o.opts.disk_size_mib = Some(u64::from(gb) * 1024);
        Ok(())
    })
}

/// The working directory of the box's commands (absolute).
///
/// # Safety
/// `opts` is NULL or live options; `workdir` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_workdir(
    opts: *mut CBoxliteOptions,
    workdir: *const c_char,
) {
    with(opts, |o| {
        let dir = opt_text(workdir, "workdir")?;
        if let Some(d) = &dir {
            boxlite::BoxCommand::check_working_dir(d).map_err(Failure::from)?;
        }
        o.opts.working_dir = dir;
        Ok(())
    })
}

/// An environment variable of the box's commands.
///
/// # Safety
/// `opts` is NULL or live options; `key` and `val` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_add_env(
    opts: *mut CBoxliteOptions,
    key: *const c_char,
    val: *const c_char,
) {
    with(opts, |o| {
        let k = text(key, "env key")?;
        let v = text(val, "env value")?;
        boxlite::BoxCommand::check_env(&k, &v).map_err(Failure::from)?;
        o.opts.env.push((k, v));
        Ok(())
    })
}

/// A volume. `host_path` names a volume: a volume name (created on first use), NULL or
/// "" for an anonymous volume, or the directory of a managed volume; any other host
/// directory is refused by create (boxlite shares only volumes it manages).
///
/// # Safety
/// `opts` is NULL or live options; the strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_add_volume(
    opts: *mut CBoxliteOptions,
    host_path: *const c_char,
    guest_path: *const c_char,
    read_only: c_int,
) {
    with(opts, |o| {
        let guest = text(guest_path, "guest_path")?;
        let spec = match opt_text(host_path, "host_path")?.filter(|h| !h.is_empty()) {
            None => VolumeSpec::anonymous(guest),
            Some(h) if h.starts_with('/') => VolumeSpec::host_path(h, guest),
            Some(name) => VolumeSpec::named(name, guest),
        };
        o.opts.volumes.push(spec.read_only(read_only != 0));
        Ok(())
    })
}

/// Publish `guest_port` on the host's `host_port` (0: any free port). `host_ip` NULL or
/// "" is 127.0.0.1 (boxlite publishes on loopback unless an address is given).
///
/// # Safety
/// `opts` is NULL or live options; `host_ip` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_add_port(
    opts: *mut CBoxliteOptions,
    host_port: u16,
    guest_port: u16,
    protocol: BoxlitePortProtocol,
    host_ip: *const c_char,
) -> BoxliteErrorCode {
    if opts.is_null() {
        return BoxliteErrorCode::InvalidArgument;
    }
    let mut code = BoxliteErrorCode::Ok;
    with(opts, |o| {
        let r = (|| {
            if guest_port == 0 {
                return Err(Failure::invalid("guest_port is 0; give 1-65535"));
            }
            let ip = match opt_text(host_ip, "host_ip")?.filter(|s| !s.is_empty()) {
                None => std::net::IpAddr::from([127, 0, 0, 1]),
                Some(s) => s
                    .parse()
                    .map_err(|_| Failure::invalid(format!("host_ip {s:?} is not an IP address")))?,
            };
            let spec = format!(
                "{}:{host_port}:{guest_port}/{}",
                match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                },
                match protocol {
                    BoxlitePortProtocol::BoxlitePortProtocolTcp => "tcp",
                    BoxlitePortProtocol::BoxlitePortProtocolUdp => "udp",
                }
            );
            PortSpec::parse(&spec).map_err(|e| Failure::invalid(e.to_string()))
        })();
        match r {
            Ok(p) => {
                o.opts.network.ports.push(p);
                Ok(())
            }
            Err(e) => {
                code = e.code;
                Err(e)
            }
        }
    });
    code
}

/// Give the box a network (the default).
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_network_enabled(opts: *mut CBoxliteOptions) {
    with(opts, |o| {
        o.opts.network.mode = NetworkMode::Enabled;
        Ok(())
    })
}

/// No network at all (no NIC, no helper).
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_network_disabled(opts: *mut CBoxliteOptions) {
    with(opts, |o| {
        o.opts.network.mode = NetworkMode::None;
        Ok(())
    })
}

/// Allow egress to `host` (a `--allow-net` rule: a name, `*.suffix`, an address or a
/// CIDR, optionally with `:port`). One or more puts the box in allow-list mode.
///
/// # Safety
/// `opts` is NULL or live options; `host` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_add_network_allow(
    opts: *mut CBoxliteOptions,
    host: *const c_char,
) {
    with(opts, |o| {
        o.opts.network.allow.push(text(host, "allow rule")?);
        Ok(())
    })
}

/// A secret: the box sees `placeholder` (NULL: `<BOXLITE_SECRET:NAME>`), which the
/// host replaces with `value` only in HTTPS requests to `hosts`.
///
/// # Safety
/// `opts` is NULL or live options; the strings are NULL or NUL-terminated; `hosts`
/// points to `hosts_count` strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_add_secret(
    opts: *mut CBoxliteOptions,
    name: *const c_char,
    value: *const c_char,
    placeholder: *const c_char,
    hosts: *const *const c_char,
    hosts_count: c_int,
) {
    with(opts, |o| {
        let name = text(name, "secret name")?;
        let value = text(value, "secret value")?;
        let hosts = texts(hosts, hosts_count, "secret hosts")?;
        o.opts.secrets.push(Secret {
            name,
            hosts,
            source: SecretSource::Value(SecretValue::new(value)),
            placeholder: opt_text(placeholder, "secret placeholder")?,
            body: false,
        });
        Ok(())
    })
}

/// Remove the box when it stops (non-zero) or keep it (0, the default).
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_auto_remove(opts: *mut CBoxliteOptions, val: c_int) {
    with(opts, |o| {
        o.opts.auto_remove = val != 0;
        Ok(())
    })
}

/// Pause the box after `seconds` without an exec, attach or file transfer (0: never);
/// the next call that needs it resumes it. Not for boxes with volumes or published
/// ports. Unset: the runtime's default (`BOXLITE_AUTO_PAUSE`).
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_auto_pause_interval(
    opts: *mut CBoxliteOptions,
    seconds: u32,
) {
    with(opts, |o| {
        if seconds > boxlite::MAX_AUTO_PAUSE_SECS {
            return Err(Failure::new(
                BoxliteErrorCode::InvalidArgument,
                format!(
                    "auto_pause_interval {seconds} is out of range (0 for never, or 1-{} seconds)",
                    boxlite::MAX_AUTO_PAUSE_SECS
                ),
            ));
        }
        o.opts.auto_pause_secs = Some(seconds);
        Ok(())
    })
}

/// Delete after an interval: only 0 (never) is supported; use auto-remove to remove a
/// box when it stops.
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_auto_delete_interval(
    opts: *mut CBoxliteOptions,
    seconds: u32,
) {
    with(opts, |_| match seconds {
        0 => Ok(()),
        _ => Err(unsupported(
            "auto_delete_interval",
            "use boxlite_options_set_auto_remove to remove a box when it stops",
        )),
    })
}

/// Resume a paused box on use. boxlite always does: any value is accepted.
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_auto_resume_enabled(
    opts: *mut CBoxliteOptions,
    val: c_int,
) {
    let _ = (opts, val);
}

/// Keep the box running after this process exits. boxlite boxes are durable and always
/// do: any value is accepted.
///
/// # Safety
/// `opts` is NULL or live options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_detach(opts: *mut CBoxliteOptions, val: c_int) {
    let _ = (opts, val);
}

/// Override the image's entrypoint (`argc` strings; 0 clears it).
///
/// # Safety
/// `opts` is NULL or live options; `args` points to `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_entrypoint(
    opts: *mut CBoxliteOptions,
    args: *const *const c_char,
    argc: c_int,
) {
    with(opts, |o| {
        o.opts.entrypoint = Some(texts(args, argc, "entrypoint")?);
        Ok(())
    })
}

/// Override the image's command (`argc` strings).
///
/// # Safety
/// `opts` is NULL or live options; `args` points to `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_set_cmd(
    opts: *mut CBoxliteOptions,
    args: *const *const c_char,
    argc: c_int,
) {
    with(opts, |o| {
        o.opts.cmd = Some(texts(args, argc, "cmd")?);
        Ok(())
    })
}

/// Free options. NULL is a no-op. Create calls copy what they need: the options may be
/// freed as soon as the call returns.
///
/// # Safety
/// `opts` is NULL or options from `boxlite_options_new`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boxlite_options_free(opts: *mut CBoxliteOptions) {
    // SAFETY: the contract above is `free_boxed`'s.
    unsafe { crate::util::free_boxed(opts) }
}

/// Options argument that must not be NULL, checked.
pub(crate) fn options_of(opts: *mut CBoxliteOptions) -> Result<BoxOptions, Failure> {
    if opts.is_null() {
        return Err(Failure::null("opts"));
    }
    // SAFETY: not NULL; live options of the caller's.
    unsafe { &*opts }.checked()
}
