//! `BoxOptions`, `NetworkSpec`, `OutboundNetworkSpec`, `CopyOptions`, `Secret`: BoxLite's
//! names and defaults, turned into the library's options. What the library cannot do is
//! refused, naming the field, never dropped.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{invalid, to_py};

/// Outbound network: `mode` `"enabled"` or `"disabled"` (no network device at all), and
/// `allow_net` rules (a name, `*.name`, an IP, a CIDR or a group; one rule switches the
/// box to allow-list mode).
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct OutboundNetworkSpec {
    /// `"enabled"` or `"disabled"`.
    pub mode: String,
    /// Egress allow rules.
    pub allow_net: Vec<String>,
}

#[pymethods]
impl OutboundNetworkSpec {
    #[new]
    #[pyo3(signature = (mode="enabled".to_string(), allow_net=Vec::new()))]
    fn new(mode: String, allow_net: Vec<String>) -> Self {
        OutboundNetworkSpec { mode, allow_net }
    }

    fn __repr__(&self) -> String {
        format!(
            "OutboundNetworkSpec(mode={:?}, allow_net={:?})",
            self.mode, self.allow_net
        )
    }
}

/// A box's network. `NetworkSpec(mode=..., allow_net=[...])` configures outbound traffic,
/// as does `NetworkSpec(outbound=OutboundNetworkSpec(...))`; `deny_net` adds deny rules
/// (a deny beats any allow); `hosts` adds names to the box's DNS (`"NAME:IP"`, or
/// `"NAME:host-gateway"` for the host; a name still needs a rule to be reachable).
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    /// Outbound traffic.
    pub outbound: OutboundNetworkSpec,
    /// Egress deny rules; a deny beats any allow.
    pub deny_net: Vec<String>,
    /// Names added to the box's DNS: `"NAME:IP"` or `"NAME:host-gateway"`.
    pub hosts: Vec<String>,
}

#[pymethods]
impl NetworkSpec {
    #[new]
    #[pyo3(signature = (outbound=None, inbound=None, mode=None, allow_net=None, *, deny_net=Vec::new(), hosts=Vec::new()))]
    fn new(
        outbound: Option<OutboundNetworkSpec>,
        inbound: Option<Bound<'_, PyAny>>,
        mode: Option<String>,
        allow_net: Option<Vec<String>>,
        deny_net: Vec<String>,
        hosts: Vec<String>,
    ) -> PyResult<Self> {
        if inbound.is_some_and(|i| !i.is_none()) {
            return Err(invalid(
                "inbound network rules are not supported; publish ports with BoxOptions(ports=...)",
            ));
        }
        let outbound = match (outbound, mode, allow_net) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid(
                    "give outbound=OutboundNetworkSpec(...) or mode/allow_net, not both",
                ));
            }
            (Some(o), None, None) => o,
            (None, mode, allow) => OutboundNetworkSpec {
                mode: mode.unwrap_or_else(|| "enabled".into()),
                allow_net: allow.unwrap_or_default(),
            },
        };
        Ok(NetworkSpec {
            outbound,
            deny_net,
            hosts,
        })
    }

    /// The outbound mode (BoxLite's legacy view).
    #[getter]
    fn mode(&self) -> String {
        self.outbound.mode.clone()
    }

    /// The outbound allow rules (BoxLite's legacy view).
    #[getter]
    fn allow_net(&self) -> Vec<String> {
        self.outbound.allow_net.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "NetworkSpec(mode={:?}, allow_net={:?}, deny_net={:?})",
            self.outbound.mode, self.outbound.allow_net, self.deny_net
        )
    }
}

/// How a copy treats its source and destination (`docker cp`'s defaults). A directory's
/// contents alone are copied when the source ends in `/.`.
#[pyclass(module = "boxlite", get_all, set_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Copy directories with their contents.
    pub recursive: bool,
    /// Replace existing files at the destination.
    pub overwrite: bool,
    /// Copy what symlinks point to instead of the links.
    pub follow_symlinks: bool,
}

#[pymethods]
impl CopyOptions {
    #[new]
    #[pyo3(signature = (recursive=true, overwrite=true, follow_symlinks=false))]
    fn new(recursive: bool, overwrite: bool, follow_symlinks: bool) -> Self {
        CopyOptions {
            recursive,
            overwrite,
            follow_symlinks,
        }
    }
}

impl CopyOptions {
    pub(crate) fn to_library(o: Option<&CopyOptions>) -> boxlite::CopyOptions {
        let d = boxlite::CopyOptions::default();
        match o {
            Some(o) => boxlite::CopyOptions {
                recursive: o.recursive,
                overwrite: o.overwrite,
                follow_symlinks: o.follow_symlinks,
                ..d
            },
            None => d,
        }
    }
}

/// A secret the box uses without ever holding it: the box sees a placeholder (as
/// `$NAME` and `$BOXLITE_SECRET_<NAME>`; default `<BOXLITE_SECRET:NAME>`), and the box's
/// network helper puts the real value in its place on HTTPS requests to `hosts` only
/// (`api.example.com` or `*.example.com`; at least one). The value comes from exactly one
/// of `value` (a literal), `env` (an environment variable of this process, read at every
/// start of the box) or `file` (a file, read at every start, without its trailing
/// newline). `body=True` substitutes in request bodies too. The value never shows in a
/// repr, and a REST runtime sends it (read here for `env` and `file`) to the server.
#[pyclass(module = "boxlite", from_py_object)]
#[derive(Debug, Clone)]
pub struct Secret {
    /// An environment variable name: where the box sees the placeholder.
    #[pyo3(get, set)]
    pub name: String,
    /// The hosts the value is sent to.
    #[pyo3(get, set)]
    pub hosts: Vec<String>,
    /// What the box sees instead of the value (None: `<BOXLITE_SECRET:NAME>`).
    #[pyo3(get, set)]
    pub placeholder: Option<String>,
    /// The environment variable the value comes from, if that is its source.
    #[pyo3(get)]
    pub env: Option<String>,
    file: Option<std::path::PathBuf>,
    /// Also substitute in request bodies.
    #[pyo3(get, set)]
    pub body: bool,
    value: Option<boxlite::SecretValue>,
}

#[pymethods]
impl Secret {
    #[new]
    #[pyo3(signature = (name, value=None, hosts=Vec::new(), placeholder=None, *, env=None, file=None, body=false))]
    fn new(
        name: String,
        value: Option<String>,
        hosts: Vec<String>,
        placeholder: Option<String>,
        env: Option<String>,
        file: Option<std::path::PathBuf>,
        body: bool,
    ) -> PyResult<Self> {
        let given = [value.is_some(), env.is_some(), file.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid(format!(
                "Secret {name:?} needs exactly one of value=, env= or file= (where its value comes from)"
            )));
        }
        Ok(Secret {
            name,
            hosts,
            placeholder,
            env,
            file,
            body,
            value: value.map(boxlite::SecretValue::new),
        })
    }

    /// The file the value comes from, if that is its source.
    #[getter]
    fn file(&self) -> Option<String> {
        self.file.as_ref().map(|f| f.display().to_string())
    }

    /// The literal value, if that is the source (None for `env` and `file`).
    #[getter]
    fn value(&self) -> Option<String> {
        self.value.as_ref().map(|v| v.expose().to_string())
    }

    /// The placeholder the box sees: `placeholder`, or `<BOXLITE_SECRET:NAME>`.
    fn get_placeholder(&self) -> String {
        self.to_library().effective_placeholder()
    }

    fn __repr__(&self) -> String {
        let source = match (&self.env, &self.file) {
            (Some(e), _) => format!("env={e:?}"),
            (_, Some(f)) => format!("file={:?}", f.display().to_string()),
            _ => "value=[REDACTED]".to_string(),
        };
        format!(
            "Secret(name={:?}, hosts={:?}, placeholder={:?}, {source}{})",
            self.name,
            self.hosts,
            self.get_placeholder(),
            if self.body { ", body=True" } else { "" }
        )
    }
}

impl Secret {
    pub(crate) fn to_library(&self) -> boxlite::Secret {
        let hosts = self.hosts.clone();
        let s = match (&self.value, &self.env, &self.file) {
            (Some(v), _, _) => boxlite::Secret::from_value(&self.name, v.clone(), hosts),
            (_, Some(e), _) => boxlite::Secret::from_env(&self.name, e, hosts),
            (_, _, Some(f)) => boxlite::Secret::from_file(&self.name, f, hosts),
            (None, None, None) => unreachable!("a Secret is made with one source"),
        };
        let mut s = s.body(self.body);
        s.placeholder = self.placeholder.clone();
        s
    }
}

/// What a box is made of, with BoxLite's names and defaults (`image` `alpine:latest`,
/// `auto_remove` true: a box is removed once it stops unless asked to stay).
#[pyclass(module = "boxlite", get_all, set_all)]
#[derive(Debug)]
pub struct BoxOptions {
    /// An image reference (default `alpine:latest`; `boxlite/busybox` and `boxlite/python` are built in).
    pub image: Option<String>,
    /// Refused: boxes start from images.
    pub rootfs_path: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Guest memory in MiB.
    pub memory_mib: Option<u32>,
    /// Root disk size in GiB (default: the image's, with at least 1 GiB free).
    pub disk_size_gb: Option<u64>,
    /// The default working directory of the box's commands.
    pub working_dir: Option<String>,
    /// The environment of every command in the box, over the image's: `(name, value)`.
    pub env: Vec<(String, String)>,
    /// Managed volumes, as `{"managed_volume": name, "guest_path": path, "read_only":
    /// bool}` or `"NAME:/guest/path[:ro]"` (`"/guest/path"`: an anonymous one, removed with
    /// the box). Host directories are never mounted: a `(host_path, guest_path)` tuple is
    /// refused; copy files in and out instead.
    pub volumes: Vec<String>,
    /// The network and its egress policy (default: on, public internet only).
    pub network: Option<NetworkSpec>,
    /// Published ports: `(host_port, guest_port[, protocol[, host_ip]])` or a dict with
    /// `guest_port` and optional `host_port` (0 or absent: any free port), `protocol`,
    /// `host_ip` (default 127.0.0.1).
    pub ports: Vec<String>,
    /// Remove the box once it stops, however it stops (default true).
    pub auto_remove: Option<bool>,
    /// Seconds without an exec or file transfer after which the box pauses itself (its
    /// memory saved to disk, no CPU or RAM used; the next call resumes it). 0: never;
    /// absent: the runtime's default (`BOXLITE_AUTO_PAUSE`).
    pub auto_stop: Option<u64>,
    /// 0 keeps a stopped box; any other value removes it once it stops (as
    /// `auto_remove`).
    pub auto_delete: Option<u64>,
    /// Accepted: a paused box always resumes on the next call that needs it.
    pub auto_resume: Option<bool>,
    /// Accepted: every box outlives the process that created it.
    pub detach: Option<bool>,
    /// Replaces the image's entrypoint (and drops its command, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command.
    pub cmd: Option<Vec<String>>,
    /// The default user of the box's commands: `name|uid[:group|gid]`.
    pub user: Option<String>,
    /// Accepted: commands ask for a terminal one by one (`exec(..., tty=True)`).
    pub tty: Option<bool>,
    /// Refused when set: no security presets or capabilities to choose yet.
    pub advanced: Option<Py<PyAny>>,
    /// Secrets the box uses without holding them (`Secret`); they need the network.
    pub secrets: Vec<Secret>,
}

#[pymethods]
impl BoxOptions {
    #[new]
    #[pyo3(signature = (
        image=None, rootfs_path=None, cpus=None, memory_mib=None, disk_size_gb=None,
        working_dir=None, env=Vec::new(), volumes=Vec::new(), network=None, ports=Vec::new(),
        auto_remove=None, auto_stop=None, auto_delete=None, auto_resume=None, detach=None,
        entrypoint=None, cmd=None, user=None, tty=None, advanced=None, secrets=Vec::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        image: Option<String>,
        rootfs_path: Option<String>,
        cpus: Option<u32>,
        memory_mib: Option<u32>,
        disk_size_gb: Option<u64>,
        working_dir: Option<String>,
        env: Vec<(String, String)>,
        volumes: Vec<Bound<'_, PyAny>>,
        network: Option<NetworkSpec>,
        ports: Vec<Bound<'_, PyAny>>,
        auto_remove: Option<bool>,
        auto_stop: Option<u64>,
        auto_delete: Option<u64>,
        auto_resume: Option<bool>,
        detach: Option<bool>,
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        user: Option<String>,
        tty: Option<bool>,
        advanced: Option<Py<PyAny>>,
        secrets: Vec<Secret>,
    ) -> PyResult<Self> {
        Ok(BoxOptions {
            image,
            rootfs_path,
            cpus,
            memory_mib,
            disk_size_gb,
            working_dir,
            env,
            volumes: volumes.iter().map(volume_spec).collect::<PyResult<_>>()?,
            network,
            ports: ports.iter().map(port_spec).collect::<PyResult<_>>()?,
            auto_remove,
            auto_stop,
            auto_delete,
            auto_resume,
            detach,
            entrypoint,
            cmd,
            user,
            tty,
            advanced,
            secrets,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "BoxOptions(image={:?}, cpus={:?}, memory_mib={:?})",
            self.image, self.cpus, self.memory_mib
        )
    }
}

fn unsupported(what: &str) -> PyErr {
    crate::errors::error(
        "UnsupportedError",
        format!("{what} is not supported by this runtime yet"),
    )
}

impl BoxOptions {
    /// The library's options, with `name` if given.
    pub(crate) fn to_library(&self, name: Option<&str>) -> PyResult<boxlite::BoxOptions> {
        if self.rootfs_path.is_some() {
            return Err(unsupported("rootfs_path (boxes start from images)"));
        }
        if self.advanced.is_some() {
            return Err(unsupported("advanced (security presets and capabilities)"));
        }
        let auto_pause = match self.auto_stop.map(u32::try_from) {
            Some(Ok(s)) if s <= boxlite::MAX_AUTO_PAUSE_SECS => Some(s),
            Some(_) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "auto_stop is out of range (0 for never, or 1-{} seconds)",
                    boxlite::MAX_AUTO_PAUSE_SECS
                )));
            }
            None => None,
        };
        let image = self.image.as_deref().unwrap_or("alpine:latest");
        let auto_remove = match self.auto_delete {
            Some(d) => d != 0,
            None => self.auto_remove.unwrap_or(true),
        };
        let mut o = boxlite::BoxOptions::new(image).auto_remove(auto_remove);
        o.auto_pause_secs = auto_pause;
        if let Some(n) = name {
            o = o.name(n);
        }
        if let Some(c) = self.cpus {
            o = o.cpus(c);
        }
        if let Some(m) = self.memory_mib {
            o = o.memory_mib(m);
        }
        if let Some(gb) = self.disk_size_gb {
            o = o.disk_size_mib(gb.saturating_mul(1024));
        }
        for (k, v) in &self.env {
            o = o.env(k, v);
        }
        if let Some(d) = &self.working_dir {
            o = o.working_dir(d);
        }
        if let Some(u) = &self.user {
            o = o.user(u);
        }
        if let Some(e) = &self.entrypoint {
            o = o.entrypoint(e.clone());
        }
        if let Some(c) = &self.cmd {
            o = o.cmd(c.clone());
        }
        for v in &self.volumes {
            o = o.volume(boxlite::VolumeSpec::parse(v).map_err(|e| to_py(e.into()))?);
        }
        let mut net = match &self.network {
            None => boxlite::model::NetworkSpec::default(),
            Some(n) => {
                let mut net = match n.outbound.mode.as_str() {
                    "enabled" => boxlite::model::NetworkSpec::default(),
                    "disabled" => boxlite::model::NetworkSpec::none(),
                    other => {
                        return Err(invalid(format!(
                            "network mode {other:?} is not one; valid values are \"enabled\" and \"disabled\""
                        )));
                    }
                };
                net.allow = n.outbound.allow_net.clone();
                net.deny = n.deny_net.clone();
                for h in &n.hosts {
                    net.hosts.push(
                        boxlite::model::HostSpec::parse(h)
                            .map_err(|e| to_py(boxlite::BoxError::Network(e).into()))?,
                    );
                }
                net
            }
        };
        for p in &self.ports {
            net.ports.push(
                boxlite::model::PortSpec::parse(p)
                    .map_err(|e| to_py(boxlite::BoxError::Network(e).into()))?,
            );
        }
        o.network = net;
        o.secrets = self.secrets.iter().map(Secret::to_library).collect();
        o.validate().map_err(|e| to_py(e.into()))?;
        Ok(o)
    }
}

/// One volume as the library's spec string.
fn volume_spec(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.extract::<String>() {
        return Ok(s);
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let get = |k: &str| d.get_item(k).ok().flatten();
        for key in d.keys() {
            let k: String = key.extract()?;
            if !["managed_volume", "host_path", "guest_path", "read_only"].contains(&k.as_str()) {
                return Err(invalid(format!(
                    "unknown volume key {k:?}; expected managed_volume, guest_path, read_only"
                )));
            }
        }
        if get("host_path").is_some() {
            return Err(host_path_refused());
        }
        let name: String = get("managed_volume")
            .ok_or_else(|| invalid("a volume needs managed_volume (a volume's name)"))?
            .extract()?;
        let guest: String = get("guest_path")
            .ok_or_else(|| invalid("a volume needs guest_path"))?
            .extract()?;
        let ro = get("read_only")
            .map(|r| r.is_truthy())
            .transpose()?
            .unwrap_or(false);
        return Ok(format!("{name}:{guest}{}", if ro { ":ro" } else { "" }));
    }
    if v.cast::<PyTuple>().is_ok() {
        return Err(host_path_refused());
    }
    Err(invalid(format!(
        "volume {v} is not {{\"managed_volume\": name, \"guest_path\": path}} nor \"NAME:/guest/path[:ro]\""
    )))
}

fn host_path_refused() -> PyErr {
    invalid(
        "host directories are never mounted into a box; use a managed volume \
         ({\"managed_volume\": name, \"guest_path\": path}) or copy_in/copy_out",
    )
}

/// One published port as the library's spec string.
fn port_spec(p: &Bound<'_, PyAny>) -> PyResult<String> {
    let (host_port, guest_port, proto, host_ip): (u16, u16, Option<String>, Option<String>) =
        if let Ok(d) = p.cast::<PyDict>() {
            let get = |k: &str| d.get_item(k).ok().flatten().filter(|v| !v.is_none());
            let guest = get("guest_port")
                .or_else(|| get("guest"))
                .ok_or_else(|| invalid("a port needs guest_port"))?
                .extract()?;
            let host = get("host_port").or_else(|| get("host"));
            let host = host.map(|h| h.extract()).transpose()?.unwrap_or(0);
            let proto = get("protocol").map(|v| v.extract()).transpose()?;
            let ip = get("host_ip").map(|v| v.extract()).transpose()?;
            (host, guest, proto, ip)
        } else if let Ok(t) = p.extract::<(u16, u16)>() {
            (t.0, t.1, None, None)
        } else if let Ok(t) = p.extract::<(u16, u16, String)>() {
            (t.0, t.1, Some(t.2), None)
        } else if let Ok(t) = p.extract::<(u16, u16, String, String)>() {
            (t.0, t.1, Some(t.2), Some(t.3))
        } else {
            return Err(invalid(format!(
                "port {p} is not (host_port, guest_port[, protocol[, host_ip]]) nor a dict with guest_port"
            )));
        };
    let ip = host_ip.map(|i| format!("{i}:")).unwrap_or_default();
    let proto = proto.unwrap_or_else(|| "tcp".into());
    Ok(format!("{ip}{host_port}:{guest_port}/{proto}"))
}
