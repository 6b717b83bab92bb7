//! Layer apply: a corpus of hostile layers (each must be refused or applied harmlessly, and
//! must leave a sentinel tree outside the target byte-for-byte and mode-for-mode intact) and
//! behaviour tests (compression, whiteouts, links, metadata, parents).
//!
//! Layers are crafted in-test with raw tar headers so that names the `tar` crate's builder
//! refuses (`..`, absolute, NUL, odd types, out-of-range numbers) can be written. Runs as
//! root (mknod, chown, trusted.* xattrs).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_snapshotter::Error;
use strata_snapshotter::layer::{Applied, ApplyOptions, Compression, WhiteoutMode, apply_layer};
use strata_store::{Algorithm, Digest};

// ---------------------------------------------------------------------------------------
// Crafting tars
// ---------------------------------------------------------------------------------------

const MTIME: u64 = 1_600_000_000;

/// One tar member, written with raw bytes wherever the tar crate would refuse.
#[derive(Clone, Debug)]
struct E {
    name: Vec<u8>,
    typ: u8,
    link: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    atime: Option<u64>,
    data: Vec<u8>,
    /// Size written in the header, when it must differ from `data.len()`.
    declared: Option<u64>,
    /// Raw dev_major / dev_minor fields.
    dev: Option<([u8; 8], [u8; 8])>,
    pax: Vec<(String, Vec<u8>)>,
}

fn entry(name: impl AsRef<[u8]>, typ: u8) -> E {
    E {
        name: name.as_ref().to_vec(),
        typ,
        link: Vec::new(),
        mode: if typ == b'5' { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime: MTIME,
        atime: None,
        data: Vec::new(),
        declared: None,
        dev: None,
        pax: Vec::new(),
    }
}

fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
    let mut e = entry(name, b'0');
    e.data = data.as_ref().to_vec();
    e
}

fn dir(name: impl AsRef<[u8]>) -> E {
    entry(name, b'5')
}

fn sym(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    let mut e = entry(name, b'2');
    e.link = target.as_ref().to_vec();
    e.mode = 0o777;
    e
}

fn hard(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    let mut e = entry(name, b'1');
    e.link = target.as_ref().to_vec();
    e
}

fn octal8(v: u64) -> [u8; 8] {
    let s = format!("{v:07o}\0");
    let mut f = [0u8; 8];
    f.copy_from_slice(&s.as_bytes()[..8]);
    f
}

fn chr(name: impl AsRef<[u8]>, major: u64, minor: u64) -> E {
    let mut e = entry(name, b'3');
    e.dev = Some((octal8(major), octal8(minor)));
    e
}

fn blk(name: impl AsRef<[u8]>, major: u64, minor: u64) -> E {
    let mut e = chr(name, major, minor);
    e.typ = b'4';
    e
}

fn fifo(name: impl AsRef<[u8]>) -> E {
    entry(name, b'6')
}

impl E {
    fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    fn atime(mut self, t: u64) -> E {
        self.atime = Some(t);
        self
    }
    fn pax(mut self, k: &str, v: impl AsRef<[u8]>) -> E {
        self.pax.push((k.to_owned(), v.as_ref().to_vec()));
        self
    }
    fn declared(mut self, n: u64) -> E {
        self.declared = Some(n);
        self
    }
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
    // "<len> <k>=<v>\n" where <len> counts itself.
    let base = k.len() + v.len() + 3;
    let mut len = base + 1;
    loop {
        let total = base + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut r = format!("{len} {k}=").into_bytes();
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

/// A header block; `name` and `link` are truncated to their fields (callers emit GNU long
/// name/link members first when they are longer).
fn header(name: &[u8], typ: u8, link: &[u8], e: &E, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(typ));
    if let Some(a) = e.atime {
        h.as_gnu_mut().unwrap().set_atime(a);
    }
    let b = h.as_mut_bytes();
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    if let Some((ma, mi)) = e.dev {
        b[329..337].copy_from_slice(&ma);
        b[337..345].copy_from_slice(&mi);
    }
    b[156] = typ; // set_entry_type maps some bytes; keep the raw one
    if typ == b'S' {
        // A well-formed (empty) GNU sparse map, so the tar crate accepts the header and the
        // applier's own type check is what refuses it.
        b[483..495].copy_from_slice(format!("{size:011o}\0").as_bytes());
    }
    h.set_cksum();
    h
}

fn member(out: &mut Vec<u8>, h: &tar::Header, data: &[u8]) {
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    pad(out);
}

fn write_entry(out: &mut Vec<u8>, e: &E) {
    let meta = entry("", b'0');
    if e.name.len() > 100 {
        let mut d = e.name.clone();
        d.push(0);
        member(
            out,
            &header(b"././@LongLink", b'L', b"", &meta, d.len() as u64),
            &d,
        );
    }
    if e.link.len() > 100 {
        let mut d = e.link.clone();
        d.push(0);
        member(
            out,
            &header(b"././@LongLink", b'K', b"", &meta, d.len() as u64),
            &d,
        );
    }
    if !e.pax.is_empty() {
        let d: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        member(
            out,
            &header(b"PaxHeaders/x", b'x', b"", &meta, d.len() as u64),
            &d,
        );
    }
    let size = e.declared.unwrap_or(e.data.len() as u64);
    member(out, &header(&e.name, e.typ, &e.link, e, size), &e.data);
}

/// A complete tar: members and the two zero blocks.
fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = tar_open(entries);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Members only, no end-of-archive blocks.
fn tar_open(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write_entry(&mut out, e);
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn sha(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

fn native() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Native,
        parents: Vec::new(),
    }
}

fn overlay() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Overlay { userxattr: false },
        parents: Vec::new(),
    }
}

fn apply(layer: &[u8], target: &Path, opts: &ApplyOptions) -> Result<Applied, Error> {
    apply_layer(layer, target, opts)
}

// ---------------------------------------------------------------------------------------
// The sentinel
// ---------------------------------------------------------------------------------------

/// `top/root` is the target; `top/outside` the sentinel, reachable from inside the root
/// through pre-existing symlinks (`escape` absolute, `rel` relative, `deep` many `..`).
struct Env {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().canonicalize().unwrap();
    let outside = top.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("file"), b"outside data").unwrap();
    fs::set_permissions(outside.join("file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(outside.join("perm400"), b"read only").unwrap();
    fs::set_permissions(outside.join("perm400"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::create_dir(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/inner"), b"inner").unwrap();
    fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("file", outside.join("lnk")).unwrap();
    let root = top.join("root");
    fs::create_dir(&root).unwrap();
    symlink(&outside, root.join("escape")).unwrap();
    symlink("../outside", root.join("rel")).unwrap();
    symlink("../../../../../../../../..", root.join("deep")).unwrap();
    fs::create_dir(root.join("lower")).unwrap();
    fs::write(root.join("lower/old"), b"lower").unwrap();
    symlink(&outside, root.join("lower/out")).unwrap();
    Env {
        _tmp: tmp,
        top,
        root,
        outside,
    }
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut list[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap_or(0);
        out.push((name.to_vec(), v[..len].to_vec()));
    }
    out
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattrs(p)
        .into_iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v)
}

/// Everything under `top` except the target: type, mode, owner, link count, size, times,
/// content or link target, xattrs.
fn snapshot(env: &Env) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let body = if ft.is_file() {
            format!("file {:?}", fs::read(p).unwrap())
        } else if ft.is_symlink() {
            format!("link {:?}", fs::read_link(p).unwrap())
        } else if ft.is_dir() {
            "dir".to_owned()
        } else {
            format!("special rdev={}", m.rdev())
        };
        out.insert(
            p.to_owned(),
            format!(
                "{body} mode={:o} uid={} gid={} nlink={} size={} mtime={}.{} xattrs={:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                if ft.is_dir() { 0 } else { m.nlink() },
                if ft.is_dir() { 0 } else { m.size() },
                m.mtime(),
                m.mtime_nsec(),
                xattrs(p),
            ),
        );
        if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                let c = e.unwrap().path();
                if c != skip {
                    walk(&c, skip, out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&env.top, &env.root, &mut out);
    out
}

/// Applies `layer` into a fresh environment and checks that nothing outside the target
/// changed. Returns the environment (for checks inside the target) and the result.
fn attempt(layer: &[u8], opts: &ApplyOptions) -> (Env, Result<Applied, Error>) {
    let env = env();
    let before = snapshot(&env);
    let r = apply(layer, &env.root, opts);
    let after = snapshot(&env);
    assert_eq!(before, after, "the sentinel changed (result: {r:?})");
    (env, r)
}

/// The layer must be refused as invalid, with `needle` in the message, leaving the
/// sentinel intact.
fn refused(layer: &[u8], opts: &ApplyOptions, needle: &str) -> Env {
    let (env, r) = attempt(layer, opts);
    match r {
        Err(Error::InvalidLayer(msg)) => {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        other => panic!("expected InvalidLayer({needle:?}), got {other:?}"),
    }
    env
}

/// The layer must apply (harmlessly), leaving the sentinel intact.
fn harmless(layer: &[u8], opts: &ApplyOptions) -> Env {
    let (env, r) = attempt(layer, opts);
    r.unwrap();
    env
}

fn rel_outside(env: &Env) -> PathBuf {
    env.outside.strip_prefix("/").unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Hostile corpus
// ---------------------------------------------------------------------------------------

#[test]
fn hostile_dotdot_name() {
    refused(&tar(&[file("../x", "pwned")]), &native(), "escapes");
    refused(
        &tar(&[file("../outside/file", "pwned")]),
        &native(),
        "escapes",
    );
}

#[test]
fn hostile_inner_dotdot_escape() {
    refused(
        &tar(&[dir("a"), file("a/../../x", "pwned")]),
        &native(),
        "escapes",
    );
    // A `..` that stays inside is just cleaned.
    let env = harmless(&tar(&[dir("a"), file("a/../b", "ok")]), &native());
    assert_eq!(fs::read(env.root.join("b")).unwrap(), b"ok");
}

#[test]
fn hostile_dotdot_via_pax_and_gnu_long_names() {
    let pax = file("innocent", "pwned").pax("path", "../../x");
    refused(&tar(&[pax]), &native(), "escapes");
    let gnu = file(
        format!("{}{}", "z/".repeat(60), "../".repeat(61) + "x"),
        "pwned",
    );
    assert!(gnu.name.len() > 100);
    refused(&tar(&[gnu]), &native(), "escapes");
    let link = hard("h", "x").pax("linkpath", "../outside/file");
    refused(&tar(&[file("x", "x"), link]), &native(), "escapes");
}

/// Applies a layer built from the environment's own paths (absolute names of the
/// sentinel differ per tempdir), checking the sentinel.
fn attempt_with(
    opts: &ApplyOptions,
    build: impl FnOnce(&Env) -> Vec<u8>,
) -> (Env, Result<Applied, Error>) {
    let env = env();
    let layer = build(&env);
    let before = snapshot(&env);
    let r = apply(&layer, &env.root, opts);
    assert_eq!(
        before,
        snapshot(&env),
        "the sentinel changed (result: {r:?})"
    );
    (env, r)
}

fn abs(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

#[test]
fn hostile_absolute_names_stay_inside() {
    let unique = format!("/etc/strata-layer-test-{}", std::process::id());
    let (env, r) = attempt_with(&native(), |env| {
        tar(&[
            file(&unique, "inside"),
            file(abs(&env.outside.join("file")), "inside too"),
        ])
    });
    r.unwrap();
    assert!(
        !Path::new(&unique).exists(),
        "{unique} was created on the host"
    );
    assert_eq!(fs::read(env.root.join(&unique[1..])).unwrap(), b"inside");
    assert_eq!(
        fs::read(env.root.join(rel_outside(&env)).join("file")).unwrap(),
        b"inside too"
    );
}

#[test]
fn hostile_symlink_up_and_out_then_write_through() {
    let env = harmless(
        &tar(&[
            sym("link", "../outside"),
            file("link/file", "pwned"),
            file("link/new", "x"),
        ]),
        &native(),
    );
    // Clamped to the root: `../outside` is `<root>/outside`.
    assert_eq!(fs::read(env.root.join("outside/file")).unwrap(), b"pwned");
    assert_eq!(
        fs::read_link(env.root.join("link")).unwrap(),
        Path::new("../outside")
    );
}

#[test]
fn hostile_symlink_absolute_then_write_through() {
    let (env, r) = attempt_with(&native(), |env| {
        tar(&[
            sym("link", abs(&env.outside)),
            file("link/f", "pwned"),
            file("link/file", "pwned"),
            file("link/sub/inner", "pwned"),
        ])
    });
    r.unwrap();
    assert_eq!(
        fs::read(env.root.join(rel_outside(&env)).join("f")).unwrap(),
        b"pwned"
    );
}

#[test]
fn hostile_preexisting_symlinks_are_clamped() {
    let env = harmless(
        &tar(&[
            file("escape/file", "pwned"),
            file("rel/file", "pwned"),
            file("deep/x", "pwned"),
            dir("escape/sub"),
            file("lower/out/perm400", "pwned"),
        ]),
        &native(),
    );
    assert_eq!(
        fs::read(env.root.join(rel_outside(&env)).join("file")).unwrap(),
        b"pwned"
    );
    assert_eq!(fs::read(env.root.join("outside/file")).unwrap(), b"pwned");
    assert_eq!(fs::read(env.root.join("x")).unwrap(), b"pwned");
}

#[test]
fn hostile_nested_symlink_chains() {
    let (env, r) = attempt_with(&native(), |env| {
        let out = env.outside.to_str().unwrap().to_owned();
        tar(&[
            sym("l1", "l2"),
            sym("l2", "l3/.."),
            sym("l3", format!("{out}/sub")),
            file("l1/x", "pwned"),
            dir("d"),
            sym("d/up", "../../../.."),
            sym("d/up2", "up/../../escape"),
            file("d/up2/y", "pwned"),
            sym("m1", "/m2/../m3"),
            sym("m2", "/"),
            sym("m3", "escape/../../../rel"),
            file("m1/z", "pwned"),
        ])
    });
    r.unwrap();
    assert!(env.root.join(rel_outside(&env)).join("x").is_file());
}

#[test]
fn hostile_symlink_loop() {
    refused(
        &tar(&[sym("a", "b"), sym("b", "a"), file("a/x", "x")]),
        &native(),
        "symbolic links",
    );
    refused(
        &tar(&[sym("self", "self/x"), file("self/y", "x")]),
        &native(),
        "symbolic links",
    );
}

#[test]
fn hostile_hardlink_relative_escape() {
    refused(&tar(&[hard("h", "../outside/file")]), &native(), "escapes");
    refused(
        &tar(&[dir("a"), hard("a/h", "a/../../outside/file")]),
        &native(),
        "escapes",
    );
}

#[test]
fn hostile_hardlink_absolute() {
    let (_, r) = attempt_with(&native(), |env| {
        tar(&[hard("h", abs(&env.outside.join("file")))])
    });
    assert!(
        matches!(&r, Err(Error::InvalidLayer(m)) if m.contains("does not exist")),
        "{r:?}"
    );
    refused(
        &tar(&[hard("h", "/etc/passwd")]),
        &native(),
        "does not exist",
    );
}

#[test]
fn hostile_hardlink_through_symlinked_dir() {
    refused(
        &tar(&[hard("h", "escape/file")]),
        &native(),
        "does not exist",
    );
    refused(
        &tar(&[hard("h", "rel/perm400")]),
        &native(),
        "does not exist",
    );
    refused(
        &tar(&[sym("sl", "../outside"), hard("h", "sl/file")]),
        &native(),
        "does not exist",
    );
    refused(
        &tar(&[hard("h", "lower/out/file")]),
        &native(),
        "does not exist",
    );
    // A hard link to a directory is refused too.
    refused(&tar(&[dir("d"), hard("h", "d")]), &native(), "directory");
}

#[test]
fn hostile_hardlink_symlink_chmod() {
    // HardlinkSymlinkChmod: a symlink to a 0400 file outside, a hard link to the symlink
    // carrying mode 0777: the outside file keeps 0400.
    let (env, r) = attempt_with(&native(), |env| {
        let also = env.top.join("also-exists-outside-root");
        fs::write(&also, b"...").unwrap();
        fs::set_permissions(&also, fs::Permissions::from_mode(0o640)).unwrap();
        tar(&[
            sym(abs(&also), abs(&env.outside.join("perm400"))),
            hard("sketchylink", abs(&also))
                .mode(0o777)
                .owner(1000, 1000),
        ])
    });
    r.unwrap();
    let perm400 = env.outside.join("perm400");
    let m = fs::symlink_metadata(env.root.join("sketchylink")).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "the hard link must link the symlink itself"
    );
    assert_eq!(fs::metadata(&perm400).unwrap().mode() & 0o7777, 0o400);
}

#[test]
fn hostile_hardlink_to_symlink_then_overwrite() {
    let (env, r) = attempt_with(&native(), |env| {
        tar(&[
            sym("s", abs(&env.outside.join("file"))),
            hard("hl", "s"),
            file("hl", "pwned").mode(0o777),
            file("s", "pwned"),
            file("escape", "replaces the symlink"),
        ])
    });
    r.unwrap();
    assert_eq!(fs::read(env.root.join("hl")).unwrap(), b"pwned");
    assert!(
        fs::symlink_metadata(env.root.join("escape"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn hostile_escaping_whiteout_names() {
    for (name, needle) in [
        (".wh..", "escapes"),
        (".wh...", "escapes"),
        (".wh.", "nothing"),
        ("lower/.wh..", "escapes"),
        ("lower/.wh...", "escapes"),
        ("escape/.wh...", "escapes"),
    ] {
        for opts in [native(), overlay()] {
            refused(&tar(&[file(name, "")]), &opts, needle);
        }
    }
}

#[test]
fn hostile_whiteout_through_symlinked_parent() {
    let layer = tar(&[
        file("escape/.wh.file", ""),
        file("rel/.wh.sub", ""),
        file("deep/.wh.outside", ""),
        file("lower/out/.wh.perm400", ""),
        file("escape/sub/.wh.inner", ""),
    ]);
    let env = harmless(&layer, &native());
    // WhiteoutDeadSymlinkParent: nothing inside was there, nothing created.
    assert!(!env.root.join("outside").exists());
    assert!(
        fs::symlink_metadata(env.root.join("escape"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // In an upper dir the whiteouts land inside the root.
    let env = harmless(&layer, &overlay());
    let dev = fs::symlink_metadata(env.root.join(rel_outside(&env)).join("file")).unwrap();
    assert!(dev.file_type().is_char_device());
}

#[test]
fn hostile_whiteout_of_a_symlink_removes_the_link() {
    let env = harmless(
        &tar(&[file(".wh.escape", ""), file("lower/.wh.out", "")]),
        &native(),
    );
    assert!(fs::symlink_metadata(env.root.join("escape")).is_err());
    assert!(fs::symlink_metadata(env.root.join("lower/out")).is_err());
    assert!(env.outside.join("file").exists());
}

#[test]
fn hostile_opaque_in_symlinked_dir() {
    let layer = tar(&[
        file("escape/.wh..wh..opq", ""),
        file("rel/.wh..wh..opq", ""),
        file("lower/out/.wh..wh..opq", ""),
    ]);
    harmless(&layer, &native());
    let env = harmless(&layer, &overlay());
    let inside = env.root.join(rel_outside(&env));
    assert_eq!(
        xattr(&inside, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&env.outside, "trusted.overlay.opaque"), None);
}

#[test]
fn hostile_directory_override_symlink() {
    let layer = tar(&[
        dir("escape").mode(0o777).owner(1000, 1000),
        file("escape/file", "pwned"),
        dir("lower/out").mode(0o700),
        dir("rel/sub").mode(0o777),
    ]);
    let env = harmless(&layer, &native());
    let m = fs::symlink_metadata(env.root.join("escape")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o777);
    assert_eq!(fs::read(env.root.join("escape/file")).unwrap(), b"pwned");
}

#[test]
fn hostile_directory_override_symlink_and_hardlink() {
    let layer = tar(&[
        sym("x", "escape"),
        hard("y", "x"),
        dir("y"),
        file("y/file", "pwned"),
        dir("x"),
    ]);
    let env = harmless(&layer, &native());
    assert!(fs::symlink_metadata(env.root.join("y")).unwrap().is_dir());
    assert!(fs::symlink_metadata(env.root.join("x")).unwrap().is_dir());
}

#[test]
fn hostile_replacing_a_dir_does_not_follow_its_symlinks() {
    // `lower` holds a symlink to the sentinel; replacing `lower` by a file removes the tree
    // without entering the link.
    let env = harmless(&tar(&[file("lower", "now a file")]), &native());
    assert_eq!(fs::read(env.root.join("lower")).unwrap(), b"now a file");
}

#[test]
fn hostile_parent_is_a_file() {
    refused(
        &tar(&[file("f", "x"), file("f/x", "y")]),
        &native(),
        "not a directory",
    );
}

#[test]
fn hostile_bad_gzip() {
    let mut blob = vec![0x1f, 0x8b];
    blob.extend_from_slice(b"this is not deflate data at all, not even close........");
    refused(&blob, &native(), "bad gzip");
}

#[test]
fn hostile_truncated_gzip() {
    let plain = tar(&[file("a", vec![b'x'; 100_000]), file("b", "y")]);
    let gz = gzip(&plain);
    // Cut mid-stream.
    refused(
        &gz[..gz.len() / 2],
        &native(),
        "unexpected end of layer (bad gzip stream",
    );
    // Only the trailer (CRC, size) missing: the tar is complete, the gzip is not.
    refused(
        &gz[..gz.len() - 4],
        &native(),
        "unexpected end of layer (bad gzip stream",
    );
    // Trailing garbage after the last member is not a gzip member.
    let mut trailing = gz.clone();
    trailing.extend_from_slice(&[0; 64]);
    refused(&trailing, &native(), "bad gzip stream");
}

#[test]
fn hostile_truncated_zstd() {
    let plain = tar(&[file("a", vec![b'x'; 100_000])]);
    let z = zstd(&plain);
    refused(
        &z[..z.len() - 3],
        &native(),
        "unexpected end of layer (bad zstd stream",
    );
    let mut bad = vec![0x28, 0xb5, 0x2f, 0xfd];
    bad.extend_from_slice(&[0xff; 64]);
    refused(&bad, &native(), "bad zstd");
}

#[test]
fn hostile_truncated_tar() {
    let plain = tar(&[file("a", vec![b'x'; 5000]), file("b", "y")]);
    // Mid-data of the first entry.
    refused(&plain[..512 + 1000], &native(), "unexpected end");
    // Mid-header of the second entry.
    refused(&plain[..512 + 5120 + 100], &native(), "unexpected end");
    // Same through gzip.
    refused(&gzip(&plain[..512 + 1000]), &native(), "unexpected end");
}

#[test]
fn hostile_huge_declared_size_short_data() {
    let layer = tar_open(&[file("big", vec![b'z'; 4096]).declared(1 << 40)]);
    let env = refused(&layer, &native(), "unexpected end");
    assert!(fs::metadata(env.root.join("big")).unwrap().len() <= 4096);
}

#[test]
fn hostile_gigabyte_entry_is_streamed_not_allocated() {
    // 1 GiB declared, 1 MiB present, gzip: must fail quickly without buffering the entry.
    let mut layer = tar_open(&[file("sparse-ish", vec![0u8; 1 << 20]).declared(1 << 30)]);
    layer.truncate(512 + (1 << 20));
    let gz = gzip(&layer);
    let start = Instant::now();
    let env = refused(&gz, &native(), "unexpected end");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(
        fs::metadata(env.root.join("sparse-ish")).unwrap().len(),
        1 << 20
    );
}

#[test]
fn hostile_unknown_entry_types() {
    for t in [b'7', b'V', b'S', b'A', b'M', b'N', b'X'] {
        refused(
            &tar(&[entry("odd", t)]),
            &native(),
            "unhandled tar entry type",
        );
    }
    // A pre-POSIX `\0` type flag is a regular file (or a dir with a trailing slash).
    let env = harmless(&tar(&[entry("old/", 0), file("old/f", "f")]), &native());
    assert!(env.root.join("old").is_dir());
}

#[test]
fn hostile_device_numbers_out_of_range() {
    let mut base256 = [0u8; 8];
    base256[0] = 0x80;
    base256[3] = 1; // 2^32: does not fit a u32 (the tar crate would truncate it to 0)
    let mut e = chr("dev", 0, 0);
    e.dev = Some((base256, octal8(0)));
    refused(&tar(&[e]), &native(), "device number out of range");
    refused(&tar(&[chr("dev", 4096, 0)]), &native(), "out of range");
    refused(&tar(&[blk("dev", 1, 1 << 20)]), &native(), "out of range");
    let mut neg = chr("dev", 0, 0);
    neg.dev = Some(([0xff; 8], octal8(0)));
    refused(&tar(&[neg]), &native(), "out of range");
}

#[test]
fn hostile_non_utf8_name_is_accepted() {
    let env = harmless(
        &tar(&[file(b"caf\xe9-\xff", "bytes"), dir(b"\xfe\xfd")]),
        &native(),
    );
    let p = env.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-\xff"));
    assert_eq!(fs::read(p).unwrap(), b"bytes");
}

#[test]
fn hostile_nul_in_pax_names() {
    refused(
        &tar(&[file("x", "x").pax("path", b"a\0b")]),
        &native(),
        "NUL",
    );
    refused(
        &tar(&[sym("s", "t").pax("linkpath", b"/etc\0x")]),
        &native(),
        "NUL",
    );
}

#[test]
fn hostile_runaway_long_name() {
    // A 32 MiB GNU long name compresses to almost nothing; the parser must not buffer it.
    let name = vec![b'a'; 32 << 20];
    let mut out = Vec::new();
    let meta = entry("", b'0');
    let mut d = name.clone();
    d.push(0);
    member(
        &mut out,
        &header(b"././@LongLink", b'L', b"", &meta, d.len() as u64),
        &d,
    );
    write_entry(&mut out, &file("x", "x"));
    out.extend_from_slice(&[0; 1024]);
    refused(&gzip(&out), &native(), "larger than 16 MiB");
}

#[test]
fn hostile_unsupported_compression() {
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.extend_from_slice(&[0; 600]);
    refused(&xz, &native(), "xz");
    refused(&[b'x'; 1024], &native(), "malformed tar");
}

#[test]
fn hostile_owner_out_of_range() {
    refused(
        &tar(&[file("f", "x").owner(u64::from(u32::MAX), 0)]),
        &native(),
        "uid",
    );
    refused(&tar(&[file("f", "x").owner(0, 1 << 33)]), &native(), "gid");
}

#[test]
fn hostile_input_failure_is_io() {
    struct Failing(Vec<u8>, usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len() - self.1).min(100);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let plain = tar(&[file("a", vec![1; 3000])]);
    for blob in [plain.clone(), gzip(&plain)] {
        let env = env();
        let half = blob[..blob.len() / 2].to_vec();
        let r = apply_layer(Failing(half, 0), &env.root, &native());
        assert!(matches!(&r, Err(Error::Io { .. })), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Behaviour
// ---------------------------------------------------------------------------------------

fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let body = if ft.is_file() {
            format!("file {}", sha(&fs::read(p).unwrap()))
        } else if ft.is_symlink() {
            format!("link {:?}", fs::read_link(p).unwrap())
        } else {
            String::new()
        };
        let mtime = if ft.is_dir() && p == root {
            0
        } else {
            m.mtime()
        };
        out.insert(
            p.strip_prefix(root).unwrap().to_owned(),
            format!(
                "{body} mode={:o} {}:{} mtime={mtime} rdev={}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.rdev()
            ),
        );
        if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn sample_layer() -> Vec<E> {
    vec![
        dir("etc").mode(0o755),
        file("etc/hosts", "127.0.0.1 localhost\n").mode(0o644),
        // Parents listed explicitly: implicit ones get "now" as mtime.
        dir("usr").mode(0o755),
        dir("usr/bin").mode(0o755),
        file("usr/bin/tool", vec![7u8; 300_000])
            .mode(0o755)
            .owner(1000, 1000),
        sym("usr/bin/alias", "tool"),
        hard("usr/bin/tool2", "usr/bin/tool"),
        fifo("run.fifo"),
        dir("long"),
        file(format!("long/{}", "n".repeat(150)), "long name"),
    ]
}

#[test]
fn compressions_give_the_same_diff_id_and_tree() {
    let mut plain = tar(&sample_layer());
    // Writers pad to a 10 KiB record: the padding counts toward the diffID.
    plain.resize(plain.len().div_ceil(10240) * 10240, 0);
    let diff_id = sha(&plain);
    let split = plain.len() / 3;
    let mut multi = gzip(&plain[..split]);
    multi.extend(gzip(&plain[split..]));
    let blobs = [
        (plain.clone(), Compression::None),
        (gzip(&plain), Compression::Gzip),
        (multi, Compression::Gzip),
        (zstd(&plain), Compression::Zstd),
    ];
    let mut trees = Vec::new();
    for (blob, compression) in &blobs {
        let t = tempfile::tempdir().unwrap();
        let a = apply(blob, t.path(), &native()).unwrap();
        assert_eq!(a.diff_id, diff_id);
        assert_eq!(a.uncompressed_size, plain.len() as u64);
        assert_eq!(a.compressed_digest, sha(blob));
        assert_eq!(a.compressed_size, blob.len() as u64);
        assert_eq!(a.compression, *compression);
        trees.push(tree(t.path()));
    }
    assert!(trees.windows(2).all(|w| w[0] == w[1]), "{trees:#?}");
    assert!(trees[0].contains_key(Path::new("usr/bin/tool")));
}

#[test]
fn empty_tar_applies_nothing() {
    let t = tempfile::tempdir().unwrap();
    let a = apply(&[0u8; 1024], t.path(), &native()).unwrap();
    assert_eq!(a.diff_id, sha(&[0u8; 1024]));
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn native_whiteouts_remove_lower_content_only() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("a/sub")).unwrap();
    fs::write(r.join("a/keep"), b"lower").unwrap();
    fs::write(r.join("a/gone"), b"lower").unwrap();
    fs::write(r.join("a/sub/deep"), b"lower").unwrap();
    fs::create_dir_all(r.join("d/y")).unwrap();
    fs::write(r.join("d/y/z"), b"lower").unwrap();
    fs::create_dir_all(r.join("n")).unwrap();
    fs::write(r.join("n/lower"), b"lower").unwrap();
    fs::write(r.join("f"), b"lower").unwrap();
    let layer = tar(&[
        file("a/.wh.gone", ""),
        file(".wh.d", ""),
        file(".wh.missing", ""),
        file("a/.wh.sub", ""),
        // Same layer: `n/new` before its parent's whiteout, `f` after its own.
        dir("n"),
        file("n/new", "this layer"),
        file(".wh.n", ""),
        file(".wh.f", ""),
        file("f", "this layer"),
        file(".wh.etc/somefile", "a normal path"),
    ]);
    apply(&layer, r, &native()).unwrap();
    assert!(r.join("a/keep").exists());
    assert!(!r.join("a/gone").exists());
    assert!(!r.join("a/sub").exists());
    assert!(!r.join("d").exists());
    assert_eq!(fs::read(r.join("n/new")).unwrap(), b"this layer");
    assert!(
        !r.join("n/lower").exists(),
        "the whiteout hides lower children of n"
    );
    assert_eq!(fs::read(r.join("f")).unwrap(), b"this layer");
    assert!(r.join(".wh.etc/somefile").exists());
    assert!(!r.join("a/.wh.gone").exists() && !r.join(".wh.d").exists());
}

#[test]
fn native_opaque_dir() {
    for marker_first in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("o/sub")).unwrap();
        fs::write(r.join("o/old"), b"lower").unwrap();
        fs::write(r.join("o/sub/old"), b"lower").unwrap();
        fs::write(r.join("sibling"), b"lower").unwrap();
        let mut entries = vec![
            dir("o"),
            file("o/new", "new"),
            dir("o/sub"),
            file("o/sub/new", "new"),
        ];
        let marker = file("o/.wh..wh..opq", "");
        if marker_first {
            entries.insert(1, marker);
        } else {
            entries.push(marker);
        }
        apply(&tar(&entries), r, &native()).unwrap();
        let mut names: Vec<_> = walk_names(&r.join("o"));
        names.sort();
        assert_eq!(
            names,
            ["new", "sub", "sub/new"],
            "marker_first={marker_first}"
        );
        assert!(r.join("sibling").exists());
        assert!(!r.join("o/.wh..wh..opq").exists());
    }
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &Path, p: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            out.push(e.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&e).unwrap().is_dir() {
                go(base, &e, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out
}

#[test]
fn overlay_whiteouts_are_devices_and_xattrs() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let layer = tar(&[
        file(".wh.gone", "").owner(1000, 1001),
        dir("o"),
        file("o/.wh..wh..opq", ""),
        file("d/.wh.x", ""),
        // Deleted then recreated as a dir in the same layer: must be opaque.
        file(".wh.re", ""),
        dir("re"),
        // The layer's own overlay xattrs are not trusted.
        dir("sneaky")
            .pax("SCHILY.xattr.trusted.overlay.redirect", "/etc")
            .pax("SCHILY.xattr.user.ok", "1"),
        // The layer's own entry survives its whiteout.
        file("mine", "kept"),
        file(".wh.mine", ""),
    ]);
    apply(&layer, r, &overlay()).unwrap();
    let m = fs::symlink_metadata(r.join("gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 1000, 1001));
    assert!(!r.join(".wh.gone").exists());
    assert_eq!(
        xattr(&r.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!r.join("o/.wh..wh..opq").exists());
    assert!(
        fs::symlink_metadata(r.join("d/x"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(r.join("re").is_dir());
    assert_eq!(
        xattr(&r.join("re"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&r.join("sneaky"), "trusted.overlay.redirect"), None);
    assert_eq!(
        xattr(&r.join("sneaky"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(fs::read(r.join("mine")).unwrap(), b"kept");

    let t = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay { userxattr: true },
        parents: vec![],
    };
    apply(
        &tar(&[dir("o"), file("o/.wh..wh..opq", "")]),
        t.path(),
        &opts,
    )
    .unwrap();
    assert_eq!(
        xattr(&t.path().join("o"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&t.path().join("o"), "trusted.overlay.opaque"), None);
}

#[test]
fn hardlinks_share_an_inode() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let layer = tar(&[
        file("a", "data"),
        dir("d"),
        hard("d/b", "a"),
        hard("c", "/d/b"),
        sym("s", "/nowhere"),
        hard("hs", "s"),
    ]);
    apply(&layer, r, &native()).unwrap();
    let ino = |p: &str| fs::symlink_metadata(r.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("d/b"));
    assert_eq!(ino("a"), ino("c"));
    assert_eq!(fs::symlink_metadata(r.join("a")).unwrap().nlink(), 3);
    assert_eq!(ino("s"), ino("hs"));
    assert!(
        fs::symlink_metadata(r.join("hs"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn symlinks_are_stored_verbatim() {
    let t = tempfile::tempdir().unwrap();
    let targets: [&[u8]; 6] = [
        b"/etc/passwd",
        b"../../../../x",
        b"rel/target",
        b"dangling",
        b"./.",
        b"caf\xe9",
    ];
    let entries: Vec<E> = targets
        .iter()
        .enumerate()
        .map(|(i, tg)| sym(format!("l{i}"), tg))
        .collect();
    apply(&tar(&entries), t.path(), &native()).unwrap();
    for (i, tg) in targets.iter().enumerate() {
        let got = fs::read_link(t.path().join(format!("l{i}"))).unwrap();
        assert_eq!(got.as_os_str().as_bytes(), *tg);
    }
}

#[test]
fn modes_and_ownership() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let layer = tar(&[
        file("suid", "x").mode(0o4755).owner(1000, 1000),
        file("sgid", "x").mode(0o2711).owner(1000, 1000),
        dir("sticky").mode(0o1777).owner(1000, 1000),
        dir("private").mode(0o700).owner(1000, 1000),
        file("private/f", "x").mode(0o600),
        file("ro", "x").mode(0o400),
        sym("link", "suid").owner(1000, 1000),
        fifo("pipe").mode(0o640).owner(1000, 1000),
        chr("null", 1, 3).mode(0o666).owner(1000, 1000),
    ]);
    apply(&layer, r, &native()).unwrap();
    let m = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert_eq!(m("suid").mode() & 0o7777, 0o4755);
    assert_eq!(m("sgid").mode() & 0o7777, 0o2711);
    assert_eq!(m("sticky").mode() & 0o7777, 0o1777);
    assert_eq!(m("private").mode() & 0o7777, 0o700);
    assert_eq!(m("ro").mode() & 0o7777, 0o400);
    assert_eq!(m("pipe").mode() & 0o7777, 0o640);
    assert_eq!(m("null").mode() & 0o7777, 0o666);
    for p in ["suid", "sgid", "sticky", "private", "link", "pipe", "null"] {
        assert_eq!((m(p).uid(), m(p).gid()), (1000, 1000), "{p}");
    }
    assert_eq!((m("ro").uid(), m("ro").gid()), (0, 0));
}

#[test]
fn pax_xattrs_are_set() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let layer = tar(&[
        file("f", "x")
            .pax("SCHILY.xattr.user.test", "hello")
            .pax("SCHILY.xattr.trusted.t", b"\0bin\xff"),
        dir("d").pax("SCHILY.xattr.user.test", "dir"),
        sym("s", "f")
            .pax("SCHILY.xattr.trusted.link", "l")
            .pax("SCHILY.xattr.user.refused", "x"),
        fifo("p").pax("SCHILY.xattr.user.refused", "x"),
    ]);
    apply(&layer, r, &native()).unwrap();
    assert_eq!(
        xattr(&r.join("f"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(&r.join("f"), "trusted.t").as_deref(),
        Some(&b"\0bin\xff"[..])
    );
    assert_eq!(
        xattr(&r.join("d"), "user.test").as_deref(),
        Some(&b"dir"[..])
    );
    assert_eq!(
        xattr(&r.join("s"), "trusted.link").as_deref(),
        Some(&b"l"[..])
    );
    // user.* on a symlink or FIFO: refused by the kernel, ignored like containerd.
    assert_eq!(xattr(&r.join("s"), "user.refused"), None);
}

#[test]
fn times_are_set_dirs_last() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let layer = tar(&[
        dir("d").mtime(1_000_000_000),
        file("d/f", "x").mtime(1_100_000_000),
        sym("d/s", "f").mtime(1_200_000_000),
        dir("d/sub").mtime(1_300_000_000),
        file("d/sub/late", "bumps sub and d").mtime(1_400_000_000),
        file("frac", "x")
            .pax("mtime", "1500000000.123456789")
            .pax("atime", "1500000001.5"),
        file("old-atime", "x").mtime(1_600_000_000).atime(1_000),
        fifo("p").mtime(1_700_000_000),
        file("neg", "x").pax("mtime", "-5"),
    ]);
    apply(&layer, r, &native()).unwrap();
    let m = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert_eq!(m("d").mtime(), 1_000_000_000);
    assert_eq!(m("d/f").mtime(), 1_100_000_000);
    assert_eq!(m("d/s").mtime(), 1_200_000_000);
    assert_eq!(m("d/sub").mtime(), 1_300_000_000);
    assert_eq!(m("d/sub/late").mtime(), 1_400_000_000);
    assert_eq!(
        (m("frac").mtime(), m("frac").mtime_nsec()),
        (1_500_000_000, 123_456_789)
    );
    assert_eq!(
        (m("frac").atime(), m("frac").atime_nsec()),
        (1_500_000_001, 500_000_000)
    );
    // atime = max(atime, mtime)
    assert_eq!(m("old-atime").atime(), 1_600_000_000);
    assert_eq!(m("p").mtime(), 1_700_000_000);
    assert_eq!(m("neg").mtime(), 0);
}

#[test]
fn fifo_and_devices_are_created() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    apply(
        &tar(&[
            fifo("p"),
            chr("c", 1, 5),
            blk("b", 7, 0),
            chr("big", 4095, 0xfffff),
        ]),
        r,
        &native(),
    )
    .unwrap();
    let m = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert!(m("p").file_type().is_fifo());
    assert!(m("c").file_type().is_char_device());
    assert_eq!(m("c").rdev(), rustix::fs::makedev(1, 5));
    assert!(m("b").file_type().is_block_device());
    assert_eq!(m("b").rdev(), rustix::fs::makedev(7, 0));
    assert_eq!(m("big").rdev(), rustix::fs::makedev(4095, 0xfffff));
}

#[test]
fn existing_paths_are_replaced() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::write(r.join("was-file"), b"lower").unwrap();
    fs::create_dir_all(r.join("was-dir/sub")).unwrap();
    fs::write(r.join("was-dir/sub/x"), b"lower").unwrap();
    fs::create_dir(r.join("merged")).unwrap();
    fs::write(r.join("merged/lower"), b"lower").unwrap();
    fs::write(r.join("linked"), b"lower").unwrap();
    fs::hard_link(r.join("linked"), r.join("linked2")).unwrap();
    let layer = tar(&[
        dir("was-file").mode(0o750),
        file("was-file/inside", "new"),
        file("was-dir", "now a file"),
        dir("merged").mode(0o711).owner(1000, 1000),
        file("merged/upper", "new"),
        file("linked", "rewritten"),
    ]);
    apply(&layer, r, &native()).unwrap();
    assert!(r.join("was-file").is_dir());
    assert_eq!(
        fs::metadata(r.join("was-file")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(fs::read(r.join("was-dir")).unwrap(), b"now a file");
    assert!(r.join("merged/lower").exists() && r.join("merged/upper").exists());
    let mm = fs::metadata(r.join("merged")).unwrap();
    assert_eq!((mm.mode() & 0o7777, mm.uid()), (0o711, 1000));
    // Replacing breaks the hard link instead of writing through it.
    assert_eq!(fs::read(r.join("linked2")).unwrap(), b"lower");
    assert_eq!(fs::read(r.join("linked")).unwrap(), b"rewritten");
}

#[test]
fn missing_parents_copy_the_parent_layers_metadata() {
    let t = tempfile::tempdir().unwrap();
    let near = t.path().join("near");
    let far = t.path().join("far");
    let target = t.path().join("target");
    for d in [&near, &far, &target] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(near.join("a")).unwrap();
    fs::set_permissions(near.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
    rustix::fs::chown(
        near.join("a"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1001)),
    )
    .unwrap();
    fs::create_dir_all(far.join("a/b")).unwrap();
    fs::set_permissions(far.join("a/b"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(far.join("a"), fs::Permissions::from_mode(0o700)).unwrap();
    // A symlink in a parent layer is not followed: `s` gets the default.
    fs::create_dir(far.join("real")).unwrap();
    fs::set_permissions(far.join("real"), fs::Permissions::from_mode(0o701)).unwrap();
    symlink("real", near.join("s")).unwrap();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Native,
        parents: vec![near.clone(), far.clone()],
    };
    apply(
        &tar(&[file("a/b/c/f", "x"), file("s/x/f", "x")]),
        &target,
        &opts,
    )
    .unwrap();
    let m = |p: &str| fs::metadata(target.join(p)).unwrap();
    assert_eq!(
        (m("a").mode() & 0o7777, m("a").uid(), m("a").gid()),
        (0o711, 1000, 1001)
    );
    assert_eq!(m("a/b").mode() & 0o7777, 0o2750);
    assert_eq!((m("a/b/c").mode() & 0o7777, m("a/b/c").uid()), (0o755, 0));
    assert_eq!(m("s").mode() & 0o7777, 0o755);
}

#[test]
fn root_entries_are_ignored() {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    apply(
        &tar(&[
            dir("./").mode(0o700).owner(5, 5),
            dir("/").mode(0o777),
            file("./x", "x"),
        ]),
        t.path(),
        &native(),
    )
    .unwrap();
    let m = fs::metadata(t.path()).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
    assert!(t.path().join("x").exists());
}

#[test]
fn global_pax_headers_are_ignored() {
    let t = tempfile::tempdir().unwrap();
    let mut g = entry("pax_global_header", b'g');
    g.data = pax_record("comment", b"hello");
    apply(&tar(&[g, file("f", "x")]), t.path(), &native()).unwrap();
    assert_eq!(walk_names(t.path()), ["f"]);
}

#[test]
fn diff_id_covers_everything_after_the_end_blocks() {
    // More trailing bytes than any read-ahead buffer: they must still be drained and hashed.
    let mut plain = tar(&[file("f", "x")]);
    plain.resize(plain.len() + (3 << 20) + 17, 0);
    for blob in [plain.clone(), gzip(&plain), zstd(&plain)] {
        let t = tempfile::tempdir().unwrap();
        let a = apply(&blob, t.path(), &native()).unwrap();
        assert_eq!(a.diff_id, sha(&plain));
        assert_eq!(a.uncompressed_size, plain.len() as u64);
        assert_eq!(
            (a.compressed_digest, a.compressed_size),
            (sha(&blob), blob.len() as u64)
        );
    }
}

#[path = "layer_diff.rs"]
mod layer_diff;
