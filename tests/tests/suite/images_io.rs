//! OCI import and export (`strata_snapshotter::image::{import, export}`) on images built by
//! `strata_tests::fixture`: OCI layout directories, OCI archives and `docker save` archives;
//! naming, GC labels, byte-identical blobs, the import lease, idempotence, damaged input,
//! deterministic export and round trips. Then interop: skopeo and umoci read what strata
//! exports, and strata imports what skopeo writes.
//!
//! The interop tests need `skopeo` and `umoci` (`scripts/install-test-deps.sh`). Without them
//! they skip with a message, unless `STRATA_REQUIRE_INTEROP=1` (as in CI), where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_snapshotter::image::export::export;
use strata_snapshotter::image::import::{ImportOptions, Imported, import};
use strata_snapshotter::image::oci::{self, Descriptor, Index, Manifest, Platform};
use strata_store::{Digest, ErrorKind, Store};
use strata_tests::fixture::{
    self, Entry, Image, ImageBuilder, Layer, OciLayout, SAMPLE_NAME, docker_archive,
};
use tempfile::TempDir;

use crate::support::{TestStore, have_tool as have, scope};

const NS: &str = "images-io";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Imports `source` into `NS`, checking that progress reports add up to the bytes imported.
fn try_import(
    store: &Store,
    source: &Path,
    name: Option<&str>,
) -> strata_snapshotter::Result<Imported> {
    let mut progress = 0u64;
    let options = ImportOptions {
        name: name.map(str::to_owned),
    };
    let imported = import(store, &scope(NS), source, &options, &mut |n| progress += n)?;
    assert_eq!(progress, imported.bytes, "progress reports every blob byte");
    Ok(imported)
}

fn import_ok(store: &Store, source: &Path) -> Imported {
    try_import(store, source, None).unwrap_or_else(|e| panic!("import {}: {e}", source.display()))
}

/// The images of `NS`: name -> target.
fn images(store: &Store) -> BTreeMap<String, strata_store::images::Descriptor> {
    store
        .images()
        .list::<&str>(NS, &[])
        .expect("list images")
        .into_iter()
        .map(|i| (i.name, i.target))
        .collect()
}

/// The blobs of `NS`: digest -> labels.
fn contents(store: &Store) -> BTreeMap<Digest, BTreeMap<String, String>> {
    store
        .content()
        .list::<&str>(NS, &[])
        .expect("list content")
        .into_iter()
        .map(|b| (b.digest, b.labels))
        .collect()
}

fn blob(store: &Store, digest: &Digest) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .content()
        .reader(NS, digest)
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        .read_to_end(&mut out)
        .expect("read blob");
    out
}

fn labels(store: &Store, digest: &Digest) -> BTreeMap<String, String> {
    store
        .content()
        .info(NS, digest)
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        .labels
}

fn assert_no_leases(store: &Store) {
    let leases = store.leases().list::<&str>(NS, &[]).expect("list leases");
    assert!(leases.is_empty(), "the import lease is gone: {leases:?}");
}

/// `containerd.io/gc.ref.content.<suffix>` labels.
fn gc_refs<'a>(refs: impl IntoIterator<Item = (String, &'a Digest)>) -> BTreeMap<String, String> {
    refs.into_iter()
        .map(|(k, d)| (format!("containerd.io/gc.ref.content.{k}"), d.to_string()))
        .collect()
}

/// The labels pull and import put on a manifest: `.config` and `.l.<i>`.
fn manifest_labels(config: &Digest, layers: &[&Digest]) -> BTreeMap<String, String> {
    gc_refs(
        std::iter::once(("config".to_owned(), config)).chain(
            layers
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("l.{i}"), *d)),
        ),
    )
}

/// Checks that every blob of `image` is stored byte for byte, that its index and manifest
/// carry exactly the GC labels containerd writes and that config and layers carry none.
fn assert_image_stored(store: &Store, image: &Image) {
    let layer_digests: Vec<&Digest> = image.layers.iter().map(|l| &l.blob.digest).collect();
    assert_eq!(
        labels(store, &image.manifest.digest),
        manifest_labels(&image.config.digest, &layer_digests),
        "labels of manifest {}",
        image.manifest.digest
    );
    if let Some(index) = &image.index {
        let index_labels = labels(store, &index.digest);
        assert_eq!(
            index_labels.get("containerd.io/gc.ref.content.m.0"),
            Some(&image.manifest.digest.to_string()),
            "index labels name the manifest as m.0"
        );
        if image.others.is_empty() {
            assert_eq!(
                index_labels,
                gc_refs([("m.0".to_owned(), &image.manifest.digest)]),
                "labels of index {}",
                index.digest
            );
        }
    }
    let mut unlabelled = vec![&image.config.digest];
    unlabelled.extend(&layer_digests);
    for d in unlabelled {
        assert!(
            labels(store, d).is_empty(),
            "config and layers have no labels: {d}"
        );
    }
    for b in [&image.manifest, &image.config]
        .into_iter()
        .chain(image.index.iter())
        .chain(image.layers.iter().map(|l| &l.blob))
    {
        assert!(
            blob(store, &b.digest) == b.bytes,
            "blob {} stored byte for byte",
            b.digest
        );
    }
}

/// Regular files of a tar: path -> bytes; panics on a duplicate path.
fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        assert!(
            out.insert(path.clone(), data).is_none(),
            "{path} appears once in the archive"
        );
    }
    out
}

/// The `blobs/sha256/<hex>` files of an exported archive, by digest.
fn exported_blobs(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<Digest, Vec<u8>> {
    files
        .iter()
        .filter_map(|(path, bytes)| {
            let hex = path.strip_prefix("blobs/sha256/")?;
            Some((
                format!("sha256:{hex}").parse().expect("blob name"),
                bytes.clone(),
            ))
        })
        .collect()
}

fn export_bytes(store: &Store, names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    export(store, NS, names, &mut out).unwrap_or_else(|e| panic!("export {names:?}: {e}"));
    out
}

fn sample() -> Image {
    fixture::sample().expect("build the sample image")
}

/// A small one-layer image, distinct per `seed`.
fn tiny(name: &str, seed: u64) -> Image {
    ImageBuilder::new(name)
        .layer(Layer::new(vec![
            Entry::dir("data"),
            Entry::file("data/file.txt", fixture::text(seed, 300)),
        ]))
        .build()
        .expect("build image")
}

/// A second image sharing the sample's base layer.
fn sibling() -> Image {
    let base = fixture::sample_layers().swap_remove(0);
    ImageBuilder::new("docker.io/strata/sibling:1")
        .layer(base)
        .layer(Layer::new(vec![
            Entry::dir("srv"),
            Entry::file("srv/index.html", "<p>sibling</p>\n"),
        ]))
        .build()
        .expect("build image")
}

/// A platform that is not this host's.
fn foreign_platform() -> Platform {
    let host = oci::host_platform();
    let arch = if host.architecture == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    Platform {
        architecture: arch.to_owned(),
        os: "linux".to_owned(),
        variant: None,
    }
}

struct Sources {
    _dir: TempDir,
    layout: PathBuf,
    archive: PathBuf,
    docker: PathBuf,
}

/// `images` written as a layout directory, an OCI archive and a docker-save archive.
fn write_sources(images: &[&Image]) -> Sources {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = OciLayout::new(images);
    let paths = Sources {
        layout: dir.path().join("layout"),
        archive: dir.path().join("oci.tar"),
        docker: dir.path().join("docker.tar"),
        _dir: dir,
    };
    layout.write_dir(&paths.layout).expect("write layout");
    layout.write_archive(&paths.archive).expect("write archive");
    std::fs::write(
        &paths.docker,
        docker_archive(images).expect("docker archive"),
    )
    .expect("write docker archive");
    paths
}

fn write_layout(layout: &OciLayout) -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("layout");
    let archive = dir.path().join("oci.tar");
    layout.write_dir(&path).expect("write layout");
    layout.write_archive(&archive).expect("write archive");
    (dir, path, archive)
}

fn target_of(image: &Image) -> strata_store::images::Descriptor {
    let top = image.top();
    strata_store::images::Descriptor {
        media_type: top.media_type,
        digest: top.digest,
        size: top.size,
        annotations: top.annotations,
    }
}

// ---------------------------------------------------------------------------------------------
// Import

#[test]
fn import_layout_dir() {
    let ts = TestStore::new();
    let image = sample();
    let src = write_sources(&[&image]);
    let imported = import_ok(&ts.store, &src.layout);
    assert_eq!(
        imported
            .images
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        [SAMPLE_NAME]
    );
    let layout = OciLayout::new(&[&image]);
    assert_eq!(imported.blobs, layout.blobs.len(), "every blob read once");
    assert_eq!(
        imported.bytes,
        layout.blobs.values().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_eq!(
        images(&ts.store),
        BTreeMap::from([(SAMPLE_NAME.to_owned(), target_of(&image))])
    );
    assert_image_stored(&ts.store, &image);
    assert_eq!(
        contents(&ts.store).keys().collect::<BTreeSet<_>>(),
        layout.blobs.keys().collect::<BTreeSet<_>>(),
        "exactly the layout's blobs are stored"
    );
    assert_no_leases(&ts.store);
}

#[test]
fn import_oci_archive() {
    let ts = TestStore::new();
    let image = sample();
    let src = write_sources(&[&image]);
    let imported = import_ok(&ts.store, &src.archive);
    assert_eq!(imported.blobs, 5);
    assert_eq!(
        images(&ts.store),
        BTreeMap::from([(SAMPLE_NAME.to_owned(), target_of(&image))])
    );
    assert_image_stored(&ts.store, &image);
    assert_no_leases(&ts.store);
}

#[test]
fn import_committed_fixture_matches_the_builder() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sample.tar");
    let committed = std::fs::read(&path).expect("fixtures/sample.tar");
    let image = sample();
    let built = OciLayout::new(&[&image]).archive().expect("archive");
    // The config names the host's architecture, so only an amd64 host rebuilds the same bytes.
    if oci::host_platform().architecture == "amd64" {
        assert!(
            committed == built,
            "fixtures/sample.tar is stale; regenerate it with \
             `cargo run -p strata-tests --example make-sample -- fixtures/sample.tar`"
        );
    }
    let ts = TestStore::new();
    let imported = import_ok(&ts.store, &path);
    assert_eq!(imported.images.len(), 1);
    assert_eq!(imported.images[0].name, SAMPLE_NAME);
    assert_no_leases(&ts.store);
}

#[test]
fn import_docker_save_archive() {
    let ts = TestStore::new();
    let image = sample();
    let src = write_sources(&[&image]);
    import_ok(&ts.store, &src.docker);
    let all = images(&ts.store);
    let names: Vec<&String> = all.keys().collect();
    assert_eq!(names, [SAMPLE_NAME], "docker's familiar name is normalized");
    let target = &all[SAMPLE_NAME];
    assert_eq!(target.media_type, oci::DOCKER_MANIFEST);
    let manifest_bytes = blob(&ts.store, &target.digest);
    assert_eq!(target.size, manifest_bytes.len() as u64);
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).expect("manifest");
    assert_eq!(
        manifest.config.digest, image.config.digest,
        "the config is kept byte for byte"
    );
    assert_eq!(manifest.config.media_type, oci::DOCKER_CONFIG);
    assert!(blob(&ts.store, &image.config.digest) == image.config.bytes);
    let layers: Vec<(&str, &Digest, u64)> = manifest
        .layers
        .iter()
        .map(|l| (l.media_type.as_str(), &l.digest, l.size))
        .collect();
    let expected: Vec<(&str, &Digest, u64)> = image
        .layers
        .iter()
        .map(|l| (oci::DOCKER_LAYER_TAR, &l.diff_id, l.tar.len() as u64))
        .collect();
    assert_eq!(
        layers, expected,
        "docker-save layers are the uncompressed tars"
    );
    for l in &image.layers {
        assert!(
            blob(&ts.store, &l.diff_id) == l.tar,
            "layer {} byte for byte",
            l.diff_id
        );
        assert!(labels(&ts.store, &l.diff_id).is_empty());
    }
    let diff_ids = image.diff_ids();
    assert_eq!(
        labels(&ts.store, &target.digest),
        manifest_labels(&image.config.digest, &diff_ids.iter().collect::<Vec<_>>())
    );
    assert_no_leases(&ts.store);
}

#[test]
fn import_names_prefer_the_containerd_annotation() {
    let ts = TestStore::new();
    let both = tiny("docker.io/strata/both:1", 1);
    let mut ref_only = tiny("docker.io/strata/ref-only:2", 2);
    ref_only.annotations.remove(oci::ANNOTATION_CONTAINERD_NAME);
    ref_only.annotations.insert(
        oci::ANNOTATION_REF_NAME.to_owned(),
        "docker.io/strata/ref-only:2".to_owned(),
    );
    // As skopeo's `oci:DIR:TAG` writes it: the tag alone.
    let mut tag_only = tiny("docker.io/strata/tag-only:3", 3);
    tag_only.annotations.remove(oci::ANNOTATION_CONTAINERD_NAME);
    let (_dir, layout, _) = write_layout(&OciLayout::new(&[&both, &ref_only, &tag_only]));
    import_ok(&ts.store, &layout);
    let all = images(&ts.store);
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "3",
            "docker.io/strata/both:1",
            "docker.io/strata/ref-only:2"
        ]
    );
    assert_eq!(all["docker.io/strata/both:1"].digest, both.manifest.digest);
    assert_eq!(
        all["docker.io/strata/ref-only:2"].digest,
        ref_only.manifest.digest
    );
    assert_eq!(all["3"].digest, tag_only.manifest.digest);
    for image in [&both, &ref_only, &tag_only] {
        assert_image_stored(&ts.store, image);
    }
    assert_no_leases(&ts.store);
}

#[test]
fn import_name_option_overrides_annotations() {
    let image = sample();
    let src = write_sources(&[&image]);
    for source in [&src.layout, &src.archive, &src.docker] {
        let ts = TestStore::new();
        let imported = try_import(&ts.store, source, Some("docker.io/strata/renamed:7"))
            .unwrap_or_else(|e| panic!("import {}: {e}", source.display()));
        assert_eq!(imported.images.len(), 1);
        let all = images(&ts.store);
        assert_eq!(
            all.keys().map(String::as_str).collect::<Vec<_>>(),
            ["docker.io/strata/renamed:7"],
            "{}: only the given name",
            source.display()
        );
        assert_no_leases(&ts.store);
    }
}

#[test]
fn import_name_option_with_two_images_is_rejected() {
    let a = tiny("docker.io/strata/a:1", 1);
    let b = tiny("docker.io/strata/b:1", 2);
    let src = write_sources(&[&a, &b]);
    for source in [&src.layout, &src.archive, &src.docker] {
        let ts = TestStore::new();
        let err = try_import(&ts.store, source, Some("docker.io/strata/renamed:7"))
            .expect_err("--name with two images");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("exactly one image"), "{err}");
        assert!(
            images(&ts.store).is_empty(),
            "no image record: {:?}",
            images(&ts.store)
        );
        assert_no_leases(&ts.store);
    }
}

#[test]
fn import_index_labels_every_level() {
    let ts = TestStore::new();
    let image = fixture::sample_builder("docker.io/strata/indexed:1")
        .with_index()
        .build()
        .expect("build");
    let src = write_sources(&[&image]);
    import_ok(&ts.store, &src.archive);
    let index = image.index.as_ref().expect("index");
    let all = images(&ts.store);
    assert_eq!(all["docker.io/strata/indexed:1"].digest, index.digest);
    assert_eq!(
        all["docker.io/strata/indexed:1"].media_type,
        oci::MEDIA_INDEX
    );
    assert_image_stored(&ts.store, &image);
    assert_no_leases(&ts.store);
}

#[test]
fn import_multiple_images_sharing_a_layer() {
    let a = sample();
    let b = sibling();
    assert_eq!(
        a.layers[0].blob.digest, b.layers[0].blob.digest,
        "shared base layer"
    );
    let src = write_sources(&[&a, &b]);
    for source in [&src.layout, &src.archive] {
        let ts = TestStore::new();
        import_ok(&ts.store, source);
        assert_eq!(
            images(&ts.store),
            BTreeMap::from([
                (a.name.clone(), target_of(&a)),
                (b.name.clone(), target_of(&b))
            ])
        );
        assert_image_stored(&ts.store, &a);
        assert_image_stored(&ts.store, &b);
        assert_no_leases(&ts.store);
    }
    let ts = TestStore::new();
    import_ok(&ts.store, &src.docker);
    assert_eq!(
        images(&ts.store)
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [a.name.as_str(), b.name.as_str()]
    );
    assert_no_leases(&ts.store);
}

fn assert_reimport_is_idempotent(source: &Path) {
    let ts = TestStore::new();
    import_ok(&ts.store, source);
    let (first_images, first_content) = (images(&ts.store), contents(&ts.store));
    let again = try_import(&ts.store, source, None)
        .unwrap_or_else(|e| panic!("re-import of {}: {e}", source.display()));
    assert_eq!(again.images.len(), first_images.len());
    assert_eq!(images(&ts.store), first_images, "same image records");
    assert_eq!(
        contents(&ts.store),
        first_content,
        "same blobs, same labels"
    );
    assert_no_leases(&ts.store);
}

#[test]
fn reimport_layout_dir_is_idempotent() {
    let image = sample();
    assert_reimport_is_idempotent(&write_sources(&[&image]).layout);
}

#[test]
fn reimport_oci_archive_is_idempotent() {
    let image = sample();
    assert_reimport_is_idempotent(&write_sources(&[&image]).archive);
}

#[test]
fn reimport_docker_save_archive_is_idempotent() {
    let image = sample();
    assert_reimport_is_idempotent(&write_sources(&[&image]).docker);
}

#[test]
fn import_rejects_a_corrupted_blob() {
    let image = sample();
    let bad = image.layers[1].blob.digest.clone();
    let mut layout = OciLayout::new(&[&image]);
    let bytes = layout.blobs.get_mut(&bad).expect("layer blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let (_dir, dir_path, archive_path) = write_layout(&layout);
    for source in [&dir_path, &archive_path] {
        let ts = TestStore::new();
        let err = try_import(&ts.store, source, None).expect_err("corrupted blob");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(
            err.to_string().contains(bad.hex()),
            "the error names the blob: {err}"
        );
        assert!(images(&ts.store).is_empty(), "no image record");
        assert_eq!(
            ts.store
                .content()
                .info(NS, &bad)
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(ErrorKind::NotFound),
            "the damaged bytes are not stored"
        );
        assert_no_leases(&ts.store);
    }
}

#[test]
fn import_rejects_a_layout_missing_a_blob() {
    let image = sample();
    let indexed = fixture::sample_builder("docker.io/strata/indexed:1")
        .with_index()
        .build()
        .expect("build");
    let cases = [
        (&image, image.layers[2].blob.digest.clone(), "layer"),
        (&image, image.config.digest.clone(), "config"),
        (
            &indexed,
            indexed.manifest.digest.clone(),
            "manifest of the host platform",
        ),
    ];
    for (img, missing, what) in cases {
        let mut layout = OciLayout::new(&[img]);
        assert!(layout.blobs.remove(&missing).is_some());
        let (_dir, dir_path, archive_path) = write_layout(&layout);
        for source in [&dir_path, &archive_path] {
            let ts = TestStore::new();
            let err = try_import(&ts.store, source, None).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
            assert!(
                err.to_string().contains(missing.hex()),
                "{what}: names the blob: {err}"
            );
            assert!(images(&ts.store).is_empty(), "{what}: no image record");
            assert_no_leases(&ts.store);
        }
    }
}

/// InvalidArgument means nothing changed: a second image lacking a blob must not leave the
/// first one recorded.
#[test]
fn import_with_one_broken_image_records_none() {
    let good = tiny("docker.io/strata/good:1", 1);
    let broken = tiny("docker.io/strata/broken:1", 2);
    let mut layout = OciLayout::new(&[&good, &broken]);
    layout.blobs.remove(&broken.layers[0].blob.digest);
    let (_dir, dir_path, _) = write_layout(&layout);
    let ts = TestStore::new();
    let err = try_import(&ts.store, &dir_path, None).expect_err("missing blob");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        images(&ts.store).is_empty(),
        "an import that fails records no image: {:?}",
        images(&ts.store).keys().collect::<Vec<_>>()
    );
    assert_no_leases(&ts.store);
}

/// Imports `bytes` written as `<dir>/<name>`; returns the error, checked to be
/// InvalidArgument naming the file, with nothing recorded.
fn import_garbage(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    let ts = TestStore::new();
    let err = try_import(&ts.store, &path, None).expect_err(name);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{name}: names the file: {msg}"
    );
    assert!(images(&ts.store).is_empty());
    assert_no_leases(&ts.store);
    msg
}

#[test]
fn import_rejects_what_is_not_an_image_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut unrelated = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(6);
    h.set_mode(0o644);
    unrelated
        .append_data(&mut h, "notes/readme.txt", &b"hello\n"[..])
        .expect("tar");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("short.txt", b"this is not a tar archive\n".to_vec(), "tar"),
        ("empty.tar", Vec::new(), "image layout"),
        (
            "unrelated.tar",
            unrelated.into_inner().expect("tar"),
            "image layout",
        ),
    ];
    for (name, bytes, says) in cases {
        let msg = import_garbage(dir.path(), name, &bytes);
        assert!(msg.contains(says), "{name}: says what is wrong: {msg}");
    }
    let empty_dir = dir.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).expect("mkdir");
    let ts = TestStore::new();
    let err = try_import(&ts.store, &empty_dir, None).expect_err("empty directory");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("image layout"), "{err}");
    let missing = dir.path().join("does-not-exist.tar");
    let err = try_import(&ts.store, &missing, None).expect_err("missing file");
    assert!(err.to_string().contains("does-not-exist.tar"), "{err}");
    assert_no_leases(&ts.store);
}

/// Binary input (random bytes, a gzip-compressed archive) gets a readable error, not the
/// bytes of a broken header pasted into the message.
#[test]
fn import_error_for_a_binary_file_is_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = OciLayout::new(&[&sample()]).archive().expect("archive");
    let gz = fixture::Compression::Gzip.compress(&archive).expect("gzip");
    for (name, bytes) in [
        ("noise.bin", fixture::noise(1, 4096)),
        ("sample.tar.gz", gz),
    ] {
        let msg = import_garbage(dir.path(), name, &bytes);
        assert!(
            !msg.chars().any(|c| c.is_control() || c == '\u{fffd}'),
            "{name}: the message is readable text: {msg:?}"
        );
        assert!(
            msg.contains("tar"),
            "{name}: says it is not a tar archive: {msg}"
        );
    }
}

/// Layers of every compression strata knows, through import and export.
#[test]
fn import_and_export_zstd_and_uncompressed_layers() {
    use fixture::Compression;
    let layer = |dir: &str, seed: u64, c: Compression| {
        Layer::new(vec![
            Entry::dir(dir),
            Entry::file(&format!("{dir}/data"), fixture::text(seed, 5000)),
        ])
        .compression(c)
    };
    let image = ImageBuilder::new("docker.io/strata/compressions:1")
        .layer(layer("gzip", 1, Compression::Gzip))
        .layer(layer("zstd", 2, Compression::Zstd))
        .layer(layer("plain", 3, Compression::None))
        .build()
        .expect("build");
    let media: Vec<&str> = image
        .layers
        .iter()
        .map(|l| l.blob.media_type.as_str())
        .collect();
    assert_eq!(
        media,
        [
            oci::MEDIA_LAYER_GZIP,
            oci::MEDIA_LAYER_ZSTD,
            oci::MEDIA_LAYER_TAR
        ]
    );
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.archive);
    assert_image_stored(&ts.store, &image);
    let exported = export_bytes(&ts.store, &[&image.name]);
    assert_eq!(
        exported_blobs(&tar_files(&exported)),
        OciLayout::new(&[&image]).blobs
    );
    assert_no_leases(&ts.store);
}

/// `tar -C layout -cf x.tar .` names every entry `./...`.
#[test]
fn import_oci_archive_with_dot_slash_paths() {
    let image = sample();
    let src = write_sources(&[&image]);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("dot.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src.layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    let ts = TestStore::new();
    import_ok(&ts.store, &archive);
    assert_eq!(
        images(&ts.store),
        BTreeMap::from([(SAMPLE_NAME.to_owned(), target_of(&image))])
    );
    assert_image_stored(&ts.store, &image);
    assert_no_leases(&ts.store);
}

/// A docker-save import exports as an OCI layout that imports again to the same image.
#[test]
fn docker_save_import_round_trips_through_export() {
    let image = sample();
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.docker);
    let target = images(&ts.store)[SAMPLE_NAME].clone();
    let exported = export_bytes(&ts.store, &[SAMPLE_NAME]);
    let blobs = exported_blobs(&tar_files(&exported));
    let mut expected: BTreeSet<Digest> = image.diff_ids().into_iter().collect();
    expected.insert(image.config.digest.clone());
    expected.insert(target.digest.clone());
    assert_eq!(blobs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (digest, bytes) in &blobs {
        assert!(
            blob(&ts.store, digest) == *bytes,
            "blob {digest} byte for byte"
        );
    }
    let again = TestStore::new();
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(out.path(), &exported).expect("write");
    import_ok(&again.store, out.path());
    let back = &images(&again.store)[SAMPLE_NAME];
    assert_eq!(
        (&back.media_type, &back.digest),
        (&target.media_type, &target.digest)
    );
    assert_no_leases(&again.store);
}

#[test]
fn import_with_a_foreign_platform_manifest_absent() {
    let image = fixture::sample_builder("docker.io/strata/multi:1")
        .other_platform(foreign_platform())
        .build()
        .expect("build");
    let other = &image.others[0];
    let mut layout = OciLayout::new(&[&image]);
    layout.blobs.remove(&other.manifest.digest);
    layout.blobs.remove(&other.config.digest);
    let (_dir, dir_path, archive_path) = write_layout(&layout);
    for source in [&dir_path, &archive_path] {
        let ts = TestStore::new();
        import_ok(&ts.store, source);
        let index = image.index.as_ref().expect("index");
        assert_eq!(
            images(&ts.store)["docker.io/strata/multi:1"].digest,
            index.digest
        );
        assert_image_stored(&ts.store, &image);
        assert_no_leases(&ts.store);

        // Export keeps what is there, byte for byte, and its re-import gives the same image.
        let exported = export_bytes(&ts.store, &["docker.io/strata/multi:1"]);
        assert_eq!(exported_blobs(&tar_files(&exported)), layout.blobs);
        let again = TestStore::new();
        let out = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(out.path(), &exported).expect("write");
        import_ok(&again.store, out.path());
        assert_eq!(
            images(&again.store)["docker.io/strata/multi:1"].digest,
            index.digest
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Export

#[test]
fn export_round_trips_byte_identical_blobs() {
    let image = sample();
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.layout);
    let exported = export_bytes(&ts.store, &[SAMPLE_NAME]);
    let files = tar_files(&exported);
    assert_eq!(
        exported_blobs(&files),
        OciLayout::new(&[&image]).blobs,
        "the export holds exactly the layout's blobs, byte for byte"
    );
    let layout: serde_json::Value =
        serde_json::from_slice(&files["oci-layout"]).expect("oci-layout");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Index = serde_json::from_slice(&files["index.json"]).expect("index.json");
    assert_eq!(index.manifests.len(), 1);
    let top = &index.manifests[0];
    assert_eq!(
        (&top.media_type, &top.digest, top.size),
        (
            &image.manifest.media_type,
            &image.manifest.digest,
            image.manifest.size()
        )
    );
    assert_eq!(
        top.annotations[oci::ANNOTATION_CONTAINERD_NAME],
        SAMPLE_NAME
    );
    assert_eq!(top.annotations[oci::ANNOTATION_REF_NAME], "latest");

    let again = TestStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.tar");
    std::fs::write(&path, &exported).expect("write");
    import_ok(&again.store, &path);
    assert_eq!(
        images(&again.store)[SAMPLE_NAME].digest,
        image.manifest.digest
    );
    assert_image_stored(&again.store, &image);
    assert_no_leases(&again.store);
}

#[test]
fn export_is_deterministic() {
    let image = sample();
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.archive);
    let first = export_bytes(&ts.store, &[SAMPLE_NAME]);
    let second = export_bytes(&ts.store, &[SAMPLE_NAME]);
    assert!(first == second, "two exports are byte-identical");
    // And independent of the store: another store that imported the directory.
    let other = TestStore::new();
    import_ok(&other.store, &src.layout);
    assert!(
        export_bytes(&other.store, &[SAMPLE_NAME]) == first,
        "same bytes from another store"
    );
    let mut archive = tar::Archive::new(first.as_slice());
    for entry in archive.entries().expect("tar") {
        let entry = entry.expect("entry");
        let h = entry.header();
        assert_eq!(
            (
                h.mtime().expect("mtime"),
                h.uid().expect("uid"),
                h.gid().expect("gid")
            ),
            (0, 0, 0),
            "{:?}",
            entry.path()
        );
    }
}

#[test]
fn export_and_import_several_images() {
    let a = sample();
    let b = sibling();
    let c = fixture::sample_builder("docker.io/strata/indexed:1")
        .with_index()
        .build()
        .expect("build");
    let src = write_sources(&[&a, &b, &c]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.layout);
    let names = [a.name.as_str(), b.name.as_str(), c.name.as_str()];
    let exported = export_bytes(&ts.store, &names);
    let files = tar_files(&exported);
    assert_eq!(exported_blobs(&files), OciLayout::new(&[&a, &b, &c]).blobs);
    let index: Index = serde_json::from_slice(&files["index.json"]).expect("index.json");
    assert_eq!(
        index
            .manifests
            .iter()
            .map(|d| (
                d.annotations[oci::ANNOTATION_CONTAINERD_NAME].as_str(),
                &d.digest
            ))
            .collect::<Vec<_>>(),
        [
            (names[0], &a.manifest.digest),
            (names[1], &b.manifest.digest),
            (names[2], &c.index.as_ref().expect("index").digest)
        ]
    );
    let again = TestStore::new();
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(out.path(), &exported).expect("write");
    import_ok(&again.store, out.path());
    assert_eq!(
        images(&again.store),
        images(&ts.store),
        "same names, targets and annotations after the round trip"
    );
    for image in [&a, &b, &c] {
        assert_image_stored(&again.store, image);
    }
    assert_no_leases(&again.store);
}

#[test]
fn export_of_a_missing_image_is_not_found() {
    let ts = TestStore::new();
    let err = export(&ts.store, NS, &["docker.io/strata/nope:1"], std::io::sink())
        .expect_err("no such image");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Interop with skopeo and umoci

/// Runs `cmd`, failing with its output if it does not succeed; returns stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs skopeo with no signature policy or registry configuration from the host.
fn skopeo(args: &[&str]) -> Vec<u8> {
    run(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// Imports the sample, exports it to `<dir>/export.tar`.
fn exported_sample(dir: &Path) -> (Image, PathBuf) {
    let image = sample();
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    import_ok(&ts.store, &src.archive);
    let path = dir.join("export.tar");
    std::fs::write(&path, export_bytes(&ts.store, &[SAMPLE_NAME])).expect("write export");
    (image, path)
}

#[test]
fn skopeo_reads_strata_exports() {
    if !have("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (image, path) = exported_sample(dir.path());
    let archive = format!("oci-archive:{}", path.display());
    let info: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &archive])).expect("skopeo inspect json");
    assert_eq!(info["Digest"], image.manifest.digest.to_string());
    assert_eq!(info["Architecture"], oci::host_platform().architecture);
    assert_eq!(info["Os"], "linux");
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.blob.digest.to_string())
        .collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));
    assert!(
        skopeo(&["inspect", "--raw", &archive]) == image.manifest.bytes,
        "raw manifest"
    );
    assert!(
        skopeo(&["inspect", "--config", "--raw", &archive]) == image.config.bytes,
        "raw config"
    );

    // Several images, picked out of the extracted layout by their ref names.
    let ts = TestStore::new();
    let (a, b) = (sample(), sibling());
    import_ok(&ts.store, &write_sources(&[&a, &b]).archive);
    let layout = dir.path().join("multi");
    tar::Archive::new(export_bytes(&ts.store, &[&a.name, &b.name]).as_slice())
        .unpack(&layout)
        .expect("extract export");
    for (image, tag) in [(&a, "latest"), (&b, "1")] {
        let r = format!("oci:{}:{tag}", layout.display());
        assert!(
            skopeo(&["inspect", "--raw", &r]) == image.manifest.bytes,
            "{r}"
        );
    }
}

#[test]
fn umoci_unpacks_strata_exports() {
    if !have("umoci") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = exported_sample(dir.path());
    let layout = dir.path().join("layout");
    let archive = std::fs::read(&path).expect("read export");
    tar::Archive::new(archive.as_slice())
        .unpack(&layout)
        .expect("extract export");
    let bundle = dir.path().join("bundle");
    let root = rustix::process::geteuid().is_root();
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !root {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle);
    run(&mut cmd);

    let rootfs = bundle.join("rootfs");
    let p = |rel: &str| rootfs.join(rel);
    let read = |rel: &str| std::fs::read(p(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let meta =
        |rel: &str| std::fs::symlink_metadata(p(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let exists = |rel: &str| std::fs::symlink_metadata(p(rel)).is_ok();
    let names = |rel: &str| -> BTreeSet<String> {
        std::fs::read_dir(p(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    // The top layer's changes.
    assert_eq!(read("etc/hostname"), b"strata-top\n");
    assert!(!exists("etc/strata/remove-me.txt"), "file whiteout");
    assert!(exists("etc/strata/keep.txt"));
    assert!(!exists("usr/share/doc/beta"), "directory whiteout");
    assert_eq!(
        names("usr/share/doc"),
        BTreeSet::from(["alpha".into(), "gamma".into()])
    );
    assert_eq!(
        names("usr/lib/python/json"),
        BTreeSet::from(["__init__.py".into()]),
        "opaque"
    );
    assert_eq!(
        read("usr/lib/python/json/__init__.py"),
        b"# replaced by the top layer\n"
    );
    assert!(meta("opt/app/fifo").file_type().is_fifo());
    assert!(
        !names("etc/strata").iter().any(|n| n.starts_with(".wh.")),
        "no whiteout files"
    );
    // The base layer's entries.
    assert_eq!(
        std::fs::read_link(p("usr/bin/tool-abs")).expect("link"),
        Path::new("/usr/bin/tool")
    );
    assert_eq!(
        std::fs::read_link(p("usr/lib/libsample.so")).expect("link"),
        Path::new("libsample.so.1")
    );
    assert_eq!(
        meta("usr/bin/tool").ino(),
        meta("usr/bin/tool-hardlink").ino(),
        "hardlink"
    );
    assert_eq!(
        meta("usr/bin/su-sample").permissions().mode() & 0o7777,
        0o4755,
        "setuid"
    );
    assert_eq!(meta("tmp").permissions().mode() & 0o7777, 0o1777, "sticky");
    assert_eq!(read("usr/bin/tool"), fixture::noise(6, 96 * 1024));
    if root {
        let notes = meta("home/user/notes.txt");
        assert_eq!(
            (notes.uid(), notes.gid(), notes.mode() & 0o777),
            (1000, 1000, 0o640)
        );
        let mut value = [0u8; 16];
        let n = rustix::fs::lgetxattr(p("etc/strata/xattr.txt"), "user.strata", &mut value[..])
            .expect("user.strata xattr");
        assert_eq!(&value[..n], b"1");
    }
}

/// A layout skopeo wrote (from the committed OCI archive) imports, named by its tag.
#[test]
fn strata_imports_a_skopeo_layout() {
    if !have("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sample.tar");
    let layout = dir.path().join("skopeo-layout");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", fixture_tar.display()),
        &format!("oci:{}:copied", layout.display()),
    ]);
    assert_imports_skopeo_layout(&layout, "copied");
}

/// A docker-save archive, turned into an OCI layout by skopeo, imports.
#[test]
fn strata_imports_a_skopeo_layout_from_a_docker_archive() {
    if !have("skopeo") {
        return;
    }
    let image = sample();
    let src = write_sources(&[&image]);
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("from-docker");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", src.docker.display()),
        &format!("oci:{}:fromdocker", layout.display()),
    ]);
    let store = assert_imports_skopeo_layout(&layout, "fromdocker");
    let target = &images(&store.store)["fromdocker"];
    let manifest: Manifest =
        serde_json::from_slice(&blob(&store.store, &target.digest)).expect("manifest");
    let config: oci::Config =
        serde_json::from_slice(&blob(&store.store, &manifest.config.digest)).expect("config");
    assert_eq!(config.rootfs.diff_ids, image.diff_ids(), "the same layers");
}

/// A `docker save` archive as skopeo writes it (layers `<hex>.tar`) imports.
#[test]
fn strata_imports_a_skopeo_docker_archive() {
    if !have("skopeo") {
        return;
    }
    let image = sample();
    let src = write_sources(&[&image]);
    let dir = tempfile::tempdir().expect("tempdir");
    let docker = dir.path().join("skopeo-docker.tar");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", src.archive.display()),
        &format!("docker-archive:{}:strata/sample:latest", docker.display()),
    ]);
    let ts = TestStore::new();
    import_ok(&ts.store, &docker);
    let all = images(&ts.store);
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        [SAMPLE_NAME]
    );
    let manifest: Manifest =
        serde_json::from_slice(&blob(&ts.store, &all[SAMPLE_NAME].digest)).expect("manifest");
    assert_eq!(
        manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
        image.diff_ids(),
        "docker archives hold uncompressed layers"
    );
    let config: oci::Config =
        serde_json::from_slice(&blob(&ts.store, &manifest.config.digest)).expect("config");
    assert_eq!(config.rootfs.diff_ids, image.diff_ids());
    assert_no_leases(&ts.store);
    assert_reimport_is_idempotent(&docker);
}

/// Imports the layout skopeo wrote at `layout` and checks the image named `tag` against
/// skopeo's own `index.json` and blobs.
fn assert_imports_skopeo_layout(layout: &Path, tag: &str) -> TestStore {
    let index: Index = serde_json::from_slice(
        &std::fs::read(layout.join("index.json")).expect("skopeo index.json"),
    )
    .expect("index.json");
    let top: &Descriptor = index
        .manifests
        .iter()
        .find(|d| {
            d.annotations
                .get(oci::ANNOTATION_REF_NAME)
                .map(String::as_str)
                == Some(tag)
        })
        .expect("skopeo names the image by its tag");
    let ts = TestStore::new();
    import_ok(&ts.store, layout);
    let all = images(&ts.store);
    assert_eq!(all.keys().map(String::as_str).collect::<Vec<_>>(), [tag]);
    assert_eq!((&all[tag].digest, all[tag].size), (&top.digest, top.size));
    assert_eq!(all[tag].media_type, top.media_type);
    let blobs = layout.join("blobs/sha256");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&blobs).expect("skopeo blobs") {
        let entry = entry.expect("entry");
        let digest: Digest = format!("sha256:{}", entry.file_name().to_string_lossy())
            .parse()
            .expect("blob name");
        assert!(
            blob(&ts.store, &digest) == std::fs::read(entry.path()).expect("read blob"),
            "blob {digest} byte for byte"
        );
        on_disk.insert(digest);
    }
    assert_eq!(
        contents(&ts.store).into_keys().collect::<BTreeSet<_>>(),
        on_disk
    );
    let manifest: Manifest =
        serde_json::from_slice(&blob(&ts.store, &top.digest)).expect("manifest");
    let layers: Vec<&Digest> = manifest.layers.iter().map(|l| &l.digest).collect();
    assert_eq!(
        labels(&ts.store, &top.digest),
        manifest_labels(&manifest.config.digest, &layers)
    );
    assert_no_leases(&ts.store);
    ts
}

/// Two imports of the same image at once both succeed, as containerd's (whose writer open
/// waits for a ref another import holds).
#[test]
fn concurrent_imports_of_the_same_image_both_succeed() {
    let image = sample();
    let src = write_sources(&[&image]);
    let ts = TestStore::new();
    let barrier = std::sync::Barrier::new(4);
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (store, barrier) = (&ts.store, &barrier);
                let source = if i % 2 == 0 {
                    &src.archive
                } else {
                    &src.layout
                };
                s.spawn(move || {
                    barrier.wait();
                    try_import(store, source, None)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("import thread").err())
            .collect()
    });
    assert!(
        results.is_empty(),
        "every concurrent import succeeds: {results:#?}"
    );
    assert_eq!(
        images(&ts.store),
        BTreeMap::from([(SAMPLE_NAME.to_owned(), target_of(&image))])
    );
    assert_image_stored(&ts.store, &image);
    assert_no_leases(&ts.store);
}

/// `bytes` (a tar) with regular files passed through `edit` (path, content) -> new content;
/// `None` drops the file.
fn rewrite_tar(bytes: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        if header.entry_type().is_file() {
            let Some(new) = edit(&path, data) else {
                continue;
            };
            data = new;
        }
        header.set_size(data.len() as u64);
        out.append_data(&mut header, &path, data.as_slice())
            .expect("append");
    }
    out.into_inner().expect("tar")
}

/// `docker save <image id>` writes `"RepoTags":null` for an image saved without a tag.
#[test]
fn import_docker_save_archive_without_tags() {
    let image = sample();
    let docker = docker_archive(&[&image]).expect("docker archive");
    let untagged = rewrite_tar(&docker, |path, data| match path {
        "manifest.json" => {
            let mut m: serde_json::Value = serde_json::from_slice(&data).expect("manifest.json");
            m[0]["RepoTags"] = serde_json::Value::Null;
            Some(serde_json::to_vec(&m).expect("json"))
        }
        "repositories" => None,
        _ => Some(data),
    });
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), untagged).expect("write");
    let ts = TestStore::new();
    import_ok(&ts.store, file.path());
    let all = images(&ts.store);
    assert_eq!(all.len(), 1, "one image, named by strata: {all:?}");
    let target = all.values().next().expect("image");
    let manifest: Manifest =
        serde_json::from_slice(&blob(&ts.store, &target.digest)).expect("manifest");
    assert_eq!(manifest.config.digest, image.config.digest);
    assert_no_leases(&ts.store);
}

/// A `manifest.json` that names OCI blob paths (`blobs/sha256/<hex>`, as docker 25 writes
/// next to its OCI layout) gives a manifest whose descriptors have the blobs' real sizes.
#[test]
fn import_docker_manifest_naming_blob_paths() {
    let image = sample();
    let path_of = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let manifest_json = serde_json::json!([{
        "Config": path_of(&image.config.digest),
        "RepoTags": ["strata/sample:latest"],
        "Layers": image.diff_ids().iter().map(path_of).collect::<Vec<_>>(),
    }]);
    let mut files: Vec<(String, Vec<u8>)> = vec![(
        "manifest.json".to_owned(),
        serde_json::to_vec(&manifest_json).expect("json"),
    )];
    files.push((path_of(&image.config.digest), image.config.bytes.clone()));
    for l in &image.layers {
        files.push((path_of(&l.diff_id), l.tar.clone()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data.as_slice())
            .expect("append");
    }
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), tar.into_inner().expect("tar")).expect("write");
    let ts = TestStore::new();
    import_ok(&ts.store, file.path());
    let target = images(&ts.store)[SAMPLE_NAME].clone();
    let manifest: Manifest =
        serde_json::from_slice(&blob(&ts.store, &target.digest)).expect("manifest");
    assert_eq!(
        (&manifest.config.digest, manifest.config.size),
        (&image.config.digest, image.config.size())
    );
    let layers: Vec<(&Digest, u64)> = manifest
        .layers
        .iter()
        .map(|l| (&l.digest, l.size))
        .collect();
    let expected: Vec<(&Digest, u64)> = image
        .layers
        .iter()
        .map(|l| (&l.diff_id, l.tar.len() as u64))
        .collect();
    assert_eq!(layers, expected, "layer descriptors carry the blobs' sizes");
    assert_no_leases(&ts.store);
}
