//! `boxlite exec -it` driven through a real pseudo-terminal, as a person at a terminal
//! would drive it: raw mode, echo, window resizes, exit code, and the terminal restored.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (-1, -1);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out pointers and winsize; null name and termios are allowed.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two new fds that we own.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: termios is plain old data; tcgetattr fills it in.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal and t a valid out pointer.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// The screen: everything the terminal's master side has read so far.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn wait_for(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.0.lock().unwrap().clone();
            if let Some(i) = s[from.min(s.len())..].find(needle) {
                return from + i + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared; screen: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn exec_it_through_a_real_terminal_echoes_resizes_and_restores_the_terminal() {
    let h = TestHome::new();
    h.ok(BIN, &["run", "-d", "--name", "term", "boxlite/busybox"]);
    let (master, slave) = openpty(24, 80);
    let cooked = lflag(&slave);

    let mut cmd = h.cli(BIN);
    cmd.args(["exec", "-it", "term", "sh"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Our own session with the terminal as its controlling tty, as a shell's
            // job would have: resizes then signal the CLI with SIGWINCH.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let screen = Screen::default();
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let mut answer = std::fs::File::from(master.try_clone().unwrap());
    let sink = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Answer cursor position queries (ESC [ 6 n) as a terminal would: busybox's
            // line editor sends one when the window size changes and waits for it.
            if buf[..n].windows(4).any(|w| w == b"\x1b[6n") {
                let _ = answer.write_all(b"\x1b[1;1R");
            }
            sink.0
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut keys = std::fs::File::from(master.try_clone().unwrap());

    keys.write_all(b"tty; stty size\r").unwrap();
    let at = screen.wait_for("/dev/pts/", 0);
    let at = screen.wait_for("24 80", at);
    // While the command runs the local terminal is raw: no local echo, no line editing.
    let during = lflag(&slave);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: master is an open terminal and ws a valid winsize.
    let resized = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(resized, 0);
    let mut at = at;
    // The resize travels by SIGWINCH to the CLI and ResizeTty to the box; ask until the
    // box sees it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The output `size=40 100` cannot be the echo of the typed `$(stty size)`, and
        // the line editor's redraw after the resize cannot split it.
        keys.write_all(b"echo size=$(stty size)\r").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let s = screen.0.lock().unwrap().clone();
        if let Some(i) = s[at..].find("size=40 100") {
            at += i;
            break;
        }
        assert!(Instant::now() < deadline, "the resize never arrived: {s:?}");
    }
    keys.write_all(b"echo typed-$((6*7))\r").unwrap();
    // The keystrokes come back by the box's terminal echo, then the output.
    let at = screen.wait_for("echo typed-$((6*7))", at);
    screen.wait_for("typed-42", at);
    keys.write_all(b"exit 5\r").unwrap();
    let status = child.wait().unwrap();
    let after = lflag(&slave);

    assert_eq!(status.code(), Some(5));
    assert_eq!(during & (libc::ICANON | libc::ECHO), 0, "raw while running");
    assert_eq!(after, cooked, "terminal modes restored on exit");
    assert_ne!(cooked & libc::ECHO, 0);
    h.ok(BIN, &["rm", "-f", "term"]);
}

#[test]
fn exec_it_without_a_terminal_is_refused_with_a_clear_error() {
    let h = TestHome::new();

    let out = h.run(BIN, &["exec", "-it", "nobox", "sh"]);

    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the input device is not a TTY"), "{err}");
}
