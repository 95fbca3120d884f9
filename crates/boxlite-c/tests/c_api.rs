//! The C test suite of libboxlite: each program in `tests/c/` is compiled against the
//! release static library (`libboxlite.a`) and the checked-in header with
//! AddressSanitizer, LeakSanitizer and UBSan, then run with a fresh `BOXLITE_HOME`.
//! A test fails when its program exits non-zero, when a sanitizer reports anything
//! (a leak included: the programs free everything they get), or when a VM process of
//! its home outlives it.
//!
//! The library is not built here: `cargo build --release -p boxlite-cli -p boxlite-net
//! -p boxlite-c` first (scripts/setup.sh does). `BOXLITE_C_LIB` names another directory
//! holding `libboxlite.a`; `BOXLITE_SHIM`, `BOXLITE_NET` and `BOXLITE_ASSETS` other
//! helpers and assets.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxlite_testkit::{TestHome, assets_dir};

/// Longest a program may run (exec_many, the slowest, takes about 40 s under TCG).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// What a sanitizer prints when it finds something, and what Rust's panic hook prints
/// (a panic is a bug even when the library catches it at the boundary).
const FAILURE_MARKS: &[&str] = &[
    "panicked at",
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: AddressSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: AddressSanitizer",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/`, from this executable's path: `target/<profile>/deps/c_api-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("the test executable is not in target/<profile>/deps")
}

fn release_file(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release").join(name))
}

fn static_lib() -> PathBuf {
    let dir = std::env::var_os("BOXLITE_C_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release"));
    let lib = dir.join("libboxlite.a");
    assert!(
        lib.is_file(),
        "{} is missing: build it first with `cargo build --release -p boxlite-c`, or set \
         BOXLITE_C_LIB to the directory that holds libboxlite.a",
        lib.display()
    );
    lib
}

fn helper(env: &str, name: &str) -> PathBuf {
    let p = release_file(env, name);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release -p boxlite-cli -p boxlite-net`, \
         or set {env}",
        p.display()
    );
    p
}

/// The tail of a program's output, for a failure message.
fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(12_000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Compile `tests/c/<name>.c` (with the shared `harness.h`) into `target/c-tests/`.
fn compile(name: &str) -> PathBuf {
    let lib = static_lib();
    let out_dir = target_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create target/c-tests");
    let exe = out_dir.join(name);
    let src = crate_dir().join("tests/c").join(format!("{name}.c"));
    let t = Instant::now();
    let out = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-g",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("tests/c"))
        .arg(&src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-o"])
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {} failed ({:?}):\n{}",
        src.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{name}: compiled in {:.1} s", t.elapsed().as_secs_f64());
    exe
}

/// Build and run one program: it must exit 0, print `expect` (its last line), make no
/// sanitizer report, and leave no VM process of its home behind.
fn run_c(name: &str, expect: &str) {
    let exe = compile(name);
    let shim = helper("BOXLITE_SHIM", "boxlite-shim");
    let net = helper("BOXLITE_NET", "boxlite-net");
    let home = TestHome::new();
    let logs = home.home.with_extension("log");
    std::fs::create_dir_all(&logs).expect("create the log directory");
    let (out_path, err_path) = (logs.join("stdout"), logs.join("stderr"));

    let t = Instant::now();
    let mut child = Command::new(&exe)
        .current_dir(&logs)
        .env("BOXLITE_HOME", &home.home)
        .env("BOXLITE_ASSETS", assets_dir())
        .env("BOXLITE_SHIM", &shim)
        .env("BOXLITE_NET", &net)
        // Boxes' network helpers refuse any dial outside 127.0.0.0/8, and DNS goes to the
        // discard port: no test reaches the outside.
        .env("BOXLITE_NET_TEST_GUARD", "1")
        .env("BOXLITE_NET_DNS", "127.0.0.1:9")
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout log"))
        .stderr(File::create(&err_path).expect("create stderr log"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the program") {
            break Some(s);
        }
        if t.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&logs);
    eprintln!("{name}: ran in {:.1} s", took.as_secs_f64());
    let report = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        tail(&stdout),
        tail(&stderr)
    );

    let Some(status) = status else {
        panic!("{name} did not finish within {RUN_TIMEOUT:?}\n{report}");
    };
    assert!(status.success(), "{name} failed ({status})\n{report}");
    if let Some(mark) = FAILURE_MARKS.iter().find(|m| stderr.contains(*m)) {
        panic!("{name}: stderr has \"{mark}\" (a sanitizer report or a panic)\n{report}");
    }
    assert!(
        stdout.contains(expect),
        "{name} exited 0 without printing {expect:?}\n{report}"
    );
    // A box stopped at the end may take a moment to reap its last helper; then the
    // TestHome's drop fails the test for anything of this home still alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !home.processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(home);
}

#[test]
fn null_callbacks_handles_and_bad_input_are_refused_without_a_crash() {
    run_c("errors", "errors:");
}

#[test]
fn output_chunks_are_the_bytes_the_process_wrote() {
    run_c("exec_output", "exec_output:");
}

#[test]
fn each_of_a_thousand_executions_gets_one_exit_after_its_output() {
    run_c("exec_many", "exec_many:");
}

#[test]
fn freed_killed_signalled_and_timed_out_executions_exit_once() {
    run_c("exec_control", "exec_control:");
}

#[test]
fn callbacks_run_only_inside_drain_on_the_draining_thread() {
    run_c("drain_threads", "drain_threads:");
}

#[test]
fn a_full_event_queue_never_stalls_the_runtime_or_loses_events() {
    run_c("queue_full", "queue_full:");
}

#[test]
fn after_shutdown_every_call_fails_fast_with_invalid_state() {
    run_c("shutdown", "shutdown:");
}

#[test]
fn runtime_free_with_events_queued_frees_their_payloads() {
    run_c("free_queued", "free_queued:");
}

#[test]
fn simple_api_runs_commands_and_reports_a_bad_image() {
    run_c("simple", "simple:");
}

#[test]
fn images_volumes_boxes_copies_and_metrics_work_end_to_end() {
    run_c("resources", "resources:");
}

/// docs/c.md shows `tests/c/example.c` verbatim, and the example runs.
#[test]
fn the_example_in_docs_c_md_compiles_and_runs() {
    let example = std::fs::read_to_string(crate_dir().join("tests/c/example.c"))
        .expect("read tests/c/example.c");
    let doc = std::fs::read_to_string(crate_dir().join("../../docs/c.md")).expect("read docs/c.md");
    let block = doc
        .split("```c\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .find(|b| b.contains("int main("))
        .expect("docs/c.md has a ```c block with main()");
    assert_eq!(
        format!("{block}\n"),
        example,
        "docs/c.md's complete example differs from tests/c/example.c: copy it over"
    );
    run_c("example", "hello from Linux\nexit code 3\n");
}
