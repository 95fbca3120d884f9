//! Commands: `BoxCommand` is a builder like `std::process::Command`, checked before it is
//! sent; `LiteBox::exec` runs one with the image's defaults, `attach` picks up one
//! started earlier. The running process is an [`Execution`] (`execution.rs`).

use super::{BoxError, BoxState, Execution, LiteBox};
use crate::model::RunConfig;
use crate::portal::{ExecSpec, PortalError};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    CommandNotFound(String),
    #[error(
        "no execution with id {0:?} in this box (finished executions are kept for a while, the oldest forgotten first)"
    )]
    NoSuchExecution(String),
    #[error("{0}")]
    NotExecutable(String),
    #[error("{0}")]
    InvalidCommand(String),
    #[error("execution {id}: {what}")]
    Stream {
        id: String,
        what: String,
        #[source]
        source: PortalError,
    },
    #[error(
        "execution {id}: the box stopped while the command was running, or its shim went away ({detail}){hint}; if the box still runs, `boxlite attach` picks the execution up by its id, and `boxlite logs` shows the console"
    )]
    BoxStopped {
        id: String,
        detail: String,
        hint: String,
    },
    #[error("execution {id} has no terminal; start it with a TTY to resize one")]
    NoTty { id: String },
    #[error("execution {id}: stdin is closed")]
    StdinClosed { id: String },
    #[error("execution {id}: writing its output")]
    Output {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] PortalError),
}

impl ExecError {
    /// Map the agent's answer to `Exec` onto the caller's vocabulary.
    pub(crate) fn from_exec_rpc(e: PortalError) -> Self {
        match (e.code(), &e) {
            (Some(tonic::Code::NotFound), PortalError::Rpc { message, .. }) => {
                ExecError::CommandNotFound(message.clone())
            }
            (Some(tonic::Code::PermissionDenied), PortalError::Rpc { message, .. }) => {
                ExecError::NotExecutable(message.clone())
            }
            (Some(tonic::Code::InvalidArgument), PortalError::Rpc { message, .. }) => {
                ExecError::InvalidCommand(message.clone())
            }
            _ => ExecError::Agent(e),
        }
    }
}

/// A command to run in a box.
#[derive(Debug, Clone, Default)]
pub struct BoxCommand {
    pub(crate) spec: ExecSpec,
}

impl BoxCommand {
    pub fn new(program: impl Into<String>) -> Self {
        BoxCommand {
            spec: ExecSpec {
                program: program.into(),
                ..Default::default()
            },
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable; later settings of the same key win.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.spec.env.retain(|(k, _)| *k != key);
        self.spec.env.push((key, value.into()));
        self
    }

    /// Working directory inside the box; absolute.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.spec.working_dir = Some(dir.into());
        self
    }

    /// Give the process a stdin pipe (otherwise it reads `/dev/null`).
    pub fn stdin(mut self, piped: bool) -> Self {
        self.spec.stdin = piped;
        self
    }

    /// End the process group after `limit`; the result is then
    /// [`ExitStatus::TimedOut`](crate::ExitStatus::TimedOut). Enforced in the guest, so it
    /// holds even if this process goes away. A zero duration means no limit.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.spec.timeout = (!limit.is_zero()).then_some(limit);
        self
    }

    /// Run as `name|uid[:group|gid]`, resolved against the image's `/etc/passwd` and
    /// `/etc/group` with `docker exec --user` rules (supplementary groups included). A
    /// blank value means no override: the image's user applies.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        let user = user.into();
        self.spec.user = (!user.trim().is_empty()).then_some(user);
        self
    }

    /// Run on a pseudo-terminal of `rows` x `cols` (`boxlite exec -t`): the process
    /// gets a controlling terminal, output arrives on stdout only, and
    /// [`Execution::resize_tty`] changes the size later.
    pub fn tty(mut self, rows: u16, cols: u16) -> Self {
        self.spec.tty = Some((rows.max(1), cols.max(1)));
        self
    }

    pub fn program(&self) -> &str {
        &self.spec.program
    }

    /// Check the command before it is sent: a program, no NUL bytes (they cannot reach
    /// `execve`), environment names without `=`, an absolute working directory.
    pub fn validate(&self) -> Result<(), ExecError> {
        let s = &self.spec;
        let bad = |m: String| Err(ExecError::InvalidCommand(m));
        if s.program.is_empty() {
            return bad("the program is empty".into());
        }
        for a in std::iter::once(&s.program).chain(s.args.iter()) {
            if a.contains('\0') {
                return bad(format!("argument {a:?} contains a NUL byte"));
            }
        }
        for (k, v) in &s.env {
            Self::check_env(k, v)?;
        }
        if let Some(w) = &s.working_dir {
            Self::check_working_dir(w)?;
        }
        Ok(())
    }

    /// The check [`BoxCommand::validate`] makes of one environment variable, for a
    /// frontend that wants to refuse bad input before it creates anything.
    pub fn check_env(key: &str, value: &str) -> Result<(), ExecError> {
        let bad = |m: String| Err(ExecError::InvalidCommand(m));
        if key.is_empty() {
            return bad("an environment variable name is empty".into());
        }
        if key.contains('=') || key.contains('\0') {
            return bad(format!(
                "environment variable name {key:?} contains '=' or a NUL byte"
            ));
        }
        if value.contains('\0') {
            return bad(format!("the value of {key} contains a NUL byte"));
        }
        Ok(())
    }

    /// The check [`BoxCommand::validate`] makes of a working directory.
    pub fn check_working_dir(dir: &str) -> Result<(), ExecError> {
        if !dir.starts_with('/') || dir.contains('\0') {
            return Err(ExecError::InvalidCommand(format!(
                "working directory {dir:?} must be an absolute path without NUL bytes"
            )));
        }
        Ok(())
    }
}

/// Fill in what the command leaves unset from the image's config: its Env entries
/// (the command's own variables win), WorkingDir and User.
pub(crate) fn apply_image_defaults(spec: &mut ExecSpec, run: &RunConfig) {
    let mut env: Vec<(String, String)> = Vec::new();
    for kv in &run.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() || spec.env.iter().any(|(sk, _)| sk == k) {
            continue;
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env.append(&mut spec.env);
    spec.env = env;
    if spec.working_dir.is_none() && !run.working_dir.is_empty() {
        spec.working_dir = Some(run.working_dir.clone());
    }
    if spec.user.is_none() && !run.user.is_empty() {
        spec.user = Some(run.user.clone());
    }
}

impl LiteBox {
    /// Run a command in the box, starting the box if it is not running.
    pub async fn exec(&self, cmd: BoxCommand) -> Result<Execution, crate::Error> {
        cmd.validate()?;
        let config = self.config().await?;
        let (client, seen) = self.client_seen().await?;
        // The image's Env, WorkingDir and User, unless the command sets its own. PATH and
        // HOME when nobody sets them are the agent's business: it knows the image.
        let mut spec = cmd.spec;
        apply_image_defaults(&mut spec, &config.run);
        spec.capabilities = Some(config.capabilities.mask());
        let (client, id, seen) = match client.exec(&spec).await {
            Ok(id) => (client, id, seen),
            // The box paused itself between our look at it and the request (and may
            // have been resumed by another caller since): asked again.
            Err(e) => match self.again_after_auto_pause(&e, seen).await? {
                Some((client, now)) => {
                    let id = client.exec(&spec).await.map_err(ExecError::from_exec_rpc)?;
                    (client, id, now)
                }
                None => return Err(ExecError::from_exec_rpc(e).into()),
            },
        };
        Ok(Execution::new(
            client,
            id,
            spec.stdin,
            Some(self.home().box_paths(&self.id).console_log()),
            Some(super::execution::Resumer::new(self.clone(), seen)),
        ))
    }

    /// The image's default command with `args` in place of its `Cmd` when any are given:
    /// `Entrypoint + (args or Cmd)`, as `docker run IMAGE [ARGS]` runs, with the box's
    /// entrypoint and command overrides applied.
    pub async fn image_command(&self, args: &[String]) -> Result<BoxCommand, crate::Error> {
        let config = self.config().await?;
        let argv = config.run.argv(args);
        match argv.split_first() {
            Some((program, rest)) if !program.is_empty() => {
                Ok(BoxCommand::new(program.clone()).args(rest.iter().cloned()))
            }
            _ => Err(BoxError::InvalidOption(format!(
                "image {} has no default command; give one",
                config.image
            ))
            .into()),
        }
    }

    /// Attach to an execution started earlier, from this process or another, by id:
    /// its remaining output (what it wrote while nobody read waits in the agent, see
    /// `docs/architecture.md`) and its exit status. The box must be running; attaching
    /// never starts it.
    pub async fn attach(&self, exec_id: &str) -> Result<Execution, crate::Error> {
        let client = self.running_client().await?;
        // The box's auto-pause count now (0 when it never paused itself).
        let seen = self.auto_paused_since(0).await.unwrap_or(0);
        client
            .signal(exec_id, 0, false)
            .await
            .map_err(|e| match e.code() {
                Some(tonic::Code::NotFound) => ExecError::NoSuchExecution(exec_id.to_string()),
                _ => ExecError::Agent(e),
            })?;
        Ok(Execution::attached(
            client,
            exec_id.to_string(),
            Some(self.home().box_paths(&self.id).console_log()),
            Some(super::execution::Resumer::new(self.clone(), seen)),
        ))
    }

    /// Ask the agent whether it is alive, within `timeout` (waiting for the box's lock
    /// included), over a fresh connection. Does not start the box: a box that is not
    /// running, or whose VM is gone, is [`BoxError::NotRunning`].
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), crate::Error> {
        let t0 = std::time::Instant::now();
        let locked = tokio::time::timeout(timeout, self.lock(crate::util::lock::LockMode::Shared));
        let row = match locked.await {
            Ok(l) => l?.row,
            Err(_) => {
                let socket = crate::layout::SocketPaths::for_box(&self.id).agent();
                return Err(PortalError::Timeout {
                    target: crate::portal::target(&self.id, &socket),
                    after: timeout,
                }
                .into());
            }
        };
        let st = &row.status;
        if st.state() != BoxState::Running || !st.vmm_alive() {
            return Err(BoxError::NotRunning {
                id: self.id.clone(),
                state: st.state(),
            }
            .into());
        }
        let left = timeout.saturating_sub(t0.elapsed());
        let socket = crate::layout::SocketPaths::for_box(&self.id).agent();
        let ping = async {
            let c = super::connect_agent(&self.id, &row).await?;
            c.ping().await.map(|_| ())
        };
        match tokio::time::timeout(left, ping).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(PortalError::Timeout {
                target: crate::portal::target(&self.id, &socket),
                after: timeout,
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunConfig {
        RunConfig {
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "LANG=C.UTF-8".into(),
                "EMPTY=".into(),
                "NOEQUALS".into(),
            ],
            entrypoint: Some(vec!["/entry".into(), "-x".into()]),
            cmd: Some(vec!["serve".into()]),
            working_dir: "/srv".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn image_env_workdir_and_user_fill_what_the_command_leaves_unset() {
        let mut spec = BoxCommand::new("id").env("LANG", "fr_FR").spec;
        apply_image_defaults(&mut spec, &run());
        assert_eq!(
            spec.env,
            vec![
                ("PATH".to_string(), "/opt/bin:/bin".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("NOEQUALS".to_string(), String::new()),
                ("LANG".to_string(), "fr_FR".to_string()),
            ]
        );
        assert_eq!(spec.working_dir.as_deref(), Some("/srv"));
        assert_eq!(spec.user.as_deref(), Some("app"));

        let mut own = BoxCommand::new("id").user("root").working_dir("/").spec;
        apply_image_defaults(&mut own, &run());
        assert_eq!(own.user.as_deref(), Some("root"));
        assert_eq!(own.working_dir.as_deref(), Some("/"));
    }

    #[test]
    fn a_blank_user_is_no_override_so_the_image_user_applies() {
        for blank in ["", "  "] {
            let mut spec = BoxCommand::new("id").user(blank).spec;
            apply_image_defaults(&mut spec, &run());
            assert_eq!(spec.user.as_deref(), Some("app"), "{blank:?}");
        }
    }

    #[test]
    fn commands_with_nul_bytes_or_bad_env_names_are_refused_naming_them() {
        for (cmd, want) in [
            (BoxCommand::new(""), "empty"),
            (BoxCommand::new("a\0b"), "NUL"),
            (BoxCommand::new("sh").arg("x\0"), "NUL"),
            (BoxCommand::new("sh").env("A=B", "1"), "\"A=B\""),
            (BoxCommand::new("sh").env("", "1"), "empty"),
            (BoxCommand::new("sh").env("K", "v\0"), "NUL"),
            (BoxCommand::new("sh").working_dir("relative"), "absolute"),
        ] {
            let err = cmd.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(BoxCommand::new("sh").env("K", "v=w").validate().is_ok());
    }
}
