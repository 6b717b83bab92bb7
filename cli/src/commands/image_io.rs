//! `gcctl import`, `export` and `unpack`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::Path;

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_snapshotter::Snapshotter;
use strata_snapshotter::image::import::ImportOptions;
use strata_snapshotter::image::unpack::Unpacked;
use strata_snapshotter::image::{export, import, unpack};

use crate::app::Ctx;
use crate::output::{self, table};

/// A byte progress bar on stderr, for people only: hidden with --json or without a terminal.
fn bar(ctx: &Ctx, total: Option<u64>, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
    let template = format!("{what} {{bytes}}/{{total_bytes}} [{{bar:30}}] {{bytes_per_sec}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    if !ctx.json && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar
}

pub fn import(
    ctx: &mut Ctx,
    source: &Path,
    name: Option<&str>,
    unpack_into: Option<&str>,
) -> Result<()> {
    let scope = ctx.scope()?;
    let total = source
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let progress = bar(ctx, total, "importing");
    let options = ImportOptions {
        name: name.map(str::to_owned),
    };
    let imported = import::import(&ctx.store, &scope, source, &options, &mut |n| {
        progress.inc(n)
    })
    .with_context(|| format!("import {}", source.display()))?;
    progress.finish_and_clear();
    let mut unpacked = Vec::new();
    if let Some(sn) = unpack_into {
        let sn = Snapshotter::open(&ctx.store, sn)?;
        for image in &imported.images {
            unpacked.push(unpack_one(ctx, &sn, &image.name)?);
        }
    }
    if ctx.json {
        ctx.out
            .json(&serde_json::json!({ "imported": imported, "unpacked": unpacked }))?;
    } else {
        for image in &imported.images {
            ctx.out
                .line(format!("{} {}", image.name, image.target.digest))?;
        }
        for u in &unpacked {
            ctx.out
                .line(format!("unpacked {} -> {}", u.image, u.chain_id))?;
        }
    }
    Ok(())
}

pub fn export(ctx: &mut Ctx, names: &[String], output_path: &Path) -> Result<()> {
    let ns = ctx.scope()?.namespace().to_owned();
    // Written beside the target and renamed, so a failed export leaves no partial archive.
    let tmp = output_path.with_extension("tar.partial");
    let file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let written = export::export(&ctx.store, &ns, &names, BufWriter::new(file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, output_path)
        .with_context(|| format!("rename to {}", output_path.display()))?;
    if ctx.json {
        ctx.out
            .json(&serde_json::json!({ "exported": names, "output": output_path }))?;
    } else {
        ctx.out.line(output_path.display())?;
    }
    Ok(())
}

pub fn unpack(ctx: &mut Ctx, name: &str, snapshotter: &str) -> Result<()> {
    let sn = Snapshotter::open(&ctx.store, snapshotter)?;
    let u = unpack_one(ctx, &sn, name)?;
    if ctx.json {
        ctx.out.json(&u)?;
    } else {
        let mut t = table(["LAYER", "CHAIN ID", "STATUS"]);
        for l in &u.layers {
            t.add_row([
                l.digest.to_string(),
                l.chain_id.to_string(),
                if l.applied { "applied" } else { "present" }.to_owned(),
            ]);
        }
        ctx.out.table(&t)?;
        ctx.out.line(format!("{} -> {}", u.image, u.chain_id))?;
    }
    Ok(())
}

fn unpack_one(ctx: &Ctx, sn: &Snapshotter, name: &str) -> Result<Unpacked> {
    let scope = ctx.scope()?;
    let (_, manifest) = unpack::resolve_manifest(&ctx.store, scope.namespace(), name)?;
    let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
    let progress = bar(ctx, Some(total), &format!("unpacking {name}"));
    let u = unpack::unpack(&ctx.store, sn, &scope, name, &|n| progress.inc(n))
        .with_context(|| format!("unpack {name} into {}", sn.name()))?;
    progress.finish_and_clear();
    let _ = output::size(total);
    Ok(u)
}

pub fn commit(
    ctx: &mut Ctx,
    key: &str,
    name: &str,
    snapshotter: &str,
    options: &strata_snapshotter::image::commit::CommitOptions,
) -> Result<()> {
    let sn = Snapshotter::open(&ctx.store, snapshotter)?;
    let scope = ctx.scope()?;
    let committed =
        strata_snapshotter::image::commit::commit(&ctx.store, &sn, &scope, key, name, options)
            .with_context(|| format!("commit {key} as {name}"))?;
    if ctx.json {
        ctx.out.json(&committed)?;
    } else {
        ctx.out.line(format!(
            "{} {}",
            committed.image.name, committed.image.target.digest
        ))?;
    }
    Ok(())
}
