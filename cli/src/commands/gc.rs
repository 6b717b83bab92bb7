//! `gcctl gc|why|du|fsck|compact`, and the collection `--sync` removals and `leases prune`
//! run after deleting.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use strata_gc::fsck::{FsckOptions, FsckReport, Progress};
use strata_gc::usage::{By, UsageReport};
use strata_gc::{Kind, Node, Plan, Report};

use crate::app::{Ctx, ProblemsFound, warn};
use crate::args::DuBy;
use crate::output::{self, table};

/// A spinner on stderr while `what` runs, for people only: hidden with --json or without a
/// terminal.
fn spinner(ctx: &Ctx, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    if !ctx.json && std::io::stderr().is_terminal() {
        bar.set_style(ProgressStyle::default_spinner());
        bar.set_message(what.to_owned());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    bar
}

/// Runs one full collection with a spinner, and warns on stderr about what it could not do.
fn collect(ctx: &Ctx) -> Result<Report> {
    let bar = spinner(ctx, "collecting garbage");
    let report = strata_gc::collect(&ctx.store);
    bar.finish_and_clear();
    let report = report?;
    warn_files(&report.files.failed, &report.files.missing);
    Ok(report)
}

/// Cleanup failures and missing data: warnings on stderr, never a failure.
fn warn_files(failed: &[strata_gc::cleanup::Failure], missing: &[strata_gc::cleanup::Missing]) {
    for f in failed {
        warn(format_args!(
            "could not remove {}: {} (the next gc retries)",
            f.path.display(),
            f.error
        ));
    }
    for m in missing {
        warn(format_args!(
            "{}: data missing at {} (see gcctl fsck)",
            m.object,
            m.path.display()
        ));
    }
}

/// `gcctl gc [--dry-run]`.
pub fn gc(ctx: &mut Ctx, dry_run: bool) -> Result<()> {
    if dry_run {
        let bar = spinner(ctx, "marking");
        let plan = strata_gc::dry_run(&ctx.store);
        bar.finish_and_clear();
        let plan = plan?;
        warn_files(&[], &plan.missing);
        return print_plan(ctx, &plan);
    }
    let report = collect(ctx)?;
    if ctx.json {
        ctx.out.json(&report)?;
    } else {
        print_report(ctx, &report)?;
    }
    Ok(())
}

/// What `images rm --sync`, `leases rm --sync` and `leases prune` print with --json.
#[derive(Debug, Serialize)]
struct RemovedThenCollected<'a> {
    removed: &'a [String],
    gc: &'a Report,
}

/// Prints what a removal removed, then collects and prints the collection's summary.
pub fn removed_then_collect(ctx: &mut Ctx, removed: &[String]) -> Result<()> {
    let report = collect(ctx)?;
    if ctx.json {
        ctx.out.json(&RemovedThenCollected {
            removed,
            gc: &report,
        })?;
    } else {
        for r in removed {
            ctx.out.line(r)?;
        }
        print_report(ctx, &report)?;
    }
    Ok(())
}

/// `kind count, ...` in kind order, or `nothing`.
fn by_kind<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> String {
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for n in nodes {
        *counts.entry(n.kind).or_default() += 1;
    }
    if counts.is_empty() {
        return "nothing".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1 blob`, `2 blobs`.
fn count(n: impl Into<u64>, what: &str) -> String {
    let n = n.into();
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The human summary of a collection.
fn print_report(ctx: &mut Ctx, r: &Report) -> Result<()> {
    let out = &mut ctx.out;
    out.line(format_args!("removed:    {}", by_kind(&r.removed)))?;
    out.line(format_args!(
        "files:      {} removed, {} ({} bytes) freed",
        r.files.removed.len(),
        output::size(r.bytes_freed()),
        r.bytes_freed()
    ))?;
    out.line(format_args!(
        "phases:     mark {}, sweep {} (write lock held), cleanup {}",
        millis(r.mark),
        millis(r.sweep),
        millis(r.cleanup)
    ))?;
    if r.kept_late > 0 {
        out.line(format_args!(
            "kept late:  {} (reached by writes during the mark)",
            r.kept_late
        ))?;
    }
    if !r.files.failed.is_empty() {
        out.line(format_args!(
            "failures:   {} (see warnings)",
            r.files.failed.len()
        ))?;
    }
    if !r.files.missing.is_empty() {
        out.line(format_args!(
            "missing:    {} records without their data (see warnings)",
            r.files.missing.len()
        ))?;
    }
    if let Some(t) = r.next_expiry {
        out.line(format_args!("next expiry: {}", output::time(t)))?;
    }
    Ok(())
}

/// The dry run: what would go, with its bytes, and the orphan files.
fn print_plan(ctx: &mut Ctx, plan: &Plan) -> Result<()> {
    if ctx.json {
        ctx.out.json(plan)?;
        return Ok(());
    }
    let out = &mut ctx.out;
    if plan.remove.is_empty() && plan.orphans.is_empty() {
        out.line("nothing to remove")?;
        return Ok(());
    }
    if !plan.remove.is_empty() {
        let mut t = table(["KIND", "NAMESPACE", "KEY", "UNIQUE", "SHARED"]);
        for d in &plan.remove {
            t.add_row([
                d.node.kind.to_string(),
                d.node.ns.clone(),
                d.node.key.clone(),
                output::size(d.unique_bytes),
                output::size(d.shared_bytes),
            ]);
        }
        out.table(&t)?;
    }
    if !plan.orphans.is_empty() {
        if !plan.remove.is_empty() {
            out.line("")?;
        }
        let mut t = table(["ORPHAN", "PATH", "SIZE"]);
        for o in &plan.orphans {
            t.add_row([
                o.kind.to_owned(),
                o.path.display().to_string(),
                output::size(o.bytes),
            ]);
        }
        out.table(&t)?;
    }
    out.line("")?;
    out.line(format_args!(
        "would remove: {}; {} orphan files and directories",
        by_kind(plan.remove.iter().map(|d| &d.node)),
        plan.orphans.len()
    ))?;
    out.line(format_args!(
        "would free:   {} ({} bytes); {} stay shared",
        output::size(plan.unique_bytes),
        plan.unique_bytes,
        output::size(plan.shared_bytes)
    ))?;
    Ok(())
}

/// `gcctl why OBJECT`.
pub fn why(ctx: &mut Ctx, text: &str) -> Result<()> {
    let ns = ctx.scope()?.namespace().to_owned();
    let objects = strata_gc::resolve(&ctx.store, Some(&ns), text)?;
    if objects.is_empty() {
        bail!("no object named {text} in namespace {ns}");
    }
    let answers = objects
        .iter()
        .map(|o| strata_gc::why(&ctx.store, o))
        .collect::<Result<Vec<_>, _>>()?;
    if ctx.json {
        ctx.out.json(&answers)?;
        return Ok(());
    }
    for (i, w) in answers.iter().enumerate() {
        if i > 0 {
            ctx.out.line("")?;
        }
        if !w.kept {
            ctx.out.line(format_args!(
                "{}: not kept: would be removed by the next gc",
                w.object
            ))?;
            continue;
        }
        let roots = w.roots;
        let paths = w.paths.len();
        ctx.out.line(format_args!(
            "{}: kept by {roots} root{} ({paths} path{})",
            w.object,
            if roots == 1 { "" } else { "s" },
            if paths == 1 { "" } else { "s" }
        ))?;
        for p in &w.paths {
            ctx.out.line(format_args!("  {}", path_line(p)))?;
        }
        if w.truncated {
            ctx.out.line(format_args!(
                "  ... and more paths (at most {} are shown)",
                strata_gc::why::MAX_PATHS
            ))?;
        }
    }
    Ok(())
}

/// `root (reason, expires T) -> step [via label] -> ...`.
fn path_line(p: &strata_gc::why::WhyPath) -> String {
    let mut parts = Vec::with_capacity(p.steps.len());
    for (i, s) in p.steps.iter().enumerate() {
        let mut notes = Vec::new();
        if i == 0 {
            notes.push(p.root.clone());
        }
        if let Some(e) = &s.expires {
            notes.push(format!("expires {e}"));
        }
        let mut text = s.node.to_string();
        if let Some(via) = &s.via {
            let flat = if s.flat { ", flat" } else { "" };
            text.push_str(&format!(" [via {via}{flat}]"));
        } else if s.flat {
            notes.push("flat".to_owned());
        }
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join(", ")));
        }
        parts.push(text);
    }
    parts.join(" -> ")
}

/// `gcctl du [--by image|namespace|lease]`.
pub fn du(ctx: &mut Ctx, by: DuBy) -> Result<()> {
    let by = match by {
        DuBy::Image => By::Image,
        DuBy::Namespace => By::Namespace,
        DuBy::Lease => By::Lease,
    };
    let bar = spinner(ctx, "measuring");
    let report = strata_gc::usage::usage(&ctx.store, by);
    bar.finish_and_clear();
    let report: UsageReport = report?;
    if ctx.json {
        ctx.out.json(&report)?;
        return Ok(());
    }
    let owner = match by {
        By::Image => "IMAGE",
        By::Namespace => "NAMESPACE",
        By::Lease => "LEASE",
    };
    let mut t = table([owner, "UNIQUE", "SHARED", "OBJECTS"]);
    for r in &report.rows {
        t.add_row([
            r.owner.clone(),
            output::size(r.unique_bytes),
            output::size(r.shared_bytes),
            r.objects.to_string(),
        ]);
    }
    let out = &mut ctx.out;
    out.table(&t)?;
    out.line("")?;
    let unique: u64 = report.rows.iter().map(|r| r.unique_bytes).sum();
    for (what, bytes) in [
        ("unique", unique),
        ("shared", report.shared_bytes),
        ("unattributed", report.unattributed_bytes),
        ("database", report.database_bytes),
        ("total", report.total_bytes),
    ] {
        out.line(format_args!(
            "{:<14}{} ({bytes} bytes)",
            format!("{what}:"),
            output::size(bytes)
        ))?;
    }
    Ok(())
}

/// `gcctl fsck [--repair]`: exit 1 ([`ProblemsFound`]) unless every problem was repaired.
pub fn fsck(ctx: &mut Ctx, repair: bool) -> Result<()> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    if !ctx.json && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    let mut phase = "";
    let options = FsckOptions::new().with_repair(repair);
    let report = strata_gc::fsck::fsck(&ctx.store, &options, &mut |p: Progress| {
        if p.phase != phase {
            phase = p.phase;
            let template = if p.phase == "blobs" {
                "{msg:9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
            } else {
                "{msg:9} [{bar:30}] {pos}/{len}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(p.phase);
            bar.reset();
        }
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    let report = report?;
    if ctx.json {
        ctx.out.json(&report)?;
    } else {
        print_fsck(ctx, &report, repair)?;
    }
    if report.unrepaired().next().is_some() {
        return Err(ProblemsFound.into());
    }
    Ok(())
}

fn print_fsck(ctx: &mut Ctx, r: &FsckReport, repair: bool) -> Result<()> {
    let out = &mut ctx.out;
    if !r.problems.is_empty() {
        let mut t = if repair {
            table(["PROBLEM", "OBJECT", "REPAIRED", "DETAIL"])
        } else {
            table(["PROBLEM", "OBJECT", "DETAIL"])
        };
        for p in &r.problems {
            let mut row = vec![p.kind.to_string(), p.object.clone()];
            if repair {
                row.push(if p.repaired { "yes" } else { "no" }.to_owned());
            }
            row.push(p.detail.clone());
            t.add_row(row);
        }
        out.table(&t)?;
        out.line("")?;
    }
    let c = &r.checked;
    out.line(format_args!(
        "checked: {} ({}), {}, {}, {}, {}",
        count(c.blobs, "blob"),
        output::size(c.bytes),
        count(c.snapshots, "snapshot"),
        count(c.ingests, "ingest"),
        count(c.leases, "lease resource"),
        count(c.mounts, "mount")
    ))?;
    if let Some(q) = &r.quarantine {
        out.line(format_args!("quarantine: {}", q.display()))?;
    }
    let unrepaired = r.unrepaired().count();
    let found = r.problems.len();
    let problems = count(u64::try_from(found).unwrap_or(u64::MAX), "problem");
    if found == 0 {
        out.line("clean")?;
    } else if repair {
        out.line(format_args!(
            "{problems}: {} repaired, {unrepaired} left",
            found - unrepaired
        ))?;
    } else {
        out.line(format_args!(
            "{problems} (gcctl fsck --repair repairs what it can)"
        ))?;
    }
    Ok(())
}

/// `gcctl compact`: takes the whole context, since compaction consumes the store.
pub fn compact(ctx: Ctx) -> Result<()> {
    let Ctx {
        store,
        json,
        mut out,
        ..
    } = ctx;
    let meta = store.layout().meta();
    let mut shown = store.compact()?;
    // The store is closed now. Closing writes to the file again (redb's allocator state), so
    // the size on disk is the true "after"; the library measures it before closing.
    if let Ok(m) = std::fs::metadata(&meta) {
        shown.after = m.len();
    }
    let printed = if json {
        out.json(&shown)
    } else {
        out.line(format_args!(
            "meta.redb: {} -> {} ({} -> {} bytes, {} reclaimed)",
            output::size(shown.before),
            output::size(shown.after),
            shown.before,
            shown.after,
            output::size(shown.before.saturating_sub(shown.after))
        ))
    };
    let flushed = out.flush();
    printed?;
    Ok(flushed?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_gc::why::{Step, WhyPath};

    fn step(kind: Kind, key: &str, via: Option<&str>, expires: Option<&str>) -> Step {
        Step {
            node: Node::new(kind, "default", key),
            flat: false,
            via: via.map(str::to_owned),
            expires: expires.map(str::to_owned),
        }
    }

    #[test]
    fn why_paths_read_root_first_with_reasons_and_labels() {
        let p = WhyPath {
            root: "live lease".to_owned(),
            steps: vec![
                step(Kind::Lease, "l1", None, Some("2030-01-01T00:00:00Z")),
                step(Kind::Content, "sha256:aa", Some("lease"), None),
            ],
        };
        assert_eq!(
            path_line(&p),
            "lease:default/l1 (live lease, expires 2030-01-01T00:00:00Z) \
             -> content:default/sha256:aa [via lease]"
        );
        let mut flat = step(Kind::Snapshot, "overlay/k", Some("parent"), None);
        flat.flat = true;
        let p = WhyPath {
            root: "image".to_owned(),
            steps: vec![step(Kind::Image, "img", None, None), flat],
        };
        assert_eq!(
            path_line(&p),
            "image:default/img (image) -> snapshot:default/overlay/k [via parent, flat]"
        );
    }

    #[test]
    fn removed_objects_are_counted_by_kind_in_kind_order() {
        let nodes = [
            Node::new(Kind::Snapshot, "a", "overlay/x"),
            Node::new(Kind::Content, "a", "sha256:1"),
            Node::new(Kind::Content, "b", "sha256:1"),
        ];
        assert_eq!(by_kind(&nodes), "content 2, snapshot 1");
        assert_eq!(by_kind(&[]), "nothing");
        assert_eq!(count(1u64, "blob"), "1 blob");
        assert_eq!(count(0u64, "blob"), "0 blobs");
    }
}
