use std::collections::BTreeMap;
use std::io::Read;

use super::*;

/// A layer built entry by entry, with raw names (nothing checked, as a hostile image).
#[derive(Default, Clone)]
struct L {
    data: Vec<u8>,
}

fn raw_header(
    path: &[u8],
    flag: u8,
    mode: u32,
    owner: (u64, u64),
    size: u64,
    link: &[u8],
) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

impl L {
    fn raw(mut self, h: &tar::Header, content: &[u8]) -> Self {
        self.data.extend_from_slice(h.as_bytes());
        self.data.extend_from_slice(content);
        self.data.resize(self.data.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(self, path: &str, mode: u32, owner: (u64, u64), content: &[u8]) -> Self {
        let h = raw_header(
            path.as_bytes(),
            b'0',
            mode,
            owner,
            content.len() as u64,
            b"",
        );
        self.raw(&h, content)
    }
    fn dir(self, path: &str, mode: u32) -> Self {
        let h = raw_header(path.as_bytes(), b'5', mode, (0, 0), 0, b"");
        self.raw(&h, b"")
    }
    fn symlink(self, path: &str, target: &str) -> Self {
        let h = raw_header(path.as_bytes(), b'2', 0o777, (0, 0), 0, target.as_bytes());
        self.raw(&h, b"")
    }
    fn hardlink(self, path: &str, target: &str) -> Self {
        let h = raw_header(path.as_bytes(), b'1', 0o644, (0, 0), 0, target.as_bytes());
        self.raw(&h, b"")
    }
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|(k, v)| pax_record(k.as_bytes(), v))
            .collect();
        let h = raw_header(b"pax", b'x', 0o644, (0, 0), body.len() as u64, b"");
        self.raw(&h, &body)
    }
    fn end(mut self) -> Vec<u8> {
        self.data.extend_from_slice(&[0u8; 1024]);
        self.data
    }
}

/// What a flattened stream holds: path → (kind, mode, owner, content or link target).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: char,
    mode: u32,
    owner: (u64, u64),
    body: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn flatten(layers: &[Vec<u8>]) -> Result<(Vec<u8>, PlanStats), FlattenError> {
    flatten_with(layers, &Limits::default())
}

fn flatten_with(layers: &[Vec<u8>], limits: &Limits) -> Result<(Vec<u8>, PlanStats), FlattenError> {
    let open = |i: usize| Ok::<_, std::io::Error>(&layers[i][..]);
    let p = plan(layers.len(), open, limits)?;
    let mut out = Vec::new();
    emit(&p, open, &mut out)?;
    Ok((out, p.stats))
}

/// Parse a flattened stream with the `tar` crate (an independent reader), in order.
fn read_back(stream: &[u8]) -> Vec<(String, Seen)> {
    let mut a = tar::Archive::new(stream);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let xattrs = e
            .pax_extensions()
            .unwrap()
            .map(|x| {
                x.map(|r| r.unwrap())
                    .filter_map(|r| {
                        Some((
                            r.key().unwrap().strip_prefix("SCHILY.xattr.")?.to_string(),
                            r.value_bytes().to_vec(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            other => panic!("unexpected {other:?}"),
        };
        let mut body = Vec::new();
        if kind == 'l' || kind == 'h' {
            body = e.link_name_bytes().unwrap().into_owned();
        } else {
            e.read_to_end(&mut body).unwrap();
        }
        out.push((
            path,
            Seen {
                kind,
                mode: h.mode().unwrap(),
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                body,
                xattrs,
            },
        ));
    }
    out
}

fn tree(stream: &[u8]) -> BTreeMap<String, Seen> {
    read_back(stream).into_iter().collect()
}

fn refusal(layers: &[Vec<u8>]) -> (usize, String, String) {
    match flatten(layers) {
        Err(FlattenError::Refused {
            layer,
            entry,
            reason,
        }) => (layer, entry, reason),
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok((s, _)) => panic!(
            "expected a refusal, got {:?}",
            tree(&s).keys().collect::<Vec<_>>()
        ),
    }
}

#[test]
fn layers_apply_in_order_with_whiteouts_opaque_dirs_and_replacements() {
    let lower = L::default()
        .dir("etc/", 0o755)
        .file("etc/config", 0o644, (0, 0), b"lower")
        .dir("opt/app/", 0o755)
        .file("opt/app/old", 0o644, (0, 0), b"x")
        .file("opt/app/kept-by-upper", 0o644, (0, 0), b"y")
        .file("opt/doomed", 0o644, (0, 0), b"z")
        .dir("was-dir/", 0o755)
        .file("was-dir/inner", 0o644, (0, 0), b"i")
        .file("was-file", 0o644, (0, 0), b"f")
        .file("big", 0o755, (1, 2), b"the original content")
        .hardlink("big-link", "big")
        .end();
    let upper = L::default()
        .file("opt/app/new", 0o600, (0, 0), b"new")
        .file("opt/app/.wh..wh..opq", 0o644, (0, 0), b"")
        .file("opt/.wh.doomed", 0o644, (0, 0), b"")
        .file("was-dir", 0o644, (0, 0), b"now a file")
        .dir("was-file/", 0o700)
        .file("was-file/child", 0o644, (0, 0), b"c")
        .file(".wh.big", 0o644, (0, 0), b"")
        .file("etc/config", 0o600, (5, 6), b"upper")
        .file("etc/config", 0o640, (7, 8), b"last wins")
        .file(".wh..wh.plnk", 0o644, (0, 0), b"")
        .end();
    let (s, stats) = flatten(&[lower, upper]).unwrap();
    let t = tree(&s);
    let names: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "big-link",
            "etc/",
            "etc/config",
            "opt/",
            "opt/app/",
            "opt/app/new",
            "was-dir",
            "was-file/",
            "was-file/child"
        ]
    );
    assert_eq!(t["etc/config"].body, b"last wins");
    assert_eq!(
        (t["etc/config"].mode, t["etc/config"].owner),
        (0o640, (7, 8))
    );
    assert_eq!(t["was-dir"].body, b"now a file");
    assert_eq!(t["was-file/"].mode, 0o700);
    // The link outlives the path it was made from, with the content and metadata.
    assert_eq!(t["big-link"].kind, 'f');
    assert_eq!(t["big-link"].body, b"the original content");
    assert_eq!((t["big-link"].mode, t["big-link"].owner), (0o755, (1, 2)));
    assert_eq!(t["opt/"].mode, 0o755, "an implied directory is root's 0755");
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.bytes, 3 + 10 + 1 + 9 + 20);
}

#[test]
fn directories_come_first_and_links_follow_their_targets() {
    let layer = L::default()
        // A child before its directory, and a hard link pair of a file and of a symlink.
        .file("z/deep/file", 0o644, (0, 0), b"1")
        .dir("z/", 0o711)
        .file("a", 0o644, (0, 0), b"2")
        .hardlink("z/deep/second", "a")
        .symlink("sym", "a")
        .hardlink("sym2", "sym")
        .end();
    let (s, _) = flatten(&[layer]).unwrap();
    let seen = read_back(&s);
    let order: Vec<(&str, char)> = seen.iter().map(|(p, e)| (p.as_str(), e.kind)).collect();
    assert_eq!(
        order,
        [
            ("sym", 'l'),
            ("sym2", 'h'),
            ("z/", 'd'),
            ("z/deep/", 'd'),
            ("z/deep/file", 'f'),
            ("a", 'f'),
            ("z/deep/second", 'h'),
        ]
    );
    assert_eq!(seen[1].1.body, b"sym");
    assert_eq!(seen[6].1.body, b"a");
    assert_eq!(seen[2].1.mode, 0o711);
}

#[test]
fn parents_resolve_through_symlinks_inside_the_root() {
    let layer = L::default()
        .dir("usr/lib/", 0o755)
        .symlink("lib", "usr/lib")
        .symlink("evil", "/tmp/../../../tmp/x")
        .dir("tmp/x/", 0o755)
        .file("lib/libc.so", 0o755, (0, 0), b"elf")
        .file("evil/owned", 0o644, (0, 0), b"inside")
        .symlink("up", "../../..")
        .file("up/etc/passwd", 0o644, (0, 0), b"root")
        .end();
    let t = tree(&flatten(&[layer]).unwrap().0);
    assert_eq!(t["usr/lib/libc.so"].body, b"elf");
    assert_eq!(t["tmp/x/owned"].body, b"inside");
    assert_eq!(t["etc/passwd"].body, b"root", "`..` stops at the root");
    assert_eq!(t["lib"].kind, 'l');
}

#[test]
fn metadata_survives_long_names_large_ids_and_xattrs() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let layer = L::default()
        .pax(&[
            ("uid", b"3000000"),
            ("SCHILY.xattr.security.capability", cap),
        ])
        .file("bin/ping", 0o4755, (0, 0), b"ping")
        .pax(&[("path", long.as_bytes())])
        .file("ignored", 0o600, (0, 0), b"long")
        .pax(&[("linkpath", "t".repeat(150).as_bytes())])
        .symlink("longlink", "ignored")
        .end();
    let layers = [layer];
    let p = plan(
        1,
        |i| Ok::<_, std::io::Error>(&layers[i][..]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(p.xattr_not_in(&[b"security.capability"]), None);
    assert_eq!(
        p.xattr_not_in(&[]),
        Some(("bin/ping".into(), "security.capability".into()))
    );
    let (stream, _) = flatten(&layers).unwrap();
    assert!(
        !stream.windows(18).any(|w| w == b"hdrcharset=BINARY\n"),
        "UTF-8 names need no charset record"
    );
    let t = tree(&stream);
    let ping = &t["bin/ping"];
    assert_eq!((ping.mode, ping.owner), (0o4755, (3_000_000, 0)));
    assert_eq!(
        ping.xattrs,
        [("security.capability".to_string(), cap.to_vec())]
    );
    assert_eq!(t[&long].body, b"long");
    assert_eq!(t["longlink"].body, "t".repeat(150).as_bytes());
}

#[test]
fn hostile_names_and_links_are_refused_naming_layer_and_entry() {
    let base = L::default()
        .file("etc/passwd", 0o644, (0, 0), b"root")
        .end();
    let cases: Vec<(&str, L, &str)> = vec![
        (
            "absolute",
            L::default().file("/etc/x", 0o644, (0, 0), b""),
            "absolute",
        ),
        (
            "dotdot",
            L::default().file("a/../../x", 0o644, (0, 0), b""),
            "`..`",
        ),
        (
            "control",
            L::default().file("a\nb", 0o644, (0, 0), b""),
            "control character",
        ),
        (
            "long-name",
            L::default()
                .pax(&[("path", "n".repeat(300).as_bytes())])
                .file("x", 0o644, (0, 0), b""),
            "longer than 255",
        ),
        (
            "link-out",
            L::default().hardlink("x", "../../etc/passwd"),
            "`..`",
        ),
        (
            "link-missing",
            L::default().hardlink("x", "nope"),
            "does not exist",
        ),
        ("link-dir", L::default().hardlink("x", "etc"), "directory"),
        (
            "loop",
            L::default()
                .symlink("a", "b")
                .symlink("b", "a")
                .file("a/x", 0o644, (0, 0), b""),
            "symlinks",
        ),
        (
            "file-parent",
            L::default().file("etc/passwd/x", 0o644, (0, 0), b""),
            "not a directory",
        ),
        (
            "dangling-parent",
            L::default()
                .symlink("d", "/nowhere")
                .file("d/x", 0o644, (0, 0), b""),
            "symlink to nothing",
        ),
        (
            "sparse",
            L::default().raw(&raw_header(b"s", b'S', 0o644, (0, 0), 0, b""), b""),
            "sparse",
        ),
        (
            "sparse-pax",
            L::default()
                .pax(&[("GNU.sparse.major", b"1")])
                .file("s", 0o644, (0, 0), b""),
            "sparse",
        ),
        (
            "type",
            L::default().raw(&raw_header(b"v", b'V', 0o644, (0, 0), 0, b""), b""),
            "unsupported entry type",
        ),
        (
            "xattr",
            L::default()
                .pax(&[("SCHILY.xattr.system.evil", b"1")])
                .file("x", 0o644, (0, 0), b""),
            "extended attribute",
        ),
        (
            "empty-symlink",
            L::default().symlink("s", ""),
            "without a target",
        ),
        (
            "whiteout-dot",
            L::default().file(".wh..", 0o644, (0, 0), b""),
            "whiteout",
        ),
    ];
    for (name, layer, want) in cases {
        let (layer_ix, entry, reason) = refusal(&[base.clone(), layer.end()]);
        assert_eq!(layer_ix, 1, "{name}");
        assert!(reason.contains(want), "{name}: {entry:?}: {reason}");
    }
}

#[test]
fn malformed_streams_oversized_headers_and_bombs_fail_with_a_bound() {
    let ok = L::default().file("a", 0o644, (0, 0), b"abc").end();
    // A corrupt checksum.
    let mut bad = ok.clone();
    bad[0] = b'b';
    assert!(matches!(
        flatten(&[bad]),
        Err(FlattenError::Malformed { layer: 0, .. })
    ));
    // Truncated inside a file.
    let cut = ok[..512 + 2].to_vec();
    assert!(matches!(
        flatten(&[cut]),
        Err(FlattenError::Malformed { .. })
    ));
    // A PAX header larger than accepted is refused before it is read.
    let huge = L::default()
        .raw(
            &raw_header(b"pax", b'x', 0o644, (0, 0), MAX_EXTENDED + 1, b""),
            b"",
        )
        .end();
    let e = flatten(&[huge]).unwrap_err();
    assert!(e.to_string().contains("PAX header of"), "{e}");
    // An entry larger than the limit, and a stream longer than it.
    let limits = Limits {
        max_entries: 10,
        max_bytes: 4096,
    };
    let big = L::default().file("big", 0o644, (0, 0), &[0u8; 5000]).end();
    assert!(matches!(
        flatten_with(&[big], &limits),
        Err(FlattenError::TooLarge { .. })
    ));
    let mut long = L::default();
    for i in 0..8 {
        long = long.file(&format!("f{i}"), 0o644, (0, 0), &[1u8; 600]);
    }
    assert!(matches!(
        flatten_with(&[long.end()], &limits),
        Err(FlattenError::TooLarge { .. })
    ));
    // Too many entries.
    let mut many = L::default();
    for i in 0..11 {
        many = many.dir(&format!("d{i}/"), 0o755);
    }
    let limits = Limits {
        max_entries: 10,
        max_bytes: 1 << 20,
    };
    assert!(matches!(
        flatten_with(&[many.end()], &limits),
        Err(FlattenError::TooManyEntries { .. })
    ));
}

#[test]
fn a_layer_that_changes_between_passes_is_caught() {
    let first = L::default().file("a", 0o644, (0, 0), b"abc").end();
    let second = L::default().file("a", 0o644, (0, 0), b"abcd").end();
    let p = plan(
        1,
        |_| Ok::<_, std::io::Error>(&first[..]),
        &Limits::default(),
    )
    .unwrap();
    let e = emit(&p, |_| Ok::<_, std::io::Error>(&second[..]), Vec::new()).unwrap_err();
    assert!(
        matches!(e, FlattenError::Changed { layer: 0, index: 0 }),
        "{e:?}"
    );
}

#[test]
fn many_layers_read_in_parallel_apply_in_order_and_the_first_error_wins() {
    // Each layer rewrites the same file and removes the previous layer's marker.
    let layers: Vec<Vec<u8>> = (0..9)
        .map(|i| {
            let mut l = L::default().file("same", 0o644, (0, 0), format!("layer {i}").as_bytes());
            if i > 0 {
                l = l.file(&format!(".wh.m{}", i - 1), 0o644, (0, 0), b"");
            }
            l.file(&format!("m{i}"), 0o644, (0, 0), b"").end()
        })
        .collect();
    let t = tree(&flatten(&layers).unwrap().0);
    assert_eq!(t.keys().collect::<Vec<_>>(), ["m8", "same"]);
    assert_eq!(t["same"].body, b"layer 8");

    // Layer 2 refused and layer 5 not a tar stream: layer 2 is reported, every time.
    let mut bad = layers.clone();
    bad[2] = L::default().file("/abs", 0o644, (0, 0), b"").end();
    bad[5] = vec![0x55; 4096];
    for _ in 0..20 {
        match flatten(&bad) {
            Err(FlattenError::Refused { layer: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn long_names_that_are_not_utf8_are_marked_binary() {
    let mut name = b"d/".to_vec();
    for _ in 0..40 {
        name.extend_from_slice(b"caf\xe9");
    }
    let layer = L::default()
        .pax(&[("path", &name)])
        .file("placeholder", 0o644, (0, 0), b"latin-1")
        .end();
    let (stream, _) = flatten(&[layer]).unwrap();
    assert!(stream.windows(18).any(|w| w == b"hdrcharset=BINARY\n"));
    let mut a = tar::Archive::new(&stream[..]);
    let names: Vec<Vec<u8>> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert_eq!(names, [b"d/".to_vec(), name]);
}
