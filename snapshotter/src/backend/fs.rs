//! Every file-system operation of the snapshot backends: directories, durable renames,
//! `syncfs`, full-tree copies (native) and disk usage. Errors name their path.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};

use crate::snapshot::Usage;
use crate::{Error, Result};

/// Creates one directory with `mode` (the parent must exist).
pub(crate) fn create_dir_mode(dir: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    // The umask may have cleared bits the snapshot needs (0755 roots).
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", dir, e))
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Flushes the whole filesystem holding `path`: one `syncfs` makes a whole unpacked layer
/// durable, far cheaper than an fsync per file.
pub(crate) fn sync_filesystem(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("syncfs", path, e.into()))
}

/// Renames `from` to `to` and syncs `to`'s directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
    match to.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Removes a tree; a missing one is fine.
pub fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// Disk used under `dir`: allocated bytes and inodes, each hard-linked inode counted once.
pub fn disk_usage(dir: &Path) -> Result<Usage> {
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            usage.size += meta.blocks() * 512;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| Error::io("read directory", &path, e))? {
                stack.push(
                    entry
                        .map_err(|e| Error::io("read directory", &path, e))?
                        .path(),
                );
            }
        }
    }
    Ok(usage)
}

/// Copies the tree `from` to the new path `to`, keeping types, modes, owners, times, xattrs
/// and hard links (files go through `copy_file_range`, so reflinks where the filesystem can).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_entry(from, to, &mut links)
}

fn copy_entry(
    from: &Path,
    to: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io("stat", from, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        create_dir_mode(to, 0o700)?;
        for entry in fs::read_dir(from).map_err(|e| Error::io("read directory", from, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", from, e))?;
            copy_entry(&entry.path(), &to.join(entry.file_name()), links)?;
        }
    } else {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return fs::hard_link(first, to).map_err(|e| Error::io("link", to, e));
            }
            links.insert(key, to.to_owned());
        }
        if ft.is_file() {
            fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(from).map_err(|e| Error::io("readlink", from, e))?;
            std::os::unix::fs::symlink(&target, to).map_err(|e| Error::io("symlink", to, e))?;
        } else {
            let file_type = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else if ft.is_fifo() {
                FileType::Fifo
            } else {
                // Sockets belong to a running process, not to an image.
                return Ok(());
            };
            rustix::fs::mknodat(
                CWD,
                to,
                file_type,
                Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| Error::io("mknod", to, e.into()))?;
        }
    }
    copy_metadata(from, to, &meta)
}

/// Gives the directory `target/rel` the owner, mode, xattrs and times that `rel` has in the
/// first of `layers` (nearest first) where every component of `rel` is a real directory, never
/// following a symlink there. Returns whether a layer had it.
pub(crate) fn copy_dir_metadata(
    layers: &[std::path::PathBuf],
    rel: &Path,
    target: &Path,
) -> Result<bool> {
    'layers: for layer in layers {
        let mut path = layer.clone();
        for component in rel.components() {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'layers,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue 'layers,
                Err(e) => return Err(Error::io("stat", &path, e)),
            }
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        copy_metadata(&path, &target.join(rel), &meta)?;
        return Ok(true);
    }
    Ok(false)
}

/// Owner, xattrs, mode (after the owner, so set-id bits survive) and times, never following a
/// symlink.
fn copy_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    rustix::fs::chownat(
        CWD,
        to,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("chown", to, e.into()))?;
    copy_xattrs(from, to)?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", to, e))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("set times", to, e.into()))
}

/// Copies extended attributes; attributes this filesystem or caller may not set (some
/// `security.*`, `trusted.*` without privilege) are skipped, as containerd does.
fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let size = match rustix::fs::llistxattr_query(from) {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(Error::io("list xattrs", from, e.into())),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(from, &mut names[..])
        .map_err(|e| Error::io("list xattrs", from, e.into()))?;
    for name in names
        .get(..n)
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or_default());
        if name.is_empty() {
            continue;
        }
        let len = match rustix::fs::lgetxattr_query(from, name) {
            Ok(len) => len,
            Err(_) => continue,
        };
        let mut value = vec![0u8; len];
        let Ok(got) = rustix::fs::lgetxattr(from, name, &mut value[..]) else {
            continue;
        };
        match rustix::fs::lsetxattr(
            to,
            name,
            value.get(..got).unwrap_or_default(),
            XattrFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => {}
            Err(e) => return Err(Error::io("set xattr", to, e.into())),
        }
    }
    Ok(())
}
