//! The QEMU engine: the `microvm` machine, direct PVH boot of an uncompressed kernel, the
//! root disk as a qcow2 overlay on virtio-blk, guest RAM in a file on tmpfs, and one
//! virtio-serial port for the agent channel.
//!
//! QEMU runs with `-sandbox on` (seccomp), in its own session so it outlives the caller,
//! with its console on a per-box log file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Accel, NetBackend, VmConfig, Vmm, VmmError};
use crate::util::process::find_binary;
use crate::util::spawn::{HelperCommand, tool_command};

const QEMU: &str = "qemu-system-x86_64";

/// The CPU model under TCG: QEMU's default (`qemu64`) plus ARAT ("APIC timer always
/// running"). Without ARAT the guest kernel flags its local APIC timer as stopping in deep
/// idle states, finds no broadcast timer to cover for it on microvm, and so never leaves
/// periodic mode: every vCPU then takes 250 timer interrupts a second while idle, each one
/// a wake-up of QEMU's main loop and a vCPU thread (docs/environment.md, "Where an idle
/// box's CPU goes"). TCG emulates an APIC timer that keeps running, so the flag is true.
const TCG_CPU: &str = "qemu64,+arat";

/// TCG translation cache size. QEMU's default (1 GiB) is touched as the guest runs, which
/// costs RSS and page faults; 64 MiB holds a box's hot code and measured faster to boot
/// (see docs/environment.md).
const TCG_TB_MIB: u32 = 64;

#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    pub fn locate() -> Result<Qemu, VmmError> {
        let binary = find_binary(QEMU, "BOXLITE_QEMU").ok_or_else(|| VmmError::BinaryMissing {
            binary: QEMU.into(),
            hint: "install it (Debian: apt-get install qemu-system-x86), or set BOXLITE_QEMU"
                .into(),
        })?;
        Ok(Qemu { binary })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The full argument list for a config on a host with this TSC. Pure, so it is
    /// unit-testable.
    pub fn args(&self, cfg: &VmConfig, tsc: HostTsc) -> Vec<OsString> {
        let tcg = cfg.accel == Accel::Tcg;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-M");
        // Under TCG, no PIT: QEMU resets its channel 0 to a running square wave and a guest
        // that never programs it (Linux does not, once it has the TSC frequency from
        // `tsc_early_khz` and an always-running APIC timer) leaves it running, so QEMU's
        // main loop woke 36 times a second to toggle an output nothing listens to. With
        // neither, the kernel calibrates its APIC timer against the TSC.
        push(if tcg { "microvm,pit=off" } else { "microvm" });
        push("-accel");
        match cfg.accel {
            Accel::Kvm => push("kvm"),
            Accel::Hvf => push("hvf"),
            // Multi-threaded TCG: one host thread per vCPU.
            Accel::Tcg => push(&format!("tcg,thread=multi,tb-size={TCG_TB_MIB}")),
        }
        push("-cpu");
        push(if tcg { TCG_CPU } else { "host" });
        push("-smp");
        push(&cfg.cpus.to_string());
        push("-m");
        push(&format!("{}M", cfg.memory_mib));
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            push(flag);
        }
        push("-sandbox");
        push("on");
        if let Some((uid, gid)) = cfg.run_as {
            // Drops to this uid after opening everything and before the guest runs.
            push("-runas");
            push(&format!("{uid}:{gid}"));
        }
        push("-serial");
        push(&format!("file:{}", cfg.console_log.display()));
        // The monitor, for pausing, snapshots and restores; in the box directory (0700).
        push("-qmp");
        push(&format!(
            "unix:{},server=on,wait=off",
            cfg.qmp_socket.display()
        ));
        // Guest RAM in a file on tmpfs, shared: vhost-user backends (virtiofsd) map it, and a
        // memory snapshot is the device state plus this file. A fork maps a snapshot's
        // file privately instead.
        push("-object");
        push(&format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share={}",
            cfg.memory_mib,
            cfg.ram_file.display(),
            if cfg.ram_shared { "on" } else { "off" }
        ));
        push("-machine");
        push("memory-backend=mem");
        // The agent channel: one virtio-serial port whose host end is a unix socket QEMU
        // listens on, for the box's shim (the only client it ever has) to connect and
        // reconnect to. `wait=off`: the guest boots without waiting for it.
        push("-device");
        push("virtio-serial-device,max_ports=2");
        push("-chardev");
        push(&format!(
            "socket,id=agent,path={},server=on,wait=off",
            cfg.agent_port.display()
        ));
        push("-device");
        push(&format!(
            "virtserialport,chardev=agent,name={}",
            boxlite_protocol::PORT_NAME
        ));
        for (i, fs) in cfg.fs.iter().enumerate() {
            push("-chardev");
            push(&format!("socket,id=fs{i},path={}", fs.socket.display()));
            push("-device");
            push(&format!(
                "vhost-user-fs-device,chardev=fs{i},tag={}",
                fs.tag
            ));
        }
        if let Some(net) = &cfg.net {
            push("-netdev");
            match &net.backend {
                // QEMU connects once and never reconnects (7.2 has no `reconnect`): the
                // helper must be listening already, and lives as long as this VM.
                NetBackend::Helper { socket } => push(&format!(
                    "stream,id=net0,server=off,addr.type=unix,addr.path={}",
                    socket.display()
                )),
                NetBackend::SlirpYardstick => push("user,id=net0,ipv6=off"),
            }
            push("-device");
            push(&nic_device(net.mac, net.mtu));
        }
        // Entropy for the guest: without it, early getrandom() calls block for seconds
        // under TCG, where there is no RDRAND.
        push("-device");
        push("virtio-rng-device");
        let disk = if cfg.root_disk_fds {
            // QEMU picks the descriptor whose access mode a (re)open asks for. The two
            // are separate open files, whose image locks would conflict with each other
            // when QEMU takes the disk back after a migration; the box's own lock is
            // what keeps a second QEMU off the disk.
            let base = crate::util::spawn::PASSED_FD_BASE;
            for (fd, mode) in [(base, "rw"), (base + 1, "ro")] {
                push("-add-fd");
                push(&format!("fd={fd},set=1,opaque={mode}"));
            }
            "/dev/fdset/1,file.locking=off".to_string()
        } else {
            cfg.root_disk.display().to_string()
        };
        push("-drive");
        push(&format!(
            "file={disk},if=none,id=root,format={},cache=writeback,discard=unmap",
            if cfg.root_raw { "raw" } else { "qcow2" }
        ));
        push("-device");
        push("virtio-blk-device,drive=root");
        push("-kernel");
        push(&cfg.kernel.display().to_string());
        push("-initrd");
        push(&cfg.initrd.display().to_string());
        let mut cmdline = vec![
            "console=ttyS0".to_string(),
            "panic=-1".into(),
            "quiet".into(),
            "cryptomgr.notests".into(),
            // Speculation mitigations inside the guest protect the guest kernel from guest
            // userspace. Container processes are root in the guest already; the boundary
            // is the VM, which the host enforces. Saves about 0.1 s of boot under TCG.
            "mitigations=off".into(),
            // Periodic guest work that nothing in a box uses, each a wake-up of an idle
            // VM: the soft-lockup watchdog's timer on every vCPU (its reports are false
            // alarms under TCG, where a vCPU thread can wait seconds for a host core), and
            // proactive compaction, which wakes kcompactd twice a second to look at
            // fragmentation (huge pages are not worth making in a box's small RAM).
            "nowatchdog".into(),
            "sysctl.vm.compaction_proactiveness=0".into(),
        ];
        // microvm has no reliable calibration source: without this, boots under TCG hang
        // calibrating the TSC against the PIT (which TCG boxes no longer have).
        if let Some(khz) = tsc.khz {
            cmdline.push(format!("tsc_early_khz={khz}"));
        }
        // Under TCG the guest's TSC is the host's (QEMU reads it with RDTSC), so it is as
        // synchronized and constant as the host's. The guest cannot tell: on qemu64 (an
        // AMD model without an invariant TSC) with more than one vCPU it declares the
        // TSCs unsynchronized and falls back to the jiffies clocksource, which cannot
        // drive one-shot timers, so the tick never stops. Only on a host whose TSC is
        // invariant.
        if tcg && tsc.invariant {
            cmdline.push("tsc=reliable".into());
        }
        cmdline.extend(cfg.cmdline.iter().cloned());
        push("-append");
        push(&cmdline.join(" "));
        if cfg.incoming {
            push("-incoming");
            push("defer");
        }
        a
    }
}

/// The options that shape the machine a migration stream describes. The memory backend's
/// path and sharing, the chardevs' and drives' paths, the kernel, its command line and the
/// console are per instance, and left out; so is the NIC's MAC (each network has its own
/// user-mode stack).
fn machine_of(args: &[OsString]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(flag) = it.next() {
        let keep = matches!(
            flag.as_str(),
            "-M" | "-accel" | "-cpu" | "-smp" | "-m" | "-device"
        );
        let takes_value = !matches!(
            flag.as_str(),
            "-nodefaults" | "-no-user-config" | "-nographic" | "-no-reboot"
        );
        let value = if takes_value { it.next() } else { None };
        if let (true, Some(v)) = (keep, value) {
            let v = v
                .split(',')
                .filter(|kv| !kv.starts_with("mac="))
                .collect::<Vec<_>>()
                .join(",");
            out.push(format!("{flag} {v}"));
        }
    }
    out
}

/// The guest's NIC, attached to netdev `net0`.
fn nic_device(m: [u8; 6], mtu: u16) -> String {
    format!(
        "virtio-net-device,netdev=net0,mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x},host_mtu={mtu}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// What the guest kernel is told about the host's TSC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTsc {
    /// The frequency in kHz, when known.
    pub khz: Option<u64>,
    /// Constant rate and running in every power state (`constant_tsc` and `nonstop_tsc`):
    /// what makes one TSC reading comparable with another, on any core, at any time.
    pub invariant: bool,
}

impl HostTsc {
    /// The host's TSC, from `/proc/cpuinfo` (x86 only; unknown elsewhere).
    pub fn probe() -> HostTsc {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| HostTsc::parse(&info))
            .unwrap_or_default()
    }

    fn parse(cpuinfo: &str) -> HostTsc {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim())
        };
        let khz = field("cpu MHz")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|mhz| *mhz > 0.0 && *mhz < 1e9)
            // A positive frequency in kHz, far below u64::MAX: the cast loses nothing.
            .map(|mhz| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let khz = (mhz * 1000.0).round() as u64;
                khz
            });
        let flags: Vec<&str> = field("flags").unwrap_or("").split_whitespace().collect();
        let invariant = flags.contains(&"constant_tsc") && flags.contains(&"nonstop_tsc");
        HostTsc { khz, invariant }
    }
}

impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn version(&self) -> Result<String, VmmError> {
        let out = crate::util::blocking::output(tool_command(&self.binary).arg("--version"))
            .map_err(|e| VmmError::Version {
                binary: self.binary.display().to_string(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .map(|l| l.trim().to_string())
            .filter(|l| out.status.success() && !l.is_empty())
            .ok_or_else(|| VmmError::Version {
                binary: self.binary.display().to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
    }

    fn machine(&self, cfg: &VmConfig) -> Vec<String> {
        machine_of(&self.args(cfg, HostTsc::default()))
    }

    fn command(&self, cfg: &VmConfig) -> HelperCommand {
        HelperCommand::new(&self.binary, &cfg.vmm_log)
            .args(self.args(cfg, HostTsc::probe()))
            .envs(&cfg.marker)
            .current_dir(&cfg.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(accel: Accel) -> VmConfig {
        VmConfig {
            accel,
            kernel: "/a/vmlinux".into(),
            initrd: "/a/initramfs.cpio".into(),
            cmdline: vec!["boxlite.hostname=abc".into()],
            root_disk: "/b/disk.qcow2".into(),
            root_raw: false,
            memory_mib: 512,
            cpus: 2,
            dir: "/b".into(),
            agent_port: "port.sock".into(),
            ram_file: "/dev/shm/boxlite-0/x.ram".into(),
            ram_shared: true,
            run_as: None,
            root_disk_fds: false,
            qmp_socket: "qmp.sock".into(),
            incoming: false,
            fs: Vec::new(),
            net: None,
            console_log: "/b/console.log".into(),
            vmm_log: "/b/qemu.log".into(),
            marker: Vec::new(),
        }
    }

    #[test]
    fn each_volume_becomes_a_vhost_user_fs_device_with_its_tag() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let mut c = cfg(Accel::Tcg);
        c.fs = vec![
            crate::vmm::FsDevice {
                socket: "/tmp/boxlite-0/x/fs0.sock".into(),
                tag: "bxvol0".into(),
            },
            crate::vmm::FsDevice {
                socket: "/tmp/boxlite-0/x/fs1.sock".into(),
                tag: "bxvol1".into(),
            },
        ];

        let args = joined(&q, &c);

        assert!(args.contains("-chardev socket,id=fs0,path=/tmp/boxlite-0/x/fs0.sock -device vhost-user-fs-device,chardev=fs0,tag=bxvol0"), "{args}");
        assert!(args.contains("-chardev socket,id=fs1,path=/tmp/boxlite-0/x/fs1.sock -device vhost-user-fs-device,chardev=fs1,tag=bxvol1"), "{args}");
    }

    const HOST: HostTsc = HostTsc {
        khz: Some(2_445_426),
        invariant: true,
    };

    fn joined(q: &Qemu, c: &VmConfig) -> String {
        joined_on(q, c, HOST)
    }

    fn joined_on(q: &Qemu, c: &VmConfig, tsc: HostTsc) -> String {
        q.args(c, tsc)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_args_use_microvm_ram_file_agent_port_and_seccomp() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let a = joined(&q, &cfg(Accel::Tcg));
        for want in [
            "-M microvm,pit=off",
            "-accel tcg,thread=multi,tb-size=64 -cpu qemu64,+arat",
            "-sandbox on",
            "memory-backend-file,id=mem,size=512M,mem-path=/dev/shm/boxlite-0/x.ram,share=on -machine memory-backend=mem",
            "-device virtio-serial-device,max_ports=2 -chardev socket,id=agent,path=port.sock,server=on,wait=off -device virtserialport,chardev=agent,name=boxlite.agent",
            "-serial file:/b/console.log",
            "nowatchdog sysctl.vm.compaction_proactiveness=0",
            "tsc_early_khz=2445426 tsc=reliable boxlite.hostname=abc",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        assert!(!a.contains("-cpu host"));
    }

    #[test]
    fn a_network_is_a_stream_netdev_on_the_helper_socket_and_none_is_no_nic() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let mut c = cfg(Accel::Tcg);
        assert!(!joined(&q, &c).contains("netdev"));
        c.net = Some(crate::vmm::NetDevice {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: 65520,
            backend: NetBackend::Helper {
                socket: "/tmp/boxlite-0/x/n.sock".into(),
            },
        });
        let a = joined(&q, &c);
        assert!(a.contains("-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/tmp/boxlite-0/x/n.sock -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,host_mtu=65520"), "{a}");
        // The benchmark yardstick: the same NIC on QEMU's slirp.
        c.net.as_mut().unwrap().backend = NetBackend::SlirpYardstick;
        let a = joined(&q, &c);
        assert!(a.contains("-netdev user,id=net0,ipv6=off -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,host_mtu=65520"), "{a}");
    }

    #[test]
    fn the_machine_keeps_devices_in_order_and_leaves_out_paths_and_macs() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let mut c = cfg(Accel::Tcg);
        c.net = Some(crate::vmm::NetDevice {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: 65520,
            backend: NetBackend::Helper {
                socket: "/tmp/boxlite-0/x/n.sock".into(),
            },
        });
        let m = q.machine(&c);
        let mut other = c.clone();
        other.ram_file = "/snap/ram".into();
        other.ram_shared = false;
        other.root_disk = "/c/disk.qcow2".into();
        other.incoming = true;
        other.cmdline = vec!["boxlite.hostname=zzz".into()];
        other.net.as_mut().unwrap().mac = [2, 0, 0, 0, 0, 1];
        let mut bigger = c.clone();
        bigger.memory_mib = 1024;
        let mut no_net = c.clone();
        no_net.net = None;

        assert_eq!(
            m,
            [
                "-M microvm,pit=off",
                "-accel tcg,thread=multi,tb-size=64",
                "-cpu qemu64,+arat",
                "-smp 2",
                "-m 512M",
                "-device virtio-serial-device,max_ports=2",
                "-device virtserialport,chardev=agent,name=boxlite.agent",
                "-device virtio-net-device,netdev=net0,host_mtu=65520",
                "-device virtio-rng-device",
                "-device virtio-blk-device,drive=root",
            ]
        );
        assert_eq!(q.machine(&other), m);
        assert_ne!(q.machine(&bigger), m);
        assert_ne!(q.machine(&no_net), m);
    }

    #[test]
    fn a_fork_maps_its_ram_privately_and_waits_for_the_state() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let mut c = cfg(Accel::Tcg);
        c.ram_shared = false;
        c.incoming = true;
        let a = joined(&q, &c);
        assert!(
            a.contains("mem-path=/dev/shm/boxlite-0/x.ram,share=off"),
            "{a}"
        );
        assert!(a.ends_with("-incoming defer"), "{a}");
        assert!(a.contains("-qmp unix:qmp.sock,server=on,wait=off"), "{a}");
    }

    #[test]
    fn kvm_args_use_host_cpu() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let a = joined(&q, &cfg(Accel::Kvm));
        assert!(a.contains("-M microvm -accel kvm -cpu host"), "{a}");
        assert!(!a.contains("vsock"), "{a}");
        // The guest's TSC is not the host's under KVM: the guest decides for itself.
        assert!(!a.contains("tsc=reliable"), "{a}");
    }

    #[test]
    fn the_tsc_is_declared_reliable_only_when_the_host_s_is_invariant() {
        let q = Qemu {
            binary: "qemu".into(),
        };
        let variable = HostTsc {
            invariant: false,
            ..HOST
        };
        let a = joined_on(&q, &cfg(Accel::Tcg), variable);
        assert!(!a.contains("tsc=reliable"), "{a}");
        assert!(a.contains("tsc_early_khz=2445426"), "{a}");
        let a = joined_on(&q, &cfg(Accel::Tcg), HostTsc::default());
        assert!(
            !a.contains("tsc_early_khz") && !a.contains("tsc=reliable"),
            "{a}"
        );
    }

    #[test]
    fn the_host_tsc_is_read_from_cpuinfo() {
        let info = "processor\t: 0\ncpu MHz\t\t: 2445.426\nflags\t\t: fpu tsc constant_tsc nonstop_tsc arat\n";
        assert_eq!(
            HostTsc::parse(info),
            HostTsc {
                khz: Some(2_445_426),
                invariant: true
            }
        );
        let info = "processor\t: 0\ncpu MHz\t\t: 2445.426\nflags\t\t: fpu tsc constant_tsc\n";
        assert!(!HostTsc::parse(info).invariant);
        assert_eq!(HostTsc::parse("processor: 0\n"), HostTsc::default());
    }
}
