//! The shared harness for tests that boot real VMs.
//!
//! Each test gets its own `BOXLITE_HOME`. When the [`TestHome`] is dropped it checks for
//! leaks: any process whose environment carries this home (QEMU, vhost-device-vsock, the
//! box monitor; the library marks them), or any socket directory a box of this home left
//! in the socket root, fails the test, after being cleaned up so it cannot disturb others.

use std::path::{Path, PathBuf};
use std::process::Command;

use boxlite::{Boxlite, RuntimeOptions};

pub mod oci;
pub mod registry;
pub use registry::Registry;

/// The guest assets the tests use: `$BOXLITE_ASSETS`, else the repo's `build/assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("BOXLITE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/assets"))
}

/// The root trees `scripts/build-test-images.sh` builds: `$BOXLITE_TEST_IMAGES`, else the
/// repo's `build/test-images`. [`oci::TestImage::built`] makes images of them.
pub fn test_images_dir() -> PathBuf {
    std::env::var_os("BOXLITE_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/test-images"))
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds: a wait on an event
/// another process brings about. Fails the test, naming `what`, on timeout.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A private `BOXLITE_HOME` with a leak check on drop.
#[derive(Debug)]
pub struct TestHome {
    pub home: PathBuf,
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHome {
    pub fn new() -> Self {
        Self::at(std::env::temp_dir().join(format!("bxt-{:016x}", rand::random::<u64>())))
    }

    /// A home at a chosen (fresh) path, for tests about the path itself.
    pub fn at(home: PathBuf) -> Self {
        std::fs::create_dir_all(&home).expect("create test home");
        TestHome { home }
    }

    pub fn runtime(&self) -> Boxlite {
        Boxlite::new(RuntimeOptions {
            home: Some(self.home.clone()),
            assets: Some(assets_dir()),
            ..Default::default()
        })
        .expect("open runtime")
    }

    /// Registry settings (`config.toml`) that allow plain HTTP to the test registry.
    pub fn allow_http(&self, reg: &Registry) {
        std::fs::write(
            self.home.join("config.toml"),
            format!("[registries.\"{}\"]\ninsecure_http = true\n", reg.addr),
        )
        .expect("write config.toml");
    }

    /// The CLI binary (`env!("CARGO_BIN_EXE_boxlite")` from the caller) set up for this home.
    pub fn cli(&self, binary: &str) -> Command {
        let mut c = Command::new(binary);
        c.env("BOXLITE_HOME", &self.home)
            .env("BOXLITE_ASSETS", assets_dir())
            // Every box's network helper refuses any dial outside 127.0.0.0/8, and no
            // test ever reaches a real resolver (port 9 is discard).
            .env("BOXLITE_NET_TEST_GUARD", "1")
            .env("BOXLITE_NET_DNS", "127.0.0.1:9")
            .env_remove("RUST_LOG");
        c
    }

    /// Run the CLI with `args` and stdin closed, and collect its output.
    pub fn run(&self, binary: &str, args: &[&str]) -> std::process::Output {
        self.cli(binary)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run boxlite")
    }

    /// Run the CLI and require success; returns stdout as text.
    pub fn ok(&self, binary: &str, args: &[&str]) -> String {
        let out = self.run(binary, args);
        assert!(
            out.status.success(),
            "boxlite {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Processes marked with this home: `(pid, command line)`.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let marker = format!("BOXLITE_HOME={}", self.home.display());
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()) {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
                {
                    continue;
                }
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default();
                found.push((pid, cmd));
            }
        }
        found
    }

    /// Socket directories that boxes of this home left in the socket root.
    pub fn socket_dirs(&self) -> Vec<PathBuf> {
        let root = boxlite::socket_root();
        std::fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        std::fs::read(p.join("home"))
                            .is_ok_and(|h| h == self.home.as_os_str().as_encoded_bytes())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lock files left in this home (one per box while it exists).
    pub fn lock_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.home.join("locks"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Box directories left in this home.
    pub fn box_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.home.join("boxes"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let leaked = self.processes();
        for (pid, _) in &leaked {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let sockets = self.socket_dirs();
        for d in &sockets {
            let _ = std::fs::remove_dir_all(d);
        }
        // Guest RAM files of this home's boxes (a file on tmpfs outlives its QEMU).
        let ram: Vec<PathBuf> = self
            .box_dirs()
            .iter()
            .filter_map(|d| {
                d.file_name()?
                    .to_str()
                    .map(|id| id[..id.len().min(12)].to_string())
            })
            .map(|id12| boxlite::ram_root().join(format!("{id12}.ram")))
            .filter(|p| p.exists())
            .collect();
        for f in &ram {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&self.home);
        if std::thread::panicking() {
            return;
        }
        if !leaked.is_empty() {
            panic!("VM processes outlived the test: {leaked:?}");
        }
        if !sockets.is_empty() {
            panic!("socket directories outlived the test: {sockets:?}");
        }
        if !ram.is_empty() {
            panic!("guest RAM files outlived the test: {ram:?}");
        }
    }
}

/// Run `cmd` in `b` to completion and return its stdout; it must exit with code 0 (the
/// panic shows its stderr otherwise).
pub async fn stdout_ok(b: &boxlite::LiteBox, cmd: boxlite::BoxCommand) -> String {
    let mut ex = b.exec(cmd).await.unwrap();
    let mut stdout = ex.take_stdout().unwrap();
    let mut stderr = ex.take_stderr().unwrap();
    let (o, e) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    let status = ex.wait().await.unwrap();
    let (o, e) = (o.unwrap(), e.unwrap());
    assert_eq!(
        status,
        boxlite::ExitStatus::Code(0),
        "stderr: {}",
        String::from_utf8_lossy(&e)
    );
    String::from_utf8(o).unwrap()
}
