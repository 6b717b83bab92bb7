//! The shipped sample image, unpacked by containerd 1.6 (overlayfs) and by strata (overlay and
//! native), gives the same root filesystem entry by entry: types, modes, owners, contents,
//! links, xattrs, devices and mtimes (`scripts/compare-with-containerd.sh`).
//!
//! Needs root and containerd (scripts/install-test-deps.sh installs it); without them it skips,
//! unless `STRATA_REQUIRE_INTEROP=1` (as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::have_tool;

/// The gcctl binary cargo built beside this test binary (`target/<profile>/gcctl`).
fn gcctl() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join("gcctl");
    bin.is_file().then_some(bin)
}

#[test]
fn containerd_and_strata_unpack_the_sample_to_the_same_tree() {
    if !have_tool("containerd") || !have_tool("ctr") {
        return;
    }
    let is_root = rustix::process::geteuid().is_root();
    if !is_root {
        assert!(
            std::env::var("STRATA_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "needs root"
        );
        eprintln!("skipping: comparing with containerd needs root");
        return;
    }
    let Some(gcctl) = gcctl() else {
        panic!("gcctl is not built beside the test binary; run `cargo test --workspace`");
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(repo.join("scripts/compare-with-containerd.sh"))
        .arg(repo.join("fixtures/sample.tar"))
        .env("GCCTL", &gcctl)
        .current_dir(&repo)
        .output()
        .expect("run compare-with-containerd.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the trees differ or the comparison failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("same tree").count(),
        2,
        "overlay and native both compared:\n{stdout}"
    );
}
