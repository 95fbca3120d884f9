//! `run`, `exec` and `attach` against a server: executions start over REST and stream
//! over the attach WebSocket (binary `[1|2]+bytes` for stdout and stderr, a text
//! `{"type":"exit","exit_code":N}` at the end; stdin as binary frames, then
//! `{"type":"stdin_eof"}`; `resize` and `signal` messages).

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;

use crate::args::{CreateArgs, ExecArgs};
use crate::run::{ExecSettings, check_tty, interrupted};
use crate::term;
use boxlite_client::{Client, RemoteError, api, segment};
use boxlite_server::boxes::{CreateBox, NotCarried};
use boxlite_server::exec::ExecRequest;

/// The `CreateBoxRequest` for these flags. The flags are parsed and checked by the same
/// code as locally; what the API cannot carry is refused, never dropped.
pub(crate) fn create_request(
    create: &CreateArgs,
    image: &str,
    cmd: &[String],
    user: Option<&str>,
) -> Result<CreateBox> {
    let mut o = create.options(image, cmd)?;
    if let Some(u) = user {
        o.user = Some(u.to_string());
    }
    // The server never reads this machine's environment: each `--secret` goes as the
    // value of its variable here.
    for s in &mut o.secrets {
        *s = boxlite::net::secrets::literal(s)?;
    }
    CreateBox::from_options(&o).map_err(|e| {
        let flag = match e {
            NotCarried::Health => "--health-*",
            NotCarried::Ports => "--publish",
            NotCarried::Hosts => "--add-host",
            NotCarried::DiskSize => "--disk-size",
            NotCarried::Volume => "an anonymous volume (-v /path)",
            NotCarried::SecretSource => "--secret",
            NotCarried::Capabilities => "--cap-add, --cap-drop or --privileged",
        };
        anyhow::anyhow!("{flag} is not available with --url: {e}")
    })
}

/// Create a box on the server and return its id.
pub(crate) async fn create_box(
    c: &Client,
    create: &CreateArgs,
    image: &str,
    cmd: &[String],
) -> Result<String> {
    create_box_as(c, create, image, cmd, None).await
}

async fn create_box_as(
    c: &Client,
    create: &CreateArgs,
    image: &str,
    cmd: &[String],
    user: Option<&str>,
) -> Result<String> {
    let body = create_request(create, image, cmd, user)?;
    Ok(api::create_box(c, &body).await?)
}

/// The `ExecRequest` for a command (empty: the box's default command) and the
/// `run`/`exec` flags. Without `-i` the command's stdin is closed at once
/// (`"stdin": ""`), as locally.
fn exec_request(argv: &[String], s: &ExecSettings) -> ExecRequest {
    let (command, args) = match argv.split_first() {
        Some((program, args)) => (program.clone(), args.to_vec()),
        None => (String::new(), Vec::new()),
    };
    ExecRequest {
        default_command: command.is_empty(),
        command,
        args,
        env: s.env.iter().cloned().collect(),
        timeout_seconds: s.timeout.map(|t| t.as_secs_f64()),
        working_dir: s.workdir.clone(),
        tty: s.tty,
        user: s.user.clone(),
        stdin: (!s.interactive).then(String::new),
    }
}

async fn start_exec(c: &Client, box_id: &str, body: ExecRequest) -> Result<String> {
    Ok(api::start_exec(c, box_id, &body).await?)
}

/// `run --url`: create the box (with COMMAND as its command), start it, run its default
/// command (`default_command`: the entrypoint and command, as locally) and stream it; in
/// the foreground the box is stopped afterwards (and removed with `--rm`).
pub(crate) async fn run(
    c: &Client,
    exec: ExecArgs,
    create: CreateArgs,
    detach: bool,
    image: String,
    command: Vec<String>,
) -> Result<i32> {
    let settings = crate::run::run_settings(&exec, detach)?;
    // The box's default command: the image's entrypoint (or --entrypoint) and COMMAND
    // (or the image's), which the box records at creation, as locally.
    let exec_body = exec_request(&[], &settings);
    let id = tokio::select! {
        r = create_box_as(c, &create, &image, &command, settings.user.as_deref()) => r?,
        code = interrupted() => return Ok(code),
    };
    let discard = || async {
        if let Err(e) = api::remove(c, &id, true).await {
            tracing::warn!(box_id = %id, error = %e, "removing the box after a failed run");
        }
    };
    if detach {
        let started = async {
            api::start(c, &id).await?;
            match start_exec(c, &id, exec_body).await {
                Ok(_) => Ok(()),
                // An image with no default command runs idle, as locally.
                Err(e) if no_default_command(&e) => Ok(()),
                Err(e) => Err(e),
            }
        };
        let outcome = tokio::select! {
            r = started => r,
            code = interrupted() => Err(anyhow::anyhow!("interrupted (exit {code})")),
        };
        if let Err(e) = outcome {
            discard().await;
            return Err(e);
        }
        println!("{id}");
        return Ok(0);
    }
    let work = async {
        api::start(c, &id).await?;
        let exec_id = start_exec(c, &id, exec_body).await?;
        stream(
            c,
            &id,
            &exec_id,
            Streaming {
                stdin: settings.interactive,
                tty: settings.tty,
                forward_signals: false,
            },
        )
        .await
    };
    let outcome = tokio::select! {
        r = work => r,
        code = interrupted() => {
            tracing::info!(box_id = %id, code, "interrupted; cleaning up");
            Ok(code)
        }
    };
    let stopped = api::stop(c, &id, crate::run::STOP_TIMEOUT.as_secs()).await;
    // A --rm box removes itself once stopped; removing it here covers a stop that
    // failed, and finding it gone is what was wanted.
    let removed = if create.rm {
        match api::remove(c, &id, true).await {
            Err(RemoteError::Api { status: 404, .. }) => Ok(()),
            other => other,
        }
    } else {
        Ok(())
    };
    let code = outcome?;
    stopped?;
    removed?;
    Ok(code)
}

/// Whether starting an execution failed because the box's image has no default command.
fn no_default_command(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<RemoteError>(),
        Some(RemoteError::Api { code, message, .. })
            if code == "invalid_argument" && message.contains("no default command")
    )
}

/// `exec --url`.
pub(crate) async fn exec(
    c: &Client,
    exec: ExecArgs,
    detach: bool,
    id: &str,
    command: Vec<String>,
) -> Result<i32> {
    if !detach {
        check_tty(&exec)?;
    }
    let settings = ExecSettings::parse(&exec)?;
    if command.is_empty() {
        bail!("no command to run");
    }
    let body = exec_request(&command, &settings);
    let exec_id = start_exec(c, id, body).await?;
    if detach {
        println!("{exec_id}");
        return Ok(0);
    }
    stream(
        c,
        id,
        &exec_id,
        Streaming {
            stdin: settings.interactive,
            tty: settings.tty,
            forward_signals: true,
        },
    )
    .await
}

/// `attach --url BOX EXEC_ID`: the rest of an execution's output, and its exit code.
pub(crate) async fn attach(c: &Client, id: &str, exec_id: &str) -> Result<i32> {
    stream(
        c,
        id,
        exec_id,
        Streaming {
            stdin: false,
            tty: false,
            forward_signals: true,
        },
    )
    .await
}

#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// Forward our stdin (`-i`).
    stdin: bool,
    /// The command has a terminal: raw mode here with `-i`, window sizes passed on.
    tty: bool,
    /// Pass SIGINT, SIGTERM and SIGHUP on to the command; a second one stops waiting
    /// (the command keeps running in the box).
    forward_signals: bool,
}

#[derive(Deserialize)]
struct ServerText {
    #[serde(rename = "type")]
    kind: String,
    exit_code: Option<i64>,
}

/// Attach to an execution and stream it to our stdout and stderr byte for byte; return
/// its exit code.
async fn stream(c: &Client, box_id: &str, exec_id: &str, how: Streaming) -> Result<i32> {
    let b = segment("box", box_id)?;
    let eid = segment("execution", exec_id)?;
    // Made once, before the loop: a signal that arrives while an output frame is being
    // written waits in the stream instead of being missed.
    let mut interrupts = crate::run::Interrupts::new()?;
    let ws = c
        .websocket(
            &format!("attaching to execution {eid}"),
            &["boxes", b, "executions", eid, "attach"],
        )
        .await?;
    let _raw = if how.tty && how.stdin && term::is_tty(0) {
        Some(
            term::RawMode::enable()
                .map_err(|e| anyhow::anyhow!("putting the terminal in raw mode: {e}"))?,
        )
    } else {
        None
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(8);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    if how.tty
        && let Some((rows, cols)) = term::size()
    {
        let _ = tx.send(resize_message(rows, cols)).await;
    }
    let stdin_task = how.stdin.then(|| {
        let mut sink = WsStdin(tx.clone());
        tokio::spawn(async move { crate::run::forward_stdin(&mut sink).await })
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut exit: Option<i64> = None;
    let mut forwarded = false;
    let result = loop {
        tokio::select! {
            msg = source.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break Ok(()),
                Some(Err(e)) => {
                    break Err(RemoteError::WebSocket {
                        what: format!("streaming execution {eid}"),
                        url: c.ep.shown(),
                        source: Box::new(e),
                    }.into());
                }
                Some(Ok(Message::Binary(data))) => {
                    let w = match data.first() {
                        Some(1) => out.write_all(&data[1..]).await.and(out.flush().await),
                        Some(2) => err.write_all(&data[1..]).await.and(err.flush().await),
                        _ => {
                            tracing::debug!("ignoring a frame on an unknown channel");
                            Ok(())
                        }
                    };
                    if let Err(e) = w {
                        break Err(anyhow::anyhow!("writing the command's output: {e}"));
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(m) = serde_json::from_str::<ServerText>(&t)
                        && m.kind == "exit"
                    {
                        exit = m.exit_code.or(Some(-1));
                    }
                }
                Some(Ok(_)) => {}
            },
            code = interrupts.recv(), if how.forward_signals => {
                if forwarded {
                    tracing::info!(exec_id = eid, "interrupted twice; the execution keeps running in the box");
                    break Err(Interrupted(code).into());
                }
                forwarded = true;
                let sig = serde_json::json!({"type": "signal", "sig": code - 128}).to_string();
                let _ = tx.send(Message::Text(sig.into())).await;
            }
            _ = winch.recv(), if how.tty => {
                if let Some((rows, cols)) = term::size() {
                    let _ = tx.send(resize_message(rows, cols)).await;
                }
            }
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    drop(tx);
    writer.abort();
    match result {
        Ok(()) => {}
        Err(e) => {
            return match e.downcast::<Interrupted>() {
                Ok(Interrupted(code)) => Ok(code),
                Err(e) => Err(e),
            };
        }
    }
    match exit {
        Some(code) if (0..=255).contains(&code) => Ok(i32::try_from(code).unwrap_or(255)),
        Some(code) => {
            bail!("execution {eid} ended without an exit status (the server said {code})")
        }
        None => bail!(
            "the connection to the server closed before execution {eid} reported its exit status"
        ),
    }
}

/// Stdin over the attach WebSocket: binary frames, then `stdin_eof`.
struct WsStdin(tokio::sync::mpsc::Sender<Message>);

impl crate::run::StdinSink for WsStdin {
    async fn send(&mut self, chunk: &[u8]) -> bool {
        self.0
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_ok()
    }

    async fn close(&mut self) {
        let _ = self
            .0
            .send(Message::Text(r#"{"type":"stdin_eof"}"#.into()))
            .await;
    }
}

/// A second interrupt: stop waiting with this code.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted(i32);

fn resize_message(rows: u16, cols: u16) -> Message {
    Message::Text(
        serde_json::json!({"type": "resize", "cols": cols, "rows": rows})
            .to_string()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> crate::args::Command {
        let mut all = vec!["boxlite"];
        all.extend_from_slice(args);
        crate::args::Cli::parse_from(all).command
    }

    #[test]
    fn create_flags_map_to_the_request_and_unsupported_ones_are_refused() {
        let crate::args::Command::Create { create, image } = parse(&[
            "create",
            "--name",
            "web",
            "--cpus",
            "1",
            "--memory",
            "256",
            "-v",
            "data:/data:ro",
            "--network",
            "none",
            "--disk-size",
            "2G",
            "img",
        ]) else {
            panic!("create")
        };
        let body = create_request(&create, &image, &[], Some("1000")).unwrap();
        assert_eq!(
            (
                body.image.as_deref(),
                body.cpus,
                body.memory_mib,
                body.name.as_deref(),
                body.disk_size_gb,
                body.user.as_deref(),
            ),
            (
                Some("img"),
                Some(1),
                Some(256),
                Some("web"),
                Some(2),
                Some("1000")
            )
        );
        let v = &body.volumes[0];
        assert_eq!(
            (
                v.managed_volume.as_deref(),
                v.guest_path.as_str(),
                v.read_only,
                v.host_path.is_none()
            ),
            (Some("data"), "/data", true, true)
        );
        let net = body.network.as_ref().unwrap();
        assert_eq!(net.mode, "disabled");
        // What the server then makes of it: the same options the local CLI would use.
        let local = create.options(&image, &[]).unwrap();
        let served = body.options().unwrap();
        assert_eq!(
            (
                served.cpus,
                served.memory_mib,
                served.disk_size_mib,
                served.name
            ),
            (
                local.cpus,
                local.memory_mib,
                local.disk_size_mib,
                local.name
            )
        );
        // --rm and --deny-net reach the server.
        let crate::args::Command::Create { create, image } =
            parse(&["create", "--rm", "--deny-net", "10.0.0.0/8", "img"])
        else {
            panic!("create")
        };
        let body = create_request(&create, &image, &[], None).unwrap();
        assert!(body.auto_remove);
        assert_eq!(body.network.unwrap().deny_net, ["10.0.0.0/8"]);
        for flags in [
            &["-p", "8080:80"][..],
            &["-v", "/anon"],
            &["--add-host", "db:10.0.0.2"],
            &["--disk-size", "1500M"],
            &["--health-interval", "0"],
        ] {
            let mut args = vec!["create"];
            args.extend_from_slice(flags);
            args.push("img");
            let crate::args::Command::Create { create, image } = parse(&args) else {
                panic!("create")
            };
            let e = create_request(&create, &image, &[], None).unwrap_err();
            assert!(
                e.to_string().contains("not available with --url"),
                "{flags:?}: {e}"
            );
        }
    }

    #[test]
    fn a_secret_goes_to_the_server_as_the_value_of_its_variable_here() {
        let crate::args::Command::Create { create, image } = parse(&[
            "create",
            "--secret",
            "K=PATH@a.test",
            "--secret-body",
            "K",
            "img",
        ]) else {
            panic!("create")
        };
        let unset = parse(&[
            "create",
            "--secret",
            "K=BOXLITE_TEST_NEVER_SET_91C2@a.test",
            "img",
        ]);

        let body = create_request(&create, &image, &[], None).unwrap();

        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(
            wire["secrets"],
            serde_json::json!([{"name": "K", "value": std::env::var("PATH").unwrap(),
                "hosts": ["a.test"], "body": true}])
        );
        let crate::args::Command::Create { create, image } = unset else {
            panic!("create")
        };
        let e = create_request(&create, &image, &[], None).unwrap_err();
        assert!(
            e.to_string()
                .contains("environment variable BOXLITE_TEST_NEVER_SET_91C2 is not set"),
            "{e}"
        );
    }

    #[test]
    fn exec_requests_close_stdin_unless_interactive() {
        let crate::args::Command::Exec { exec, command, .. } = parse(&[
            "exec",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--timeout",
            "2.5",
            "b",
            "sh",
            "-c",
            "x",
        ]) else {
            panic!("exec")
        };
        let s = ExecSettings::parse(&exec).unwrap();
        assert_eq!(
            serde_json::to_value(exec_request(&command, &s)).unwrap(),
            serde_json::json!({
                "command": "sh", "args": ["-c", "x"], "env": {"A": "1"}, "tty": false,
                "working_dir": "/tmp", "timeout_seconds": 2.5, "stdin": "",
            })
        );
        let crate::args::Command::Exec { exec, command, .. } = parse(&["exec", "-i", "b", "cat"])
        else {
            panic!("exec")
        };
        let s = ExecSettings::parse(&exec).unwrap();
        assert!(exec_request(&command, &s).stdin.is_none());
        // No command: the box's default command.
        let r = exec_request(&[], &s);
        assert!(r.default_command && r.command.is_empty());
    }
}
