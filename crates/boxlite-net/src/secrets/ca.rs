//! The per-box certificate authority that lets the helper terminate the guest's TLS to a
//! secret's hosts, and nowhere else.
//!
//! The guest trusts this CA, so the CA is a skeleton key for every name it can vouch for.
//! Three things keep that key small:
//!
//! - **One CA per box, minted at each helper start.** A peer that shares one CA across
//!   sandboxes (microsandbox) lets one box's trust vouch for another's traffic; a CA persisted
//!   and reloaded without an expiry check (BoxLite) outlives its purpose. Ours is valid for
//!   30 days, longer than any single run; a restart mints a new one.
//! - **The key never leaves process memory.** No method returns it or writes it anywhere,
//!   `Debug` omits it, and its serialized form is zeroed on drop.
//! - **X.509 name constraints.** The CA certificate itself permits only the secrets' host
//!   names (and excludes every IP address), so even a leaked key, or a bug in this module,
//!   cannot mint a certificate the guest's TLS stack would accept for another name. The
//!   constraint is coarser than the host patterns: an RFC 5280 `dNSName` subtree covers a
//!   name *and everything below it*, so `api.example.com` also permits `x.api.example.com`,
//!   and `*.example.com` (encoded as the subtree `example.com`) also permits the apex
//!   `example.com`. [`CertAuthority::leaf`] closes that gap by refusing any name the
//!   patterns themselves do not match ([`crate::policy::name_matches`]).
//!
//! Both the CA and its leaves are backdated by an hour: a guest clock that lags the host's
//! would otherwise reject a fresh certificate as not yet valid (microsandbox #969,
//! `CERT_NOT_YET_VALID` in Node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use crate::policy::{NamePattern, name_matches};

/// How far `notBefore` lies behind the clock, for guests whose clocks lag.
pub const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// The CA outlives any single run of a box; a restart mints a new CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Leaves are short-lived and reissued from the cache well before they expire.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// A cached leaf closer than this to its expiry is reissued.
pub const REISSUE_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaves kept per CA. A box talks to a handful of secret hosts; the bound only stops a
/// guest that cycles through the names under a wildcard from growing the cache.
pub const LEAF_CACHE: usize = 256;

/// Why the CA could not be minted or could not issue a leaf. No message carries key
/// material; names are the guest's SNI or the operator's host patterns.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("no secret hosts given; a CA is only minted constrained to the hosts it serves")]
    NoHosts,
    #[error("secret host {0:?} cannot be a certificate name constraint (not ASCII)")]
    InvalidHost(String),
    #[error("{0:?} is not a host of any secret; no certificate is issued for it")]
    OutOfScope(String),
    #[error("{0:?} cannot be a certificate subject name")]
    InvalidName(String),
    #[error("the box's CA expired; restart the box to mint a new one")]
    Expired,
    #[error("the system clock is outside the range a certificate can carry")]
    Clock,
    #[error("generating a certificate failed")]
    Generate(#[source] rcgen::Error),
    #[error("the TLS library refused a generated key")]
    Key(#[source] rustls::Error),
}

/// A box's CA: its certificate, its signing key (in memory only), and a cache of the leaves
/// it has issued.
pub struct CertAuthority {
    /// The CA's own parameters: rcgen takes the issuer's name, key usages and key identifier
    /// from them when it signs a leaf.
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
    common_name: String,
    hosts: Vec<NamePattern>,
    /// Seconds since the epoch; leaves never outlive the CA.
    not_after: u64,
    leaves: Mutex<LeafCache>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self
            .leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len();
        f.debug_struct("CertAuthority")
            .field("common_name", &self.common_name)
            .field("hosts", &self.hosts)
            .field("not_after", &self.not_after)
            .field("cached_leaves", &cached)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Drop for CertAuthority {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl CertAuthority {
    /// Mint a fresh CA for these host patterns at `now`: a new P-256 key, a random serial and
    /// a distinguishing name, so two boxes (or two runs of one box) never share a CA.
    pub fn mint(hosts: &[NamePattern], now: SystemTime) -> Result<CertAuthority, CaError> {
        if hosts.is_empty() {
            return Err(CaError::NoHosts);
        }
        let mut patterns: Vec<NamePattern> = Vec::new();
        let mut permitted = Vec::new();
        for p in hosts {
            // `*.example.com` becomes the subtree `example.com`: dNSName constraints have no
            // wildcard syntax, and a subtree already covers every name below it.
            let (NamePattern::Exact(name) | NamePattern::Wildcard(name)) = p;
            if Ia5String::try_from(name.as_str()).is_err() {
                return Err(CaError::InvalidHost(name.clone()));
            }
            if !patterns.contains(p) {
                patterns.push(p.clone());
            }
            let subtree = GeneralSubtree::DnsName(name.clone());
            if !permitted.contains(&subtree) {
                permitted.push(subtree);
            }
        }

        let now = whole_secs(now)?;
        let not_before = now.checked_sub(BACKDATE.as_secs()).ok_or(CaError::Clock)?;
        let not_after = now
            .checked_add(CA_LIFETIME.as_secs())
            .ok_or(CaError::Clock)?;
        let common_name = format!("boxlite box CA {}", hex(&rand::random::<[u8; 4]>()));

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "boxlite");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name.as_str());
        params.serial_number = Some(random_serial());
        params.not_before = to_datetime(not_before)?;
        params.not_after = to_datetime(not_after)?;
        // pathlen 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Verifiers that treat a CA's EKU as a constraint (OpenSSL, Go) then also refuse its
        // leaves for client auth, code signing and the rest.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // With no iPAddress constraint, IP-address names would be unconstrained (RFC 5280
        // constrains each name form separately); excluding both address families closes that.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(CertAuthority {
            params,
            key,
            cert,
            common_name,
            hosts: patterns,
            not_after,
            leaves: Mutex::new(LeafCache::default()),
        })
    }

    /// The CA certificate in PEM, for the guest's trust bundles. Public.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The host patterns this CA serves (deduplicated).
    pub fn hosts(&self) -> &[NamePattern] {
        &self.hosts
    }

    /// When the CA expires; no leaf is issued after it.
    pub fn not_after(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.not_after)
    }

    /// A leaf for `name` (normalized: lowercase, no trailing dot), ready for rustls, from the
    /// cache when a fresh one is there.
    ///
    /// Refuses a name that no host pattern matches: the TLS server hands this the guest's
    /// SNI, and the guest must not obtain a certificate for a name it could then present to
    /// its own clients as trusted.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        self.leaf_at(name, SystemTime::now())
    }

    /// [`leaf`](Self::leaf) at a given time (the clock is a parameter so tests can move it).
    pub fn leaf_at(&self, name: &str, now: SystemTime) -> Result<Arc<CertifiedKey>, CaError> {
        if !self.hosts.iter().any(|p| name_matches(p, name)) {
            return Err(CaError::OutOfScope(name.to_owned()));
        }
        let now = whole_secs(now)?;
        if now >= self.not_after {
            return Err(CaError::Expired);
        }
        let mut cache = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        cache.tick += 1;
        let tick = cache.tick;
        if let Some(entry) = cache.entries.get_mut(name)
            && entry.fresh(now, self.not_after)
        {
            entry.last_used = tick;
            return Ok(entry.key.clone());
        }
        // Issued under the lock: a burst of handshakes for one name gets one leaf, and
        // signing takes well under a millisecond.
        let (key, not_before, not_after) = self.issue(name, now)?;
        if cache.entries.len() >= LEAF_CACHE && !cache.entries.contains_key(name) {
            cache.evict_least_recently_used();
        }
        cache.entries.insert(
            name.to_owned(),
            CachedLeaf {
                key: key.clone(),
                not_before,
                not_after,
                last_used: tick,
            },
        );
        Ok(key)
    }

    /// Sign a leaf for `name` without the pattern check, to prove the name constraints hold
    /// on their own.
    #[cfg(test)]
    fn sign_unchecked(&self, san: SanType, now: SystemTime) -> Result<CertifiedKey, CaError> {
        self.sign(san, whole_secs(now)?).map(|(key, _, _)| key)
    }

    fn issue(&self, name: &str, now: u64) -> Result<(Arc<CertifiedKey>, u64, u64), CaError> {
        let san = Ia5String::try_from(name)
            .map(SanType::DnsName)
            .map_err(|_| CaError::InvalidName(name.to_owned()))?;
        let (key, not_before, not_after) = self.sign(san, now)?;
        Ok((Arc::new(key), not_before, not_after))
    }

    /// One leaf: a fresh P-256 key, the single name as its SAN, server auth only.
    fn sign(&self, san: SanType, now: u64) -> Result<(CertifiedKey, u64, u64), CaError> {
        let not_before = now.checked_sub(BACKDATE.as_secs()).ok_or(CaError::Clock)?;
        let not_after = now
            .checked_add(LEAF_LIFETIME.as_secs())
            .ok_or(CaError::Clock)?
            .min(self.not_after);

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let SanType::DnsName(name) = &san {
            params
                .distinguished_name
                .push(DnType::CommonName, name.as_str());
        }
        params.subject_alt_names = vec![san];
        params.serial_number = Some(random_serial());
        params.not_before = to_datetime(not_before)?;
        params.not_after = to_datetime(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        let leaf_key = Zeroizing::new(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?,
        );
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&*leaf_key, &issuer)
            .map_err(CaError::Generate)?;
        // Borrowed from the key pair, which zeroes its serialized form when dropped.
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialized_der()));
        let signing_key =
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&pkcs8).map_err(CaError::Key)?;
        let chain = vec![CertificateDer::from(cert), self.cert.der().clone()];
        Ok((CertifiedKey::new(chain, signing_key), not_before, not_after))
    }
}

#[derive(Default)]
struct LeafCache {
    entries: HashMap<String, CachedLeaf>,
    /// A logical clock for least-recently-used eviction.
    tick: u64,
}

impl LeafCache {
    /// A linear scan: the cache is small and eviction rare.
    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.entries.remove(&name);
        }
    }
}

struct CachedLeaf {
    key: Arc<CertifiedKey>,
    not_before: u64,
    not_after: u64,
    last_used: u64,
}

impl CachedLeaf {
    /// Usable now and not about to expire. A leaf already cut short by the CA's own expiry
    /// stays: reissuing could not make it last longer.
    fn fresh(&self, now: u64, ca_not_after: u64) -> bool {
        now >= self.not_before
            && now < self.not_after
            && (now.saturating_add(REISSUE_MARGIN.as_secs()) < self.not_after
                || self.not_after >= ca_not_after)
    }
}

/// A positive 127-bit serial with a non-zero leading byte (so its DER encoding has a fixed
/// length), unpredictable to the guest.
fn random_serial() -> SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Certificates carry whole seconds; computing in them keeps the cache's view of a leaf's
/// validity identical to what the certificate says.
fn whole_secs(t: SystemTime) -> Result<u64, CaError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CaError::Clock)
}

fn to_datetime(secs: u64) -> Result<OffsetDateTime, CaError> {
    let secs = i64::try_from(secs).map_err(|_| CaError::Clock)?;
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::Clock)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    /// 2026-01-01T00:00:00Z: tests pin the clock so dates are exact.
    const T0: u64 = 1_767_225_600;
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn exact(name: &str) -> NamePattern {
        NamePattern::Exact(name.into())
    }

    fn wildcard(suffix: &str) -> NamePattern {
        NamePattern::Wildcard(suffix.into())
    }

    fn ca() -> CertAuthority {
        CertAuthority::mint(&[exact("api.example.com"), wildcard("example.org")], at(T0)).unwrap()
    }

    /// rustls' own server verifier with the box CA as the only root, as a guest using rustls
    /// would verify.
    fn verify(
        ca: &CertAuthority,
        chain: &[CertificateDer<'static>],
        name: &str,
        secs: u64,
    ) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &server_name,
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(secs)),
            )
            .map(|_| ())
    }

    /// What `openssl verify` says of the leaf with the CA as the only trust anchor, or None
    /// when no openssl binary is installed.
    fn openssl_verify(ca: &CertAuthority, leaf: &CertificateDer<'_>) -> Option<(bool, String)> {
        let dir = std::env::temp_dir().join(format!("bxnet-ca-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("leaf.pem"), pem(leaf)).unwrap();
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(dir.join("ca.pem"))
            .arg(dir.join("leaf.pem"))
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        match out {
            Ok(out) => Some((
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("openssl is not installed; skipping the openssl cross-check");
                None
            }
            Err(e) => panic!("running openssl: {e}"),
        }
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_leaf_for_a_secret_host_verifies_against_the_box_ca_alone() {
        let ca = ca();
        let leaf = ca.leaf_at("api.example.com", at(T0)).unwrap();
        assert_eq!(leaf.cert.len(), 2, "chain is leaf then CA");
        assert_eq!(leaf.cert[1], ca.cert_der());
        leaf.keys_match().unwrap();
        verify(&ca, &leaf.cert, "api.example.com", T0).unwrap();
        let other = verify(&ca, &leaf.cert, "other.example.com", T0).unwrap_err();
        assert!(
            format!("{other:?}").contains("NotValidForName"),
            "{other:?}"
        );
    }

    #[test]
    fn name_constraints_make_the_ca_useless_for_other_names_even_when_it_signs_them() {
        let now = SystemTime::now();
        let secs = whole_secs(now).unwrap();
        let ca =
            CertAuthority::mint(&[exact("api.example.com"), wildcard("example.org")], now).unwrap();
        let evil = ca
            .sign_unchecked(
                SanType::DnsName(Ia5String::try_from("evil.test").unwrap()),
                now,
            )
            .unwrap();
        let err = verify(&ca, &evil.cert, "evil.test", secs).unwrap_err();
        assert!(
            format!("{err:?}").contains("NameConstraintViolation"),
            "{err:?}"
        );
        let ip = ca
            .sign_unchecked(SanType::IpAddress([192, 0, 2, 1].into()), now)
            .unwrap();
        let err = verify(&ca, &ip.cert, "192.0.2.1", secs).unwrap_err();
        assert!(
            format!("{err:?}").contains("NameConstraintViolation"),
            "{err:?}"
        );
        // The apex of a wildcard is inside the dNSName subtree, so only leaf() keeps it out.
        let apex = ca
            .sign_unchecked(
                SanType::DnsName(Ia5String::try_from("example.org").unwrap()),
                now,
            )
            .unwrap();
        verify(&ca, &apex.cert, "example.org", secs).unwrap();
        assert!(matches!(
            ca.leaf_at("example.org", now),
            Err(CaError::OutOfScope(_))
        ));

        let good = ca.leaf_at("x.y.example.org", now).unwrap();
        if let Some((ok, out)) = openssl_verify(&ca, &good.cert[0]) {
            assert!(ok, "openssl refused an in-scope leaf: {out}");
            let (ok, out) = openssl_verify(&ca, &evil.cert[0]).unwrap();
            assert!(!ok, "openssl accepted evil.test: {out}");
            assert!(out.contains("subtree violation"), "{out}");
        }
    }

    #[test]
    fn leaf_refuses_other_names_caches_and_follows_the_wildcard_matcher() {
        let ca = ca();
        for name in [
            "evil.test",
            "example.com",
            "x.api.example.com",
            "example.org",
            "evilexample.org",
            "example.org.evil.test",
            "API.EXAMPLE.COM",
        ] {
            assert!(
                matches!(ca.leaf_at(name, at(T0)), Err(CaError::OutOfScope(_))),
                "{name}"
            );
        }
        let first = ca.leaf_at("api.example.com", at(T0)).unwrap();
        let second = ca.leaf_at("api.example.com", at(T0 + HOUR)).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let deep = ca.leaf_at("a.b.example.org", at(T0)).unwrap();
        verify(&ca, &deep.cert, "a.b.example.org", T0).unwrap();
        assert!(!Arc::ptr_eq(&first, &deep));
    }

    #[test]
    fn a_leaf_near_expiry_is_reissued_and_the_cache_is_bounded() {
        let ca = ca();
        let first = ca.leaf_at("api.example.com", at(T0)).unwrap();
        let later = ca.leaf_at("api.example.com", at(T0 + 6 * DAY + 1)).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &later),
            "reissued within a day of expiry"
        );
        verify(&ca, &later.cert, "api.example.com", T0 + 12 * DAY).unwrap();

        for i in 0..LEAF_CACHE + 10 {
            ca.leaf_at(&format!("n{i}.example.org"), at(T0)).unwrap();
        }
        assert_eq!(ca.leaves.lock().unwrap().entries.len(), LEAF_CACHE);
    }

    #[test]
    fn validity_is_backdated_an_hour_and_bounded_by_the_ca() {
        let ca = ca();
        let (ca_from, ca_until) = validity(&ca.cert_der());
        assert!(ca_from <= T0 - HOUR);
        assert!(ca_until - T0 <= 30 * DAY);
        assert_eq!(ca.not_after(), at(ca_until));

        let leaf = ca.leaf_at("api.example.com", at(T0)).unwrap();
        let (from, until) = validity(&leaf.cert[0]);
        assert!(from <= T0 - HOUR);
        assert_eq!(until, T0 + 7 * DAY);
        verify(&ca, &leaf.cert, "api.example.com", T0 - HOUR).unwrap();
        let early = verify(&ca, &leaf.cert, "api.example.com", T0 - HOUR - 1).unwrap_err();
        assert!(format!("{early:?}").contains("NotValidYet"), "{early:?}");

        // A leaf issued late in the CA's life ends with the CA, and none is issued after it.
        let late = ca.leaf_at("api.example.com", at(T0 + 29 * DAY)).unwrap();
        assert_eq!(validity(&late.cert[0]).1, ca_until);
        assert!(matches!(
            ca.leaf_at("api.example.com", at(ca_until)),
            Err(CaError::Expired)
        ));
    }

    #[test]
    fn every_mint_has_its_own_key_serial_and_name() {
        let hosts = [exact("api.example.com")];
        let a = CertAuthority::mint(&hosts, at(T0)).unwrap();
        let b = CertAuthority::mint(&hosts, at(T0)).unwrap();
        assert_ne!(a.key.public_key_raw(), b.key.public_key_raw());
        assert_ne!(serial(&a.cert_der()), serial(&b.cert_der()));
        assert_ne!(a.common_name, b.common_name);
        assert!(a.common_name.starts_with("boxlite box CA "));
        assert!(matches!(
            CertAuthority::mint(&[], at(T0)),
            Err(CaError::NoHosts)
        ));
    }

    #[test]
    fn debug_shows_no_key_or_certificate_bytes() {
        let ca = ca();
        ca.leaf_at("api.example.com", at(T0)).unwrap();
        let debug = format!("{ca:?} {:?}", CaError::Expired);
        let key = ca.key.serialized_der();
        assert!(
            !debug.contains("BEGIN") && !debug.contains("PRIVATE"),
            "{debug}"
        );
        assert!(!debug.contains(&hex(&key[key.len() - 16..])), "{debug}");
        assert!(
            !debug.contains(&format!("{:?}", &key[key.len() - 8..])),
            "{debug}"
        );
        assert!(debug.contains("[redacted]"));
    }

    // A minimal DER walk, enough to read a certificate's serial and validity.

    /// The tag and contents of the element at the start of `der`, and what follows it.
    fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, header) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + count)
            }
        };
        (tag, &der[header..header + len], &der[header + len..])
    }

    /// The TBSCertificate's fields, after the version.
    fn tbs_fields(cert: &[u8]) -> Vec<(u8, &[u8])> {
        let (_, certificate, _) = tlv(cert);
        let (_, mut tbs, _) = tlv(certificate);
        let mut fields = Vec::new();
        while !tbs.is_empty() {
            let (tag, contents, rest) = tlv(tbs);
            if tag != 0xa0 {
                fields.push((tag, contents));
            }
            tbs = rest;
        }
        fields
    }

    fn serial(cert: &[u8]) -> Vec<u8> {
        tbs_fields(cert)[0].1.to_vec()
    }

    /// (notBefore, notAfter) in seconds since the epoch.
    fn validity(cert: &[u8]) -> (u64, u64) {
        let (_, validity) = tbs_fields(cert)[3];
        let (t1, from, rest) = tlv(validity);
        let (t2, until, _) = tlv(rest);
        (asn1_time(t1, from), asn1_time(t2, until))
    }

    fn asn1_time(tag: u8, text: &[u8]) -> u64 {
        let text = std::str::from_utf8(text).unwrap();
        let (year, rest) = match tag {
            0x17 => {
                let yy: i32 = text[..2].parse().unwrap();
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
            }
            0x18 => (text[..4].parse().unwrap(), &text[4..]),
            other => panic!("not a time: tag {other:#x}"),
        };
        let num = |i: usize| -> u8 { rest[i..i + 2].parse().unwrap() };
        let date =
            time::Date::from_calendar_date(year, time::Month::try_from(num(0)).unwrap(), num(2))
                .unwrap();
        let t = time::Time::from_hms(num(4), num(6), num(8)).unwrap();
        u64::try_from(date.with_time(t).assume_utc().unix_timestamp()).unwrap()
    }
}
