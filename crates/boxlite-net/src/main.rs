//! `boxlite-net`: the per-box network helper. Started by the library behind its spawn
//! gate, with its configuration (JSON, [`boxlite_net::config::NetConfig`]) on stdin.
//!
//! Order: read and check the configuration, bind the published ports and the control
//! socket, then listen on the data socket, which is the library's readiness signal. QEMU
//! connects once; the socket path is unlinked right after, so nothing else can. The helper
//! exits when QEMU hangs up.

use std::error::Error as _;
use std::io::Read;
use std::sync::Arc;

use boxlite_net::config::NetConfig;
use boxlite_net::control::{self, Shared};
use boxlite_net::engine::{Engine, Listeners};

/// The configuration is small; anything larger is not ours.
const MAX_CONFIG: u64 = 1 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("boxlite-net: {e}");
        let mut src = e.source();
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        std::process::exit(2);
    }
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("reading the configuration from stdin")]
    Read(#[source] std::io::Error),
    #[error("the configuration on stdin is not valid")]
    Parse(#[source] serde_json::Error),
    #[error(transparent)]
    Engine(#[from] boxlite_net::engine::EngineError),
    #[error("listening on {path}")]
    Listen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting QEMU's connection")]
    Accept(#[source] std::io::Error),
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("dropping to uid {uid}, gid {gid}")]
    Drop {
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Give up every privilege for good: no supplementary groups, then the group, then the
/// user (the only order in which each step is still permitted), and check it held.
fn drop_to(uid: u32, gid: u32) -> Result<(), MainError> {
    let fail = |source| MainError::Drop { uid, gid, source };
    // SAFETY: plain credential system calls on this process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0
            || libc::setresgid(gid, gid, gid) < 0
            || libc::setresuid(uid, uid, uid) < 0
        {
            return Err(fail(std::io::Error::last_os_error()));
        }
        // Changing credentials makes the process dumpable again on some kernels' views
        // of suid_dumpable; it holds secrets, so it must stay not dumpable.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let (mut r, mut e, mut s) = (0, 0, 0);
        if libc::getresuid(&mut r, &mut e, &mut s) < 0 || [r, e, s] != [uid; 3] {
            return Err(fail(std::io::Error::other("the uid did not change")));
        }
    }
    Ok(())
}

fn harden() {
    // SAFETY: prctl and setrlimit with valid arguments; they affect only this process.
    unsafe {
        // No core dumps and no ptrace or /proc/<pid>/mem by other processes of this uid:
        // this process will hold secrets (issue: secrets at the network boundary).
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        // Every flow holds a host socket: the soft descriptor limit (often 1,024) would
        // run out before the flow caps do.
        let mut files = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) == 0 {
            files.rlim_cur = files.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &files);
        }
    }
}

fn run() -> Result<(), MainError> {
    harden();
    let mut text = Vec::new();
    std::io::stdin()
        .take(MAX_CONFIG)
        .read_to_end(&mut text)
        .map_err(MainError::Read)?;
    let cfg: NetConfig = serde_json::from_slice(&text).map_err(MainError::Parse)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(MainError::Runtime)?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: NetConfig) -> Result<(), MainError> {
    let shared = Arc::new(Shared::new(cfg.decision_log.as_deref()));
    let (engine, parts) = Engine::new(cfg.clone(), shared.clone())?;
    let listeners = Listeners::bind(&cfg, &shared).await?;
    let listen = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
        tokio::net::UnixListener::bind(p).map_err(|source| MainError::Listen {
            path: p.display().to_string(),
            source,
        })
    };
    let control_listener = listen(&cfg.control_socket)?;
    tokio::spawn(control::serve(control_listener, shared));
    let data = listen(&cfg.data_socket)?;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let stream = loop {
        let (s, _) = data.accept().await.map_err(MainError::Accept)?;
        if s.peer_cred().map(|c| c.uid()).ok() == Some(me) {
            break s;
        }
    };
    drop(data);
    let _ = std::fs::remove_file(&cfg.data_socket);
    if let Some((uid, gid)) = cfg.run_as {
        drop_to(uid, gid)?;
    }
    engine.run(parts, stream, listeners).await;
    let _ = std::fs::remove_file(&cfg.control_socket);
    Ok(())
}
