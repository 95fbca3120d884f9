//! Building an image's ext4 base from its layers.
//!
//! Layers are hostile input, so they are never unpacked on the host. The host reads
//! them twice, streamed: once for their headers, which the flattener
//! (`boxlite_archive::layers`) applies in order to an in-memory tree, refusing anything
//! hostile; once for the contents of the files that survive, written as one canonical
//! tar stream. That stream becomes the base in one of two ways:
//! - on the host (the default where it can): `mke2fs -d -` (e2fsprogs 1.47.1 or newer)
//!   writes it into a fresh ext4 image file, sized for the tree plus free room;
//! - in a builder VM (the fallback for an older `mke2fs`, or when asked): the ordinary
//!   guest kernel and agent boot on a blank sparse ext4 disk in builder mode
//!   (`boxlite.builder=1`) and apply the stream with `ApplyLayer`; after a clean
//!   power-off the host checks the filesystem (`e2fsck`) and shrinks it (`resize2fs`).
//!
//! Either way the result is renamed into `bases/<manifest hex>.ext4`.
//!
//! This is orchestration above the image store: the store keeps blobs, records and
//! bases; this module makes a base from them.
//!
//! One build per image at a time: builds take `locks/<manifest hex>` and re-check for a
//! finished base once they hold it. Each build works in `tmp/img-<random>/`, locked by
//! its `lock` file for as long as it runs, and records the builder's processes in its
//! `processes.json` before each may run, so cleanup can tell a live build from the
//! leftovers of a killed one, and end the leftovers' processes.

mod host;

pub use host::{Mke2fs, mke2fs};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_archive::layers::{self, FlattenError, Limits, Plan};

use crate::context::Context;
use crate::images::blobs::{BlobError, BlobStore, digest_hex};
use crate::images::{ImageError, ImageStore};
use crate::layout::{BoxPaths, SocketPaths, socket_root};
use crate::model::{BoxStatus, BuildReport, Compression, ImageBuilder, ImageRecord, Layer};
use crate::util::fsutil::{tail_file, write_atomic};
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::{ProcessId, find_binary};
use crate::util::spawn::tool_command;
use crate::util::{blocking, ms_since};
use crate::vm::{BootError, BootGuard, DiskFormat, ProcessLedger, VmSpec, launch};

/// Prefix of a build's work and socket directories. Not a hex digit, so never a box id.
pub const BUILD_PREFIX: &str = "img-";

/// The file in a build's work directory that names its processes.
const PROCESSES: &str = "processes.json";

/// The builder disk's size when the layers are small. It is a sparse file: only what
/// the layers write takes space. It also caps what a layer can write (a decompression
/// bomb fills it and fails the build).
const MIN_BUILD_DISK: u64 = 16 << 30;

/// Entries an image may hold (each costs the flattener about 250 bytes while it builds).
const MAX_ENTRIES: u64 = 1 << 21;

/// Builder VM memory.
const BUILD_MEMORY_MIB: u32 = 512;

/// How long the builder may take to power off after the last layer.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{tool} not found; install e2fsprogs (Debian: apt-get install e2fsprogs)")]
    ToolMissing { tool: String },
    #[error(
        "building on the host was asked for (BOXLITE_IMAGE_BUILDER=host), but {why}; install e2fsprogs 1.47.1 or newer (Debian 12: apt-get install -t bookworm-backports e2fsprogs) and libarchive, or build in a VM (BOXLITE_IMAGE_BUILDER=vm)"
    )]
    NoHostBuilder { why: String },
    #[error("{tool} failed ({status}): {output}")]
    ToolFailed {
        tool: String,
        status: String,
        output: String,
    },
    #[error("{tool} printed nothing usable: {output}")]
    ToolOutput { tool: String, output: String },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the builder VM did not boot: {}", crate::util::error_chain(.0))]
    Boot(BootError),
    #[error(
        "layer {digest} does not fit in the builder's {} GiB disk (the layers unpack to more than that, or one is a decompression bomb)",
        limit >> 30
    )]
    DiskFull { digest: String, limit: u64 },
    #[error("layer {digest} was refused: {message}")]
    LayerRefused { digest: String, message: String },
    #[error("applying layer {digest}: {}", crate::util::error_chain(cause.as_ref()))]
    Layer {
        digest: String,
        cause: Box<crate::Error>,
    },
    #[error("asking the builder to power off")]
    PowerOffRequest(#[source] crate::portal::PortalError),
    #[error("the builder VM did not power off within {}s", after.as_secs())]
    PowerOff { after: Duration },
}

/// A failed build, naming the image and quoting the builder's console.
#[derive(Debug, thiserror::Error)]
#[error(
    "building the root filesystem of {reference}: {}{}",
    crate::util::error_chain(cause),
    console_section(console)
)]
pub struct BuildFailed {
    pub reference: String,
    pub cause: Box<BuildError>,
    /// The tail of the builder's console log, when it ran.
    pub console: String,
}

fn console_section(console: &str) -> String {
    let c = console.trim();
    if c.is_empty() {
        String::new()
    } else {
        format!("\n--- builder console (tail) ---\n{c}")
    }
}

/// An e2fsprogs tool: `BOXLITE_<NAME>`, else on `PATH`, else in the sbin directories
/// (which an ordinary user's `PATH` may lack).
fn tool(name: &str) -> Result<PathBuf, BuildError> {
    find_binary(
        name,
        &format!("BOXLITE_{}", name.replace('.', "_").to_uppercase()),
    )
    .or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
    .ok_or_else(|| BuildError::ToolMissing { tool: name.into() })
}

/// Run a tool to completion (blocking), returning its output; `ok` lists the exit codes
/// that count as success.
fn run_tool(binary: &Path, args: &[&std::ffi::OsStr], ok: &[i32]) -> Result<String, BuildError> {
    let name = binary.display().to_string();
    let out =
        blocking::output(tool_command(binary).args(args)).map_err(|source| BuildError::Io {
            what: "running",
            path: binary.to_path_buf(),
            source,
        })?;
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !ok.contains(&code) {
        return Err(BuildError::ToolFailed {
            tool: name,
            status: out.status.to_string(),
            output: text.trim().to_string(),
        });
    }
    Ok(text)
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// Records a build's processes in its work directory.
struct FileLedger {
    path: PathBuf,
}

impl ProcessLedger for FileLedger {
    fn record(
        &self,
        status: &BoxStatus,
    ) -> impl std::future::Future<Output = Result<(), crate::Error>> + Send {
        let path = self.path.clone();
        let procs = status.processes();
        async move {
            blocking::run(move || {
                let data = serde_json::to_vec(&procs).map_err(std::io::Error::other)?;
                write_atomic(&path, &data)
            })
            .await
            .map_err(|source| crate::Error::Io {
                context: format!("writing {}", self.path.display()),
                source,
            })
        }
    }
}

/// The processes a build recorded.
fn recorded(work: &Path) -> Vec<ProcessId> {
    std::fs::read(work.join(PROCESSES))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// The ext4 base of `rec`, built now if the store does not have it yet.
pub(crate) async fn ensure_base(
    ctx: &Context,
    store: &ImageStore,
    rec: &ImageRecord,
) -> Result<(PathBuf, Option<BuildReport>), crate::Error> {
    let hex = digest_hex(&rec.manifest_digest)
        .map_err(ImageError::from)?
        .to_string();
    let base = store.base_path(&hex);
    if base.is_file() {
        return Ok((base, None));
    }
    let failed = |cause: BuildError| -> crate::Error {
        BuildFailed {
            reference: rec.reference.clone(),
            cause: Box::new(cause),
            console: String::new(),
        }
        .into()
    };
    let locks = store.locks_dir();
    std::fs::create_dir_all(&locks).map_err(|e| failed(io_err("creating", &locks)(e)))?;
    let lock_path = locks.join(&hex);
    let _lock = FileLock::acquire(&lock_path, LockMode::Exclusive)
        .await
        .map_err(|e| failed(io_err("locking", &lock_path)(e)))?;
    if base.is_file() {
        return Ok((base, None));
    }
    let name = format!("{BUILD_PREFIX}{:08x}", rand::random::<u32>());
    let work = store.tmp_dir().join(&name);
    std::fs::create_dir_all(&work).map_err(|e| failed(io_err("creating", &work)(e)))?;
    let work_lock = FileLock::acquire(&work.join("lock"), LockMode::Exclusive)
        .await
        .map_err(|e| failed(io_err("locking", &work)(e)))?;
    let sockets = SocketPaths {
        dir: socket_root().join(&name),
    };
    let limits = Limits {
        max_entries: MAX_ENTRIES,
        max_bytes: disk_limit(&rec.layers),
    };
    let result = match build_in(ctx, store, rec, &work, &sockets, &base, limits).await {
        Err(Failure::Flatten(e)) => {
            let (layers, blobs) = (rec.layers.clone(), store.blobs());
            Err(blocking::run(move || flatten_failure(e, &layers, &blobs, limits.max_bytes)).await)
        }
        other => other,
    };
    let console = tail_file(&work.join("console.log"), 2000);
    blocking::run({
        let (sockets, work) = (sockets.clone(), work.clone());
        move || {
            sockets.remove();
            drop(work_lock);
            let _ = std::fs::remove_dir_all(&work);
        }
    })
    .await;
    match result {
        Ok(r) => Ok((base, Some(r))),
        Err(Failure::Passthrough(e)) => Err(*e),
        Err(Failure::Flatten(e)) => unreachable!("mapped above: {e}"),
        Err(Failure::Build(cause)) => Err(BuildFailed {
            reference: rec.reference.clone(),
            // Only a build that got as far as booting has a console worth quoting.
            console: match &cause {
                BuildError::ToolMissing { .. }
                | BuildError::Io { .. }
                | BuildError::NoHostBuilder { .. }
                | BuildError::LayerRefused { .. }
                | BuildError::DiskFull { .. } => String::new(),
                _ => console,
            },
            cause: Box::new(cause),
        }
        .into()),
    }
}

/// How a build fails: with a build error, or with an error whose own type the caller
/// acts on (a blob found corrupt is removed and fetched again by the next pull).
pub(crate) enum Failure {
    Build(BuildError),
    Passthrough(Box<crate::Error>),
    /// The flattener failed; mapped onto the layer by [`flatten_failure`].
    Flatten(FlattenError),
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Self {
        Failure::Build(e)
    }
}

/// Map a failed layer transfer onto what the caller can act on.
fn layer_failure(digest: &str, disk_size: u64, e: crate::Error) -> Failure {
    use crate::litebox::{CopyError, InBoxKind};
    match e {
        crate::Error::Image(ImageError::Blob(_)) => Failure::Passthrough(Box::new(e)),
        crate::Error::Copy(CopyError::InBox {
            kind: InBoxKind::NoSpace,
            ..
        }) => Failure::Build(BuildError::DiskFull {
            digest: digest.into(),
            limit: disk_size,
        }),
        crate::Error::Copy(CopyError::InBox {
            kind: InBoxKind::Refused,
            message,
            ..
        }) => Failure::Build(BuildError::LayerRefused {
            digest: digest.into(),
            message,
        }),
        other => Failure::Build(BuildError::Layer {
            digest: digest.into(),
            cause: Box::new(other),
        }),
    }
}

/// The most a build may write: the builder disk's size when the layers are small, 8x
/// the compressed layers otherwise. A decompression bomb stops here.
fn disk_limit(layers: &[Layer]) -> u64 {
    let compressed: u64 = layers.iter().map(|l| l.size).sum();
    MIN_BUILD_DISK.max(compressed.saturating_mul(8))
}

/// Opens an image's layers as tar streams: each blob re-hashed as it is read (a
/// mismatch fails the read with [`BlobError::Corrupt`]) and decompressed.
#[derive(Clone)]
struct LayerSource {
    blobs: BlobStore,
    layers: Arc<Vec<Layer>>,
}

impl LayerSource {
    fn open(&self, i: usize) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let l = &self.layers[i];
        let r = self
            .blobs
            .open_verified(&l.digest)
            .map_err(std::io::Error::other)?;
        let r = std::io::BufReader::with_capacity(256 << 10, r);
        match l.compression {
            Compression::None => layers::decompress(r, layers::Compression::None),
            Compression::Gzip => layers::decompress(r, layers::Compression::Gzip),
            Compression::Zstd => zstd_reader(r),
        }
    }
}

/// A zstd layer's tar bytes: any number of frames, as a layer may hold.
fn zstd_reader<'a, R: std::io::BufRead + Send + 'a>(
    r: R,
) -> std::io::Result<Box<dyn std::io::Read + Send + 'a>> {
    Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
}

/// Where builds run with `builder`, and why, for `boxlite info`. Blocking (probes
/// `mke2fs` once).
pub(crate) fn describe(builder: ImageBuilder) -> String {
    match (builder, choose_quiet(builder)) {
        (ImageBuilder::Vm, _) => "in a builder VM (BOXLITE_IMAGE_BUILDER=vm)".into(),
        (_, Ok(Some(_))) => "on the host (mke2fs reads tar streams)".into(),
        (_, Ok(None)) => format!(
            "in a builder VM, slowly: {}",
            host_builder().err().unwrap_or_default()
        ),
        (_, Err(e)) => format!("unavailable: {e}"),
    }
}

/// The host's `mke2fs` if it builds from a tar stream, else why not.
fn host_builder() -> Result<&'static Mke2fs, String> {
    mke2fs()
        .map_err(str::to_string)
        .and_then(|m| match &m.no_tar {
            None => Ok(m),
            Some(why) => Err(why.clone()),
        })
}

fn choose_quiet(builder: ImageBuilder) -> Result<Option<&'static Mke2fs>, BuildError> {
    choose_from(builder, host_builder())
}

fn choose_from(
    builder: ImageBuilder,
    host: Result<&Mke2fs, String>,
) -> Result<Option<&Mke2fs>, BuildError> {
    match (builder, host) {
        (ImageBuilder::Vm, _) => Ok(None),
        (_, Ok(m)) => Ok(Some(m)),
        (ImageBuilder::Host, Err(why)) => Err(BuildError::NoHostBuilder { why }),
        (ImageBuilder::Auto, Err(_)) => Ok(None),
    }
}

/// Whether this build runs on the host (with its `mke2fs`) or in a VM.
fn choose(builder: ImageBuilder) -> Result<Option<&'static Mke2fs>, BuildError> {
    let chosen = choose_quiet(builder)?;
    if chosen.is_none() && builder == ImageBuilder::Auto {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "image bases are built in a VM, which is much slower: {}; install e2fsprogs 1.47.1 or newer and libarchive to build them on the host",
                host_builder().err().unwrap_or_default()
            );
        });
    }
    Ok(chosen)
}

/// Map a flattener error onto the layer it is about. A read that failed because the
/// blob does not match its digest (or that found what a corrupt blob would give) is a
/// blob error, which the next pull repairs; the rest refuse the layer. Blocking: may
/// re-hash the blob.
fn flatten_failure(e: FlattenError, layers: &[Layer], blobs: &BlobStore, limit: u64) -> Failure {
    let Some(layer) = e.layer().and_then(|i| layers.get(i)) else {
        return Failure::Build(BuildError::LayerRefused {
            digest: String::new(),
            message: crate::util::error_chain(&e),
        });
    };
    let digest = layer.digest.clone();
    let corrupt = |b: BlobError| Failure::Passthrough(Box::new(ImageError::from(b).into()));
    match e {
        FlattenError::Read { source, .. } => match source.downcast::<BlobError>() {
            Ok(b) => corrupt(b),
            Err(source) => match blobs.verify(&digest) {
                Err(b) => corrupt(b),
                Ok(()) => Failure::Build(BuildError::LayerRefused {
                    message: format!(
                        "it is not a valid {} stream: {source}",
                        match layer.compression {
                            Compression::None => "tar",
                            Compression::Gzip => "gzip",
                            Compression::Zstd => "zstd",
                        }
                    ),
                    digest,
                }),
            },
        },
        FlattenError::Malformed { .. } | FlattenError::Changed { .. } => {
            match blobs.verify(&digest) {
                Err(b) => corrupt(b),
                Ok(()) => Failure::Build(BuildError::LayerRefused {
                    message: e.to_string(),
                    digest,
                }),
            }
        }
        FlattenError::TooLarge { .. } => Failure::Build(BuildError::DiskFull { digest, limit }),
        e => Failure::Build(BuildError::LayerRefused {
            message: e.to_string(),
            digest,
        }),
    }
}

async fn build_in(
    ctx: &Context,
    store: &ImageStore,
    rec: &ImageRecord,
    work: &Path,
    sockets: &SocketPaths,
    base: &Path,
    limits: Limits,
) -> Result<BuildReport, Failure> {
    let mut report = BuildReport {
        layers: rec.layers.len(),
        ..Default::default()
    };
    let source = LayerSource {
        blobs: store.blobs(),
        layers: Arc::new(rec.layers.clone()),
    };
    let t = Instant::now();
    let builder = ctx.image_builder;
    let (plan, host) = blocking::run({
        let source = source.clone();
        move || -> Result<_, Failure> {
            let mut host = choose(builder)?;
            let plan = layers::plan(source.layers.len(), |i| source.open(i), &limits)
                .map_err(Failure::Flatten)?;
            // mke2fs copies only these extended attributes from a tar stream (the ones
            // Docker itself records); an image with others is built in the VM, which
            // keeps them all.
            if host.is_some()
                && let Some((path, name)) = plan.xattr_not_in(host::XATTRS_COPIED)
            {
                let why = format!(
                    "/{path} has the extended attribute {name:?}, which mke2fs does not copy from a tar stream"
                );
                if builder == ImageBuilder::Host {
                    return Err(BuildError::NoHostBuilder { why }.into());
                }
                tracing::info!("building in a VM: {why}");
                host = None;
            }
            Ok((Arc::new(plan), host))
        }
    })
    .await?;
    report.plan_ms = ms_since(t);
    report.entries = plan.stats.entries;
    report.bytes = plan.stats.bytes;
    let disk = work.join("rootfs.ext4");
    match host {
        Some(mke2fs) => {
            report.builder = "host".into();
            let t = Instant::now();
            let size = blocking::run({
                let (plan, disk) = (plan.clone(), disk.clone());
                move || host::build(mke2fs, &plan, |i| source.open(i), &disk)
            })
            .await?;
            report.apply_ms = ms_since(t);
            store_base(&disk, base)?;
            report.base_size = size;
        }
        None => {
            report.builder = "vm".into();
            build_in_vm(
                ctx,
                &mut report,
                plan,
                source,
                work,
                sockets,
                limits.max_bytes,
            )
            .await?;
            let t_finish = Instant::now();
            let base = base.to_path_buf();
            report.base_size = blocking::run(move || finish(&disk, &base)).await?;
            report.finish_ms = ms_since(t_finish);
        }
    }
    tracing::info!(
        image = %rec.reference, builder = %report.builder, layers = report.layers,
        entries = report.entries, bytes = report.bytes, base_size = report.base_size,
        plan_ms = report.plan_ms, boot_ms = report.boot_ms, apply_ms = report.apply_ms,
        finish_ms = report.finish_ms, "image base built"
    );
    Ok(report)
}

/// Move a finished image into the store.
fn store_base(disk: &Path, base: &Path) -> Result<(), BuildError> {
    let parent = base.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .and_then(|()| std::fs::rename(disk, base))
        .map_err(io_err("storing", base))
}

/// Apply the flattened stream in a builder VM, onto `work/rootfs.ext4`, and wait for
/// the VM to power off.
async fn build_in_vm(
    ctx: &Context,
    report: &mut BuildReport,
    plan: Arc<Plan>,
    source: LayerSource,
    work: &Path,
    sockets: &SocketPaths,
    disk_size: u64,
) -> Result<(), Failure> {
    let mkfs = tool("mkfs.ext4")?;
    let t = Instant::now();
    let disk = work.join("rootfs.ext4");
    blocking::run({
        let disk = disk.clone();
        move || -> Result<(), Failure> {
            std::fs::File::create(&disk)
                .and_then(|f| f.set_len(disk_size))
                .map_err(io_err("creating", &disk))?;
            run_tool(
                &mkfs,
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-L".as_ref(),
                    "boxlite-root".as_ref(),
                    "-E".as_ref(),
                    "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1".as_ref(),
                    disk.as_os_str(),
                ],
                &[0],
            )?;
            Ok(())
        }
    })
    .await?;

    sockets
        .create(ctx.layout().home())
        .map_err(|e| BuildError::Boot(e.into()))?;
    let mut guard = BootGuard::new(sockets.clone());
    let id = work
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let spec = VmSpec {
        id: &id,
        paths: BoxPaths {
            dir: work.to_path_buf(),
        },
        root_disk: disk.clone(),
        root_format: DiskFormat::Raw,
        memory_mib: BUILD_MEMORY_MIB,
        cpus: 2,
        volumes: &[],
        cmdline: vec!["boxlite.builder=1".into()],
        network: None,
        secrets: Default::default(),
        builder: true,
        restore: None,
        template: None,
    };
    let ledger = FileLedger {
        path: work.join(PROCESSES),
    };
    let mut status = BoxStatus::default();
    let digest = source
        .layers
        .last()
        .map(|l| l.digest.clone())
        .unwrap_or_default();
    let applied = async {
        let client = match launch(ctx, &spec, &mut status, &mut guard, &ledger).await {
            // A guest that stalls in its kernel's early boot (`context::boot_stall`) is
            // stopped and booted once more, as a box's is.
            Err(e @ crate::vm::BootError::Stalled { .. }) => {
                tracing::warn!(error = %crate::util::error_chain(&e), "the build VM stalled during its boot; booting it again");
                let stalled = std::mem::replace(&mut guard, BootGuard::new(sockets.clone()));
                let _ = stalled.cleanup().await;
                sockets
                    .create(ctx.layout().home())
                    .map_err(|e| BuildError::Boot(e.into()))?;
                status = BoxStatus::default();
                launch(ctx, &spec, &mut status, &mut guard, &ledger).await
            }
            other => other,
        }
        .map_err(BuildError::Boot)?;
        report.boot_ms = ms_since(t);
        let t_apply = Instant::now();
        let (reader, writer) = std::io::pipe().map_err(io_err("creating a pipe for", &disk))?;
        let emitted = blocking::run(move || {
            layers::emit(
                &plan,
                |i| source.open(i),
                std::io::BufWriter::with_capacity(1 << 20, writer),
            )
        });
        let sent = crate::litebox::copy::send_layer(
            &client,
            "the flattened layers",
            reader,
            Compression::None,
            &digest,
        );
        let (emitted, sent) = tokio::join!(emitted, sent);
        // The stream's own failure first: the VM may have taken a cut stream as whole.
        emitted.map_err(Failure::Flatten)?;
        // The entries and bytes are the plan's, as on the host.
        sent.map_err(|e| layer_failure(&digest, disk_size, e))?;
        report.apply_ms = ms_since(t_apply);
        client
            .shutdown()
            .await
            .map_err(BuildError::PowerOffRequest)?;
        Ok::<_, Failure>(())
    }
    .await;
    if let Err(e) = applied {
        let _ = guard.cleanup().await;
        return Err(e);
    }
    // The agent syncs, unmounts and powers off; wait for QEMU to go. The shim exits when
    // QEMU's port closes, and is stopped with the rest if it has not yet.
    let powered_off = match status.vmm {
        Some(vmm) => crate::util::kill::wait_exit(vmm, POWEROFF_TIMEOUT).await,
        None => true,
    };
    let _ = guard.cleanup().await;
    if !powered_off {
        return Err(BuildError::PowerOff {
            after: POWEROFF_TIMEOUT,
        }
        .into());
    }
    Ok(())
}

/// Check the built filesystem, shrink it to its content plus headroom and store it as
/// `base`. Blocking: runs e2fsprogs.
fn finish(disk: &Path, base: &Path) -> Result<u64, BuildError> {
    let e2fsck = tool("e2fsck")?;
    let resize2fs = tool("resize2fs")?;
    // e2fsck: 0 clean, 1 errors fixed (a journal replayed).
    run_tool(
        &e2fsck,
        &["-f".as_ref(), "-y".as_ref(), disk.as_os_str()],
        &[0, 1],
    )?;
    let (blocks, free, block_size) = ext4_counts(disk)?;
    let min_text = run_tool(&resize2fs, &["-P".as_ref(), disk.as_os_str()], &[0])?;
    let min: u64 = min_text
        .lines()
        .find_map(|l| l.split("minimum size of the filesystem:").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| BuildError::ToolOutput {
            tool: "resize2fs -P".into(),
            output: min_text.trim().to_string(),
        })?;
    let target = shrunk_size(blocks - free, min, block_size);
    if target < blocks {
        run_tool(
            &resize2fs,
            &[disk.as_os_str(), target.to_string().as_ref()],
            &[0],
        )?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(disk)
            .and_then(|f| f.set_len(target * block_size))
            .map_err(io_err("truncating", disk))?;
    }
    store_base(disk, base)?;
    Ok(target.min(blocks) * block_size)
}

/// Block count, free blocks and block size of an ext4 image, from `dumpe2fs -h`.
fn ext4_counts(disk: &Path) -> Result<(u64, u64, u64), BuildError> {
    let dumpe2fs = tool("dumpe2fs")?;
    let text = run_tool(&dumpe2fs, &["-h".as_ref(), disk.as_os_str()], &[0])?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
            .ok_or_else(|| BuildError::ToolOutput {
                tool: format!("dumpe2fs ({name})"),
                output: text.lines().take(5).collect::<Vec<_>>().join("; "),
            })
    };
    Ok((
        field("Block count")?,
        field("Free blocks")?,
        field("Block size")?,
    ))
}

/// Headroom over the content of a built base: a quarter of it, at least 1 GiB, so a box
/// has room to install things without growing its disk at boot (which is slow under
/// TCG). The file is sparse: the free space costs nothing on the host.
fn shrunk_size(used_blocks: u64, min_blocks: u64, block_size: u64) -> u64 {
    let headroom = (used_blocks / 4).max((1 << 30) / block_size);
    let mib = (1 << 20) / block_size;
    let target = (used_blocks + headroom).max(min_blocks);
    target.div_ceil(mib) * mib
}

/// Remove what killed builds left: their processes (ended through the one kill path),
/// work directories and socket directories. A build still holding its lock is left
/// alone. Blocking.
pub(crate) fn sweep(store: &ImageStore) {
    for e in std::fs::read_dir(store.tmp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with(BUILD_PREFIX) {
            continue;
        }
        let held = FileLock::try_acquire(&e.path().join("lock"), LockMode::Exclusive);
        if matches!(held, Ok(Some(_)) | Err(_)) {
            tracing::info!(dir = %e.path().display(), "removing an abandoned image build");
            let left = crate::util::kill::terminate_blocking(&recorded(&e.path()), Duration::ZERO);
            if !left.is_empty() {
                // Kept, with its record, for the next sweep to try again.
                continue;
            }
            let _ = std::fs::remove_dir_all(e.path());
            SocketPaths {
                dir: socket_root().join(&name),
            }
            .remove();
        }
    }
}

/// Whether a socket directory belongs to an image build that is still running.
pub(crate) fn is_live_build(store: &ImageStore, socket_dir_name: &str) -> bool {
    socket_dir_name.starts_with(BUILD_PREFIX)
        && matches!(
            FileLock::try_acquire(
                &store.tmp_dir().join(socket_dir_name).join("lock"),
                LockMode::Exclusive
            ),
            Ok(None)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_layers_of_several_frames_decode_whole() {
        use std::io::Read;
        let mut two = zstd::stream::encode_all(&b"hello "[..], 1).unwrap();
        two.extend(zstd::stream::encode_all(&b"world"[..], 1).unwrap());
        let mut out = String::new();
        zstd_reader(&two[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
        let mut bad = two.clone();
        bad[6] ^= 0xff;
        assert!(
            zstd_reader(&bad[..])
                .and_then(|mut r| r.read_to_end(&mut Vec::new()))
                .is_err()
        );
    }

    #[test]
    fn the_builder_follows_the_option_and_what_the_host_can_do() {
        let m = Mke2fs {
            path: "/sbin/mke2fs".into(),
            version: "1.47.2".into(),
            no_tar: None,
        };
        let old = || Err("mke2fs 1.47.0 is older than 1.47.1".to_string());
        assert!(choose_from(ImageBuilder::Auto, Ok(&m)).unwrap().is_some());
        assert!(choose_from(ImageBuilder::Auto, old()).unwrap().is_none());
        assert!(choose_from(ImageBuilder::Vm, Ok(&m)).unwrap().is_none());
        assert!(choose_from(ImageBuilder::Host, Ok(&m)).unwrap().is_some());
        let err = choose_from(ImageBuilder::Host, old())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1.47.0 is older") && err.contains("bookworm-backports e2fsprogs"),
            "{err}"
        );
    }

    #[test]
    fn bases_get_a_quarter_or_1_gib_of_headroom_rounded_to_a_mib() {
        // 100 MiB used in 4 KiB blocks: 1 GiB of headroom.
        assert_eq!(shrunk_size(25_600, 1_000, 4096), 25_600 + 262_144);
        // 8 GiB used (and a little): a quarter, rounded up to a MiB.
        let used = 2_097_152 + 3;
        assert_eq!(
            shrunk_size(used, 1_000, 4096),
            (used + used / 4).div_ceil(256) * 256
        );
        // Never below resize2fs's minimum.
        assert_eq!(shrunk_size(10, 500_000, 4096), 500_224);
    }
}
