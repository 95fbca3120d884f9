//! boxlite-guest: the agent that runs as PID 1 in every box VM.
//!
//! It mounts the basics, loads the kernel modules, mounts the container rootfs, and then
//! serves the agent protocol over its one virtio-serial port ([`port`]): the port carries
//! the agent channel (`boxlite_protocol::channel`), in which every gRPC connection of the
//! host is a stream. The host knows the box is up when the agent answers its first
//! session's hello, without polling or sleeping; the host end may go away and come back
//! at any time, and the agent serves each new session.

mod container;
mod copy;
mod exec;
mod freeze;
mod init;
mod layer;
mod listing;
mod net;
mod port;
mod resume;
mod server;
mod staging;
mod stats;
mod sys;
mod trust;
mod users;
mod volumes;

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use boxlite_protocol::channel::{self, LinkStats};
use boxlite_protocol::v1::agent_server::AgentServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Sync, stop everything and power off. Never returns.
pub(crate) fn shutdown() -> ! {
    eprintln!("boxlite-guest: shutting down");
    sys::sync();
    // Every process but PID 1.
    let _ = sys::kill(-1, libc::SIGKILL);
    let root = Path::new(init::CONTAINER_ROOT);
    for sub in ["dev/shm", "dev/pts", "dev", "sys", "proc"] {
        let _ = sys::umount_lazy(&root.join(sub));
    }
    sys::sync();
    let _ = sys::umount_lazy(root);
    sys::power_off()
}

/// An error and its sources on one line, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn fatal(what: &str, err: &dyn std::error::Error) -> ! {
    eprintln!("boxlite-guest: fatal: {what}: {}", error_chain(err));
    if std::process::id() == 1 {
        sys::power_off()
    }
    std::process::exit(1)
}

/// A stream of the agent channel, as a connection for the gRPC server.
#[derive(Debug)]
struct ChannelConn(channel::Stream);

impl AsyncRead for ChannelConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for ChannelConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Own the agent's port for good: serve the channel on it, sending every stream the host
/// opens to `accepted`, and open it again if it fails. PID 1 never gives up on it.
async fn run_link(accepted: mpsc::UnboundedSender<channel::Stream>) {
    let stats = Arc::new(LinkStats::default());
    let mut first = true;
    loop {
        let result = match port::open().await {
            Ok((reader, writer)) => {
                channel::run_guest(reader, writer, accepted.clone(), stats.clone(), |_epoch| {
                    if first {
                        first = false;
                        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
                        eprintln!(
                            "boxlite-guest: ready at {} s uptime",
                            uptime.split_whitespace().next().unwrap_or("?")
                        );
                    } else {
                        eprintln!("boxlite-guest: new host session");
                    }
                })
                .await
                .map_err(|e| format!("agent channel: {e}"))
            }
            Err(e) => Err(error_chain(&e)),
        };
        match result {
            Ok(()) => eprintln!("boxlite-guest: agent channel ended; opening the port again"),
            Err(e) => eprintln!("boxlite-guest: {e}; opening the port again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The workload's cgroup ([`freeze`]), when PID 1 can make one; the agent runs on
/// without it, unable to freeze.
fn workload_cgroup(pid1: bool) -> Option<Arc<freeze::Workload>> {
    if !pid1 {
        return None;
    }
    freeze::Workload::setup(Path::new(freeze::CGROUP_MOUNT))
        .inspect_err(|e| {
            eprintln!(
                "boxlite-guest: no cgroup v2 freezer, Quiesce will not freeze running processes: {}",
                error_chain(e)
            )
        })
        .ok()
        .map(Arc::new)
}

async fn serve(
    cfg: init::BootConfig,
    container: Option<Arc<container::Container>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let pid1 = std::process::id() == 1;
    let workload = workload_cgroup(pid1);
    let procs = exec::Processes::new(init::CONTAINER_ROOT, workload.clone(), container.clone());

    // Reap on SIGCHLD only, never on a timer: an idle agent must not wake the guest (each
    // wake-up costs host CPU under TCG; docs/environment.md, "Where an idle box's CPU
    // goes"). No exit is missed: tokio's handler is installed here, before the first
    // execution; signals that arrive together are one wake-up, and `reap` collects
    // every exited child with `WNOHANG` until none is left. The first pass collects any
    // child that exited before the handler existed.
    let reaper = procs.clone();
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reaper.reap();
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    });

    // Streams are handed to the server through a queue, so the link outlives any one
    // session (or port) and the server never sees the end of its input.
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_link(tx));
    // The network is configured right after its driver loads, and exec waits for that.
    let (net_done, net_ready) = net::readiness(pid1 && cfg.net.is_some());
    if pid1 {
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            if let Err(e) = init::load_modules(&cfg, init::MODULE_LIST_LATER) {
                eprintln!("boxlite-guest: {}", error_chain(&e));
            }
            if let Some(net) = &cfg.net {
                net::configure(&cfg, net);
            }
            net_done.finish();
        });
    }

    let service = AgentServer::new(server::AgentService {
        procs,
        cfg: cfg.clone(),
        net_ready,
        trust: Arc::new(trust::Installer::new(
            init::CONTAINER_ROOT,
            trust::STAGING_DIR,
        )),
        quiescer: Arc::new(freeze::Quiescer::new(workload)),
        identity: Arc::new(resume::Identity::new(
            cfg.net.clone(),
            cfg.hostname.clone(),
            container,
        )),
        ready_uptime: exec::uptime_secs(),
    })
    .max_decoding_message_size(boxlite_protocol::MAX_MESSAGE)
    .max_encoding_message_size(boxlite_protocol::MAX_MESSAGE);
    tonic::transport::Server::builder()
        .max_frame_size(boxlite_protocol::MAX_FRAME)
        .initial_stream_window_size(boxlite_protocol::STREAM_WINDOW)
        .initial_connection_window_size(boxlite_protocol::CONNECTION_WINDOW)
        .add_service(service)
        .serve_with_incoming(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                .map(|s| Ok::<_, io::Error>(ChannelConn(s))),
        )
        .await?;
    Ok(())
}

fn main() {
    let pid1 = std::process::id() == 1;
    let cmdline = if pid1 {
        // /proc is not mounted yet; mount it just to read the command line.
        let _ = std::fs::create_dir_all("/proc");
        let _ = sys::mount("proc", Path::new("/proc"), "proc", 0, None);
        // The first line of the agent on the console: the host's stall check
        // (`context::boot_stall`) takes it as the sign that the guest's kernel booted.
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        eprintln!(
            "boxlite-guest: started at {} s uptime",
            uptime.split_whitespace().next().unwrap_or("?")
        );
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    } else {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    };
    let cfg = init::BootConfig::parse(&cmdline);
    let container = if pid1 {
        match init::boot(&cfg) {
            Ok(c) => c.map(Arc::new),
            Err(e) => fatal("boot", &e),
        }
    } else {
        None
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal("starting the async runtime", &e),
    };
    if let Err(e) = rt.block_on(serve(cfg, container)) {
        fatal("serving", e.as_ref());
    }
}
