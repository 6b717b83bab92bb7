//! Mounting and unmounting the mount lists snapshots return.
//!
//! Overlay mounts whose options fit in the kernel's one-page `mount(2)` data are made with
//! `mount(2)`. Longer chains (the 4096-byte page holds roughly 60 to 120 lower dirs, which is
//! where containerd stops) go through the new mount API, passing one `lowerdir+` per layer
//! (Linux 6.8+), so the only limit left is the kernel's 500 lower layers.

use std::ffi::CString;
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use super::Mount;
use crate::{Error, Result};

/// Largest `mount(2)` data the kernel accepts: one page, including the terminating NUL.
const MOUNT_DATA_MAX: usize = 4095;

fn mount_err(target: &Path, what: &str, e: rustix::io::Errno) -> Error {
    Error::Mount {
        target: target.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// Mounts `mounts` on `target`, in order (the lists strata returns hold one mount).
///
/// # Errors
/// [`Error::Mount`] naming the target and the failing step; an unknown mount type.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        match m.kind.as_str() {
            "bind" => mount_bind(m, target)?,
            "overlay" => mount_overlay(m, target)?,
            other => {
                return Err(Error::Mount {
                    target: target.display().to_string(),
                    reason: format!("unsupported mount type {other:?}"),
                });
            }
        }
    }
    Ok(())
}

/// Unmounts `target` (lazily if it is busy, so a caller never leaves it behind).
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => rustix::mount::unmount(target, UnmountFlags::DETACH)
            .map_err(|e| mount_err(target, "lazy unmount", e)),
        Err(e) => Err(mount_err(target, "unmount", e)),
    }
}

fn mount_bind(m: &Mount, target: &Path) -> Result<()> {
    let source = Path::new(&m.source);
    if m.options.iter().any(|o| o == "rbind") {
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        rustix::mount::mount_bind(source, target)
    }
    .map_err(|e| mount_err(target, &format!("bind {}", m.source), e))?;
    if m.options.iter().any(|o| o == "ro") {
        // A bind mount takes the read-only flag only on a remount.
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(|e| mount_err(target, "remount read-only", e))?;
    }
    Ok(())
}

fn mount_overlay(m: &Mount, target: &Path) -> Result<()> {
    let data = m.options.join(",");
    if data.len() <= MOUNT_DATA_MAX {
        let data = CString::new(data)
            .map_err(|_| mount_err(target, "overlay options", rustix::io::Errno::INVAL))?;
        return rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| mount_err(target, "mount overlay", e));
    }
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| mount_err(target, "fsopen overlay", e))?;
    for option in &m.options {
        match option.split_once('=') {
            Some(("lowerdir", lowers)) => {
                for lower in lowers.split(':') {
                    rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower).map_err(|e| {
                        mount_err(target, &format!("lowerdir+ {lower} (needs Linux 6.8)"), e)
                    })?;
                }
            }
            Some((key, value)) => rustix::mount::fsconfig_set_string(&fs, key, value)
                .map_err(|e| mount_err(target, key, e))?,
            None => rustix::mount::fsconfig_set_flag(&fs, option.as_str())
                .map_err(|e| mount_err(target, option, e))?,
        }
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| mount_err(target, "create overlay", e))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| mount_err(target, "fsmount", e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| mount_err(target, "move_mount", e))
}

/// The shell command that makes the same mount, for people (`gcctl snapshots mounts`).
pub fn shell_command(m: &Mount, target: &Path) -> String {
    let quote = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+".contains(c))
        {
            s.to_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let target = target.display().to_string();
    if m.kind == "bind" {
        let ro = m.options.iter().any(|o| o == "ro");
        let mut cmd = format!("mount --rbind {} {}", quote(&m.source), quote(&target));
        if ro {
            cmd.push_str(&format!(" && mount -o remount,bind,ro {}", quote(&target)));
        }
        cmd
    } else {
        format!(
            "mount -t {} {} -o {} {}",
            m.kind,
            quote(&m.source),
            quote(&m.options.join(",")),
            quote(&target)
        )
    }
}
