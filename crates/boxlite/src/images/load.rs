//! Offline images: an OCI image layout directory, the same as a tar (an OCI archive),
//! or a `docker save` archive (optionally gzip-compressed).
//!
//! The input is as hostile as a registry. Nothing is ever extracted by name: blobs go
//! into the blob store (verified against their digest where the format names one, and
//! named by their hash where it does not), and only the small JSON index files are held
//! in memory, each capped. A path in a manifest is only ever a key into what was read.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImageError;
use super::blobs::{BlobStore, digest_hex};
use super::reference::Reference;
use super::registry::{
    Compression, DOCKER_LIST, ImageRecord, Layer, Manifest, OCI_INDEX, manifest_parts,
    parse_config, pick_platform,
};

/// Largest JSON file read from an archive or layout.
const MAX_JSON: u64 = 4 << 20;

/// The annotation naming an image in an OCI layout (containerd's, then the spec's).
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

fn bad(input: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Load {
        input: input.to_path_buf(),
        reason: reason.into(),
    }
}

/// Where the pieces come from.
enum Source {
    /// A layout directory: blobs are copied in (verified) when needed.
    Dir(PathBuf),
    /// An archive already read: blobs are in the store; small files in memory.
    Archive {
        files: HashMap<String, Vec<u8>>,
        /// Other regular files, stored under their own hash.
        hashed: HashMap<String, String>,
        /// Symlinks, by name, to their target resolved to an archive path.
        links: HashMap<String, String>,
    },
}

/// Read `input` into `blobs` and return a record per image found. `tag` names the
/// image when the input does not (or renames it); it needs an input with one image.
pub(crate) fn load(
    blobs: &BlobStore,
    input: &Path,
    tag: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let meta = std::fs::metadata(input).map_err(|e| bad(input, format!("cannot read it: {e}")))?;
    let source = if meta.is_dir() {
        if !input.join("oci-layout").is_file() {
            return Err(bad(
                input,
                "a directory must be an OCI image layout (it has no oci-layout file)",
            ));
        }
        Source::Dir(input.to_path_buf())
    } else {
        read_archive(blobs, input)?
    };
    let tag = tag.map(Reference::parse).transpose()?;
    if let Some(index) = small_file(&source, input, "index.json")? {
        return load_oci(blobs, input, &source, &index, tag.as_ref());
    }
    if let Some(manifest) = small_file(&source, input, "manifest.json")? {
        return load_docker(blobs, input, &source, &manifest, tag.as_ref());
    }
    Err(bad(
        input,
        "it is neither an OCI layout or archive (no index.json) nor a docker save archive (no manifest.json)",
    ))
}

fn small_file(source: &Source, input: &Path, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
    match source {
        Source::Dir(dir) => {
            let p = dir.join(name);
            let Ok(f) = std::fs::File::open(&p) else {
                return Ok(None);
            };
            let mut data = Vec::new();
            f.take(MAX_JSON + 1)
                .read_to_end(&mut data)
                .map_err(|e| bad(input, format!("reading {name}: {e}")))?;
            if data.len() as u64 > MAX_JSON {
                return Err(bad(input, format!("{name} is over {MAX_JSON} bytes")));
            }
            Ok(Some(data))
        }
        Source::Archive { files, .. } => Ok(files.get(name).cloned()),
    }
}

/// An archive path without `./` and repeated slashes; `None` for one that climbs.
fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn blob_name_digest(name: &str) -> Option<String> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    let d = format!("sha256:{hex}");
    let valid = digest_hex(&d).is_ok();
    valid.then_some(d)
}

fn read_archive(blobs: &BlobStore, input: &Path) -> Result<Source, ImageError> {
    let mut f =
        std::fs::File::open(input).map_err(|e| bad(input, format!("cannot open it: {e}")))?;
    let mut magic = [0u8; 2];
    let gz = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let f = std::fs::File::open(input).map_err(|e| bad(input, format!("cannot open it: {e}")))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        )))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut hashed = HashMap::new();
    let mut links = HashMap::new();
    let entries = ar
        .entries()
        .map_err(|e| bad(input, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(input, format!("reading the archive: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let Some(name) = clean(&raw) else {
            return Err(bad(
                input,
                format!("entry {raw:?} climbs out of the archive"),
            ));
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).to_string())
                .unwrap_or_default();
            let base = if kind.is_symlink() {
                name.rsplit_once('/').map_or("", |(d, _)| d).to_string()
            } else {
                String::new()
            };
            let joined = if target.starts_with('/') {
                None
            } else {
                clean(&format!("{base}/{target}"))
            };
            if let Some(t) = joined {
                links.insert(name, t);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.header().size().unwrap_or(0);
        if let Some(d) = blob_name_digest(&name) {
            if blobs.has(&d) {
                continue;
            }
            let mut w = blobs.writer(&d, Some(size))?;
            std::io::copy(&mut entry, &mut w)
                .map_err(|e| bad(input, format!("reading {name}: {e}")))?;
            w.commit()?;
        } else if (name.ends_with(".json") || name == "oci-layout" || name == "repositories")
            && size <= MAX_JSON
        {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(input, format!("reading {name}: {e}")))?;
            files.insert(name, data);
        } else {
            let mut w = blobs.writer_computed()?;
            std::io::copy(&mut entry, &mut w)
                .map_err(|e| bad(input, format!("reading {name}: {e}")))?;
            hashed.insert(name, w.commit_computed()?);
        }
    }
    Ok(Source::Archive {
        files,
        hashed,
        links,
    })
}

/// Make sure a blob is in the store: copied in from a layout directory (verified), or
/// read from the archive already.
fn ensure_blob(
    blobs: &BlobStore,
    input: &Path,
    source: &Source,
    digest: &str,
    size: u64,
) -> Result<(), ImageError> {
    let hex = digest_hex(digest)?;
    if blobs.has(digest) {
        return Ok(());
    }
    match source {
        Source::Dir(dir) => {
            let p = dir.join("blobs/sha256").join(hex);
            let mut f = std::fs::File::open(&p)
                .map_err(|e| bad(input, format!("blob {digest} is missing: {e}")))?;
            let mut w = blobs.writer(digest, Some(size))?;
            std::io::copy(&mut f, &mut w)
                .map_err(|e| bad(input, format!("copying blob {digest}: {e}")))?;
            w.commit()?;
            Ok(())
        }
        Source::Archive { .. } => Err(bad(input, format!("it lacks blob {digest}"))),
    }
}

fn name_of(
    input: &Path,
    annotations: &HashMap<String, String>,
    tag: Option<&Reference>,
) -> Result<Reference, ImageError> {
    if let Some(t) = tag {
        return Ok(t.clone());
    }
    for key in NAME_ANNOTATIONS {
        if let Some(v) = annotations.get(key)
            && (v.contains('/') || v.contains(':'))
        {
            return Reference::parse(v);
        }
    }
    Err(bad(
        input,
        "an image in it has no full name (only a bare tag, or none); name it with --tag",
    ))
}

fn load_oci(
    blobs: &BlobStore,
    input: &Path,
    source: &Source,
    index: &[u8],
    tag: Option<&Reference>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index: Manifest =
        serde_json::from_slice(index).map_err(|e| bad(input, format!("index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(bad(input, "index.json lists no images"));
    }
    if tag.is_some() && index.manifests.len() > 1 {
        return Err(bad(
            input,
            format!(
                "it holds {} images; --tag can name only one",
                index.manifests.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for desc in &index.manifests {
        let r = name_of(input, &desc.annotations, tag)?;
        let read = |digest: &str, size: u64| -> Result<Vec<u8>, ImageError> {
            if size > MAX_JSON {
                return Err(bad(input, format!("{digest} is over {MAX_JSON} bytes")));
            }
            ensure_blob(blobs, input, source, digest, size)?;
            Ok(blobs.read(digest)?)
        };
        let mut digest = desc.digest.clone();
        let mut bytes = read(&digest, desc.size)?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(input, format!("manifest {digest}: {e}")))?;
        let mut index_digest = None;
        let mt = manifest.media_type.clone().unwrap_or_default();
        if mt == OCI_INDEX || mt == DOCKER_LIST || !manifest.manifests.is_empty() {
            index_digest = Some(digest.clone());
            digest = pick_platform(&manifest, &r)?;
            let size = manifest
                .manifests
                .iter()
                .find(|m| m.digest == digest)
                .map_or(0, |m| m.size);
            bytes = read(&digest, size)?;
            manifest = serde_json::from_slice(&bytes)
                .map_err(|e| bad(input, format!("manifest {digest}: {e}")))?;
        }
        let (config_desc, layers) = manifest_parts(manifest, &r)?;
        let config = read(&config_desc.digest, config_desc.size)?;
        let (run, created) = parse_config(&config, &r)?;
        for l in &layers {
            ensure_blob(blobs, input, source, &l.digest, l.size)?;
        }
        out.push(ImageRecord::new(
            r.canonical(),
            digest,
            index_digest,
            config_desc.digest,
            layers,
            (run, created),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn compression_of(blobs: &BlobStore, digest: &str) -> Result<Compression, ImageError> {
    let mut magic = [0u8; 4];
    let path = blobs.path(digest)?;
    let n = std::fs::File::open(&path)
        .and_then(|mut f| f.read(&mut magic))
        .unwrap_or(0);
    Ok(match &magic[..n.min(4)] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

fn load_docker(
    blobs: &BlobStore,
    input: &Path,
    source: &Source,
    manifest: &[u8],
    tag: Option<&Reference>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let Source::Archive {
        files,
        hashed,
        links,
    } = source
    else {
        return Err(bad(input, "a docker save archive must be a tar file"));
    };
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest).map_err(|e| bad(input, format!("manifest.json: {e}")))?;
    if tag.is_some() && entries.len() > 1 {
        return Err(bad(
            input,
            format!("it holds {} images; --tag can name only one", entries.len()),
        ));
    }
    // An archive path to the digest of its content, following links.
    let digest_of = |name: &str| -> Result<String, ImageError> {
        let mut n = clean(name).unwrap_or_default();
        for _ in 0..8 {
            if let Some(d) = blob_name_digest(&n) {
                return Ok(d);
            }
            if let Some(d) = hashed.get(&n) {
                return Ok(d.clone());
            }
            match links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(bad(
            input,
            format!("manifest.json names {name:?}, which it does not hold"),
        ))
    };
    let mut out = Vec::new();
    for e in entries {
        let r = match tag {
            Some(t) => t.clone(),
            None => {
                let first = e
                    .repo_tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .ok_or_else(|| {
                        bad(input, "an image in it has no RepoTags; name it with --tag")
                    })?;
                Reference::parse(first)?
            }
        };
        let config_bytes = match files.get(&clean(&e.config).unwrap_or_default()) {
            Some(b) => b.clone(),
            None => blobs.read(&digest_of(&e.config)?)?,
        };
        let (run, created) = parse_config(&config_bytes, &r)?;
        let config_digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config_bytes))
        );
        if !blobs.has(&config_digest) {
            blobs.put(&config_digest, &config_bytes)?;
        }
        let mut layers = Vec::new();
        for l in &e.layers {
            let digest = digest_of(l)?;
            let size = std::fs::metadata(blobs.path(&digest)?)
                .map(|m| m.len())
                .unwrap_or(0);
            let compression = compression_of(blobs, &digest)?;
            layers.push(Layer {
                digest,
                size,
                compression,
            });
        }
        // The equivalent OCI manifest, so the image is stored like a pulled one.
        let media = |c: Compression| match c {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": super::registry::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": media(l.compression),
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(input, e.to_string()))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        blobs.put(&digest, &bytes)?;
        out.push(ImageRecord::new(
            r.canonical(),
            digest,
            None,
            config_digest,
            layers,
            (run, created),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_cleaned_and_climbing_ones_refused() {
        assert_eq!(
            clean("./blobs//sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("a/../b").as_deref(), Some("b"));
        assert_eq!(clean("../etc/passwd"), None);
        assert_eq!(clean("a/../../x"), None);
    }

    #[test]
    fn only_well_formed_blob_names_are_blobs() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_name_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(blob_name_digest("blobs/sha256/../../x"), None);
        assert_eq!(blob_name_digest(&format!("blobs/sha512/{hex}")), None);
    }
}
