//! Booting a box: spawn its processes detached from the caller (vhost-device-vsock when
//! the kernel has no vhost-vsock, then QEMU), bind the readiness listener before QEMU
//! starts, and wait for whichever comes first: the agent's readiness connection, the
//! death of a helper, or the boot timeout. A failed boot is reported with its cause and
//! the tail of the console log, and leaves no process or socket behind.

use std::path::Path;
use std::time::{Duration, Instant};

use super::BoxError;
use super::record::{BoxRow, BoxStatus};
use crate::portal::AgentClient;
use crate::runtime::RuntimeInner;
use crate::runtime::layout::{BoxPaths, SocketPaths};
use crate::util::fsutil::tail_file;
use crate::util::process::{ProcessId, spawn_detached};
use crate::vmm::vsock::{AgentAddr, ReadyListener, VsockMode, random_cid};
use crate::vmm::{FsDevice, VmConfig, VmmError, VsockDevice};

/// Bytes of console log quoted in a boot error.
const CONSOLE_TAIL: usize = 3000;

/// What a failed boot leaves to clean up.
pub(crate) struct BootGuard {
    pub procs: Vec<ProcessId>,
    pub sockets: SocketPaths,
    pub armed: bool,
}

impl BootGuard {
    pub async fn cleanup(&mut self) {
        for p in self.procs.drain(..).rev() {
            p.terminate(Duration::from_secs(2)).await;
        }
        self.sockets.remove();
    }
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        // Covers a start() future dropped halfway (for example by Ctrl-C): kill what was
        // spawned, synchronously.
        if self.armed {
            for p in &self.procs {
                let _ = p.signal(libc::SIGKILL);
            }
            self.sockets.remove();
        }
    }
}

/// How the root disk file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskFormat {
    /// A box's qcow2 overlay on its image's base.
    Qcow2,
    /// A plain file: the image builder's fresh ext4.
    Raw,
}

/// What to boot: a box, or the image builder.
pub(crate) struct VmSpec<'a> {
    /// Names the VM's processes (`BOXLITE_BOX_ID`) and its hostname (first 12 characters).
    pub id: &'a str,
    /// Where the console, VMM and helper logs go.
    pub paths: BoxPaths,
    pub root_disk: std::path::PathBuf,
    pub root_format: DiskFormat,
    pub memory_mib: u32,
    pub cpus: u32,
    pub volumes: &'a [crate::volumes::VolumeMount],
    /// Kernel command line words for the agent, after the readiness port and hostname.
    pub cmdline: Vec<String>,
}

pub(super) async fn boot(
    rt: &RuntimeInner,
    row: &mut BoxRow,
    guard: &mut BootGuard,
    save: &(dyn Fn(&BoxStatus) -> Result<(), crate::Error> + Sync),
) -> Result<AgentClient, crate::Error> {
    let paths = rt.box_paths(&row.id);
    let spec = VmSpec {
        id: &row.id,
        root_disk: paths.disk(),
        root_format: DiskFormat::Qcow2,
        paths,
        memory_mib: row.config.memory_mib,
        cpus: row.config.cpus,
        volumes: &row.config.volumes,
        cmdline: Vec::new(),
    };
    launch(rt, &spec, &mut row.status, guard, save).await
}

/// Boot a VM as `spec` says and wait until its agent is ready, recording its processes
/// in `rec` (saved once the VMM is spawned).
pub(crate) async fn launch(
    rt: &RuntimeInner,
    spec: &VmSpec<'_>,
    rec: &mut BoxStatus,
    guard: &mut BootGuard,
    save: &(dyn Fn(&BoxStatus) -> Result<(), crate::Error> + Sync),
) -> Result<AgentClient, crate::Error> {
    let t0 = Instant::now();
    let assets = rt.assets()?;
    let kernel = assets.kernel()?;
    let initrd = assets.initramfs()?;
    let id = spec.id.to_string();
    let paths = &spec.paths;
    let sockets = &guard.sockets.clone();
    let home = rt.layout.home().display().to_string();
    let marker = [
        ("BOXLITE_HOME", home.as_str()),
        ("BOXLITE_BOX_ID", id.as_str()),
    ];
    let mode = rt.vsock_mode;
    rec.vsock_mode = Some(mode);
    let ready_port = boxlite_protocol::DEFAULT_READY_PORT;
    let mut helper_child = None;
    let (device, addr, ready_port) = match mode {
        VsockMode::VhostUser => {
            let binary = rt.vhost_vsock_binary()?;
            let args = vec![
                "--vm".into(),
                format!(
                    "guest-cid=3,socket={},uds-path={}",
                    sockets.vhost().display(),
                    sockets.agent().display()
                )
                .into(),
            ];
            let (id, child) = spawn_detached(&binary, &args, &paths.vsock_log(), &marker)?;
            guard.procs.push(id);
            rec.vsock_helper = Some(id);
            helper_child = Some(child);
            (
                VsockDevice::VhostUser {
                    socket: sockets.vhost(),
                },
                AgentAddr::Hybrid {
                    uds: sockets.agent(),
                },
                ready_port,
            )
        }
        VsockMode::Kernel => {
            let cid = random_cid();
            rec.cid = Some(cid);
            // A per-box readiness port: host vsock ports are shared by all boxes.
            let port = rand::random_range(1 << 20..1 << 30);
            (VsockDevice::Kernel { cid }, AgentAddr::Kernel { cid }, port)
        }
    };
    if let Some(child) = helper_child.as_mut() {
        wait_for_socket(
            "vhost-device-vsock",
            &sockets.vhost(),
            child,
            &paths.vsock_log(),
        )
        .await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "vsock device ready");
    }
    // One virtiofsd per volume, each sharing exactly one managed directory, checked
    // against the gate again now: the directory could have been replaced since creation.
    let mut fs = Vec::new();
    rec.virtiofsd.clear();
    if !spec.volumes.is_empty() {
        let binary = rt.virtiofsd_binary()?;
        let sandbox = crate::volumes::virtiofsd_sandbox();
        for (i, m) in spec.volumes.iter().enumerate() {
            let dir = m.kind.root(&rt.layout).join(&m.name);
            let (_, _, shared) = crate::volumes::gate(&rt.layout, &dir)?;
            let socket = sockets.fs(i);
            let mut args: Vec<std::ffi::OsString> = vec![
                format!("--socket-path={}", socket.display()).into(),
                "--shared-dir".into(),
                shared.into_os_string(),
                format!("--sandbox={sandbox}").into(),
                // The guest sees the directory as it is; nothing is cached across boxes.
                "--cache=auto".into(),
            ];
            if m.read_only {
                args.push("--readonly".into());
            }
            let log = paths.virtiofsd_log(i);
            let (pid, mut child) = spawn_detached(&binary, &args, &log, &marker)?;
            guard.procs.push(pid);
            rec.virtiofsd.push(pid);
            wait_for_socket("virtiofsd", &socket, &mut child, &log).await?;
            fs.push(FsDevice {
                socket,
                tag: crate::volumes::tag(i),
            });
        }
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            volumes = fs.len(),
            "virtiofsd ready"
        );
    }
    let ready = ReadyListener::bind(&addr, &sockets.agent_port(ready_port), ready_port)
        .map_err(|e| VmmError::Vsock(format!("binding the readiness listener: {e}")))?;

    let cfg = VmConfig {
        accel: rt.accel.accel,
        kernel,
        initrd,
        cmdline: [
            format!("{}={ready_port}", boxlite_protocol::CMDLINE_READY_PORT),
            format!("boxlite.hostname={}", &id[..id.len().min(12)]),
        ]
        .into_iter()
        .chain(spec.cmdline.iter().cloned())
        .collect(),
        root_disk: spec.root_disk.clone(),
        root_raw: spec.root_format == DiskFormat::Raw,
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        vsock: device,
        fs,
        console_log: paths.console_log(),
        vmm_log: paths.vmm_log(),
        marker: marker
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut vm = rt.vmm.spawn(&cfg)?;
    let ms = || t0.elapsed().as_millis() as u64;
    let mut timings = super::record::BootTimings {
        vmm_spawned_ms: ms(),
        ..Default::default()
    };
    tracing::debug!(ms = timings.vmm_spawned_ms, "vmm spawned");
    guard.procs.push(vm.id);
    rec.vmm = Some(vm.id);
    save(rec)?;

    let boot_fail = |reason: String| BoxError::BootFailed {
        id: id.clone(),
        reason,
        console: tail_file(&paths.console_log(), CONSOLE_TAIL),
    };
    let timeout = rt.boot_timeout;
    let mut vm_child = vm.child.take();
    let vm_exit = async {
        match vm_child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    let helper_exit = async {
        match helper_child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = ready.accept_ready() => {
            r.map_err(|e| boot_fail(format!("readiness listener failed: {e}")))?;
        }
        st = vm_exit => {
            let qemu_log = tail_file(&paths.vmm_log(), 1000);
            return Err(boot_fail(format!(
                "the VM exited during boot ({}){}",
                st.map(|s| s.to_string()).unwrap_or_else(|| "status unknown".into()),
                if qemu_log.trim().is_empty() { String::new() } else { format!("; qemu said: {}", qemu_log.trim()) }
            )).into());
        }
        st = helper_exit => {
            return Err(boot_fail(format!(
                "vhost-device-vsock exited during boot ({}): {}",
                st.map(|s| s.to_string()).unwrap_or_else(|| "status unknown".into()),
                tail_file(&paths.vsock_log(), 1000).trim()
            )).into());
        }
        _ = tokio::time::sleep(timeout) => {
            return Err(boot_fail(format!(
                "the agent did not report ready within {}s (accelerator {}); raise BOXLITE_BOOT_TIMEOUT if the host is slow",
                timeout.as_secs(), rt.accel.accel
            )).into());
        }
    }
    drop(ready);
    timings.agent_ready_ms = ms();
    tracing::debug!(ms = timings.agent_ready_ms, "agent ready");
    let client = AgentClient::connect(addr).await?;
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, "agent connected");
    if !spec.volumes.is_empty() {
        let mounts: Vec<(String, String, bool)> = spec
            .volumes
            .iter()
            .enumerate()
            .map(|(i, m)| (crate::volumes::tag(i), m.guest_path.clone(), m.read_only))
            .collect();
        client
            .mount_volumes(&mounts)
            .await
            .map_err(|e| boot_fail(format!("mounting volumes: {}", crate::error_chain(&e))))?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "volumes mounted");
    }
    timings.ready_ms = ms();
    rec.boot = Some(timings);
    Ok(client)
}

/// Wait for a vhost-user backend to listen on its socket, or report why it died.
async fn wait_for_socket(
    what: &str,
    path: &Path,
    child: &mut tokio::process::Child,
    log: &Path,
) -> Result<(), VmmError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if crate::util::fsutil::unix_socket_ready(path) {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(VmmError::Helper(format!(
                "{what} exited ({st}) before creating {}: {}",
                path.display(),
                tail_file(log, 1000).trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(VmmError::Helper(format!(
                "{what} did not create {} within 10s",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
