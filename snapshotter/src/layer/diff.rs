//! Layer diffs: a snapshot's changes written as an OCI layer tar (containerd's `WriteDiff`),
//! compressed as asked, in one pass that hashes both streams.
//!
//! Two sources of changes:
//! - an **overlay upper dir** holds exactly the changes: every entry in it is emitted, a
//!   whiteout (char device 0:0) becomes `.wh.<name>` when it hides something in the lower
//!   dirs, an opaque directory is followed by `<dir>/.wh..wh..opq` when it hides a lower
//!   directory;
//! - **two full trees** (native snapshotter) are compared with a double walk and
//!   containerd's change rules ([`Trees::same`]).
//!
//! Both walks visit a directory, then its children sorted by their bytes, depth first: that is
//! path order with `/` sorting before any other byte. They feed one [`ChangeWriter`], which
//! follows containerd's `ChangeWriter`: deleted paths become empty `.wh.<base>` files dated
//! 1970; the parents of every emitted entry are emitted first, once, with their current
//! metadata; the first emitted path of a hard-linked inode carries the data and later ones
//! are hard links to it (unchanged paths sharing the inode of a changed one are re-emitted as
//! links right after it); sockets are skipped. Headers are PAX/ustar with numeric owners only,
//! whole-second mtimes (capped at `SOURCE_DATE_EPOCH` when given), no atime/ctime, and
//! xattrs as `SCHILY.xattr.*` records; gzip has no name and mtime 0, so equal changes give
//! byte-identical blobs.
//!
//! Safety, as in the applier: each tree is opened once and every directory below is reached
//! from that descriptor one component at a time with `O_NOFOLLOW`; entries are examined with
//! `AT_SYMLINK_NOFOLLOW`, read with `O_NOFOLLOW` (and checked to be the inode that was
//! stat'ed), and their xattrs read with `l*xattr` through `/proc/self/fd/<dir>/<name>`. A
//! symlink is recorded as a link and never followed, so nothing outside the trees is read.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_store::digest::Hasher;
use strata_store::{Algorithm, Digest};
use tar::{EntryType, Header};

use super::compression::{BUF_SIZE, Compression};
use super::path::open_dir_nofollow;
use super::whiteout::{self, OPAQUE, PREFIX};
use crate::{Error, Result};

/// Where the changes come from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// An overlay upper dir holds exactly the changes: whiteouts are 0:0 char devices, opaque
    /// dirs carry `trusted.overlay.opaque=y` (or `user.overlay.opaque` when `userxattr`).
    /// Valid because strata never mounts with redirect_dir/metacopy (an upper using them is
    /// refused). `lowers` (nearest first) tell whether a path existed below, so that a
    /// whiteout or opaque marker is only emitted when it hides something.
    OverlayUpper {
        /// The upper dir.
        upper: &'a Path,
        /// The lower dirs, nearest first (overlay layers: their whiteouts and opaque dirs
        /// are honoured when looking below).
        lowers: &'a [PathBuf],
        /// The overlay mount used `userxattr` (`user.overlay.*` instead of
        /// `trusted.overlay.*`).
        userxattr: bool,
    },
    /// Two full trees (native snapshotter: the parent's copy and the active copy): a double
    /// walk in path order finds added, modified and deleted paths with containerd's change
    /// rules.
    Trees {
        /// The parent's tree.
        lower: &'a Path,
        /// The changed tree.
        upper: &'a Path,
    },
}

/// Options of [`write_diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// The compression of the written blob: gzip (default level), zstd (level 3) or none.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: entry mtimes later than this (in seconds) are set to it.
    pub source_date_epoch: Option<i64>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            compression: Compression::Gzip,
            source_date_epoch: None,
        }
    }
}

/// What [`write_diff`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diffed {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the (compressed) bytes written.
    pub digest: Digest,
    /// Bytes written.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// No changes at all: the tar holds only its end blocks.
    pub empty: bool,
}

/// Writes the changes of `source` as a tar (compressed as `opts` asks) to `out`, in one
/// pass, hashing both the tar stream (diffID) and the bytes written (digest). `out` is
/// written through a buffer and flushed at the end; nothing is synced.
///
/// The trees must not change while they are diffed (the snapshot is not mounted elsewhere,
/// or is quiescent): a file whose size changes under the walk fails the diff.
///
/// # Errors
/// [`Error::Io`] naming the path: a tree cannot be read, a file changed while being read,
/// an overlay upper uses redirects or metacopy (`Unsupported`), or `out` fails (named by
/// the upper dir).
pub fn write_diff(source: DiffSource<'_>, opts: &DiffOptions, out: impl Write) -> Result<Diffed> {
    let upper = match source {
        DiffSource::OverlayUpper { upper, .. } | DiffSource::Trees { upper, .. } => upper,
    };
    let overlay = match source {
        DiffSource::OverlayUpper { userxattr, .. } => Some(userxattr),
        DiffSource::Trees { .. } => None,
    };
    let upper_fd = open_root(upper)?;
    let sink = Sink::new(out, opts.compression).map_err(|e| Error::io("write layer", upper, e))?;
    let mut w = ChangeWriter {
        root: upper_fd
            .try_clone()
            .map_err(|e| Error::io("dup", upper, e))?,
        root_path: upper,
        overlay,
        sink,
        epoch: opts.source_date_epoch,
        added_dirs: HashSet::new(),
        inode_src: HashMap::new(),
        inode_refs: HashMap::new(),
        entries: 0,
        buf: vec![0; COPY_BUF],
    };
    match source {
        DiffSource::OverlayUpper {
            upper,
            lowers,
            userxattr,
        } => {
            let lowers = lowers
                .iter()
                .map(|p| Ok((open_root(p)?, p.as_path())))
                .collect::<Result<Vec<_>>>()?;
            let walk = Upper {
                upper,
                lowers,
                userxattr,
            };
            walk.walk(&mut w, upper_fd.as_fd(), b"", false)?;
        }
        DiffSource::Trees { lower, upper } => {
            let lower_fd = open_root(lower)?;
            let mut walk = Trees {
                lower,
                upper,
                buf_a: vec![0; COPY_BUF],
                buf_b: vec![0; COPY_BUF],
            };
            walk.walk(&mut w, Some(lower_fd.as_fd()), upper_fd.as_fd(), b"")?;
        }
    }
    let empty = w.entries == 0;
    let root_path = w.root_path;
    let m = w
        .sink
        .finish()
        .map_err(|e| Error::io("write layer", root_path, e))?;
    Ok(Diffed {
        diff_id: m.diff_id,
        digest: m.digest,
        size: m.size,
        uncompressed_size: m.uncompressed_size,
        empty,
    })
}

/// Chunk size for reading and comparing file contents.
const COPY_BUF: usize = 256 << 10;
/// Longest name or link target the ustar fields hold; longer ones go to PAX records.
const NAME_FIELD: usize = 100;
/// Largest uid/gid an 8-byte octal field holds (beyond: PAX record + base-256 field).
const MAX_OCTAL_ID: u64 = 0o7_777_777;
/// Largest size a 12-byte octal field holds.
const MAX_OCTAL_SIZE: u64 = 0o77_777_777_777;
/// The tar end: two zero blocks.
const END_BLOCKS: [u8; 1024] = [0; 1024];

// ---------------------------------------------------------------------------------------
// Output: tar stream -> (hash) -> encoder -> (hash) -> buffered out
// ---------------------------------------------------------------------------------------

/// Hashes and counts what is written through it.
struct Tap<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for Tap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn tap<W>(inner: W) -> Tap<W> {
    Tap {
        inner,
        hasher: Algorithm::Sha256.hasher(),
        count: 0,
    }
}

/// The compressor.
enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

/// zstd level for layers (containerd's default).
const ZSTD_LEVEL: i32 = 3;

/// The whole output chain.
struct Sink<W: Write> {
    tar: Tap<Encoder<Tap<BufWriter<W>>>>,
}

/// What [`Sink::finish`] measured.
struct Measured {
    diff_id: Digest,
    uncompressed_size: u64,
    digest: Digest,
    size: u64,
}

impl<W: Write> Sink<W> {
    fn new(out: W, compression: Compression) -> io::Result<Sink<W>> {
        let raw = tap(BufWriter::with_capacity(BUF_SIZE, out));
        let enc = match compression {
            Compression::None => Encoder::Plain(raw),
            // No name, mtime 0: the gzip header depends on nothing but the level.
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(raw, flate2::Compression::default()),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(raw, ZSTD_LEVEL)?),
        };
        Ok(Sink { tar: tap(enc) })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.tar.write_all(data)
    }

    /// Zero bytes up to the next 512-byte block.
    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.tar.count % 512) as usize;
        if rem != 0 {
            self.tar
                .write_all(END_BLOCKS.get(..512 - rem).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Writes the end blocks, finishes the compressor and flushes `out`.
    fn finish(mut self) -> io::Result<Measured> {
        self.tar.write_all(&END_BLOCKS)?;
        let Tap {
            inner,
            hasher,
            count,
        } = self.tar;
        let mut raw = inner.finish()?;
        raw.flush()?;
        Ok(Measured {
            diff_id: hasher.finish(),
            uncompressed_size: count,
            digest: raw.hasher.finish(),
            size: raw.count,
        })
    }
}

// ---------------------------------------------------------------------------------------
// File-system helpers
// ---------------------------------------------------------------------------------------

/// The stat fields the diff uses, in fixed widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: u64,
}

impl Meta {
    // The widths of `struct stat` fields differ between architectures.
    #[allow(clippy::useless_conversion)]
    fn of(st: &Stat) -> Meta {
        Meta {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
            nlink: u64::from(st.st_nlink),
            mode: u32::from(st.st_mode),
            uid: u32::from(st.st_uid),
            gid: u32::from(st.st_gid),
            rdev: u64::from(st.st_rdev),
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: i64::from(st.st_mtime),
            mtime_nsec: u64::from(st.st_mtime_nsec),
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// An overlay whiteout: a character device 0:0.
    fn is_whiteout(&self) -> bool {
        self.file_type() == FileType::CharacterDevice && self.rdev == 0
    }
}

fn open_root(p: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", p, e.into()))
}

fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Meta> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| Meta::of(&st))
        .map_err(Into::into)
}

/// An `O_PATH` descriptor of the real directory `name` in `dir` (never a symlink).
fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// Opens the regular file `name` in `dir` for reading, never following a symlink nor
/// blocking on a FIFO, and checks it is the inode `meta` describes.
fn open_file(dir: BorrowedFd<'_>, name: &OsStr, meta: &Meta) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = Meta::of(&rustix::fs::fstat(&fd)?);
    if (now.dev, now.ino) != (meta.dev, meta.ino) || now.file_type() != FileType::RegularFile {
        return Err(io::Error::other("file replaced while being diffed"));
    }
    Ok(File::from(fd))
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(buf.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Names in a directory sorted by their bytes (so a depth-first walk is in path order with
/// `/` first).
fn sorted_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = whiteout::list(dir)?;
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `rel/name` (`name` alone at the root).
fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    v.extend_from_slice(rel);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// `root/rel`, for error messages.
fn full(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// `(parent, base)` of a relative path (`parent` empty at the top level).
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (
            rel.get(..i).unwrap_or_default(),
            rel.get(i + 1..).unwrap_or_default(),
        ),
        None => (&[], rel),
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path for the xattr calls, which have no `*at` form. The
/// magic link resolves to exactly the directory held; `name` is not followed by `l*` calls.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    PathBuf::from(OsString::from_vec(p))
}

/// Extended attributes carried into layers, sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether an xattr is carried: `user.*`, `security.capability` and `trusted.*`, except
/// overlayfs' own (`trusted.overlay.*`, `user.overlay.*`), which describe the upper dir
/// rather than the file.
fn carried(name: &[u8]) -> bool {
    if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
        return false;
    }
    name.starts_with(b"user.") || name.starts_with(b"trusted.") || name == b"security.capability"
}

/// What an entry's xattrs say.
#[derive(Debug, Default)]
struct Attrs {
    carried: Xattrs,
    /// Overlay source: the directory is opaque.
    opaque: bool,
    /// Overlay source: an xattr of a feature the diff cannot represent (redirect, metacopy).
    unsupported: Option<String>,
}

fn list_xattrs(path: &Path) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(0) | Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // Grew between the two calls: ask again.
            Err(Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::RANGE.into())
}

/// One xattr's value; `None` when it is gone.
fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    for _ in 0..8 {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(Errno::NODATA | Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) => return Ok(None),
            Err(Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::RANGE.into())
}

fn overlay_prefix(userxattr: bool) -> &'static [u8] {
    if userxattr {
        b"user.overlay."
    } else {
        b"trusted.overlay."
    }
}

/// Reads the xattrs of `name` in `dir` without following it. `overlay` is `Some(userxattr)`
/// for an overlay upper dir, whose overlay xattrs are interpreted.
fn read_attrs(dir: BorrowedFd<'_>, name: &OsStr, overlay: Option<bool>) -> io::Result<Attrs> {
    let path = proc_path(dir, name);
    let list = list_xattrs(&path)?;
    let mut attrs = Attrs::default();
    for key in list.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key_os = OsStr::from_bytes(key);
        if let Some(userxattr) = overlay
            && let Some(feature) = key.strip_prefix(overlay_prefix(userxattr))
        {
            match feature {
                b"opaque" => {
                    attrs.opaque = get_xattr(&path, key_os)?.as_deref() == Some(b"y");
                }
                b"redirect" | b"metacopy" => {
                    attrs.unsupported = Some(String::from_utf8_lossy(key).into_owned());
                }
                _ => {}
            }
            continue;
        }
        if !carried(key) {
            continue;
        }
        if let Some(value) = get_xattr(&path, key_os)? {
            attrs.carried.push((key.to_vec(), value));
        }
    }
    attrs.carried.sort();
    Ok(attrs)
}

/// Whether the directory `name` in `dir` carries the overlay opaque xattr.
fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr, userxattr: bool) -> io::Result<bool> {
    let value = get_xattr(
        &proc_path(dir, name),
        OsStr::new(whiteout::opaque_xattr(userxattr)),
    )?;
    Ok(value.as_deref() == Some(b"y"))
}

// ---------------------------------------------------------------------------------------
// The change writer
// ---------------------------------------------------------------------------------------

/// One entry of the source tree, as examined by a walk.
struct Node {
    meta: Meta,
    attrs: Attrs,
}

/// Whether a walk found the entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Added or modified: emitted.
    Changed,
    /// Unchanged, but hard-linked: remembered, so that it is emitted as a link if another
    /// path of its inode is emitted.
    Unmodified,
}

/// The header fields of one member besides name, type, link and size.
struct Fields {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    dev: (u32, u32),
}

impl Fields {
    /// What whiteouts and PAX headers carry: all zero (mtime 1970-01-01).
    fn zero() -> Fields {
        Fields {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            dev: (0, 0),
        }
    }
}

/// Writes changes as tar members, containerd's `ChangeWriter` rules (see the module doc).
struct ChangeWriter<'a, W: Write> {
    /// The upper tree (an `O_PATH` descriptor): parents and file data are read from it.
    root: OwnedFd,
    root_path: &'a Path,
    /// `Some(userxattr)` for an overlay upper.
    overlay: Option<bool>,
    sink: Sink<W>,
    epoch: Option<i64>,
    /// Directories emitted so far (relative, no trailing `/`).
    added_dirs: HashSet<Vec<u8>>,
    /// The tar name that carries each emitted hard-linked inode's data.
    inode_src: HashMap<(u64, u64), Vec<u8>>,
    /// Unchanged tar names per hard-linked inode not emitted yet.
    inode_refs: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Members written (PAX headers not counted).
    entries: u64,
    buf: Vec<u8>,
}

impl<W: Write> ChangeWriter<'_, W> {
    fn out_err(&self, e: io::Error) -> Error {
        Error::io("write layer", self.root_path, e)
    }

    fn fields(&self, m: &Meta) -> Fields {
        let mut secs = m.mtime;
        if let Some(epoch) = self.epoch
            && secs > epoch
        {
            secs = epoch;
        }
        let ft = m.file_type();
        let dev = if ft == FileType::CharacterDevice || ft == FileType::BlockDevice {
            (rustix::fs::major(m.rdev), rustix::fs::minor(m.rdev))
        } else {
            (0, 0)
        };
        Fields {
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            // Before 1970 cannot be written in the octal field: the epoch (as the applier
            // reads negative times).
            mtime: u64::try_from(secs).unwrap_or(0),
            dev,
        }
    }

    /// Writes one member's header (preceded by a PAX header when needed). The caller
    /// writes `size` bytes of data and the padding.
    fn header(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        f: &Fields,
        size: u64,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if name.len() > NAME_FIELD {
            records.push((b"path".to_vec(), name.to_vec()));
        }
        if link.len() > NAME_FIELD {
            records.push((b"linkpath".to_vec(), link.to_vec()));
        }
        if u64::from(f.uid) > MAX_OCTAL_ID {
            records.push((b"uid".to_vec(), f.uid.to_string().into_bytes()));
        }
        if u64::from(f.gid) > MAX_OCTAL_ID {
            records.push((b"gid".to_vec(), f.gid.to_string().into_bytes()));
        }
        if size > MAX_OCTAL_SIZE {
            records.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            records.push((key, v.clone()));
        }
        if !records.is_empty() {
            records.sort();
            let mut data = Vec::new();
            for (k, v) in &records {
                pax_record(&mut data, k, v);
            }
            let (_, base) = split_last(name.strip_suffix(b"/").unwrap_or(name));
            let mut pax_name = b"PaxHeaders.0/".to_vec();
            pax_name.extend_from_slice(base);
            let mut h = ustar(&pax_name, b"", &Fields::zero()).map_err(|e| self.out_err(e))?;
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_entry_type(EntryType::XHeader);
            h.set_cksum();
            self.sink
                .write_all(h.as_bytes())
                .and_then(|()| self.sink.write_all(&data))
                .and_then(|()| self.sink.pad())
                .map_err(|e| self.out_err(e))?;
        }
        let mut h = ustar(name, link, f).map_err(|e| self.out_err(e))?;
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_cksum();
        self.sink
            .write_all(h.as_bytes())
            .map_err(|e| self.out_err(e))?;
        self.entries += 1;
        Ok(())
    }

    /// An empty regular file dated 1970 named `name`: a whiteout or opaque marker.
    fn marker(&mut self, name: &[u8]) -> Result<()> {
        self.header(name, EntryType::Regular, b"", &Fields::zero(), 0, &[])
    }

    /// A deleted path: `.wh.<base>` in its parent (a deleted directory gets just this one).
    fn delete(&mut self, rel: &[u8]) -> Result<()> {
        self.include_parents(rel)?;
        let (parent, base) = split_last(rel);
        let mut wh = PREFIX.to_vec();
        wh.extend_from_slice(base);
        self.marker(&join(parent, &wh))
    }

    /// The opaque marker of the directory `rel`, just emitted.
    fn opaque(&mut self, rel: &[u8]) -> Result<()> {
        self.include_parents(&join(rel, OPAQUE))?;
        self.marker(&join(rel, OPAQUE))
    }

    /// Emits the not yet emitted ancestors of `rel`, outermost first, with their current
    /// metadata from the upper tree.
    fn include_parents(&mut self, rel: &[u8]) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = rel;
        while let Some(i) = cur.iter().rposition(|b| *b == b'/') {
            cur = cur.get(..i).unwrap_or_default();
            if self.added_dirs.contains(cur) {
                break;
            }
            missing.push(cur.to_vec());
        }
        for dir in missing.into_iter().rev() {
            let (parent, base) = split_last(&dir);
            let path = full(self.root_path, &dir);
            let pfd = open_dir_nofollow(
                self.root.as_fd(),
                Path::new(OsStr::from_bytes(parent)),
                OFlags::PATH,
            )
            .map_err(|e| Error::io("open directory", &path, e))?
            .ok_or_else(|| {
                Error::io(
                    "open directory",
                    &path,
                    io::Error::new(io::ErrorKind::NotFound, "parent directory vanished"),
                )
            })?;
            let base = OsStr::from_bytes(base);
            let meta = stat_at(pfd.as_fd(), base).map_err(|e| Error::io("lstat", &path, e))?;
            if !meta.is_dir() {
                return Err(Error::io(
                    "lstat",
                    &path,
                    io::Error::from(io::ErrorKind::NotADirectory),
                ));
            }
            let attrs = read_attrs(pfd.as_fd(), base, self.overlay)
                .map_err(|e| Error::io("read xattrs", &path, e))?;
            let mut name = dir.clone();
            name.push(b'/');
            let f = self.fields(&meta);
            self.header(&name, EntryType::Directory, b"", &f, 0, &attrs.carried)?;
            self.added_dirs.insert(dir);
        }
        Ok(())
    }

    /// Emits (or, for an unchanged hard link, remembers) the entry `name` of `dir`, whose
    /// relative path is `rel`.
    fn change(
        &mut self,
        change: Change,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
        node: &Node,
    ) -> Result<()> {
        let meta = &node.meta;
        let kind = match meta.file_type() {
            FileType::Directory => EntryType::Directory,
            FileType::RegularFile => EntryType::Regular,
            FileType::Symlink => EntryType::Symlink,
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            FileType::Fifo => EntryType::Fifo,
            // Sockets belong to a running process, not to an image.
            FileType::Socket | FileType::Unknown => return Ok(()),
        };
        let is_dir = kind == EntryType::Directory;
        if is_dir && self.added_dirs.contains(rel) {
            return Ok(());
        }
        let mut tar_name = rel.to_vec();
        if is_dir {
            tar_name.push(b'/');
        }
        let fields = self.fields(meta);
        let xattrs = &node.attrs.carried;
        let mut later_links = Vec::new();
        if !is_dir && meta.nlink > 1 {
            let key = (meta.dev, meta.ino);
            if let Some(src) = self.inode_src.get(&key) {
                let src = src.clone();
                self.include_parents(rel)?;
                return self.header(&tar_name, EntryType::Link, &src, &fields, 0, xattrs);
            }
            if change == Change::Unmodified {
                self.inode_refs.entry(key).or_default().push(tar_name);
                return Ok(());
            }
            self.inode_src.insert(key, tar_name.clone());
            later_links = self.inode_refs.remove(&key).unwrap_or_default();
        } else if change == Change::Unmodified {
            return Ok(());
        }
        let path = || full(self.root_path, rel);
        let link = if kind == EntryType::Symlink {
            rustix::fs::readlinkat(dir, name, Vec::new())
                .map_err(|e| Error::io("readlink", path(), e.into()))?
                .into_bytes()
        } else {
            Vec::new()
        };
        let (file, size) = if kind == EntryType::Regular && meta.size > 0 {
            let f = open_file(dir, name, meta).map_err(|e| Error::io("open", path(), e))?;
            (Some(f), meta.size)
        } else {
            (None, 0)
        };
        self.include_parents(rel)?;
        self.header(&tar_name, kind, &link, &fields, size, xattrs)?;
        if let Some(f) = file {
            self.copy_data(f, size, rel)?;
        }
        if is_dir {
            self.added_dirs.insert(rel.to_vec());
        }
        for l in later_links {
            self.include_parents(&l)?;
            self.header(&l, EntryType::Link, &tar_name, &fields, 0, xattrs)?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `f` and pads the member.
    fn copy_data(&mut self, mut f: File, size: u64, rel: &[u8]) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match f.read(chunk) {
                Ok(0) => {
                    return Err(Error::io(
                        "read file",
                        full(self.root_path, rel),
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "file shrank while being diffed ({} of {size} bytes)",
                                size - left
                            ),
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read file", full(self.root_path, rel), e)),
            };
            self.sink
                .write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| Error::io("write layer", self.root_path, e))?;
            left -= n as u64;
        }
        // The header promised `size` bytes: a file that grew meanwhile fails the diff rather
        // than being cut silently.
        let mut probe = [0u8; 1];
        loop {
            match f.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(Error::io(
                        "read file",
                        full(self.root_path, rel),
                        io::Error::other(format!(
                            "file grew while being diffed (beyond {size} bytes)"
                        )),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read file", full(self.root_path, rel), e)),
            }
        }
        self.sink.pad().map_err(|e| self.out_err(e))
    }
}

/// Appends the PAX record `"<len> <key>=<value>\n"` (`<len>` counts itself).
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    loop {
        let total = rest + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A ustar header with `name` and `link` (cut to the 100-byte fields; the full values are
/// in PAX records then) and `f`; no user or group names.
fn ustar(name: &[u8], link: &[u8], f: &Fields) -> io::Result<Header> {
    let mut h = Header::new_ustar();
    if let Some(u) = h.as_ustar_mut() {
        for (dst, src) in u.name.iter_mut().zip(name) {
            *dst = *src;
        }
        for (dst, src) in u.linkname.iter_mut().zip(link) {
            *dst = *src;
        }
    }
    h.set_mode(f.mode);
    h.set_uid(u64::from(f.uid));
    h.set_gid(u64::from(f.gid));
    h.set_mtime(f.mtime);
    // ustar has both fields (so these cannot fail); Linux numbers fit their 7 octal digits.
    h.set_device_major(f.dev.0)?;
    h.set_device_minor(f.dev.1)?;
    Ok(h)
}

// ---------------------------------------------------------------------------------------
// Overlay upper walk
// ---------------------------------------------------------------------------------------

/// Walks an overlay upper dir.
struct Upper<'a> {
    upper: &'a Path,
    lowers: Vec<(OwnedFd, &'a Path)>,
    userxattr: bool,
}

impl Upper<'_> {
    /// Emits the entries of the upper directory `dir` (relative path `rel`). `hidden`: an
    /// ancestor (or `dir`) is opaque, so nothing below shows through and whiteouts hide
    /// nothing.
    fn walk<W: Write>(
        &self,
        w: &mut ChangeWriter<'_, W>,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        hidden: bool,
    ) -> Result<()> {
        let names =
            sorted_names(dir).map_err(|e| Error::io("read directory", full(self.upper, rel), e))?;
        for name in names {
            let child = join(rel, name.as_bytes());
            let path = || full(self.upper, &child);
            let meta = match stat_at(dir, &name) {
                Ok(m) => m,
                // Removed under us: nothing to emit.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("lstat", path(), e)),
            };
            if meta.is_whiteout() {
                if !hidden && self.below(&child)?.is_some() {
                    w.delete(&child)?;
                }
                continue;
            }
            let attrs = read_attrs(dir, &name, Some(self.userxattr))
                .map_err(|e| Error::io("read xattrs", path(), e))?;
            if let Some(x) = &attrs.unsupported {
                return Err(Error::io(
                    "diff overlay upper",
                    path(),
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "{x} is set: uppers using redirect_dir or metacopy cannot be diffed"
                        ),
                    ),
                ));
            }
            let opaque = meta.is_dir() && attrs.opaque;
            let node = Node { meta, attrs };
            w.change(Change::Changed, dir, &name, &child, &node)?;
            if meta.is_dir() {
                if opaque && !hidden && self.below(&child)?.is_some_and(|m| m.is_dir()) {
                    w.opaque(&child)?;
                }
                let sub =
                    open_subdir(dir, &name).map_err(|e| Error::io("open directory", path(), e))?;
                self.walk(w, sub.as_fd(), &child, hidden || opaque)?;
            }
        }
        Ok(())
    }

    /// What the lower dirs show at `rel` (never a whiteout): the nearest lower that has it,
    /// unless a whiteout, a non-directory or an opaque directory in a nearer lower hides it.
    fn below(&self, rel: &[u8]) -> Result<Option<Meta>> {
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        let Some((last, parents)) = comps.split_last() else {
            return Ok(None);
        };
        'lowers: for (root, root_path) in &self.lowers {
            let err = |op, e| Error::io(op, full(root_path, rel), e);
            let mut cur: Option<OwnedFd> = None;
            // An ancestor in this lower is opaque: the lowers below it show nothing here.
            let mut last_lower = false;
            for c in parents {
                let dir = cur.as_ref().map_or(root.as_fd(), AsFd::as_fd);
                let c = OsStr::from_bytes(c);
                match stat_at(dir, c) {
                    Ok(m) if m.is_dir() => {}
                    // A whiteout, file or symlink hides everything below it.
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if last_lower {
                            return Ok(None);
                        }
                        continue 'lowers;
                    }
                    Err(e) => return Err(err("lstat", e)),
                }
                if is_opaque(dir, c, self.userxattr).map_err(|e| err("read xattrs", e))? {
                    last_lower = true;
                }
                cur = Some(open_subdir(dir, c).map_err(|e| err("open directory", e))?);
            }
            let dir = cur.as_ref().map_or(root.as_fd(), AsFd::as_fd);
            match stat_at(dir, OsStr::from_bytes(last)) {
                Ok(m) if m.is_whiteout() => return Ok(None),
                Ok(m) => return Ok(Some(m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if last_lower {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(err("lstat", e)),
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Two-tree walk
// ---------------------------------------------------------------------------------------

/// Compares two full trees.
struct Trees<'a> {
    lower: &'a Path,
    upper: &'a Path,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
}

impl Trees<'_> {
    /// Emits the differences between the lower directory `lower` (absent: everything is
    /// added) and the upper directory `upper`, both at `rel`.
    fn walk<W: Write>(
        &mut self,
        w: &mut ChangeWriter<'_, W>,
        lower: Option<BorrowedFd<'_>>,
        upper: BorrowedFd<'_>,
        rel: &[u8],
    ) -> Result<()> {
        let lnames = match lower {
            Some(fd) => sorted_names(fd)
                .map_err(|e| Error::io("read directory", full(self.lower, rel), e))?,
            None => Vec::new(),
        };
        let unames = sorted_names(upper)
            .map_err(|e| Error::io("read directory", full(self.upper, rel), e))?;
        let (mut li, mut ui) = (lnames.into_iter().peekable(), unames.into_iter().peekable());
        loop {
            let order = match (li.peek(), ui.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(l), Some(u)) => l.as_bytes().cmp(u.as_bytes()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some(l) = li.next() {
                        w.delete(&join(rel, l.as_bytes()))?;
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some(u) = ui.next() {
                        self.entry(w, None, upper, &u, rel)?;
                    }
                }
                std::cmp::Ordering::Equal => {
                    li.next();
                    if let (Some(u), Some(l)) = (ui.next(), lower) {
                        self.entry(w, Some(l), upper, &u, rel)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One upper entry `name` of the directory at `rel`, with the lower directory when the
    /// lower has the same name.
    fn entry<W: Write>(
        &mut self,
        w: &mut ChangeWriter<'_, W>,
        lower: Option<BorrowedFd<'_>>,
        upper: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<()> {
        let child = join(rel, name.as_bytes());
        let upath = || full(self.upper, &child);
        let umeta = stat_at(upper, name).map_err(|e| Error::io("lstat", upath(), e))?;
        let attrs =
            read_attrs(upper, name, None).map_err(|e| Error::io("read xattrs", upath(), e))?;
        let node = Node { meta: umeta, attrs };
        let lmeta = match lower {
            Some(l) => Some(
                stat_at(l, name).map_err(|e| Error::io("lstat", full(self.lower, &child), e))?,
            ),
            None => None,
        };
        let change = match (lower, lmeta) {
            (Some(l), Some(lm)) if lm.is_dir() == umeta.is_dir() => {
                if self.same(l, upper, name, &child, &lm, &node)? {
                    Change::Unmodified
                } else {
                    Change::Changed
                }
            }
            // Added, or a directory replaced by a non-directory or the reverse.
            _ => Change::Changed,
        };
        w.change(change, upper, name, &child, &node)?;
        if umeta.is_dir() {
            let usub =
                open_subdir(upper, name).map_err(|e| Error::io("open directory", upath(), e))?;
            // A lower non-directory has no children; a lower directory replaced by a
            // non-directory hides its children without whiteouts (not walked at all).
            let lsub = match (lower, lmeta) {
                (Some(l), Some(lm)) if lm.is_dir() => Some(
                    open_subdir(l, name)
                        .map_err(|e| Error::io("open directory", full(self.lower, &child), e))?,
                ),
                _ => None,
            };
            self.walk(w, lsub.as_ref().map(AsFd::as_fd), usub.as_fd(), &child)?;
        }
        Ok(())
    }

    /// containerd's change rules: the same inode is unchanged; different owner, mode
    /// (type included), device number or carried xattrs is modified; for non-directories a
    /// different size or mtime second is modified; when both mtimes have no nanoseconds
    /// (possibly truncated by a copy), contents decide (targets for symlinks, empty files
    /// are equal); different nanoseconds are modified.
    fn same(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
        lm: &Meta,
        un: &Node,
    ) -> Result<bool> {
        let um = &un.meta;
        if (lm.dev, lm.ino) == (um.dev, um.ino) {
            return Ok(true);
        }
        if (lm.uid, lm.gid, lm.mode, lm.rdev) != (um.uid, um.gid, um.mode, um.rdev) {
            return Ok(false);
        }
        if !lm.is_dir() {
            if lm.size != um.size || lm.mtime != um.mtime {
                return Ok(false);
            }
            if lm.mtime_nsec != um.mtime_nsec {
                return Ok(false);
            }
        }
        let lattrs = read_attrs(lower, name, None)
            .map_err(|e| Error::io("read xattrs", full(self.lower, rel), e))?;
        if lattrs.carried != un.attrs.carried {
            return Ok(false);
        }
        if lm.is_dir() || lm.mtime_nsec != 0 {
            return Ok(true);
        }
        match um.file_type() {
            FileType::Symlink => {
                let read = |dir: BorrowedFd<'_>, root: &Path| {
                    rustix::fs::readlinkat(dir, name, Vec::new())
                        .map_err(|e| Error::io("readlink", full(root, rel), e.into()))
                };
                Ok(read(lower, self.lower)? == read(upper, self.upper)?)
            }
            FileType::RegularFile if um.size > 0 => {
                self.same_content(lower, upper, name, rel, lm, um)
            }
            _ => Ok(true),
        }
    }

    fn same_content(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
        lm: &Meta,
        um: &Meta,
    ) -> Result<bool> {
        let lpath = || full(self.lower, rel);
        let upath = || full(self.upper, rel);
        let mut a = open_file(lower, name, lm).map_err(|e| Error::io("open", lpath(), e))?;
        let mut b = open_file(upper, name, um).map_err(|e| Error::io("open", upath(), e))?;
        loop {
            let n = read_full(&mut a, &mut self.buf_a)
                .map_err(|e| Error::io("read file", lpath(), e))?;
            let m = read_full(&mut b, &mut self.buf_b)
                .map_err(|e| Error::io("read file", upath(), e))?;
            if n != m || self.buf_a.get(..n) != self.buf_b.get(..m) {
                return Ok(false);
            }
            if n < self.buf_a.len() {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        let v = vec![b'x'; 95];
        pax_record(&mut out, b"path", &v);
        // 4 + 95 + 3 = 102 plus the 3 digits of 105.
        assert!(out.starts_with(b"105 path="));
        assert_eq!(out.len(), 105);
    }

    #[test]
    fn carried_xattrs() {
        assert!(carried(b"user.foo"));
        assert!(carried(b"security.capability"));
        assert!(carried(b"trusted.foo"));
        assert!(!carried(b"trusted.overlay.opaque"));
        assert!(!carried(b"user.overlay.opaque"));
        assert!(!carried(b"security.selinux"));
        assert!(!carried(b"system.posix_acl_access"));
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
    }
}
