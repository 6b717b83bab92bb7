//! `gcctl info`: the root, its database, blob files on disk, what each namespace holds, and
//! what is on disk that no record names.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;
use strata_store::db::SCHEMA_VERSION;

use crate::app::Ctx;
use crate::output::{self, table};

#[derive(Debug, Serialize)]
struct Info {
    root: PathBuf,
    database: Database,
    blob_files: Files,
    namespaces: Vec<NamespaceCounts>,
    /// Files and directories no record names (crash leftovers, deleted blobs awaiting GC).
    orphans: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Database {
    path: PathBuf,
    size: u64,
    /// The schema this build reads and writes; opening migrates the file to it.
    schema_version: u32,
}

#[derive(Debug, Default, Serialize)]
struct Files {
    count: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct NamespaceCounts {
    name: String,
    labels: BTreeMap<String, String>,
    blobs: usize,
    images: usize,
    leases: usize,
    ingests: usize,
    containers: usize,
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let info = gather(ctx)?;
    if ctx.json {
        ctx.out.json(&info)?;
        return Ok(());
    }
    let out = &mut ctx.out;
    out.line(format_args!("root:            {}", info.root.display()))?;
    out.line(format_args!(
        "database:        {} ({}, {} bytes)",
        info.database.path.display(),
        output::size(info.database.size),
        info.database.size
    ))?;
    out.line(format_args!(
        "schema version:  {}",
        info.database.schema_version
    ))?;
    out.line(format_args!(
        "blob files:      {} ({}, {} bytes)",
        info.blob_files.count,
        output::size(info.blob_files.bytes),
        info.blob_files.bytes
    ))?;
    out.line(format_args!("orphans:         {}", info.orphans.len()))?;
    for o in &info.orphans {
        out.line(format_args!("  {}", o.display()))?;
    }
    out.line("")?;
    let mut t = table([
        "NAMESPACE",
        "BLOBS",
        "IMAGES",
        "LEASES",
        "INGESTS",
        "CONTAINERS",
        "LABELS",
    ]);
    for n in &info.namespaces {
        t.add_row([
            n.name.clone(),
            n.blobs.to_string(),
            n.images.to_string(),
            n.leases.to_string(),
            n.ingests.to_string(),
            n.containers.to_string(),
            output::labels(&n.labels),
        ]);
    }
    out.table(&t).map_err(anyhow::Error::from)
}

fn gather(ctx: &Ctx) -> Result<Info> {
    let store = &ctx.store;
    let layout = store.layout();
    let meta = layout.meta();
    let size = std::fs::metadata(&meta)
        .with_context(|| format!("stat {}", meta.display()))?
        .len();
    let none: &[&str] = &[];
    let mut namespaces = Vec::new();
    for ns in store.namespaces().list()? {
        let name = ns.name.as_str();
        namespaces.push(NamespaceCounts {
            blobs: store.content().list(name, none)?.len(),
            images: store.images().list(name, none)?.len(),
            leases: store.leases().list(name, none)?.len(),
            ingests: store.content().list_statuses(name, none)?.len(),
            containers: store.containers().list(name, none)?.len(),
            name: ns.name,
            labels: ns.labels,
        });
    }
    let mut blob_files = Files::default();
    walk(
        &layout.root().join("content").join("blobs"),
        &mut blob_files,
    )?;
    // The collector's view: it tells an object being created from an orphan, and covers
    // every snapshotter's directory.
    let mut orphans: Vec<PathBuf> = strata_gc::orphans(store)?
        .removed
        .into_iter()
        .map(|o| o.path)
        .collect();
    orphans.sort();
    Ok(Info {
        orphans,
        root: layout.root().to_owned(),
        database: Database {
            path: meta,
            size,
            schema_version: SCHEMA_VERSION,
        },
        blob_files,
        namespaces,
    })
}

/// Counts the regular files under `dir` and their bytes, without following symlinks; an
/// entry removed while walking is skipped.
fn walk(dir: &Path, files: &mut Files) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read directory {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("read directory {}", dir.display()))?;
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        if meta.is_dir() {
            walk(&path, files)?;
        } else if meta.is_file() {
            files.count += 1;
            files.bytes += meta.len();
        }
    }
    Ok(())
}
