//! TTY executions against a real VM: a controlling terminal, echo, and window resizes.

use std::time::Duration;

use boxlite::{BoxCommand, BoxOptions, ExecError, ExitStatus};
use boxlite_testkit::TestHome;
use tokio::sync::mpsc;

/// Everything the terminal printed so far, and a way to wait for more.
struct Screen {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    /// Wait until the screen shows `needle` after position `from`; returns the position
    /// after it.
    async fn expect(&mut self, needle: &str, from: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.seen[from..].find(needle) {
                return from + i + needle.len();
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(chunk)) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => panic!(
                    "{needle:?} never appeared; the screen shows {:?}",
                    self.seen
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tty_exec_has_a_terminal_that_echoes_and_follows_resizes() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();

    // A non-interactive shell: no line editor redraws the screen, so what arrives is the
    // terminal's own echo and the commands' output.
    let script = "tty; stty size; read line; echo \"got $line\"; stty size; echo $TERM; exit 3";
    let mut ex = b
        .exec(
            BoxCommand::new("sh")
                .args(["-c", script])
                .stdin(true)
                .tty(30, 90),
        )
        .await
        .unwrap();
    let mut stdin = ex.take_stdin().unwrap();
    let mut out = ex.take_stdout().unwrap();
    let mut err = ex.take_stderr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(chunk) = out.next_chunk().await {
            let _ = tx.send(chunk.unwrap());
        }
    });
    let mut screen = Screen {
        rx,
        seen: String::new(),
    };

    let at = screen.expect("/dev/pts/", 0).await;
    let at = screen.expect("30 90\r\n", at).await;
    ex.resize_tty(50, 132).await.unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    // The typed line comes back through the terminal's echo before the output.
    let at = screen.expect("hello\r\n", at).await;
    let at = screen.expect("got hello\r\n", at).await;
    let at = screen.expect("50 132\r\n", at).await;
    screen.expect("xterm\r\n", at).await;
    let status = ex.wait().await.unwrap();
    reader.await.unwrap();
    let stderr = err.read_to_end().await.unwrap();

    assert_eq!(status, ExitStatus::Code(3));
    assert!(stderr.is_empty(), "a terminal sends everything as stdout");
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizing_an_exec_without_a_terminal_is_a_typed_error() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    let ex = b
        .exec(BoxCommand::new("sh").args(["-c", "test -t 0 || test -t 1; echo $?"]))
        .await
        .unwrap();

    let err = ex.resize_tty(10, 10).await.unwrap_err();
    let mut ex = ex;
    let out = ex.take_stdout().unwrap().read_to_end().await.unwrap();

    assert!(matches!(err, ExecError::NoTty { .. }), "{err}");
    assert_eq!(out, b"1\n", "without -t the process has no terminal");
    assert!(matches!(ex.wait().await, Ok(ExitStatus::Code(0))));
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}
