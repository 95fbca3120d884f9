//! Boot and shutdown against real VMs: failures are explained, nothing is left behind.

use std::path::Path;
use std::time::Duration;

use boxlite::{BoxOptions, BoxState, Boxlite, Error, RuntimeOptions};
use boxlite_testkit::{TestHome, assets_dir};
use sha2::{Digest, Sha256};

/// A copy of the assets whose initramfs is junk: the kernel panics during boot.
fn assets_with_broken_initramfs(dir: &Path) {
    let src = assets_dir();
    std::fs::create_dir_all(dir).unwrap();
    for f in ["vmlinux", "images", "bin"] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    let junk = vec![0x5a_u8; 4096];
    std::fs::write(dir.join("initramfs.cpio"), &junk).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json")).unwrap()).unwrap();
    manifest["files"]["initramfs.cpio"] = serde_json::json!({
        "size": junk.len(),
        "sha256": hex::encode(Sha256::digest(&junk)),
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_dying_during_boot_is_reported_with_cause_and_console_tail() {
    let h = TestHome::new();
    let assets = h.home.join("broken-assets");
    assets_with_broken_initramfs(&assets);
    let rt = Boxlite::new(RuntimeOptions {
        home: Some(h.home.clone()),
        assets: Some(assets),
        ..Default::default()
    })
    .unwrap();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();

    let err = tokio::time::timeout(Duration::from_secs(150), b.start())
        .await
        .expect("a dying VM must not look like a slow one")
        .unwrap_err();

    let msg = boxlite::error_chain(&err);
    assert!(
        matches!(
            &err,
            Error::Box(boxlite::BoxError::BootFailed { cause, .. })
                if matches!(cause.as_ref(), boxlite::BootError::VmmExited { .. })
        ),
        "{err:?}"
    );
    assert!(msg.contains("the VM exited during boot"), "{msg}");
    assert!(msg.contains("--- console log (tail) ---"), "{msg}");
    assert!(msg.contains("Kernel panic"), "{msg}");
    let info = b.info().await.unwrap();
    assert_eq!(info.state, BoxState::Failed);
    assert!(info.last_error.unwrap().contains("exited during boot"));
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    let sockets = boxlite::socket_root().join(&b.id()[..12]);
    assert!(
        sockets.parent().unwrap().is_dir(),
        "the socket root was used"
    );
    assert!(!sockets.exists(), "{} left behind", sockets.display());
    rt.remove(&b, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_powers_the_guest_off_instead_of_killing_the_vmm() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();
    let box_dir = h.home.join("boxes").join(b.id());

    b.stop(Duration::from_secs(20)).await.unwrap();

    let console = std::fs::read_to_string(box_dir.join("console.log")).unwrap();
    let qemu_log = std::fs::read_to_string(box_dir.join("qemu.log")).unwrap();
    assert!(
        console.contains("boxlite-guest: shutting down"),
        "{console}"
    );
    assert!(!qemu_log.contains("terminating on signal"), "{qemu_log}");
    assert_eq!(b.info().await.unwrap().state, BoxState::Stopped);
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    rt.remove(&b, false).await.unwrap();
    assert!(!box_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_running_box_needs_force_and_then_leaves_nothing() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new("boxlite/busybox")).await.unwrap();
    b.start().await.unwrap();

    let refused = rt.remove(&b, false).await.unwrap_err().to_string();
    rt.remove(&b, true).await.unwrap();

    assert!(refused.contains("is Running; stop it first"), "{refused}");
    assert!(h.box_dirs().is_empty());
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_box_options_are_refused_before_anything_is_created() {
    let h = TestHome::new();
    let rt = h.runtime();

    let err = rt
        .create(BoxOptions::new("boxlite/busybox").memory_mib(1))
        .await
        .unwrap_err()
        .to_string();

    assert_eq!(
        err,
        "invalid box option: memory 1 MiB is out of range (64-65536)"
    );
    assert!(h.box_dirs().is_empty());
}
