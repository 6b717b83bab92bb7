//! The tar applier: one streaming pass over a (compressed) layer, applying each entry into a
//! target directory by itself, never through `tar::Entry::unpack`.
//!
//! Safety model, in short:
//! - names are cleaned lexically ([`CleanName`]); a `..` that would climb above the root
//!   rejects the layer;
//! - parent directories are resolved from a descriptor of the target, component by component,
//!   with symlinks interpreted and clamped to the target ([`resolve_dir`]);
//! - the last component is only ever operated on with `*at` calls relative to that parent
//!   and never followed (`O_NOFOLLOW`, `O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`); `chmod` is skipped for symlinks and otherwise applied to what
//!   was just created or checked with `lstat` (the applier is the target's only writer);
//! - removal never follows symlinks ([`whiteout::remove_tree`]).
//!
//! So whatever the layer contains, nothing outside the target is created, modified,
//! chmod'ed, chowned or deleted.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use strata_store::Digest;
use tar::EntryType;

use super::compression::{BUF_SIZE, Classifier, Compression, LayerReader};
use super::path::{CleanName, ResolveError, ResolvedDir, open_dir_nofollow, resolve_dir};
use super::whiteout::{self, Whiteout};
use crate::{Error, Result};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Into an overlay upper dir: `.wh.<name>` => char device 0:0 named `<name>` (owner from
    /// the header); `.wh..wh..opq` => xattr `trusted.overlay.opaque=y` on the dir (or
    /// `user.overlay.opaque` when `userxattr`).
    ///
    /// In this mode `trusted.overlay.*` / `user.overlay.*` xattrs carried by the layer itself
    /// are dropped: overlayfs would interpret them (redirects, metacopy, opacity).
    Overlay {
        /// The overlay mount uses the `userxattr` option.
        userxattr: bool,
    },
    /// Onto a full copy of the parent (native snapshotter): `.wh.<name>` deletes `<name>`
    /// (recursively); `.wh..wh..opq` deletes every entry of the dir that was not created by
    /// this layer.
    Native,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are written.
    pub whiteouts: WhiteoutMode,
    /// Parent layer directories, nearest first: a directory missing from both the layer and
    /// the target is created with the mode and owner it has in the first of these that has
    /// it (looked up without following symlinks), else 0755 root:root.
    pub parents: Vec<PathBuf>,
}

/// What [`apply_layer`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar stream, including the trailing padding and zero
    /// blocks (the stream is drained to its end).
    pub diff_id: Digest,
    /// sha256 of the raw input bytes.
    pub compressed_digest: Digest,
    /// Bytes of the uncompressed stream.
    pub uncompressed_size: u64,
    /// Bytes of raw input.
    pub compressed_size: u64,
    /// The detected compression.
    pub compression: Compression,
    /// Directories the layer did not list but its entries needed, created here (relative to
    /// the target). Their metadata came from `opts.parents` when those had them; a caller
    /// that applied without parents (parallel unpack) fixes them up once the parents exist.
    pub implicit_dirs: Vec<PathBuf>,
}

/// Applies one layer (gzip, zstd or plain tar, detected by magic) into `target`, in one
/// streaming pass: the input is hashed (compressed digest) and decompressed, the
/// decompressed stream is hashed (diffID) and applied entry by entry.
///
/// Entry rules: directories are created or merged; any other existing path is removed first
/// (recursively, without following symlinks); regular files, symlinks (target stored
/// verbatim), hard links (target resolved inside `target`; a link to a symlink links the
/// symlink), character and block devices and FIFOs are created; PAX global headers are
/// ignored; entries naming the root are skipped; anything else (GNU sparse, contiguous,
/// vendor types) is refused, as containerd does. Ownership, `SCHILY.xattr.*` xattrs, mode
/// (after ownership, so set-id bits survive) and times (atime = max(atime, mtime)) come from
/// the header; directory times are applied after the whole layer. Whiteouts follow
/// `opts.whiteouts` and never hide what this same layer wrote. Nothing is fsynced.
///
/// # Errors
/// - [`Error::InvalidLayer`], naming the entry, for hostile or malformed input: a name or
///   hard-link target escaping with `..`, an escaping whiteout name (`.wh.`, `.wh..`,
///   `.wh...`), an unhandled entry type, device numbers Linux cannot represent, a bad or
///   truncated gzip/zstd stream, a truncated or malformed tar. Even then nothing outside
///   `target` was touched; what was applied inside it stays (the caller removes the
///   extraction directory).
/// - [`Error::Io`] when `input` fails or the file system refuses an operation for reasons
///   of its own (no space, permissions, read-only).
pub fn apply_layer(input: impl Read, target: &Path, opts: &ApplyOptions) -> Result<Applied> {
    let open_dir = |p: &Path, what: &'static str| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(what, p, e.into()))
    };
    let root = open_dir(target, "open extraction directory")?;
    let parents = opts
        .parents
        .iter()
        .map(|p| open_dir(p, "open parent layer"))
        .collect::<Result<Vec<_>>>()?;
    let reader = LayerReader::new(input, target)?;
    let classifier = reader.classifier();
    let budget = reader.budget();
    let mut archive = tar::Archive::new(reader);
    let mut applier = Applier {
        root,
        target,
        mode: opts.whiteouts,
        parents,
        touched: HashSet::new(),
        implicit: Vec::new(),
        dir_times: Vec::new(),
        cache: None,
        buf: vec![0; BUF_SIZE],
        classifier,
    };
    {
        let mut entries = archive
            .entries()
            .map_err(|e| applier.classifier.classify(e, "reading the layer", target))?;
        loop {
            let next = {
                let _limit = budget.limit();
                entries.next()
            };
            match next {
                None => break,
                Some(Ok(mut entry)) => applier.entry(&mut entry)?,
                Some(Err(e)) => {
                    return Err(applier
                        .classifier
                        .classify(e, "reading a tar header", target));
                }
            }
        }
    }
    applier.finish_dirs()?;
    let implicit_dirs = std::mem::take(&mut applier.implicit);
    let m = archive.into_inner().finish(target)?;
    Ok(Applied {
        diff_id: m.diff_id,
        compressed_digest: m.compressed_digest,
        uncompressed_size: m.uncompressed_size,
        compressed_size: m.compressed_size,
        compression: m.compression,
        implicit_dirs,
    })
}

/// Linux device numbers: 12-bit major, 20-bit minor (what `mknod` can encode).
const MAX_MAJOR: u64 = 0xfff;
const MAX_MINOR: u64 = 0xf_ffff;
/// Times after this (Go's `time.Unix(0, 1<<63-1)`, year 2262) are clamped to the epoch,
/// like negative ones (containerd's `boundTime`).
const MAX_SECS: i64 = 9_223_372_036;

/// What an entry creates.
#[derive(Debug)]
enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    /// Type and (major, minor), within Linux's limits.
    Device(FileType, u32, u32),
    Fifo,
}

/// Ownership, mode, times and xattrs from a header.
#[derive(Debug)]
struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits incl. set-id and sticky (`& 0o7777`).
    mode: u32,
    times: Timestamps,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// The state of one apply: the target, what this layer wrote, deferred directory times.
struct Applier<'a> {
    root: OwnedFd,
    target: &'a Path,
    mode: WhiteoutMode,
    parents: Vec<OwnedFd>,
    /// Real relative paths this layer wrote, and all their ancestors (so "has something of
    /// this layer below it" is one lookup).
    touched: HashSet<PathBuf>,
    /// Directories created because entries needed them (see [`Applied::implicit_dirs`]).
    implicit: Vec<PathBuf>,
    /// Directory times, applied once the layer is done (creating children bumps mtime).
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// The last resolved parent, keyed by its cleaned name: consecutive entries of a tar
    /// usually share it. Dropped whenever anything is removed, since a removal (or a
    /// replacement) can change what a name resolves to; additions cannot.
    cache: Option<(Vec<u8>, Rc<ResolvedDir>)>,
    buf: Vec<u8>,
    classifier: Classifier,
}

/// A printable form of a raw name for messages (lossy, at most 200 characters).
fn show(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

fn invalid(shown: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_layer(format!("entry {shown:?}: {why}"))
}

fn uid(raw: u32) -> Uid {
    Uid::from_raw(raw)
}

fn gid(raw: u32) -> Gid {
    Gid::from_raw(raw)
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Parses a tar numeric field (octal text, or GNU base-256 when the high bit is set).
/// `None` for garbage or negative base-256 values.
fn numeric_field(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None; // negative
        }
        let mut v = u64::from(first & 0x3f);
        for &b in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&text).ok()?;
    u64::from_str_radix(s, 8).ok()
}

/// Parses a PAX time (`[-]secs[.frac]`), clamped like containerd: negative or beyond
/// year 2262 => the epoch. `None` when malformed.
fn pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let epoch = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if neg {
        return Some(epoch);
    }
    let Ok(secs) = secs.parse::<i64>() else {
        return Some(epoch); // too many digits: out of range
    };
    if secs > MAX_SECS {
        return Some(epoch);
    }
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    })
}

fn secs(t: u64) -> Timespec {
    match i64::try_from(t) {
        Ok(s) if s <= MAX_SECS => Timespec {
            tv_sec: s,
            tv_nsec: 0,
        },
        _ => Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    }
}

impl Meta {
    fn read<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
        mode: WhiteoutMode,
    ) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| invalid(shown, format!("bad {what} field: {e}"));
        // uid/gid PAX records were already folded into the header by the tar crate.
        let id = |v: u64, what: &str| -> Result<u32> {
            // u32::MAX is chown's "leave unchanged" (-1): not a real owner.
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| invalid(shown, format!("{what} {v} out of range")))
        };
        let uid = id(h.uid().map_err(|e| bad("uid", e))?, "uid")?;
        let gid = id(h.gid().map_err(|e| bad("gid", e))?, "gid")?;
        let perm = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut mtime = secs(h.mtime().map_err(|e| bad("mtime", e))?);
        let mut atime = h
            .as_gnu()
            .and_then(|g| g.atime().ok())
            .filter(|t| *t != 0)
            .map(secs);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX", e))? {
            for rec in pax {
                let rec = rec.map_err(|e| invalid(shown, format!("malformed PAX record: {e}")))?;
                let key = rec.key_bytes();
                let value = rec.value_bytes();
                let time = || {
                    pax_time(value).ok_or_else(|| {
                        invalid(shown, format!("malformed PAX time {:?}", show(value)))
                    })
                };
                if key == b"mtime" {
                    mtime = time()?;
                } else if key == b"atime" {
                    atime = Some(time()?);
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() || name.contains(&0) {
                        return Err(invalid(shown, "malformed xattr name"));
                    }
                    let overlay_owned =
                        name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.");
                    if overlay_owned && matches!(mode, WhiteoutMode::Overlay { .. }) {
                        tracing::debug!(entry = shown, xattr = %show(name), "overlay xattr dropped");
                        continue;
                    }
                    xattrs.push((OsString::from_vec(name.to_vec()), value.to_vec()));
                }
            }
        }
        let last_access = match atime {
            Some(a) if (a.tv_sec, a.tv_nsec) > (mtime.tv_sec, mtime.tv_nsec) => a,
            _ => mtime,
        };
        Ok(Meta {
            uid,
            gid,
            mode: perm,
            times: Timestamps {
                last_access,
                last_modification: mtime,
            },
            xattrs,
        })
    }
}

impl Kind {
    fn of<R: Read>(entry: &tar::Entry<'_, R>, raw_name: &[u8], shown: &str) -> Result<Kind> {
        let h = entry.header();
        let link = || -> Result<Vec<u8>> {
            let l = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            if l.is_empty() {
                return Err(invalid(shown, "link with an empty target"));
            }
            if l.contains(&0) {
                return Err(invalid(shown, "link target contains a NUL byte"));
            }
            Ok(l)
        };
        let device = |ft: FileType| -> Result<Kind> {
            // Read the raw fields: the tar crate truncates base-256 values to u32.
            // dev_major/dev_minor sit at the same offsets in ustar and GNU headers.
            if h.as_ustar().is_none() && h.as_gnu().is_none() {
                return Err(invalid(
                    shown,
                    "device entry in a pre-POSIX header (no numbers)",
                ));
            }
            let b = h.as_bytes();
            let major = b.get(329..337).and_then(numeric_field);
            let minor = b.get(337..345).and_then(numeric_field);
            let fits = |v: Option<u64>, max: u64| {
                v.filter(|v| *v <= max).and_then(|v| u32::try_from(v).ok())
            };
            match (fits(major, MAX_MAJOR), fits(minor, MAX_MINOR)) {
                (Some(ma), Some(mi)) => Ok(Kind::Device(ft, ma, mi)),
                _ => Err(invalid(shown, "device number out of range")),
            }
        };
        Ok(match h.entry_type() {
            // A pre-POSIX regular entry whose name ends in `/` is a directory (as Go reads it).
            EntryType::Regular if h.as_bytes()[156] == 0 && raw_name.ends_with(b"/") => Kind::Dir,
            EntryType::Regular => Kind::File,
            // GNU sparse ('S') falls through to "unhandled", as in containerd (Go's reader
            // keeps the 'S' type flag); OCI layer writers never produce it, and honouring it
            // would let a tiny entry declare an exabyte of holes.
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(link()?),
            EntryType::Link => Kind::Hardlink(link()?),
            EntryType::Char => device(FileType::CharacterDevice)?,
            EntryType::Block => device(FileType::BlockDevice)?,
            EntryType::Fifo => Kind::Fifo,
            other => {
                return Err(invalid(
                    shown,
                    format!("unhandled tar entry type {:?}", char::from(other.as_byte())),
                ));
            }
        })
    }
}

/// Creates a missing parent directory: mode and owner from the first parent layer that has
/// it, else 0755 root:root. Never follows symlinks in the parent layers.
fn make_parent(
    parents: &[OwnedFd],
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> io::Result<()> {
    let mut found = None;
    for p in parents {
        if let Some(fd) = open_dir_nofollow(p.as_fd(), rel, OFlags::PATH)? {
            let st = rustix::fs::fstat(&fd)?;
            found = Some((st.st_mode & 0o7777, st.st_uid, st.st_gid));
            break;
        }
    }
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mode = match found {
        Some((mode, u, g)) => {
            rustix::fs::fchown(&fd, Some(uid(u)), Some(gid(g)))?;
            mode
        }
        None => 0o755,
    };
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// `/proc/self/fd/<dir>/<name>`: a path for the few calls without an `*at` form
/// (`lsetxattr`). The magic link resolves to exactly the directory we hold; `name` itself is
/// not followed by the `l*` call.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    PathBuf::from(OsString::from_vec(p))
}

impl Applier<'_> {
    /// Maps a system-call failure while applying an entry: failures caused by what the layer
    /// asks for are [`Error::InvalidLayer`]; the rest (space, permissions, ...) [`Error::Io`].
    fn fail(&self, shown: &str, op: &'static str, rel: &Path, e: impl Into<io::Error>) -> Error {
        let e: io::Error = e.into();
        match Errno::from_io_error(&e) {
            Some(
                Errno::NAMETOOLONG
                | Errno::EXIST
                | Errno::NOTDIR
                | Errno::ISDIR
                | Errno::LOOP
                | Errno::MLINK
                | Errno::NOENT,
            ) => invalid(shown, format!("{op}: {e}")),
            _ => Error::io(op, self.target.join(rel), e),
        }
    }

    fn resolve_error(&self, shown: &str, e: ResolveError) -> Error {
        match e {
            ResolveError::Loop => invalid(shown, "too many levels of symbolic links"),
            ResolveError::NotDir(p) => invalid(
                shown,
                format!("parent {:?} is not a directory", p.display()),
            ),
            ResolveError::Io(e) => self.fail(shown, "resolve parent directory", Path::new(""), e),
        }
    }

    /// Records `rel` and its ancestors as written by this layer. Stops at the first
    /// ancestor already present: its own ancestors are then present too.
    fn touch(&mut self, rel: &Path) {
        let mut cur = Some(rel);
        while let Some(p) = cur {
            if !self.touched.insert(p.to_path_buf()) {
                break;
            }
            cur = p.parent();
        }
    }

    /// Resolves (creating what is missing) the parent directory of an entry.
    fn parent_dir(&mut self, parent: &[u8], shown: &str) -> Result<Rc<ResolvedDir>> {
        if let Some((key, dir)) = &self.cache
            && key == parent
        {
            return Ok(Rc::clone(dir));
        }
        let parents = &self.parents;
        let mut created = Vec::new();
        let mut hook = |dir: BorrowedFd<'_>, name: &OsStr, rel: &Path| -> io::Result<()> {
            make_parent(parents, dir, name, rel)?;
            created.push(rel.to_path_buf());
            Ok(())
        };
        let resolved = resolve_dir(self.root.as_fd(), parent, Some(&mut hook));
        for c in created {
            self.touch(&c);
            self.implicit.push(c);
        }
        let dir = match resolved {
            Ok(Some(d)) => Rc::new(d),
            // Unreachable with a creating hook, but never panic on it.
            Ok(None) => return Err(invalid(shown, "parent directory vanished")),
            Err(e) => return Err(self.resolve_error(shown, e)),
        };
        self.cache = Some((parent.to_vec(), Rc::clone(&dir)));
        Ok(dir)
    }

    /// Applies one entry. On return the entry's data has been consumed entirely.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = show(&raw);
        if entry.header().entry_type().is_pax_global_extensions() {
            return self.drain(entry, 0, &shown);
        }
        let name = CleanName::parse(&raw).map_err(|e| invalid(&shown, e.reason()))?;
        let meta = Meta::read(entry, &shown, self.mode)?;
        let Some((parent, base)) = name.split_last() else {
            tracing::debug!(entry = shown, "entry resolves to the root: ignored");
            return self.drain(entry, 0, &shown);
        };
        if let Some(wh) = whiteout::classify(base).map_err(|why| invalid(&shown, why))? {
            self.whiteout(parent, wh, &meta, &shown)?;
            return self.drain(entry, 0, &shown);
        }
        let kind = Kind::of(entry, &raw, &shown)?;
        let dir = self.parent_dir(parent, &shown)?;
        let base = OsStr::from_bytes(base);
        let rel = dir.rel.join(base);
        let existing = match rustix::fs::statat(&dir.fd, base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(self.fail(&shown, "lstat", &rel, e)),
        };
        let mut merge_dir = false;
        let mut replaced_whiteout = false;
        if let Some(st) = &existing {
            if matches!(kind, Kind::Dir) && is_dir(st) {
                merge_dir = true;
            } else {
                replaced_whiteout = whiteout::is_overlay_whiteout(st);
                whiteout::remove_tree(dir.fd.as_fd(), base)
                    .map_err(|e| self.fail(&shown, "remove existing path", &rel, e))?;
                self.cache = None;
            }
        }
        let consumed = match kind {
            Kind::Dir => {
                self.make_dir(
                    &dir,
                    base,
                    &rel,
                    &name,
                    &meta,
                    merge_dir,
                    replaced_whiteout,
                    &shown,
                )?;
                0
            }
            Kind::File => self.write_file(entry, &dir, base, &rel, &meta, &shown)?,
            Kind::Symlink(target) => {
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir.fd, base)
                    .map_err(|e| self.fail(&shown, "symlink", &rel, e))?;
                self.set_meta_at(dir.fd.as_fd(), base, &rel, &meta, FileType::Symlink, &shown)?;
                0
            }
            Kind::Hardlink(target) => {
                self.hardlink(&dir, base, &rel, &target, &meta, &shown)?;
                0
            }
            Kind::Device(ft, major, minor) => {
                let dev = rustix::fs::makedev(major, minor);
                rustix::fs::mknodat(&dir.fd, base, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| self.fail(&shown, "mknod", &rel, e))?;
                self.set_meta_at(dir.fd.as_fd(), base, &rel, &meta, ft, &shown)?;
                0
            }
            Kind::Fifo => {
                rustix::fs::mknodat(&dir.fd, base, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| self.fail(&shown, "mkfifo", &rel, e))?;
                self.set_meta_at(dir.fd.as_fd(), base, &rel, &meta, FileType::Fifo, &shown)?;
                0
            }
        };
        self.touch(&rel);
        self.drain(entry, consumed, &shown)
    }

    /// Reads what is left of an entry's data (non-files may carry some), checking that the
    /// stream really held the declared size.
    fn drain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        consumed: u64,
        shown: &str,
    ) -> Result<()> {
        let mut total = consumed;
        loop {
            match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self.classifier.classify(
                        e,
                        &format!("reading entry {shown:?}"),
                        self.target,
                    ));
                }
            }
        }
        if total < entry.size() {
            return Err(invalid(
                shown,
                format!(
                    "unexpected end of layer ({total} of {} bytes)",
                    entry.size()
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_dir(
        &mut self,
        dir: &ResolvedDir,
        base: &OsStr,
        rel: &Path,
        name: &CleanName,
        meta: &Meta,
        merge: bool,
        replaced_whiteout: bool,
        shown: &str,
    ) -> Result<()> {
        if !merge {
            // 0700 until the header's mode is applied below (after chown).
            rustix::fs::mkdirat(&dir.fd, base, Mode::from_raw_mode(0o700))
                .map_err(|e| self.fail(shown, "mkdir", rel, e))?;
        }
        let fd = rustix::fs::openat(
            &dir.fd,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail(shown, "open directory", rel, e))?;
        if replaced_whiteout && let WhiteoutMode::Overlay { userxattr } = self.mode {
            // The layer deleted this path and recreated it as a directory: in an upper dir
            // the lower directory would otherwise show through.
            whiteout::set_opaque(fd.as_fd(), userxattr)
                .map_err(|e| self.fail(shown, "set opaque xattr", rel, e))?;
        }
        self.set_meta_fd(fd.as_fd(), rel, meta, false, shown)?;
        self.dir_times.push((rel.to_path_buf(), meta.times.clone()));
        // The next entries are most likely inside this directory.
        self.cache = Some((
            name.as_bytes().to_vec(),
            Rc::new(ResolvedDir {
                fd,
                rel: rel.to_path_buf(),
            }),
        ));
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &ResolvedDir,
        base: &OsStr,
        rel: &Path,
        meta: &Meta,
        shown: &str,
    ) -> Result<u64> {
        // O_EXCL|O_NOFOLLOW: whatever was there was removed; never write through a link.
        let fd = rustix::fs::openat(
            &dir.fd,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.fail(shown, "create file", rel, e))?;
        let mut file = File::from(fd);
        let mut total = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(self.classifier.classify(
                        e,
                        &format!("reading entry {shown:?}"),
                        self.target,
                    ));
                }
            };
            let chunk = self.buf.get(..n).unwrap_or_default();
            file.write_all(chunk)
                .map_err(|e| Error::io("write file", self.target.join(rel), e))?;
            total += n as u64;
        }
        if total < entry.size() {
            let why = if self.classifier.at_eof() {
                "unexpected end of layer"
            } else {
                "short entry data"
            };
            return Err(invalid(
                shown,
                format!("{why} ({total} of {} bytes)", entry.size()),
            ));
        }
        self.set_meta_fd(file.as_fd(), rel, meta, true, shown)?;
        Ok(total)
    }

    fn hardlink(
        &mut self,
        dir: &ResolvedDir,
        base: &OsStr,
        rel: &Path,
        target: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<()> {
        let tshown = show(target);
        let tname = CleanName::parse(target).map_err(|e| {
            invalid(
                shown,
                format!("hard link target {tshown:?}: {}", e.reason()),
            )
        })?;
        let Some((tparent, tbase)) = tname.split_last() else {
            return Err(invalid(shown, "hard link to the root"));
        };
        let missing = || invalid(shown, format!("hard link target {tshown:?} does not exist"));
        // The target's parent is resolved like any parent (symlinks clamped to the root) but
        // nothing is created for it; its last component is not followed by linkat.
        let tdir = match resolve_dir(self.root.as_fd(), tparent, None) {
            Ok(Some(d)) => d,
            Ok(None) | Err(ResolveError::NotDir(_)) => return Err(missing()),
            Err(e) => return Err(self.resolve_error(shown, e)),
        };
        let tbase = OsStr::from_bytes(tbase);
        match rustix::fs::linkat(&tdir.fd, tbase, &dir.fd, base, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(Errno::PERM) => {
                return Err(invalid(
                    shown,
                    format!("hard link target {tshown:?} is a directory"),
                ));
            }
            Err(e) => return Err(self.fail(shown, "link", rel, e)),
        }
        let st = rustix::fs::statat(&dir.fd, base, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(shown, "lstat", rel, e))?;
        self.set_meta_at(
            dir.fd.as_fd(),
            base,
            rel,
            meta,
            FileType::from_raw_mode(st.st_mode),
            shown,
        )
    }

    fn whiteout(
        &mut self,
        parent: &[u8],
        wh: Whiteout<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<()> {
        match self.mode {
            WhiteoutMode::Native => {
                // A whiteout creates nothing: a parent that does not resolve to a directory
                // inside the root has nothing to hide.
                let dir = match resolve_dir(self.root.as_fd(), parent, None) {
                    Ok(Some(d)) => d,
                    Ok(None) | Err(ResolveError::NotDir(_)) => return Ok(()),
                    Err(e) => return Err(self.resolve_error(shown, e)),
                };
                let removed = match wh {
                    Whiteout::Opaque => {
                        whiteout::remove_lower_children(dir.fd.as_fd(), &dir.rel, &self.touched)
                    }
                    Whiteout::Remove(n) => {
                        let n = OsStr::from_bytes(n);
                        whiteout::remove_lower(dir.fd.as_fd(), n, &dir.rel.join(n), &self.touched)
                    }
                }
                .map_err(|e| self.fail(shown, "apply whiteout", &dir.rel, e))?;
                if removed {
                    self.cache = None;
                }
            }
            WhiteoutMode::Overlay { userxattr } => {
                let dir = self.parent_dir(parent, shown)?;
                self.touch(&dir.rel);
                let opaque = |fd: BorrowedFd<'_>, name: &str| -> io::Result<()> {
                    let d = rustix::fs::openat(
                        fd,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    whiteout::set_opaque(d.as_fd(), userxattr)
                };
                match wh {
                    Whiteout::Opaque => opaque(dir.fd.as_fd(), ".")
                        .map_err(|e| self.fail(shown, "set opaque xattr", &dir.rel, e))?,
                    Whiteout::Remove(n) => {
                        let n = OsStr::from_bytes(n);
                        let rel = dir.rel.join(n);
                        let existing =
                            match rustix::fs::statat(&dir.fd, n, AtFlags::SYMLINK_NOFOLLOW) {
                                Ok(st) => Some(st),
                                Err(Errno::NOENT) => None,
                                Err(e) => return Err(self.fail(shown, "lstat", &rel, e)),
                            };
                        match existing {
                            // This layer's own entry survives its whiteout; a directory of
                            // this layer must still hide the lower one's children.
                            Some(st) if self.touched.contains(&rel) => {
                                if is_dir(&st) {
                                    let d = rustix::fs::openat(
                                        &dir.fd,
                                        n,
                                        OFlags::RDONLY
                                            | OFlags::DIRECTORY
                                            | OFlags::NOFOLLOW
                                            | OFlags::CLOEXEC,
                                        Mode::empty(),
                                    )
                                    .map_err(|e| self.fail(shown, "open directory", &rel, e))?;
                                    whiteout::set_opaque(d.as_fd(), userxattr).map_err(|e| {
                                        self.fail(shown, "set opaque xattr", &rel, e)
                                    })?;
                                }
                            }
                            found => {
                                if found.is_some() {
                                    whiteout::remove_tree(dir.fd.as_fd(), n).map_err(|e| {
                                        self.fail(shown, "remove existing path", &rel, e)
                                    })?;
                                    self.cache = None;
                                }
                                whiteout::make_overlay_whiteout(
                                    dir.fd.as_fd(),
                                    n,
                                    meta.uid,
                                    meta.gid,
                                )
                                .map_err(|e| self.fail(shown, "mknod whiteout", &rel, e))?;
                            }
                        }
                        self.touch(&rel);
                    }
                }
            }
        }
        Ok(())
    }

    /// chown, xattrs, chmod (after chown: it clears set-id bits) and, unless deferred,
    /// times, on a descriptor of a regular file or directory this entry created or merged.
    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        rel: &Path,
        meta: &Meta,
        times: bool,
        shown: &str,
    ) -> Result<()> {
        rustix::fs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))
            .map_err(|e| self.fail(shown, "chown", rel, e))?;
        for (k, v) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, k.as_os_str(), v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::OPNOTSUPP) => {}
                Err(e) => return Err(self.fail(shown, "setxattr", rel, e)),
            }
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.fail(shown, "chmod", rel, e))?;
        if times {
            rustix::fs::futimens(fd, &meta.times)
                .map_err(|e| self.fail(shown, "set times", rel, e))?;
        }
        Ok(())
    }

    /// The same for what has no useful descriptor (symlinks, devices, FIFOs, hard links),
    /// by name in `dir`, never following `name`: `ft` is what `name` is (created just now or
    /// checked with lstat), and chmod is skipped for symlinks (Linux has no lchmod; chmod
    /// would follow the link).
    fn set_meta_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        meta: &Meta,
        ft: FileType,
        shown: &str,
    ) -> Result<()> {
        rustix::fs::chownat(
            dir,
            name,
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail(shown, "lchown", rel, e))?;
        if !meta.xattrs.is_empty() {
            let path = proc_path(dir, name);
            for (k, v) in &meta.xattrs {
                match rustix::fs::lsetxattr(&path, k.as_os_str(), v, XattrFlags::empty()) {
                    Ok(()) | Err(Errno::OPNOTSUPP) => {}
                    // The kernel refuses user.* xattrs on anything but files and directories.
                    Err(Errno::PERM) if k.as_bytes().starts_with(b"user.") => {}
                    Err(e) => return Err(self.fail(shown, "lsetxattr", rel, e)),
                }
            }
        }
        if ft != FileType::Symlink {
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| self.fail(shown, "chmod", rel, e))?;
        }
        rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(shown, "set times", rel, e))?;
        Ok(())
    }

    /// Applies the recorded directory times, last entry last. A directory that a later
    /// entry replaced or removed (or that now sits behind a symlink) is skipped.
    fn finish_dirs(&mut self) -> Result<()> {
        for (rel, times) in std::mem::take(&mut self.dir_times) {
            let shown = rel.display().to_string();
            let fd = open_dir_nofollow(self.root.as_fd(), &rel, OFlags::RDONLY)
                .map_err(|e| self.fail(&shown, "open directory", &rel, e))?;
            if let Some(fd) = fd {
                rustix::fs::futimens(&fd, &times)
                    .map_err(|e| self.fail(&shown, "set directory times", &rel, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_octal_and_base256() {
        assert_eq!(numeric_field(b"0000012\0"), Some(0o12));
        assert_eq!(numeric_field(b"     7 \0"), Some(7));
        assert_eq!(numeric_field(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(numeric_field(&[0x80, 0, 0, 0, 1, 0, 0, 0]), Some(1 << 24));
        assert_eq!(numeric_field(&[0xff; 8]), None);
        assert_eq!(numeric_field(b"9\0"), None);
    }

    #[test]
    fn pax_times_parse_and_clamp() {
        let t = pax_time(b"1700000000.123456789123").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = pax_time(b"5.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (5, 500_000_000));
        assert_eq!(pax_time(b"-3.5").unwrap().tv_sec, 0);
        assert_eq!(pax_time(b"99999999999999999999999").unwrap().tv_sec, 0);
        assert!(pax_time(b"abc").is_none());
        assert!(pax_time(b"").is_none());
    }

    #[test]
    fn show_truncates_and_is_lossy() {
        assert_eq!(show(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(show(&[b'x'; 300]).chars().count(), 201);
    }
}
