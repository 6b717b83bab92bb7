//! One module per command family; [`run`] dispatches.

mod content;
mod gc;
mod image_io;
mod images;
mod info;
mod leases;
mod ns;
mod snapshots;

use anyhow::Result;

use crate::app::Ctx;
use crate::args::{Cli, Command};
use crate::views::Removed;

/// Opens the store and runs the command; stdout is flushed whatever the outcome, so the
/// successes of a partly failed multi-item command are printed.
pub fn run(cli: &Cli) -> Result<()> {
    let mut ctx = Ctx::open(cli)?;
    let outcome = match &cli.command {
        // Compaction consumes the store, so it takes the context (and flushes stdout itself).
        Command::Compact => return gc::compact(ctx),
        Command::Gc { dry_run } => gc::gc(&mut ctx, *dry_run),
        Command::Why { object } => gc::why(&mut ctx, object),
        Command::Du { by } => gc::du(&mut ctx, *by),
        Command::Fsck { repair } => gc::fsck(&mut ctx, *repair),
        Command::Info => info::run(&mut ctx),
        Command::Ns(cmd) => ns::run(&mut ctx, cmd),
        Command::Content(cmd) => content::run(&mut ctx, cmd),
        Command::Images(cmd) => images::run(&mut ctx, cmd),
        Command::Leases(cmd) => leases::run(&mut ctx, cmd),
        Command::Snapshots(args) => snapshots::run(&mut ctx, args),
        Command::Import {
            source,
            name,
            unpack,
            snapshotter,
        } => image_io::import(
            &mut ctx,
            source,
            name.as_deref(),
            unpack.then_some(snapshotter.as_str()),
        ),
        Command::Export { names, output } => image_io::export(&mut ctx, names, output),
        Command::Unpack { name, snapshotter } => image_io::unpack(&mut ctx, name, snapshotter),
        Command::Commit {
            key,
            name,
            snapshotter,
            base,
            author,
            message,
            created_by,
        } => {
            let options = strata_snapshotter::image::commit::CommitOptions {
                base: base.clone(),
                author: author.clone(),
                comment: message.clone(),
                created_by: created_by.clone(),
                ..Default::default()
            };
            image_io::commit(&mut ctx, key, name, snapshotter, &options)
        }
    };
    let flushed = ctx.out.flush();
    outcome?;
    Ok(flushed?)
}

/// Prints what a removal command removed: one per line, or `{"removed": [...]}`.
fn print_removed(ctx: &mut Ctx, removed: &[String]) -> Result<()> {
    if ctx.json {
        ctx.out.json(&Removed { removed })?;
    } else {
        for r in removed {
            ctx.out.line(r)?;
        }
    }
    Ok(())
}

/// Prints what a removal command removed; with `sync`, first runs a full collection and adds
/// its summary (`{"removed": [...], "gc": <report>}` with --json). The collection runs even
/// when some removals failed, for the ones that succeeded.
fn print_removed_then(ctx: &mut Ctx, removed: &[String], sync: bool) -> Result<()> {
    if sync {
        gc::removed_then_collect(ctx, removed)
    } else {
        print_removed(ctx, removed)
    }
}
