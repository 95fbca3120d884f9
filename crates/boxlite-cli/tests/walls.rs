//! The guest walls (`docs/threat-model.md`, Guest walls) against real VMs: a root
//! workload with Docker's default capabilities cannot reach the agent, its channel or
//! the kernel; `--cap-add`/`--cap-drop` change what commands keep; `--privileged`
//! gives everything. One box per capability setting, since capabilities are a box's.

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

/// Each attempt of a root workload against a wall, one `name=outcome` line each, where
/// the outcome is `ok` or the errno's name. Runs in `boxlite/python` (ctypes for the
/// raw system calls).
const PROBE: &str = r#"
import ctypes, errno, glob, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def out(name, ret):
    print(f"{name}=" + ("ok" if ret >= 0 else errno.errorcode[ctypes.get_errno()]))
def attempt(name, f):
    try:
        f()
        print(f"{name}=ok")
    except OSError as e:
        print(f"{name}={errno.errorcode[e.errno]}")
status = open("/proc/self/status").read()
print("cap_eff=" + [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0])
attempt("kill_init", lambda: os.kill(1, 9))
attempt("list_init_root", lambda: os.listdir("/proc/1/root"))
attempt("open_init_mnt_ns", lambda: os.open("/proc/1/ns/mnt", os.O_RDONLY))
out("mount_tmpfs", libc.mount(b"x", b"/tmp", b"tmpfs", 0, None))
null = os.open("/dev/null", os.O_RDONLY)
out("finit_module", libc.syscall(313, null, b"", 0))
out("ptrace_init", libc.ptrace(16, 1, None, None))
other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"])
import time; time.sleep(0.5)
out("ptrace_other_user", libc.ptrace(16, other.pid, None, None))
other.kill()
dev = open(glob.glob("/sys/class/virtio-ports/vport*/dev")[0]).read().split(":")
attempt("mknod_channel", lambda: os.mknod("/dev/agent", 0o20600, os.makedev(int(dev[0]), int(dev[1]))))
attempt("open_channel", lambda: os.open("/dev/agent", os.O_RDWR))
attempt("write_sysctl", lambda: open("/proc/sys/kernel/modprobe", "w").write("/tmp/x"))
comms = sorted({open(f"/proc/{p}/comm").read().strip() for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}/comm")})
print("processes=" + ",".join(comms))
"#;

fn cap_eff(h: &TestHome, name: &str) -> String {
    h.ok(BIN, &["exec", name, "grep", "CapEff", "/proc/self/status"])
        .trim()
        .to_string()
}

#[test]
fn a_root_workload_cannot_signal_trace_mount_load_or_reach_the_agent_and_sees_only_its_processes() {
    let h = TestHome::new();
    h.ok(
        BIN,
        &[
            "run",
            "-d",
            "--name",
            "w",
            "--network",
            "none",
            "boxlite/python",
            "sleep",
            "600",
        ],
    );

    let probe = h.ok(BIN, &["exec", "w", "python3", "-c", PROBE]);
    let alive = h.ok(BIN, &["exec", "w", "echo", "alive"]);
    let init = h.ok(BIN, &["exec", "w", "cat", "/proc/1/comm"]);

    assert_eq!(
        probe,
        "cap_eff=00000000a80425fb\n\
         kill_init=ok\n\
         list_init_root=EACCES\n\
         open_init_mnt_ns=EACCES\n\
         mount_tmpfs=EPERM\n\
         finit_module=EPERM\n\
         ptrace_init=EPERM\n\
         ptrace_other_user=EPERM\n\
         mknod_channel=ok\n\
         open_channel=EACCES\n\
         write_sysctl=EROFS\n\
         processes=boxlite-init,python3,sleep\n"
    );
    // The signal to the container's init was dropped by the kernel: it and the agent
    // are still there.
    assert_eq!(alive, "alive\n");
    assert_eq!(init, "boxlite-init\n");
    h.ok(BIN, &["rm", "-f", "w"]);
}

#[test]
fn cap_add_and_cap_drop_change_the_effective_set_and_a_user_starts_with_none() {
    let h = TestHome::new();
    h.ok(
        BIN,
        &[
            "run",
            "-d",
            "--name",
            "c",
            "--network",
            "none",
            "--cap-drop",
            "net_raw",
            "--cap-drop",
            "CAP_CHOWN",
            "--cap-add",
            "Sys_Ptrace",
            "boxlite/busybox",
            "sleep",
            "600",
        ],
    );

    let root = cap_eff(&h, "c");
    let nobody = h.ok(
        BIN,
        &[
            "exec",
            "-u",
            "nobody",
            "c",
            "grep",
            "Cap",
            "/proc/self/status",
        ],
    );

    // Docker's a80425fb without CHOWN (bit 0) and NET_RAW (13), with SYS_PTRACE (19).
    assert_eq!(root, "CapEff:\t00000000a80c05fa");
    assert_eq!(
        nobody,
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t00000000a80c05fa\nCapAmb:\t0000000000000000\n"
    );
    h.ok(BIN, &["rm", "-f", "c"]);
}

#[test]
fn privileged_gives_every_capability_so_mount_works_and_the_channel_is_still_busy() {
    let h = TestHome::new();
    h.ok(
        BIN,
        &[
            "run",
            "-d",
            "--name",
            "p",
            "--network",
            "none",
            "--privileged",
            "boxlite/busybox",
            "sleep",
            "600",
        ],
    );

    let caps = cap_eff(&h, "p");
    // A tmpfs of its own allows device nodes; the agent holds its port open, and
    // virtio_console lets a port be opened once.
    let channel = h.run(
        BIN,
        &[
            "exec",
            "p",
            "sh",
            "-c",
            "mkdir -p /tmp/d && mount -t tmpfs x /tmp/d && echo mounted && \
             mknod /tmp/d/agent c $(cat /sys/class/virtio-ports/vport*/dev | tr ':' ' ') && \
             cat /tmp/d/agent",
        ],
    );
    let comms = h.ok(BIN, &["exec", "p", "sh", "-c", "cat /proc/[0-9]*/comm"]);

    assert_eq!(caps, "CapEff:\t000001ffffffffff");
    assert_eq!(String::from_utf8_lossy(&channel.stdout), "mounted\n");
    let err = String::from_utf8_lossy(&channel.stderr);
    assert!(err.contains("Device or resource busy"), "{err}");
    // The namespaces stay with --privileged: no agent, no kernel threads.
    assert!(comms.contains("boxlite-init\n"), "{comms}");
    assert!(
        !comms.contains("boxlite-guest") && !comms.contains("kthreadd"),
        "{comms}"
    );
    h.ok(BIN, &["rm", "-f", "p"]);
}

#[test]
fn an_unknown_capability_is_refused_by_name_with_the_valid_ones_before_anything_is_made() {
    let h = TestHome::new();

    let out = h.run(
        BIN,
        &[
            "create",
            "--cap-drop",
            "NET_RAW",
            "--cap-add",
            "CAP_FLY",
            "boxlite/busybox",
        ],
    );

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(
            "unknown capability \"CAP_FLY\" in cap_add; valid names are ALL and CAP_CHOWN, \
             CAP_DAC_OVERRIDE,"
        ),
        "{err}"
    );
    assert!(h.box_dirs().is_empty());
}
