//! The jail tried from inside: a probe (Python, run through the same spawn gate and jail
//! builder as the helpers) attempts what each wall must refuse, and reports each result
//! as an errno. Run as root (as the suite is), where every wall can be built.

use std::path::{Path, PathBuf};

use super::spawn::{HelperCommand, spawn_gated};
use crate::jailer::{Helper, JailSpec, SeccompDefault, Settings};

/// Each attempt prints `name errno` (0: it worked).
const PROBE: &str = r#"
import ctypes, os, socket, sys, resource
libc = ctypes.CDLL(None, use_errno=True)
allowed, secret, port, parent, parent_mnt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def report(name, f):
    try:
        r = f()
        print(name, 0 if r is None or r >= 0 else ctypes.get_errno(), flush=True)
    except OSError as e:
        print(name, e.errno, flush=True)
def sys_(nr, *a):
    return lambda: libc.syscall(nr, *a)
report("ptrace", sys_(101, 0, 0, 0, 0))
report("mount", sys_(165, b"none", b"/tmp", b"tmpfs", 0, 0))
report("unshare_user", sys_(272, 0x10000000))
report("bpf", sys_(321, 0, 0, 0))
report("init_module", sys_(175, 0, 0, 0))
report("read_outside", lambda: os.close(os.open(secret, os.O_RDONLY)))
report("write_allowed", lambda: os.close(os.open(os.path.join(allowed, "w"), os.O_CREAT | os.O_WRONLY, 0o600)))
def exec_other():
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/true", ["true"])
        except OSError as e:
            os._exit(e.errno)
    print("exec_other", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
exec_other()
def tcp():
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    finally:
        s.close()
report("tcp_connect", tcp)
report("signal_outside", lambda: os.kill(parent, 0))
status = open("/proc/self/status").read()
for key in ("NoNewPrivs", "Seccomp"):
    print(key, [l.split()[1] for l in status.splitlines() if l.startswith(key + ":")][0], flush=True)
print("core", resource.getrlimit(resource.RLIMIT_CORE)[1], flush=True)
print("same_mnt", int(os.readlink("/proc/self/ns/mnt") == parent_mnt), flush=True)
"#;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bx-probe-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn python() -> PathBuf {
    std::fs::canonicalize("/usr/bin/python3").expect("python3 is installed by setup")
}

/// Run the probe under `helper`'s jail and return its report as `(name, value)` pairs,
/// with the exit status.
async fn probe(
    helper: Helper,
    default: SeccompDefault,
) -> (Vec<(String, i64)>, std::process::ExitStatus) {
    let allowed = temp_dir("allowed");
    let outside = temp_dir("outside");
    let secret = outside.join("secret");
    std::fs::write(&secret, "not for helpers").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let py = python();
    let mut jail = JailSpec::new(
        helper,
        Settings {
            enabled: true,
            seccomp: default,
        },
        &py,
    )
    .write(&allowed);
    jail.no_tcp = helper != Helper::Net;
    let log = allowed.join("log");
    let cmd = HelperCommand::new(&py, &log)
        .args([
            "-I".into(),
            "-c".into(),
            PROBE.to_string(),
            allowed.display().to_string(),
            secret.display().to_string(),
            port.to_string(),
            std::process::id().to_string(),
            mnt.display().to_string(),
        ])
        .jailed(jail);
    let pending = spawn_gated(&cmd).await.unwrap();
    let mut child = pending.release().await.unwrap();
    let status = child.wait().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&allowed).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
    let report = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    (report, status)
}

fn get(report: &[(String, i64)], name: &str) -> i64 {
    report
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("the probe did not report {name}: {report:?}"))
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn a_jailed_helper_is_refused_what_each_wall_forbids() {
    assert!(
        root(),
        "the suite runs as root, where every wall can be built"
    );
    let host = crate::jailer::host();
    assert!(host.landlock_abi >= 1, "the test machines have landlock");
    let (r, status) = probe(Helper::Vmm, SeccompDefault::Refuse).await;
    assert!(status.success(), "{status:?} {r:?}");
    // Seccomp: off the list, ENOSYS.
    for call in ["ptrace", "mount", "unshare_user", "bpf", "init_module"] {
        assert_eq!(get(&r, call), i64::from(libc::ENOSYS), "{call}: {r:?}");
    }
    // Landlock: files outside the rules, executing anything but the helper.
    assert_eq!(get(&r, "read_outside"), i64::from(libc::EACCES), "{r:?}");
    assert_eq!(get(&r, "write_allowed"), 0, "{r:?}");
    assert_eq!(get(&r, "exec_other"), i64::from(libc::EACCES), "{r:?}");
    if host.landlock_abi >= 4 {
        assert_eq!(get(&r, "tcp_connect"), i64::from(libc::EACCES), "{r:?}");
    }
    if host.landlock_abi >= 6 {
        assert_eq!(get(&r, "signal_outside"), i64::from(libc::EPERM), "{r:?}");
    }
    assert_eq!(get(&r, "NoNewPrivs"), 1);
    assert_eq!(get(&r, "Seccomp"), 2);
    assert_eq!(get(&r, "core"), 0);
    assert_eq!(get(&r, "same_mnt"), 0, "a fresh mount namespace");
}

#[tokio::test]
async fn the_network_helpers_jail_leaves_it_tcp() {
    let (r, status) = probe(Helper::Net, SeccompDefault::Refuse).await;
    assert!(status.success(), "{status:?} {r:?}");
    assert_eq!(get(&r, "tcp_connect"), 0, "{r:?}");
    assert_eq!(get(&r, "read_outside"), i64::from(libc::EACCES), "{r:?}");
    assert_eq!(get(&r, "ptrace"), i64::from(libc::ENOSYS), "{r:?}");
}

#[tokio::test]
async fn in_strict_mode_a_call_off_the_list_kills_the_helper() {
    use std::os::unix::process::ExitStatusExt;
    let (r, status) = probe(Helper::Vmm, SeccompDefault::Kill).await;
    // The first forbidden call (ptrace) ends it: nothing after it is reported.
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {r:?}");
    assert!(r.iter().all(|(k, _)| k != "ptrace"), "{r:?}");
}

#[test]
fn the_probe_runs_python_by_its_real_path() {
    assert!(Path::new(&python()).is_absolute());
}

/// The jail an unprivileged user gets: no capabilities to cut and no uid to drop to,
/// but a user namespace (where the host allows them) holding fresh mount, IPC and UTS
/// namespaces, with landlock and seccomp as for root. The suite runs as root, so this
/// re-runs the probe from a copy of this test binary started as `nobody`.
#[tokio::test]
async fn an_unprivileged_spawner_jails_its_helpers_in_a_user_namespace() {
    use std::os::unix::process::CommandExt;
    assert!(root(), "the suite runs as root");
    assert!(
        crate::jailer::host().userns,
        "the test machines allow unprivileged user namespaces"
    );
    // A copy anyone can execute, wherever the checkout is.
    let dir = temp_dir("unprivileged");
    let exe = dir.join("probe-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    for p in [&dir, &exe] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.args([
        "--exact",
        "util::jail_probe::unprivileged_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("TMPDIR", "/tmp");
    // SAFETY: setgroups, setgid and setuid between fork and exec, on constants.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(65534) < 0
                || libc::setuid(65534) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Another test thread that forks while the copy's write descriptor is open holds it
    // until that child execs: the exec then fails with ETXTBSY for a moment.
    let out = crate::util::blocking::run(move || {
        for _ in 0..50 {
            match crate::util::blocking::output(&mut cmd) {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    crate::util::blocking::sleep(std::time::Duration::from_millis(100));
                }
                r => return r,
            }
        }
        crate::util::blocking::output(&mut cmd)
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

/// Run by [`an_unprivileged_spawner_jails_its_helpers_in_a_user_namespace`] as `nobody`.
#[tokio::test]
#[ignore = "run as nobody by an_unprivileged_spawner_jails_its_helpers_in_a_user_namespace"]
async fn unprivileged_probe() {
    assert!(!root(), "this half runs as nobody");
    let (r, status) = probe(Helper::Vmm, SeccompDefault::Refuse).await;
    assert!(status.success(), "{status:?} {r:?}");
    assert_eq!(get(&r, "same_mnt"), 0, "no fresh mount namespace: {r:?}");
    assert_eq!(get(&r, "NoNewPrivs"), 1);
    assert_eq!(get(&r, "Seccomp"), 2);
    assert_eq!(get(&r, "ptrace"), i64::from(libc::ENOSYS), "{r:?}");
    assert_eq!(get(&r, "read_outside"), i64::from(libc::EACCES), "{r:?}");
    assert_eq!(get(&r, "exec_other"), i64::from(libc::EACCES), "{r:?}");
}
