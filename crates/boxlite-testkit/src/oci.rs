//! Test images made in the test: tar layers built entry by entry (owners, modes, links,
//! fifos, whiteouts, hostile names), compressed as asked, with an image config, pushed
//! to a [`crate::Registry`] through the distribution API or written as an OCI layout or
//! a `docker save` archive.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

impl Comp {
    fn media_type(self) -> &'static str {
        match self {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::None => tar.to_vec(),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => {
                ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }
}

/// A tar layer built entry by entry. Names are written raw, so a test can make hostile
/// ones (`../x`, `/etc/x`).
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Layer")
    }
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64), size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

fn set_raw_name(h: &mut tar::Header, name: &str) {
    let raw = &mut h.as_old_mut().name;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name.as_bytes());
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn raw(&mut self, mut h: tar::Header, name: &str, data: &[u8]) {
        assert!(name.len() < 100, "test names fit the old header");
        set_raw_name(&mut h, name);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
    }

    pub fn dir(mut self, name: &str, mode: u32, owner: (u64, u64)) -> Self {
        self.raw(header(tar::EntryType::Directory, mode, owner, 0), name, &[]);
        self
    }

    pub fn file(mut self, name: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> Self {
        let h = header(tar::EntryType::Regular, mode, owner, data.len() as u64);
        self.raw(h, name, data);
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, (0, 0), 0);
        h.set_link_name(target).unwrap();
        self.raw(h, name, &[]);
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, (0, 0), 0);
        let raw = &mut h.as_old_mut().linkname;
        raw.fill(0);
        raw[..target.len()].copy_from_slice(target.as_bytes());
        self.raw(h, name, &[]);
        self
    }

    pub fn fifo(mut self, name: &str, mode: u32, owner: (u64, u64)) -> Self {
        self.raw(header(tar::EntryType::Fifo, mode, owner, 0), name, &[]);
        self
    }

    /// A character device node.
    pub fn char_device(mut self, name: &str, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, mode, (0, 0), 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, name, &[]);
        self
    }

    /// A PAX extended header (`x`) with this body, for the entry that follows.
    pub fn pax_header(mut self, body: &[u8]) -> Self {
        let h = header(tar::EntryType::XHeader, 0o644, (0, 0), body.len() as u64);
        self.raw(h, "PaxHeader", body);
        self
    }

    /// PAX records (`key=value`) for the entry that follows.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|(k, v)| boxlite_archive::layers::pax_record(k.as_bytes(), v))
            .collect();
        self.pax_header(&body)
    }

    /// A GNU sparse entry claiming `size` bytes with (almost) no data: a tar bomb.
    pub fn sparse_bomb(mut self, name: &str, size: u64) -> Self {
        let mut h = header(tar::EntryType::GNUSparse, 0o644, (0, 0), 0);
        if let Some(gnu) = h.as_gnu_mut() {
            gnu.set_real_size(size);
        }
        self.raw(h, name, &[]);
        self
    }

    pub fn into_tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// One blob with its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    fn new(data: Vec<u8>, media_type: &str) -> Self {
        let digest = format!("sha256:{}", hex(&Sha256::digest(&data)));
        Blob {
            data,
            digest,
            media_type: media_type.into(),
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An image: layers, a config, and the manifest that ties them.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Blob,
    /// Uncompressed layer digests (the config's diff_ids).
    diff_ids: Vec<String>,
    tars: Vec<Vec<u8>>,
}

impl TestImage {
    /// `run` is the config's `config` object (Env, Entrypoint, Cmd, WorkingDir, User).
    pub fn new(layers: Vec<(Layer, Comp)>, run: serde_json::Value) -> Self {
        let tars = layers.into_iter().map(|(l, c)| (l.into_tar(), c)).collect();
        Self::from_tars(tars, run)
    }

    /// An image from layer tars made elsewhere (for example by `tar` from a root tree).
    pub fn from_tars(layers: Vec<(Vec<u8>, Comp)>, run: serde_json::Value) -> Self {
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut tars = Vec::new();
        for (tar, comp) in layers {
            diff_ids.push(format!("sha256:{}", hex(&Sha256::digest(&tar))));
            blobs.push(Blob::new(comp.compress(&tar), comp.media_type()));
            tars.push(tar);
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-11-22T00:00:00Z",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = Blob::new(
            serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(
            serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        TestImage {
            layers: blobs,
            config,
            manifest,
            diff_ids,
            tars,
        }
    }

    /// A root tree that `scripts/build-test-images.sh` built (`"clients"` for
    /// `clients.tar` in [`crate::test_images_dir`]), as an image of one uncompressed layer
    /// with `run` as its config.
    pub fn built(name: &str, run: serde_json::Value) -> Self {
        let path = crate::test_images_dir().join(format!("{name}.tar"));
        let tar = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with scripts/build-test-images.sh (as root)",
                path.display()
            )
        });
        Self::from_tars(vec![(tar, Comp::None)], run)
    }

    /// Push every blob and the manifest under `repo:tag` with the registry's HTTP API
    /// (plain HTTP, anonymous). Returns the manifest digest.
    pub fn push(&self, reg: &crate::Registry, repo: &str, tag: &str) -> String {
        for b in self.layers.iter().chain([&self.config]) {
            upload_blob(&reg.addr, repo, b);
        }
        let status = http(
            &reg.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", &self.manifest.media_type)],
            &self.manifest.data,
        )
        .0;
        assert_eq!(status, 201, "manifest push of {repo}:{tag}");
        self.manifest.digest.clone()
    }

    /// Write an OCI image layout directory with `tag` as its ref name.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for b in self.layers.iter().chain([&self.config, &self.manifest]) {
            std::fs::write(blobs.join(&b.digest[7..]), &b.data).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut desc = self.manifest.descriptor();
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Write a `docker save` archive: `manifest.json` naming the config, uncompressed
    /// layer tars, and `repo_tag`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
        let config_name = format!("{}.json", &self.config.digest[7..]);
        add(&config_name, &self.config.data);
        let mut layer_names = Vec::new();
        for (i, tar) in self.tars.iter().enumerate() {
            let name = format!("{}/layer.tar", &self.diff_ids[i][7..]);
            add(&name, tar);
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]);
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        b.into_inner().unwrap().flush().unwrap();
    }
}

fn upload_blob(addr: &str, repo: &str, b: &Blob) {
    let (status, headers, _) = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    );
    assert_eq!(status, 202, "starting a blob upload");
    let loc = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.clone())
        .expect("upload location");
    let path = loc
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or(&loc)
        .to_string();
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("{path}{sep}digest={}", b.digest),
        &[("Content-Type", "application/octet-stream")],
        &b.data,
    );
    assert_eq!(
        status,
        201,
        "blob upload: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A minimal HTTP/1.1 request over a fresh connection.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers, resp[split + 4..].to_vec())
}

/// A base layer with the host's static busybox as `/bin/busybox`, its applets as
/// symlinks, and a minimal `/etc` (root, nobody, and `app` 1000:1000 in groups `app`
/// and `extra`).
pub fn busybox_layer() -> Layer {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut l = Layer::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "srv",
    ] {
        let mode = match d {
            "tmp" => 0o1777,
            "root" => 0o700,
            _ => 0o755,
        };
        l = l.dir(&format!("{d}/"), mode, (0, 0));
    }
    l = l.file("bin/busybox", 0o755, (0, 0), &bb);
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "bin/busybox" && !applet.is_empty() {
            l = l.symlink(applet, "/bin/busybox");
        }
    }
    l.file(
        "etc/passwd",
        0o644,
        (0, 0),
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/srv:/bin/sh\n",
    )
    .file(
        "etc/group",
        0o644,
        (0, 0),
        b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
    )
}
