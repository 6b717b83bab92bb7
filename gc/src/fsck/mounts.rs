//! The `mounts` check: mounts under the store root, read from `/proc/self/mountinfo`. Such a
//! mount was left by a process that died while it held a snapshot mounted; it pins the
//! snapshot's files and may hide them. Also the mountinfo parser `cleanup` uses.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::ProblemKind;
use super::plan::Action;
use super::run::Run;

impl Run<'_, '_> {
    /// Mounts under the root, found in `/proc/self/mountinfo`; unmounted in reverse order
    /// (the kernel lists mounts in the order they were made, so later ones may sit on top).
    pub(super) fn check_mounts(&mut self) {
        let info = Path::new("/proc/self/mountinfo");
        let text = match fs::read(info) {
            Ok(t) => t,
            Err(e) => return self.unreadable(info, "read the mount table", &e),
        };
        let root = self.store.layout().root();
        // Mount points are absolute and canonical in the table.
        let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let points = mount_points(&text);
        let total = points.len() as u64;
        self.tick("mounts", 0, total);
        let mut stale = Vec::new();
        for point in points {
            if point != root && point.starts_with(&root) {
                stale.push(point);
            }
        }
        for point in stale.into_iter().rev() {
            let object = point.display().to_string();
            self.planned(
                ProblemKind::StaleMount,
                object,
                "mounted under the store root; no strata operation leaves a mount there".into(),
                Action::Unmount(point),
            );
        }
        self.report.checked.mounts = total;
        self.tick("mounts", total, total);
    }
}

/// Mount points (field 5) of `/proc/self/mountinfo`, octal escapes (`\040`) decoded.
pub(crate) fn mount_points(text: &[u8]) -> Vec<PathBuf> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .filter(|f| !f.is_empty())
        .map(|f| PathBuf::from(OsString::from_vec(unescape_octal(f))))
        .collect()
}

/// Decodes the `\ooo` escapes the kernel writes for space, tab, newline and backslash. A
/// backslash not followed by three octal digits of a byte value is kept as is.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        if b == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_decode_octal_escapes() {
        let table = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n\
                      37 35 0:40 / /var/lib/my\\040store/tmp/x rw - tmpfs tmpfs rw\n\
                      38 35 0:41 / /a\\134b rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(table),
            vec![
                PathBuf::from("/mnt2"),
                PathBuf::from("/var/lib/my store/tmp/x"),
                PathBuf::from("/a\\b"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_lone_backslashes() {
        assert_eq!(unescape_octal(b"a\\9b\\04"), b"a\\9b\\04".to_vec());
    }
}
