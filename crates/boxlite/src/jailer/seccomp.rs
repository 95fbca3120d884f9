//! Seccomp allowlists, one per kind of helper, compiled to classic BPF in the spawner and
//! installed by the child just before `execve` (so `execve` itself is on every list;
//! landlock limits what it may execute).
//!
//! Every list starts from [`BASE`]: what a dynamically linked Linux program, glibc's
//! threads and a tokio runtime use. The kinds then add what they need on top: QEMU its
//! KVM, AIO and privilege-dropping calls, virtiofsd the namespace calls of its own
//! sandbox. Nothing on any list loads code into the kernel, changes the mount table
//! (except virtiofsd's sandbox), traces or reads another process, uses keyrings, sets the
//! clock or the host name, or reboots.
//!
//! A syscall off the list fails with `ENOSYS`, which programs treat as "not on this
//! kernel" and fall back from, so a call nobody foresaw degrades a feature instead of
//! killing a box. In strict mode (the test suite; [`super::Settings::strict`]) it kills
//! the process instead, so a missing entry fails a test loudly rather than going
//! unnoticed. `clone3` always fails with `ENOSYS` (its flags are behind a pointer the
//! filter cannot read; glibc falls back to `clone`), and `clone` with any namespace flag
//! is refused for every kind but virtiofsd.

use super::Helper;

type Nr = libc::c_long;

/// What a filter does with a call that is not on its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// Fail with `ENOSYS`.
    Refuse,
    /// Kill the process (strict mode).
    Kill,
    /// Allow it and log it to the kernel log (learning mode).
    Log,
}

/// Calls every helper may make.
const BASE: &[Nr] = &[
    // Hot paths first in each group is irrelevant: the filter is searched in chunks.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_msync,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_mlock2,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    // The kernel's own continuation of a sleep a signal (or a stop) interrupted.
    libc::SYS_restart_syscall,
    libc::SYS_ioctl,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_pipe2,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_readahead,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_umask,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_memfd_create,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_flistxattr,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Identity (reading only; dropping privileges is per kind).
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_capget,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_getcpu,
    libc::SYS_get_mempolicy,
    // Time and waiting.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_membarrier,
    libc::SYS_getrandom,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    // Processes: threads, its own children, signals. `clone` is checked for namespace
    // flags separately; `clone3` always fails (see the module documentation).
    libc::SYS_clone,
    libc::SYS_execve,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_prctl,
    // Sockets.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
];

/// The pre-`*at` forms, which only x86_64 has.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[Nr] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_readlink,
    libc::SYS_chmod,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_signalfd,
    libc::SYS_time,
    libc::SYS_alarm,
    libc::SYS_pause,
    libc::SYS_getpgrp,
    libc::SYS_arch_prctl,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_getdents,
    libc::SYS_inotify_init,
    libc::SYS_utimes,
    libc::SYS_futimesat,
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[Nr] = &[];

/// Giving up privileges: QEMU's `-runas`, the network helper's own drop, capability
/// changes. `setuid` and friends cannot gain anything under `no_new_privs` and without
/// the capabilities the bounding set took away.
const DROP: &[Nr] = &[
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setgroups,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_capset,
];

/// QEMU: KVM and vhost ioctls are in BASE's `ioctl`; its linux-aio and io_uring-free
/// block layer, NUMA memory calls, and its own `-sandbox on` filter on top of ours.
const VMM: &[Nr] = &[
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_cancel,
    libc::SYS_io_getevents,
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_seccomp,
    libc::SYS_sched_setattr,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_setparam,
    libc::SYS_vmsplice,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_ftruncate,
    libc::SYS_fsetxattr,
    libc::SYS_fremovexattr,
];

/// virtiofsd: its own namespace sandbox (`unshare`, a private mount table, `pivot_root`
/// into the shared directory), file ownership as the guest asks, handles, its own
/// seccomp filter.
const VIRTIOFSD: &[Nr] = &[
    libc::SYS_unshare,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_chroot,
    libc::SYS_seccomp,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_mknodat,
    libc::SYS_fsetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fremovexattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_llistxattr,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_syncfs,
];

/// The shim: it hands the socket directory it creates to the user that owns the home,
/// and, settling its box, asks the kernel for its landlock version (the jail's host
/// probe, which also finds the box's cgroup to remove).
const SHIM: &[Nr] = &[libc::SYS_fchown, libc::SYS_landlock_create_ruleset];

/// Short-lived tools (`qemu-img`, `mke2fs`): they read and write image files.
const TOOL: &[Nr] = &[
    // QEMU's binaries probe seccomp at start, `--version` included.
    libc::SYS_seccomp,
    libc::SYS_set_mempolicy,
    libc::SYS_mbind,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_lchown,
    libc::SYS_fsetxattr,
    libc::SYS_lsetxattr,
    libc::SYS_llistxattr,
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_getevents,
];

/// Calls that fail with `ENOSYS` even in strict mode: programs probe them and fall back.
/// `clone3`'s flags are behind a pointer the filter cannot read (glibc falls back to
/// `clone`, whose flags it can); io_uring is a large kernel surface QEMU only probes.
const ALWAYS_ENOSYS: &[Nr] = &[libc::SYS_clone3, libc::SYS_io_uring_setup];

/// Namespace flags `clone` may not carry (except for virtiofsd).
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

/// The sorted, deduplicated allowlist of a kind.
pub fn allowlist(helper: Helper) -> Vec<Nr> {
    let extra: &[&[Nr]] = match helper {
        Helper::Vmm => &[DROP, VMM],
        Helper::Virtiofsd => &[DROP, VIRTIOFSD],
        Helper::Net => &[DROP],
        Helper::Shim => &[SHIM],
        Helper::Tool => &[TOOL],
        Helper::Probe => &[],
    };
    let mut all: Vec<Nr> = BASE.iter().chain(LEGACY).copied().collect();
    for list in extra {
        all.extend_from_slice(list);
    }
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls on x86_64 carry this bit; none is allowed.
const X32_BIT: u32 = 0x4000_0000;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const OFF_ARG0_LO: u32 = 16;
#[cfg(target_endian = "big")]
const OFF_ARG0_LO: u32 = 20;

// Classic BPF opcodes (linux/filter.h): class | size | mode, class | op | source.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// How many allowed numbers one chunk of the filter compares one by one.
const CHUNK: usize = 16;

/// Compile the filter of `helper`. The program checks the architecture (any other, and
/// x32 calls, are killed), answers `clone3` with `ENOSYS`, refuses `clone` with
/// namespace flags, then looks the number up: a chain of range checks over chunks of
/// [`CHUNK`] sorted numbers, then the chunk's numbers one by one, so a lookup costs at
/// most about `n / CHUNK + CHUNK` comparisons.
pub fn compile(helper: Helper, default: Default) -> Vec<libc::sock_filter> {
    let allowed = allowlist(helper);
    let otherwise = match default {
        Default::Refuse => SECCOMP_RET_ERRNO | (libc::ENOSYS as u32),
        Default::Kill => SECCOMP_RET_KILL_PROCESS,
        Default::Log => SECCOMP_RET_LOG,
    };
    let enosys = SECCOMP_RET_ERRNO | (libc::ENOSYS as u32);
    let eperm = SECCOMP_RET_ERRNO | (libc::EPERM as u32);
    let nr = |n: Nr| u32::try_from(n).unwrap_or(u32::MAX);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(jump(BPF_JGE_K, X32_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS));
    }
    for n in ALWAYS_ENOSYS {
        p.push(jump(BPF_JEQ_K, nr(*n), 0, 1));
        p.push(stmt(BPF_RET_K, enosys));
    }
    if helper != Helper::Virtiofsd {
        // clone(flags, ...): refuse namespace flags, then reload the number.
        p.push(jump(BPF_JEQ_K, nr(libc::SYS_clone), 0, 4));
        p.push(stmt(BPF_LD_W_ABS, OFF_ARG0_LO));
        p.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
        p.push(stmt(BPF_LD_W_ABS, OFF_NR));
    }
    for chunk in allowed.chunks(CHUNK) {
        let max = nr(*chunk.last().expect("chunks are never empty"));
        // Body: one comparison per number, then "otherwise" and "allow".
        let body = chunk.len() + 2;
        p.push(jump(
            BPF_JGT_K,
            max,
            u8::try_from(body).expect("a chunk fits a jump"),
            0,
        ));
        for (i, n) in chunk.iter().enumerate() {
            // Jump to this chunk's "allow", which follows its "otherwise".
            let to_allow = chunk.len() - i;
            p.push(jump(
                BPF_JEQ_K,
                nr(*n),
                u8::try_from(to_allow).expect("a chunk fits a jump"),
                0,
            ));
        }
        p.push(stmt(BPF_RET_K, otherwise));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    }
    p.push(stmt(BPF_RET_K, otherwise));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions `compile` emits, to check the
    /// program's decisions without installing it.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    a = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0,
                        k => panic!("load of offset {k}"),
                    };
                    pc += 1;
                }
                BPF_RET_K => return i.k,
                code => {
                    let taken = match code {
                        BPF_JEQ_K => a == i.k,
                        BPF_JGT_K => a > i.k,
                        BPF_JGE_K => a >= i.k,
                        BPF_JSET_K => a & i.k != 0,
                        c => panic!("opcode {c:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
            }
        }
    }

    fn decide(helper: Helper, nr: Nr) -> u32 {
        let prog = compile(helper, Default::Kill);
        run(&prog, AUDIT_ARCH, u32::try_from(nr).unwrap(), 0)
    }

    #[test]
    fn the_opcodes_are_linuxs() {
        let jmp = |op| libc::BPF_JMP | op | libc::BPF_K;
        for (ours, linux) in [
            (BPF_LD_W_ABS, libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
            (BPF_JEQ_K, jmp(libc::BPF_JEQ)),
            (BPF_JGT_K, jmp(libc::BPF_JGT)),
            (BPF_JGE_K, jmp(libc::BPF_JGE)),
            (BPF_JSET_K, jmp(libc::BPF_JSET)),
            (BPF_RET_K, libc::BPF_RET | libc::BPF_K),
        ] {
            assert_eq!(u32::from(ours), linux);
        }
    }

    #[test]
    fn every_listed_call_is_allowed_and_every_other_is_not() {
        for helper in [
            Helper::Vmm,
            Helper::Virtiofsd,
            Helper::Net,
            Helper::Shim,
            Helper::Tool,
        ] {
            let allowed = allowlist(helper);
            for nr in 0..460 {
                let want = if ALWAYS_ENOSYS.contains(&nr) {
                    SECCOMP_RET_ERRNO | libc::ENOSYS as u32
                } else if allowed.contains(&nr) {
                    SECCOMP_RET_ALLOW
                } else {
                    SECCOMP_RET_KILL_PROCESS
                };
                assert_eq!(decide(helper, nr), want, "{helper:?} syscall {nr}");
            }
        }
    }

    #[test]
    fn dangerous_calls_are_on_no_list() {
        let never = [
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_kexec_load,
            libc::SYS_reboot,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_setns,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_sethostname,
            libc::SYS_swapon,
            libc::SYS_userfaultfd,
            libc::SYS_pidfd_getfd,
            libc::SYS_kcmp,
        ];
        for helper in [
            Helper::Vmm,
            Helper::Virtiofsd,
            Helper::Net,
            Helper::Shim,
            Helper::Tool,
        ] {
            for nr in never {
                assert_ne!(decide(helper, nr), SECCOMP_RET_ALLOW, "{helper:?} {nr}");
            }
        }
        for nr in [libc::SYS_mount, libc::SYS_unshare, libc::SYS_setuid] {
            assert_ne!(decide(Helper::Shim, nr), SECCOMP_RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn clone_with_a_namespace_flag_is_refused_and_threads_are_not() {
        let prog = compile(Helper::Vmm, Default::Refuse);
        let clone = u32::try_from(libc::SYS_clone).unwrap();
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32;
        assert_eq!(run(&prog, AUDIT_ARCH, clone, thread), SECCOMP_RET_ALLOW);
        let user = libc::CLONE_NEWUSER as u32;
        assert_eq!(
            run(&prog, AUDIT_ARCH, clone, user),
            SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
        let vfs = compile(Helper::Virtiofsd, Default::Refuse);
        assert_eq!(run(&vfs, AUDIT_ARCH, clone, user), SECCOMP_RET_ALLOW);
    }

    #[test]
    fn another_architecture_and_x32_are_killed_and_refusal_is_enosys() {
        let prog = compile(Helper::Net, Default::Refuse);
        assert_eq!(run(&prog, 0x4000_0003, 0, 0), SECCOMP_RET_KILL_PROCESS);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(run(&prog, AUDIT_ARCH, X32_BIT, 0), SECCOMP_RET_KILL_PROCESS);
        }
        let ptrace = u32::try_from(libc::SYS_ptrace).unwrap();
        assert_eq!(
            run(&prog, AUDIT_ARCH, ptrace, 0),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }
}
