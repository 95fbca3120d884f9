//! boxlite-guest: the agent that runs as PID 1 in every box VM.
//!
//! It mounts the basics, loads the kernel modules, mounts the container rootfs, and then
//! serves the agent protocol over vsock to any number of host connections. When serving,
//! it connects back to the host's readiness port once, which is how the host knows the
//! box is up without polling or sleeping.

mod copy;
mod exec;
mod init;
mod layer;
mod net;
mod server;
mod stats;
mod sys;
mod users;
mod volumes;

use std::path::Path;
use std::time::Duration;

use boxlite_protocol::v1::agent_server::AgentServer;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_vsock::{VMADDR_CID_ANY, VMADDR_CID_HOST, VsockAddr, VsockListener, VsockStream};

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

async fn signal_ready(port: u32) {
    for attempt in 0..50 {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, port)).await {
            Ok(mut s) => {
                let _ = s.write_all(boxlite_protocol::READY_LINE).await;
                let _ = s.shutdown(std::net::Shutdown::Write);
                let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
                eprintln!(
                    "boxlite-guest: ready at {} s uptime",
                    uptime.split_whitespace().next().unwrap_or("?")
                );
                return;
            }
            Err(e) if attempt == 49 => {
                eprintln!("boxlite-guest: could not signal readiness on port {port}: {e}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn serve(cfg: init::BootConfig) -> Result<(), Box<dyn std::error::Error>> {
    let procs = exec::Processes::new(init::CONTAINER_ROOT);

    let reaper = procs.clone();
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tick.tick() => {}
            }
            reaper.reap();
        }
    });

    let listener =
        VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, boxlite_protocol::AGENT_PORT))?;
    // Accept errors (a peer resetting mid-handshake) must not end the server, so accepting
    // is a loop of its own feeding the server.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if tx.send(Ok::<_, std::io::Error>(stream)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("boxlite-guest: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    tokio::spawn(signal_ready(cfg.ready_port));
    let pid1 = std::process::id() == 1;
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
        ready_uptime: exec::uptime_secs(),
    })
    .max_decoding_message_size(boxlite_protocol::MAX_MESSAGE)
    .max_encoding_message_size(boxlite_protocol::MAX_MESSAGE);
    tonic::transport::Server::builder()
        .max_frame_size(boxlite_protocol::MAX_FRAME)
        .initial_stream_window_size(boxlite_protocol::STREAM_WINDOW)
        .initial_connection_window_size(boxlite_protocol::CONNECTION_WINDOW)
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok(())
}

fn main() {
    let pid1 = std::process::id() == 1;
    let cmdline = if pid1 {
        // /proc is not mounted yet; mount it just to read the command line.
        let _ = std::fs::create_dir_all("/proc");
        let _ = sys::mount("proc", Path::new("/proc"), "proc", 0, None);
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    } else {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    };
    let cfg = init::BootConfig::parse(&cmdline);
    if pid1 && let Err(e) = init::boot(&cfg) {
        fatal("boot", &e);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal("starting the async runtime", &e),
    };
    if let Err(e) = rt.block_on(serve(cfg)) {
        fatal("serving", e.as_ref());
    }
}
