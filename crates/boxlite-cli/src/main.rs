//! The `boxlite` command line: a thin frontend over the library.
//!
//! On success it prints nothing of its own: stdout and stderr carry exactly what the
//! command in the box wrote, so scripts can compare output byte for byte. Logs go to
//! `BOXLITE_HOME/logs/boxlite.log`, or to stderr with `--debug` or `RUST_LOG`.
//!
//! `args.rs` holds the command line's shape, `run.rs` runs and streams commands, and
//! `boxes.rs`, `images.rs`, `cp.rs`, `stats.rs` and `info.rs` the other subcommands.
//! With `--url` (or `BOXLITE_URL`), `remote/` runs the box commands against a server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use boxlite::{Boxlite, RuntimeOptions};
use clap::Parser;

mod args;
mod boxes;
mod cp;
mod images;
mod info;
mod mcp;
mod network;
mod remote;
mod run;
mod serve;
mod stats;
mod term;

use args::{Cli, Command, ImageCommand};

/// Logs to stderr with `--debug` or `RUST_LOG`, else to the home's log file (none for a
/// remote CLI, which has no home).
fn init_logging(debug: bool, home: Option<&std::path::Path>) {
    use tracing_subscriber::EnvFilter;
    let env = std::env::var("RUST_LOG").ok();
    if debug || env.is_some() {
        let filter = env.unwrap_or_else(|| "debug,h2=info,tower=info,hyper=info".into());
        let mut filter = EnvFilter::new(filter);
        // tungstenite traces its whole handshake request, the API key's header included.
        if let Ok(d) = "tungstenite::handshake=debug".parse() {
            filter = filter.add_directive(d);
        }
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    let Some(home) = home else {
        return;
    };
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

async fn real_main(cli: Cli) -> Result<i32> {
    if let Some(url) = &cli.url {
        init_logging(cli.debug, None);
        return remote::main(url, cli.command).await;
    }
    let home = cli
        .home
        .clone()
        .unwrap_or_else(boxlite::runtime::default_home);
    init_logging(cli.debug, Some(&home));
    let rt = Boxlite::new(RuntimeOptions {
        home: Some(home),
        assets: None,
        config: cli.config.clone(),
        image_builder: None,
        // BOXLITE_AUTO_PAUSE, read by the runtime.
        auto_pause: None,
    })?;
    if !rt.jail().enabled && !matches!(cli.command, Command::Info { .. }) {
        eprintln!(
            "boxlite: warning: BOXLITE_JAIL=off: box helpers run without their jail (no seccomp, landlock, namespaces, cgroups or privilege drop); for debugging only"
        );
    }
    match cli.command {
        Command::Run {
            exec,
            create,
            detach,
            image,
            command,
        } => run::run_cmd(rt, exec, create, detach, image, command).await,
        Command::Exec {
            exec,
            detach,
            id,
            command,
        } => run::exec_cmd(rt, exec, detach, id, command).await,
        Command::Attach { id, exec_id } => {
            let run = rt.get(&id).await?.attach(&exec_id).await?;
            run::pump(run, true, false).await
        }
        Command::Create { create, image } => {
            let opts = create.options(&image, &[])?;
            tokio::select! {
                r = boxes::create(&rt, opts) => r,
                code = run::interrupted() => Ok(code),
            }
        }
        Command::Volume { command } => boxes::volume(&rt, command).await,
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
        Command::Pause { boxes: keys } => {
            boxes::for_each(&rt, &keys, |b| async move { b.pause().await }).await
        }
        Command::Resume { boxes: keys } => {
            boxes::for_each(&rt, &keys, |b| async move { b.resume().await }).await
        }
        Command::Snapshot { command } => boxes::snapshot(&rt, command).await,
        Command::Clone {
            source,
            name,
            count,
        } => boxes::clone(&rt, &source, name, count).await,
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
        Command::Ls {
            all,
            quiet,
            format,
            filter,
        } => boxes::ls(&rt, all, quiet, &format, &filter).await,
        Command::Inspect { boxes: keys } => boxes::inspect(&rt, &keys).await,
        Command::Port { id } => network::ports(&rt, &id).await,
        Command::Network { command } => network::command(&rt, command).await,
        Command::Logs { follow, id } => {
            tokio::select! {
                r = boxes::logs(&rt, &id, follow) => r,
                code = run::interrupted() => Ok(code),
            }
        }
        Command::Info { format } => info::info_cmd(rt, &format).await,
        Command::Mcp { flags } => mcp::mcp_cmd(rt, flags).await,
        Command::Serve {
            host,
            port,
            api_key_file,
        } => serve::serve_cmd(rt, host, port, api_key_file).await,
        // Interrupted, these drop their work: a build in progress ends its builder VM
        // at once instead of leaving it to the next command.
        Command::Pull {
            quiet,
            images: refs,
        } => {
            tokio::select! {
                r = images::pull(&rt, &refs, quiet) => r,
                code = run::interrupted() => Ok(code),
            }
        }
        Command::Images { quiet, format } => images::list(&rt, quiet, &format).await,
        Command::Rmi {
            force,
            images: refs,
        } => images::remove(&rt, &refs, force).await,
        Command::Image { command } => match command {
            ImageCommand::Ls { quiet, format } => images::list(&rt, quiet, &format).await,
            ImageCommand::Rm {
                force,
                images: refs,
            } => images::remove(&rt, &refs, force).await,
            ImageCommand::Prune => images::prune(&rt).await,
            ImageCommand::Templates { format } => images::templates(&rt, &format).await,
        },
        Command::Load { input, tag } => {
            tokio::select! {
                r = images::load(&rt, &input, tag.as_deref()) => r,
                code = run::interrupted() => Ok(code),
            }
        }
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
                _ = run::interrupted() => Ok(0),
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
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255)),
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
