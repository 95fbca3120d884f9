//! The host jail around a real box: every helper (QEMU, virtiofsd, the network helper,
//! the shim) runs with `no_new_privs` and a seccomp filter, in its own mount, IPC and
//! UTS namespaces; QEMU and the network helper run as uids of their own; the helpers a
//! guest drives sit in the box's cgroup with its limits; the shim keeps only the
//! capabilities it needs. And the box still works through all of it.

use boxlite::jailer::{Helper, helper_uid};
use boxlite::{BoxCommand, BoxOptions, VolumeSpec};
use boxlite_testkit::{TestHome, stdout_ok};

fn status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_helper_of_a_box_runs_jailed_and_the_box_still_works() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::anonymous("/data")))
        .await
        .unwrap();
    b.start().await.unwrap();
    let id = b.id().to_string();
    let out = stdout_ok(
        &b,
        BoxCommand::new("sh").args(["-c", "echo jailed > /data/f && cat /data/f"]),
    )
    .await;
    assert_eq!(out, "jailed\n");

    let procs = h.processes();
    let find = |needle: &str| -> Vec<i32> {
        procs
            .iter()
            .filter(|(_, cmd)| cmd.split(' ').next().is_some_and(|b| b.contains(needle)))
            .map(|(p, _)| *p)
            .collect()
    };
    let qemu = find("qemu-system");
    let net = find("boxlite-net");
    let shim = find("boxlite-shim");
    let vfs = find("virtiofsd");
    assert_eq!((qemu.len(), net.len(), shim.len()), (1, 1, 1), "{procs:?}");
    assert!(!vfs.is_empty(), "{procs:?}");

    let me = "self";
    for (name, pid) in qemu
        .iter()
        .map(|p| ("qemu", *p))
        .chain(net.iter().map(|p| ("net", *p)))
        .chain(shim.iter().map(|p| ("shim", *p)))
        .chain(vfs.iter().map(|p| ("virtiofsd", *p)))
    {
        let st = status(pid);
        assert_eq!(field(&st, "NoNewPrivs"), "1", "{name}: {st}");
        assert_eq!(field(&st, "Seccomp"), "2", "{name}: {st}");
        for kind in ["mnt", "ipc", "uts"] {
            assert_ne!(
                ns(&pid.to_string(), kind),
                ns(me, kind),
                "{name} shares the {kind} namespace"
            );
        }
    }

    // QEMU and the network helper run as uids of their own, derived from the box.
    let short = &id[..12];
    let uid_of = |pid: i32| {
        field(&status(pid), "Uid")
            .split_whitespace()
            .map(|u| u.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    let vmm_uid = helper_uid(short, Helper::Vmm);
    let net_uid = helper_uid(short, Helper::Net);
    assert_eq!(uid_of(qemu[0]), vec![vmm_uid; 4]);
    assert_eq!(uid_of(net[0]), vec![net_uid; 4]);
    assert_ne!(vmm_uid, net_uid);
    // Neither has a capability left.
    for pid in [qemu[0], net[0]] {
        assert_eq!(field(&status(pid), "CapEff"), "0000000000000000");
        assert_eq!(field(&status(pid), "CapPrm"), "0000000000000000");
    }
    // The shim keeps uid 0 with KILL, DAC_OVERRIDE, DAC_READ_SEARCH and FOWNER only.
    let keep: u64 = (1 << 5) | (1 << 1) | (1 << 2) | (1 << 3);
    assert_eq!(field(&status(shim[0]), "CapBnd"), format!("{keep:016x}"));
    // QEMU and the network helper are not dumpable: no core, and no ptrace or
    // /proc/<pid>/mem by their own uid. The kernel hands a non-dumpable process's /proc
    // files to root, which is how it shows from outside.
    for pid in [qemu[0], net[0]] {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid();
        assert_eq!(owner, 0, "process {pid} is dumpable");
    }
    // The box's cgroup holds QEMU, virtiofsd and the network helper, with its limits.
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", qemu[0])).unwrap();
    assert!(cg.contains(&format!("/boxlite/{id}")), "{cg}");
    for pid in net.iter().chain(&vfs) {
        let c = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(c.contains(&format!("/boxlite/{id}")), "{pid}: {c}");
    }
    let shim_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", shim[0])).unwrap();
    assert!(!shim_cg.contains(&id), "{shim_cg}");
    let dirs = cgroup_dirs(&id);
    let limits = boxlite::jailer::cgroup::Limits::for_box(2, 512);
    let mem = dirs
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.max"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.limit_in_bytes")))
                .ok()
        })
        .expect("a memory limit file");
    assert_eq!(mem.trim(), limits.memory_bytes.to_string());

    b.stop(std::time::Duration::from_secs(10)).await.unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} outlived the box", d.display());
    }
    b.remove(false).await.unwrap();
}

/// The box cgroup's directories on this host.
fn cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    let host = boxlite::jailer::host();
    let hier = host
        .cgroups
        .as_ref()
        .expect("the test machines offer cgroups (v1 memory, cpu and pids); see boxlite info");
    hier.bases().iter().map(|b| b.join(id)).collect()
}

#[tokio::test]
async fn a_vm_that_dies_on_its_own_leaves_no_cgroup_behind() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    let id = b.id().to_string();
    let dirs = cgroup_dirs(&id);
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    let qemu = h
        .processes()
        .into_iter()
        .find(|(_, c)| c.starts_with("qemu-system") || c.contains("/qemu-system"))
        .expect("the box's QEMU");
    // SAFETY: kill with a pid read from /proc a moment ago; the box's own QEMU.
    assert_eq!(unsafe { libc::kill(qemu.0, libc::SIGKILL) }, 0);
    // The shim sees the VM die and settles the box, cgroup included.
    boxlite_testkit::wait_for(60, "the cgroup to be removed", || {
        dirs.iter().all(|d| !d.exists()).then_some(())
    });
    b.remove(true).await.unwrap();
}
