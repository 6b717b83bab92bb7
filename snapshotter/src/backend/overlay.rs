//! The overlay backend: each snapshot is one overlay layer.

use std::path::{Path, PathBuf};

use super::{Backend, Mount, fs, fs_dir, path_str, work_dir};
use crate::Result;
use crate::snapshot::Kind;

/// The kernel refuses more lower layers than this in one overlay mount.
pub const MAX_LOWER_DIRS: usize = 500;

/// Overlay options decided once per snapshotter (probed at open).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    /// Extra options for every overlay mount: `index=off` where the module has an index
    /// parameter (containerd does the same), and `userxattr` inside a user namespace.
    pub(crate) options: Vec<String>,
}

/// Whether this process runs in a user namespace (its uid map is not the whole identity
/// map). There overlay keeps its whiteout and opaque markers in `user.overlay.*` xattrs and
/// must be mounted with `userxattr` (Linux 5.11+), as containerd does.
pub(crate) fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| !is_identity_uid_map(&map))
}

/// Whether a `/proc/<pid>/uid_map` text maps every id to itself (the initial namespace).
fn is_identity_uid_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    matches!(lines.as_slice(), [fields] if fields.as_slice() == ["0", "0", "4294967295"])
}

impl Backend for Overlay {
    fn create(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Result<()> {
        fs::create_dir_mode(dir, 0o700)?;
        fs::create_dir_mode(&fs_dir(dir), 0o755)?;
        if kind == Kind::Active {
            fs::create_dir_mode(&work_dir(dir), 0o711)?;
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<Vec<Mount>> {
        let bind = |source: &Path, ro: bool| -> Result<Vec<Mount>> {
            Ok(vec![Mount {
                kind: "bind".into(),
                source: path_str(source)?,
                options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
            }])
        };
        match (kind, parents) {
            (Kind::Committed, _) => Ok(Vec::new()),
            (_, []) => bind(&fs_dir(dir), kind == Kind::View),
            (Kind::View, [only]) => bind(&fs_dir(only), true),
            (_, parents) => {
                if parents.len() > MAX_LOWER_DIRS {
                    return Err(crate::Error::Mount {
                        target: dir.display().to_string(),
                        reason: format!(
                            "{} parent layers: overlay stacks at most {MAX_LOWER_DIRS}; flatten the image",
                            parents.len()
                        ),
                    });
                }
                let lowers = parents
                    .iter()
                    .map(|p| path_str(&fs_dir(p)))
                    .collect::<Result<Vec<_>>>()?;
                let mut options = Vec::new();
                if kind == Kind::Active {
                    options.push(format!("workdir={}", path_str(&work_dir(dir))?));
                    options.push(format!("upperdir={}", path_str(&fs_dir(dir))?));
                }
                options.push(format!("lowerdir={}", lowers.join(":")));
                options.extend(self.options.iter().cloned());
                Ok(vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_identity_uid_map;

    #[test]
    fn identity_map_is_the_initial_namespace() {
        assert!(is_identity_uid_map("         0          0 4294967295\n"));
        assert!(!is_identity_uid_map("         0       1000          1\n"));
        assert!(!is_identity_uid_map("0 0 1000\n1000 100000 65536\n"));
        assert!(!is_identity_uid_map(""));
    }
}
