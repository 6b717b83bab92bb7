//! Layer diff (a module of the `layer_apply` test binary): round trips (diff a change, apply
//! it onto a copy of the lower tree, compare with the changed tree), containerd's TestDiffTar
//! cases, change detection, SOURCE_DATE_EPOCH, determinism, digests, and overlay uppers,
//! handmade and produced through a real overlay mount. Runs as root (mknod, chown,
//! trusted.* xattrs, mount).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};
use strata_snapshotter::Mount;
use strata_snapshotter::backend::mount::{mount_all, unmount};
use strata_snapshotter::layer::{
    ApplyOptions, Compression, DiffOptions, DiffSource, Diffed, WhiteoutMode, apply_layer,
    write_diff,
};
use strata_store::{Algorithm, Digest};

// ---------------------------------------------------------------------------------------
// Building trees
// ---------------------------------------------------------------------------------------

const T0: i64 = 1_600_000_000;
const T1: i64 = 1_700_000_000;

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn write(p: &Path, data: impl AsRef<[u8]>, mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn mknod(p: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        p,
        ft,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()).unwrap();
}

/// `cp -a from to`: types, modes, owners, nanosecond times, xattrs and hard links.
fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Sets every mtime below `root` (not `root`) to `secs` (nanoseconds 0), children first.
fn pin_times(root: &Path, secs: i64) {
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            pin_times(&p, secs);
        }
        set_mtime(&p, secs, 0);
    }
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

/// A v2 file capability blob: effective, CAP_NET_BIND_SERVICE permitted.
fn cap_blob() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// The lower tree of the round trips.
fn build_lower(l: &Path) {
    mkdir(l, 0o755);
    mkdir(&l.join("etc"), 0o755);
    write(&l.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644);
    write(&l.join("etc/shadow"), "secret", 0o600);
    write(&l.join("etc/keep"), "keep", 0o644);
    mkdir(&l.join("bin"), 0o755);
    write(&l.join("bin/tool"), "#!tool", 0o755);
    write(&l.join("bin/su"), "suid", 0o4755);
    mkdir(&l.join("data/nested/a/b"), 0o750);
    write(&l.join("data/big"), pseudo_random(1 << 20, 7), 0o644);
    write(&l.join("data/nested/a/b/c"), "deep", 0o644);
    mkdir(&l.join("gone/sub"), 0o755);
    write(&l.join("gone/x"), "x", 0o644);
    write(&l.join("gone/sub/y"), "y", 0o644);
    write(&l.join("gone-file"), "bye", 0o644);
    symlink("etc/passwd", l.join("old-link")).unwrap();
    write(&l.join("link-a"), "shared", 0o644);
    fs::hard_link(l.join("link-a"), l.join("link-b")).unwrap();
    write(&l.join("unrelated-hl-1"), "unrelated", 0o644);
    fs::hard_link(l.join("unrelated-hl-1"), l.join("data/unrelated-hl-2")).unwrap();
    mkdir(&l.join("dir2file/child"), 0o755);
    write(&l.join("dir2file/child/f"), "f", 0o644);
    write(&l.join("file2dir"), "file", 0o644);
    mkdir(&l.join("opaque"), 0o755);
    write(&l.join("opaque/a"), "a", 0o644);
    write(&l.join("opaque/b"), "b", 0o644);
    write(&l.join("xattr-file"), "x", 0o644);
    setxattr(&l.join("xattr-file"), "user.test", b"1");
    write(&l.join("chown-me"), "c", 0o644);
    mkdir(&l.join("sticky"), 0o1777);
    mknod(&l.join("fifo"), FileType::Fifo, 0o644, 0, 0);
    // Old, fixed times with and without nanoseconds.
    set_mtime(&l.join("etc/keep"), T0, 0);
    set_mtime(&l.join("data/big"), T0, 123_456_789);
}

/// Changes that mean the same through an overlay mount and on a full copy. Every created or
/// modified non-directory gets an explicit mtime, so both ways give the same tree.
fn common_change(u: &Path) {
    let touched = |p: &Path| set_mtime(p, T1, 250_000_000);
    write(&u.join("etc/new"), "new", 0o644);
    touched(&u.join("etc/new"));
    fs::write(u.join("etc/passwd"), "root:x:0:0::/root:/bin/bash\n").unwrap();
    touched(&u.join("etc/passwd"));
    fs::set_permissions(u.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::remove_dir_all(u.join("gone")).unwrap();
    fs::remove_file(u.join("gone-file")).unwrap();
    fs::remove_file(u.join("old-link")).unwrap();
    symlink("etc/shadow", u.join("old-link")).unwrap();
    touched(&u.join("old-link"));
    // A new link to an unchanged file.
    fs::hard_link(u.join("etc/keep"), u.join("etc/keep-hl")).unwrap();
    // A new file with two names.
    write(&u.join("bin/pair-1"), "pair", 0o755);
    touched(&u.join("bin/pair-1"));
    fs::hard_link(u.join("bin/pair-1"), u.join("etc/pair-2")).unwrap();
    fs::remove_dir_all(u.join("dir2file")).unwrap();
    write(&u.join("dir2file"), "now a file", 0o600);
    touched(&u.join("dir2file"));
    fs::remove_file(u.join("file2dir")).unwrap();
    mkdir(&u.join("file2dir"), 0o711);
    write(&u.join("file2dir/inner"), "inner", 0o644);
    touched(&u.join("file2dir/inner"));
    fs::remove_dir_all(u.join("opaque")).unwrap();
    mkdir(&u.join("opaque"), 0o755);
    write(&u.join("opaque/c"), "c", 0o644);
    touched(&u.join("opaque/c"));
    setxattr(&u.join("xattr-file"), "user.test", b"2");
    lchown(u.join("chown-me"), Some(1000), Some(1001)).unwrap();
    mknod(&u.join("new-fifo"), FileType::Fifo, 0o600, 0, 0);
    touched(&u.join("new-fifo"));
    mknod(&u.join("null"), FileType::CharacterDevice, 0o666, 1, 3);
    touched(&u.join("null"));
    mknod(&u.join("loop0"), FileType::BlockDevice, 0o660, 7, 0);
    touched(&u.join("loop0"));
    write(&u.join("bin/newsuid"), "suid", 0o4755);
    touched(&u.join("bin/newsuid"));
    mkdir(&u.join("sgid-dir"), 0o2775);
    write(&u.join("bin/cap"), "cap", 0o755);
    setxattr(&u.join("bin/cap"), "security.capability", &cap_blob());
    touched(&u.join("bin/cap"));
    write(&u.join("trusted-file"), "t", 0o644);
    setxattr(&u.join("trusted-file"), "trusted.test", b"value");
    setxattr(&u.join("trusted-file"), "user.a", b"A");
    touched(&u.join("trusted-file"));
    symlink("/etc/passwd", u.join("abs-link")).unwrap();
    touched(&u.join("abs-link"));
    fs::write(u.join("data/nested/a/b/c"), "deeper").unwrap();
    touched(&u.join("data/nested/a/b/c"));
    let odd = u.join(OsStr::from_bytes(b"caf\xe9"));
    write(&odd, "latin-1", 0o644);
    touched(&odd);
    let long_dir = u.join("long").join("d".repeat(120));
    mkdir(&long_dir, 0o755);
    write(&long_dir.join("f".repeat(130)), "long", 0o644);
    touched(&long_dir.join("f".repeat(130)));
    symlink("t".repeat(200), u.join("long-target")).unwrap();
    touched(&u.join("long-target"));
    write(&u.join("bigid"), "big ids", 0o644);
    lchown(u.join("bigid"), Some(3_000_000), Some(3_000_001)).unwrap();
    touched(&u.join("bigid"));
    // Sockets are never diffed.
    let _sock = std::os::unix::net::UnixListener::bind(u.join("sock")).unwrap();
}

/// Changes only a full copy can express like this: writing through a hard link changes
/// both names (an overlay copy-up without `index` breaks the link).
fn trees_only_change(u: &Path) {
    fs::write(u.join("link-a"), "shared, changed").unwrap();
    set_mtime(&u.join("link-a"), T1, 0);
}

// ---------------------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------------------

/// What a round trip must preserve about one path.
#[derive(Debug, PartialEq, Eq)]
struct Desc {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Content digest, link target or device number.
    body: String,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Non-directories: mtime seconds.
    mtime: Option<i64>,
    /// Hard-link group: the smallest path sharing the inode.
    group: Option<PathBuf>,
}

fn carried_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut list[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let keep = (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
            || (name.starts_with(b"trusted.") && !name.starts_with(b"trusted.overlay."))
            || name == b"security.capability";
        if !keep {
            continue;
        }
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap();
        out.push((name.to_vec(), v[..len].to_vec()));
    }
    out.sort();
    out
}

/// Every path below `root` (not `root` itself; sockets skipped).
fn tree(root: &Path) -> BTreeMap<PathBuf, Desc> {
    fn walk(
        root: &Path,
        p: &Path,
        out: &mut BTreeMap<PathBuf, Desc>,
        inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
    ) {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let c = p.join(&n);
            let rel = c.strip_prefix(root).unwrap().to_owned();
            let m = fs::symlink_metadata(&c).unwrap();
            let ft = FileType::from_raw_mode(m.mode());
            let body = match ft {
                FileType::RegularFile => Digest::of(Algorithm::Sha256, &fs::read(&c).unwrap())
                    .hex()
                    .to_owned(),
                FileType::Symlink => fs::read_link(&c).unwrap().display().to_string(),
                FileType::CharacterDevice | FileType::BlockDevice => {
                    format!(
                        "{}:{}",
                        rustix::fs::major(m.rdev()),
                        rustix::fs::minor(m.rdev())
                    )
                }
                FileType::Socket => continue,
                _ => String::new(),
            };
            if ft != FileType::Directory && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            out.insert(
                rel.clone(),
                Desc {
                    kind: format!("{ft:?}"),
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    body,
                    xattrs: carried_xattrs(&c),
                    mtime: (ft != FileType::Directory).then(|| m.mtime()),
                    group: None,
                },
            );
            if ft == FileType::Directory {
                walk(root, &c, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut inodes = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    for paths in inodes.values() {
        if paths.len() > 1 {
            let leader = paths.iter().min().unwrap().clone();
            for p in paths {
                out.get_mut(p).unwrap().group = Some(leader.clone());
            }
        }
    }
    out
}

fn assert_same_tree(got: &Path, want: &Path) {
    let (g, w) = (tree(got), tree(want));
    let mut diffs = Vec::new();
    for (p, d) in &w {
        match g.get(p) {
            None => diffs.push(format!("missing {}", p.display())),
            Some(gd) if gd != d => diffs.push(format!("{}: got {gd:?}, want {d:?}", p.display())),
            _ => {}
        }
    }
    for p in g.keys() {
        if !w.contains_key(p) {
            diffs.push(format!("unexpected {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        got.display(),
        want.display(),
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Diffing, reading and applying
// ---------------------------------------------------------------------------------------

fn opts(compression: Compression) -> DiffOptions {
    DiffOptions {
        compression,
        source_date_epoch: None,
    }
}

fn diff(source: DiffSource<'_>, o: &DiffOptions) -> (Vec<u8>, Diffed) {
    let mut blob = Vec::new();
    let d = write_diff(source, o, &mut blob).unwrap();
    (blob, d)
}

fn diff_trees(lower: &Path, upper: &Path, o: &DiffOptions) -> (Vec<u8>, Diffed) {
    diff(DiffSource::Trees { lower, upper }, o)
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match Compression::detect(blob) {
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd => out = zstd::decode_all(blob).unwrap(),
        Compression::None => out = blob.to_vec(),
    }
    out
}

fn sha(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// One member of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    typ: char,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: String,
    data: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
    pax_keys: Vec<String>,
}

fn members(blob: &[u8]) -> Vec<Member> {
    let plain = decompress(blob);
    let mut ar = tar::Archive::new(&plain[..]);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        let mut pax_keys = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                let k = r.key().unwrap().to_owned();
                if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((x.to_owned(), r.value_bytes().to_vec()));
                }
                pax_keys.push(k);
            }
        }
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Member {
            name: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            typ: char::from(h.entry_type().as_byte()),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default(),
            data,
            xattrs,
            pax_keys,
        });
    }
    out
}

fn names(blob: &[u8]) -> Vec<String> {
    members(blob).into_iter().map(|m| m.name).collect()
}

fn apply_native(blob: &[u8], target: &Path) {
    let o = ApplyOptions {
        whiteouts: WhiteoutMode::Native,
        parents: Vec::new(),
    };
    apply_layer(blob, target, &o).unwrap();
}

/// A mounted overlay, unmounted when dropped (even when the test fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

fn mount_overlay(lowers: &[&Path], upper_work: Option<(&Path, &Path)>, target: &Path) -> Mounted {
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut options = Vec::new();
    if let Some((upper, work)) = upper_work {
        options.push(format!("upperdir={}", upper.display()));
        options.push(format!("workdir={}", work.display()));
    }
    options.push(format!("lowerdir={}", lowers.join(":")));
    options.push("index=off".to_owned());
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    };
    mount_all(&[m], target).unwrap();
    Mounted(target.to_owned())
}

// ---------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------

/// Diffs lower/upper, applies the diff onto a copy of the lower and compares with the
/// upper. Returns the blob.
fn round_trip_trees(t: &Path, o: &DiffOptions) -> Vec<u8> {
    let (lower, upper, result) = (t.join("lower"), t.join("upper"), t.join("result"));
    let (blob, d) = diff_trees(&lower, &upper, o);
    assert!(!d.empty);
    cp_a(&lower, &result);
    apply_native(&blob, &result);
    assert_same_tree(&result, &upper);
    blob
}

#[test]
fn diff_trees_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    build_lower(&lower);
    cp_a(&lower, &upper);
    common_change(&upper);
    trees_only_change(&upper);
    let blob = round_trip_trees(t.path(), &DiffOptions::default());
    let ms = members(&blob);
    let find = |n: &str| {
        ms.iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    // Unchanged paths are not in the diff.
    for n in ["unrelated-hl-1", "data/big", "fifo", "bin/su", "sticky/"] {
        assert!(ms.iter().all(|m| m.name != n), "{n} emitted");
    }
    // A removed directory is a single whiteout.
    assert_eq!(find(".wh.gone").data, b"");
    assert!(ms.iter().all(|m| !m.name.starts_with("gone/")));
    // A directory replaced by a file hides its children without whiteouts.
    assert!(ms.iter().all(|m| !m.name.starts_with("dir2file/")));
    // The rewritten directory: whiteouts for the old children, the new one.
    assert!(ms.iter().any(|m| m.name == "opaque/.wh.a"));
    assert!(ms.iter().any(|m| m.name == "opaque/c"));
    // Hard links: content once, the other names link to the first emitted one.
    assert_eq!(find("link-a").typ, '0');
    assert_eq!(
        (find("link-b").typ, find("link-b").link.as_str()),
        ('1', "link-a")
    );
    assert_eq!(find("etc/keep-hl").typ, '0');
    assert_eq!(
        (find("etc/keep").typ, find("etc/keep").link.as_str()),
        ('1', "etc/keep-hl")
    );
    assert_eq!(
        (find("etc/pair-2").typ, find("etc/pair-2").link.as_str()),
        ('1', "bin/pair-1")
    );
    // Metadata in headers.
    assert_eq!(find("bin/newsuid").mode, 0o4755);
    assert_eq!(find("sgid-dir/").mode, 0o2775);
    assert_eq!(
        (find("bigid").uid, find("bigid").gid),
        (3_000_000, 3_000_001)
    );
    assert!(find("bigid").pax_keys.contains(&"uid".to_owned()));
    assert_eq!(find("null").typ, '3');
    assert_eq!(find("loop0").typ, '4');
    assert_eq!(find("new-fifo").typ, '6');
    assert_eq!(find("abs-link").link, "/etc/passwd");
    assert!(
        find("trusted-file")
            .xattrs
            .contains(&("trusted.test".into(), b"value".to_vec()))
    );
    assert!(
        find("bin/cap")
            .xattrs
            .contains(&("security.capability".into(), cap_blob()))
    );
    assert!(
        find("xattr-file")
            .xattrs
            .contains(&("user.test".into(), b"2".to_vec()))
    );
    assert!(ms.iter().all(|m| m.name != "sock"));
}

#[test]
fn diff_round_trip_in_every_compression() {
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        build_lower(&lower);
        cp_a(&lower, &upper);
        common_change(&upper);
        let blob = round_trip_trees(t.path(), &opts(c));
        assert_eq!(Compression::detect(&blob), c);
    }
}

#[test]
fn diff_overlay_mount_round_trip_matches_trees() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    build_lower(&p("lower"));
    // The expected tree: the change on a full copy.
    cp_a(&p("lower"), &p("expected"));
    common_change(&p("expected"));
    // The same change through an overlay mount.
    for d in ["upper", "work", "merged"] {
        mkdir(&p(d), 0o755);
    }
    {
        let _m = mount_overlay(
            &[&p("lower")],
            Some((&p("upper"), &p("work"))),
            &p("merged"),
        );
        common_change(&p("merged"));
        assert_same_tree(&p("merged"), &p("expected"));
    }
    let lowers = [p("lower")];
    let (oblob, od) = diff(
        DiffSource::OverlayUpper {
            upper: &p("upper"),
            lowers: &lowers,
            userxattr: false,
        },
        &DiffOptions::default(),
    );
    assert!(!od.empty);
    let ms = members(&oblob);
    // Whiteouts and an opaque marker where the upper hides lower paths.
    for n in [".wh.gone", ".wh.gone-file", "opaque/.wh..wh..opq"] {
        assert!(
            ms.iter().any(|m| m.name == n),
            "{n} missing from {:?}",
            names(&oblob)
        );
    }
    assert!(ms.iter().all(|m| !m.name.starts_with("trusted.overlay")));
    assert!(
        ms.iter()
            .all(|m| m.xattrs.iter().all(|(k, _)| !k.contains("overlay")))
    );
    // Applied natively onto a copy of the lower: the changed tree.
    cp_a(&p("lower"), &p("from-overlay"));
    apply_native(&oblob, &p("from-overlay"));
    assert_same_tree(&p("from-overlay"), &p("expected"));
    // The full-copy diff gives the same tree.
    let (tblob, _) = diff_trees(&p("lower"), &p("expected"), &DiffOptions::default());
    cp_a(&p("lower"), &p("from-trees"));
    apply_native(&tblob, &p("from-trees"));
    assert_same_tree(&p("from-trees"), &p("expected"));
    // Applied as an overlay layer over the lower, mounted read-only: the same view.
    mkdir(&p("layer"), 0o755);
    let o = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay { userxattr: false },
        parents: vec![p("lower")],
    };
    apply_layer(&oblob[..], &p("layer"), &o).unwrap();
    mkdir(&p("view"), 0o755);
    let _v = mount_overlay(&[&p("layer"), &p("lower")], None, &p("view"));
    assert_same_tree(&p("view"), &p("expected"));
}

#[test]
fn diff_symlinks_are_recorded_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    mkdir(&p("outside/secret-dir"), 0o755);
    write(&p("outside/secret-dir/secret"), "do not read", 0o600);
    mkdir(&p("lower"), 0o755);
    mkdir(&p("upper"), 0o755);
    symlink(p("outside"), p("upper/abs")).unwrap();
    symlink("../outside/secret-dir", p("upper/rel")).unwrap();
    symlink("/", p("upper/root")).unwrap();
    let (blob, _) = diff_trees(&p("lower"), &p("upper"), &DiffOptions::default());
    let ms = members(&blob);
    assert_eq!(names(&blob), ["abs", "rel", "root"]);
    assert!(ms.iter().all(|m| m.typ == '2' && m.data.is_empty()));
    // The same through an overlay upper.
    let (blob, _) = diff(
        DiffSource::OverlayUpper {
            upper: &p("upper"),
            lowers: &[],
            userxattr: false,
        },
        &DiffOptions::default(),
    );
    assert_eq!(names(&blob), ["abs", "rel", "root"]);
}

// ---------------------------------------------------------------------------------------
// containerd's TestDiffTar cases
// ---------------------------------------------------------------------------------------

/// An expected member.
#[derive(Debug)]
enum Exp {
    Dir(&'static str, u32),
    File(&'static str, &'static str, u32),
    Link(&'static str, &'static str),
    Whiteout(&'static str),
}

fn check(blob: &[u8], want: &[Exp]) {
    let ms = members(blob);
    let shown: Vec<String> = ms.iter().map(|m| format!("{} {}", m.typ, m.name)).collect();
    assert_eq!(ms.len(), want.len(), "members {shown:?}, want {want:?}");
    for (m, w) in ms.iter().zip(want) {
        match *w {
            Exp::Dir(n, mode) => assert_eq!((m.name.as_str(), m.typ, m.mode), (n, '5', mode)),
            Exp::File(n, data, mode) => {
                assert_eq!((m.name.as_str(), m.typ, m.mode), (n, '0', mode));
                assert_eq!(m.data, data.as_bytes(), "{n}");
            }
            Exp::Link(n, target) => {
                assert_eq!((m.name.as_str(), m.typ, m.link.as_str()), (n, '1', target))
            }
            Exp::Whiteout(n) => {
                assert_eq!((m.name.as_str(), m.typ, m.mtime), (n, '0', 0));
                assert!(m.data.is_empty());
            }
        }
    }
}

/// Builds the lower with `a`, copies it, changes the copy with `b`, diffs (plain tar).
fn diff_case(a: impl Fn(&Path), b: impl Fn(&Path)) -> (Vec<u8>, Diffed) {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    mkdir(&lower, 0o755);
    a(&lower);
    cp_a(&lower, &upper);
    b(&upper);
    diff_trees(&lower, &upper, &opts(Compression::None))
}

#[test]
fn difftar_empty_diff() {
    let (blob, d) = diff_case(|l| mkdir(&l.join("etc"), 0o755), |_| {});
    assert!(d.empty);
    assert_eq!(blob, vec![0u8; 1024]);
    assert_eq!(d.diff_id, sha(&[0u8; 1024]));
    for c in [Compression::Gzip, Compression::Zstd] {
        let t = tempfile::tempdir().unwrap();
        mkdir(&t.path().join("l"), 0o755);
        mkdir(&t.path().join("u"), 0o755);
        let (blob, d) = diff_trees(&t.path().join("l"), &t.path().join("u"), &opts(c));
        assert!(d.empty);
        assert_eq!(decompress(&blob), vec![0u8; 1024]);
        // Still a valid layer.
        apply_native(&blob, &t.path().join("l"));
    }
}

#[test]
fn difftar_parent_inclusion() {
    let (blob, _) = diff_case(
        |l| {
            mkdir(&l.join("d1"), 0o755);
            mkdir(&l.join("d2"), 0o770);
        },
        |u| {
            mkdir(&u.join("d1/d"), 0o700);
            write(&u.join("d2/f"), "ok", 0o644);
        },
    );
    check(
        &blob,
        &[
            Exp::Dir("d1/", 0o755),
            Exp::Dir("d1/d/", 0o700),
            Exp::Dir("d2/", 0o770),
            Exp::File("d2/f", "ok", 0o644),
        ],
    );
}

#[test]
fn difftar_hardlink_parent_inclusion() {
    let (blob, _) = diff_case(
        |l| {
            for d in ["d1", "d2", "d3", "d4", "d5", "d6"] {
                mkdir(&l.join(d), 0o755);
            }
            write(&l.join("d1/f1"), "link me", 0o644);
            write(&l.join("d2/f1"), "link me", 0o644);
            write(&l.join("d4/f1"), "link me", 0o644);
            write(&l.join("d5/f1"), "link me", 0o644);
            fs::hard_link(l.join("d1/f1"), l.join("d6/l1")).unwrap();
            fs::hard_link(l.join("d5/f1"), l.join("d6/l2")).unwrap();
        },
        |u| {
            fs::hard_link(u.join("d1/f1"), u.join("d2/l1")).unwrap();
            fs::hard_link(u.join("d4/f1"), u.join("d3/l1")).unwrap();
            fs::remove_file(u.join("d6/l1")).unwrap();
            fs::remove_file(u.join("d6/l2")).unwrap();
        },
    );
    check(
        &blob,
        &[
            Exp::Dir("d2/", 0o755),
            Exp::File("d2/l1", "link me", 0o644),
            // d1/f1 and its parent come after the new link they now share an inode with.
            Exp::Dir("d1/", 0o755),
            Exp::Link("d1/f1", "d2/l1"),
            Exp::Dir("d3/", 0o755),
            Exp::File("d3/l1", "link me", 0o644),
            Exp::Dir("d4/", 0o755),
            Exp::Link("d4/f1", "d3/l1"),
            Exp::Dir("d6/", 0o755),
            Exp::Whiteout("d6/.wh.l1"),
            Exp::Whiteout("d6/.wh.l2"),
        ],
    );
}

#[test]
fn difftar_update_directory_permission() {
    let (blob, _) = diff_case(
        |l| {
            mkdir(&l.join("d1"), 0o755);
            mkdir(&l.join("d2"), 0o770);
        },
        |u| {
            fs::set_permissions(u.join("d1"), fs::Permissions::from_mode(0o777)).unwrap();
            mkdir(&u.join("d1/d"), 0o700);
            write(&u.join("d2/f"), "ok", 0o644);
        },
    );
    check(
        &blob,
        &[
            Exp::Dir("d1/", 0o777),
            Exp::Dir("d1/d/", 0o700),
            Exp::Dir("d2/", 0o770),
            Exp::File("d2/f", "ok", 0o644),
        ],
    );
}

#[test]
fn difftar_hardlink_updated_parent() {
    let (blob, _) = diff_case(
        |l| {
            for d in ["d1", "d2", "d3", "d4"] {
                mkdir(&l.join(d), 0o755);
            }
            write(&l.join("d1/f1"), "link me", 0o644);
            write(&l.join("d2/f1"), "link me", 0o644);
            write(&l.join("d3/f1"), "link me", 0o644);
        },
        |u| {
            fs::set_permissions(u.join("d1"), fs::Permissions::from_mode(0o777)).unwrap();
            fs::hard_link(u.join("d1/f1"), u.join("d2/l1")).unwrap();
            fs::set_permissions(u.join("d3"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::hard_link(u.join("d3/f1"), u.join("d4/l1")).unwrap();
            fs::set_permissions(u.join("d4"), fs::Permissions::from_mode(0o777)).unwrap();
        },
    );
    check(
        &blob,
        &[
            Exp::Dir("d1/", 0o777),
            Exp::Dir("d2/", 0o755),
            Exp::File("d2/l1", "link me", 0o644),
            // Its parent was emitted already: only the link.
            Exp::Link("d1/f1", "d2/l1"),
            Exp::Dir("d4/", 0o777),
            Exp::File("d4/l1", "link me", 0o644),
            Exp::Dir("d3/", 0o755),
            Exp::Link("d3/f1", "d4/l1"),
        ],
    );
}

#[test]
fn difftar_whiteout_includes_parents() {
    let (blob, _) = diff_case(
        |l| {
            for d in ["d1", "d2", "d3"] {
                mkdir(&l.join(d), 0o755);
            }
            write(&l.join("d1/f1"), "content", 0o644);
            write(&l.join("d2/f1"), "content", 0o644);
            write(&l.join("d2/f2"), "content", 0o644);
            write(&l.join("d3/f1"), "content", 0o644);
        },
        |u| {
            fs::remove_file(u.join("d1/f1")).unwrap();
            fs::remove_file(u.join("d2/f1")).unwrap();
            fs::set_permissions(u.join("d2/f2"), fs::Permissions::from_mode(0o777)).unwrap();
            fs::remove_file(u.join("d3/f1")).unwrap();
            write(&u.join("d3/f2"), "content", 0o644);
        },
    );
    check(
        &blob,
        &[
            Exp::Dir("d1/", 0o755),
            Exp::Whiteout("d1/.wh.f1"),
            Exp::Dir("d2/", 0o755),
            Exp::Whiteout("d2/.wh.f1"),
            Exp::File("d2/f2", "content", 0o777),
            Exp::Dir("d3/", 0o755),
            Exp::Whiteout("d3/.wh.f1"),
            Exp::File("d3/f2", "content", 0o644),
        ],
    );
}

#[test]
fn difftar_whiteout_parent_removal() {
    let (blob, _) = diff_case(
        |l| {
            mkdir(&l.join("d1"), 0o755);
            mkdir(&l.join("d2"), 0o755);
            write(&l.join("d2/f1"), "content", 0o644);
        },
        |u| {
            fs::remove_dir_all(u.join("d1")).unwrap();
            fs::remove_dir_all(u.join("d2")).unwrap();
            mkdir(&u.join("d3"), 0o755);
        },
    );
    check(
        &blob,
        &[
            Exp::Whiteout(".wh.d1"),
            Exp::Whiteout(".wh.d2"),
            Exp::Dir("d3/", 0o755),
        ],
    );
}

#[test]
fn difftar_ignore_sockets() {
    let (blob, _) = diff_case(
        |l| write(&l.join("f1"), "content", 0o644),
        |u| {
            write(&u.join("f2"), "content", 0o644);
            let _s = std::os::unix::net::UnixListener::bind(u.join("s0")).unwrap();
            write(&u.join("f3"), "content", 0o644);
        },
    );
    check(
        &blob,
        &[
            Exp::File("f2", "content", 0o644),
            Exp::File("f3", "content", 0o644),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Change detection, times, determinism, digests
// ---------------------------------------------------------------------------------------

#[test]
fn diff_change_detection_rules() {
    let (blob, _) = diff_case(
        |l| {
            for (n, data) in [
                ("content-same-size", "aaaa"),
                ("content-same", "same"),
                ("nsec-differ", "n"),
                ("nsec-equal-content-differs", "bbbb"),
                ("xattr-only", "x"),
                ("empty", ""),
            ] {
                write(&l.join(n), data, 0o644);
            }
            symlink("aaaa", l.join("link-same-len")).unwrap();
            symlink("same", l.join("link-same")).unwrap();
            pin_times(l, T0);
            set_mtime(&l.join("nsec-differ"), T0, 5);
            set_mtime(&l.join("nsec-equal-content-differs"), T0, 7);
        },
        |u| {
            let redo = |n: &str, data: &str, nsec: i64| {
                fs::write(u.join(n), data).unwrap();
                set_mtime(&u.join(n), T0, nsec);
            };
            // Both mtimes without nanoseconds: the contents decide.
            redo("content-same-size", "zzzz", 0);
            redo("content-same", "same", 0);
            // Different nanoseconds: modified whatever the contents.
            redo("nsec-differ", "n", 6);
            // Equal non-zero nanoseconds and size: taken as unchanged (containerd's rule).
            redo("nsec-equal-content-differs", "cccc", 7);
            setxattr(&u.join("xattr-only"), "user.k", b"v");
            set_mtime(&u.join("xattr-only"), T0, 0);
            fs::remove_file(u.join("link-same-len")).unwrap();
            symlink("zzzz", u.join("link-same-len")).unwrap();
            set_mtime(&u.join("link-same-len"), T0, 0);
            fs::remove_file(u.join("link-same")).unwrap();
            symlink("same", u.join("link-same")).unwrap();
            set_mtime(&u.join("link-same"), T0, 0);
            redo("empty", "", 0);
        },
    );
    assert_eq!(
        names(&blob),
        [
            "content-same-size",
            "link-same-len",
            "nsec-differ",
            "xattr-only"
        ]
    );
}

#[test]
fn diff_source_date_epoch() {
    const OLD: i64 = 1_000_000_000;
    const NEW: i64 = 2_000_000_000;
    const EPOCH: i64 = 1_500_000_000;
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    mkdir(&lower, 0o755);
    write(&lower.join("old"), "old", 0o644);
    write(&lower.join("gone"), "gone", 0o644);
    mkdir(&lower.join("d"), 0o755);
    set_mtime(&lower.join("old"), OLD, 0);
    cp_a(&lower, &upper);
    fs::set_permissions(upper.join("old"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(upper.join("gone")).unwrap();
    write(&upper.join("new"), "new", 0o644);
    write(&upper.join("d/inner"), "inner", 0o644);
    for n in ["new", "d/inner", "d"] {
        set_mtime(&upper.join(n), NEW, 999);
    }
    let o = DiffOptions {
        compression: Compression::Gzip,
        source_date_epoch: Some(EPOCH),
    };
    let (blob, _) = diff_trees(&lower, &upper, &o);
    let mtimes: Vec<(String, u64)> = members(&blob)
        .into_iter()
        .map(|m| (m.name, m.mtime))
        .collect();
    let want: Vec<(String, u64)> = [
        ("d/", EPOCH),
        ("d/inner", EPOCH),
        (".wh.gone", 0),
        ("new", EPOCH),
        ("old", OLD),
    ]
    .iter()
    .map(|(n, t)| ((*n).to_owned(), *t as u64))
    .collect();
    let mut sorted = mtimes.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(sorted, want_sorted);
    // Reproducible.
    assert_eq!(diff_trees(&lower, &upper, &o).0, blob);
    // Without an epoch, the new mtime stays (whole seconds).
    let (blob, _) = diff_trees(&lower, &upper, &DiffOptions::default());
    let new = members(&blob)
        .into_iter()
        .find(|m| m.name == "new")
        .unwrap();
    assert_eq!(new.mtime, NEW as u64);
}

/// The same change made in two separate places (different inodes, creation order) gives
/// byte-identical blobs.
#[test]
fn diff_is_deterministic() {
    let make = |root: &Path, reverse: bool| {
        let (lower, upper) = (root.join("lower"), root.join("upper"));
        mkdir(&lower, 0o755);
        mkdir(&lower.join("d"), 0o755);
        write(&lower.join("d/old"), "old", 0o644);
        write(&lower.join("gone"), "gone", 0o644);
        pin_times(&lower, T0);
        cp_a(&lower, &upper);
        fs::remove_file(upper.join("gone")).unwrap();
        let mut files = vec!["a", "b", "c", "e"];
        if reverse {
            files.reverse();
        }
        for f in files {
            write(&upper.join("d").join(f), f.repeat(5000), 0o644);
            setxattr(&upper.join("d").join(f), "user.z", b"1");
            setxattr(&upper.join("d").join(f), "user.a", b"2");
        }
        fs::hard_link(upper.join("d/b"), upper.join("link")).unwrap();
        pin_times(&upper, T1);
    };
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make(t1.path(), false);
    make(t2.path(), true);
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let o = opts(c);
        let (a, da) = diff_trees(&t1.path().join("lower"), &t1.path().join("upper"), &o);
        let (b, db) = diff_trees(&t2.path().join("lower"), &t2.path().join("upper"), &o);
        assert_eq!(a, b, "{c}");
        assert_eq!(da, db);
        // And the same tree diffed twice.
        assert_eq!(
            diff_trees(&t1.path().join("lower"), &t1.path().join("upper"), &o).0,
            a
        );
    }
}

#[test]
fn diff_digests_and_sizes() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    build_lower(&lower);
    cp_a(&lower, &upper);
    common_change(&upper);
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (blob, d) = diff_trees(&lower, &upper, &opts(c));
        let plain = decompress(&blob);
        assert_eq!(d.digest, sha(&blob), "{c}");
        assert_eq!(d.size, blob.len() as u64);
        assert_eq!(d.diff_id, sha(&plain));
        assert_eq!(d.uncompressed_size, plain.len() as u64);
        assert_eq!(plain.len() % 512, 0);
        assert!(plain.ends_with(&[0u8; 1024]));
        if c == Compression::None {
            assert_eq!(d.digest, d.diff_id);
        }
        if c == Compression::Gzip {
            // No file name, no mtime.
            assert_eq!(blob[3], 0, "FLG");
            assert_eq!(&blob[4..8], &[0, 0, 0, 0], "MTIME");
        }
        // The applier measures the same.
        let target = t.path().join(format!("apply-{c}"));
        cp_a(&lower, &target);
        let a = apply_layer(
            &blob[..],
            &target,
            &ApplyOptions {
                whiteouts: WhiteoutMode::Native,
                parents: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!((a.diff_id, a.compressed_digest), (d.diff_id, d.digest));
        assert_eq!(
            (a.uncompressed_size, a.compressed_size),
            (d.uncompressed_size, d.size)
        );
    }
}

#[test]
fn diff_long_names_use_pax_records() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    mkdir(&lower, 0o755);
    mkdir(&upper, 0o755);
    let long = "n".repeat(150);
    write(&upper.join(&long), "x", 0o644);
    fs::hard_link(upper.join(&long), upper.join("z-link")).unwrap();
    symlink("t".repeat(180), upper.join("sym")).unwrap();
    let (blob, _) = diff_trees(&lower, &upper, &DiffOptions::default());
    let ms = members(&blob);
    assert_eq!(ms[0].name, long);
    assert!(ms[0].pax_keys.contains(&"path".to_owned()));
    assert_eq!((ms[1].name.as_str(), ms[1].link.len()), ("sym", 180));
    assert!(ms[1].pax_keys.contains(&"linkpath".to_owned()));
    assert_eq!(
        (ms[2].name.as_str(), ms[2].link.as_str()),
        ("z-link", long.as_str())
    );
}

#[test]
fn diff_errors_name_the_path() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing");
    let err = write_diff(
        DiffSource::Trees {
            lower: t.path(),
            upper: &missing,
        },
        &DiffOptions::default(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(err.kind(), strata_store::ErrorKind::Io);
}

// ---------------------------------------------------------------------------------------
// Handmade overlay uppers
// ---------------------------------------------------------------------------------------

fn whiteout(p: &Path) {
    mknod(p, FileType::CharacterDevice, 0, 0, 0);
}

fn overlay_diff(upper: &Path, lowers: &[PathBuf], userxattr: bool) -> Vec<u8> {
    diff(
        DiffSource::OverlayUpper {
            upper,
            lowers,
            userxattr,
        },
        &opts(Compression::None),
    )
    .0
}

/// Whiteouts and opaque markers are only emitted where they hide something, honouring
/// the lowers' own whiteouts and opaque dirs.
#[test]
fn diff_overlay_emits_only_hiding_markers() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    // lower2 (farthest): a, b, d/old, e/x, g (file).
    mkdir(&p("lower2/d"), 0o755);
    mkdir(&p("lower2/e"), 0o755);
    for f in ["a", "b", "d/old", "e/x", "g"] {
        write(&p("lower2").join(f), f, 0o644);
    }
    // lower1 (nearest): hides a; d is opaque with d/new.
    mkdir(&p("lower1/d"), 0o755);
    whiteout(&p("lower1/a"));
    setxattr(&p("lower1/d"), "trusted.overlay.opaque", b"y");
    write(&p("lower1/d/new"), "new", 0o644);
    // upper.
    mkdir(&p("upper/d"), 0o755);
    for w in ["a", "b", "d/old", "d/new", "zzz"] {
        whiteout(&p("upper").join(w));
    }
    for d in ["e", "f", "g"] {
        mkdir(&p("upper").join(d), 0o755);
        setxattr(&p("upper").join(d), "trusted.overlay.opaque", b"y");
    }
    whiteout(&p("upper/e/x"));
    write(&p("upper/e/y"), "y", 0o644);
    let lowers = [p("lower1"), p("lower2")];
    let blob = overlay_diff(&p("upper"), &lowers, false);
    assert_eq!(
        names(&blob),
        [
            // a: already hidden by lower1; zzz: nothing below.
            ".wh.b",
            "d/",
            // d/old: hidden by lower1's opaque d.
            "d/.wh.new",
            "e/",
            "e/.wh..wh..opq",
            // e/x: hidden by the opaque e itself.
            "e/y",
            // f: nothing below; g: a file below (the directory replaces it).
            "f/",
            "g/",
        ]
    );
    // Applied onto the merged lowers, the result is the upper's view.
    mkdir(&p("merged"), 0o755);
    let expected = p("expected");
    {
        let _m = mount_overlay(&[&p("lower1"), &p("lower2")], None, &p("merged"));
        cp_a(&p("merged"), &p("applied"));
        // overlayfs lists a whiteout inside a directory that is not merged (e/x), which a
        // real upper never has: the view is built without it.
        cp_a(&p("upper"), &p("upper-view"));
        fs::remove_file(p("upper-view/e/x")).unwrap();
        mkdir(&p("view"), 0o755);
        let _v = mount_overlay(
            &[&p("upper-view"), &p("lower1"), &p("lower2")],
            None,
            &p("view"),
        );
        cp_a(&p("view"), &expected);
    }
    apply_native(&blob, &p("applied"));
    assert_same_tree(&p("applied"), &expected);
}

#[test]
fn diff_overlay_userxattr_flavour() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    mkdir(&p("lower/d"), 0o755);
    write(&p("lower/d/old"), "old", 0o644);
    mkdir(&p("upper/d"), 0o755);
    setxattr(&p("upper/d"), "user.overlay.opaque", b"y");
    setxattr(&p("upper/d"), "user.keep", b"k");
    write(&p("upper/d/new"), "new", 0o644);
    let lowers = [p("lower")];
    let blob = overlay_diff(&p("upper"), &lowers, true);
    let ms = members(&blob);
    assert_eq!(names(&blob), ["d/", "d/.wh..wh..opq", "d/new"]);
    assert_eq!(ms[0].xattrs, [("user.keep".to_owned(), b"k".to_vec())]);
    // Without userxattr the user.overlay xattr means nothing (and is still not carried).
    let blob = overlay_diff(&p("upper"), &lowers, false);
    assert_eq!(names(&blob), ["d/", "d/new"]);
}

#[test]
fn diff_overlay_refuses_redirects_and_metacopy() {
    for xattr in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        mkdir(&upper.join("d"), 0o755);
        setxattr(&upper.join("d"), xattr, b"/elsewhere");
        let err = write_diff(
            DiffSource::OverlayUpper {
                upper: &upper,
                lowers: &[],
                userxattr: false,
            },
            &DiffOptions::default(),
            Vec::new(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(xattr) && msg.contains("upper/d"), "{msg}");
    }
}

#[test]
fn diff_overlay_hardlinks_in_upper() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    mkdir(&p("lower"), 0o755);
    mkdir(&p("upper/a"), 0o755);
    write(&p("upper/a/one"), "data", 0o644);
    fs::hard_link(p("upper/a/one"), p("upper/two")).unwrap();
    // Overlay shares one inode among whiteouts: they are never taken for hard links.
    write(&p("lower/w1"), "1", 0o644);
    write(&p("lower/w2"), "2", 0o644);
    whiteout(&p("upper/w1"));
    fs::hard_link(p("upper/w1"), p("upper/w2")).unwrap();
    let blob = overlay_diff(&p("upper"), &[p("lower")], false);
    let ms = members(&blob);
    let got: Vec<(String, char, String)> =
        ms.into_iter().map(|m| (m.name, m.typ, m.link)).collect();
    let want = [
        ("a/", '5', ""),
        ("a/one", '0', ""),
        ("two", '1', "a/one"),
        (".wh.w1", '0', ""),
        (".wh.w2", '0', ""),
    ];
    let want: Vec<(String, char, String)> = want
        .iter()
        .map(|(n, c, l)| ((*n).to_owned(), *c, (*l).to_owned()))
        .collect();
    assert_eq!(got, want);
}
