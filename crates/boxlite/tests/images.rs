//! Images pulled from a real registry on 127.0.0.1 boot as boxes: the root filesystem
//! is built from the layers (whiteouts, opaque directories, exact owners and modes), on
//! the host by `mke2fs` or in the builder VM, with the same result; the image config is
//! honored (Env, Entrypoint, Cmd, WorkingDir, User), hostile layers are refused or stay
//! inside the image, and the store lists, removes and prunes what it holds.

use std::path::Path;

use boxlite::BuildError;
use boxlite::images::ImageError;
use boxlite::images::registry::Progress;
use boxlite::{BoxCommand, BoxOptions, Boxlite, LiteBox};
use boxlite_testkit::oci::{Comp, Layer, TestImage, busybox_layer};
use boxlite_testkit::{Registry, TestHome};

async fn sh(b: &LiteBox, script: &str) -> String {
    run(b, BoxCommand::new("sh").args(["-c", script])).await
}

async fn run(b: &LiteBox, cmd: BoxCommand) -> String {
    let mut ex = b.exec(cmd).await.unwrap();
    let out = ex.take_stdout().unwrap().read_to_end().await.unwrap();
    let err = ex.take_stderr().unwrap().read_to_end().await.unwrap();
    let st = ex.wait().await.unwrap();
    assert!(st.success(), "{st:?}: {}", String::from_utf8_lossy(&err));
    // Lossy: a listing may hold names that are not UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

/// A `security.capability` value: version 2, effective, CAP_NET_RAW permitted.
const CAP_NET_RAW: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// `opt/` and 124 bytes of Latin-1: a name that needs a PAX record and is not UTF-8.
fn latin1_long_name() -> Vec<u8> {
    let mut n = b"opt/".to_vec();
    for _ in 0..31 {
        n.extend_from_slice(b"caf\xe9");
    }
    n
}

fn app_image() -> TestImage {
    let lower = busybox_layer()
        .dir("opt/", 0o755, (0, 0))
        .dir("opt/app/", 0o755, (0, 0))
        .file("opt/app/config", 0o644, (0, 0), b"lower")
        .file("opt/app/old-only", 0o644, (0, 0), b"x")
        .file("opt/doomed", 0o644, (0, 0), b"to be whited out")
        .file("opt/orig", 0o644, (0, 0), b"kept by its link")
        .hardlink("opt/keep", "opt/orig");
    let upper = Layer::new()
        .file("opt/app/.wh..wh..opq", 0o644, (0, 0), b"")
        .file("opt/app/config", 0o600, (0, 0), b"upper")
        .file("opt/.wh.doomed", 0o644, (0, 0), b"")
        .file("opt/.wh.orig", 0o644, (0, 0), b"")
        .file("etc/motd", 0o644, (0, 0), b"first")
        .file("etc/motd", 0o644, (0, 0), b"second")
        .pax(&[("path", &latin1_long_name())])
        .file("placeholder", 0o644, (0, 0), b"a long name, not UTF-8")
        .pax(&[("SCHILY.xattr.security.capability", CAP_NET_RAW)])
        .file("opt/suid", 0o4755, (1234, 5678), b"#!/bin/sh\n")
        .file("etc/shadow", 0o640, (0, 42), b"root:*::0:::::\n")
        .symlink("opt/link", "suid")
        .hardlink("opt/hard", "opt/suid")
        .fifo("opt/fifo", 0o620, (7, 8))
        .char_device("opt/null", 0o666, 1, 3);
    TestImage::new(
        vec![(lower, Comp::Gzip), (upper, Comp::Zstd)],
        serde_json::json!({
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING from $(pwd) as $(id -u):$(id -g)"],
            "WorkingDir": "/srv",
            "User": "app"
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_image_boots_with_its_layers_and_config() {
    let reg = Registry::start();
    let digest = app_image().push(&reg, "test/app", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let rt = h.runtime();
    let reference = format!("{}/test/app:v1", reg.addr);

    let events = std::sync::Mutex::new(Vec::new());
    let img = rt
        .pull(&reference, &|p| events.lock().unwrap().push(p))
        .await
        .unwrap();
    assert_eq!(img.digest, digest);
    assert_eq!(img.config.user, "app");
    let events = events.into_inner().unwrap();
    assert!(
        matches!(events.first(), Some(Progress::Resolved { layers: 2, .. })),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Progress::Built { cached: false, .. })),
        "{events:?}"
    );
    let listed = rt.images().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].reference, reference);
    assert_eq!(listed[0].digest, digest);
    assert_eq!(listed[0].created.as_deref(), Some("2026-11-22T00:00:00Z"));

    let b = rt.create(BoxOptions::new(&reference)).await.unwrap();
    b.start().await.unwrap();
    // The default command, as the image's user, in its working directory.
    let out = run(&b, b.image_command(&[]).await.unwrap()).await;
    assert_eq!(out, "hello from /srv as 1000:1000\n");
    let out = run(
        &b,
        b.image_command(&["echo override".into()]).await.unwrap(),
    )
    .await;
    assert_eq!(out, "override\n");
    // exec takes the image's user too, with supplementary groups from its /etc/group;
    // a blank user is no override.
    assert_eq!(
        run(&b, BoxCommand::new("id")).await,
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n"
    );
    assert_eq!(
        run(&b, BoxCommand::new("id").user("")).await,
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n"
    );
    assert_eq!(
        run(&b, BoxCommand::new("id").user("root"))
            .await
            .split(' ')
            .next(),
        Some("uid=0(root)")
    );

    // As root: the image's user cannot read a 0600 file of root's.
    let stat = run(
        &b,
        BoxCommand::new("sh").user("root").arg("-c").arg(
            "cd /opt && stat -c '%n %u:%g %a %F' suid link hard fifo /etc/shadow && \
         stat -c '%n %F %t:%T' null && \
         stat -c %i suid hard && ls -A app && cat app/config && echo && ls doomed 2>&1; \
         cat keep; echo; ls orig 2>&1; cat /etc/motd; echo",
        ),
    )
    .await;
    let lines: Vec<&str> = stat.lines().collect();
    assert_eq!(lines[0], "suid 1234:5678 4755 regular file", "{stat}");
    assert_eq!(lines[1], "link 0:0 777 symbolic link", "{stat}");
    assert_eq!(lines[2], "hard 1234:5678 4755 regular file", "{stat}");
    assert_eq!(lines[3], "fifo 7:8 620 fifo", "{stat}");
    assert_eq!(lines[4], "/etc/shadow 0:42 640 regular file", "{stat}");
    assert_eq!(lines[5], "null character special file 1:3", "{stat}");
    assert_eq!(lines[6], lines[7], "hard links share an inode: {stat}");
    assert_eq!(
        lines[8], "config",
        "the opaque directory holds only the new content: {stat}"
    );
    assert_eq!(lines[9], "upper");
    assert!(
        lines[10].contains("No such file"),
        "the whiteout removed it: {stat}"
    );
    assert_eq!(
        lines[11], "kept by its link",
        "a link outlives the path a later layer removed: {stat}"
    );
    assert!(lines[12].contains("No such file"), "{stat}");
    assert_eq!(lines[13], "second", "the last of two entries wins: {stat}");
    assert_eq!(
        sh(&b, "cat /opt/caf* 2>&1").await,
        "a long name, not UTF-8",
        "a long Latin-1 name"
    );

    // A second pull of the same image builds nothing.
    let again = rt.pull(&reference, &|_| {}).await.unwrap();
    assert_eq!(again.base, img.base);

    // The image is in use: removal is refused, and forced it only drops the reference.
    let err = rt.remove_image(&reference, false).await.unwrap_err();
    assert!(
        matches!(err, boxlite::Error::Image(ImageError::InUse { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("1 box"), "{err}");
    b.stop(std::time::Duration::from_secs(10)).await.unwrap();
    let removed = rt.remove_image(&reference, true).await.unwrap();
    assert_eq!(removed.untagged, vec![reference.clone()]);
    assert_eq!(removed.pruned.bases, 0, "the box still uses the base");
    assert!(img.base.is_file());
    b.remove(false).await.unwrap();
    // What a pull killed mid-download leaves goes too.
    let abandoned = h.home.join("images/blobs/tmp/0123456789abcdef.1.0");
    std::fs::write(&abandoned, b"half a layer").unwrap();
    let pruned = rt.prune_images().await.unwrap();
    assert!(!abandoned.exists());
    assert_eq!((pruned.bases, pruned.records), (1, 1), "{pruned:?}");
    assert_eq!(
        pruned.blobs, 4,
        "manifest, config and two layers: {pruned:?}"
    );
    assert!(!img.base.exists());
    assert!(rt.images().await.is_empty());
}

/// Everything in a box's root filesystem, as `stat` reports it, with file checksums;
/// but the files the agent writes at each boot (`/etc/hosts`, `/etc/resolv.conf`).
async fn listing(b: &LiteBox) -> String {
    run(
        b,
        BoxCommand::new("sh").user("root").arg("-c").arg(
            "cd / && find . -xdev ! -type d | grep -v -e ^./etc/hosts -e ^./etc/resolv.conf | sort | xargs stat -c '%n %u:%g %a %F %h %s %Y' && \
         find . -xdev -type d | sort | xargs stat -c '%n %u:%g %a %F' && \
         find . -xdev -type f | grep -v -e ^./etc/hosts -e ^./etc/resolv.conf | sort | xargs md5sum",
        ),
    )
    .await
}

/// Run an e2fsprogs tool on a built image (the test itself blocks on it).
#[allow(clippy::disallowed_methods)]
fn e2fs_tool(name: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(name)
        .args(args)
        .output()
        .unwrap()
}

/// The value of extended attribute `name` of `path` in an ext4 image, read by debugfs.
fn xattr(image: &Path, path: &str, name: &str) -> String {
    let cmd = format!("ea_get {path} {name}");
    let out = e2fs_tool("debugfs", &["-R".as_ref(), cmd.as_ref(), image.as_os_str()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_vm_makes_the_same_root_filesystem_as_the_host() {
    let reg = Registry::start();
    app_image().push(&reg, "test/app", "v1");
    let reference = format!("{}/test/app:v1", reg.addr);
    let mut seen = Vec::new();
    for builder in [boxlite::ImageBuilder::Host, boxlite::ImageBuilder::Vm] {
        let h = TestHome::new();
        h.allow_http(&reg);
        let rt = Boxlite::new(boxlite::RuntimeOptions {
            home: Some(h.home.clone()),
            assets: Some(boxlite_testkit::assets_dir()),
            image_builder: Some(builder),
            ..Default::default()
        })
        .unwrap();
        let built = std::sync::Mutex::new(None);
        let img = rt
            .pull(&reference, &|p| {
                if let Progress::Built { build, .. } = p {
                    *built.lock().unwrap() = build;
                }
            })
            .await
            .unwrap();
        let report = built.into_inner().unwrap().expect("built now");
        let want = if builder == boxlite::ImageBuilder::Vm {
            "vm"
        } else {
            "host"
        };
        assert_eq!(report.builder, want);
        // A clean filesystem with the layer's extended attribute.
        let fsck = e2fs_tool("e2fsck", &["-fn".as_ref(), img.base.as_os_str()]);
        assert!(
            fsck.status.success(),
            "{builder:?}: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let cap = xattr(&img.base, "/opt/suid", "security.capability");
        assert!(
            cap.contains("0x2000") || cap.contains("01 00 00 02 00 20"),
            "{builder:?}: {cap}"
        );
        let size = std::fs::metadata(&img.base).unwrap().len();
        let b = rt.create(BoxOptions::new(&reference)).await.unwrap();
        b.start().await.unwrap();
        // Free blocks (the 5% reserved for root included, as mkfs leaves them).
        let free: u64 = sh(&b, "df -k / | awk 'NR==2 {print $2 - $3}'")
            .await
            .trim()
            .parse()
            .unwrap();
        assert!(
            free >= 1 << 20,
            "{builder:?}: at least 1 GiB free, {free} KiB"
        );
        seen.push((listing(&b).await, size));
        b.remove(true).await.unwrap();
        drop(rt);
    }
    assert!(seen[0].0.lines().count() > 50, "{}", seen[0].0);
    let (host, vm) = (&seen[0].0, &seen[1].0);
    let only = |a: &str, b: &str| -> Vec<String> {
        let b: std::collections::HashSet<&str> = b.lines().collect();
        a.lines()
            .filter(|l| !b.contains(l))
            .map(String::from)
            .collect()
    };
    assert!(
        host == vm,
        "the same tree from both builders; only from the host: {:?}; only from the VM: {:?}",
        only(host, vm),
        only(vm, host)
    );

    // An extended attribute mke2fs does not copy: built in the VM, which keeps it.
    let tagged = TestImage::new(
        vec![(
            busybox_layer()
                .pax(&[("SCHILY.xattr.user.origin", b"layer 1")])
                .file("tagged", 0o644, (0, 0), b"x"),
            Comp::Gzip,
        )],
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    tagged.push(&reg, "test/tagged", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let rt = h.runtime();
    let built = std::sync::Mutex::new(None);
    let r = format!("{}/test/tagged:v1", reg.addr);
    let img = rt
        .pull(&r, &|p| {
            if let Progress::Built { build, .. } = p {
                *built.lock().unwrap() = build;
            }
        })
        .await
        .unwrap();
    assert_eq!(built.into_inner().unwrap().unwrap().builder, "vm");
    assert!(
        xattr(&img.base, "/tagged", "user.origin").contains("layer 1"),
        "{}",
        xattr(&img.base, "/tagged", "user.origin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_size_grows_the_root_filesystem_and_cannot_undercut_the_image() {
    let h = TestHome::new();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").disk_size_mib(3072))
        .await
        .unwrap();
    b.start().await.unwrap();
    let kb: u64 = sh(&b, "df -k / | awk 'NR==2 {print $2}'")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!((2_900_000..3_200_000).contains(&kb), "{kb} KiB");
    b.stop(std::time::Duration::from_secs(10)).await.unwrap();
    b.remove(false).await.unwrap();

    let err = rt
        .create(BoxOptions::new("boxlite/busybox").disk_size_mib(100))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("smaller than image boxlite/busybox:latest"),
        "{err}"
    );
    assert!(rt.list().await.unwrap().is_empty(), "nothing half-created");
}

/// Names of everything under `dir`, recursively.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path().display().to_string());
        if e.file_type().unwrap().is_dir() {
            out.extend(tree(&e.path()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_refused_or_stay_inside_the_image() {
    let reg = Registry::start();
    let h = TestHome::new();
    h.allow_http(&reg);
    let rt = h.runtime();
    let marker = format!("boxlite-escape-{:08x}", rand::random::<u32>());
    let host_target = std::env::temp_dir().join(&marker);
    let run_cfg = serde_json::json!({"Cmd": ["/bin/sh"]});

    // Contained: an absolute symlink written through, and a hard link to /etc/passwd,
    // resolve inside the image.
    let contained = TestImage::new(
        vec![
            (busybox_layer(), Comp::Gzip),
            (
                Layer::new()
                    .symlink("evil", &host_target.display().to_string())
                    .dir("tmp/", 0o1777, (0, 0))
                    .dir(&format!("tmp/{marker}/"), 0o755, (0, 0))
                    .file("evil/owned", 0o644, (0, 0), b"written through the link\n")
                    .hardlink("passwd-link", "etc/passwd"),
                Comp::None,
            ),
        ],
        run_cfg.clone(),
    );
    contained.push(&reg, "hostile/contained", "v1");
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let r = format!("{}/hostile/contained:v1", reg.addr);
    rt.pull(&r, &|_| {}).await.unwrap();
    let b = rt.create(BoxOptions::new(&r)).await.unwrap();
    let seen = sh(
        &b,
        &format!("cat /tmp/{marker}/owned; stat -c %h /etc/passwd"),
    )
    .await;
    assert_eq!(seen, "written through the link\n2\n");
    b.remove(true).await.unwrap();

    // Refused: a `..` name, a hard link out of the root, a 100 GiB sparse entry.
    let store_before = tree(&h.home.join("images/bases"));
    for (name, layer) in [
        (
            "dotdot",
            Layer::new().file(&format!("../../../../tmp/{marker}"), 0o644, (0, 0), b"x"),
        ),
        (
            "hardlink-out",
            Layer::new().hardlink("x", "../../../../etc/passwd"),
        ),
        ("sparse-bomb", Layer::new().sparse_bomb("bomb", 100 << 30)),
        (
            "control-bytes",
            Layer::new().file("etc/evil\x1b[2Jname", 0o644, (0, 0), b"x"),
        ),
        (
            "pax-bomb",
            Layer::new()
                .pax_header(&vec![b'7'; 4 << 20])
                .file("x", 0o644, (0, 0), b"x"),
        ),
        (
            "xattr-namespace",
            Layer::new()
                .pax(&[("SCHILY.xattr.system.nfs4_acl", b"x")])
                .file("x", 0o644, (0, 0), b"x"),
        ),
        (
            "link-to-nothing",
            Layer::new().hardlink("x", "no/such/file"),
        ),
    ] {
        let img = TestImage::new(
            vec![(busybox_layer(), Comp::Gzip), (layer, Comp::Gzip)],
            run_cfg.clone(),
        );
        img.push(&reg, &format!("hostile/{name}"), "v1");
        let r = format!("{}/hostile/{name}:v1", reg.addr);
        let err = rt.pull(&r, &|_| {}).await.unwrap_err();
        let msg = boxlite::error_chain(&err);
        let refused = match &err {
            boxlite::Error::Build(f) => match f.cause.as_ref() {
                BuildError::LayerRefused { digest, .. } => Some(digest.clone()),
                _ => None,
            },
            _ => None,
        };
        assert_eq!(
            refused.as_deref(),
            Some(img.layers[1].digest.as_str()),
            "{name}: a typed refusal naming the layer: {msg}"
        );
        assert!(
            msg.contains(&img.layers[1].digest),
            "{name}: the error names the layer: {msg}"
        );
        assert!(
            rt.local_image(&r).await.unwrap().is_none(),
            "{name}: no reference left"
        );
    }
    assert_eq!(
        tree(&h.home.join("images/bases")),
        store_before,
        "no base left by a failed build"
    );
    assert!(
        tree(&h.home.join("images/tmp")).is_empty(),
        "no build directory left"
    );
    assert!(
        !host_target.exists(),
        "nothing escaped to {}",
        host_target.display()
    );
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_missing_from_the_store_is_pulled_by_create_and_bad_references_are_named() {
    let reg = Registry::start();
    let h = TestHome::new();
    h.allow_http(&reg);
    let rt: Boxlite = h.runtime();
    app_image().push(&reg, "test/app", "v1");
    let r = format!("{}/test/app:v1", reg.addr);
    let b = rt
        .create(BoxOptions::new(&r).entrypoint(["/bin/echo"]))
        .await
        .unwrap();
    assert_eq!(
        run(&b, b.image_command(&["hi".into()]).await.unwrap()).await,
        "hi\n"
    );
    // An entrypoint override drops the image's Cmd: echo alone prints an empty line.
    assert_eq!(run(&b, b.image_command(&[]).await.unwrap()).await, "\n");
    b.remove(true).await.unwrap();

    for (bad, want) in [
        ("Bad:Ref", "invalid image reference"),
        (&format!("{}/test/app:nope", reg.addr) as &str, "not found"),
        ("boxlite/nothing", "built-in images are"),
    ] {
        let err = rt
            .create(BoxOptions::new(bad))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{bad}: {err}");
    }
    assert!(rt.list().await.unwrap().is_empty());
}
