//! Booting a VM, for a box or for the image builder: start its helpers (one virtiofsd per
//! volume, the network helper), start QEMU, then the shim that owns the agent channel,
//! and wait for whichever comes first: the agent answering a ping through the shim, the
//! death of QEMU or of the shim, or the boot deadline.
//!
//! Every process is started behind the spawn gate ([`crate::util::spawn`]) and recorded
//! through a [`ProcessLedger`] before it runs, so a caller that dies at any point leaves
//! only processes that the next operation can find and end. A failed boot is a typed
//! [`BootError`], and leaves no process or socket behind ([`BootGuard`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::jailer::{Helper, JailSpec, cgroup::BoxCgroup};
use crate::layout::{BoxPaths, SocketDirError, SocketPaths};
use crate::model::{BootTimings, BoxStatus, VolumeMount};
use crate::portal::{AgentClient, PortalError};
use crate::util::fsutil::tail_file;
use crate::util::kill;
use crate::util::ms_since;
use crate::util::process::ProcessId;
use crate::util::spawn::{HelperCommand, SpawnError, spawn_gated};
use crate::vmm::{FsDevice, NetBackend, NetDevice, VmConfig, VmmError};
use boxlite_net::config::Subnet;

/// How long a vhost-user backend may take to listen on its socket.
const HELPER_READY: Duration = Duration::from_secs(10);

/// Why a VM did not come up. The caller adds the console tail and names the VM.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the VM exited during boot ({status}){}", said("qemu", qemu_log))]
    VmmExited { status: String, qemu_log: String },
    #[error("{helper} exited during boot ({status}){}", said(helper, log))]
    HelperExited {
        helper: &'static str,
        status: String,
        log: String,
    },
    #[error("{helper} did not listen on {} within {}s", socket.display(), after.as_secs())]
    HelperNotReady {
        helper: &'static str,
        socket: PathBuf,
        after: Duration,
    },
    #[error(
        "the agent did not report ready within {}s (accelerator {accel}){}; raise BOXLITE_BOOT_TIMEOUT if the host is slow",
        after.as_secs(),
        last.as_ref().map(|e| format!("; the last attempt to reach it: {e}")).unwrap_or_default()
    )]
    Deadline {
        after: Duration,
        accel: crate::model::Accel,
        /// Why the last ping through the shim failed, when one did.
        last: Option<String>,
    },
    #[error(
        "the guest's agent did not start within {}s of a cold boot (accelerator {accel}){}; the guest stalled before its agent ran, and was stopped",
        after.as_secs(),
        last.as_ref().map(|e| format!("; the last attempt to reach it: {e}")).unwrap_or_default()
    )]
    Stalled {
        after: Duration,
        accel: crate::model::Accel,
        last: Option<String>,
    },
    #[error("the agent did not answer through the shim's socket {}", socket.display())]
    Handshake {
        socket: PathBuf,
        #[source]
        source: PortalError,
    },
    #[error(
        "the saved state describes another machine than this box would now get (saved: {saved}; now: {now})"
    )]
    MachineChanged { saved: String, now: String },
    #[error("loading the saved state into the VM")]
    Restore(#[source] crate::vmm::qmp::QmpError),
    #[error("giving the restored guest its clock, entropy and identity")]
    Resume(#[source] PortalError),
    #[error("mounting volumes in the box")]
    MountVolumes(#[source] PortalError),
    #[error(
        "the box has secrets, but its network helper published no CA certificate; the box does not start without it"
    )]
    NoCa,
    #[error("installing the box's CA into the container's trust store (the box has secrets)")]
    InstallCa(#[source] PortalError),
    #[error("starting {helper}")]
    Spawn {
        helper: &'static str,
        #[source]
        source: SpawnError,
    },
    #[error(
        "BOXLITE_BENCH_SLIRP=1 boots boxes on QEMU's slirp, a benchmark yardstick that applies no network rules, publishes no ports, adds no hosts and substitutes no secrets; unset it, or create the box without them"
    )]
    SlirpYardstick,
    #[error(
        "guest RAM files go to {} ({}), which has {avail_mib} MiB free, and this VM needs {need_mib} MiB; give it room (a container's /dev/shm: --shm-size) or point BOXLITE_RAM_DIR at a tmpfs that has it",
        dir.display(),
        if *tmpfs { "tmpfs" } else { "not a tmpfs" }
    )]
    RamDirFull {
        dir: PathBuf,
        tmpfs: bool,
        need_mib: u64,
        avail_mib: u64,
    },
    #[error("recording the VM's processes")]
    Record(#[source] Box<crate::Error>),
    #[error(transparent)]
    Assets(#[from] crate::assets::AssetError),
    #[error(transparent)]
    SocketDir(#[from] SocketDirError),
    #[error(transparent)]
    Binary(#[from] VmmError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
}

fn said(who: &str, log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        String::new()
    } else {
        format!("; {who} said: {log}")
    }
}

/// Where a VM's processes are recorded, durably, before each of them may run.
pub(crate) trait ProcessLedger: Sync {
    /// Record every process `status` names; the newest has not yet executed.
    fn record(&self, status: &BoxStatus) -> impl Future<Output = Result<(), crate::Error>> + Send;
}

/// What a failed or abandoned boot leaves to clean up.
#[derive(Debug)]
pub(crate) struct BootGuard {
    procs: Vec<ProcessId>,
    sockets: SocketPaths,
    armed: bool,
}

impl BootGuard {
    pub fn new(sockets: SocketPaths) -> Self {
        BootGuard {
            procs: Vec::new(),
            sockets,
            armed: true,
        }
    }

    /// End what was spawned (the one kill path) and remove the sockets. Returns the
    /// processes that would not die.
    pub async fn cleanup(mut self) -> Vec<ProcessId> {
        self.armed = false;
        let survivors =
            kill::terminate(std::mem::take(&mut self.procs), Duration::from_secs(2)).await;
        let sockets = self.sockets.clone();
        crate::util::blocking::run(move || sockets.remove()).await;
        survivors
    }

    /// The boot succeeded: the processes belong to the box now.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        // A boot future dropped halfway (Ctrl-C, a cancelled request): it cannot wait
        // here, so it kills what it spawned and leaves the waiting to reconciliation,
        // which finds the box still Starting.
        if self.armed {
            kill::signal_tree(&self.procs, libc::SIGKILL);
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
#[derive(Debug)]
pub(crate) struct VmSpec<'a> {
    /// Names the VM's processes (`BOXLITE_BOX_ID`) and its hostname (first 12 characters).
    pub id: &'a str,
    /// Where the console, VMM and helper logs go.
    pub paths: BoxPaths,
    pub root_disk: PathBuf,
    pub root_format: DiskFormat,
    pub memory_mib: u32,
    pub cpus: u32,
    pub volumes: &'a [VolumeMount],
    /// Kernel command line words for the agent, after the readiness port and hostname.
    pub cmdline: Vec<String>,
    /// The box's network; `None` (or mode none): no NIC and no helper.
    pub network: Option<&'a crate::model::NetworkSpec>,
    /// The secrets' values for the network helper, read from their sources for this
    /// start, and the roots it trusts upstream.
    pub secrets: crate::net::HelperSecrets,
    /// An image build: its shim serves the channel only (there is no box row).
    pub builder: bool,
    /// Start from a saved state instead of booting the kernel.
    pub restore: Option<Restore>,
    /// Called once the agent of a cold boot is ready, before anything else reaches the
    /// guest (volumes, the CA, the workload), with the VM's machine: saves the image's
    /// template. It must leave the VM running.
    pub template: Option<TemplateHook>,
}

/// See [`VmSpec::template`].
#[derive(Clone)]
pub(crate) struct TemplateHook(pub std::sync::Arc<TemplateFn>);

/// The function behind a [`TemplateHook`].
pub(crate) type TemplateFn = dyn Fn(AgentClient, Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync;

impl std::fmt::Debug for TemplateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplateHook")
    }
}

/// A saved state to start a VM from: a paused box's own, or a snapshot's for a fork.
#[derive(Debug, Clone)]
pub(crate) struct Restore {
    /// The device state (QEMU's migration stream).
    pub state: PathBuf,
    /// `None`: the guest RAM file is the box's own, already in place at its RAM path,
    /// mapped shared. `Some(path)`: a snapshot's RAM file, mapped privately (copy on
    /// write; the file is never written).
    pub shared_ram: Option<PathBuf>,
    /// Guest RAM is in the state stream (saved from a VM that mapped it privately): the
    /// VM must map its RAM privately too (QEMU loads pages into private blocks only).
    pub ram_in_state: bool,
    /// Removed once the state is loaded and before the vCPUs run: from then on the guest
    /// changes its disk, and the saved state no longer matches it.
    pub consumed: Option<PathBuf>,
    /// The machine the state was saved from ([`crate::vmm::Vmm::machine`]); the VM is
    /// not started unless its own is the same.
    pub machine: Vec<String>,
}

/// Start one helper behind the gate: record it (through `set` and the ledger), then let
/// it run.
async fn start_helper<L: ProcessLedger>(
    helper: &'static str,
    cmd: &HelperCommand,
    rec: &mut BoxStatus,
    guard: &mut BootGuard,
    ledger: &L,
    set: impl FnOnce(&mut BoxStatus, ProcessId),
) -> Result<tokio::process::Child, BootError> {
    let pending = spawn_gated(cmd)
        .await
        .map_err(|source| BootError::Spawn { helper, source })?;
    guard.procs.push(pending.id());
    set(rec, pending.id());
    ledger
        .record(rec)
        .await
        .map_err(|e| BootError::Record(Box::new(e)))?;
    pending
        .release()
        .await
        .map_err(|source| BootError::Spawn { helper, source })
}

/// Boot a VM as `spec` says and wait until its agent is ready, recording its processes
/// in `rec` and, before each may run, through `ledger`.
pub(crate) async fn launch<L: ProcessLedger>(
    ctx: &Context,
    spec: &VmSpec<'_>,
    rec: &mut BoxStatus,
    guard: &mut BootGuard,
    ledger: &L,
) -> Result<AgentClient, BootError> {
    let t0 = Instant::now();
    let assets = ctx.assets()?;
    let (kernel, initrd) = {
        let a = assets.clone();
        crate::util::blocking::run(move || {
            Ok::<_, crate::assets::AssetError>((a.kernel()?, a.initramfs()?))
        })
        .await?
    };
    let id = spec.id.to_string();
    let paths = &spec.paths;
    let sockets = guard.sockets.clone();
    let home = ctx.layout().home().display().to_string();
    let marker = vec![
        ("BOXLITE_HOME".to_string(), home),
        ("BOXLITE_BOX_ID".to_string(), id.clone()),
    ];
    rec.accel = Some(ctx.accel.accel);
    let cgroup = box_cgroup(ctx, spec).await;
    let jail = |helper, binary: &Path| {
        let mut j = JailSpec::new(helper, ctx.jail, binary);
        j.cgroup = cgroup.clone();
        j
    };
    // One virtiofsd per volume, each sharing exactly one managed directory, checked
    // against the gate again now: the directory could have been replaced since creation.
    let mut fs = Vec::new();
    rec.virtiofsd.clear();
    if !spec.volumes.is_empty() {
        let binary = ctx.virtiofsd_binary()?;
        let sandbox = crate::volumes::virtiofsd_sandbox();
        for (i, m) in spec.volumes.iter().enumerate() {
            let dir = ctx.layout().volume_root(m.kind).join(&m.name);
            let (_, _, shared) = crate::volumes::gate(ctx.layout(), &dir)?;
            let shared_dir = shared.clone();
            let socket = sockets.fs(i);
            let log = paths.virtiofsd_log(i);
            let mut cmd = HelperCommand::new(&binary, &log).args([
                std::ffi::OsString::from(format!("--socket-path={}", socket.display())),
                "--shared-dir".into(),
                shared.into_os_string(),
                format!("--sandbox={sandbox}").into(),
                // The guest sees the directory as it is; nothing is cached across boxes.
                "--cache=auto".into(),
            ]);
            if m.read_only {
                cmd = cmd.args(["--readonly"]);
            }
            let mut j = jail(Helper::Virtiofsd, &binary);
            if sandbox == "namespace" {
                // Its own sandbox pivots into the shared directory, which landlock
                // would refuse.
                j.no_landlock = true;
            } else {
                j = j.write(&shared_dir).write(&sockets.dir);
            }
            let cmd = cmd.envs(&marker).jailed(j);
            let mut helper = start_helper("virtiofsd", &cmd, rec, guard, ledger, |r, p| {
                r.virtiofsd.push(p);
            })
            .await?;
            wait_for_socket("virtiofsd", &socket, &mut helper, &log).await?;
            fs.push(FsDevice {
                socket,
                tag: crate::volumes::tag(i),
            });
        }
        tracing::debug!(ms = ms_since(t0), volumes = fs.len(), "virtiofsd ready");
    }
    let net = match spec.network.filter(|n| n.enabled()) {
        Some(n) => Some(
            start_network(
                ctx,
                jail(Helper::Net, &crate::context::net_binary()?),
                n,
                &spec.secrets,
                &sockets,
                paths,
                &marker,
                rec,
                guard,
                ledger,
            )
            .await?,
        ),
        None => None,
    };
    let has_net = net.is_some();
    tracing::debug!(ms = ms_since(t0), "network ready");
    check_ram_room(&sockets.ram(), spec.memory_mib)?;
    let port = paths.agent_port();
    let _ = std::fs::remove_file(&port);
    let run_as = drop_uid(ctx, &sockets.dir, Helper::Vmm).map(|u| (u, u));
    let cfg = VmConfig {
        accel: ctx.accel.accel,
        kernel,
        initrd,
        cmdline: [format!("boxlite.hostname={}", &id[..id.len().min(12)])]
            .into_iter()
            .chain(spec.cmdline.iter().cloned())
            .chain(
                net.as_ref()
                    .map(|_| crate::net::cmdline_word(&Subnet::default())),
            )
            .collect(),
        root_disk: spec.root_disk.clone(),
        root_raw: spec.root_format == DiskFormat::Raw,
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        dir: paths.dir.clone(),
        agent_port: PathBuf::from(crate::layout::BoxPaths::AGENT_PORT),
        ram_file: spec
            .restore
            .as_ref()
            .and_then(|r| r.shared_ram.clone())
            .unwrap_or_else(|| sockets.ram()),
        ram_shared: spec
            .restore
            .as_ref()
            .is_none_or(|r| r.shared_ram.is_none() && !r.ram_in_state),
        qmp_socket: PathBuf::from(crate::layout::BoxPaths::QMP),
        incoming: spec.restore.is_some(),
        fs,
        net,
        console_log: paths.console_log(),
        vmm_log: paths.vmm_log(),
        marker,
        run_as,
        root_disk_fds: run_as.is_some(),
    };
    rec.machine = ctx.vmm.machine(&cfg);
    rec.ram_private = !cfg.ram_shared;
    let machine = rec.machine.clone();
    if let Some(r) = &spec.restore
        && r.machine != rec.machine
    {
        return Err(BootError::MachineChanged {
            saved: r.machine.join(" "),
            now: rec.machine.join(" "),
        });
    }
    let vmm_cmd = ctx.vmm.command(&cfg);
    let vmm_jail = {
        let (cfg, mut j) = (cfg.clone(), jail(Helper::Vmm, &vmm_cmd.binary));
        if matches!(
            cfg.net.as_ref().map(|n| &n.backend),
            Some(NetBackend::SlirpYardstick)
        ) {
            j.no_tcp = false;
        }
        crate::util::blocking::run(move || vmm_rules(j, &cfg)).await
    };
    let mut vmm_cmd = vmm_cmd.jailed(vmm_jail);
    if cfg.root_disk_fds {
        for fd in open_disk(&cfg.root_disk)? {
            vmm_cmd = vmm_cmd.pass_fd(fd);
        }
    }
    tracing::debug!(binary = %vmm_cmd.binary.display(), args = ?vmm_cmd.args, "starting the VMM");
    let vm = start_helper(ctx.vmm.name(), &vmm_cmd, rec, guard, ledger, |r, p| {
        r.vmm = Some(p);
    })
    .await?;
    let mut timings = BootTimings {
        vmm_spawned_ms: ms_since(t0),
        ..Default::default()
    };
    tracing::debug!(ms = timings.vmm_spawned_ms, "vmm spawned");
    let mut vm_child = vm;
    // The shim owns the host end of the agent's port from now on; it connects to QEMU's
    // socket and listens on the box's own.
    let shim = shim_command(ctx.layout().home(), &id, paths, spec.builder)?;
    let mut shim_child = start_helper(SHIM_HELPER, &shim, rec, guard, ledger, |r, p| {
        r.monitor = Some(p);
    })
    .await?;
    tracing::debug!(ms = ms_since(t0), "shim spawned");

    // A restore loads the state while the shim starts (it waits for the guest's end of
    // the port, which answers once the vCPUs run).
    if let Some(r) = &spec.restore {
        let load = restore_state(&paths.dir, r);
        tokio::select! {
            res = load => res?,
            st = vm_child.wait() => {
                return Err(BootError::VmmExited {
                    status: status_text(st.ok()),
                    qemu_log: tail_file(&paths.vmm_log(), 1000),
                });
            }
        }
        tracing::debug!(ms = ms_since(t0), "state loaded, vCPUs running");
    }

    let socket = sockets.agent();
    let timeout = ctx.boot_timeout;
    // Only a kernel boot stalls; a restored guest is past it.
    let stall = ctx.boot_stall.filter(|_| spec.restore.is_none());
    // Why the last attempt failed, for the deadline's message.
    let last = std::sync::Mutex::new(None::<String>);
    let ready = async {
        // The first of many pings: the shim holds each connection until the agent serves.
        wait_listening(&socket).await;
        tracing::debug!(ms = ms_since(t0), "shim listening");
        loop {
            let attempt = async {
                let client = AgentClient::connect(&socket, &id).await?;
                client.ping().await?;
                Ok::<_, PortalError>(client)
            };
            match attempt.await {
                Ok(c) => return Ok(c),
                // The connection broke while the guest was still coming up: the HTTP/2
                // keep-alive gives up on a shim that holds it longer than the keep-alive
                // allows (a guest slower than that to boot). The boot's own deadline
                // decides when to stop, and the VM's or the shim's death ends it sooner.
                Err(e) if e.is_transport() => {
                    tracing::debug!(error = %crate::util::error_chain(&e), "the boot's ping broke; again");
                    *last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(crate::util::error_chain(&e));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::pin!(ready);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut stall_at = stall.map(|s| tokio::time::Instant::now() + s);
    let client = loop {
        tokio::select! {
            r = &mut ready => match r {
                Ok(c) => break c,
                Err(source) => {
                    // A VM that dies takes the shim's link down first: report the death,
                    // not the broken ping, when that is what happened.
                    let grace = Duration::from_secs(2);
                    if let Ok(st) = tokio::time::timeout(grace, vm_child.wait()).await {
                        return Err(BootError::VmmExited {
                            status: status_text(st.ok()),
                            qemu_log: tail_file(&paths.vmm_log(), 1000),
                        });
                    }
                    if let Ok(Some(st)) = shim_child.try_wait() {
                        return Err(BootError::HelperExited {
                            helper: SHIM_HELPER,
                            status: st.to_string(),
                            log: tail_file(&paths.monitor_log(), 1000),
                        });
                    }
                    return Err(BootError::Handshake { socket: socket.clone(), source });
                }
            },
            st = vm_child.wait() => {
                return Err(BootError::VmmExited {
                    status: status_text(st.ok()),
                    qemu_log: tail_file(&paths.vmm_log(), 1000),
                });
            }
            st = shim_child.wait() => {
                return Err(BootError::HelperExited {
                    helper: SHIM_HELPER,
                    status: status_text(st.ok()),
                    log: tail_file(&paths.monitor_log(), 1000),
                });
            }
            // A kernel that has not started the agent by then will not: see
            // `context::boot_stall`. A guest whose agent has started is slow, not
            // stalled, and gets the rest of the deadline.
            () = tokio::time::sleep_until(stall_at.unwrap_or_else(tokio::time::Instant::now)), if stall_at.is_some() => {
                if agent_started(&paths.console_log()).await {
                    stall_at = None;
                    continue;
                }
                return Err(BootError::Stalled {
                    after: stall.unwrap_or(timeout),
                    accel: ctx.accel.accel,
                    last: last.lock().unwrap_or_else(|p| p.into_inner()).take(),
                });
            }
            () = &mut deadline => {
                return Err(BootError::Deadline {
                    after: timeout,
                    accel: ctx.accel.accel,
                    last: last.lock().unwrap_or_else(|p| p.into_inner()).take(),
                });
            }
        }
    };
    timings.agent_ready_ms = ms_since(t0);
    tracing::debug!(ms = timings.agent_ready_ms, "agent ready");
    if let Some(take) = &spec.template {
        (take.0)(client.clone(), machine.clone()).await;
        tracing::debug!(ms = ms_since(t0), "template taken");
    }
    if spec.restore.is_some() {
        // Before any workload process runs again: the wall clock of now (the guest's
        // continues from the snapshot), fresh entropy (every restore of one snapshot
        // would otherwise draw the same random bytes), and this box's identity.
        resume_guest(&client, &id)
            .await
            .map_err(BootError::Resume)?;
        tracing::debug!(ms = ms_since(t0), "guest resumed");
    }
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
            .map_err(BootError::MountVolumes)?;
        tracing::debug!(ms = ms_since(t0), "volumes mounted");
    }
    // Secrets imply interception, which the box must trust before its first command:
    // a box never runs with secrets configured but not usable.
    if has_net && !spec.secrets.secrets.is_empty() {
        let s = sockets.clone();
        let ca = crate::util::blocking::run(move || Ok::<_, BootError>(crate::net::ca_pem(&s)))
            .await?
            .ok_or(BootError::NoCa)?;
        let covered = client.install_ca(&ca).await.map_err(BootError::InstallCa)?;
        tracing::debug!(ms = ms_since(t0), ?covered, "box CA installed");
    }
    timings.ready_ms = ms_since(t0);
    rec.boot = Some(timings);
    Ok(client)
}

const SHIM_HELPER: &str = "boxlite-shim";

/// Give a guest that ran on from a saved state the wall clock of now, fresh entropy from
/// the host and the identity of box `id` (its hostname), then thaw its workload.
pub(crate) async fn resume_guest(client: &AgentClient, id: &str) -> Result<(), PortalError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed: [u8; 64] = rand::random();
    client
        .resume(
            i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
            &seed,
            &id[..id.len().min(12)],
        )
        .await
}

/// How long QEMU may take to listen on its monitor socket.
const QMP_READY: Duration = Duration::from_secs(10);

/// Load `r`'s state into the QEMU just started in `dir` (waiting with `-incoming
/// defer`), mark the saved state consumed, and run the vCPUs.
async fn restore_state(dir: &Path, r: &Restore) -> Result<(), BootError> {
    let mut qmp = crate::vmm::qmp::Qmp::connect(&dir.join(BoxPaths::QMP), QMP_READY)
        .await
        .map_err(BootError::Restore)?;
    let state = std::fs::File::open(&r.state).map_err(|source| {
        BootError::Restore(crate::vmm::qmp::QmpError::Io {
            what: format!("opening {}", r.state.display()),
            source,
        })
    })?;
    qmp.load_state(&state).await.map_err(BootError::Restore)?;
    if let Some(marker) = &r.consumed {
        let m = marker.clone();
        crate::util::blocking::run(move || crate::util::fsutil::remove_durably(&m))
            .await
            .map_err(|source| {
                BootError::Restore(crate::vmm::qmp::QmpError::Io {
                    what: format!("marking {} consumed", marker.display()),
                    source,
                })
            })?;
    }
    qmp.cont().await.map_err(BootError::Restore)
}

/// Refuse to start a VM whose RAM file cannot fit where it goes: a full tmpfs makes QEMU
/// die of SIGBUS on the guest's next page fault, long after the start looked fine.
/// (Docker gives containers a 64 MiB /dev/shm by default.)
fn check_ram_room(ram_file: &Path, memory_mib: u32) -> Result<(), BootError> {
    let Some(dir) = ram_file.parent() else {
        return Ok(());
    };
    let Some((avail, tmpfs)) = fs_room(dir) else {
        return Ok(());
    };
    let need_mib = u64::from(memory_mib);
    let avail_mib = avail >> 20;
    if avail_mib < need_mib {
        return Err(BootError::RamDirFull {
            dir: dir.to_path_buf(),
            tmpfs,
            need_mib,
            avail_mib,
        });
    }
    Ok(())
}

/// Free bytes for an unprivileged writer, and whether it is a tmpfs.
fn fs_room(dir: &Path) -> Option<(u64, bool)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::cast_sign_loss, clippy::unnecessary_cast)]
    let avail = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_wrap)]
    let tmpfs = st.f_type as i64 == TMPFS_MAGIC;
    Some((avail, tmpfs))
}

/// How the shim of box (or build) `id` is started: in the box directory, where QEMU's end
/// of the agent port is, with the same socket root as its spawner. `channel_only` (image
/// builds): no database row, so no health checks; it serves the channel until QEMU exits.
pub(crate) fn shim_command(
    home: &Path,
    id: &str,
    paths: &BoxPaths,
    channel_only: bool,
) -> Result<HelperCommand, BootError> {
    let binary = crate::context::shim_binary().ok_or_else(|| VmmError::BinaryMissing {
        binary: SHIM_HELPER.into(),
        hint: "it is built with boxlite (cargo build --release puts it next to boxlite), or set BOXLITE_SHIM".into(),
    })?;
    let mut cmd = HelperCommand::new(binary, paths.monitor_log())
        .args([
            std::ffi::OsString::from("--home"),
            home.as_os_str().to_owned(),
            "--box".into(),
            id.into(),
        ])
        .envs(&[
            ("BOXLITE_HOME".into(), home.display().to_string()),
            ("BOXLITE_BOX_ID".into(), id.to_string()),
            (
                "BOXLITE_SOCKET_DIR".into(),
                crate::layout::socket_root().display().to_string(),
            ),
        ])
        .current_dir(&paths.dir);
    if channel_only {
        cmd = cmd.args(["--channel-only"]);
    }
    // The shim reconciles any box of its home (it may end their helpers and remove
    // their sockets, RAM files and volumes), so it reaches the whole home, not one box.
    let settings = crate::jailer::Settings::from_env().unwrap_or_default();
    let mut jail = JailSpec::new(Helper::Shim, settings, &cmd.binary)
        .write(home)
        .write(crate::layout::socket_root())
        .write(crate::layout::ram_root());
    // Settling a box removes its cgroup.
    if let Ok(h) = &crate::jailer::host().cgroups {
        for base in h.bases() {
            jail = jail.write(base);
        }
    }
    Ok(cmd.jailed(jail))
}

/// Wait until a unix socket listens. The caller bounds the wait.
/// The agent's first console line (`boxlite-guest: started ...`), printed as it starts:
/// the guest's kernel has booted.
const AGENT_STARTED: &[u8] = b"boxlite-guest:";

/// Whether the console log shows that the agent started (its first 1 MiB is read).
async fn agent_started(console: &Path) -> bool {
    let path = console.to_path_buf();
    crate::util::blocking::run(move || {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .is_ok_and(|_| {
                head.windows(AGENT_STARTED.len())
                    .any(|w| w == AGENT_STARTED)
            })
    })
    .await
}

async fn wait_listening(path: &Path) {
    let mut pause = Duration::from_millis(1);
    while !crate::util::fsutil::unix_socket_ready(path) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A box's NIC. The network helper is started first and must listen before QEMU starts:
/// QEMU's stream netdev connects once and does not retry. The helper is not essential:
/// if it dies later the box keeps running with its network marked failed.
#[allow(clippy::too_many_arguments)]
async fn start_network<L: ProcessLedger>(
    ctx: &Context,
    jail: JailSpec,
    spec: &crate::model::NetworkSpec,
    secrets: &crate::net::HelperSecrets,
    sockets: &SocketPaths,
    paths: &BoxPaths,
    marker: &[(String, String)],
    rec: &mut BoxStatus,
    guard: &mut BootGuard,
    ledger: &L,
) -> Result<NetDevice, BootError> {
    let mut cfg = crate::net::helper_config(spec, sockets, paths, &ctx.net, secrets);
    if let Some(uid) = drop_uid(ctx, &sockets.dir, Helper::Net) {
        cfg.run_as = Some((uid, uid));
    }
    let device = |backend| NetDevice {
        mac: cfg.subnet.guest_mac,
        mtu: cfg.subnet.mtu,
        backend,
    };
    if ctx.net.bench_slirp {
        if !(spec.allow.is_empty()
            && spec.deny.is_empty()
            && spec.ports.is_empty()
            && spec.hosts.is_empty()
            && cfg.secrets.is_empty())
        {
            return Err(BootError::SlirpYardstick);
        }
        tracing::warn!(
            "BOXLITE_BENCH_SLIRP=1: this box's network is QEMU's slirp, with no egress policy"
        );
        return Ok(device(NetBackend::SlirpYardstick));
    }
    let json = serde_json::to_vec(&cfg).map_err(|e| BootError::Spawn {
        helper: "boxlite-net",
        source: SpawnError::Start {
            binary: "boxlite-net".into(),
            source: std::io::Error::other(e),
        },
    })?;
    // The decision log and its previous generation are made here, so that the helper
    // is granted these two files and not the box directory (which holds the secrets).
    let log = paths.net_decisions();
    let mut jail = jail.write(&sockets.dir);
    for f in [log.clone(), log.with_extension("jsonl.1")] {
        let _ = crate::util::fsutil::ensure_private_file(&f);
        jail = jail.write(f);
    }
    let mut cmd = HelperCommand::new(crate::context::net_binary()?, paths.net_log())
        .envs(marker)
        .stdin_data(json)
        .jailed(jail);
    let started = start_helper("boxlite-net", &cmd, rec, guard, ledger, |r, p| {
        r.net_helper = Some(p);
    })
    .await;
    // The configuration carries the secrets' values: the pipe has it now.
    if let Some(data) = cmd.stdin.as_mut() {
        zeroize::Zeroize::zeroize(data);
    }
    let mut helper = started?;
    wait_for_socket(
        "boxlite-net",
        &cfg.data_socket,
        &mut helper,
        &paths.net_log(),
    )
    .await?;
    Ok(device(NetBackend::Helper {
        socket: cfg.data_socket.clone(),
    }))
}

fn status_text(st: Option<std::process::ExitStatus>) -> String {
    st.map_or_else(|| "status unknown".into(), |s| s.to_string())
}

/// Wait for a vhost-user backend to listen on its socket, or report why it died.
async fn wait_for_socket(
    helper: &'static str,
    path: &Path,
    child: &mut tokio::process::Child,
    log: &Path,
) -> Result<(), BootError> {
    let deadline = Instant::now() + HELPER_READY;
    loop {
        if crate::util::fsutil::unix_socket_ready(path) {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(BootError::HelperExited {
                helper,
                status: st.to_string(),
                log: tail_file(log, 1000),
            });
        }
        if Instant::now() > deadline {
            return Err(BootError::HelperNotReady {
                helper,
                socket: path.to_path_buf(),
                after: HELPER_READY,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The root disk opened read-write and read-only, for a QEMU that reopens it after
/// dropping its uid (see [`VmConfig::root_disk_fds`]).
fn open_disk(path: &Path) -> Result<[std::os::fd::OwnedFd; 2], BootError> {
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|source| BootError::Spawn {
                helper: "qemu",
                source: SpawnError::Start {
                    binary: path.to_path_buf(),
                    source,
                },
            })
    };
    Ok([open(true)?, open(false)?])
}

/// The uid `helper` of the box whose socket directory is `sockets` drops to: one of its
/// own when boxlite runs as root with the jail on; `None` otherwise (it keeps the
/// invoking user's, which is not privileged).
fn drop_uid(ctx: &Context, sockets: &Path, helper: Helper) -> Option<u32> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let id = sockets.file_name()?.to_str()?;
    (root && ctx.jail.enabled).then(|| crate::jailer::helper_uid(id, helper))
}

/// The box's cgroup, created with its limits; `None` where the host has no usable
/// cgroup hierarchy (`info` says why), for an image build (short-lived, with a small
/// fixed VM), or with the jail off. A hierarchy that refuses the new cgroup is logged
/// and the box runs without one.
async fn box_cgroup(ctx: &Context, spec: &VmSpec<'_>) -> Option<BoxCgroup> {
    if !ctx.jail.enabled || spec.builder {
        return None;
    }
    let hier = crate::jailer::host().cgroups.as_ref().ok()?.clone();
    let id = spec.id.to_string();
    let limits = crate::jailer::cgroup::Limits::for_box(spec.cpus, spec.memory_mib);
    let made = crate::util::blocking::run(move || BoxCgroup::create(&hier, &id, limits)).await;
    match made {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                box_id = spec.id,
                "the box runs without its cgroup limits: {e}"
            );
            None
        }
    }
}

/// What QEMU may reach: its kernel and initramfs, the root disk and every file below it,
/// the box's directory and sockets, its RAM file (created here, empty, so that QEMU
/// needs no right to create files in the shared RAM directory), and `/dev/kvm`.
/// Blocking.
fn vmm_rules(mut j: JailSpec, cfg: &VmConfig) -> JailSpec {
    j = j
        .read(&cfg.kernel)
        .read(&cfg.initrd)
        .write(&cfg.root_disk)
        .write(&cfg.dir);
    for below in crate::disk::backing_chain(&cfg.root_disk) {
        j = j.read(below);
    }
    if let Some(sockets) = cfg.net.as_ref().and_then(|n| match &n.backend {
        NetBackend::Helper { socket } => socket.parent().map(Path::to_path_buf),
        NetBackend::SlirpYardstick => None,
    }) {
        j = j.write(sockets);
    }
    for fs in &cfg.fs {
        if let Some(d) = fs.socket.parent() {
            j = j.write(d);
        }
    }
    // Whether QEMU maps it shared or privately (a fork's snapshot RAM, or a clone whose
    // RAM comes in its saved state), it opens the file read-write.
    let _ = crate::util::fsutil::ensure_private_file(&cfg.ram_file);
    j = j.write(&cfg.ram_file);
    if cfg.accel == crate::model::Accel::Kvm {
        j = j.device("/dev/kvm");
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stall check reads the console for the agent's first line: a kernel's lines
    /// alone, a missing file or an empty one are no sign of it.
    #[tokio::test]
    async fn the_agent_counts_as_started_once_its_first_line_is_on_the_console() {
        let dir = std::env::temp_dir().join(format!(
            "bx-console-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let console = dir.join("console.log");
        assert!(!agent_started(&console).await, "no file yet");
        std::fs::write(&console, "").unwrap();
        assert!(!agent_started(&console).await, "empty");
        std::fs::write(
            &console,
            "[    0.258081] PCI: Fatal: No config space access function found\n",
        )
        .unwrap();
        assert!(!agent_started(&console).await, "the kernel only");
        std::fs::write(
            &console,
            "[    0.258081] PCI: Fatal: No config space access function found\nboxlite-guest: started at 0.61 s uptime\n",
        )
        .unwrap();
        assert!(agent_started(&console).await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ram_file_that_cannot_fit_is_refused_before_qemu_starts() {
        let dir = std::env::temp_dir().join(format!("bx-ram-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("0123456789ab.ram");
        let (avail, _) = fs_room(&dir).unwrap();

        let too_big = u32::try_from((avail >> 20) + 1).unwrap_or(u32::MAX);
        let err = check_ram_room(&file, too_big).unwrap_err().to_string();
        let fits = check_ram_room(&file, 1);

        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("BOXLITE_RAM_DIR"), "{err}");
        assert!(err.contains(&format!("needs {too_big} MiB")), "{err}");
        assert!(fits.is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
