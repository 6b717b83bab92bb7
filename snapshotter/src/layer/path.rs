//! Safe paths inside an extraction root: cleaning tar names and resolving directories
//! without ever leaving the root.
//!
//! Resolution strategy (the brief allowed `openat2(RESOLVE_IN_ROOT)` or a user-space walk; we
//! walk): every directory is reached from a file descriptor of the root, one component at a
//! time, with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`. A component that turns out to be a
//! symlink is read with `readlinkat` and its target spliced into the remaining components;
//! `..` pops one resolved directory and is a no-op at the root, and an absolute target restarts
//! at the root. These are the semantics of `RESOLVE_IN_ROOT` (and of containerd's
//! `fs.RootPath`), so a symlink can never lead outside. We walk ourselves rather than call
//! `openat2` because the applier needs, per component, (a) the *real* relative path of what it
//! resolved, to remember which paths this layer created (whiteouts must spare them), and
//! (b) a hook to create a missing parent with metadata copied from the parent layers. It also
//! works on kernels without `openat2`.
//!
//! Invariant relied on throughout: the applier is the only writer of the root while a layer
//! is applied (the caller owns the extraction directory), so what a walk observed stays true
//! until the applier itself changes it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, openat, readlinkat};
use rustix::io::Errno;

/// Longest tar name accepted, in bytes. Linux's `PATH_MAX`; containerd joins names to the
/// root and would fail on anything longer anyway. Also bounds how deep a walk can go.
pub(crate) const MAX_NAME: usize = 4096;
/// Longest single component (`NAME_MAX` on every Linux file system we target).
pub(crate) const MAX_COMPONENT: usize = 255;
/// Symlinks followed in one resolution before giving up (the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// Why a tar name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    /// A `..` component climbs above the root.
    Escapes,
    /// The name contains a NUL byte (cannot be passed to the kernel).
    Nul,
    /// The name is longer than [`MAX_NAME`].
    TooLong,
    /// A component is longer than [`MAX_COMPONENT`].
    ComponentTooLong,
}

impl NameError {
    /// A short reason for error messages.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NameError::Escapes => "path escapes the root with `..`",
            NameError::Nul => "path contains a NUL byte",
            NameError::TooLong => "path longer than 4096 bytes",
            NameError::ComponentTooLong => "path component longer than 255 bytes",
        }
    }
}

/// A tar name after cleaning: relative, components joined by single `/`, no `.`, `..` or
/// empty components. The empty name is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CleanName(Vec<u8>);

impl CleanName {
    /// Cleans a raw tar name the way Go's `filepath.Clean("/" + name)` would, except that a
    /// `..` which would climb above the root is an error rather than being dropped: leading
    /// `/` and `./` are stripped, `.` and empty components vanish, `a/..` cancels.
    ///
    /// # Errors
    /// [`NameError`] for an escaping `..`, a NUL byte or an over-long name or component.
    pub(crate) fn parse(raw: &[u8]) -> Result<CleanName, NameError> {
        if raw.contains(&0) {
            return Err(NameError::Nul);
        }
        if raw.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(NameError::Escapes);
                    }
                }
                c if c.len() > MAX_COMPONENT => return Err(NameError::ComponentTooLong),
                c => parts.push(c),
            }
        }
        Ok(CleanName(parts.join(&b'/')))
    }

    /// The cleaned bytes (`a/b/c`, empty for the root).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `(parent, base)`, or `None` for the root. `parent` is empty for a top-level entry.
    pub(crate) fn split_last(&self) -> Option<(&[u8], &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0[..]),
        })
    }
}

/// Why a directory could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// More than 40 symlinks were followed.
    Loop,
    /// A component (given as its real path under the root) exists but is neither a
    /// directory nor a symlink, or is a symlink with an empty target.
    NotDir(PathBuf),
    /// A system call failed.
    Io(io::Error),
}

impl From<Errno> for ResolveError {
    fn from(e: Errno) -> Self {
        ResolveError::Io(e.into())
    }
}

/// A directory resolved inside the root.
#[derive(Debug)]
pub(crate) struct ResolvedDir {
    /// An `O_PATH` descriptor of the directory (usable as a dirfd, not for reading).
    pub(crate) fd: OwnedFd,
    /// Its real path relative to the root: no symlinks, no `.`/`..`; empty for the root.
    pub(crate) rel: PathBuf,
}

/// Creates a missing directory during a walk: called with the parent's descriptor, the
/// name to create and the real relative path the new directory will have. It must leave a
/// directory at that name (or fail).
pub(crate) type CreateDir<'a> = dyn FnMut(BorrowedFd<'_>, &OsStr, &Path) -> io::Result<()> + 'a;

fn open_path_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Resolves the directory `name` (cleaned, possibly empty for the root) under `root`,
/// following symlinks but clamping them to the root (see the module doc).
///
/// With `create`, missing components are created through it; without, a missing component
/// gives `Ok(None)`.
///
/// Guarantees: every descriptor opened is at or below `root`; nothing is created except
/// through `create`, and only inside a directory already resolved inside the root.
///
/// # Errors
/// [`ResolveError::Loop`] after 40 symlinks, [`ResolveError::NotDir`] when a component is a
/// file, device or empty symlink, [`ResolveError::Io`] for other failures.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    name: &[u8],
    mut create: Option<&mut CreateDir<'_>>,
) -> Result<Option<ResolvedDir>, ResolveError> {
    // Resolved so far: (name, fd) per real directory below the root.
    let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
    // Still to resolve, last element next (so symlink targets can be pushed in front).
    let mut pending: Vec<Vec<u8>> = name
        .split(|b| *b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0u32;
    let rel_of = |stack: &[(OsString, OwnedFd)]| -> PathBuf {
        stack.iter().map(|(n, _)| n.as_os_str()).collect()
    };
    while let Some(comp) = pending.pop() {
        match comp.as_slice() {
            b"" | b"." => continue,
            // Clamped: popping an empty stack leaves us at the root.
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let comp = OsStr::from_bytes(&comp);
        let dir = stack.last().map_or(root, |(_, fd)| fd.as_fd());
        match open_path_dir(dir, comp) {
            Ok(fd) => stack.push((comp.to_owned(), fd)),
            Err(Errno::NOENT) => {
                let Some(create) = create.as_deref_mut() else {
                    return Ok(None);
                };
                let rel = rel_of(&stack).join(comp);
                create(dir, comp, &rel).map_err(ResolveError::Io)?;
                let fd = open_path_dir(dir, comp)?;
                stack.push((comp.to_owned(), fd));
            }
            // O_PATH|O_NOFOLLOW opens a symlink itself, so O_DIRECTORY reports ENOTDIR for
            // both symlinks and files (ELOOP is handled too, for kernels that report it).
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                let target = match readlinkat(dir, comp, Vec::new()) {
                    Ok(t) => t.into_bytes(),
                    Err(Errno::INVAL) => {
                        return Err(ResolveError::NotDir(rel_of(&stack).join(comp)));
                    }
                    Err(e) => return Err(e.into()),
                };
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Loop);
                }
                if target.is_empty() {
                    // The kernel refuses empty symlinks in a path (ENOENT); so do we.
                    return Err(ResolveError::NotDir(rel_of(&stack).join(comp)));
                }
                if target.starts_with(b"/") {
                    stack.clear();
                }
                pending.extend(target.split(|b| *b == b'/').rev().map(<[u8]>::to_vec));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let rel = rel_of(&stack);
    let fd = match stack.pop() {
        Some((_, fd)) => fd,
        None => root.try_clone_to_owned().map_err(ResolveError::Io)?,
    };
    Ok(Some(ResolvedDir { fd, rel }))
}

/// Opens the directory at the real relative path `rel` under `root` without following any
/// symlink (every component must be a real directory), with `flags` for the last one
/// (`O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC` are added).
///
/// Returns `Ok(None)` when a component is missing, a symlink or not a directory. Used where
/// a path was recorded earlier and must still name the same kind of thing, and to look into
/// parent layers, whose symlinks must not be followed either.
///
/// # Errors
/// Other system-call failures.
pub(crate) fn open_dir_nofollow(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
) -> io::Result<Option<OwnedFd>> {
    let comps: Vec<&OsStr> = rel.iter().collect();
    let Some((last, parents)) = comps.split_last() else {
        return openat(
            root,
            ".",
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(Some)
        .map_err(Into::into);
    };
    let mut cur: Option<OwnedFd> = None;
    for c in parents {
        let dir = cur.as_ref().map_or(root, AsFd::as_fd);
        match open_path_dir(dir, c) {
            Ok(fd) => cur = Some(fd),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    let dir = cur.as_ref().map_or(root, AsFd::as_fd);
    match openat(
        dir,
        *last,
        flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn clean(s: &[u8]) -> Result<String, NameError> {
        CleanName::parse(s).map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
    }

    #[test]
    fn clean_strips_leading_slash_and_dot() {
        assert_eq!(clean(b"/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(clean(b"./a/./b/").unwrap(), "a/b");
        assert_eq!(clean(b"a//b").unwrap(), "a/b");
        assert_eq!(clean(b"./").unwrap(), "");
        assert_eq!(clean(b"/").unwrap(), "");
    }

    #[test]
    fn clean_collapses_inner_dotdot() {
        assert_eq!(clean(b"a/../b").unwrap(), "b");
        assert_eq!(clean(b"a/b/../../c").unwrap(), "c");
    }

    #[test]
    fn clean_rejects_escaping_dotdot() {
        for bad in [&b"../x"[..], b"a/../../x", b"/../x", b"./..", b".."] {
            assert_eq!(CleanName::parse(bad), Err(NameError::Escapes), "{bad:?}");
        }
    }

    #[test]
    fn clean_rejects_nul_and_long_names() {
        assert_eq!(CleanName::parse(b"a\0b"), Err(NameError::Nul));
        assert_eq!(
            CleanName::parse(&[b'a'; 256]),
            Err(NameError::ComponentTooLong)
        );
        let long: Vec<u8> = b"a/".repeat(2049);
        assert_eq!(CleanName::parse(&long), Err(NameError::TooLong));
    }

    #[test]
    fn clean_keeps_non_utf8_bytes() {
        let c = CleanName::parse(b"caf\xe9/x").unwrap();
        assert_eq!(c.as_bytes(), b"caf\xe9/x");
    }

    #[test]
    fn split_last_gives_parent_and_base() {
        let c = CleanName::parse(b"a/b/c").unwrap();
        assert_eq!(c.split_last(), Some((&b"a/b"[..], &b"c"[..])));
        let c = CleanName::parse(b"top").unwrap();
        assert_eq!(c.split_last(), Some((&b""[..], &b"top"[..])));
        assert_eq!(CleanName::parse(b"/").unwrap().split_last(), None);
    }

    fn root_fd(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    fn resolve(root: &Path, name: &str) -> Result<Option<ResolvedDir>, ResolveError> {
        resolve_dir(root_fd(root).as_fd(), name.as_bytes(), None)
    }

    #[test]
    fn resolve_clamps_absolute_symlink_to_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        symlink("/etc", root.join("link")).unwrap();
        let r = resolve(&root, "link").unwrap().unwrap();
        assert_eq!(r.rel, Path::new("etc"));
    }

    #[test]
    fn resolve_clamps_dotdot_symlink_to_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir(t.path().join("outside")).unwrap();
        symlink("../../../outside", root.join("d/up")).unwrap();
        // `outside` does not exist inside the root: the walk must not find the sibling.
        assert!(resolve(&root, "d/up").unwrap().is_none());
        symlink("../..", root.join("d/top")).unwrap();
        assert_eq!(
            resolve(&root, "d/top/d").unwrap().unwrap().rel,
            Path::new("d")
        );
    }

    #[test]
    fn resolve_reports_symlink_loops() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        assert!(matches!(resolve(t.path(), "a/x"), Err(ResolveError::Loop)));
    }

    #[test]
    fn resolve_refuses_files_and_empty_links() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        match resolve(t.path(), "f/x") {
            Err(ResolveError::NotDir(p)) => assert_eq!(p, Path::new("f")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolve_creates_missing_through_the_hook_only() {
        let t = tempfile::tempdir().unwrap();
        let fd = root_fd(t.path());
        let mut made = Vec::new();
        let mut hook = |dir: BorrowedFd<'_>, name: &OsStr, rel: &Path| -> io::Result<()> {
            made.push(rel.to_owned());
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(Into::into)
        };
        let r = resolve_dir(fd.as_fd(), b"a/b", Some(&mut hook))
            .unwrap()
            .unwrap();
        assert_eq!(r.rel, Path::new("a/b"));
        assert_eq!(made, [PathBuf::from("a"), PathBuf::from("a/b")]);
        assert!(t.path().join("a/b").is_dir());
        assert!(resolve(t.path(), "missing/x").unwrap().is_none());
    }

    #[test]
    fn open_nofollow_refuses_symlinked_components() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("real/sub")).unwrap();
        symlink("real", t.path().join("link")).unwrap();
        let fd = root_fd(t.path());
        let flags = OFlags::PATH;
        assert!(
            open_dir_nofollow(fd.as_fd(), Path::new("real/sub"), flags)
                .unwrap()
                .is_some()
        );
        assert!(
            open_dir_nofollow(fd.as_fd(), Path::new("link/sub"), flags)
                .unwrap()
                .is_none()
        );
        assert!(
            open_dir_nofollow(fd.as_fd(), Path::new("link"), flags)
                .unwrap()
                .is_none()
        );
        assert!(
            open_dir_nofollow(fd.as_fd(), Path::new(""), flags)
                .unwrap()
                .is_some()
        );
    }
}
