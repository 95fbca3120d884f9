//! Pulling images from OCI registries into the blob store, with `oci-client` for the
//! HTTP side (token and basic auth, Docker Hub's anonymous token flow).
//!
//! Everything that arrives is verified before it is kept: manifests by hashing their
//! bytes against the digest asked for (or recorded as the tag's digest), configs and
//! layers by [`BlobStore`](super::blobs::BlobStore) as they stream to disk. A multi-arch
//! index is resolved to linux/amd64 here, so an image without one gets an error that
//! lists what it does have.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio_stream::StreamExt;

use super::ImageError;
use super::blobs::{BlobStore, digest_hex};
use super::reference::Reference;
pub use crate::model::{Compression, ImageRecord, Layer, RunConfig};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or image config accepted.
const MAX_MANIFEST: usize = 4 << 20;

/// Connection settings for one registry host (`[registries."host:port"]` in
/// `config.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Speak plain HTTP to this host. Only ever per host, never by default.
    pub insecure_http: bool,
    /// Extra CA certificate (PEM) to trust for this host's TLS certificate.
    pub ca_file: Option<PathBuf>,
}

/// Credentials for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Bearer { .. } => write!(f, "Bearer(<redacted>)"),
        }
    }
}

/// Everything a pull needs to know about registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub hosts: HashMap<String, RegistrySettings>,
    pub credentials: HashMap<String, Credential>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn client_for(r: &Reference, cfg: &RegistryConfig) -> Result<oci_client::Client, ImageError> {
    let settings = cfg.hosts.get(&r.registry).cloned().unwrap_or_default();
    let mut cc = ClientConfig {
        protocol: if settings.insecure_http {
            ClientProtocol::HttpsExcept(vec![r.registry.clone()])
        } else {
            ClientProtocol::Https
        },
        // We resolve indexes ourselves, to say what an image offers when it has no
        // linux/amd64.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..Default::default()
    };
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).map_err(|e| ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!("reading its CA certificate {}: {e}", ca.display()),
        })?;
        cc.extra_root_certificates
            .push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem,
            });
    }
    Ok(oci_client::Client::new(cc))
}

fn auth_for(r: &Reference, cfg: &RegistryConfig) -> RegistryAuth {
    match cfg.credentials.get(&r.registry) {
        Some(Credential::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Some(Credential::Bearer { token }) => RegistryAuth::Bearer(token.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// Turn a client error into one that names the registry and says what went wrong,
/// without URLs' query strings or anything secret.
fn registry_error(r: &Reference, e: OciDistributionError) -> ImageError {
    let registry = r.registry.clone();
    let codes = |env: &oci_client::errors::OciEnvelope| -> Vec<String> {
        env.errors.iter().map(|e| format!("{:?}", e.code)).collect()
    };
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::AuthFailed { registry },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            ImageError::AuthFailed { registry }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            ImageError::NotFoundRemote {
                reference: r.familiar(),
                detail: codes(&envelope).join(", "),
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFoundRemote {
            reference: r.familiar(),
            detail: "manifest unknown".into(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::AuthFailed { registry },
        OciDistributionError::ServerError { code: 404, .. } => ImageError::NotFoundRemote {
            reference: r.familiar(),
            detail: "HTTP 404".into(),
        },
        OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
            ImageError::Unreachable {
                registry,
                reason: crate::util::error_chain(&re.without_url()),
            }
        }
        OciDistributionError::RequestError(re) => ImageError::Registry {
            registry,
            reason: crate::util::error_chain(&re.without_url()),
        },
        other => ImageError::Registry {
            registry,
            reason: crate::util::error_chain(&other),
        },
    }
}

/// Fetch a manifest and check its bytes: against the digest in the reference, else
/// against the digest the registry reports, and within [`MAX_MANIFEST`].
async fn fetch_manifest(
    client: &oci_client::Client,
    r: &Reference,
    oref: &oci_client::Reference,
    auth: &RegistryAuth,
) -> Result<(Vec<u8>, String), ImageError> {
    let (bytes, reported) = client
        .pull_manifest_raw(
            oref,
            auth,
            &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST],
        )
        .await
        .map_err(|e| registry_error(r, e))?;
    if bytes.len() > MAX_MANIFEST {
        return Err(ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!(
                "a manifest of {} bytes is over the {MAX_MANIFEST}-byte limit",
                bytes.len()
            ),
        });
    }
    let actual = sha256_of(&bytes);
    let expected = oref.digest().map(str::to_string).unwrap_or(reported);
    if !expected.is_empty() && expected != actual {
        return Err(ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!(
                "the manifest for {} hashes to {actual}, not {expected}",
                r.familiar()
            ),
        });
    }
    Ok((bytes.to_vec(), actual))
}

fn oci_ref(r: &Reference, digest: Option<&str>) -> oci_client::Reference {
    match digest.or(r.digest.as_deref()) {
        Some(d) => oci_client::Reference::with_digest(
            r.registry.clone(),
            r.repository.clone(),
            d.to_string(),
        ),
        None => oci_client::Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            r.tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// Progress of a pull, for a display.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolved {
        layers: usize,
        total_bytes: u64,
    },
    Layer {
        digest: String,
        done: u64,
        total: u64,
        cached: bool,
    },
    /// Every blob is here; the root filesystem is being built from `layers` layers.
    Building {
        layers: usize,
    },
    /// The root filesystem is ready (`cached`: it was built before).
    Built {
        ms: u64,
        cached: bool,
        /// Where the time went, when it was built now.
        build: Option<crate::model::BuildReport>,
    },
}

/// Pull `r` into `blobs`: resolve the platform manifest, then fetch the config and every
/// missing layer (up to 3 at once), each verified. Returns what the store records.
pub async fn pull(
    blobs: &BlobStore,
    r: &Reference,
    cfg: &RegistryConfig,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ImageRecord, ImageError> {
    let client = client_for(r, cfg)?;
    let auth = auth_for(r, cfg);
    let (mut bytes, mut digest) = fetch_manifest(&client, r, &oci_ref(r, None), &auth).await?;
    let mut manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!("the manifest of {} is not valid JSON: {e}", r.familiar()),
        })?;
    let media_type = manifest.media_type.clone().unwrap_or_else(|| {
        if manifest.manifests.is_empty() {
            OCI_MANIFEST.into()
        } else {
            OCI_INDEX.into()
        }
    });
    let mut index_digest = None;
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        put(blobs, &digest, &bytes).await?;
        index_digest = Some(digest.clone());
        let chosen = pick_platform(&manifest, r)?;
        digest_hex(&chosen)?;
        (bytes, digest) = fetch_manifest(&client, r, &oci_ref(r, Some(&chosen)), &auth).await?;
        manifest = serde_json::from_slice(&bytes).map_err(|e| ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!(
                "the linux/amd64 manifest of {} is not valid JSON: {e}",
                r.familiar()
            ),
        })?;
        let mt = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.into());
        if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            return Err(ImageError::UnsupportedMediaType {
                reference: r.familiar(),
                media_type: mt,
            });
        }
    } else if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(ImageError::UnsupportedMediaType {
            reference: r.familiar(),
            media_type,
        });
    }
    let (config_desc, layers) = manifest_parts(manifest, r)?;
    progress(Progress::Resolved {
        layers: layers.len(),
        total_bytes: layers.iter().map(|l| l.size).sum(),
    });

    if config_desc.size > MAX_MANIFEST as u64 {
        return Err(ImageError::Registry {
            registry: r.registry.clone(),
            reason: format!(
                "its config is {} bytes, over the {MAX_MANIFEST}-byte limit",
                config_desc.size
            ),
        });
    }
    fetch_blob(
        &client,
        r,
        &auth,
        blobs,
        &config_desc.digest,
        config_desc.size,
        progress,
    )
    .await?;
    let config_bytes = {
        let (blobs, d) = (blobs.clone(), config_desc.digest.clone());
        crate::util::blocking::run(move || blobs.read(&d)).await?
    };
    let (run, created) = parse_config(&config_bytes, r)?;

    // Layers, a few at a time.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
    let mut tasks = Vec::new();
    for l in &layers {
        let permit = sem.clone();
        let (client, r, auth, blobs) = (&client, r, &auth, blobs);
        tasks.push(async move {
            let _p = permit.acquire().await;
            fetch_blob(client, r, auth, blobs, &l.digest, l.size, progress).await
        });
    }
    for res in futures_join_all(tasks).await {
        res?;
    }
    put(blobs, &digest, &bytes).await?;
    Ok(ImageRecord::new(
        r.canonical(),
        digest,
        index_digest,
        config_desc.digest,
        layers,
        (run, created),
    ))
}

/// The linux/amd64 entry of an index, or the error that lists what it offers.
pub(crate) fn pick_platform(index: &Manifest, r: &Reference) -> Result<String, ImageError> {
    let chosen = index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .map(|m| m.digest.clone());
    chosen.ok_or_else(|| {
        let offered: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|m| {
                m.platform
                    .as_ref()
                    .map(|p| format!("{}/{}", p.os, p.architecture))
            })
            .collect();
        ImageError::NoPlatform {
            reference: r.familiar(),
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
        }
    })
}

/// The config descriptor and the layers of an image manifest, each layer's media type
/// checked.
pub(crate) fn manifest_parts(
    manifest: Manifest,
    r: &Reference,
) -> Result<(Descriptor, Vec<Layer>), ImageError> {
    let config_desc = manifest.config.ok_or_else(|| ImageError::Registry {
        registry: r.registry.clone(),
        reason: format!("the manifest of {} has no config", r.familiar()),
    })?;
    digest_hex(&config_desc.digest)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for l in &manifest.layers {
        digest_hex(&l.digest)?;
        let compression = Compression::of_media_type(&l.media_type).ok_or_else(|| {
            ImageError::UnsupportedMediaType {
                reference: r.familiar(),
                media_type: format!("layer {}", l.media_type),
            }
        })?;
        layers.push(Layer {
            digest: l.digest.clone(),
            size: l.size,
            compression,
        });
    }
    Ok((config_desc, layers))
}

/// The run settings and creation time of an image config, which must be for
/// linux/amd64 (or not say).
pub(crate) fn parse_config(
    bytes: &[u8],
    r: &Reference,
) -> Result<(RunConfig, Option<String>), ImageError> {
    let config: ConfigFile = serde_json::from_slice(bytes).map_err(|e| ImageError::Registry {
        registry: r.registry.clone(),
        reason: format!(
            "the image config of {} is not valid JSON: {e}",
            r.familiar()
        ),
    })?;
    if !(config.os.is_empty() || config.os == "linux")
        || !(config.architecture.is_empty() || config.architecture == "amd64")
    {
        return Err(ImageError::NoPlatform {
            reference: r.familiar(),
            offered: format!("{}/{}", config.os, config.architecture),
        });
    }
    Ok((config.config.unwrap_or_default(), config.created))
}

/// Await every future, all polled concurrently (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Store a small blob (a manifest) off the runtime: it is hashed and synced.
async fn put(blobs: &BlobStore, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let (blobs, digest, bytes) = (blobs.clone(), digest.to_string(), bytes.to_vec());
    crate::util::blocking::run(move || blobs.put(&digest, &bytes).map(|_| ())).await?;
    Ok(())
}

/// Download one blob unless the store has it, verifying digest and size. Hashing and
/// writing happen on the blocking pool: the download only hands chunks over.
async fn fetch_blob(
    client: &oci_client::Client,
    r: &Reference,
    auth: &RegistryAuth,
    blobs: &BlobStore,
    digest: &str,
    size: u64,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    if blobs.has(digest) {
        // Trust a stored blob only after re-hashing it: a corrupt one is removed by the
        // check and fetched again below.
        let verified = {
            let (blobs, d) = (blobs.clone(), digest.to_string());
            crate::util::blocking::run(move || blobs.verify(&d)).await
        };
        match verified {
            Ok(()) => {
                progress(Progress::Layer {
                    digest: digest.into(),
                    done: size,
                    total: size,
                    cached: true,
                });
                return Ok(());
            }
            Err(super::blobs::BlobError::Corrupt { .. }) => {
                tracing::warn!(digest, "a stored blob was corrupt; fetching it again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    client.store_auth_if_needed(r.registry.as_str(), auth).await;
    let desc = oci_client::manifest::OciDescriptor {
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(&oci_ref(r, None), &desc)
        .await
        .map_err(|e| registry_error(r, e))?;
    // `Some(chunk)` to write, `None` to commit; a channel closed without `None` (a failed
    // download) drops the writer, which removes its temporary file.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(8);
    let writer = {
        let (blobs, d, registry) = (blobs.clone(), digest.to_string(), r.registry.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            let mut w = blobs.writer(&d, Some(size))?;
            while let Some(msg) = rx.blocking_recv() {
                let Some(chunk) = msg else {
                    w.commit()?;
                    return Ok(());
                };
                w.write_all(&chunk)
                    .map_err(|e| match e.downcast::<super::blobs::BlobError>() {
                        Ok(b) => ImageError::Blob(b),
                        Err(e) => ImageError::Registry {
                            registry: registry.clone(),
                            reason: format!("storing {d}: {e}"),
                        },
                    })?;
            }
            Err(ImageError::Registry {
                registry,
                reason: format!("the download of {d} was abandoned"),
            })
        })
    };
    let mut done = 0u64;
    let mut failed = None;
    while let Some(chunk) = stream.stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failed = Some(ImageError::Registry {
                    registry: r.registry.clone(),
                    reason: format!("downloading {digest}: {e}"),
                });
                break;
            }
        };
        done += chunk.len() as u64;
        if tx.send(Some(chunk.to_vec())).await.is_err() {
            // The writer stopped: its result says why.
            break;
        }
        progress(Progress::Layer {
            digest: digest.into(),
            done,
            total: size,
            cached: false,
        });
    }
    if failed.is_none() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let written = writer.await.map_err(|e| ImageError::Registry {
        registry: r.registry.clone(),
        reason: format!("storing {digest}: {e}"),
    })?;
    match failed {
        Some(e) => Err(e),
        None => written,
    }
}
