//! Trusting the box's CA. For secret substitution the host's network helper intercepts
//! TLS to the secrets' hosts with certificates of a CA minted for the box, and code in
//! the box must trust that CA without being told to (`docs/network.md`).
//!
//! The image is not changed. The agent stages two files in a tmpfs of its own
//! ([`STAGING_DIR`], see [`crate::staging`]): the CA alone, and the image's own bundle
//! followed by the CA. It bind-mounts the bundle over every path of [`BUNDLE_PATHS`] the
//! image has, resolved inside the container root (two paths that are one file get one
//! mount), and both files over fixed paths ([`BUNDLE`], [`CA`]; created empty when
//! missing, so an image without any bundle gets them too). From then on every execution
//! gets the variables of [`ENV`], which name the fixed paths, unless it sets them.
//!
//! The PEM comes from the host, but is checked like any input: at most [`MAX_PEM`]
//! bytes, exactly one `CERTIFICATE` block of valid base64 holding one DER structure, and
//! nothing else. The image's bundle is read through the root too, at most
//! [`MAX_IMAGE_BUNDLE`] bytes, and only from a regular file.
//!
//! Installing again (the host reconnected, say) replaces the CA: the staged files are
//! rewritten in place, which every mount of them shows; a path that already shows the
//! staged bundle is not mounted again; and the image's bundle is the one read the first
//! time, since its paths now show ours.
//!
//! Not covered: Java keystores, clients that pin certificates or carry their own roots
//! (Go binaries with embedded roots, Python's `certifi` without `REQUESTS_CA_BUNDLE`),
//! and tools that replace a bundle by renaming over it (`update-ca-certificates` in the
//! box fails with `EBUSY` at the mount, as tools do with Docker's `resolv.conf`).

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::staging::{self, StagingError};
use crate::sys;

/// The tmpfs in the agent's namespace holding the staged files.
pub const STAGING_DIR: &str = "/run/boxlite-trust";
/// Room for the largest bundle plus the CA, and what the box may append to it.
const STAGING_SIZE: &str = "9m";
/// Where images keep their CA bundle, by distribution; each one present is covered.
pub const BUNDLE_PATHS: [&str; 5] = [
    // Debian, Ubuntu, Alpine.
    "/etc/ssl/certs/ca-certificates.crt",
    // RHEL, Fedora.
    "/etc/pki/tls/certs/ca-bundle.crt",
    // RHEL's extracted trust store.
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // openSUSE.
    "/etc/ssl/ca-bundle.pem",
    // Alpine, and the macOS-style name.
    "/etc/ssl/cert.pem",
];
/// The combined bundle at a path every image has once the CA is installed.
pub const BUNDLE: &str = "/etc/boxlite/ca-bundle.crt";
/// The CA alone, for `NODE_EXTRA_CA_CERTS` (which adds to Node's own roots).
pub const CA: &str = "/etc/boxlite/ca.crt";
/// The staged files' names.
const BUNDLE_NAME: &str = "ca-bundle.crt";
const CA_NAME: &str = "ca.crt";
/// The largest CA PEM accepted.
pub const MAX_PEM: usize = 16 * 1024;
/// The largest image bundle read (Debian's is about 200 KiB).
pub const MAX_IMAGE_BUNDLE: u64 = 4 << 20;
/// What every execution gets once the CA is installed, unless it sets them itself.
pub const ENV: [(&str, &str); 4] = [
    ("SSL_CERT_FILE", BUNDLE),
    ("REQUESTS_CA_BUNDLE", BUNDLE),
    ("CURL_CA_BUNDLE", BUNDLE),
    ("NODE_EXTRA_CA_CERTS", CA),
];

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the CA certificate is {0} bytes long; at most {MAX_PEM} are accepted")]
    PemTooLarge(usize),
    #[error("the CA certificate is not one PEM certificate: {0}")]
    BadPem(String),
    #[error("the image's CA bundle {path} is larger than {MAX_IMAGE_BUNDLE} bytes")]
    BundleTooLarge { path: &'static str },
    #[error("reading the image's CA bundle {path}")]
    ReadBundle {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("opening the container root")]
    Root(#[source] io::Error),
    #[error(transparent)]
    Staging(#[from] StagingError),
}

/// Check a CA certificate in PEM and return it in canonical form: the BEGIN line, the
/// base64 in lines of 64 characters, the END line, each ending in a newline.
pub fn parse_pem(pem: &str) -> Result<String, TrustError> {
    if pem.len() > MAX_PEM {
        return Err(TrustError::PemTooLarge(pem.len()));
    }
    let bad = |what: String| Err(TrustError::BadPem(what));
    match pem.matches("-----BEGIN ").count() {
        0 => return bad(format!("no {BEGIN:?} line")),
        1 => {}
        n => return bad(format!("{n} PEM blocks; exactly one is accepted")),
    }
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(BEGIN) => {}
        Some(l) if l.starts_with("-----BEGIN ") => {
            return bad(format!("the PEM block is {l:?}, not {BEGIN:?}"));
        }
        _ => return bad(format!("text before the {BEGIN:?} line")),
    }
    let mut body = String::new();
    let mut ended = false;
    for l in lines.by_ref() {
        if l == END {
            ended = true;
            break;
        }
        if l.starts_with("-----") {
            return bad(format!("{l:?} where {END:?} was expected"));
        }
        body.push_str(l);
    }
    if !ended {
        return bad(format!("no {END:?} line"));
    }
    if lines.next().is_some() {
        return bad(format!("text after the {END:?} line"));
    }
    let der = decode_base64(&body).map_err(TrustError::BadPem)?;
    if !is_one_der_sequence(&der) {
        return bad("the base64 does not decode to one DER structure".into());
    }
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 60);
    out.push_str(BEGIN);
    out.push('\n');
    for chunk in body.as_bytes().chunks(64) {
        // The body is base64, all ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// Standard base64 with `=` padding, as PEM uses it.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Err("the certificate's base64 is empty".into());
    }
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "the base64 is {} characters long, not a multiple of 4",
            text.len()
        ));
    }
    let data = text.trim_end_matches('=');
    if text.len() - data.len() > 2 {
        return Err("the base64 has more than two '=' of padding".into());
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.chars() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            _ => return Err(format!("invalid base64 character {c:?}")),
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // What is left above `bits` is one byte.
            let [byte, ..] = (acc >> bits).to_le_bytes();
            out.push(byte);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Whether `der` is exactly one DER SEQUENCE (what a certificate is), by its header.
fn is_one_der_sequence(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else {
        return false;
    };
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(*first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return false;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    len == rest.len()
}

/// The combined bundle: the image's bundle, a line break if it does not end with one,
/// then the CA.
pub fn compose(image_bundle: &[u8], ca: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(image_bundle.len() + ca.len() + 1);
    out.extend_from_slice(image_bundle);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(ca.as_bytes());
    out
}

/// Installs the CA into one container root; remembers what the next call needs.
#[derive(Debug)]
pub struct Installer {
    root: PathBuf,
    staging: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    staging_mounted: bool,
    /// The image's own bundle, once read; its paths show ours after that.
    image_bundle: Option<Vec<u8>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("staging_mounted", &self.staging_mounted)
            .field(
                "image_bundle_len",
                &self.image_bundle.as_ref().map(Vec::len),
            )
            .finish()
    }
}

impl Installer {
    /// For the container root `root`, staging in a tmpfs mounted at `staging` on first
    /// use.
    pub fn new(root: impl Into<PathBuf>, staging: impl Into<PathBuf>) -> Self {
        Installer {
            root: root.into(),
            staging: staging.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// Install `pem` as the CA (replacing an earlier one) and return the container paths
    /// that now hold the combined bundle: those of [`BUNDLE_PATHS`] in order, then
    /// [`BUNDLE`]. Blocking (mounts, file I/O).
    pub fn install(&self, pem: &str) -> Result<Vec<String>, TrustError> {
        let ca = parse_pem(pem)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.staging_mounted {
            staging::mount_tmpfs(&self.staging, STAGING_SIZE)?;
            state.staging_mounted = true;
        }
        let root = sys::open_dir(&self.root).map_err(TrustError::Root)?;
        let ours = fs::symlink_metadata(self.staging.join(BUNDLE_NAME))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let targets = bundle_targets(&root, ours);
        if state.image_bundle.as_ref().is_none_or(Vec::is_empty)
            && let Some((path, fd)) = targets.first()
        {
            state.image_bundle = Some(read_bundle(fd, path)?);
        }
        let bundle = compose(state.image_bundle.as_deref().unwrap_or_default(), &ca);
        let bundle_file = staging::write(&self.staging, BUNDLE_NAME, &bundle)?;
        let ca_file = staging::write(&self.staging, CA_NAME, ca.as_bytes())?;
        for (path, target) in &targets {
            staging::bind(&bundle_file, target, path)?;
        }
        for (path, file) in [(BUNDLE, &bundle_file), (CA, &ca_file)] {
            let target = staging::target_in_root(&self.root, path)?;
            if !same_file(&target, file) {
                staging::bind(file, &target, path)?;
            }
        }
        Ok(BUNDLE_PATHS
            .into_iter()
            .chain([BUNDLE])
            .filter(|path| {
                staging::existing_in_root(&root, path)
                    .ok()
                    .flatten()
                    .is_some_and(|fd| same_file(&fd, &bundle_file))
            })
            .map(String::from)
            .collect())
    }
}

/// The bundle paths to mount over, in [`BUNDLE_PATHS`] order: each that exists, is a
/// regular file, and is not the staged bundle `ours` already; one per file. What is left
/// alone is noted on the console.
fn bundle_targets(root: &OwnedFd, ours: Option<(u64, u64)>) -> Vec<(&'static str, OwnedFd)> {
    let mut targets: Vec<(&'static str, OwnedFd)> = Vec::new();
    let mut seen = Vec::new();
    for path in BUNDLE_PATHS {
        let fd = match staging::existing_in_root(root, path) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            Err(e) => {
                note_left_alone(&e);
                continue;
            }
        };
        if let Err(e) = staging::check_regular(&fd, path) {
            note_left_alone(&e);
            continue;
        }
        let Ok(id) = staging::file_id(&fd) else {
            continue;
        };
        if Some(id) == ours || seen.contains(&id) {
            continue;
        }
        seen.push(id);
        targets.push((path, fd));
    }
    targets
}

fn note_left_alone(e: &StagingError) {
    eprintln!(
        "boxlite-guest: CA bundle not covered: {}",
        crate::error_chain(e)
    );
}

/// Read the image's bundle, a regular file opened as a path descriptor (reopened through
/// `/proc/self/fd`, so it is the file that was checked), at most [`MAX_IMAGE_BUNDLE`].
fn read_bundle(fd: &OwnedFd, path: &'static str) -> Result<Vec<u8>, TrustError> {
    let err = |source| TrustError::ReadBundle { path, source };
    let f = fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(err)?;
    let mut data = Vec::new();
    f.take(MAX_IMAGE_BUNDLE + 1)
        .read_to_end(&mut data)
        .map_err(err)?;
    if data.len() as u64 > MAX_IMAGE_BUNDLE {
        return Err(TrustError::BundleTooLarge { path });
    }
    Ok(data)
}

fn same_file(a: &impl std::os::fd::AsFd, b: &impl std::os::fd::AsFd) -> bool {
    matches!((staging::file_id(a), staging::file_id(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::tests::{Scratch, fingerprint, in_private_mounts};
    use std::os::unix::fs::{FileTypeExt, symlink};
    use std::path::Path;

    /// A throwaway self-signed P-256 CA (`CN=boxlite trust test CA`), as `openssl`
    /// writes it; `tests/trust.rs` of the library uses it too.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgICEAAwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVYm94bGl0
ZSB0cnVzdCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAw
WjAgMR4wHAYDVQQDDBVib3hsaXRlIHRydXN0IHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQmUj6MNLEMsbSx/42ijsrUxJD43aGHTv8KS+g2/Ssm7H+g
5ep4v+4s31SBFT33giMqDmyZnZ/xMbJ8Sz+OY/Ioo0UwQzASBgNVHRMBAf8ECDAG
AQH/AgEAMA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUdwg6NVccr6b+DBZg1fik
LCaLGPUwCgYIKoZIzj0EAwIDSAAwRQIgNpqzf1ZeKtYIEoEM/nFtpiUpqA4BsvUH
QU6FRMtTVKQCIQCt/0NDuvkDZ3I+KiuZMwSWYODABJonnc/u3YfETHOmSg==
-----END CERTIFICATE-----
";

    /// Another one (`CN=boxlite trust test CA 2`).
    const TEST_CA_2: &str = "-----BEGIN CERTIFICATE-----
MIIBnjCCAUSgAwIBAgIUCSRiILS72rn1pkwmkGibAelllP8wCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXYm94bGl0ZSB0cnVzdCB0ZXN0IENBIDIwIBcNMjYxMjAxMDgy
NzU0WhgPMjEyNjExMDcwODI3NTRaMCIxIDAeBgNVBAMMF2JveGxpdGUgdHJ1c3Qg
dGVzdCBDQSAyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5TtSkdA/IPbzOfwZ
TkujV0STRnqV8a0PE0cdjj97GVRGgW/MNjoq/bLM4/vRt2AjOEZ9eghRlqBIlpFn
VXwL66NWMFQwHQYDVR0OBBYEFN8WVq8tjm7IN/fvuRkbeGLuINwqMB8GA1UdIwQY
MBaAFN8WVq8tjm7IN/fvuRkbeGLuINwqMBIGA1UdEwEB/wQIMAYBAf8CAQAwCgYI
KoZIzj0EAwIDSAAwRQIhAMOjcE1WkfwLXfmxzrO1TcpPkpABB8Br4jxZgHPL+XmV
AiBNBriaEFCPdz7sqqdqUzOITGqX7QkiXNy902Oym4D/yg==
-----END CERTIFICATE-----
";

    const IMAGE_ROOTS: &str = "# the image's roots\nROOT A\nROOT B\n";

    /// A container root and a staging directory in a scratch directory.
    struct Image {
        _scratch: Scratch,
        root: PathBuf,
        staging: PathBuf,
    }

    impl Image {
        fn new(tag: &str) -> Self {
            let s = Scratch::new(&format!("trust-{tag}"));
            let (root, staging) = (s.0.join("root"), s.0.join("staging"));
            fs::create_dir_all(root.join("etc")).unwrap();
            Image {
                _scratch: s,
                root,
                staging,
            }
        }

        fn file(&self, path: &str, contents: &str) -> &Self {
            let p = self.root.join(path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, contents).unwrap();
            self
        }

        fn symlink(&self, path: &str, target: &str) -> &Self {
            let p = self.root.join(path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
            self
        }

        fn read(&self, path: &str) -> String {
            fs::read_to_string(self.root.join(path.trim_start_matches('/'))).unwrap()
        }

        /// Run `f` with an installer for this root in a private mount namespace; it
        /// returns what the box would see (the mounts end with the namespace).
        fn booted<T: Send + 'static>(
            &self,
            f: impl FnOnce(&Path, &Installer) -> T + Send + 'static,
        ) -> T {
            let (root, staging) = (self.root.clone(), self.staging.clone());
            in_private_mounts(move || f(&root, &Installer::new(&root, &staging)))
        }
    }

    fn read_in(root: &Path, path: &str) -> String {
        fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap_or_default()
    }

    /// Mounts whose mount point is under `root`, in this thread's namespace.
    fn mounts_under(root: &Path) -> usize {
        let prefix = format!("{}/", root.display());
        fs::read_to_string("/proc/thread-self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
            .count()
    }

    fn bad_pem_reason(pem: &str) -> String {
        match parse_pem(pem) {
            Err(TrustError::BadPem(why)) => why,
            other => panic!("{pem:?} gave {other:?}"),
        }
    }

    #[test]
    fn a_pem_certificate_is_accepted_in_canonical_form() {
        let messy = format!("\r\n  {}\r\n\n", TEST_CA.trim_end().replace('\n', "\r\n  "));

        let pem = parse_pem(&messy).unwrap();

        assert_eq!(pem, TEST_CA);
    }

    #[test]
    fn base64_in_long_lines_is_rewrapped_at_64_columns() {
        let body: String = TEST_CA
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let one_line = format!("{BEGIN}\n{body}\n{END}\n");

        let pem = parse_pem(&one_line).unwrap();

        assert_eq!(pem, TEST_CA);
    }

    #[test]
    fn malformed_pems_are_refused_naming_what_is_wrong() {
        let body: String = TEST_CA
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let cases = [
            ("".to_string(), "no \"-----BEGIN CERTIFICATE-----\" line"),
            (
                "hello".to_string(),
                "no \"-----BEGIN CERTIFICATE-----\" line",
            ),
            (format!("{TEST_CA}{TEST_CA_2}"), "2 PEM blocks"),
            (
                TEST_CA.replace("CERTIFICATE", "PRIVATE KEY"),
                "is \"-----BEGIN PRIVATE KEY-----\"",
            ),
            (format!("subject=CN\n{TEST_CA}"), "text before"),
            (format!("{TEST_CA}trailer\n"), "text after"),
            (
                TEST_CA.replace(END, ""),
                "no \"-----END CERTIFICATE-----\" line",
            ),
            (format!("{BEGIN}\n{END}\n"), "base64 is empty"),
            (
                format!("{BEGIN}\n{}\n{END}\n", body.replacen('M', "*", 1)),
                "invalid base64 character '*'",
            ),
            (
                format!("{BEGIN}\n{}\n{END}\n", &body[..body.len() - 1]),
                "not a multiple of 4",
            ),
            (format!("{BEGIN}\nAAAA\n{END}\n"), "one DER structure"),
            (
                format!("{BEGIN}\n{}\n{END}\n", &body[..body.len() - 4]),
                "one DER structure",
            ),
        ];

        for (pem, expected) in cases {
            let why = bad_pem_reason(&pem);
            assert!(why.contains(expected), "{pem:?}: {why:?}");
        }
    }

    #[test]
    fn a_pem_over_16_kib_is_refused_before_it_is_parsed() {
        let huge = format!("{TEST_CA}{}", "\n".repeat(MAX_PEM));

        let r = parse_pem(&huge);

        assert!(
            matches!(r, Err(TrustError::PemTooLarge(n)) if n == huge.len()),
            "{r:?}"
        );
    }

    #[test]
    fn the_bundle_is_the_image_bundle_then_the_ca() {
        assert_eq!(
            compose(b"ROOT A\n", TEST_CA),
            format!("ROOT A\n{TEST_CA}").into_bytes()
        );
        assert_eq!(
            compose(b"ROOT A", TEST_CA),
            format!("ROOT A\n{TEST_CA}").into_bytes()
        );
        assert_eq!(compose(b"", TEST_CA), TEST_CA.as_bytes());
    }

    #[test]
    fn every_bundle_path_shows_the_image_roots_then_the_ca_and_the_image_stays_unchanged() {
        let img = Image::new("compose");
        img.file("/etc/ssl/certs/ca-certificates.crt", IMAGE_ROOTS)
            .file("/etc/pki/tls/certs/ca-bundle.crt", "OTHER ROOTS\n");

        let (covered, debian, rhel, bundle, ca) = img.booted(|root, installer| {
            (
                installer.install(TEST_CA).unwrap(),
                read_in(root, "/etc/ssl/certs/ca-certificates.crt"),
                read_in(root, "/etc/pki/tls/certs/ca-bundle.crt"),
                read_in(root, BUNDLE),
                read_in(root, CA),
            )
        });

        let expected = format!("{IMAGE_ROOTS}{TEST_CA}");
        assert_eq!(
            covered,
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                BUNDLE
            ]
        );
        assert_eq!(debian, expected);
        assert_eq!(rhel, expected);
        assert_eq!(bundle, expected);
        assert_eq!(ca, TEST_CA);
        assert_eq!(img.read("/etc/ssl/certs/ca-certificates.crt"), IMAGE_ROOTS);
        assert_eq!(
            img.read("/etc/pki/tls/certs/ca-bundle.crt"),
            "OTHER ROOTS\n"
        );
        // What stays of the fixed paths is their empty mount points.
        assert_eq!(img.read(BUNDLE), "");
        assert_eq!(img.read(CA), "");
    }

    #[test]
    fn symlinked_bundle_paths_resolve_inside_the_root_and_share_one_mount() {
        let img = Image::new("symlinks");
        img.file("/etc/ssl/certs/ca-certificates.crt", IMAGE_ROOTS)
            .symlink("/etc/ssl/cert.pem", "certs/ca-certificates.crt")
            .symlink(
                "/etc/ssl/ca-bundle.pem",
                "/etc/ssl/certs/ca-certificates.crt",
            );

        let (covered, cert_pem, mounts) = img.booted(|root, installer| {
            (
                installer.install(TEST_CA).unwrap(),
                read_in(root, "/etc/ssl/cert.pem"),
                mounts_under(root),
            )
        });

        assert_eq!(
            covered,
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/ssl/ca-bundle.pem",
                "/etc/ssl/cert.pem",
                BUNDLE
            ]
        );
        assert_eq!(cert_pem, format!("{IMAGE_ROOTS}{TEST_CA}"));
        // One for the image's bundle, one for each fixed path.
        assert_eq!(mounts, 3);
    }

    #[test]
    fn a_bundle_symlink_pointing_out_of_the_root_reads_and_covers_nothing_of_the_host() {
        let img = Image::new("escape");
        let host_bundle = "/etc/ssl/certs/ca-certificates.crt";
        img.symlink("/etc/ssl/cert.pem", host_bundle).symlink(
            "/etc/ssl/ca-bundle.pem",
            "../../../../../../../etc/ssl/certs/ca-certificates.crt",
        );
        let host_before = fingerprint(host_bundle);

        let (covered, bundle) = img
            .booted(|root, installer| (installer.install(TEST_CA).unwrap(), read_in(root, BUNDLE)));

        assert_eq!(covered, [BUNDLE]);
        assert_eq!(bundle, TEST_CA);
        assert_eq!(fingerprint(host_bundle), host_before);
        assert!(!img.root.join("etc/ssl/certs").exists());
    }

    #[test]
    fn a_directory_or_fifo_in_place_of_a_bundle_is_left_alone() {
        let img = Image::new("special");
        fs::create_dir_all(img.root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        let fifo = sys::cstr(img.root.join("etc/ssl/cert.pem")).unwrap();
        // SAFETY: fifo is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        img.file("/etc/pki/tls/certs/ca-bundle.crt", IMAGE_ROOTS);

        let (covered, bundle) = img
            .booted(|root, installer| (installer.install(TEST_CA).unwrap(), read_in(root, BUNDLE)));

        assert_eq!(covered, ["/etc/pki/tls/certs/ca-bundle.crt", BUNDLE]);
        assert_eq!(bundle, format!("{IMAGE_ROOTS}{TEST_CA}"));
        assert!(img.root.join("etc/ssl/certs/ca-certificates.crt").is_dir());
        assert!(
            fs::symlink_metadata(img.root.join("etc/ssl/cert.pem"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn an_image_without_a_bundle_gets_the_ca_alone_at_the_fixed_paths() {
        let img = Image::new("nobundle");

        let (covered, bundle, ca) = img.booted(|root, installer| {
            (
                installer.install(TEST_CA).unwrap(),
                read_in(root, BUNDLE),
                read_in(root, CA),
            )
        });

        assert_eq!(covered, [BUNDLE]);
        assert_eq!(bundle, TEST_CA);
        assert_eq!(ca, TEST_CA);
        assert!(!img.root.join("etc/ssl").exists());
    }

    #[test]
    fn installing_again_replaces_the_ca_without_appending_or_mounting_again() {
        let img = Image::new("again");
        img.file("/etc/ssl/certs/ca-certificates.crt", IMAGE_ROOTS);

        let (first_mounts, covered, debian, ca, mounts) = img.booted(|root, installer| {
            installer.install(TEST_CA).unwrap();
            let first_mounts = mounts_under(root);
            let covered = installer.install(TEST_CA_2).unwrap();
            (
                first_mounts,
                covered,
                read_in(root, "/etc/ssl/certs/ca-certificates.crt"),
                read_in(root, CA),
                mounts_under(root),
            )
        });

        assert_eq!(covered, ["/etc/ssl/certs/ca-certificates.crt", BUNDLE]);
        assert_eq!(debian, format!("{IMAGE_ROOTS}{TEST_CA_2}"));
        assert_eq!(ca, TEST_CA_2);
        assert_eq!(first_mounts, 3);
        assert_eq!(mounts, 3);
    }

    #[test]
    fn a_bundle_that_appears_after_an_install_into_a_bare_image_is_covered_next_time() {
        let img = Image::new("later");

        let (debian, bundle) = img.booted(|root, installer| {
            installer.install(TEST_CA).unwrap();
            fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
            fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), IMAGE_ROOTS).unwrap();
            installer.install(TEST_CA).unwrap();
            (
                read_in(root, "/etc/ssl/certs/ca-certificates.crt"),
                read_in(root, BUNDLE),
            )
        });

        assert_eq!(debian, format!("{IMAGE_ROOTS}{TEST_CA}"));
        assert_eq!(bundle, debian);
    }

    #[test]
    fn a_bad_pem_is_refused_before_anything_is_staged_or_created() {
        let img = Image::new("badpem");
        img.file("/etc/ssl/certs/ca-certificates.crt", IMAGE_ROOTS);

        let (r, mounts) = img
            .booted(|root, installer| (installer.install("not a certificate"), mounts_under(root)));

        assert!(matches!(r, Err(TrustError::BadPem(_))), "{r:?}");
        assert_eq!(mounts, 0);
        assert!(!img.staging.exists());
        assert!(!img.root.join("etc/boxlite").exists());
    }

    #[test]
    fn an_image_bundle_over_the_limit_is_refused_naming_it() {
        let img = Image::new("huge");
        let huge = "A".repeat(usize::try_from(MAX_IMAGE_BUNDLE).unwrap() + 1);
        img.file("/etc/ssl/cert.pem", &huge);

        let r = img.booted(|_, installer| installer.install(TEST_CA));

        assert!(
            matches!(
                r,
                Err(TrustError::BundleTooLarge {
                    path: "/etc/ssl/cert.pem"
                })
            ),
            "{r:?}"
        );
    }
}
