//! The local terminal: raw mode for `-t`, restored on every way out, and its size.

use std::os::fd::RawFd;

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty has no memory-safety preconditions.
    unsafe { libc::isatty(fd) == 1 }
}

/// The window size of the first of stdin, stdout and stderr that is a terminal.
pub fn size() -> Option<(u16, u16)> {
    [0, 1, 2].into_iter().find_map(|fd| {
        // SAFETY: winsize is plain old data; TIOCGWINSZ fills it in.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: fd is one of ours and ws is a valid out pointer.
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
        (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
    })
}

/// Raw mode on stdin while alive: keystrokes pass through unprocessed (Ctrl-C reaches
/// the box's terminal as a byte, as over ssh). Dropping it restores the saved modes, so
/// every return and unwinding path restores the terminal.
#[derive(Debug)]
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        // SAFETY: raw is a valid termios.
        change_modes(|raw| unsafe { libc::cfmakeraw(raw) })
    }
}

/// Set stdin's terminal modes to `change` of the current ones; the guard restores them.
fn change_modes(change: impl FnOnce(&mut libc::termios)) -> std::io::Result<RawMode> {
    // SAFETY: termios is plain old data; tcgetattr fills it in.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 and a valid out pointer.
    if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut changed = saved;
    change(&mut changed);
    // SAFETY: fd 0 and a valid termios.
    if unsafe { libc::tcsetattr(0, libc::TCSANOW, &changed) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(RawMode { saved })
}

/// Echo off on stdin while alive, for typing a secret; restored on drop.
#[derive(Debug)]
pub struct NoEcho {
    _modes: RawMode,
}

impl NoEcho {
    pub fn enable() -> std::io::Result<NoEcho> {
        Ok(NoEcho {
            _modes: change_modes(|t| t.c_lflag &= !(libc::ECHO | libc::ECHONL))?,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios saved at enable.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}
