//! Committing a container's snapshot as an image (`strata_snapshotter::image::commit`, moby's
//! commit flow, reference section 8.1), on both snapshotters: the new layer, config and
//! manifest, their labels, the committed chain, empty diffs, reproducibility, bad inputs, and a
//! round trip through export and import into another store.

use std::collections::BTreeMap;
use std::io::Read;

use strata_snapshotter::image::commit::{CommitOptions, commit};
use strata_snapshotter::image::export::export;
use strata_snapshotter::image::import::{ImportOptions, import};
use strata_snapshotter::image::oci::{self, Config, Manifest};
use strata_snapshotter::image::unpack::{resolve_manifest, unpack};
use strata_snapshotter::{Kind, Snapshotter};
use strata_store::{ErrorKind, Store, Timestamp};
use strata_tests::fixture::{OciLayout, SAMPLE_NAME, sample};

use crate::support::{TestStore, labels, scope, snapshotter};

const NS: &str = "commit";

/// A store with the sample image imported and unpacked into `name`, and an active snapshot
/// `ctr` prepared on its top chain ID.
fn setup(name: &str) -> Option<(TestStore, Snapshotter, String)> {
    let t = TestStore::new();
    let sn = snapshotter(&t.store, name)?;
    let archive = t.dir.path().join("sample.tar");
    OciLayout::new(&[&sample().expect("sample")])
        .write_archive(&archive)
        .expect("archive");
    import(
        &t.store,
        &scope(NS),
        &archive,
        &ImportOptions::default(),
        &mut |_| {},
    )
    .expect("import");
    let top = unpack(&t.store, &sn, &scope(NS), SAMPLE_NAME, &|_| {})
        .expect("unpack")
        .chain_id
        .to_string();
    sn.prepare(&scope(NS), "ctr", Some(&top), labels(&[]))
        .expect("prepare container");
    Some((t, sn, top))
}

fn json<T: serde::de::DeserializeOwned>(store: &Store, d: &strata_store::Digest) -> T {
    let mut b = Vec::new();
    store
        .content()
        .reader(NS, d)
        .expect("reader")
        .read_to_end(&mut b)
        .expect("read");
    serde_json::from_slice(&b).expect("json")
}

/// Writes a change into the container's snapshot: through a mount for overlay (so the upper
/// dir gets a real whiteout), directly into the copy for native.
fn change(sn: &Snapshotter, dir: &std::path::Path) {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    sn.mount(NS, "ctr", &mnt).expect("mount");
    let wrote = std::fs::write(mnt.join("etc/motd"), "hello from a container\n")
        .and_then(|()| std::fs::remove_file(mnt.join("etc/hostname")));
    strata_snapshotter::backend::mount::unmount(&mnt).expect("unmount");
    wrote.expect("change the container");
}

fn options() -> CommitOptions {
    CommitOptions {
        author: Some("tester".into()),
        comment: Some("add motd".into()),
        created_by: Some("sh -c 'echo hello > /etc/motd'".into()),
        ..CommitOptions::default()
    }
}

fn case_commit_adds_a_layer(name: &str) {
    let Some((t, sn, top)) = setup(name) else {
        return;
    };
    change(&sn, t.dir.path());
    let c = commit(
        &t.store,
        &sn,
        &scope(NS),
        "ctr",
        "docker.io/strata/committed:1",
        &options(),
    )
    .expect("commit");
    let (_, base) = resolve_manifest(&t.store, NS, SAMPLE_NAME).expect("base manifest");
    let base_config: Config = json(&t.store, &base.config.digest);
    let (_, manifest) =
        resolve_manifest(&t.store, NS, "docker.io/strata/committed:1").expect("manifest");
    let config: Config = json(&t.store, &manifest.config.digest);

    // One more layer, diffID and history entry than the base.
    assert_eq!(manifest.layers.len(), base.layers.len() + 1);
    assert_eq!(&manifest.layers[..base.layers.len()], &base.layers[..]);
    let layer = c.layer.clone().expect("a layer");
    assert_eq!(manifest.layers.last(), Some(&layer));
    assert_eq!(layer.media_type, oci::MEDIA_LAYER_GZIP);
    assert_eq!(
        config.rootfs.diff_ids.len(),
        base_config.rootfs.diff_ids.len() + 1
    );
    let h = config.history.last().expect("history");
    assert_eq!(
        (h.author.as_deref(), h.comment.as_deref()),
        (Some("tester"), Some("add motd"))
    );
    assert!(!h.empty_layer);
    assert_eq!(
        config.rest.get("author").and_then(|v| v.as_str()),
        Some("tester")
    );

    // Labels: the layer's diffID, the manifest's references, the config's snapshot.
    let layer_info = t
        .store
        .content()
        .info(NS, &layer.digest)
        .expect("layer blob");
    assert_eq!(
        layer_info.labels.get("containerd.io/uncompressed"),
        config
            .rootfs
            .diff_ids
            .last()
            .map(ToString::to_string)
            .as_ref()
    );
    let m_info = t
        .store
        .content()
        .info(NS, &c.image.target.digest)
        .expect("manifest blob");
    assert_eq!(
        m_info.labels.get("containerd.io/gc.ref.content.config"),
        Some(&c.config.to_string())
    );
    for (i, l) in manifest.layers.iter().enumerate() {
        assert_eq!(
            m_info
                .labels
                .get(&format!("containerd.io/gc.ref.content.l.{i}")),
            Some(&l.digest.to_string())
        );
    }
    let cfg_info = t.store.content().info(NS, &c.config).expect("config blob");
    assert_eq!(
        cfg_info
            .labels
            .get(&format!("containerd.io/gc.ref.snapshot.{name}")),
        Some(&c.chain_id.to_string())
    );

    // The new chain ID is committed on the base's top, and a view of it shows the change.
    let info = sn
        .stat(NS, &c.chain_id.to_string())
        .expect("committed chain");
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Committed, Some(top.as_str()))
    );
    sn.view(
        &scope(NS),
        "check",
        Some(&c.chain_id.to_string()),
        labels(&[]),
    )
    .expect("view");
    let mnt = t.dir.path().join("view");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    sn.mount(NS, "check", &mnt).expect("mount view");
    let motd = std::fs::read_to_string(mnt.join("etc/motd"));
    let hostname_gone = !mnt.join("etc/hostname").exists();
    let passwd_kept = mnt.join("etc/passwd").exists();
    strata_snapshotter::backend::mount::unmount(&mnt).expect("unmount");
    assert_eq!(motd.expect("motd"), "hello from a container\n");
    assert!(hostname_gone, "the deletion is a whiteout in the new layer");
    assert!(passwd_kept);

    // The container's own snapshot is untouched, and the commit lease is gone.
    assert_eq!(sn.stat(NS, "ctr").expect("ctr").kind, Kind::Active);
    assert!(
        t.store
            .leases()
            .list::<&str>(NS, &[])
            .expect("leases")
            .is_empty()
    );
}

fn case_empty_diff_adds_no_layer(name: &str) {
    let Some((t, sn, top)) = setup(name) else {
        return;
    };
    let c = commit(
        &t.store,
        &sn,
        &scope(NS),
        "ctr",
        "docker.io/strata/same:1",
        &options(),
    )
    .expect("commit");
    assert!(c.layer.is_none());
    assert_eq!(
        c.chain_id.to_string(),
        top,
        "no layer: the same top chain ID"
    );
    let (_, base) = resolve_manifest(&t.store, NS, SAMPLE_NAME).expect("base");
    let (_, manifest): (_, Manifest) =
        resolve_manifest(&t.store, NS, "docker.io/strata/same:1").expect("manifest");
    assert_eq!(manifest.layers, base.layers);
    let config: Config = json(&t.store, &manifest.config.digest);
    assert!(config.history.last().expect("history").empty_layer);
}

fn case_reproducible(name: &str) {
    let Some((t, sn, _)) = setup(name) else {
        return;
    };
    change(&sn, t.dir.path());
    let a = commit(&t.store, &sn, &scope(NS), "ctr", "x:a", &options()).expect("first");
    let b = commit(&t.store, &sn, &scope(NS), "ctr", "x:b", &options()).expect("second");
    assert_eq!(
        a.image.target.digest, b.image.target.digest,
        "same content, same manifest"
    );
    assert_eq!((&a.config, &a.layer), (&b.config, &b.layer));
    // An explicit creation time is what makes a different config.
    let later = CommitOptions {
        created: Some(Timestamp(2_000_000_000_000_000_000)),
        ..options()
    };
    let c = commit(&t.store, &sn, &scope(NS), "ctr", "x:c", &later).expect("third");
    assert_ne!(c.config, b.config);
    assert_eq!(c.layer, b.layer, "the layer depends only on the content");
}

fn case_bad_inputs(name: &str) {
    let Some((t, sn, top)) = setup(name) else {
        return;
    };
    let s = scope(NS);
    let err =
        commit(&t.store, &sn, &s, "missing", "x:1", &options()).expect_err("missing snapshot");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    sn.view(&s, "a-view", Some(&top), labels(&[]))
        .expect("view");
    let err = commit(&t.store, &sn, &s, "a-view", "x:1", &options()).expect_err("a view");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    // A parent that no image was unpacked to: the base must be named.
    sn.prepare(&s, "k", Some(&top), labels(&[]))
        .expect("prepare");
    sn.commit(&s, "orphan-base", "k", labels(&[]))
        .expect("commit snapshot");
    sn.prepare(&s, "ctr2", Some("orphan-base"), labels(&[]))
        .expect("prepare");
    let err = commit(&t.store, &sn, &s, "ctr2", "x:1", &options()).expect_err("no base");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("orphan-base"), "{err}");
    let named = CommitOptions {
        base: Some(SAMPLE_NAME.into()),
        ..options()
    };
    commit(&t.store, &sn, &s, "ctr2", "x:1", &named).expect("with a named base");
}

fn case_round_trip(name: &str) {
    let Some((t, sn, _)) = setup(name) else {
        return;
    };
    change(&sn, t.dir.path());
    let c = commit(
        &t.store,
        &sn,
        &scope(NS),
        "ctr",
        "docker.io/strata/rt:1",
        &options(),
    )
    .expect("commit");
    let archive = t.dir.path().join("rt.tar");
    let f = std::fs::File::create(&archive).expect("create");
    export(&t.store, NS, &["docker.io/strata/rt:1"], f).expect("export");
    let other = TestStore::new();
    let sn2 = snapshotter(&other.store, name).expect("snapshotter");
    import(
        &other.store,
        &scope(NS),
        &archive,
        &ImportOptions::default(),
        &mut |_| {},
    )
    .expect("import");
    let u = unpack(
        &other.store,
        &sn2,
        &scope(NS),
        "docker.io/strata/rt:1",
        &|_| {},
    )
    .expect("unpack");
    assert_eq!(
        u.chain_id, c.chain_id,
        "the exported image unpacks to the same chain"
    );
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod overlay {
            $(#[test] fn $case() { super::$case("overlay") })*
        }
        mod native {
            $(#[test] fn $case() { super::$case("native") })*
        }
    };
}

both!(
    case_commit_adds_a_layer,
    case_empty_diff_adds_no_layer,
    case_reproducible,
    case_bad_inputs,
    case_round_trip,
);

#[test]
fn commit_without_parent_or_changes_is_refused() {
    let t = TestStore::new();
    let sn = snapshotter(&t.store, "native").expect("native");
    sn.prepare(&scope(NS), "empty", None, BTreeMap::new())
        .expect("prepare");
    let err = commit(&t.store, &sn, &scope(NS), "empty", "x:1", &options())
        .expect_err("nothing to commit");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
}
