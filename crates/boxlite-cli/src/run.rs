//! `run`, `exec` and `attach`: starting commands and streaming them.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use boxlite::{BoxCommand, Boxlite, Execution};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{CreateArgs, ExecArgs};
use crate::term;

fn parse_env(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Ok((s.clone(), std::env::var(s).unwrap_or_default())),
        })
        .collect()
}

/// How `run` and `exec` flags shape a command, parsed (and their syntax checked) once,
/// before anything is created; applied to whatever command runs.
#[derive(Debug)]
pub(crate) struct ExecSettings {
    pub(crate) interactive: bool,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) tty: bool,
    pub(crate) timeout: Option<Duration>,
}

impl ExecSettings {
    pub(crate) fn parse(args: &ExecArgs) -> Result<Self> {
        let timeout = match args.timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t <= 1e9 => Some(Duration::from_secs_f64(t)),
            Some(t) => bail!("invalid --timeout {t}: give a number of seconds greater than 0"),
        };
        // The library's own checks, before anything is created or booted.
        let env = parse_env(&args.env)?;
        for ((k, v), spec) in env.iter().zip(&args.env) {
            BoxCommand::check_env(k, v).with_context(|| format!("invalid --env {spec:?}"))?;
        }
        if let Some(w) = &args.workdir {
            BoxCommand::check_working_dir(w).with_context(|| format!("invalid --workdir {w:?}"))?;
        }
        Ok(ExecSettings {
            interactive: args.interactive,
            env,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            tty: args.tty,
            timeout,
        })
    }

    fn apply(&self, base: BoxCommand) -> BoxCommand {
        let mut cmd = base.stdin(self.interactive);
        for (k, v) in &self.env {
            cmd = cmd.env(k, v);
        }
        if let Some(w) = &self.workdir {
            cmd = cmd.working_dir(w);
        }
        if let Some(u) = &self.user {
            cmd = cmd.user(u);
        }
        if self.tty {
            let (rows, cols) = term::size().unwrap_or((24, 80));
            cmd = cmd.tty(rows, cols);
        }
        if let Some(t) = self.timeout {
            cmd = cmd.timeout(t);
        }
        cmd
    }
}

/// Stream an execution's output to our stdout and stderr, forward stdin with `-i`, and
/// return its shell-style exit code. With `forward_signals`, SIGINT, SIGTERM and SIGHUP
/// are passed on to the command's process group, as a terminal would; a second one
/// stops waiting (the command keeps running in the box). With `tty`, the local terminal
/// is raw while the command runs and window size changes are passed on.
pub(crate) async fn pump(mut run: Execution, forward_signals: bool, tty: bool) -> Result<i32> {
    let interactive = run.has_stdin();
    // Restored when this function returns, whichever way: the guard drops.
    let _raw = if tty && interactive && term::is_tty(0) {
        Some(term::RawMode::enable().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let stdin_task = run.take_stdin().map(|mut input| {
        tokio::spawn(async move {
            forward_stdin(&mut input).await;
        })
    });
    let mut out = run.take_stdout().context("stdout already taken")?;
    let mut err = run.take_stderr().context("stderr already taken")?;
    let out_task = tokio::spawn(async move { out.copy_to(&mut tokio::io::stdout()).await });
    let err_task = tokio::spawn(async move { err.copy_to(&mut tokio::io::stderr()).await });
    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    // Created once, before the loop: a second Ctrl-C while the first is being passed on
    // is kept, not lost.
    let mut interrupts = Interrupts::new().context("signal handlers")?;
    let wait = run.wait();
    tokio::pin!(wait);
    let mut forwarded = false;
    let status = loop {
        tokio::select! {
            st = &mut wait => break st?,
            code = interrupts.recv(), if forward_signals => {
                if forwarded {
                    tracing::info!(exec_id = run.id(), "interrupted twice; the execution keeps running in the box");
                    return Ok(code);
                }
                forwarded = true;
                run.signal_group(code - 128).await?;
            }
            _ = winch.recv(), if tty => {
                if let Some((rows, cols)) = term::size()
                    && let Err(e) = run.resize_tty(rows, cols).await
                {
                    tracing::warn!(exec_id = run.id(), error = %e, "passing on a window size change");
                }
            }
        }
    };
    out_task.await??;
    err_task.await??;
    if let Some(t) = stdin_task {
        t.abort();
    }
    if status == boxlite::ExitStatus::OutOfMemory {
        eprintln!("boxlite: the command was {status}");
    }
    Ok(status.shell_code())
}

/// SIGINT, SIGTERM and SIGHUP, each kept by its stream until read: listening with one of
/// these across a loop loses no signal that arrives while the loop does something else.
pub(crate) struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub(crate) fn new() -> std::io::Result<Interrupts> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The shell exit code of the next one (cancel-safe).
    pub(crate) async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => 128 + libc::SIGINT,
            _ = self.term.recv() => 128 + libc::SIGTERM,
            _ = self.hup.recv() => 128 + libc::SIGHUP,
        }
    }
}

/// Resolve on the first of SIGINT, SIGTERM or SIGHUP, with the shell exit code for it.
pub(crate) async fn interrupted() -> i32 {
    match Interrupts::new() {
        Ok(mut i) => i.recv().await,
        Err(e) => {
            tracing::warn!(error = %e, "no signal handlers; interrupts are not caught");
            std::future::pending().await
        }
    }
}

pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where this process's stdin goes: a command's stdin, here or over the API.
pub(crate) trait StdinSink: Send {
    /// Pass a chunk on; `false` when the other side is gone.
    fn send(&mut self, chunk: &[u8]) -> impl std::future::Future<Output = bool> + Send;
    /// End of file.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

impl StdinSink for boxlite::ExecStdin {
    async fn send(&mut self, chunk: &[u8]) -> bool {
        self.write_all(chunk).await.is_ok()
    }

    async fn close(&mut self) {
        let _ = boxlite::ExecStdin::close(self).await;
    }
}

/// Pass this process's stdin on to `sink` in chunks as it arrives, then close it (a read
/// error counts as the end); stops early, without closing, if the sink is gone.
pub(crate) async fn forward_stdin(sink: &mut impl StdinSink) {
    let mut local = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match local.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !sink.send(&buf[..n]).await {
                    return;
                }
            }
        }
    }
    sink.close().await;
}

/// The `run` flags checked and parsed, as the local and the remote `run` take them.
pub(crate) fn run_settings(exec: &ExecArgs, detach: bool) -> Result<ExecSettings> {
    if detach && exec.interactive {
        bail!("-i cannot be combined with -d: a detached command has no terminal to read from");
    }
    check_tty(exec)?;
    ExecSettings::parse(exec)
}

/// `boxlite run`: create a box (the command, if any, replacing the image's `Cmd`), start
/// it, and run its command. In the foreground the box lives as long as its command:
/// it is stopped afterwards (and with `--rm`, the library removes it as it stops).
pub(crate) async fn run_cmd(
    rt: Boxlite,
    exec: ExecArgs,
    create: CreateArgs,
    detach: bool,
    image: String,
    command: Vec<String>,
) -> Result<i32> {
    // Every flag is checked before anything is created.
    let settings = run_settings(&exec, detach)?;
    let b = rt.create(create.options(&image, &command)?).await?;
    // Entrypoint + (the command or the image's Cmd). Detached with nothing to run is
    // fine: the box runs idle.
    let cmd = match b.image_command(&[]).await {
        Ok(base) => Some(settings.apply(base)),
        Err(_) if detach => None,
        Err(e) => {
            let _ = b.remove(true).await;
            return Err(e.into());
        }
    };
    if detach {
        let started = async {
            b.start().await?;
            if let Some(cmd) = cmd {
                // The execution belongs to the box; it keeps running after we exit.
                b.exec(cmd).await?;
            }
            Ok::<_, anyhow::Error>(())
        };
        let outcome = tokio::select! {
            r = started => r,
            code = interrupted() => Err(anyhow::anyhow!("interrupted (exit {code})")),
        };
        if let Err(e) = outcome {
            let _ = b.remove(true).await;
            return Err(e);
        }
        println!("{}", b.id());
        return Ok(0);
    }
    let work = async {
        b.start().await?;
        let run = b.exec(cmd.expect("a command, or an error above")).await?;
        pump(run, false, exec.tty).await
    };
    let outcome = tokio::select! {
        r = work => r,
        code = interrupted() => {
            tracing::info!(box_id = %b.id(), code, "interrupted; cleaning up");
            Ok(code)
        }
    };
    let stopped = match b.stop(STOP_TIMEOUT).await {
        // A --rm box can be gone already: a failed start removes it.
        Err(boxlite::Error::Box(boxlite::BoxError::NotFound(_))) if create.rm => Ok(()),
        r => r,
    };
    let code = outcome?;
    stopped?;
    Ok(code)
}

/// `boxlite exec`: run a command in an existing box (starting it if needed).
pub(crate) async fn exec_cmd(
    rt: Boxlite,
    exec: ExecArgs,
    detach: bool,
    id: String,
    command: Vec<String>,
) -> Result<i32> {
    if !detach {
        check_tty(&exec)?;
    }
    let settings = ExecSettings::parse(&exec)?;
    let cmd = settings.apply(BoxCommand::new(&command[0]).args(command[1..].iter().cloned()));
    let b = rt.get(&id).await?;
    let run = b.exec(cmd).await?;
    if detach {
        println!("{}", run.id());
        return Ok(0);
    }
    pump(run, true, exec.tty).await
}

/// `-it` needs a terminal to read keystrokes from, as with docker.
pub(crate) fn check_tty(exec: &ExecArgs) -> Result<()> {
    if exec.tty && exec.interactive && !term::is_tty(0) {
        bail!("the input device is not a TTY; drop -t, or run from a terminal");
    }
    Ok(())
}
