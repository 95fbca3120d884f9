//! Exec against real VMs: byte-exact streams, stdin, signals, concurrency, wait/kill.

use std::time::{Duration, Instant};

use boxlite::{BoxCommand, BoxError, BoxOptions, BoxState, Error, ExecError, ExitStatus, LiteBox};
use boxlite_testkit::TestHome;
use sha2::{Digest, Sha256};

async fn boot(h: &TestHome) -> (boxlite::Boxlite, LiteBox) {
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    (rt, b)
}

async fn teardown(rt: boxlite::Boxlite, b: LiteBox) {
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}

async fn run(b: &LiteBox, cmd: BoxCommand) -> (Vec<u8>, Vec<u8>, ExitStatus) {
    let mut ex = b.exec(cmd).await.unwrap();
    let mut out = ex.take_stdout().unwrap();
    let mut err = ex.take_stderr().unwrap();
    let (o, e) = tokio::join!(out.read_to_end(), err.read_to_end());
    (o.unwrap(), e.unwrap(), ex.wait().await.unwrap())
}

fn sh(script: &str) -> BoxCommand {
    BoxCommand::new("sh").args(["-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdout_stderr_and_exit_code_are_byte_exact() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let (out, err, status) = run(&b, sh("printf abc; printf err >&2; exit 7")).await;

    assert_eq!(out, b"abc");
    assert_eq!(err, b"err");
    assert_eq!(status, ExitStatus::Code(7));
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_of_binary_stdin_comes_back_identical_through_cat() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;
    let data: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();

    let mut ex = b.exec(BoxCommand::new("cat").stdin(true)).await.unwrap();
    let mut stdin = ex.take_stdin().unwrap();
    let mut stdout = ex.take_stdout().unwrap();
    let reader = tokio::spawn(async move { stdout.read_to_end().await.unwrap() });
    stdin.write_all(&data).await.unwrap();
    let written = stdin.close().await.unwrap();
    let echoed = reader.await.unwrap();

    assert_eq!(written, data.len() as u64);
    assert_eq!(Sha256::digest(&echoed), Sha256::digest(&data));
    assert_eq!(ex.wait().await.unwrap(), ExitStatus::Code(0));
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_killed_by_signal_9_is_reported_as_signal_not_exit_code() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let (_, _, status) = run(&b, sh("kill -9 $$")).await;

    assert_eq!(
        status,
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    assert_eq!(status.shell_code(), 137);
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_execs_each_get_their_own_output() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let runs = (0..10).map(|i| {
        let b = b.clone();
        async move {
            // Interleave in time so the outputs really overlap.
            let script = format!("for j in 1 2 3 4 5; do echo exec{i}-$j; sleep 0.05; done; echo err{i} >&2; exit {i}");
            run(&b, sh(&script)).await
        }
    });
    let results = futures_join_all(runs).await;

    for (i, (out, err, status)) in results.into_iter().enumerate() {
        let want: String = (1..=5).map(|j| format!("exec{i}-{j}\n")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert_eq!(err, format!("err{i}\n").into_bytes());
        assert_eq!(status, ExitStatus::Code(i32::try_from(i).unwrap()));
    }
    teardown(rt, b).await;
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_parked_on_a_long_sleep_does_not_block_kill() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;
    let ex = std::sync::Arc::new(b.exec(BoxCommand::new("sleep").arg("1000")).await.unwrap());

    let waiter = {
        let ex = ex.clone();
        tokio::spawn(async move { ex.wait().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), ex.kill())
        .await
        .expect("kill() was blocked behind wait()")
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("wait() did not return after kill()")
        .unwrap();

    assert_eq!(
        status,
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    eprintln!("kill to exit observed in {:?}", t.elapsed());
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_is_a_command_not_found_error_not_a_hang() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let err = tokio::time::timeout(
        Duration::from_secs(30),
        b.exec(BoxCommand::new("no-such-program")),
    )
    .await
    .expect("exec of a missing binary hung")
    .unwrap_err();

    let Error::Exec(ExecError::CommandNotFound(msg)) = &err else {
        panic!("expected CommandNotFound, got {err:?}");
    };
    assert!(msg.contains("\"no-such-program\" not found"), "{msg}");
    assert!(msg.contains("PATH="), "{msg}");
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_working_dir_reach_the_process() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let (out, _, status) = run(
        &b,
        sh("printf '%s|%s|%s' \"$GREETING\" \"$(pwd)\" \"$HOME\"")
            .env("GREETING", "hi there")
            .working_dir("/etc"),
    )
    .await;
    let missing = b
        .exec(sh("true").working_dir("/does/not/exist"))
        .await
        .unwrap_err()
        .to_string();

    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out, b"hi there|/etc|/root");
    assert!(
        missing.contains("working directory \"/does/not/exist\" does not exist"),
        "{missing}"
    );
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_root_has_proc_dev_and_a_sticky_tmp() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let (out, _, _) = run(
        &b,
        sh("stat -c '%a %n' /tmp; test -c /dev/null && echo devnull; test -r /proc/self/status && echo proc; id -u; cat /etc/passwd | cut -d: -f1"),
    )
    .await;

    assert_eq!(
        String::from_utf8(out).unwrap(),
        "1777 /tmp\ndevnull\nproc\n0\nroot\nnobody\n"
    );
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_exec_reports_timed_out_not_an_ordinary_exit() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();

    let run = b
        .exec(
            BoxCommand::new("sleep")
                .arg("1000")
                .timeout(std::time::Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let status = run.wait().await.unwrap();
    let quick = b
        .exec(BoxCommand::new("true").timeout(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    assert_eq!(status, boxlite::ExitStatus::TimedOut);
    assert_eq!(status.shell_code(), 124);
    assert!(!status.success());
    assert!(quick.success());
    b.remove(true).await.unwrap();
}

/// 50 execs each write 1 MiB at once while one more exec's reader is paused with its
/// output buffers full. Per-stream flow control keeps the paused one from stalling the
/// rest, and every stream arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs_arrive_intact_while_one_reader_is_paused() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;
    // The paused one writes far more than the agent and HTTP/2 will buffer.
    let mut stalled = b.exec(sh("head -c 16777216 /dev/zero")).await.unwrap();
    let mut stalled_out = stalled.take_stdout().unwrap();
    let first = stalled_out.next_chunk().await.unwrap().unwrap();

    let runs = (0..50).map(|i| {
        let b = b.clone();
        async move {
            // 1 MiB of a per-exec pattern: "<i>" repeated, so crossed streams would show.
            let script = format!("yes {i:02} | head -c 1048576");
            run(&b, sh(&script)).await
        }
    });
    let results = futures_join_all(runs).await;
    stalled.kill().await.unwrap();
    let stalled_status = stalled.wait().await.unwrap();

    assert!(!first.is_empty());
    for (i, (out, err, status)) in results.into_iter().enumerate() {
        let line = format!("{i:02}\n").into_bytes();
        assert_eq!(out.len(), 1 << 20, "exec {i}");
        assert!(
            out.chunks(3).all(|c| line.starts_with(c)),
            "exec {i} got foreign bytes"
        );
        assert!(
            err.is_empty(),
            "exec {i}: {}",
            String::from_utf8_lossy(&err)
        );
        assert_eq!(status, ExitStatus::Code(0), "exec {i}");
    }
    assert_eq!(
        stalled_status,
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_clones_share_streams_and_keep_the_status_after_the_box_stops() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;

    let mut ex = b
        .exec(sh("read line; echo got:$line; echo err >&2; exit 5").stdin(true))
        .await
        .unwrap();
    let mut clone = ex.clone();
    let mut stdin = ex.take_stdin().unwrap();
    let taken_twice = clone.take_stdin().is_none();
    stdin.write_all(b"hi\n").await.unwrap();
    let open_before = !stdin.is_closed();
    stdin.close().await.unwrap();
    let late_write = stdin.write_all(b"x").await.unwrap_err();
    let late_close = stdin.close().await.unwrap_err();
    // stdout as a Stream of byte chunks; stderr through the clone.
    let out: Vec<u8> = {
        use tokio_stream::StreamExt;
        let chunks: Vec<Result<Vec<u8>, ExecError>> = ex.stdout().unwrap().collect().await;
        chunks.into_iter().flat_map(Result::unwrap).collect()
    };
    let err = clone.stderr().unwrap().read_to_end().await.unwrap();
    let from_clone = clone.wait().await.unwrap();
    b.stop(Duration::from_secs(10)).await.unwrap();
    // The agent is gone with its VM; the status was kept on the host.
    let after_stop = ex.wait().await.unwrap();
    // A stopped box is neither attached to nor pinged, and neither starts it.
    let attach = b.attach(ex.id()).await.unwrap_err();
    let ping = b.ping(Duration::from_secs(5)).await.unwrap_err();

    assert!(taken_twice);
    assert!(open_before && stdin.is_closed());
    assert!(
        matches!(late_write, ExecError::StdinClosed { .. }),
        "{late_write}"
    );
    assert!(
        matches!(late_close, ExecError::StdinClosed { .. }),
        "{late_close}"
    );
    assert!(ex.take_stdout().is_none());
    assert_eq!(out, b"got:hi\n");
    assert_eq!(err, b"err\n");
    assert_eq!(from_clone, ExitStatus::Code(5));
    assert_eq!(after_stop, ExitStatus::Code(5));
    for e in [&attach, &ping] {
        assert!(
            matches!(
                e,
                Error::Box(BoxError::NotRunning {
                    state: BoxState::Stopped,
                    ..
                })
            ),
            "{e}"
        );
    }
    assert_eq!(b.state().await.unwrap(), BoxState::Stopped);
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    rt.remove(&b, false).await.unwrap();
}

/// Every handle of a box in a runtime shares one agent connection, so readers that stop
/// must not stall the others: each holds back only its own stream, never the
/// connection. Six stalled readers of endless output (more than the connection window's
/// worth of stream windows, were it shared) and a seventh command still runs and reads,
/// through a handle from `get` as well as the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_on_one_connection_do_not_stall_another_command() {
    let h = TestHome::new();
    let (rt, b) = boot(&h).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let stalled = async {
            let mut ex = b
                .exec(BoxCommand::new("cat").arg("/dev/zero"))
                .await
                .unwrap();
            let mut out = ex.take_stdout().unwrap();
            // Open the stream and take one chunk, then read no more.
            out.next_chunk().await.unwrap().unwrap();
            // Let it fill every window it can.
            tokio::time::sleep(Duration::from_millis(300)).await;
            (ex, out)
        };
        let pair = tokio::time::timeout(Duration::from_secs(30), stalled)
            .await
            .unwrap_or_else(|_| panic!("exec {i} stalled behind {i} stalled readers"));
        held.push(pair);
    }
    let other = rt.get(b.id()).await.unwrap();
    for handle in [&b, &other] {
        let done = tokio::time::timeout(Duration::from_secs(30), run(handle, sh("echo through")))
            .await
            .expect("a command behind six stalled readers did not finish");
        assert_eq!(done.0, b"through\n");
    }
    for (ex, _) in &held {
        ex.kill().await.unwrap();
    }
    drop(held);
    teardown(rt, b).await;
}
