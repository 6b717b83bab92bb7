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
    /// parameter (containerd does the same). Rootless overlay (`userxattr`) is not
    /// supported: without root, use the native snapshotter.
    pub(crate) options: Vec<String>,
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
