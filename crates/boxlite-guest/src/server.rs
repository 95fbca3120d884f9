//! The gRPC service the host talks to.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use boxlite_protocol::v1::{self, agent_server::Agent};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::exec::{Chunk, ExecError, Execution, Exit, OutputSlot, Processes, Spec};

/// When the host last asked the agent for something, for the shim's auto-pause: every
/// call but Ping and Stats holds a [`Busy`](activity::Busy) while it runs (a streamed
/// answer until its stream is dropped), and the end of an execution counts too.
pub mod activity {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    static IN_PROGRESS: AtomicU32 = AtomicU32::new(0);
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);

    fn touch() {
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// A call in progress; the moment it ends is the last activity.
    #[derive(Debug)]
    pub struct Busy(());

    /// Mark a call in progress until the guard is dropped.
    pub fn busy() -> Busy {
        IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
        touch();
        Busy(())
    }

    impl Drop for Busy {
        fn drop(&mut self) {
            touch();
            IN_PROGRESS.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// An execution ended: the box's idle time starts now.
    pub fn execution_ended() {
        touch();
    }

    /// Calls in progress.
    pub fn in_progress() -> u32 {
        IN_PROGRESS.load(Ordering::SeqCst)
    }

    /// Seconds since the last activity ended (before any, since the first question:
    /// the boot's readiness ping), 0 while a call is in progress.
    pub fn idle_secs() -> f64 {
        if in_progress() > 0 {
            return 0.0;
        }
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        last.get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs_f64()
    }
}

#[derive(Debug)]
pub struct AgentService {
    pub procs: Arc<Processes>,
    pub cfg: crate::init::BootConfig,
    /// Released once the network is configured; commands wait for it (bounded).
    pub net_ready: crate::net::NetReady,
    /// Installs the box's CA when the host asks.
    pub trust: Arc<crate::trust::Installer>,
    /// Holds the workload still between Quiesce and Resume.
    pub quiescer: Arc<crate::freeze::Quiescer>,
    /// The clock, entropy and name Resume sets.
    pub identity: Arc<crate::resume::Identity>,
    /// Guest uptime when the service was built, just before it started serving.
    pub ready_uptime: f64,
}

impl From<ExecError> for Status {
    fn from(e: ExecError) -> Self {
        let msg = crate::error_chain(&e);
        match e {
            ExecError::NotFound { .. } | ExecError::NoWorkdir(_) => Status::not_found(msg),
            ExecError::NotExecutable { .. } => Status::permission_denied(msg),
            ExecError::WorkdirNotDir(_) | ExecError::Invalid(_) => Status::invalid_argument(msg),
            ExecError::NoRoot(_) | ExecError::Spawn { .. } => Status::internal(msg),
        }
    }
}

impl From<crate::trust::TrustError> for Status {
    fn from(e: crate::trust::TrustError) -> Self {
        use crate::staging::StagingError;
        use crate::trust::TrustError as T;
        let msg = crate::error_chain(&e);
        match e {
            T::PemTooLarge(_) | T::BadPem(_) => Status::invalid_argument(msg),
            T::BundleTooLarge { .. } | T::Staging(StagingError::NotRegular { .. }) => {
                Status::failed_precondition(msg)
            }
            T::ReadBundle { .. } | T::Root(_) | T::Staging(_) => Status::internal(msg),
        }
    }
}

impl From<crate::freeze::FreezeError> for Status {
    fn from(e: crate::freeze::FreezeError) -> Self {
        let msg = crate::error_chain(&e);
        match e {
            // Worth another try: nothing was left frozen.
            crate::freeze::FreezeError::NotFrozen(_) => Status::aborted(msg),
            _ => Status::internal(msg),
        }
    }
}

impl From<crate::resume::ResumeError> for Status {
    fn from(e: crate::resume::ResumeError) -> Self {
        let msg = crate::error_chain(&e);
        if e.is_invalid_request() {
            Status::invalid_argument(msg)
        } else {
            Status::internal(msg)
        }
    }
}

impl AgentService {
    fn exec(&self, id: &str) -> Result<Arc<Execution>, Status> {
        self.procs
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no execution with id {id:?}")))
    }
}

/// A reader's hold on one output pipe. Dropping it, for example because the client went
/// away, parks the receiver again so that another client can continue reading.
struct OutputStream {
    rx: Option<mpsc::Receiver<Chunk>>,
    slot: OutputSlot,
    /// A reader attached to an execution is activity.
    _busy: activity::Busy,
}

impl Stream for OutputStream {
    type Item = Result<v1::OutputChunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx
                .poll_recv(cx)
                .map(|c| c.map(|data| Ok(v1::OutputChunk { data }))),
        }
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        }
    }
}

fn to_proto_exit(e: Exit) -> v1::ExitStatus {
    match e {
        Exit::Code(c) => v1::ExitStatus {
            kind: Some(v1::exit_status::Kind::Code(c)),
            ..Default::default()
        },
        Exit::Signal {
            signal,
            core_dumped,
        } => v1::ExitStatus {
            kind: Some(v1::exit_status::Kind::Signal(signal)),
            core_dumped,
            ..Default::default()
        },
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn ping(
        &self,
        _req: Request<v1::PingRequest>,
    ) -> Result<Response<v1::PingResponse>, Status> {
        // Not activity: health checks and auto-pause's own questions never keep a box
        // awake.
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let running = self.procs.running();
        Ok(Response::new(v1::PingResponse {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: crate::exec::uptime_secs(),
            reports_activity: true,
            calls_in_progress: activity::in_progress(),
            running_executions: u32::try_from(running).unwrap_or(u32::MAX),
            idle_secs: if running > 0 {
                0.0
            } else {
                activity::idle_secs()
            },
            cpu_busy_secs: crate::stats::cpu_busy(&stat).0,
        }))
    }

    async fn exec(
        &self,
        req: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let _busy = activity::busy();
        let r = req.into_inner();
        let spec = Spec {
            program: r.program,
            args: r.args,
            env: r.env.into_iter().map(|e| (e.key, e.value)).collect(),
            working_dir: r.working_dir,
            stdin: r.stdin,
            timeout: (r.timeout_ms > 0).then(|| std::time::Duration::from_millis(r.timeout_ms)),
            user: (!r.user.is_empty()).then_some(r.user),
            tty: r.tty.then(|| {
                let dim = |v: u32, default: u16| match v {
                    0 => default,
                    v => u16::try_from(v).unwrap_or(u16::MAX),
                };
                (dim(r.tty_rows, 24), dim(r.tty_cols, 80))
            }),
            capabilities: r.capabilities.unwrap_or(boxlite_protocol::caps::DEFAULT),
        };
        // A box's first command (a download, say) must find the network configured.
        self.net_ready.wait().await;
        // Between Quiesce and Resume, no process starts (see `crate::freeze`).
        let admission = self.quiescer.admit().await;
        let procs = self.procs.clone();
        // fork+exec can block; keep it off the async workers.
        let exec = tokio::task::spawn_blocking(move || {
            let _guard = tokio::runtime::Handle::current().enter();
            let exec = procs.spawn(spec);
            drop(admission);
            exec
        })
        .await
        .map_err(|e| Status::internal(format!("spawn task failed: {e}")))??;
        Ok(Response::new(v1::ExecResponse {
            exec_id: exec.id.clone(),
            pid: exec.pid,
        }))
    }

    type ReadOutputStream = BoxStream<v1::OutputChunk>;

    async fn read_output(
        &self,
        req: Request<v1::ReadOutputRequest>,
    ) -> Result<Response<Self::ReadOutputStream>, Status> {
        let busy = activity::busy();
        let r = req.into_inner();
        let exec = self.exec(&r.exec_id)?;
        let (slot, name) = match v1::OutputStream::try_from(r.stream) {
            Ok(v1::OutputStream::Stdout) => (exec.stdout.clone(), "stdout"),
            Ok(v1::OutputStream::Stderr) => (exec.stderr.clone(), "stderr"),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown output stream {}",
                    r.stream
                )));
            }
        };
        let rx = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(rx) = rx else {
            return Err(Status::failed_precondition(format!(
                "{name} of execution {} already has a reader",
                exec.id
            )));
        };
        Ok(Response::new(Box::pin(OutputStream {
            rx: Some(rx),
            slot,
            _busy: busy,
        })))
    }

    async fn write_stdin(
        &self,
        req: Request<Streaming<v1::StdinChunk>>,
    ) -> Result<Response<v1::WriteStdinResponse>, Status> {
        // Busy only while a chunk is written: an open stdin whose writer has nothing to
        // send (a handle kept after its process exited) does not keep the box awake. A
        // process that still runs does, as a running execution.
        let mut stream = req.into_inner();
        let Some(first) = stream.next().await.transpose()? else {
            return Ok(Response::new(v1::WriteStdinResponse { bytes_written: 0 }));
        };
        let exec = self.exec(&first.exec_id)?;
        let mut guard = exec.stdin.clone().try_lock_owned().map_err(|_| {
            Status::failed_precondition(format!(
                "stdin of execution {} already has a writer",
                exec.id
            ))
        })?;
        let mut written = 0u64;
        let mut msg = Some(first);
        while let Some(m) = msg {
            let Some(pipe) = guard.as_mut() else {
                return Err(Status::failed_precondition(format!(
                    "stdin of execution {} is closed",
                    exec.id
                )));
            };
            if !m.data.is_empty() {
                let _busy = activity::busy();
                if let Err(e) = pipe.write_all(&m.data).await {
                    // The process closed its stdin or exited: stop feeding it.
                    *guard = None;
                    return Err(Status::aborted(format!(
                        "stdin of execution {} is broken: {e}",
                        exec.id
                    )));
                }
                written += m.data.len() as u64;
            }
            if m.eof {
                *guard = None;
                break;
            }
            msg = stream.next().await.transpose()?;
        }
        Ok(Response::new(v1::WriteStdinResponse {
            bytes_written: written,
        }))
    }

    async fn wait(
        &self,
        req: Request<v1::WaitRequest>,
    ) -> Result<Response<v1::WaitResponse>, Status> {
        let _busy = activity::busy();
        let exec = self.exec(&req.into_inner().exec_id)?;
        let mut rx = exec.exit.clone();
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| Status::internal("exit status lost"))?
            .expect("wait_for guarantees Some");
        let mut status = to_proto_exit(exit.exit);
        status.timed_out = exec.timed_out.load(std::sync::atomic::Ordering::SeqCst);
        status.oom_killed = exec.oom_killed(&exit);
        Ok(Response::new(v1::WaitResponse {
            status: Some(status),
        }))
    }

    async fn signal(
        &self,
        req: Request<v1::SignalRequest>,
    ) -> Result<Response<v1::SignalResponse>, Status> {
        let _busy = activity::busy();
        let r = req.into_inner();
        if !(0..=64).contains(&r.signal) {
            return Err(Status::invalid_argument(format!(
                "signal {} is out of range (0-64)",
                r.signal
            )));
        }
        let exec = self.exec(&r.exec_id)?;
        self.procs
            .signal(&exec, r.signal, r.process_group)
            .map_err(|e| Status::internal(format!("signal {}: {e}", r.signal)))?;
        Ok(Response::new(v1::SignalResponse {}))
    }

    async fn mount_volumes(
        &self,
        req: Request<v1::MountVolumesRequest>,
    ) -> Result<Response<v1::MountVolumesResponse>, Status> {
        let _busy = activity::busy();
        let mounts: Vec<crate::volumes::Mount> = req
            .into_inner()
            .mounts
            .into_iter()
            .map(|m| crate::volumes::Mount {
                tag: m.tag,
                path: m.path,
                read_only: m.read_only,
            })
            .collect();
        let cfg = self.cfg.clone();
        // Module loading and mounting block; keep them off the async workers.
        tokio::task::spawn_blocking(move || crate::volumes::mount_all(&cfg, &mounts))
            .await
            .map_err(|e| Status::internal(format!("mount task: {e}")))?
            .map_err(|e| match e {
                crate::volumes::VolumeError::InvalidPath(_) => {
                    Status::invalid_argument(crate::error_chain(&e))
                }
                _ => Status::internal(crate::error_chain(&e)),
            })?;
        Ok(Response::new(v1::MountVolumesResponse {}))
    }

    async fn resize_tty(
        &self,
        req: Request<v1::ResizeTtyRequest>,
    ) -> Result<Response<v1::ResizeTtyResponse>, Status> {
        let _busy = activity::busy();
        let r = req.into_inner();
        let exec = self.exec(&r.exec_id)?;
        let Some(pty) = &exec.pty else {
            return Err(Status::failed_precondition(format!(
                "execution {} has no terminal (it was not started with tty)",
                exec.id
            )));
        };
        if r.rows == 0 || r.cols == 0 || r.rows > u16::MAX as u32 || r.cols > u16::MAX as u32 {
            return Err(Status::invalid_argument(format!(
                "terminal size {}x{} is out of range (1-65535 rows and columns)",
                r.rows, r.cols
            )));
        }
        let dim = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        crate::sys::set_winsize(pty, dim(r.rows), dim(r.cols))
            .map_err(|e| Status::internal(format!("resizing the terminal: {e}")))?;
        Ok(Response::new(v1::ResizeTtyResponse {}))
    }

    async fn copy_in(
        &self,
        req: Request<Streaming<v1::CopyInChunk>>,
    ) -> Result<Response<v1::CopyInResponse>, Status> {
        let _busy = activity::busy();
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .transpose()?
            .ok_or_else(|| Status::invalid_argument("CopyIn stream is empty"))?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first CopyIn message has no header"))?;
        let mode = v1::CopyInMode::try_from(header.mode)
            .map_err(|_| Status::invalid_argument(format!("unknown copy mode {}", header.mode)))?;
        let root = self
            .procs
            .root_fd()
            .map_err(|e| Status::internal(format!("container root: {e}")))?;
        let (base, mapping) = crate::copy::plan_copy_in(&root, &header.dest, mode)?;
        let overwrite = header.overwrite;
        let summary = feed_blocking(
            first.data,
            &mut stream,
            |m| m.data,
            move |rx| crate::copy::unpack_into(&root, &base, mapping, overwrite, rx),
        )
        .await?
        .map_err(crate::copy::status)?;
        Ok(Response::new(v1::CopyInResponse {
            entries: summary.entries,
            bytes: summary.bytes,
        }))
    }

    type CopyOutStream = BoxStream<v1::OutputChunk>;

    async fn copy_out(
        &self,
        req: Request<v1::CopyOutRequest>,
    ) -> Result<Response<Self::CopyOutStream>, Status> {
        let busy = activity::busy();
        let r = req.into_inner();
        let root = self
            .procs
            .root_fd()
            .map_err(|e| Status::internal(format!("container root: {e}")))?;
        let (path, top) = crate::copy::plan_copy_out(&root, &r.path, r.follow_symlinks)?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let opts = boxlite_archive::PackOptions {
            follow_symlinks: r.follow_symlinks,
            recursive: !r.no_recursive,
            owner: None,
        };
        let packer = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsFd;
            boxlite_archive::pack(
                boxlite_archive::ChannelWriter::new(tx),
                root.as_fd(),
                &path,
                &top,
                boxlite_archive::Resolve::InRoot,
                &opts,
            )
        });
        let (out_tx, out_rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if out_tx.send(Ok(v1::OutputChunk { data })).await.is_err() {
                    return;
                }
            }
            let end = match packer.await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => crate::copy::status(e),
                Err(e) => Status::internal(format!("pack task: {e}")),
            };
            let _ = out_tx.send(Err(end)).await;
        });
        // The copy is activity until its stream is done or dropped.
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx).map(move |chunk| {
                let _ = &busy;
                chunk
            }),
        )))
    }

    async fn list_dir(
        &self,
        req: Request<v1::ListDirRequest>,
    ) -> Result<Response<v1::ListDirResponse>, Status> {
        let _busy = activity::busy();
        let r = req.into_inner();
        let procs = self.procs.clone();
        // Reading a large directory and examining its entries block.
        let listing = tokio::task::spawn_blocking(move || {
            let root = procs
                .root_fd()
                .map_err(|e| Status::internal(format!("container root: {e}")))?;
            crate::listing::list(&root, &r.path, r.max_entries)
        })
        .await
        .map_err(|e| Status::internal(format!("listing task: {e}")))??;
        Ok(Response::new(listing))
    }

    async fn stats(
        &self,
        _req: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        let mut s = crate::stats::collect();
        s.execs_started = self
            .procs
            .started
            .load(std::sync::atomic::Ordering::Relaxed);
        s.execs_running = self.procs.running() as u64;
        s.agent_ready_uptime_secs = self.ready_uptime;
        s.first_exec_uptime_secs = self.procs.first_exec_uptime.get().copied().unwrap_or(0.0);
        s.oom_kills = crate::exec::oom_kill_count();
        Ok(Response::new(s))
    }

    async fn apply_layer(
        &self,
        req: Request<Streaming<v1::LayerChunk>>,
    ) -> Result<Response<v1::ApplyLayerResponse>, Status> {
        let _busy = activity::busy();
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .transpose()?
            .ok_or_else(|| Status::invalid_argument("ApplyLayer stream is empty"))?;
        let header = first.header.ok_or_else(|| {
            Status::invalid_argument("the first ApplyLayer message has no header")
        })?;
        let compression = v1::LayerCompression::try_from(header.compression).map_err(|_| {
            Status::invalid_argument(format!("unknown layer compression {}", header.compression))
        })?;
        let root = self
            .procs
            .root_fd()
            .map_err(|e| Status::internal(format!("container root: {e}")))?;
        let digest = header.digest;
        let summary = feed_blocking(
            first.data,
            &mut stream,
            |m| m.data,
            move |rx| crate::layer::apply(&root, compression, rx),
        )
        .await?
        .map_err(|e| {
            let st = crate::copy::status(e);
            Status::new(st.code(), format!("layer {digest}: {}", st.message()))
        })?;
        Ok(Response::new(v1::ApplyLayerResponse {
            entries: summary.entries,
            bytes: summary.bytes,
        }))
    }

    async fn install_ca(
        &self,
        req: Request<v1::InstallCaRequest>,
    ) -> Result<Response<v1::InstallCaResponse>, Status> {
        let _busy = activity::busy();
        let pem = req.into_inner().ca_pem;
        let trust = self.trust.clone();
        // Mounts and file I/O block; keep them off the async workers.
        let covered = tokio::task::spawn_blocking(move || trust.install(&pem))
            .await
            .map_err(|e| Status::internal(format!("install task: {e}")))??;
        self.procs.use_ca_env();
        eprintln!(
            "boxlite-guest: CA installed; the bundle is at {}",
            covered.join(", ")
        );
        Ok(Response::new(v1::InstallCaResponse { covered }))
    }

    async fn quiesce(
        &self,
        _req: Request<v1::QuiesceRequest>,
    ) -> Result<Response<v1::QuiesceResponse>, Status> {
        // Not a use of the box (the pause machinery), so not activity.
        // The network thread writes /etc/hosts and /etc/resolv.conf: a snapshot taken
        // before it finished would publish them, with the old name, after a restore.
        self.net_ready.wait().await;
        let frozen = self.quiescer.quiesce().await?;
        // Write dirty pages out, so a disk copied while the guest is stopped holds what
        // the workload wrote (the page cache itself is in the saved memory anyway).
        // SAFETY: sync takes no arguments and cannot fail.
        tokio::task::spawn_blocking(|| unsafe { libc::sync() })
            .await
            .map_err(|e| Status::internal(format!("sync task: {e}")))?;
        eprintln!(
            "boxlite-guest: quiesced; {}",
            if frozen {
                "the workload is frozen"
            } else {
                "no freezer, running processes go on"
            }
        );
        Ok(Response::new(v1::QuiesceResponse { frozen }))
    }

    async fn resume(
        &self,
        req: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::ResumeResponse>, Status> {
        // A resume (after a restore, or after an abandoned pause, which a client's
        // arrival caused) starts the idle clock again: the box is wanted.
        let _busy = activity::busy();
        let r = req.into_inner();
        let request = crate::resume::Request::new(r.wall_clock_ns, r.seed, r.hostname)?;
        // The rename edits the /etc/hosts the network thread publishes.
        self.net_ready.wait().await;
        let identity = self.identity.clone();
        // Clock, entropy and name first, so no workload process sees the old ones.
        let done = tokio::task::spawn_blocking(move || identity.apply(&request))
            .await
            .map_err(|e| Status::internal(format!("resume task: {e}")))??;
        self.quiescer.thaw().await?;
        eprintln!("boxlite-guest: resumed: {}", done.join(", "));
        Ok(Response::new(v1::ResumeResponse {}))
    }

    async fn shutdown(
        &self,
        _req: Request<v1::ShutdownRequest>,
    ) -> Result<Response<v1::ShutdownResponse>, Status> {
        let _busy = activity::busy();
        tokio::spawn(async {
            // Let the response reach the host before the VM goes away.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            crate::shutdown();
        });
        Ok(Response::new(v1::ShutdownResponse {}))
    }
}

/// Feed the data of a client stream (starting with the first message's, already read)
/// to a blocking consumer through a bounded channel, and return what it returns. A
/// consumer that stops early ends the feeding; a broken stream reaches it as an error.
async fn feed_blocking<M, T, E>(
    first: Vec<u8>,
    stream: &mut Streaming<M>,
    data_of: fn(M) -> Vec<u8>,
    consumer: impl FnOnce(mpsc::Receiver<std::io::Result<Vec<u8>>>) -> Result<T, E> + Send + 'static,
) -> Result<Result<T, E>, Status>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::task::spawn_blocking(move || consumer(rx));
    let mut data = Some(first);
    loop {
        if let Some(d) = data.take().filter(|d| !d.is_empty())
            && tx.send(Ok(d)).await.is_err()
        {
            // The consumer stopped early; its result is the answer.
            break;
        }
        match stream.next().await {
            None => break,
            Some(Ok(m)) => data = Some(data_of(m)),
            Some(Err(status)) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "the host's stream failed: {}",
                        status.message()
                    ))))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    task.await
        .map_err(|e| Status::internal(format!("worker task: {e}")))
}
