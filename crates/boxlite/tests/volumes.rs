//! The volume gate through the library API: every host path that is not exactly a
//! managed volume directory is refused before anything is created.

use boxlite::{BoxOptions, Error, VolumeSpec};
use boxlite_testkit::TestHome;

/// Create a box with `spec` and return the error message.
async fn refused(h: &TestHome, spec: VolumeSpec) -> String {
    let rt = h.runtime();
    let err = rt
        .create(BoxOptions::new("boxlite/busybox").volume(spec))
        .await
        .expect_err("the volume must be refused");
    assert!(matches!(err, Error::Volume(_)), "{err:?}");
    assert!(rt.list().await.unwrap().is_empty(), "a box was created");
    boxlite::error_chain(&err)
}

fn named_root(h: &TestHome) -> std::path::PathBuf {
    h.home.join("volumes/named")
}

#[tokio::test]
async fn host_bind_is_refused_naming_the_path_and_the_managed_roots() {
    let h = TestHome::new();
    let host = tempdir("bind");

    let msg = refused(&h, VolumeSpec::host_path(&host, "/data")).await;

    std::fs::remove_dir_all(&host).unwrap();
    assert!(msg.contains(&host.display().to_string()), "{msg}");
    assert!(msg.contains("not a boxlite volume"), "{msg}");
    assert!(msg.contains(&named_root(&h).display().to_string()), "{msg}");
    assert!(msg.contains("boxlite cp"), "{msg}");
}

#[tokio::test]
async fn symlink_under_the_named_root_pointing_outside_is_refused() {
    let h = TestHome::new();
    drop(h.runtime());
    let link = named_root(&h).join("sneaky");
    std::os::unix::fs::symlink("/tmp", &link).unwrap();

    let msg = refused(&h, VolumeSpec::host_path(&link, "/data")).await;

    assert!(msg.contains("sneaky"), "{msg}");
    assert!(msg.contains("not a boxlite volume"), "{msg}");
}

#[tokio::test]
async fn symlink_to_another_managed_volume_is_refused_too() {
    let h = TestHome::new();
    drop(h.runtime());
    std::fs::create_dir(named_root(&h).join("real")).unwrap();
    let link = named_root(&h).join("alias");
    std::os::unix::fs::symlink(named_root(&h).join("real"), &link).unwrap();

    let msg = refused(&h, VolumeSpec::host_path(&link, "/data")).await;

    assert!(msg.contains("symbolic link"), "{msg}");
}

#[tokio::test]
async fn the_managed_root_itself_is_refused() {
    let h = TestHome::new();
    drop(h.runtime());

    let msg = refused(&h, VolumeSpec::host_path(named_root(&h), "/data")).await;

    assert!(msg.contains("exactly one level below"), "{msg}");
}

#[tokio::test]
async fn a_directory_deeper_than_one_level_is_refused() {
    let h = TestHome::new();
    drop(h.runtime());
    let deeper = named_root(&h).join("x/deeper");
    std::fs::create_dir_all(&deeper).unwrap();

    let msg = refused(&h, VolumeSpec::host_path(&deeper, "/data")).await;

    assert!(msg.contains("x/deeper"), "{msg}");
    assert!(msg.contains("exactly one level below"), "{msg}");
}

#[tokio::test]
async fn a_file_is_refused() {
    let h = TestHome::new();
    drop(h.runtime());
    let file = named_root(&h).join("afile");
    std::fs::write(&file, b"x").unwrap();

    let msg = refused(&h, VolumeSpec::host_path(&file, "/data")).await;

    assert!(msg.contains("afile is not a directory"), "{msg}");
}

#[tokio::test]
async fn a_nonexistent_path_is_refused() {
    let h = TestHome::new();
    drop(h.runtime());
    let missing = named_root(&h).join("nope");

    let msg = refused(&h, VolumeSpec::host_path(&missing, "/data")).await;

    assert!(msg.contains("nope does not exist"), "{msg}");
    assert!(msg.contains(&named_root(&h).display().to_string()), "{msg}");
}

#[tokio::test]
async fn an_invalid_last_spec_leaves_nothing_from_the_first_ones() {
    let h = TestHome::new();
    let rt = h.runtime();

    let err = rt
        .create(
            BoxOptions::new("boxlite/busybox")
                .volume(VolumeSpec::named("first", "/a"))
                .volume(VolumeSpec::anonymous("/b"))
                .volume(VolumeSpec::host_path("/etc", "/c")),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Volume(_)), "{err}");
    assert!(rt.volumes().await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(h.home.join("volumes/named"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(h.home.join("volumes/anonymous"))
            .unwrap()
            .count(),
        0
    );
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn volume_in_use_is_not_removed_unless_forced() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::named("keep", "/k")))
        .await
        .unwrap();

    let refused = rt
        .remove_volume("keep", false)
        .await
        .unwrap_err()
        .to_string();
    let still = rt.volume("keep").await.unwrap();
    rt.remove_volume("keep", true).await.unwrap();

    assert!(refused.contains("is used by box"), "{refused}");
    assert!(refused.contains(b.id()), "{refused}");
    assert_eq!(still.used_by, vec![b.id().to_string()]);
    assert!(rt.volume("keep").await.is_err());
    b.remove(false).await.unwrap();
}

#[tokio::test]
async fn managed_directory_given_as_a_host_path_is_the_named_volume() {
    let h = TestHome::new();
    let rt = h.runtime();
    rt.create_volume("shared").await.unwrap();

    let b = rt
        .create(
            BoxOptions::new("boxlite/busybox")
                .volume(VolumeSpec::host_path(named_root(&h).join("shared"), "/s")),
        )
        .await
        .unwrap();

    assert_eq!(
        rt.volume("shared").await.unwrap().used_by,
        vec![b.id().to_string()]
    );
    b.remove(false).await.unwrap();
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bxv-{tag}-{:08x}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_directory_swapped_for_a_symlink_after_creation_is_refused_at_start() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").volume(VolumeSpec::named("swap", "/s")))
        .await
        .unwrap();
    let dir = named_root(&h).join("swap");
    std::fs::remove_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/etc", &dir).unwrap();

    let err = b.start().await.unwrap_err();

    let msg = boxlite::error_chain(&err);
    assert!(matches!(err, Error::Volume(_)), "{msg}");
    assert!(msg.contains("swap"), "{msg}");
    assert_eq!(b.state().await.unwrap(), boxlite::BoxState::Failed);
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    b.remove(false).await.unwrap();
    assert!(std::fs::symlink_metadata("/etc").unwrap().is_dir());
}
