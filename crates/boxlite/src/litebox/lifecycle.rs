//! Starting, stopping, restarting and removing a box, and its monitor.
//!
//! Each slow step writes its state first (`Starting`, `Stopping`), so a process that dies
//! in the middle leaves a row that says what was interrupted, and every process it
//! started was recorded in the row before it could run ([`crate::vm`]). Whatever the way
//! a box stops (asked to, failed, found dead), its processes end through the one kill
//! path ([`super::reconcile::settle_blocking`]).

use std::time::{Duration, Instant};

use super::reconcile::{remove_blocking, settle_blocking};
use super::{BoxError, LiteBox, Locked, now_secs};
use crate::context::Home;
use crate::layout::SocketPaths;
use crate::model::{BoxRow, BoxState, BoxStatus, Health};
use crate::net::HelperSecrets;
use crate::util::spawn::spawn_gated;
use crate::util::{blocking, ms_since};
use crate::vm::{BootGuard, DiskFormat, ProcessLedger, VmSpec};

/// Records a box's processes in its row.
struct RowLedger<'a> {
    home: &'a Home,
    id: &'a str,
}

impl ProcessLedger for RowLedger<'_> {
    fn record(
        &self,
        status: &BoxStatus,
    ) -> impl std::future::Future<Output = Result<(), crate::Error>> + Send {
        super::save_status(self.home, self.id, status)
    }
}

/// How long a box started by a runtime that is being shut down gets to stop.
const SHUTDOWN_STOP: Duration = Duration::from_secs(10);

impl LiteBox {
    /// Boot the box and wait until its agent is ready. Starting a running box does
    /// nothing.
    pub async fn start(&self) -> Result<(), crate::Error> {
        self.ctx.check_open()?;
        let mut l = self.lock_reconciled().await?;
        if l.row.status.state() == BoxState::Running {
            return Ok(());
        }
        self.start_locked(&mut l).await
    }

    pub(super) async fn start_locked(&self, l: &mut Locked) -> Result<(), crate::Error> {
        self.start_from(l, None).await
    }

    /// Start the box: from `fork` when given (a clone's first start), from its saved
    /// state when it is paused, from its image's template when it has never run and one
    /// fits (warm start), and by booting the kernel otherwise. A warm start that fails
    /// discards the template and boots instead.
    pub(super) async fn start_from(
        &self,
        l: &mut Locked,
        fork: Option<crate::litebox::snapshot::Saved>,
    ) -> Result<(), crate::Error> {
        let first_boot = l.row.status.state() == BoxState::Configured;
        // A paused box resumes from its saved state, checked before anything changes: a
        // state this host cannot load leaves the box paused.
        let saved = match (l.row.status.state(), fork) {
            (BoxState::Paused, _) => Some(self.prepare_resume().await?),
            (_, Some(f)) => Some(f),
            (BoxState::Configured, None) => self.warm_template(&l.row).await,
            _ => None,
        };
        let template = saved.as_ref().and_then(|s| match &s.kind {
            crate::model::StartKind::Template { key } => Some((key.clone(), s.dir.clone())),
            _ => None,
        });
        if let Some((key, dir)) = template {
            let warm = self.start_attempt(l, saved, true, false).await;
            match warm {
                Err(e) if l.row.status.state() == BoxState::Failed => {
                    tracing::warn!(box_id = %self.id, template = %key, error = %crate::util::error_chain(&e), "warm start failed; removing the template and booting");
                    super::template::discard(&dir).await;
                    self.unfork_disk().await?;
                    return self.cold_start(l, true).await;
                }
                other => return other,
            }
        }
        if saved.is_none() {
            return self.cold_start(l, first_boot).await;
        }
        self.start_attempt(l, saved, false, first_boot).await
    }

    /// Boot the kernel; a guest that stalls before its agent runs
    /// ([`crate::vm::BootError::Stalled`], a rare hang of the guest kernel's early boot
    /// under TCG) is stopped and booted once more.
    async fn cold_start(&self, l: &mut Locked, first_boot: bool) -> Result<(), crate::Error> {
        let Err(e) = self.start_attempt(l, None, true, first_boot).await else {
            return Ok(());
        };
        if l.row.status.state() != BoxState::Failed {
            return Err(e);
        }
        if let crate::Error::Box(BoxError::BootFailed { cause, .. }) = &e
            && matches!(**cause, crate::vm::BootError::Stalled { .. })
        {
            tracing::warn!(box_id = %self.id, error = %crate::util::error_chain(&e), "the guest stalled during its boot; booting it again");
            // The stalled guest never ran its agent, so never mounted its disk; the
            // image's template is left to a later box all the same.
            return self.start_attempt(l, None, false, false).await;
        }
        // The attempt ran as retryable: a `--rm` box goes now, as after any failed start.
        self.remove_failed(l).await;
        Err(e)
    }

    /// One start, from `saved` or by booting. `retryable`: a failure leaves the box
    /// Failed without removing it (the caller tries again). `first_boot`: the disk is
    /// as created, so a cold boot may leave the image's template.
    async fn start_attempt(
        &self,
        l: &mut Locked,
        saved: Option<crate::litebox::snapshot::Saved>,
        retryable: bool,
        first_boot: bool,
    ) -> Result<(), crate::Error> {
        let resume = saved;
        // Read before anything changes: a secret whose source cannot be read stops the
        // start here, so a box never runs with a secret it cannot substitute.
        let secrets = self.helper_secrets(&l.row).await?;
        // Written before anything is spawned: a start that dies from here on is seen as
        // interrupted.
        self.transition(&mut l.row, BoxState::Starting).await?;
        let t0 = Instant::now();
        let sockets = SocketPaths::for_box(&self.id);
        let home = self.ctx.layout().home().to_path_buf();
        let made = {
            let s = sockets.clone();
            blocking::run(move || s.create(&home)).await
        };
        let restore = match (&resume, made) {
            (Some(r), Ok(())) => r.stage(&self.id, &sockets).await.map(Some),
            (None, Ok(())) => Ok(None),
            (_, Err(e)) => Err(e.into()),
        };
        // A first cold boot leaves a template for later boxes of its image.
        let take_template = if resume.is_none() && restore.is_ok() {
            self.template_to_take(&l.row, first_boot).await
        } else {
            None
        };
        let mut guard = BootGuard::new(sockets);
        let booted = match restore {
            Ok(restore) => {
                let row = &mut l.row;
                let paths = self.home().box_paths(&self.id);
                let spec = VmSpec {
                    id: &self.id,
                    root_disk: paths.disk(),
                    root_format: DiskFormat::Qcow2,
                    paths,
                    memory_mib: row.config.memory_mib,
                    cpus: row.config.cpus,
                    volumes: &row.config.volumes,
                    cmdline: Vec::new(),
                    network: Some(&row.config.network),
                    secrets,
                    builder: false,
                    restore,
                    template: take_template.as_ref().map(|t| t.hook()),
                };
                let ledger = RowLedger {
                    home: self.home(),
                    id: &self.id,
                };
                crate::vm::launch(&self.ctx, &spec, &mut row.status, &mut guard, &ledger)
                    .await
                    .map_err(|cause| self.boot_error(cause, row.status.vmm.is_some()))
            }
            Err(e) => Err(e),
        };
        // The template is saved (or not) by now: its lock goes.
        drop(take_template);
        // The box only counts as started once its Running state is saved; until then
        // the guard still owns the processes.
        let result = match booted {
            Ok(client) => {
                *self.client.lock().await = Some(client);
                let st = &mut l.row.status;
                st.last_error = None;
                st.started_at = Some(now_secs());
                st.health = Health::default();
                st.started_from = Some(
                    resume
                        .as_ref()
                        .map_or(crate::model::StartKind::Cold, |r| r.kind.clone()),
                );
                st.auto_paused = false;
                // What a pause of this VM records; the shim's auto-pause cannot ask the
                // engine or read the assets itself.
                st.build = crate::litebox::snapshot::current_vm_build(&self.ctx)
                    .await
                    .ok();
                self.transition(&mut l.row, BoxState::Running).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let survivors = guard.cleanup().await;
            *self.client.lock().await = None;
            let st = &mut l.row.status;
            st.keep_processes(&survivors);
            st.last_error = Some(crate::util::error_chain(&e));
            // A resume that failed before the guest ran leaves its saved state whole:
            // the box is still paused.
            if let Some(r) = &resume
                && r.own
                && crate::litebox::snapshot::saved_state_complete(&r.dir)
            {
                if let Err(te) = self.transition(&mut l.row, BoxState::Paused).await {
                    tracing::warn!(box_id = %self.id, error = %te, "recording a failed resume");
                }
                return Err(e);
            }
            st.stopped_at = Some(now_secs());
            if let Err(te) = self.transition(&mut l.row, BoxState::Failed).await {
                tracing::warn!(box_id = %self.id, error = %te, "recording a failed start");
            }
            if !retryable {
                self.remove_failed(l).await;
            }
            return Err(e);
        }
        guard.disarm();
        if let Some(r) = resume {
            if r.own {
                // Consumed (its meta.json went before the guest ran): the rest goes now.
                blocking::run(move || {
                    let _ = std::fs::remove_dir_all(&r.dir);
                })
                .await;
            } else {
                self.forget_fresh_disk().await;
            }
        }
        tracing::info!(box_id = %self.id, ms = ms_since(t0), "box started");
        if !self.ctx.note_started(&self.id) {
            // The runtime was shut down while this box booted: it goes too.
            self.stop_locked(l, SHUTDOWN_STOP).await?;
            return Err(crate::Error::ShutDown);
        }
        Ok(())
    }

    /// What this start tells the network helper about the box's secrets: each value read
    /// from its source now (an environment variable of this process, a file, the box's
    /// own stored file), and the extra upstream roots of the runtime's config file.
    async fn helper_secrets(&self, row: &BoxRow) -> Result<HelperSecrets, crate::Error> {
        if row.config.secrets.is_empty() || !row.config.network.enabled() {
            return Ok(HelperSecrets::default());
        }
        let paths = self.home().box_paths(&self.id);
        let records = row.config.secrets.clone();
        let (config, required) = self.ctx.config_file.clone();
        blocking::run(move || {
            let secrets =
                crate::net::secrets::resolve(&paths, &records).map_err(BoxError::Secret)?;
            let upstream_roots = crate::config::upstream_roots(&config, required)?;
            Ok(HelperSecrets {
                secrets,
                upstream_roots,
            })
        })
        .await
    }

    /// The error of a failed boot. What failed before anything ran (assets, binaries,
    /// the socket directory, the volume gate) keeps its own kind, as a check would; a
    /// VM that did not come up is `BootFailed`, with the console when QEMU had started.
    /// Remove a box created with `auto_remove` whose start failed.
    async fn remove_failed(&self, l: &mut Locked) {
        if !l.row.config.auto_remove {
            return;
        }
        let (home, row) = (self.home().clone(), l.row.clone());
        match blocking::run(move || remove_blocking(&home, &row)).await {
            Ok(()) => l.lock.remove_file(),
            Err(re) => {
                tracing::warn!(box_id = %self.id, error = %crate::util::error_chain(&re), "removing a --rm box whose start failed")
            }
        }
    }

    fn boot_error(&self, cause: crate::vm::BootError, vmm_started: bool) -> crate::Error {
        use crate::vm::BootError as B;
        match cause {
            B::Assets(e) => e.into(),
            B::Binary(e) => e.into(),
            B::SocketDir(e) => e.into(),
            B::Volume(e) => e.into(),
            cause => BoxError::BootFailed {
                id: self.id.clone(),
                console: if vmm_started {
                    crate::util::fsutil::tail_file(
                        &self.home().box_paths(&self.id).console_log(),
                        3000,
                    )
                } else {
                    String::new()
                },
                cause: Box::new(cause),
            }
            .into(),
        }
    }

    /// Shut the guest down cleanly (sync, power off), waiting up to `timeout`, then make
    /// sure the VMM and its helpers are gone. Stopping a box that is not running does
    /// nothing, except that a box created with `auto_remove` is removed once stopped,
    /// whether or not it ever ran: that is all `--rm` needs.
    pub async fn stop(&self, timeout: Duration) -> Result<(), crate::Error> {
        let mut l = self.lock_reconciled().await?;
        match l.row.status.state() {
            BoxState::Running => self.stop_locked(&mut l, timeout).await?,
            BoxState::Paused => self.discard_paused(&mut l).await?,
            _ => {}
        }
        if l.row.config.auto_remove
            && matches!(
                l.row.status.state(),
                BoxState::Configured | BoxState::Stopped | BoxState::Failed
            )
        {
            let (home, row) = (self.home().clone(), l.row.clone());
            blocking::run(move || remove_blocking(&home, &row)).await?;
            l.lock.remove_file();
        }
        Ok(())
    }

    async fn stop_locked(&self, l: &mut Locked, timeout: Duration) -> Result<(), crate::Error> {
        let row = &mut l.row;
        self.transition(row, BoxState::Stopping).await?;
        let t0 = Instant::now();
        if let Some(vmm) = row.status.vmm.filter(|p| p.is_alive()) {
            let cached = self.client.lock().await.take();
            let client = match cached {
                Some(c) => Some(c),
                None => super::connect_agent(&self.id, row).await.ok(),
            };
            let asked = match client {
                Some(c) => tokio::time::timeout(timeout, c.shutdown())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            };
            tracing::debug!(ms = ms_since(t0), asked, "shutdown asked");
            let left = timeout.saturating_sub(t0.elapsed());
            if !asked || !crate::util::kill::wait_exit(vmm, left).await {
                tracing::warn!(box_id = %self.id, "guest did not power off in time; killing the VMM");
            }
            tracing::debug!(ms = ms_since(t0), "vmm exited");
        }
        let home = self.home().clone();
        let mut r = row.clone();
        let r = blocking::run(move || {
            settle_blocking(&home, &mut r);
            r
        })
        .await;
        tracing::debug!(ms = ms_since(t0), "helpers ended");
        row.status = r.status;
        self.transition(row, BoxState::Stopped).await?;
        tracing::info!(box_id = %self.id, ms = ms_since(t0), "box stopped");
        Ok(())
    }

    /// Stop a paused box: its saved state is discarded, as a stop ends a running VM.
    pub(super) async fn discard_paused(&self, l: &mut Locked) -> Result<(), crate::Error> {
        let dir = self.home().box_paths(&self.id).paused_dir();
        // Marked consumed first, so a crash halfway never leaves a state to resume.
        let d = dir.clone();
        blocking::run(move || {
            crate::util::fsutil::remove_durably(&d.join("meta.json"))
                .and_then(|()| std::fs::remove_dir_all(&d))
                .map_err(|source| crate::Error::Io {
                    context: format!("removing {}", d.display()),
                    source,
                })
        })
        .await?;
        l.row.status.stopped_at = Some(now_secs());
        self.transition(&mut l.row, BoxState::Stopped).await
    }

    /// Stop (if running) and start again.
    pub async fn restart(&self, timeout: Duration) -> Result<(), crate::Error> {
        self.ctx.check_open()?;
        let mut l = self.lock_reconciled().await?;
        match l.row.status.state() {
            BoxState::Running => self.stop_locked(&mut l, timeout).await?,
            BoxState::Paused => self.discard_paused(&mut l).await?,
            _ => {}
        }
        *self.client.lock().await = None;
        self.start_locked(&mut l).await
    }

    /// Remove the box: its processes (only when forced, if it runs), disk, logs, sockets
    /// and row.
    pub async fn remove(&self, force: bool) -> Result<(), crate::Error> {
        let l = self.lock_reconciled().await?;
        let state = l.row.status.state();
        if state.is_active() && !force {
            return Err(BoxError::Busy {
                id: self.id.clone(),
                state,
            }
            .into());
        }
        *self.client.lock().await = None;
        let home = self.home().clone();
        let mut row = l.row.clone();
        blocking::run(move || {
            settle_blocking(&home, &mut row);
            remove_blocking(&home, &row)
        })
        .await?;
        l.lock.remove_file();
        self.ctx.forget_shared(&self.id);
        Ok(())
    }
}

/// Start a new shim for a running box whose shim is gone, recording it in the row (saved
/// before it runs). It reconnects to the VM's agent port and opens a new session; until it
/// runs, nobody reaches the agent, so a failure here is logged and the next command tries
/// again.
pub(crate) async fn launch_monitor(home: &Home, row: &mut BoxRow) {
    let paths = home.box_paths(&row.id);
    let cmd = match crate::vm::shim_command(home.layout.home(), &row.id, &paths, false) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(box_id = %row.id, "{}", crate::util::error_chain(&e));
            return;
        }
    };
    let id = row.id.clone();
    let ledger = RowLedger { home, id: &id };
    let started = async {
        let pending = spawn_gated(&cmd).await?;
        row.status.monitor = Some(pending.id());
        ledger.record(&row.status).await?;
        pending.release().await?;
        Ok::<_, crate::Error>(())
    };
    if let Err(e) = started.await {
        tracing::warn!(box_id = %row.id, error = %crate::util::error_chain(&e), "starting the box monitor");
    }
}
