//! The layer flattener: plan (headers only) and emit (one canonical tar stream).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::tarin::{Header, Kind, TarError, TarReader};
use super::tarout::{Meta, TarWriter};
use crate::show;

/// The name of an opaque-directory marker in a layer.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of a whiteout in a layer.
const WHITEOUT: &[u8] = b".wh.";
/// Symlinks followed while resolving one path, as Linux allows.
const MAX_SYMLINKS: u32 = 40;
/// The longest path accepted (Linux's `PATH_MAX` less its NUL).
const MAX_PATH: usize = 4095;
/// The longest name of one path component (ext4's limit).
const MAX_NAME: usize = 255;

/// What one image may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries read from all layers together (each costs a little memory).
    pub max_entries: u64,
    /// Bytes of tar stream read from all layers together, and so at most this much
    /// content: a decompression bomb stops here.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1 << 20,
            max_bytes: 16 << 30,
        }
    }
}

/// Why flattening failed. `layer` is the index of the layer, from the bottom.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("entry {entry:?} is refused: {reason}")]
    Refused {
        layer: usize,
        entry: String,
        reason: String,
    },
    #[error("it is not a valid tar stream: {reason}")]
    Malformed { layer: usize, reason: String },
    #[error("the layers hold more than {limit} bytes")]
    TooLarge { layer: usize, limit: u64 },
    #[error("the layers hold more than {limit} entries")]
    TooManyEntries { layer: usize, limit: u64 },
    #[error("reading it")]
    Read {
        layer: usize,
        #[source]
        source: io::Error,
    },
    #[error("it changed between the two passes over it (entry {index})")]
    Changed { layer: usize, index: u64 },
    #[error("writing the flattened stream")]
    Write(#[source] io::Error),
}

impl FlattenError {
    /// The layer the error is about, if any.
    pub fn layer(&self) -> Option<usize> {
        match self {
            FlattenError::Refused { layer, .. }
            | FlattenError::Malformed { layer, .. }
            | FlattenError::TooLarge { layer, .. }
            | FlattenError::TooManyEntries { layer, .. }
            | FlattenError::Read { layer, .. }
            | FlattenError::Changed { layer, .. } => Some(*layer),
            FlattenError::Write(_) => None,
        }
    }

    fn from_tar(layer: usize, e: TarError) -> Self {
        match e {
            TarError::Entry { entry, reason } => FlattenError::Refused {
                layer,
                entry,
                reason,
            },
            TarError::Stream(reason) => FlattenError::Malformed { layer, reason },
            TarError::Io(source) => FlattenError::Read { layer, source },
        }
    }
}

/// Figures about the flattened tree, for sizing the filesystem it becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Entries in the tree (every path, the root excluded).
    pub entries: u64,
    /// Inodes it needs: directories, files, links and nodes (hard links share one).
    pub inodes: u64,
    pub dirs: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
    /// An upper estimate of the 4 KiB data blocks the tree takes in ext4.
    pub blocks: u64,
    /// Entries read from the layers, whiteouts included.
    pub read: u64,
}

type NodeId = u32;
type InodeId = u32;
const ROOT: NodeId = 0;

enum Body {
    Dir {
        meta: Meta,
        children: HashMap<Box<[u8]>, NodeId>,
    },
    Leaf(InodeId),
}

struct Node {
    parent: NodeId,
    /// The layer that last wrote this entry (for whiteouts: they only remove what lower
    /// layers made).
    layer: u32,
    body: Body,
}

enum IKind {
    File { size: u64, src: (u32, u64) },
    Symlink(Box<[u8]>),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

struct Inode {
    meta: Meta,
    kind: IKind,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The result of the first pass: the final tree, and where each file's content is.
pub struct Plan {
    nodes: Vec<Node>,
    inodes: Vec<Inode>,
    /// Each inode's paths in the tree, in emission order (filled by `finish`).
    paths: Vec<Vec<Vec<u8>>>,
    /// (layer, entry index) of each surviving file's content → its inode.
    sources: HashMap<(u32, u64), InodeId>,
    layers: usize,
    pub stats: PlanStats,
}

enum Why {
    NotDir(Vec<u8>),
    Dangling(Vec<u8>),
    Loop,
}

impl Why {
    fn reason(&self) -> String {
        match self {
            Why::NotDir(p) => format!("its parent {:?} is not a directory", show(p)),
            Why::Dangling(p) => format!(
                "its parent {:?} is a symlink to nothing in the image",
                show(p)
            ),
            Why::Loop => format!("resolving it takes more than {MAX_SYMLINKS} symlinks"),
        }
    }
}

/// The components of an entry's path; empty for the root. Refuses absolute paths,
/// `..`, control characters and names longer than the filesystem takes.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute paths are not accepted".into());
    }
    if raw.len() > MAX_PATH {
        return Err(format!("a path longer than {MAX_PATH} bytes"));
    }
    if let Some(b) = raw.iter().find(|b| **b < 0x20 || **b == 0x7f) {
        return Err(format!("a name with the control character {b:#04x}"));
    }
    let mut parts = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("paths with `..` are not accepted".into()),
            c if c.len() > MAX_NAME => {
                return Err(format!("a name longer than {MAX_NAME} bytes"));
            }
            c => parts.push(c),
        }
    }
    Ok(parts)
}

impl Plan {
    fn new(layers: usize) -> Self {
        Plan {
            nodes: vec![Node {
                parent: ROOT,
                layer: 0,
                body: Body::Dir {
                    meta: Meta {
                        mode: 0o755,
                        ..Meta::default()
                    },
                    children: HashMap::new(),
                },
            }],
            inodes: Vec::new(),
            paths: Vec::new(),
            sources: HashMap::new(),
            layers,
            stats: PlanStats::default(),
        }
    }

    fn children(&self, id: NodeId) -> Option<&HashMap<Box<[u8]>, NodeId>> {
        match &self.nodes[id as usize].body {
            Body::Dir { children, .. } => Some(children),
            Body::Leaf(_) => None,
        }
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.children(dir).and_then(|c| c.get(name).copied())
    }

    fn add_node(&mut self, parent: NodeId, name: &[u8], layer: u32, body: Body) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        self.nodes.push(Node {
            parent,
            layer,
            body,
        });
        if let Body::Dir { children, .. } = &mut self.nodes[parent as usize].body {
            children.insert(name.into(), id);
        }
        id
    }

    fn add_inode(&mut self, meta: Meta, kind: IKind) -> InodeId {
        self.inodes.push(Inode { meta, kind });
        InodeId::try_from(self.inodes.len() - 1).unwrap_or(InodeId::MAX)
    }

    fn detach(&mut self, dir: NodeId, name: &[u8]) {
        if let Body::Dir { children, .. } = &mut self.nodes[dir as usize].body {
            children.remove(name);
        }
    }

    /// Resolve directory components below `start`, following symlinks inside the root
    /// (an absolute target starts again at the root, `..` stops at it). Missing
    /// directories are created (mode 0755, root's) when `create` is set.
    fn resolve(
        &mut self,
        start: NodeId,
        comps: &[&[u8]],
        create: Option<(u32, i64)>,
        budget: &mut u32,
    ) -> Result<Option<NodeId>, Why> {
        let mut cur = start;
        for (i, c) in comps.iter().enumerate() {
            if *c == b".." {
                cur = self.nodes[cur as usize].parent;
                continue;
            }
            if c.is_empty() || *c == b"." {
                continue;
            }
            let so_far = || comps[..=i].join(&b'/');
            match self.child(cur, c) {
                None => match create {
                    Some((layer, mtime)) => {
                        cur = self.add_node(
                            cur,
                            c,
                            layer,
                            Body::Dir {
                                meta: Meta {
                                    mode: 0o755,
                                    mtime,
                                    ..Meta::default()
                                },
                                children: HashMap::new(),
                            },
                        );
                    }
                    None => return Ok(None),
                },
                Some(n) => match &self.nodes[n as usize].body {
                    Body::Dir { .. } => cur = n,
                    Body::Leaf(ino) => {
                        let IKind::Symlink(target) = &self.inodes[*ino as usize].kind else {
                            return Err(Why::NotDir(so_far()));
                        };
                        if *budget == 0 {
                            return Err(Why::Loop);
                        }
                        *budget -= 1;
                        let target = target.to_vec();
                        let from = if target.starts_with(b"/") { ROOT } else { cur };
                        let tcomps: Vec<&[u8]> = target.split(|b| *b == b'/').collect();
                        // What a link points at is never created.
                        match self.resolve(from, &tcomps, None, budget)? {
                            Some(d) => cur = d,
                            None if create.is_some() => return Err(Why::Dangling(so_far())),
                            None => return Ok(None),
                        }
                    }
                },
            }
        }
        Ok(Some(cur))
    }

    fn refused(layer: usize, path: &[u8], reason: impl Into<String>) -> FlattenError {
        FlattenError::Refused {
            layer,
            entry: show(path),
            reason: reason.into(),
        }
    }

    /// Apply one entry of layer `layer` (its `index`th).
    fn apply(&mut self, layer: usize, index: u64, h: Header) -> Result<(), FlattenError> {
        let l = u32::try_from(layer).unwrap_or(u32::MAX);
        let comps = components(&h.path).map_err(|r| Self::refused(layer, &h.path, r))?;
        let Some((name, dir_comps)) = comps.split_last() else {
            // The root itself: kept as the filesystem makes it (root's, 0755).
            return Ok(());
        };
        let refuse = |why: Why| Self::refused(layer, &h.path, why.reason());
        if let Some(victim) = name.strip_prefix(WHITEOUT) {
            let mut budget = MAX_SYMLINKS;
            let Ok(Some(dir)) = self.resolve(ROOT, dir_comps, None, &mut budget) else {
                return Ok(()); // nothing there to remove
            };
            if *name == OPAQUE {
                let lower: Vec<Box<[u8]>> = self
                    .children(dir)
                    .map(|c| {
                        c.iter()
                            .filter(|(_, id)| self.nodes[**id as usize].layer < l)
                            .map(|(n, _)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for n in lower {
                    self.detach(dir, &n);
                }
                return Ok(());
            }
            if victim.starts_with(WHITEOUT) {
                return Ok(()); // aufs bookkeeping (`.wh..wh.plnk` and the like)
            }
            if victim.is_empty() || victim == b"." || victim == b".." {
                return Err(Self::refused(layer, &h.path, "a whiteout without a name"));
            }
            if self
                .child(dir, victim)
                .is_some_and(|id| self.nodes[id as usize].layer < l)
            {
                self.detach(dir, victim);
            }
            return Ok(());
        }
        let mut budget = MAX_SYMLINKS;
        let parent = self
            .resolve(ROOT, dir_comps, Some((l, h.mtime)), &mut budget)
            .map_err(refuse)?
            .unwrap_or(ROOT);
        let meta = Meta {
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            xattrs: h.xattrs,
        };
        let existing = self.child(parent, name);
        if h.kind == Kind::Dir {
            if let Some(id) = existing {
                let node = &mut self.nodes[id as usize];
                if let Body::Dir { meta: old, .. } = &mut node.body {
                    let mut xattrs = std::mem::take(&mut old.xattrs);
                    for (k, v) in meta.xattrs {
                        xattrs.retain(|(n, _)| *n != k);
                        xattrs.push((k, v));
                    }
                    *old = Meta { xattrs, ..meta };
                    node.layer = l;
                    return Ok(());
                }
                self.detach(parent, name);
            }
            self.add_node(
                parent,
                name,
                l,
                Body::Dir {
                    meta,
                    children: HashMap::new(),
                },
            );
            return Ok(());
        }
        let inode = match h.kind {
            Kind::File => self.add_inode(
                meta,
                IKind::File {
                    size: h.size,
                    src: (l, index),
                },
            ),
            Kind::Symlink => {
                if h.link.is_empty() {
                    return Err(Self::refused(layer, &h.path, "a symlink without a target"));
                }
                if h.link.len() > MAX_PATH || h.link.contains(&0) {
                    return Err(Self::refused(layer, &h.path, "a symlink target too long"));
                }
                self.add_inode(meta, IKind::Symlink(h.link.into()))
            }
            Kind::Fifo => self.add_inode(meta, IKind::Fifo),
            Kind::Char => self.add_inode(meta, IKind::Char(h.dev.0, h.dev.1)),
            Kind::Block => self.add_inode(meta, IKind::Block(h.dev.0, h.dev.1)),
            Kind::HardLink => {
                let tcomps = components(&h.link).map_err(|r| {
                    Self::refused(layer, &h.path, format!("its hard link target: {r}"))
                })?;
                let Some((tname, tdir)) = tcomps.split_last() else {
                    return Err(Self::refused(
                        layer,
                        &h.path,
                        "a hard link to the image's root",
                    ));
                };
                let mut budget = MAX_SYMLINKS;
                let target = self
                    .resolve(ROOT, tdir, None, &mut budget)
                    .map_err(refuse)?
                    .and_then(|d| self.child(d, tname));
                let Some(t) = target else {
                    return Err(Self::refused(
                        layer,
                        &h.path,
                        format!("its hard link target {:?} does not exist", show(&h.link)),
                    ));
                };
                if Some(t) == existing {
                    return Ok(()); // a link to itself changes nothing
                }
                match self.nodes[t as usize].body {
                    Body::Leaf(ino) => ino,
                    Body::Dir { .. } => {
                        return Err(Self::refused(layer, &h.path, "a hard link to a directory"));
                    }
                }
            }
            Kind::Dir => unreachable!("handled above"),
        };
        if existing.is_some() {
            self.detach(parent, name);
        }
        self.add_node(parent, name, l, Body::Leaf(inode));
        Ok(())
    }

    /// The first entry (in emission order) with an extended attribute not in `kept`,
    /// and the attribute's name: for a consumer that can only write some of them.
    pub fn xattr_not_in(&self, kept: &[&[u8]]) -> Option<(String, String)> {
        // The walk stops at the first find, carried out as its "error".
        self.walk(|path, id| {
            let meta = match &self.nodes[id as usize].body {
                Body::Dir { meta, .. } => meta,
                Body::Leaf(ino) => &self.inodes[*ino as usize].meta,
            };
            match meta.xattrs.iter().find(|(n, _)| !kept.contains(&&n[..])) {
                Some((name, _)) => Err((show(path), show(name))),
                None => Ok(()),
            }
        })
        .err()
    }

    /// Walk the final tree in emission order (names sorted, parents first), calling
    /// `f(path, node)` for every node but the root.
    fn walk<E>(&self, mut f: impl FnMut(&[u8], NodeId) -> Result<(), E>) -> Result<(), E> {
        let mut stack: Vec<(Vec<u8>, NodeId)> = vec![(Vec::new(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            if id != ROOT {
                f(&path, id)?;
            }
            if let Some(children) = self.children(id) {
                let mut names: Vec<(&[u8], NodeId)> =
                    children.iter().map(|(n, c)| (&n[..], *c)).collect();
                names.sort_unstable_by(|a, b| b.0.cmp(a.0)); // reversed: popped in order
                for (n, c) in names {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(n);
                    stack.push((p, c));
                }
            }
        }
        Ok(())
    }

    /// Collect each inode's paths, the content sources and the figures.
    fn finish(&mut self) {
        let mut paths: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.inodes.len()];
        let mut stats = PlanStats {
            read: self.stats.read,
            ..PlanStats::default()
        };
        let Ok::<(), std::convert::Infallible>(()) = self.walk(|path, id| {
            stats.entries += 1;
            match &self.nodes[id as usize].body {
                Body::Dir { children, meta } => {
                    stats.dirs += 1;
                    stats.inodes += 1;
                    let bytes: u64 = children
                        .keys()
                        .map(|n| 8 + (n.len() as u64).div_ceil(4) * 4)
                        .sum();
                    stats.blocks += (bytes + 24).div_ceil(4096).max(1) + xattr_blocks(meta);
                }
                Body::Leaf(ino) => {
                    let p = &mut paths[*ino as usize];
                    if p.is_empty() {
                        stats.inodes += 1;
                        let inode = &self.inodes[*ino as usize];
                        stats.blocks += xattr_blocks(&inode.meta);
                        match &inode.kind {
                            IKind::File { size, .. } => {
                                stats.bytes += size;
                                // Data, and an extent block per GiB beyond the inode's own.
                                stats.blocks += size.div_ceil(4096) + size / (1 << 30);
                            }
                            IKind::Symlink(t) if t.len() >= 60 => stats.blocks += 1,
                            _ => {}
                        }
                    }
                    p.push(path.to_vec());
                }
            }
            Ok(())
        });
        self.sources = self
            .inodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !paths[*i].is_empty())
            .filter_map(|(i, ino)| match ino.kind {
                IKind::File { src, .. } => Some((src, InodeId::try_from(i).ok()?)),
                _ => None,
            })
            .collect();
        self.paths = paths;
        self.stats = stats;
    }
}

fn xattr_blocks(meta: &Meta) -> u64 {
    let bytes: usize = meta
        .xattrs
        .iter()
        .map(|(k, v)| k.len() + v.len() + 16)
        .sum();
    // What does not fit in a 256-byte inode's spare room takes a block.
    u64::from(bytes > 96)
}

/// Read every layer's headers into the final tree. `open(i)` gives layer `i`'s tar
/// stream (decompressed); it is read to its end. Layers are read (decompressed and
/// parsed) on up to as many threads as the machine has cores, a layer per thread at a
/// time, and applied strictly in order; the first error in layer order is the one
/// returned.
pub fn plan<R: Read + Send>(
    layers: usize,
    open: impl Fn(usize) -> io::Result<R> + Sync,
    limits: &Limits,
) -> Result<Plan, FlattenError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(layers);
    let mut p = Plan::new(layers);
    if workers <= 1 {
        let mut total = 0;
        for layer in 0..layers {
            let mut apply = |index, h| p.apply_counted(layer, index, h, limits);
            total += read_layer(layer, &open, limits, &mut apply)?;
            check_total(layer, total, limits)?;
        }
        p.finish();
        return Ok(p);
    }
    // Headers wait in a bounded queue per layer until their turn.
    const QUEUE: usize = 4096;
    std::thread::scope(|scope| {
        let mut rxs = Vec::with_capacity(layers);
        let mut txs: Vec<Vec<(usize, std::sync::mpsc::SyncSender<Item>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for layer in 0..layers {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            txs[layer % workers].push((layer, tx));
            rxs.push(rx);
        }
        for mine in txs {
            let open = &open;
            scope.spawn(move || {
                for (layer, tx) in mine {
                    let mut send = |index, h| {
                        tx.send(Item::Entry(index, h))
                            .map_err(|_| FlattenError::Write(io::ErrorKind::BrokenPipe.into()))
                    };
                    let end = match read_layer(layer, open, limits, &mut send) {
                        Ok(bytes) => Item::End(bytes),
                        Err(e) => Item::Failed(e),
                    };
                    let failed = matches!(end, Item::Failed(_));
                    if tx.send(end).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut total = 0;
        for (layer, rx) in rxs.iter().enumerate() {
            loop {
                match rx.recv() {
                    Ok(Item::Entry(index, h)) => p.apply_counted(layer, index, h, limits)?,
                    Ok(Item::End(bytes)) => {
                        total += bytes;
                        check_total(layer, total, limits)?;
                        break;
                    }
                    Ok(Item::Failed(e)) => return Err(e),
                    Err(_) => {
                        return Err(FlattenError::Read {
                            layer,
                            source: io::Error::other("the layer's reader stopped"),
                        });
                    }
                }
            }
        }
        // Dropping the queues on an early return stops the readers at their next header.
        drop(rxs);
        p.finish();
        Ok(p)
    })
}

/// What a layer's reader hands over.
enum Item {
    Entry(u64, Header),
    End(u64),
    Failed(FlattenError),
}

/// Read one layer's headers, passing each to `f`; returns the bytes the layer held.
fn read_layer<R: Read>(
    layer: usize,
    open: &impl Fn(usize) -> io::Result<R>,
    limits: &Limits,
    f: &mut impl FnMut(u64, Header) -> Result<(), FlattenError>,
) -> Result<u64, FlattenError> {
    let r = open(layer).map_err(|source| FlattenError::Read { layer, source })?;
    let mut t = TarReader::new(Bounded::new(r, limits.max_bytes));
    let mut index = 0u64;
    while let Some(h) = t.next_entry().map_err(|e| bounded_err(layer, e, limits))? {
        if h.size > limits.max_bytes {
            return Err(FlattenError::TooLarge {
                layer,
                limit: limits.max_bytes,
            });
        }
        f(index, h)?;
        index += 1;
    }
    drain(t, layer, limits)
}

fn check_total(layer: usize, total: u64, limits: &Limits) -> Result<(), FlattenError> {
    if total > limits.max_bytes {
        return Err(FlattenError::TooLarge {
            layer,
            limit: limits.max_bytes,
        });
    }
    Ok(())
}

impl Plan {
    /// Apply an entry, counting it against the entry limit.
    fn apply_counted(
        &mut self,
        layer: usize,
        index: u64,
        h: Header,
        limits: &Limits,
    ) -> Result<(), FlattenError> {
        self.stats.read += 1;
        if self.stats.read > limits.max_entries {
            return Err(FlattenError::TooManyEntries {
                layer,
                limit: limits.max_entries,
            });
        }
        self.apply(layer, index, h)
    }
}

/// Write the planned tree as one tar stream to `out`, reading the layers once more for
/// the files' contents. Returns the number of bytes written.
pub fn emit<R: Read, W: Write>(
    plan: &Plan,
    mut open: impl FnMut(usize) -> io::Result<R>,
    out: W,
) -> Result<u64, FlattenError> {
    let mut w = TarWriter::new(out);
    let wr = FlattenError::Write;
    // Directories, links, devices and fifos: everything but file contents.
    plan.walk(|path, id| {
        match &plan.nodes[id as usize].body {
            Body::Dir { meta, .. } => w
                .header(path, Kind::Dir, meta, 0, b"", (0, 0))
                .map_err(wr)?,
            Body::Leaf(ino) => {
                let inode = &plan.inodes[*ino as usize];
                let first = &plan.paths[*ino as usize][0];
                if let IKind::File { .. } = inode.kind {
                    return Ok(());
                }
                if first.as_slice() != path {
                    w.header(path, Kind::HardLink, &inode.meta, 0, first, (0, 0))
                        .map_err(wr)?;
                    return Ok(());
                }
                let (kind, link, dev): (Kind, &[u8], (u32, u32)) = match &inode.kind {
                    IKind::Symlink(t) => (Kind::Symlink, t, (0, 0)),
                    IKind::Fifo => (Kind::Fifo, b"", (0, 0)),
                    IKind::Char(a, b) => (Kind::Char, b"", (*a, *b)),
                    IKind::Block(a, b) => (Kind::Block, b"", (*a, *b)),
                    IKind::File { .. } => unreachable!("returned above"),
                };
                w.header(path, kind, &inode.meta, 0, link, dev)
                    .map_err(wr)?;
            }
        }
        Ok(())
    })?;
    // Files, as their layers pass by.
    let mut buf = vec![0u8; 1 << 20];
    for layer in 0..plan.layers {
        let l = u32::try_from(layer).unwrap_or(u32::MAX);
        let r = open(layer).map_err(|source| FlattenError::Read { layer, source })?;
        let mut t = TarReader::new(Bounded::new(r, u64::MAX));
        let mut index = 0u64;
        while let Some(h) = t
            .next_entry()
            .map_err(|e| FlattenError::from_tar(layer, e))?
        {
            if let Some(ino) = plan.sources.get(&(l, index)) {
                let inode = &plan.inodes[*ino as usize];
                let IKind::File { size, .. } = inode.kind else {
                    unreachable!("sources are files")
                };
                if h.kind != Kind::File || h.size != size {
                    return Err(FlattenError::Changed { layer, index });
                }
                let paths = &plan.paths[*ino as usize];
                w.header(&paths[0], Kind::File, &inode.meta, size, b"", (0, 0))
                    .map_err(wr)?;
                let mut content = t.content();
                let mut left = size;
                while left > 0 {
                    let k = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    let n = content.read(&mut buf[..k]).map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            FlattenError::Malformed {
                                layer,
                                reason: e.to_string(),
                            }
                        } else {
                            FlattenError::Read { layer, source: e }
                        }
                    })?;
                    w.content(&buf[..n]).map_err(wr)?;
                    left -= n as u64;
                }
                w.pad(size).map_err(wr)?;
                for p in &paths[1..] {
                    w.header(p, Kind::HardLink, &inode.meta, 0, &paths[0], (0, 0))
                        .map_err(wr)?;
                }
            }
            index += 1;
        }
        drain(t, layer, &Limits::default())?;
    }
    let written = w.written();
    w.finish().map_err(wr)?;
    Ok(written)
}

/// Read what follows a layer's end-of-archive blocks, so a verifying reader sees the
/// whole blob; returns the bytes read from the layer in all.
fn drain<R: Read>(
    t: TarReader<Bounded<R>>,
    layer: usize,
    limits: &Limits,
) -> Result<u64, FlattenError> {
    let mut r = t.into_inner();
    io::copy(&mut r, &mut io::sink()).map_err(|e| bounded_err(layer, TarError::Io(e), limits))?;
    Ok(r.read)
}

fn bounded_err(layer: usize, e: TarError, limits: &Limits) -> FlattenError {
    match e {
        TarError::Io(io) if io.get_ref().is_some_and(|i| i.is::<OverLimit>()) => {
            FlattenError::TooLarge {
                layer,
                limit: limits.max_bytes,
            }
        }
        other => FlattenError::from_tar(layer, other),
    }
}

#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the layer's stream is larger than allowed")
    }
}

impl std::error::Error for OverLimit {}

/// A reader that fails once more than `limit` bytes came through.
struct Bounded<R> {
    r: R,
    read: u64,
    limit: u64,
}

impl<R> Bounded<R> {
    fn new(r: R, limit: u64) -> Self {
        Bounded { r, read: 0, limit }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        Ok(n)
    }
}
