//! The `boxlite` command line: a thin frontend over the library.
//!
//! On success it prints nothing of its own: stdout and stderr carry exactly what the
//! command in the box wrote, so scripts can compare output byte for byte. Logs go to
//! `BOXLITE_HOME/logs/boxlite.log`, or to stderr with `--debug` or `RUST_LOG`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use boxlite::{BoxCommand, BoxOptions, Boxlite, Execution, HealthOptions, RuntimeOptions};
use clap::{Args, Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

mod boxes;
mod cp;
mod images;
mod stats;
mod term;

#[derive(Parser, Debug)]
#[command(name = "boxlite", version, about = "Run OCI images in lightweight VMs")]
struct Cli {
    /// Log to stderr at debug level.
    #[arg(long, global = true)]
    debug: bool,
    /// The boxlite home directory (default: $BOXLITE_HOME, else ~/.boxlite).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Registry settings file (default: BOXLITE_HOME/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Keep stdin open and forward it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a terminal in the box. With -i, the local terminal is put in
    /// raw mode and its size follows the window.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the box.
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Run as name|uid[:group|gid], resolved in the image like `docker exec --user`.
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,
    /// Kill the command (its whole process group) after SECS seconds, enforced inside
    /// the box; boxlite then exits with 124, as coreutils `timeout` does.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// A unique name for the box, usable wherever a box id is.
    #[arg(long)]
    name: Option<String>,
    /// Remove the box as soon as it stops, however it stops.
    #[arg(long)]
    rm: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Seconds between agent health pings while the box runs; 0 turns them off.
    #[arg(long, value_name = "SECS", default_value_t = HealthOptions::default().interval_secs)]
    health_interval: u32,
    /// Seconds a health ping may take.
    #[arg(long, value_name = "SECS", default_value_t = HealthOptions::default().timeout_secs)]
    health_timeout: u32,
    /// Consecutive failed pings before the box is marked unhealthy.
    #[arg(long, value_name = "N", default_value_t = HealthOptions::default().retries)]
    health_retries: u32,
    /// Mount a managed volume: /guest/path (a new anonymous volume, removed with the
    /// box) or NAME:/guest/path[:ro] (a named volume, created on first use). Host
    /// directories cannot be mounted; use `boxlite cp`.
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    volumes: Vec<String>,
    /// Root disk size (MiB, or with K, M, G or T), at least the image's (the default).
    /// The filesystem grows at first boot; the disk file only by what is written.
    #[arg(long, value_name = "SIZE")]
    disk_size: Option<String>,
    /// Replace the image's entrypoint with this program ("" for none); the image's
    /// default command is dropped with it, as in Docker.
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
}

impl CreateArgs {
    fn options(&self, image: &str) -> Result<BoxOptions> {
        let mut o = BoxOptions::new(image)
            .memory_mib(self.memory)
            .cpus(self.cpus)
            .auto_remove(self.rm)
            .health(HealthOptions {
                interval_secs: self.health_interval,
                timeout_secs: self.health_timeout,
                retries: self.health_retries,
            });
        if let Some(n) = &self.name {
            o = o.name(n);
        }
        // Parse every spec before anything is created.
        for v in &self.volumes {
            o = o.volume(boxlite::VolumeSpec::parse(v)?);
        }
        if let Some(d) = &self.disk_size {
            o = o.disk_size_mib(images::parse_size_mib(d)?);
        }
        if let Some(e) = &self.entrypoint {
            o.entrypoint = Some(if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            });
        }
        Ok(o)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and start a box from an image and run a command in it. In the foreground
    /// the box stops when the command ends; with -d it keeps running and its id is
    /// printed.
    Run {
        #[command(flatten)]
        exec: ExecArgs,
        #[command(flatten)]
        create: CreateArgs,
        /// Detach: leave the box running and print its id.
        #[arg(short, long)]
        detach: bool,
        /// Image reference, for example boxlite/busybox or python:3.12-slim; pulled if
        /// it is not in the local store.
        image: String,
        /// Command and arguments, after the image's entrypoint (default: the image's
        /// command).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Pull images from their registries and build their root filesystems.
    Pull {
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List images in the local store.
    Images {
        /// Print only references.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove images (by reference or digest prefix). Refused while a box uses one,
    /// unless forced.
    Rmi {
        /// Remove the reference even if boxes use the image; its files go with the last
        /// such box.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Import images from an OCI layout directory, an OCI archive or a `docker save`
    /// archive.
    Load {
        /// The directory or archive.
        #[arg(short, long, value_name = "PATH")]
        input: String,
        /// Name the image (needed when the input does not name it).
        #[arg(short, long, value_name = "REFERENCE")]
        tag: Option<String>,
    },
    /// Save credentials for a registry. The secret is read from stdin (typed without
    /// echo on a terminal), never from the command line.
    Login {
        /// User name; the password is read from stdin.
        #[arg(short, long)]
        username: Option<String>,
        /// Read a bearer token from stdin instead of a password.
        #[arg(long)]
        token: bool,
        /// Registry host, for example docker.io, ghcr.io or 127.0.0.1:5000.
        registry: String,
    },
    /// Forget the saved credentials of a registry.
    Logout { registry: String },
    /// Run a command in an existing box, starting it if it is stopped.
    Exec {
        #[command(flatten)]
        exec: ExecArgs,
        /// Start the command and print its execution id instead of waiting; `boxlite
        /// attach` picks it up later.
        #[arg(short, long, conflicts_with = "interactive")]
        detach: bool,
        #[arg(value_name = "BOX")]
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Attach to an execution by id: print its remaining output and exit with its code.
    Attach {
        #[arg(value_name = "BOX")]
        id: String,
        #[arg(value_name = "EXEC_ID")]
        exec_id: String,
    },
    /// Create a box without starting it, and print its id.
    Create {
        #[command(flatten)]
        create: CreateArgs,
        image: String,
    },
    /// Start boxes.
    Start {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Stop boxes: shut the guest down cleanly, then end the VM after the timeout.
    Stop {
        /// Seconds to wait for a clean shutdown before killing the VM.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        timeout: u64,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Stop and start boxes.
    Restart {
        #[arg(short = 't', long = "time", default_value_t = 10)]
        timeout: u64,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Remove boxes.
    Rm {
        /// Remove running boxes too, killing their VMs.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// List boxes (running ones unless -a).
    #[command(alias = "ps")]
    Ls {
        /// Show every box, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show boxes as JSON.
    Inspect {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Show a box's console log (kernel and boot messages).
    Logs {
        /// Keep printing as the log grows, until the box stops.
        #[arg(short, long)]
        follow: bool,
        #[arg(value_name = "BOX")]
        id: String,
    },
    /// Copy files between the host and a box: `cp HOST BOX:PATH`, `cp BOX:PATH HOST`,
    /// `cp - BOX:DIR` (a tar on stdin), `cp BOX:PATH -` (a tar on stdout). A source
    /// ending in `/.` copies a directory's contents. A box that is stopped is started.
    Cp {
        /// Follow symlinks in the source instead of copying them as links.
        #[arg(short = 'L', long = "follow-link")]
        follow_link: bool,
        /// Fail instead of replacing files that exist at the destination.
        #[arg(long)]
        no_overwrite: bool,
        /// Source: a host path, BOX:PATH, or -.
        src: String,
        /// Destination: a host path, BOX:PATH, or -.
        dst: String,
    },
    /// Show live CPU, memory, disk and exec figures of running boxes (or the named ones).
    Stats {
        /// Print one snapshot and exit.
        #[arg(long)]
        no_stream: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Show the accelerator, QEMU, kernel and asset paths.
    Info {
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images (as `boxlite images`).
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove images (as `boxlite rmi`).
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove root filesystems and blobs that no image reference and no box uses.
    Prune,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a named volume (nothing happens if it exists).
    Create { name: String },
    /// List volumes.
    Ls {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes and their contents.
    Rm {
        /// Remove even if a box uses it.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn init_logging(debug: bool, home: &std::path::Path) {
    use tracing_subscriber::EnvFilter;
    let env = std::env::var("RUST_LOG").ok();
    if debug || env.is_some() {
        let filter = env.unwrap_or_else(|| "debug,h2=info,tower=info,hyper=info".into());
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    let dir = home.join("logs");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("boxlite.log"))
    {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
}

fn parse_env(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some(("", _)) => bail!("invalid --env {s:?}: the name is empty"),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Ok((s.clone(), std::env::var(s).unwrap_or_default())),
        })
        .collect()
}

fn build_command(args: &ExecArgs, base: BoxCommand) -> Result<BoxCommand> {
    let mut cmd = base.stdin(args.interactive);
    for (k, v) in parse_env(&args.env)? {
        cmd = cmd.env(k, v);
    }
    if let Some(w) = &args.workdir {
        cmd = cmd.working_dir(w);
    }
    if let Some(u) = &args.user {
        cmd = cmd.user(u);
    }
    if args.tty {
        let (rows, cols) = term::size().unwrap_or((24, 80));
        cmd = cmd.tty(rows, cols);
    }
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t > 0.0 && t <= 1e9) {
            bail!("invalid --timeout {t}: give a number of seconds greater than 0");
        }
        cmd = cmd.timeout(Duration::from_secs_f64(t));
    }
    Ok(cmd)
}

/// Stream an execution's output to our stdout and stderr, forward stdin with `-i`, and
/// return its shell-style exit code. With `forward_signals`, SIGINT, SIGTERM and SIGHUP
/// are passed on to the command's process group, as a terminal would; a second one
/// stops waiting (the command keeps running in the box). With `tty`, the local terminal
/// is raw while the command runs and window size changes are passed on.
async fn pump(mut run: Execution, forward_signals: bool, tty: bool) -> Result<i32> {
    let interactive = run.has_stdin();
    // Restored when this function returns, whichever way: the guard drops.
    let _raw = if tty && interactive && term::is_tty(0) {
        Some(term::RawMode::enable().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let stdin_task = run.take_stdin().map(|mut input| {
        tokio::spawn(async move {
            let mut local = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match local.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = input.close().await;
        })
    });
    let mut out = run.take_stdout().context("stdout already taken")?;
    let mut err = run.take_stderr().context("stderr already taken")?;
    let out_task = tokio::spawn(async move { out.copy_to(&mut tokio::io::stdout()).await });
    let err_task = tokio::spawn(async move { err.copy_to(&mut tokio::io::stderr()).await });
    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    let wait = run.wait();
    tokio::pin!(wait);
    let mut forwarded = false;
    let status = loop {
        tokio::select! {
            st = &mut wait => break st?,
            code = interrupted(), if forward_signals => {
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

/// Resolve on the first of SIGINT, SIGTERM or SIGHUP, with the shell exit code for it.
async fn interrupted() -> i32 {
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::select! {
        _ = int.recv() => 128 + libc::SIGINT,
        _ = term.recv() => 128 + libc::SIGTERM,
        _ = hup.recv() => 128 + libc::SIGHUP,
    }
}

const STOP_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_cmd(
    rt: Boxlite,
    exec: ExecArgs,
    opts: BoxOptions,
    detach: bool,
    command: Vec<String>,
) -> Result<i32> {
    if detach && exec.interactive {
        bail!("-i cannot be combined with -d: a detached command has no terminal to read from");
    }
    check_tty(&exec)?;
    // The options are checked before anything is created.
    build_command(&exec, BoxCommand::new("-"))?;
    let rm = opts.auto_remove;
    let b = rt.create(opts).await?;
    // Entrypoint + (command or the image's Cmd). Detached with nothing to run is fine:
    // the box runs idle.
    let cmd = match b.image_command(&command) {
        Ok(base) => Some(build_command(&exec, base)?),
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
    // The box lives as long as its command: stop it (an auto-remove box goes with it).
    let stopped = b.stop(STOP_TIMEOUT).await;
    let removed = match rm {
        true => b.remove(true).await.or_else(|e| match e {
            boxlite::Error::Box(boxlite::BoxError::NotFound(_)) => Ok(()),
            e => Err(e),
        }),
        false => Ok(()),
    };
    let code = outcome?;
    stopped.or_else(|e| match e {
        boxlite::Error::Box(boxlite::BoxError::NotFound(_)) if rm => Ok(()),
        e => Err(e),
    })?;
    removed?;
    Ok(code)
}

async fn exec_cmd(
    rt: Boxlite,
    exec: ExecArgs,
    detach: bool,
    id: String,
    command: Vec<String>,
) -> Result<i32> {
    if !detach {
        check_tty(&exec)?;
    }
    let cmd = build_command(
        &exec,
        BoxCommand::new(&command[0]).args(command[1..].iter().cloned()),
    )?;
    let b = rt.get(&id)?;
    let run = b.exec(cmd).await?;
    if detach {
        println!("{}", run.id());
        return Ok(0);
    }
    pump(run, true, exec.tty).await
}

/// `-it` needs a terminal to read keystrokes from, as with docker.
fn check_tty(exec: &ExecArgs) -> Result<()> {
    if exec.tty && exec.interactive && !term::is_tty(0) {
        bail!("the input device is not a TTY; drop -t, or run from a terminal");
    }
    Ok(())
}

fn show(r: &Result<PathBuf, String>) -> String {
    match r {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("unavailable: {e}"),
    }
}

fn info_cmd(rt: Boxlite, format: &str) -> Result<i32> {
    let info = rt.info();
    match format {
        // Results serialize as {"Ok": ..} or {"Err": ..}: that is the documented shape.
        "json" => println!("{}", serde_json::to_string_pretty(&info)?),
        "text" => {
            println!("boxlite:       {}", info.version);
            println!("home:          {}", info.home.display());
            println!(
                "accelerator:   {} ({})",
                info.accelerator, info.accelerator_reason
            );
            println!(
                "vmm:           {} {}",
                info.vmm_binary.display(),
                info.vmm_version.as_deref().unwrap_or_else(|e| e)
            );
            println!("vsock:         {:?}", info.vsock);
            println!("vhost-vsock:   {}", show(&info.vhost_vsock));
            println!("virtiofsd:     {}", show(&info.virtiofsd));
            println!("assets:        {}", show(&info.assets));
            println!(
                "kernel:        {}{}",
                show(&info.kernel),
                info.kernel_release
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!("initramfs:     {}", show(&info.initramfs));
            println!("images:        {}", info.builtin_images.join(", "));
            println!("monitor:       {}", show(&info.monitor));
            println!("database:      {}", info.database.display());
            println!("boxes:         {} ({} running)", info.boxes, info.running);
            println!("volumes:       {}", info.volumes);
        }
        other => bail!("invalid --format {other:?}; valid values are text and json"),
    }
    Ok(0)
}

async fn real_main(cli: Cli) -> Result<i32> {
    let home = cli
        .home
        .clone()
        .unwrap_or_else(boxlite::runtime::default_home);
    init_logging(cli.debug, &home);
    let rt = Boxlite::new(RuntimeOptions {
        home: Some(home),
        assets: None,
        config: cli.config.clone(),
    })?;
    match cli.command {
        Command::Run {
            exec,
            create,
            detach,
            image,
            command,
        } => {
            let opts = create.options(&image)?;
            run_cmd(rt, exec, opts, detach, command).await
        }
        Command::Exec {
            exec,
            detach,
            id,
            command,
        } => exec_cmd(rt, exec, detach, id, command).await,
        Command::Attach { id, exec_id } => {
            let run = rt.get(&id)?.attach(&exec_id).await?;
            pump(run, true, false).await
        }
        Command::Create { create, image } => boxes::create(&rt, create.options(&image)?).await,
        Command::Volume { command } => boxes::volume(&rt, command),
        Command::Start { boxes: keys } => {
            boxes::for_each(&rt, &keys, |b| async move { b.start().await }).await
        }
        Command::Stop {
            timeout,
            boxes: keys,
        } => {
            let t = Duration::from_secs(timeout);
            boxes::for_each(&rt, &keys, |b| async move { b.stop(t).await }).await
        }
        Command::Restart {
            timeout,
            boxes: keys,
        } => {
            let t = Duration::from_secs(timeout);
            boxes::for_each(&rt, &keys, |b| async move { b.restart(t).await }).await
        }
        Command::Rm { force, boxes: keys } => {
            boxes::for_each(&rt, &keys, |b| async move { b.remove(force).await }).await
        }
        Command::Ls { all, quiet, format } => boxes::ls(&rt, all, quiet, &format),
        Command::Inspect { boxes: keys } => boxes::inspect(&rt, &keys).await,
        Command::Logs { follow, id } => {
            tokio::select! {
                r = boxes::logs(&rt, &id, follow) => r,
                code = interrupted() => Ok(code),
            }
        }
        Command::Info { format } => info_cmd(rt, &format),
        Command::Pull {
            quiet,
            images: refs,
        } => images::pull(&rt, &refs, quiet).await,
        Command::Images { quiet, format } => images::list(&rt, quiet, &format),
        Command::Rmi {
            force,
            images: refs,
        } => images::remove(&rt, &refs, force).await,
        Command::Image { command } => match command {
            ImageCommand::Ls { quiet, format } => images::list(&rt, quiet, &format),
            ImageCommand::Rm {
                force,
                images: refs,
            } => images::remove(&rt, &refs, force).await,
            ImageCommand::Prune => images::prune(&rt).await,
        },
        Command::Load { input, tag } => images::load(&rt, &input, tag.as_deref()).await,
        Command::Login {
            username,
            token,
            registry,
        } => images::login(&rt, &registry, username.as_deref(), token),
        Command::Logout { registry } => images::logout(&rt, &registry),
        Command::Cp {
            follow_link,
            no_overwrite,
            src,
            dst,
        } => {
            let opts = boxlite::CopyOptions {
                follow_symlinks: follow_link,
                overwrite: !no_overwrite,
                ..Default::default()
            };
            cp::run(&rt, &src, &dst, opts).await
        }
        Command::Stats {
            no_stream,
            format,
            boxes: keys,
        } => {
            tokio::select! {
                r = stats::run(&rt, &keys, no_stream, &format) => r,
                _ = interrupted() => Ok(0),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("boxlite: error: starting the async runtime: {e}");
            return ExitCode::from(125);
        }
    };
    let result = runtime.block_on(real_main(cli));
    // A blocking read of our stdin may still be parked on a runtime thread; do not wait.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("boxlite: error: {}", boxlite::error_chain(e.as_ref()));
            // 125 like docker for our own failures; 127 when the command is not found.
            let not_found = e.downcast_ref::<boxlite::Error>().is_some_and(|e| {
                matches!(
                    e,
                    boxlite::Error::Exec(boxlite::ExecError::CommandNotFound(_))
                )
            });
            ExitCode::from(if not_found { 127 } else { 125 })
        }
    }
}
