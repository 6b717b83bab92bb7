//! OCI whiteouts: recognising `.wh.` names, and the two ways of honouring them (overlay
//! markers in an upper dir, deletions in a full copy of the parent).
//!
//! Every operation here works on a directory descriptor plus one name and never follows a
//! symlink: a symlink is removed as a link, never entered.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

/// Prefix of every whiteout name.
pub(crate) const PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker.
pub(crate) const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a whiteout entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide every lower entry of the directory.
    Opaque,
    /// `.wh.<name>`: hide the lower entry `<name>` of the directory.
    Remove(&'a [u8]),
}

/// Classifies an entry's base name: `Ok(None)` for an ordinary name.
///
/// # Errors
/// A reason when the whiteout would name its own directory, its parent or nothing
/// (`.wh.`, `.wh..`, `.wh...`): such a whiteout would escape the directory or hit the root.
pub(crate) fn classify(base: &[u8]) -> Result<Option<Whiteout<'_>>, &'static str> {
    if base == OPAQUE {
        return Ok(Some(Whiteout::Opaque));
    }
    let Some(name) = base.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    match name {
        b"" => Err("whiteout names nothing"),
        b"." | b".." => Err("whiteout escapes its directory"),
        // A base name cannot contain `/` (it was split on it), so `name` is one component.
        name => Ok(Some(Whiteout::Remove(name))),
    }
}

/// Names in a directory, without `.` and `..`, collected before anything is changed.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    Ok(names)
}

fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` in `dir` and, if it is a real directory, everything below it. A symlink
/// is unlinked, never followed. A missing `name` is not an error.
///
/// Recursion depth is the depth of the tree being removed (one descriptor per level).
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // unlink(2) on a directory: EISDIR on Linux (EPERM by POSIX).
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = match open_child_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for child in list(sub.as_fd())? {
        remove_tree(sub.as_fd(), &child)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes what lies at `name` in `dir` (real path `rel`) except what this layer created:
/// `touched` holds every real path the layer wrote plus all their ancestors, so an untouched
/// path is lower content through and through and goes entirely, while a touched directory
/// is kept and its children are examined the same way. (Per OCI, a whiteout only hides
/// lower layers; entries of the same layer survive it whatever their order in the tar.)
///
/// Returns whether anything was removed.
pub(crate) fn remove_lower(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    touched: &HashSet<std::path::PathBuf>,
) -> io::Result<bool> {
    if !touched.contains(rel) {
        let exists = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => true,
            Err(Errno::NOENT) => false,
            Err(e) => return Err(e.into()),
        };
        remove_tree(dir, name)?;
        return Ok(exists);
    }
    let sub = match open_child_dir(dir, name) {
        Ok(fd) => fd,
        // Touched but not a directory: this layer's own file, kept.
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    remove_lower_children(sub.as_fd(), rel, touched)
}

/// [`remove_lower`] for every entry of the directory `dir` (real path `rel`): what an opaque
/// marker means on a plain directory.
pub(crate) fn remove_lower_children(
    dir: BorrowedFd<'_>,
    rel: &Path,
    touched: &HashSet<std::path::PathBuf>,
) -> io::Result<bool> {
    let mut removed = false;
    for child in list(dir)? {
        removed |= remove_lower(dir, &child, &rel.join(&child), touched)?;
    }
    Ok(removed)
}

/// The overlay opaque xattr name for this mount flavour.
pub(crate) fn opaque_xattr(userxattr: bool) -> &'static str {
    if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Marks the directory open as `dir` (a readable descriptor, not `O_PATH`) opaque for
/// overlayfs.
pub(crate) fn set_opaque(dir: BorrowedFd<'_>, userxattr: bool) -> io::Result<()> {
    rustix::fs::fsetxattr(dir, opaque_xattr(userxattr), b"y", XattrFlags::empty())
        .map_err(Into::into)
}

/// Creates the overlay whiteout for `name` in `dir`: a character device 0:0 owned by
/// `uid:gid`. `name` must not exist.
pub(crate) fn make_overlay_whiteout(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    rustix::fs::mknodat(
        dir,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )?;
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Whether a stat result is an overlay whiteout (character device 0:0).
pub(crate) fn is_overlay_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    #[test]
    fn classify_recognises_whiteouts() {
        assert_eq!(classify(b"file"), Ok(None));
        assert_eq!(classify(b".whatever"), Ok(None));
        assert_eq!(classify(b".wh..wh..opq"), Ok(Some(Whiteout::Opaque)));
        assert_eq!(classify(b".wh.etc"), Ok(Some(Whiteout::Remove(b"etc"))));
        assert_eq!(
            classify(b".wh..hidden"),
            Ok(Some(Whiteout::Remove(b".hidden")))
        );
    }

    #[test]
    fn classify_rejects_escaping_whiteouts() {
        assert!(classify(b".wh.").is_err());
        assert!(classify(b".wh..").is_err());
        assert!(classify(b".wh...").is_err());
    }

    fn dirfd(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn remove_tree_unlinks_symlinks_without_following() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        symlink(&outside, root.join("d/link")).unwrap();
        symlink(&outside, root.join("top")).unwrap();
        let fd = dirfd(&root);
        remove_tree(fd.as_fd(), OsStr::new("d")).unwrap();
        remove_tree(fd.as_fd(), OsStr::new("top")).unwrap();
        remove_tree(fd.as_fd(), OsStr::new("missing")).unwrap();
        assert!(outside.join("keep").exists());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn remove_lower_spares_touched_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/old"), b"lower").unwrap();
        std::fs::write(root.join("d/new"), b"this layer").unwrap();
        std::fs::write(root.join("d/sub/old"), b"lower").unwrap();
        let touched: HashSet<PathBuf> = ["d", "d/new"].iter().map(PathBuf::from).collect();
        let fd = dirfd(root);
        assert!(remove_lower(fd.as_fd(), OsStr::new("d"), Path::new("d"), &touched).unwrap());
        assert!(root.join("d/new").exists());
        assert!(!root.join("d/old").exists());
        assert!(!root.join("d/sub").exists());
    }
}
