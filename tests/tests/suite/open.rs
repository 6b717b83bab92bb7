//! Opening a store: layout, the root lock, `tmp` cleanup, damaged databases, schema versions
//! and corrupt records.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use strata_store::images::{Descriptor, Image};
use strata_store::{Error, ErrorKind, Store};

use crate::support::{TestStore, labels, put_blob, scope, sha256, small_options};

#[test]
fn open_creates_the_layout() {
    let t = TestStore::new();
    let root = t.dir.path();
    for p in [
        "LOCK",
        "meta.redb",
        "content/blobs/sha256",
        "content/blobs/sha512",
        "content/ingest",
        "snapshots",
        "tmp",
    ] {
        assert!(root.join(p).exists(), "{p} missing");
    }
}

#[test]
fn second_open_of_a_root_is_busy_and_names_this_pid() {
    let t = TestStore::new();
    let err = Store::open(t.dir.path(), small_options()).expect_err("second open must fail");
    assert_eq!(err.kind(), ErrorKind::StoreBusy);
    match &err {
        Error::StoreBusy { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("unexpected error {other}"),
    }
    assert!(
        err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
}

#[test]
fn lock_is_released_when_the_store_is_dropped() {
    let t = TestStore::new();
    let d = put_blob(&t.store, &scope("default"), "r", b"kept", labels(&[]));
    let t = t.reopen();
    assert_eq!(t.store.content().info("default", &d).expect("info").size, 4);
}

#[test]
fn open_empties_tmp() {
    let t = TestStore::new();
    let tmp = t.dir.path().join("tmp");
    fs::create_dir_all(tmp.join("stale/mount")).expect("mkdir");
    fs::write(tmp.join("stale-file"), b"x").expect("write");
    let t = t.reopen();
    assert_eq!(
        fs::read_dir(t.dir.path().join("tmp"))
            .expect("read tmp")
            .count(),
        0
    );
}

/// A store with some records, closed, then its database damaged by `damage`.
fn damaged_store(damage: impl FnOnce(&std::path::Path)) -> (tempfile::TempDir, Error) {
    let t = TestStore::new();
    let s = scope("default");
    for i in 0..50u64 {
        let data = crate::support::bytes(i, 512);
        let d = put_blob(&t.store, &s, &format!("r{i}"), &data, labels(&[("k", "v")]));
        let target = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d,
            size: 512,
            annotations: Default::default(),
        };
        t.store
            .images()
            .create(&s, Image::new(format!("img{i}"), target))
            .expect("create image");
    }
    let TestStore { store, dir } = t;
    drop(store);
    let meta = dir.path().join("meta.redb");
    damage(&meta);
    let before = fs::read(&meta).expect("read damaged file");
    let err = Store::open(dir.path(), small_options()).expect_err("damaged database must not open");
    assert_eq!(
        fs::read(&meta).expect("read again"),
        before,
        "a failed open must not change the file"
    );
    (dir, err)
}

fn overwrite(path: &std::path::Path, offset: u64, len: usize) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open meta.redb");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&vec![0xAB; len]).expect("overwrite");
    f.sync_all().expect("sync");
}

#[test]
fn bytes_overwritten_in_the_middle_give_an_error_naming_the_file() {
    let (_dir, err) = damaged_store(|meta| {
        let len = fs::metadata(meta).expect("stat").len();
        overwrite(meta, len / 2, 4096);
    });
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("meta.redb") && msg.contains("damaged"),
        "{msg}"
    );
}

#[test]
fn a_truncated_database_gives_an_error_naming_the_file() {
    let (_dir, err) = damaged_store(|meta| {
        let len = fs::metadata(meta).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(meta)
            .expect("open")
            .set_len(len / 3)
            .expect("truncate");
    });
    assert!(err.to_string().contains("meta.redb"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("meta.redb"), vec![0x5Au8; 64 * 1024]).expect("write garbage");
    let err = Store::open(dir.path(), small_options()).expect_err("garbage must not open");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("meta.redb"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let t = TestStore::new();
    let TestStore { store, dir } = t;
    drop(store);
    // Editing the file with redb itself is a deliberate change: drop the clean-close seal first,
    // as the error message tells an operator to.
    fs::remove_file(dir.path().join("meta.redb.seal")).expect("remove seal");
    {
        let db = redb::Database::create(dir.path().join("meta.redb")).expect("open with redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(strata_store::db::META)
            .expect("meta")
            .insert("schema_version", 99u32.to_le_bytes().as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = Store::open(dir.path(), small_options()).expect_err("newer schema must not open");
    assert!(
        matches!(err, Error::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn one_corrupt_record_is_reported_and_the_rest_stays_usable() {
    let t = TestStore::new();
    let s = scope("default");
    let d = put_blob(&t.store, &s, "r", b"payload", labels(&[]));
    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: d.clone(),
        size: 7,
        annotations: Default::default(),
    };
    t.store
        .images()
        .create(&scope("other"), Image::new("fine", target))
        .expect("create");
    let TestStore { store, dir } = t;
    drop(store);
    // Editing the file with redb itself is a deliberate change: drop the clean-close seal first,
    // as the error message tells an operator to.
    fs::remove_file(dir.path().join("meta.redb.seal")).expect("remove seal");
    {
        let db = redb::Database::create(dir.path().join("meta.redb")).expect("open with redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(strata_store::db::IMAGES)
            .expect("images")
            .insert(("default", "broken"), [1u8, 0xff, 0xff, 0xff].as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let t = TestStore {
        store: Store::open(dir.path(), small_options()).expect("open"),
        dir,
    };
    let err = t
        .store
        .images()
        .list::<&str>("default", &[])
        .expect_err("corrupt record must be reported");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let msg = err.to_string();
    assert!(
        msg.contains("images") && msg.contains("default/broken"),
        "{msg}"
    );
    assert_eq!(
        t.store
            .images()
            .list::<&str>("other", &[])
            .expect("other namespace")
            .len(),
        1
    );
    assert_eq!(
        t.store
            .content()
            .info("default", &sha256(b"payload"))
            .expect("blob")
            .size,
        7
    );
}

#[test]
fn clean_close_seals_the_database_and_open_consumes_the_seal() {
    let t = TestStore::new();
    let seal = t.dir.path().join("meta.redb.seal");
    assert!(!seal.exists(), "an open store has no seal");
    let TestStore { store, dir } = t;
    drop(store);
    assert!(seal.exists(), "a clean close writes the seal");
    let store = Store::open(dir.path(), small_options()).expect("reopen");
    assert!(!seal.exists(), "open removes the seal before writing");
    drop(store);
}

#[test]
fn a_version_1_database_is_migrated_in_one_transaction() {
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = dir.path().join("meta.redb");
    {
        // What the first schema wrote: its tables, a record, and version 1.
        let db = redb::Database::create(&meta).expect("create");
        let txn = db.begin_write().expect("write");
        use strata_store::db::{BLOBS, CONTAINERS, IMAGES, INGESTS, LEASES, NAMESPACES};
        txn.open_table(NAMESPACES).expect("table");
        for t in [BLOBS, INGESTS, IMAGES, LEASES, CONTAINERS] {
            txn.open_table(t).expect("table");
        }
        txn.open_table(strata_store::db::LEASE_RESOURCES)
            .expect("table");
        txn.open_table(strata_store::db::META)
            .expect("meta")
            .insert("schema_version", 1u32.to_le_bytes().as_slice())
            .expect("version");
        txn.commit().expect("commit");
    }
    drop(Store::open(dir.path(), small_options()).expect("open migrates"));
    fs::remove_file(dir.path().join("meta.redb.seal")).expect("remove seal");
    let db = redb::Database::create(&meta).expect("reopen with redb");
    let txn = db.begin_read().expect("read");
    let version = txn
        .open_table(strata_store::db::META)
        .expect("meta")
        .get("schema_version")
        .expect("get")
        .map(|v| v.value().to_vec());
    assert_eq!(
        version,
        Some(strata_store::db::SCHEMA_VERSION.to_le_bytes().to_vec())
    );
    assert!(
        txn.open_table(strata_store::db::SNAPSHOTS).is_ok(),
        "snapshot tables created"
    );
    assert!(txn.open_table(strata_store::db::SNAPSHOT_CHILDREN).is_ok());
}
