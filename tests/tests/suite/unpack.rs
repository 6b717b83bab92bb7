//! Image unpack (`strata_snapshotter::image::unpack`, reference 7.1-7.3) into the overlay
//! snapshotter (layers applied side by side, then committed onto their parents) and the native
//! one (layers one after another): the tree a view of the top chain ID shows, against
//! `umoci unpack` and across the two paths; chain IDs and parents; the labels unpack writes;
//! lying configs, hostile layers, platform selection; a 200-layer image; concurrent unpacks;
//! layers that write into directories they do not list; the same blob twice in one image.
//!
//! Views are mounted through [`Mounted`], whose `Drop` unmounts, so a failing assertion never
//! leaves a mount behind. Overlay cases skip where the host cannot mount overlay (unless
//! `STRATA_REQUIRE_OVERLAY=1`); the umoci comparison skips without umoci (unless
//! `STRATA_REQUIRE_INTEROP=1`), but its own checks of the unpacked tree still run.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_snapshotter::backend::mount::{mount_all, unmount};
use strata_snapshotter::image::import::{ImportOptions, import};
use strata_snapshotter::image::oci::{self, Descriptor, Platform};
use strata_snapshotter::image::unpack::{LABEL_UNCOMPRESSED, Unpacked, unpack};
use strata_snapshotter::{Error, Info, Kind, Mount, Snapshotter};
use strata_store::{Algorithm, Digest, ErrorKind, Store};
use strata_tests::fixture::{
    self, Blob, Compression, EPOCH, Entry, Image, ImageBuilder, Layer, OciLayout, SAMPLE_NAME,
};
use tempfile::TempDir;

use crate::support::{have_tool as have, scope, small_options, snapshotter};

const NS: &str = "unpack";

// ---------------------------------------------------------------------------------------------
// A store with one snapshotter, inside a wrapper directory that also holds a sentinel tree
// (to prove nothing outside the store root changes) and scratch space (layouts, mount points).

struct Fx {
    store: Store,
    sn: Snapshotter,
    next: Cell<usize>,
    /// `<dir>/store`, `<dir>/sentinel`, `<dir>/work`. Declared last: dropped after the store.
    dir: TempDir,
}

impl Fx {
    /// A fresh store and snapshotter `name`; `None` where overlay is unavailable (skip).
    fn new(name: &str) -> Option<Fx> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sentinel = dir.path().join("sentinel");
        fs::create_dir_all(sentinel.join("inner")).expect("sentinel");
        fs::write(sentinel.join("secret"), "do not touch\n").expect("sentinel file");
        fs::write(sentinel.join("inner/file"), "nor this\n").expect("sentinel file");
        fs::create_dir(dir.path().join("work")).expect("work dir");
        let store = Store::open(dir.path().join("store"), small_options()).expect("open store");
        let sn = snapshotter(&store, name)?;
        Some(Fx {
            store,
            sn,
            next: Cell::new(0),
            dir,
        })
    }

    fn wrapper(&self) -> &Path {
        self.dir.path()
    }

    fn sentinel(&self) -> PathBuf {
        self.dir.path().join("sentinel")
    }

    /// A fresh, not yet existing path under `work/`.
    fn fresh(&self, name: &str) -> PathBuf {
        let n = self.next.get();
        self.next.set(n + 1);
        self.dir.path().join("work").join(format!("{name}-{n}"))
    }

    fn import_layout(&self, layout: &OciLayout) {
        let path = self.fresh("layout");
        layout.write_dir(&path).expect("write layout");
        import(
            &self.store,
            &scope(NS),
            &path,
            &ImportOptions::default(),
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("import {}: {e}", path.display()));
    }

    fn import(&self, images: &[&Image]) {
        self.import_layout(&OciLayout::new(images));
    }

    fn try_unpack(&self, name: &str) -> strata_snapshotter::Result<Unpacked> {
        unpack(&self.store, &self.sn, &scope(NS), name, &|_| {})
    }

    fn unpack(&self, name: &str) -> Unpacked {
        self.try_unpack(name)
            .unwrap_or_else(|e| panic!("unpack {name} into {}: {e}", self.sn.name()))
    }

    fn snapshots(&self) -> Vec<Info> {
        self.sn.list::<&str>(NS, &[]).expect("list snapshots")
    }

    fn snapshot_names(&self) -> BTreeSet<String> {
        self.snapshots().into_iter().map(|i| i.name).collect()
    }

    fn labels(&self, digest: &Digest) -> BTreeMap<String, String> {
        self.store
            .content()
            .info(NS, digest)
            .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
            .labels
    }

    /// Mounts a view of `parent`, walks it, unmounts it and removes the view.
    fn view_tree(&self, parent: &Digest) -> Tree {
        let key = format!("view-{}", self.next.get());
        let mounts = self
            .sn
            .view(&scope(NS), &key, Some(&parent.to_string()), BTreeMap::new())
            .unwrap_or_else(|e| panic!("view of {parent}: {e}"));
        let tree = {
            let target = self.fresh("mnt");
            fs::create_dir(&target).expect("mount point");
            let m = Mounted::new(&mounts, target);
            walk(m.path())
        };
        self.sn
            .remove(&scope(NS), &key)
            .unwrap_or_else(|e| panic!("remove view {key}: {e}"));
        tree
    }

    /// No lease, no extraction snapshot, no snapshot directory without a record.
    fn assert_clean(&self, what: &str) {
        let leases = self.store.leases().list::<&str>(NS, &[]).expect("leases");
        assert!(
            leases.is_empty(),
            "{what}: the unpack lease is gone: {leases:?}"
        );
        let extract: Vec<String> = self
            .snapshot_names()
            .into_iter()
            .filter(|n| n.starts_with("extract-"))
            .collect();
        assert!(
            extract.is_empty(),
            "{what}: no extraction snapshot remains: {extract:?}"
        );
        let mut recorded = BTreeSet::new();
        for info in self.snapshots() {
            let files = self.sn.files(NS, &info.name).expect("files");
            assert!(files.is_dir(), "{what}: {} has its directory", info.name);
            let id = files
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .expect("snapshot dir name")
                .to_owned();
            recorded.insert(id);
        }
        let unrecorded: Vec<String> = fs::read_dir(self.sn.root())
            .expect("snapshot root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !recorded.contains(n))
            .collect();
        assert!(
            unrecorded.is_empty(),
            "{what}: snapshot directories no record names (a leftover extraction?): {unrecorded:?}"
        );
    }

    /// Everything in the wrapper directory except the store root.
    fn outside_store(&self) -> Tree {
        let mut t = walk(self.wrapper());
        t.nodes
            .retain(|p, _| p.as_str() != "store" && !p.starts_with("store/"));
        t.links.clear();
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts.

/// A mount that is unmounted when dropped.
struct Mounted {
    target: PathBuf,
}

impl Mounted {
    fn new(mounts: &[Mount], target: PathBuf) -> Mounted {
        assert!(!mounts.is_empty(), "a view has mounts");
        if let Err(e) = mount_all(mounts, &target) {
            let _ = unmount(&target);
            panic!("mount {mounts:?} on {}: {e}", target.display());
        }
        Mounted { target }
    }

    fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.target) {
            eprintln!("unmount {}: {e}", self.target.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trees: an lstat-based walk and a comparer.

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeKind {
    Dir,
    File { len: u64, sha256: Digest },
    Symlink(PathBuf),
    Fifo,
    CharDevice(u64),
    BlockDevice(u64),
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: NodeKind,
    /// Permission bits with set-id and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// Link count of non-directories.
    nlink: Option<u64>,
    /// `user.*` extended attributes.
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Tree {
    /// Relative path (`.` for the root) -> node.
    nodes: BTreeMap<String, Node>,
    /// Sets of paths sharing one inode (hard links), only those with several paths.
    links: BTreeSet<BTreeSet<String>>,
}

impl Tree {
    fn get(&self, path: &str) -> &Node {
        self.nodes
            .get(path)
            .unwrap_or_else(|| panic!("{path} is in the tree"))
    }

    fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    fn children(&self, dir: &str) -> BTreeSet<String> {
        let prefix = if dir == "." {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/') && *rest != ".")
            .map(str::to_owned)
            .collect()
    }

    fn content_is(&self, path: &str, bytes: &[u8]) -> bool {
        self.get(path).kind
            == NodeKind::File {
                len: bytes.len() as u64,
                sha256: Digest::of(Algorithm::Sha256, bytes),
            }
    }
}

fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return out,
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.") {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])
            .unwrap_or_else(|e| panic!("getxattr {name} of {}: {e}", path.display()));
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

/// Walks `root` without following symlinks.
fn walk(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: BTreeMap<(u64, u64), BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), ".".to_owned())];
    while let Some((path, rel)) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            for entry in
                fs::read_dir(&path).unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
            {
                let entry = entry.expect("dir entry");
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if rel == "." {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((entry.path(), child));
            }
            NodeKind::Dir
        } else if ft.is_file() {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            NodeKind::File {
                len: bytes.len() as u64,
                sha256: Digest::of(Algorithm::Sha256, &bytes),
            }
        } else if ft.is_symlink() {
            NodeKind::Symlink(fs::read_link(&path).expect("readlink"))
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::CharDevice(meta.rdev())
        } else if ft.is_block_device() {
            NodeKind::BlockDevice(meta.rdev())
        } else {
            NodeKind::Socket
        };
        let is_dir = kind == NodeKind::Dir;
        if !is_dir {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .insert(rel.clone());
        }
        tree.nodes.insert(
            rel,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                nlink: (!is_dir).then(|| meta.nlink()),
                xattrs: user_xattrs(&path),
            },
        );
    }
    tree.links = inodes.into_values().filter(|s| s.len() > 1).collect();
    tree
}

/// What a comparison found: `diffs` fail a test; `notes` (directory mtimes, when they are not
/// compared strictly) are only reported.
#[derive(Debug, Default)]
struct Comparison {
    diffs: Vec<String>,
    notes: Vec<String>,
}

/// Compares two trees: names, kinds, contents, symlink targets, modes, owners, `user.*`
/// xattrs, hard-link groups, link counts and mtimes of non-directories, and directory mtimes
/// (strictly when `strict_dir_mtimes`, else as notes). The roots' mtimes are never compared
/// (a snapshot's root is made by the snapshotter, not by a layer).
fn compare(
    (ln, left): (&str, &Tree),
    (rn, right): (&str, &Tree),
    strict_dir_mtimes: bool,
) -> Comparison {
    let mut c = Comparison::default();
    let paths: BTreeSet<&String> = left.nodes.keys().chain(right.nodes.keys()).collect();
    for path in paths {
        let (l, r) = match (left.nodes.get(path), right.nodes.get(path)) {
            (Some(l), Some(r)) => (l, r),
            (Some(l), None) => {
                c.diffs.push(format!("{path}: only in {ln} ({:?})", l.kind));
                continue;
            }
            (None, Some(r)) => {
                c.diffs.push(format!("{path}: only in {rn} ({:?})", r.kind));
                continue;
            }
            (None, None) => continue,
        };
        let mut field = |name: &str, a: String, b: String, fail: bool| {
            if a != b {
                let msg = format!("{path}: {name}: {ln}={a} {rn}={b}");
                if fail {
                    c.diffs.push(msg);
                } else {
                    c.notes.push(msg);
                }
            }
        };
        field(
            "kind",
            format!("{:?}", l.kind),
            format!("{:?}", r.kind),
            true,
        );
        field(
            "mode",
            format!("{:o}", l.mode),
            format!("{:o}", r.mode),
            true,
        );
        field(
            "owner",
            format!("{}:{}", l.uid, l.gid),
            format!("{}:{}", r.uid, r.gid),
            true,
        );
        field(
            "xattrs",
            format!("{:?}", l.xattrs),
            format!("{:?}", r.xattrs),
            true,
        );
        field(
            "nlink",
            format!("{:?}", l.nlink),
            format!("{:?}", r.nlink),
            true,
        );
        if path != "." {
            let dir = l.kind == NodeKind::Dir && r.kind == NodeKind::Dir;
            field(
                if dir { "dir mtime" } else { "mtime" },
                format!("{:?}", l.mtime),
                format!("{:?}", r.mtime),
                !dir || strict_dir_mtimes,
            );
        }
    }
    if left.links != right.links {
        c.diffs.push(format!(
            "hard links: {ln}={:?} {rn}={:?}",
            left.links, right.links
        ));
    }
    c
}

fn assert_same_tree(left: (&str, &Tree), right: (&str, &Tree), strict_dir_mtimes: bool) {
    let c = compare(left, right, strict_dir_mtimes);
    for note in &c.notes {
        eprintln!("note: {note}");
    }
    assert!(
        c.diffs.is_empty(),
        "{} and {} differ:\n  {}",
        left.0,
        right.0,
        c.diffs.join("\n  ")
    );
}

/// What the sample's top looks like, whoever unpacked it (see `fixture::sample`).
fn assert_sample_tree(t: &Tree, who: &str) {
    let dirs = |p: &str| t.children(p);
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        dirs("."),
        set(&["etc", "home", "opt", "tmp", "usr"]),
        "{who}: top level"
    );
    assert!(
        t.content_is("etc/hostname", b"strata-top\n"),
        "{who}: hostname"
    );
    assert!(
        !t.has("etc/strata/remove-me.txt"),
        "{who}: file whiteout applied"
    );
    assert_eq!(
        dirs("etc/strata"),
        set(&["keep.txt", "xattr.txt"]),
        "{who}: etc/strata"
    );
    assert!(!t.has("usr/share/doc/beta"), "{who}: directory whiteout");
    assert_eq!(
        dirs("usr/share/doc"),
        set(&["alpha", "gamma"]),
        "{who}: usr/share/doc"
    );
    assert_eq!(
        dirs("usr/lib/python/json"),
        set(&["__init__.py"]),
        "{who}: the opaque dir shows only the top layer's file"
    );
    assert!(
        t.content_is(
            "usr/lib/python/json/__init__.py",
            b"# replaced by the top layer\n"
        ),
        "{who}: opaque dir's new file"
    );
    assert_eq!(t.get("opt/app/fifo").kind, NodeKind::Fifo, "{who}: fifo");
    assert_eq!(
        dirs("opt/app"),
        set(&["cache", "config.json", "data.bin", "fifo"]),
        "{who}: opt/app"
    );
    let wh: Vec<&String> = t
        .nodes
        .keys()
        .filter(|p| p.rsplit('/').next().is_some_and(|b| b.starts_with(".wh.")))
        .collect();
    assert!(wh.is_empty(), "{who}: no whiteout file is visible: {wh:?}");
    let devices: Vec<&String> = t
        .nodes
        .iter()
        .filter(|(_, n)| matches!(n.kind, NodeKind::CharDevice(_)))
        .map(|(p, _)| p)
        .collect();
    assert!(
        devices.is_empty(),
        "{who}: no overlay whiteout device is visible: {devices:?}"
    );
    // The base layer's entries.
    assert!(
        t.content_is("usr/bin/tool", &fixture::noise(6, 96 * 1024)),
        "{who}: tool"
    );
    assert_eq!(
        t.get("usr/bin/tool-abs").kind,
        NodeKind::Symlink("/usr/bin/tool".into()),
        "{who}: absolute symlink"
    );
    assert_eq!(
        t.get("usr/lib/libsample.so").kind,
        NodeKind::Symlink("libsample.so.1".into()),
        "{who}: relative symlink"
    );
    assert!(
        t.links
            .contains(&set(&["usr/bin/tool", "usr/bin/tool-hardlink"])),
        "{who}: tool and tool-hardlink share an inode: {:?}",
        t.links
    );
    assert_eq!(t.get("usr/bin/tool").nlink, Some(2), "{who}: tool nlink");
    assert_eq!(t.get("usr/bin/su-sample").mode, 0o4755, "{who}: setuid");
    assert_eq!(t.get("usr/bin/tool").mode, 0o755, "{who}: tool mode");
    assert_eq!(t.get("tmp").mode, 0o1777, "{who}: sticky");
    let notes = t.get("home/user/notes.txt");
    assert_eq!(
        (notes.uid, notes.gid, notes.mode),
        (1000, 1000, 0o640),
        "{who}: notes.txt owner and mode"
    );
    let home = t.get("home/user");
    assert_eq!(
        (home.uid, home.gid, home.mode),
        (1000, 1000, 0o750),
        "{who}: home/user owner and mode"
    );
    assert_eq!(
        t.get("etc/strata/xattr.txt").xattrs,
        BTreeMap::from([("user.strata".to_owned(), b"1".to_vec())]),
        "{who}: user xattr"
    );
    let epoch = (i64::try_from(EPOCH).expect("epoch"), 0);
    let off: Vec<String> = t
        .nodes
        .iter()
        .filter(|(p, n)| p.as_str() != "." && n.mtime != epoch)
        .map(|(p, n)| format!("{p} {:?} ({:?})", n.mtime, n.kind))
        .collect();
    assert!(
        off.is_empty(),
        "{who}: every entry keeps its header mtime {EPOCH}: {off:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Images built by hand (configs that lie, hostile tars), and helpers.

fn sha(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

fn foreign_platform() -> Platform {
    let host = oci::host_platform();
    Platform {
        architecture: if host.architecture == "s390x" {
            "riscv64"
        } else {
            "s390x"
        }
        .into(),
        os: "linux".into(),
        variant: None,
    }
}

/// An image from uncompressed layer tars (gzip-compressed here), whose config names
/// `config_diff_ids` (which may lie).
struct RawImage {
    name: String,
    blobs: Vec<Blob>,
    diff_ids: Vec<Digest>,
    config_diff_ids: Vec<Digest>,
    config: Blob,
    manifest: Blob,
}

impl RawImage {
    fn new(name: &str, tars: &[Vec<u8>], lie: impl FnOnce(&mut Vec<Digest>)) -> RawImage {
        let diff_ids: Vec<Digest> = tars.iter().map(|t| sha(t)).collect();
        let blobs: Vec<Blob> = tars
            .iter()
            .map(|t| {
                Blob::new(
                    oci::MEDIA_LAYER_GZIP,
                    Compression::Gzip.compress(t).expect("gzip"),
                )
            })
            .collect();
        let mut config_diff_ids = diff_ids.clone();
        lie(&mut config_diff_ids);
        let host = oci::host_platform();
        let config = serde_json::json!({
            "architecture": host.architecture,
            "os": host.os,
            "rootfs": {"type": "layers", "diff_ids": config_diff_ids},
        });
        let config = Blob::new(
            oci::MEDIA_CONFIG,
            serde_json::to_vec(&config).expect("config json"),
        );
        let manifest = oci::Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
            config: config.descriptor(),
            layers: blobs.iter().map(Blob::descriptor).collect(),
            annotations: BTreeMap::new(),
        };
        let manifest = Blob::new(
            oci::MEDIA_MANIFEST,
            serde_json::to_vec(&manifest).expect("manifest json"),
        );
        RawImage {
            name: name.to_owned(),
            blobs,
            diff_ids,
            config_diff_ids,
            config,
            manifest,
        }
    }

    fn layout(&self) -> OciLayout {
        let mut layout = OciLayout::default();
        layout.manifests.push(Descriptor {
            platform: Some(oci::host_platform()),
            annotations: BTreeMap::from([(
                oci::ANNOTATION_CONTAINERD_NAME.to_owned(),
                self.name.clone(),
            )]),
            ..self.manifest.descriptor()
        });
        for b in self.blobs.iter().chain([&self.config, &self.manifest]) {
            layout.blobs.insert(b.digest.clone(), b.bytes.clone());
        }
        layout
    }
}

/// One raw tar entry: the name and link name are written into the header as given (the tar
/// crate's builder refuses `..`, which is the point here).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).expect("append raw entry");
}

fn layer_tar(entries: Vec<Entry>) -> Vec<u8> {
    Layer::new(entries).tar().expect("layer tar")
}

fn sample_tars() -> Vec<Vec<u8>> {
    fixture::sample_layers()
        .iter()
        .map(|l| l.tar().expect("sample tar"))
        .collect()
}

fn chain_of(image: &Image) -> Vec<Digest> {
    oci::chain_ids(&image.diff_ids())
}

/// Checks that snapshot `chain[i]` is committed on `chain[i - 1]`, for every `i`.
fn assert_chain(fx: &Fx, chain: &[Digest]) {
    for (i, id) in chain.iter().enumerate() {
        let info = fx.sn.stat(NS, &id.to_string()).unwrap_or_else(|e| {
            panic!(
                "{}: layer {i}'s chain ID {id} is a snapshot: {e}",
                fx.sn.name()
            )
        });
        assert_eq!(info.kind, Kind::Committed, "{id} is committed");
        let parent = i.checked_sub(1).map(|p| chain[p].to_string());
        assert_eq!(info.parent, parent, "parent of layer {i}'s snapshot");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The sample image against umoci.

/// `umoci unpack` of `image` (an OCI layout written under `dir`): the bundle's rootfs.
fn umoci_rootfs(image: &Image, dir: &Path) -> PathBuf {
    let layout = dir.join("umoci-layout");
    OciLayout::new(&[image])
        .write_dir(&layout)
        .expect("write layout");
    let bundle = dir.join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !rustix::process::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!(
            "{}:{}",
            layout.display(),
            fixture::tag_of(&image.name)
        ))
        .arg(&bundle);
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

fn case_sample_matches_umoci(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let image = fixture::sample().expect("sample");
    fx.import(&[&image]);
    let u = fx.unpack(SAMPLE_NAME);
    assert_eq!(u.chain_id, *chain_of(&image).last().expect("layers"));
    let ours = fx.view_tree(&u.chain_id);
    assert_sample_tree(&ours, name);
    fx.assert_clean("after unpack");
    if !have("umoci") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = walk(&umoci_rootfs(&image, dir.path()));
    assert_sample_tree(&theirs, "umoci");
    assert_same_tree((name, &ours), ("umoci", &theirs), false);
}

#[test]
fn overlay_sample_matches_umoci() {
    case_sample_matches_umoci("overlay");
}

#[test]
fn native_sample_matches_umoci() {
    case_sample_matches_umoci("native");
}

// ---------------------------------------------------------------------------------------------
// 2. Chain IDs, parents, `applied`, shared base layers.

fn case_chain_ids(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let image = fixture::sample().expect("sample");
    fx.import(&[&image]);
    let chain = chain_of(&image);
    let progress = AtomicU64::new(0);
    let u = unpack(&fx.store, &fx.sn, &scope(NS), SAMPLE_NAME, &|n| {
        progress.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap_or_else(|e| panic!("unpack: {e}"));
    assert_eq!(u.image, SAMPLE_NAME);
    assert_eq!(u.chain_id, chain[2], "top chain ID");
    assert_eq!(u.layers.len(), 3);
    for (i, l) in u.layers.iter().enumerate() {
        assert_eq!(l.digest, image.layers[i].blob.digest, "layer {i} blob");
        assert_eq!(l.diff_id, image.layers[i].diff_id, "layer {i} diffID");
        assert_eq!(l.chain_id, chain[i], "layer {i} chain ID");
        assert!(l.applied, "layer {i} applied the first time");
    }
    let sizes: u64 = image.layers.iter().map(|l| l.blob.size()).sum();
    assert_eq!(
        progress.load(Ordering::Relaxed),
        sizes,
        "progress reports every layer's compressed size"
    );
    // The first chain ID is the base layer's diffID.
    assert_eq!(chain[0], image.layers[0].diff_id);
    assert_chain(&fx, &chain);
    let names: BTreeSet<String> = chain.iter().map(ToString::to_string).collect();
    assert_eq!(fx.snapshot_names(), names, "one snapshot per chain ID");
    let before: Vec<(String, strata_store::Timestamp)> = fx
        .snapshots()
        .into_iter()
        .map(|i| (i.name, i.created_at))
        .collect();

    // Again: nothing applied, no new snapshot, nothing re-created.
    progress.store(0, Ordering::Relaxed);
    let again = unpack(&fx.store, &fx.sn, &scope(NS), SAMPLE_NAME, &|n| {
        progress.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap_or_else(|e| panic!("unpack again: {e}"));
    assert_eq!(again.chain_id, chain[2]);
    assert!(
        again.layers.iter().all(|l| !l.applied),
        "nothing re-applied: {:?}",
        again.layers
    );
    assert_eq!(progress.load(Ordering::Relaxed), 0, "no layer was read");
    let after: Vec<(String, strata_store::Timestamp)> = fx
        .snapshots()
        .into_iter()
        .map(|i| (i.name, i.created_at))
        .collect();
    assert_eq!(
        after, before,
        "the second unpack left the snapshots as they were"
    );

    // An image sharing the two base layers applies only its own top layer.
    let layers = fixture::sample_layers();
    let b = ImageBuilder::new("docker.io/strata/sibling:1")
        .layer(layers[0].clone())
        .layer(layers[1].clone())
        .layer(Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/hostname", "sibling\n"),
        ]))
        .build()
        .expect("sibling");
    // And one sharing only the base, with two layers of its own (the parallel path on
    // overlay, committing onto an existing parent).
    let c = ImageBuilder::new("docker.io/strata/cousin:1")
        .layer(layers[0].clone())
        .layer(Layer::new(vec![Entry::file("cousin-1", "one\n")]))
        .layer(Layer::new(vec![Entry::file("cousin-2", "two\n")]))
        .build()
        .expect("cousin");
    fx.import(&[&b, &c]);
    for (img, shared) in [(&b, 2), (&c, 1)] {
        let before = fx.snapshot_names();
        let u = fx.unpack(&img.name);
        let chain = chain_of(img);
        assert_eq!(u.chain_id, *chain.last().expect("layers"));
        let applied: Vec<bool> = u.layers.iter().map(|l| l.applied).collect();
        let expected: Vec<bool> = (0..3).map(|i| i >= shared).collect();
        assert_eq!(
            applied, expected,
            "{}: only its own layers applied",
            img.name
        );
        assert_chain(&fx, &chain);
        let added: BTreeSet<String> = fx.snapshot_names().difference(&before).cloned().collect();
        let own: BTreeSet<String> = chain[shared..].iter().map(ToString::to_string).collect();
        assert_eq!(
            added, own,
            "{}: new snapshots are its own layers'",
            img.name
        );
    }
    let t = fx.view_tree(&chain_of(&c)[2]);
    assert!(t.content_is("cousin-1", b"one\n") && t.content_is("cousin-2", b"two\n"));
    assert!(
        t.content_is("etc/hostname", b"strata\n"),
        "base layer below"
    );
    assert!(
        !t.has("opt/app/config.json"),
        "not the sample's second layer"
    );
    fx.assert_clean("after unpacks");
}

#[test]
fn overlay_chain_ids_and_reuse() {
    case_chain_ids("overlay");
}

#[test]
fn native_chain_ids_and_reuse() {
    case_chain_ids("native");
}

// ---------------------------------------------------------------------------------------------
// 3. Labels, lease, extraction snapshots.

fn case_labels(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    // The sample's layers as zstd, plain tar and gzip: the same diffIDs.
    let layers = fixture::sample_layers();
    let compressions = [Compression::Zstd, Compression::None, Compression::Gzip];
    let image = layers
        .into_iter()
        .zip(compressions)
        .fold(ImageBuilder::new(SAMPLE_NAME), |b, (l, c)| {
            b.layer(l.compression(c))
        })
        .build()
        .expect("image");
    fx.import(&[&image]);
    let u = fx.unpack(SAMPLE_NAME);
    let chain = chain_of(&image);
    assert_eq!(u.chain_id, chain[2]);
    for (i, l) in image.layers.iter().enumerate() {
        let got = fx.labels(&l.blob.digest);
        if l.blob.digest == l.diff_id {
            // An uncompressed layer is its own diffID; a label, if any, says so.
            if let Some(v) = got.get(LABEL_UNCOMPRESSED) {
                assert_eq!(*v, l.diff_id.to_string(), "layer {i} (plain tar) label");
            }
        } else {
            assert_eq!(
                got.get(LABEL_UNCOMPRESSED),
                Some(&l.diff_id.to_string()),
                "layer {i} ({}) is labelled with its diffID: {got:?}",
                l.blob.media_type
            );
        }
    }
    let key = format!("containerd.io/gc.ref.snapshot.{name}");
    assert_eq!(
        fx.labels(&image.config.digest).get(&key),
        Some(&chain[2].to_string()),
        "the config references the top snapshot"
    );
    assert!(
        fx.snapshots().iter().all(|i| i.kind == Kind::Committed),
        "only committed snapshots: {:?}",
        fx.snapshots()
    );
    fx.assert_clean("after unpack");
    // The tree is the sample's whatever the compression.
    assert_sample_tree(&fx.view_tree(&u.chain_id), name);
}

#[test]
fn overlay_labels_and_lease() {
    case_labels("overlay");
}

#[test]
fn native_labels_and_lease() {
    case_labels("native");
}

// ---------------------------------------------------------------------------------------------
// 4. A config that lies about a diffID.

fn case_wrong_diff_id(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let lie = sha(b"not this layer");
    let raw = RawImage::new("docker.io/strata/liar:1", &sample_tars(), |d| {
        d[1] = lie.clone();
    });
    fx.import_layout(&raw.layout());
    let outside = fx.outside_store();
    let err = fx.try_unpack(&raw.name).expect_err("a lying config fails");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    match &err {
        Error::DiffIdMismatch { expected, actual } => {
            assert_eq!(*expected, lie.to_string(), "{err}");
            assert_eq!(*actual, raw.diff_ids[1].to_string(), "{err}");
        }
        other => panic!("expected DiffIdMismatch, got {other:?}"),
    }
    let config_chain = oci::chain_ids(&raw.config_diff_ids);
    let names = fx.snapshot_names();
    for id in &config_chain[1..] {
        assert!(!names.contains(&id.to_string()), "no snapshot for {id}");
    }
    // Only the base may stay, committed and valid.
    let allowed = BTreeSet::from([config_chain[0].to_string()]);
    assert!(
        names.is_subset(&allowed),
        "only the valid base layer may stay committed: {names:?}"
    );
    if !names.is_empty() {
        assert_chain(&fx, &config_chain[..1]);
    }
    fx.assert_clean("after a diffID mismatch");
    let cfg = fx.labels(&raw.config.digest);
    assert!(
        !cfg.contains_key(&format!("containerd.io/gc.ref.snapshot.{name}")),
        "a failed unpack references no snapshot: {cfg:?}"
    );
    if let Some(v) = fx.labels(&raw.blobs[1].digest).get(LABEL_UNCOMPRESSED) {
        assert_eq!(
            *v,
            raw.diff_ids[1].to_string(),
            "a label, if any, is the true diffID"
        );
    }
    assert_same_tree(("before", &outside), ("after", &fx.outside_store()), true);

    // The honest image over the same layers then unpacks.
    let honest = RawImage::new("docker.io/strata/honest:1", &sample_tars(), |_| {});
    fx.import_layout(&honest.layout());
    let u = fx.unpack(&honest.name);
    let chain = oci::chain_ids(&honest.diff_ids);
    assert_eq!(u.chain_id, chain[2]);
    assert_chain(&fx, &chain);
    fx.assert_clean("after the honest unpack");
}

#[test]
fn overlay_wrong_diff_id() {
    case_wrong_diff_id("overlay");
}

#[test]
fn native_wrong_diff_id() {
    case_wrong_diff_id("native");
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile layers.

/// A valid base, the hostile layer `middle`, a valid top.
fn hostile_image(name: &str, middle: Vec<u8>) -> RawImage {
    let base = layer_tar(vec![Entry::dir("etc"), Entry::file("etc/base", "base\n")]);
    let top = layer_tar(vec![Entry::file("top", "top\n")]);
    RawImage::new(name, &[base, middle, top], |_| {})
}

fn case_hostile(name: &str) {
    // Each hostile entry comes after a harmless one, so the layer is partly applied first.
    use tar::EntryType::{Directory, Link, Regular};
    // (what, entry name, type, link target)
    let variants = [
        ("../escape", "../escape", Regular, None),
        (
            "climbs to the wrapper",
            "a/../../../../../../escape",
            Regular,
            None,
        ),
        (
            "into the sentinel",
            "../../../../../sentinel/escape",
            Regular,
            None,
        ),
        (
            "hardlink to the sentinel",
            "evil",
            Link,
            Some("../../../../../sentinel/secret"),
        ),
        (
            "directory climbing out",
            "../../../../../escape/",
            Directory,
            None,
        ),
    ];
    for (what, entry, kind, link) in variants {
        let Some(fx) = Fx::new(name) else { return };
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, "harmless", Regular, None, b"ok\n");
        let data: &[u8] = if kind == Regular { b"x" } else { b"" };
        raw_entry(&mut b, entry, kind, link, data);
        let middle = b.into_inner().expect("tar");
        let raw = hostile_image("docker.io/strata/hostile:1", middle);
        fx.import_layout(&raw.layout());
        let outside = fx.outside_store();
        let err = fx
            .try_unpack(&raw.name)
            .expect_err("a hostile layer fails the unpack");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
        let chain = oci::chain_ids(&raw.diff_ids);
        let names = fx.snapshot_names();
        assert!(
            names.is_subset(&BTreeSet::from([chain[0].to_string()])),
            "{what}: only the valid base may stay: {names:?}"
        );
        fx.assert_clean(what);
        assert_same_tree(
            (&format!("{what}: before"), &outside),
            ("after", &fx.outside_store()),
            true,
        );
        let escaped: Vec<String> = walk(fx.wrapper())
            .nodes
            .into_keys()
            .filter(|p| p.rsplit('/').next() == Some("escape"))
            .collect();
        assert!(
            escaped.is_empty(),
            "{what}: nothing named escape anywhere: {escaped:?}"
        );
        assert_eq!(
            fs::read(fx.sentinel().join("secret")).expect("sentinel"),
            b"do not touch\n"
        );
    }
}

#[test]
fn overlay_hostile_layer() {
    case_hostile("overlay");
}

#[test]
fn native_hostile_layer() {
    case_hostile("native");
}

/// A symlink pointing outside is clamped to the snapshot: what is written through it lands
/// inside, and the unpack succeeds (containerd's SymlinkAbsolute / SymlinkUpAndOut).
fn case_symlink_clamped(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let sentinel = fx.sentinel();
    let abs = sentinel.to_str().expect("utf-8 path").to_owned();
    let middle = layer_tar(vec![
        Entry::symlink("abs", &abs),
        Entry::file("abs/pwned", "inside\n"),
        Entry::symlink("up", "../../../../../../../../sentinel"),
        Entry::file("up/pwned", "inside too\n"),
    ]);
    let raw = hostile_image("docker.io/strata/clamped:1", middle);
    fx.import_layout(&raw.layout());
    let outside = fx.outside_store();
    let u = fx.unpack(&raw.name);
    assert_same_tree(("before", &outside), ("after", &fx.outside_store()), true);
    assert!(!sentinel.join("pwned").exists(), "nothing written outside");
    let t = fx.view_tree(&u.chain_id);
    let inside = abs.trim_start_matches('/');
    assert!(
        t.content_is(&format!("{inside}/pwned"), b"inside\n"),
        "the absolute link's file lands inside the snapshot"
    );
    assert!(
        t.content_is("sentinel/pwned", b"inside too\n"),
        "the relative link's file lands inside the snapshot"
    );
    assert_eq!(t.get("abs").kind, NodeKind::Symlink(abs.clone().into()));
    assert!(t.content_is("top", b"top\n") && t.content_is("etc/base", b"base\n"));
    fx.assert_clean("after unpack");
}

#[test]
fn overlay_symlink_escape_is_clamped() {
    case_symlink_clamped("overlay");
}

#[test]
fn native_symlink_escape_is_clamped() {
    case_symlink_clamped("native");
}

// ---------------------------------------------------------------------------------------------
// 6. Configs that disagree with their manifest; platform selection.

fn case_config_and_platforms(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let raw = RawImage::new("docker.io/strata/extra:1", &sample_tars(), |d| {
        d.push(sha(b"a layer the manifest does not list"));
    });
    fx.import_layout(&raw.layout());
    let err = fx
        .try_unpack(&raw.name)
        .expect_err("more diffIDs than layers");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(&raw.name),
        "names the image: {err}"
    );
    assert!(fx.snapshots().is_empty(), "nothing unpacked");
    fx.assert_clean("after a bad config");

    // An index listing a foreign platform first (with other layers) and the host's second.
    let foreign = foreign_platform();
    let multi = "docker.io/strata/multi:1";
    let theirs = ImageBuilder::new(multi)
        .platform(foreign.clone())
        .layer(Layer::new(vec![Entry::file("foreign", "no\n")]))
        .build()
        .expect("foreign image");
    let ours = ImageBuilder::new(multi)
        .layer(Layer::new(vec![Entry::file("host", "yes\n")]))
        .layer(Layer::new(vec![Entry::file("host-2", "yes\n")]))
        .build()
        .expect("host image");
    let index = oci::Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.to_owned()),
        manifests: vec![
            Descriptor {
                platform: Some(foreign.clone()),
                ..theirs.manifest.descriptor()
            },
            Descriptor {
                platform: Some(oci::host_platform()),
                ..ours.manifest.descriptor()
            },
        ],
        annotations: BTreeMap::new(),
    };
    let index = Blob::new(oci::MEDIA_INDEX, serde_json::to_vec(&index).expect("index"));
    let mut layout = OciLayout::new(&[&theirs, &ours]);
    layout.manifests = vec![Descriptor {
        annotations: BTreeMap::from([(oci::ANNOTATION_CONTAINERD_NAME.to_owned(), multi.into())]),
        ..index.descriptor()
    }];
    layout
        .blobs
        .insert(index.digest.clone(), index.bytes.clone());
    fx.import_layout(&layout);
    let u = fx.unpack(multi);
    let chain = chain_of(&ours);
    assert_eq!(
        u.chain_id, chain[1],
        "the host platform's manifest is unpacked"
    );
    assert_chain(&fx, &chain);
    assert!(
        fx.sn.stat(NS, &chain_of(&theirs)[0].to_string()).is_err(),
        "the foreign layer is not unpacked"
    );
    let t = fx.view_tree(&u.chain_id);
    assert!(t.has("host") && t.has("host-2") && !t.has("foreign"));

    // The sample in an index with another platform listed after it.
    let indexed = fixture::sample_builder("docker.io/strata/indexed:1")
        .other_platform(foreign.clone())
        .build()
        .expect("indexed sample");
    fx.import(&[&indexed]);
    assert_eq!(fx.unpack(&indexed.name).chain_id, chain_of(&indexed)[2]);

    // An index with only a foreign platform.
    let alien = ImageBuilder::new("docker.io/strata/alien:1")
        .platform(foreign)
        .layer(Layer::new(vec![Entry::file("alien", "x\n")]))
        .with_index()
        .build()
        .expect("alien");
    fx.import(&[&alien]);
    let before = fx.snapshot_names();
    let err = fx
        .try_unpack(&alien.name)
        .expect_err("no manifest for this host");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let host = oci::host_platform();
    let wanted = format!("{}/{}", host.os, host.architecture);
    assert!(
        err.to_string().contains(&wanted),
        "names the platform: {err}"
    );
    assert!(
        err.to_string().contains(&alien.name),
        "names the image: {err}"
    );
    assert_eq!(fx.snapshot_names(), before, "nothing unpacked");
    fx.assert_clean("after the platform miss");
}

#[test]
fn overlay_config_and_platforms() {
    case_config_and_platforms("overlay");
}

#[test]
fn native_config_and_platforms() {
    case_config_and_platforms("native");
}

// ---------------------------------------------------------------------------------------------
// 7. 200 layers, applied side by side.

#[test]
fn overlay_two_hundred_layers() {
    const N: usize = 200;
    let Some(fx) = Fx::new("overlay") else { return };
    let mut builder = ImageBuilder::new("docker.io/strata/deep:200");
    for i in 0..N {
        builder = builder.layer(Layer::new(vec![
            Entry::dir("files"),
            Entry::file(&format!("files/f{i:03}"), format!("file {i}\n")),
            Entry::file("shared", format!("version {i}\n")),
        ]));
    }
    let image = builder.build().expect("deep image");
    fx.import(&[&image]);
    let u = fx.unpack(&image.name);
    let chain = chain_of(&image);
    assert_eq!(u.chain_id, chain[N - 1]);
    assert!(u.layers.iter().all(|l| l.applied), "every layer applied");
    assert_eq!(fx.snapshots().len(), N, "one snapshot per layer");
    assert_chain(&fx, &chain);
    fx.assert_clean("after unpack");
    let t = fx.view_tree(&u.chain_id);
    let files = t.children("files");
    assert_eq!(files.len(), N, "all {N} files");
    for i in 0..N {
        assert!(
            t.content_is(&format!("files/f{i:03}"), format!("file {i}\n").as_bytes()),
            "files/f{i:03}"
        );
    }
    assert!(
        t.content_is("shared", format!("version {}\n", N - 1).as_bytes()),
        "the top layer's shared file: {:?}",
        t.get("shared")
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Concurrent unpacks of the same image.

fn case_race(name: &str) {
    const THREADS: usize = 3;
    for round in 0..3 {
        let Some(fx) = Fx::new(name) else { return };
        let image = fixture::sample().expect("sample");
        // A second image on the same base layers races too.
        let layers = fixture::sample_layers();
        let sibling = ImageBuilder::new("docker.io/strata/sibling:1")
            .layer(layers[0].clone())
            .layer(layers[1].clone())
            .layer(Layer::new(vec![Entry::file("sibling", "1\n")]))
            .layer(Layer::new(vec![Entry::file("sibling-2", "2\n")]))
            .build()
            .expect("sibling");
        fx.import(&[&image, &sibling]);
        let barrier = Barrier::new(THREADS + 1);
        let results: Vec<(String, strata_snapshotter::Result<Unpacked>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..=THREADS)
                    .map(|t| {
                        let (store, sn, barrier) = (&fx.store, &fx.sn, &barrier);
                        let name = if t == THREADS {
                            sibling.name.clone()
                        } else {
                            SAMPLE_NAME.to_owned()
                        };
                        s.spawn(move || {
                            barrier.wait();
                            let r = unpack(store, sn, &scope(NS), &name, &|_| {});
                            (name, r)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("unpack thread"))
                    .collect()
            });
        let mut expected = BTreeSet::new();
        for img in [&image, &sibling] {
            expected.extend(chain_of(img).iter().map(ToString::to_string));
        }
        let mut applied_by: BTreeMap<String, usize> = BTreeMap::new();
        for (img, r) in results {
            let u = r.unwrap_or_else(|e| panic!("round {round}: concurrent unpack of {img}: {e}"));
            let want = if img == SAMPLE_NAME {
                chain_of(&image)
            } else {
                chain_of(&sibling)
            };
            assert_eq!(u.chain_id, *want.last().expect("layers"), "round {round}");
            for l in &u.layers {
                *applied_by.entry(l.chain_id.to_string()).or_default() += usize::from(l.applied);
            }
        }
        let unapplied: Vec<&String> = applied_by
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| k)
            .collect();
        assert!(
            unapplied.is_empty(),
            "round {round}: every snapshot was applied by some unpack: {unapplied:?}"
        );
        // Timing decides which paths ran: more than one application of a layer means the
        // losers' commits met AlreadyExists; fewer than the unpacks wanting it means some
        // found it (prepare AlreadyExists or the chain ID already there).
        eprintln!(
            "{name} round {round}: applications per chain ID: {:?}",
            applied_by.values().collect::<Vec<_>>()
        );
        let infos = fx.snapshots();
        assert!(
            infos.iter().all(|i| i.kind == Kind::Committed),
            "round {round}: only committed snapshots: {infos:?}"
        );
        assert_eq!(
            infos.len(),
            expected.len(),
            "round {round}: one per chain ID"
        );
        assert_eq!(fx.snapshot_names(), expected, "round {round}");
        assert_chain(&fx, &chain_of(&image));
        assert_chain(&fx, &chain_of(&sibling));
        fx.assert_clean(&format!("round {round}"));
        if round == 0 {
            assert_sample_tree(&fx.view_tree(&chain_of(&image)[2]), name);
        }
    }
}

#[test]
fn overlay_concurrent_unpacks() {
    case_race("overlay");
}

#[test]
fn native_concurrent_unpacks() {
    case_race("native");
}

/// Of several unpacks racing on one image, exactly one creates each snapshot, so exactly one
/// reports the layer `applied` ("false when the snapshot existed already"): an unpack whose
/// commit met AlreadyExists threw its copy away.
fn case_race_reports_applied_once(name: &str) {
    const THREADS: usize = 4;
    let Some(fx) = Fx::new(name) else { return };
    let image = fixture::sample().expect("sample");
    fx.import(&[&image]);
    let barrier = Barrier::new(THREADS);
    let results: Vec<Unpacked> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, sn, barrier) = (&fx.store, &fx.sn, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    unpack(store, sn, &scope(NS), SAMPLE_NAME, &|_| {})
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("unpack thread")
                    .unwrap_or_else(|e| panic!("concurrent unpack: {e}"))
            })
            .collect()
    });
    let chain = chain_of(&image);
    assert_eq!(
        fx.snapshots().len(),
        chain.len(),
        "one snapshot per chain ID"
    );
    let counts: Vec<usize> = (0..chain.len())
        .map(|i| results.iter().filter(|u| u.layers[i].applied).count())
        .collect();
    assert_eq!(
        counts,
        vec![1; chain.len()],
        "{name}: unpacks reporting each layer applied (one snapshot each was created)"
    );
}

#[test]
fn overlay_concurrent_unpacks_report_applied_once() {
    case_race_reports_applied_once("overlay");
}

#[test]
fn native_concurrent_unpacks_report_applied_once() {
    case_race_reports_applied_once("native");
}

// ---------------------------------------------------------------------------------------------
// 9. The parallel (overlay) and sequential (native) paths give the same tree.

fn parallel_equals_sequential(images: &[&Image], top: &str) {
    let Some(ov) = Fx::new("overlay") else { return };
    let Some(na) = Fx::new("native") else { return };
    let mut trees = Vec::new();
    for fx in [&ov, &na] {
        fx.import(images);
        let u = fx.unpack(top);
        trees.push(fx.view_tree(&u.chain_id));
    }
    assert_same_tree(("overlay", &trees[0]), ("native", &trees[1]), true);
}

#[test]
fn parallel_and_sequential_sample_trees_match() {
    let image = fixture::sample().expect("sample");
    parallel_equals_sequential(&[&image], SAMPLE_NAME);
}

/// Layers that change what lower layers made: a file replaced by a directory and back, a
/// directory's mode and owner changed, a hard link in a later layer, a whiteout of something
/// that never existed, an opaque directory re-filled. Every layer lists the directories it
/// writes into, as docker and buildkit write them.
#[test]
fn parallel_and_sequential_trees_match_on_tricky_layers() {
    let layers = vec![
        Layer::new(vec![
            Entry::dir("a"),
            Entry::file("a/x", "x\n"),
            Entry::dir("b").mode(0o700).owner(7, 8),
            Entry::file("b/y", "y\n"),
            Entry::dir("c"),
            Entry::file("c/1", "1\n"),
            Entry::file("c/2", "2\n"),
            Entry::file("flip", "a file\n"),
        ]),
        Layer::new(vec![
            Entry::dir("a").mode(0o700).owner(1, 2),
            Entry::whiteout("a/x"),
            Entry::dir("a/x"),
            Entry::file("a/x/inner", "inner\n"),
            Entry::dir("b").mode(0o755).owner(0, 0),
            Entry::file("b/z", "z\n").xattr("user.layer", "2"),
            Entry::file("b/z-link-src", "src\n").mode(0o600),
            Entry::hardlink("b/z-link", "b/z-link-src").mode(0o600),
            Entry::whiteout("never-existed"),
            Entry::dir("flip"),
            Entry::file("flip/now-a-dir", "d\n"),
        ]),
        Layer::new(vec![
            Entry::dir("c"),
            Entry::opaque("c"),
            Entry::file("c/3", "3\n"),
            Entry::whiteout("flip"),
            Entry::file("flip", "a file again\n")
                .mode(0o600)
                .owner(3, 4),
        ]),
    ];
    let image = layers
        .into_iter()
        .fold(
            ImageBuilder::new("docker.io/strata/tricky:1"),
            ImageBuilder::layer,
        )
        .build()
        .expect("tricky image");
    parallel_equals_sequential(&[&image], &image.name);
}

// ---------------------------------------------------------------------------------------------
// Layers that write into directories they do not list (`tar cf layer.tar usr/bin/tool`
// writes no entry for `usr/` or `usr/bin/`): those directories are the lower layers', and
// keep their mode, owner and time, whichever path applied the layer.

fn implicit_layers() -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::dir("tmp").mode(0o1777),
            Entry::dir("deep").mode(0o711).owner(5, 5),
            Entry::dir("deep/er").mode(0o750).owner(6, 6),
            Entry::file("deep/er/base", "base\n"),
        ]),
        Layer::new(vec![Entry::file("unrelated", "u\n")]),
        Layer::new(vec![
            // No entries for tmp/, deep/ or deep/er/.
            Entry::file("tmp/cache", "c\n"),
            Entry::file("deep/er/leaf", "leaf\n"),
        ]),
    ]
}

fn assert_implicit_tree(t: &Tree, who: &str) {
    assert!(t.content_is("tmp/cache", b"c\n") && t.content_is("deep/er/leaf", b"leaf\n"));
    assert!(
        t.content_is("deep/er/base", b"base\n"),
        "the base layer's file"
    );
    let meta = |p: &str| {
        let n = t.get(p);
        (n.mode, n.uid, n.gid)
    };
    let got = [meta("tmp"), meta("deep"), meta("deep/er")];
    assert_eq!(
        got,
        [(0o1777, 0, 0), (0o711, 5, 5), (0o750, 6, 6)],
        "{who}: tmp, deep and deep/er keep the base layer's mode and owner \
         (got modes {:o} {:o} {:o})",
        got[0].0,
        got[1].0,
        got[2].0
    );
    // Their mtimes are not compared: creating a child bumps a directory's mtime, and only
    // directories the layer lists get their header time back (containerd; umoci restores
    // them all).
}

fn case_implicit_parents(name: &str) {
    let layers = implicit_layers();
    let image = layers
        .iter()
        .cloned()
        .fold(
            ImageBuilder::new("docker.io/strata/implicit:1"),
            ImageBuilder::layer,
        )
        .build()
        .expect("image");
    // The top layer alone, applied on its committed parents (base unpacked first).
    {
        let Some(fx) = Fx::new(name) else { return };
        let base = layers[..2]
            .iter()
            .cloned()
            .fold(
                ImageBuilder::new("docker.io/strata/implicit-base:1"),
                ImageBuilder::layer,
            )
            .build()
            .expect("base image");
        fx.import(&[&base, &image]);
        fx.unpack(&base.name);
        let u = fx.unpack(&image.name);
        assert_eq!(
            u.layers.iter().map(|l| l.applied).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_implicit_tree(
            &fx.view_tree(&u.chain_id),
            &format!("{name}, top layer alone"),
        );
    }
    // All three layers at once (side by side on overlay).
    let Some(fx) = Fx::new(name) else { return };
    fx.import(&[&image]);
    let u = fx.unpack(&image.name);
    let ours = fx.view_tree(&u.chain_id);
    if have("umoci") {
        let dir = tempfile::tempdir().expect("tempdir");
        let theirs = walk(&umoci_rootfs(&image, dir.path()));
        assert_implicit_tree(&theirs, "umoci");
        assert_same_tree((name, &ours), ("umoci", &theirs), false);
    }
    assert_implicit_tree(&ours, &format!("{name}, all layers"));
}

#[test]
fn overlay_implicit_parent_dirs_keep_lower_metadata() {
    case_implicit_parents("overlay");
}

#[test]
fn native_implicit_parent_dirs_keep_lower_metadata() {
    case_implicit_parents("native");
}

// ---------------------------------------------------------------------------------------------
// The same layer blob twice in one image (empty `RUN` steps): distinct chain IDs, one blob.

fn case_duplicate_layers(name: &str) {
    let Some(fx) = Fx::new(name) else { return };
    let empty = Layer::new(Vec::new());
    let image = ImageBuilder::new("docker.io/strata/dups:1")
        .layer(Layer::new(vec![Entry::file("a", "a\n")]))
        .layer(empty.clone())
        .layer(Layer::new(vec![Entry::file("b", "b\n")]))
        .layer(empty.clone())
        .layer(empty)
        .build()
        .expect("image");
    fx.import(&[&image]);
    let u = fx.unpack(&image.name);
    let chain = chain_of(&image);
    assert_eq!(u.chain_id, chain[4]);
    assert_eq!(
        chain.iter().collect::<BTreeSet<_>>().len(),
        5,
        "distinct chain IDs"
    );
    assert!(u.layers.iter().all(|l| l.applied));
    assert_chain(&fx, &chain);
    fx.assert_clean("after unpack");
    assert_eq!(
        fx.labels(&image.layers[1].blob.digest)
            .get(LABEL_UNCOMPRESSED),
        Some(&image.layers[1].diff_id.to_string())
    );
    let t = fx.view_tree(&u.chain_id);
    assert_eq!(
        t.children("."),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
}

#[test]
fn overlay_duplicate_layers() {
    case_duplicate_layers("overlay");
}

#[test]
fn native_duplicate_layers() {
    case_duplicate_layers("native");
}
