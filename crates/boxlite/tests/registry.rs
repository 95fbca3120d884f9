//! Pulling from a real registry on 127.0.0.1 (Debian's `docker-registry`), with images
//! pushed by the test itself: config and layers land verified in the blob store, a
//! second pull is served from it, and bad inputs give errors that say what is wrong.

use std::collections::HashMap;
use std::io::Write;

use boxlite::images::ImageError;
use boxlite::images::blobs::BlobStore;
use boxlite::images::reference::Reference;
use boxlite::images::registry::{self, Compression, RegistryConfig, RegistrySettings};
use boxlite_testkit::Registry;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn pusher() -> oci_client::Client {
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Push a two-layer image (one plain tar, one gzip) with an image config.
async fn push_image(reg: &Registry, repo: &str, tag: &str) {
    push_image_with(&pusher(), &RegistryAuth::Anonymous, reg, repo, tag).await
}

async fn push_image_with(
    client: &oci_client::Client,
    auth: &RegistryAuth,
    reg: &Registry,
    repo: &str,
    tag: &str,
) {
    let layers = vec![
        ImageLayer::new(
            layer_tar(&[("etc/hello", b"hi\n")]),
            "application/vnd.oci.image.layer.v1.tar".into(),
            None,
        ),
        ImageLayer::new(
            gzip(&layer_tar(&[("etc/second", b"2\n")])),
            "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            None,
        ),
    ];
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-22T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING"],
            "WorkingDir": "/srv",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let r = oci_client::Reference::with_tag(reg.addr.clone(), repo.into(), tag.into());
    client
        .push(&r, &layers, config, auth, Some(manifest))
        .await
        .unwrap();
}

fn insecure(reg: &Registry) -> RegistryConfig {
    RegistryConfig {
        hosts: HashMap::from([(
            reg.addr.clone(),
            RegistrySettings {
                insecure_http: true,
                ca_file: None,
            },
        )]),
        credentials: HashMap::new(),
    }
}

fn store() -> (BlobStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("bxpull-{:016x}", rand::random::<u64>()));
    (BlobStore::new(dir.join("blobs")), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_image_pulls_verified_with_its_config_and_a_second_pull_is_cached() {
    let reg = Registry::start();
    push_image(&reg, "test/app", "v1").await;
    let (blobs, dir) = store();
    let r = Reference::parse(&format!("{}/test/app:v1", reg.addr)).unwrap();
    let fetched = std::sync::Mutex::new(Vec::new());
    let progress = |p: registry::Progress| {
        if let registry::Progress::Layer {
            digest,
            cached,
            done,
            total,
        } = p
            && done == total
        {
            fetched.lock().unwrap().push((digest, cached));
        }
    };

    let first = registry::pull(&blobs, &r, &insecure(&reg), &progress)
        .await
        .unwrap();
    let first_fetches = std::mem::take(&mut *fetched.lock().unwrap());
    let second = registry::pull(&blobs, &r, &insecure(&reg), &progress)
        .await
        .unwrap();
    let second_fetches = std::mem::take(&mut *fetched.lock().unwrap());

    assert_eq!(first, second);
    assert_eq!(first.layers.len(), 2);
    assert_eq!(first.layers[0].compression, Compression::None);
    assert_eq!(first.layers[1].compression, Compression::Gzip);
    assert_eq!(first.config.env, ["PATH=/usr/bin:/bin", "GREETING=hello"]);
    assert_eq!(
        first.config.entrypoint.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into()][..])
    );
    assert_eq!(
        first.config.cmd.as_deref(),
        Some(&["echo $GREETING".to_string()][..])
    );
    assert_eq!(first.config.working_dir, "/srv");
    assert_eq!(first.config.user, "1000:1000");
    for l in &first.layers {
        assert!(blobs.has(&l.digest));
        blobs.read(&l.digest).unwrap();
    }
    assert!(blobs.has(&first.manifest_digest) && blobs.has(&first.config_digest));
    assert!(
        first_fetches.iter().all(|(_, cached)| !cached),
        "{first_fetches:?}"
    );
    assert_eq!(second_fetches.len(), 3, "config and two layers");
    assert!(
        second_fetches.iter().all(|(_, cached)| *cached),
        "{second_fetches:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tags_missing_platforms_bad_media_types_and_a_dead_registry_are_clear_errors() {
    let reg = Registry::start();
    push_image(&reg, "test/app", "v1").await;
    let (blobs, dir) = store();
    let cfg = insecure(&reg);
    let nothing = |_: registry::Progress| {};
    let pull = |s: String| {
        let (blobs, cfg) = (blobs.clone(), cfg.clone());
        async move { registry::pull(&blobs, &Reference::parse(&s).unwrap(), &cfg, &nothing).await }
    };
    // An index that offers only arm64, and a manifest of a type we do not run.
    let pushed = pusher()
        .pull_manifest_raw(
            &oci_client::Reference::with_tag(reg.addr.clone(), "test/app".into(), "v1".into()),
            &RegistryAuth::Anonymous,
            &[registry::OCI_MANIFEST],
        )
        .await
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": registry::OCI_INDEX,
        "manifests": [{
            "mediaType": registry::OCI_MANIFEST,
            "digest": pushed.1,
            "size": pushed.0.len(),
            "platform": {"architecture": "arm64", "os": "linux"}
        }]
    });
    let index_ref =
        oci_client::Reference::with_tag(reg.addr.clone(), "test/app".into(), "armonly".into());
    pusher()
        .push_manifest_raw(
            &index_ref,
            serde_json::to_vec(&index).unwrap(),
            registry::OCI_INDEX.parse().unwrap(),
        )
        .await
        .unwrap();
    let mut odd: serde_json::Value = serde_json::from_slice(&pushed.0).unwrap();
    odd["layers"][0]["mediaType"] = "application/vnd.example.weird".into();
    let odd_ref =
        oci_client::Reference::with_tag(reg.addr.clone(), "test/app".into(), "weird".into());
    pusher()
        .push_manifest_raw(
            &odd_ref,
            serde_json::to_vec(&odd).unwrap(),
            registry::OCI_MANIFEST.parse().unwrap(),
        )
        .await
        .unwrap();

    let unknown_tag = pull(format!("{}/test/app:nope", reg.addr))
        .await
        .unwrap_err();
    let unknown_repo = pull(format!("{}/test/none:v1", reg.addr))
        .await
        .unwrap_err();
    let arm_only = pull(format!("{}/test/app:armonly", reg.addr))
        .await
        .unwrap_err();
    let weird = pull(format!("{}/test/app:weird", reg.addr))
        .await
        .unwrap_err();
    let down_addr = reg.addr.clone();
    drop(reg);
    let mut down_cfg = cfg.clone();
    down_cfg
        .hosts
        .entry(down_addr.clone())
        .or_default()
        .insecure_http = true;
    let down = registry::pull(
        &blobs,
        &Reference::parse(&format!("{down_addr}/test/app:v1")).unwrap(),
        &down_cfg,
        &nothing,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(unknown_tag, ImageError::NotFoundRemote { .. }),
        "{unknown_tag}"
    );
    assert!(
        unknown_tag.to_string().contains("test/app:nope"),
        "{unknown_tag}"
    );
    assert!(
        matches!(unknown_repo, ImageError::NotFoundRemote { .. }),
        "{unknown_repo}"
    );
    assert!(
        matches!(arm_only, ImageError::NoPlatform { .. }),
        "{arm_only}"
    );
    assert!(
        arm_only.to_string().contains("offers: linux/arm64"),
        "{arm_only}"
    );
    assert!(
        matches!(weird, ImageError::UnsupportedMediaType { .. }),
        "{weird}"
    );
    assert!(
        weird.to_string().contains("application/vnd.example.weird"),
        "{weird}"
    );
    assert!(matches!(down, ImageError::Unreachable { .. }), "{down}");
    assert!(down.to_string().contains(&down_addr), "{down}");
    let tmp = dir.join("blobs/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0),
        0,
        "no half-written blobs"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_one_copy_and_a_flipped_byte_is_fetched_again() {
    let reg = Registry::start();
    push_image(&reg, "test/app", "v1").await;
    let (blobs, dir) = store();
    let cfg = insecure(&reg);
    let r = Reference::parse(&format!("{}/test/app:v1", reg.addr)).unwrap();
    let nothing = |_: registry::Progress| {};

    let (a, b) = tokio::join!(
        registry::pull(&blobs, &r, &cfg, &nothing),
        registry::pull(&blobs, &r, &cfg, &nothing)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let stored = blobs.list();
    let layer = &a.layers[1].digest;
    let path = blobs.path(layer).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let refetched = std::sync::Mutex::new(Vec::new());
    let watch = |p: registry::Progress| {
        if let registry::Progress::Layer {
            digest,
            cached: false,
            done,
            total,
        } = p
            && done == total
        {
            refetched.lock().unwrap().push(digest);
        }
    };
    let again = registry::pull(&blobs, &r, &cfg, &watch).await.unwrap();

    assert_eq!(a, b);
    assert_eq!(
        stored.len(),
        4,
        "manifest, config and two layers, once: {stored:?}"
    );
    let tmp = dir.join("blobs/tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(
        *refetched.lock().unwrap(),
        vec![layer.clone()],
        "only the corrupt layer"
    );
    assert_eq!(again, a);
    blobs.verify(layer).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_with_htpasswd_needs_its_ca_and_the_right_credentials() {
    let reg = Registry::start_secure("agent", "s3cret-pw");
    let ca = reg.ca.clone().unwrap();
    let tls_pusher = oci_client::Client::new(ClientConfig {
        extra_root_certificates: vec![oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: std::fs::read(&ca).unwrap(),
        }],
        ..Default::default()
    });
    let basic = RegistryAuth::Basic("agent".into(), "s3cret-pw".into());
    push_image_with(&tls_pusher, &basic, &reg, "private/app", "v1").await;
    let (blobs, dir) = store();
    let r = Reference::parse(&format!("{}/private/app:v1", reg.addr)).unwrap();
    let nothing = |_: registry::Progress| {};
    let with = |ca: Option<std::path::PathBuf>, cred: Option<(&str, &str)>| RegistryConfig {
        hosts: HashMap::from([(
            reg.addr.clone(),
            RegistrySettings {
                insecure_http: false,
                ca_file: ca,
            },
        )]),
        credentials: cred
            .map(|(u, p)| {
                HashMap::from([(
                    reg.addr.clone(),
                    registry::Credential::Basic {
                        username: u.into(),
                        password: p.into(),
                    },
                )])
            })
            .unwrap_or_default(),
    };

    let ok = registry::pull(
        &blobs,
        &r,
        &with(Some(ca.clone()), Some(("agent", "s3cret-pw"))),
        &nothing,
    )
    .await;
    let wrong = registry::pull(
        &blobs,
        &r,
        &with(Some(ca.clone()), Some(("agent", "wrong-pw"))),
        &nothing,
    )
    .await
    .unwrap_err();
    let anonymous = registry::pull(&blobs, &r, &with(Some(ca.clone()), None), &nothing)
        .await
        .unwrap_err();
    let untrusted = registry::pull(
        &blobs,
        &r,
        &with(None, Some(("agent", "s3cret-pw"))),
        &nothing,
    )
    .await
    .unwrap_err();

    let image = ok.unwrap();
    assert_eq!(image.layers.len(), 2);
    for (err, what) in [(&wrong, "wrong password"), (&anonymous, "no credentials")] {
        assert!(
            matches!(err, ImageError::AuthFailed { .. }),
            "{what}: {err}"
        );
        let text = boxlite::error_chain(err);
        assert!(
            text.contains("authentication failed") && text.contains(&reg.addr),
            "{what}: {text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("wrong-pw"),
            "{what}: {text}"
        );
    }
    let text = boxlite::error_chain(&untrusted);
    assert!(
        text.contains(&reg.addr) && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let creds = format!("{:?}", with(None, Some(("agent", "s3cret-pw"))).credentials);
    assert!(!creds.contains("s3cret"), "Debug redacts: {creds}");
    std::fs::remove_dir_all(dir).unwrap();
}
