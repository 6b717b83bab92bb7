//! `gcctl snapshots ls|tree|info|prepare|view|commit|rm|mounts|usage|label`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use strata_snapshotter::backend::mount::shell_command;
use strata_snapshotter::{Info, Mount, Snapshotter, Usage};
use strata_store::Timestamp;
use strata_store::identifiers::validate_label;

use crate::app::{Ctx, each};
use crate::args::{SnapshotsArgs, SnapshotsCommand};
use crate::output::{self, table};
use crate::parse::label_map;

pub fn run(ctx: &mut Ctx, args: &SnapshotsArgs) -> Result<()> {
    let sn = Snapshotter::open(&ctx.store, &args.snapshotter)?;
    let scope = ctx.scope()?;
    let ns = scope.namespace();
    match &args.command {
        SnapshotsCommand::Ls(f) => {
            let list = sn.list(ns, &f.filters)?;
            if ctx.json {
                ctx.out.json(&list)?;
            } else {
                let now = Timestamp::now();
                let mut t = table(["KEY", "PARENT", "KIND", "AGE", "LABELS"]);
                for i in &list {
                    t.add_row([
                        i.name.clone(),
                        i.parent.clone().unwrap_or_default(),
                        i.kind.to_string(),
                        output::age(i.created_at, now),
                        output::labels(&i.labels),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        SnapshotsCommand::Tree => {
            let list = sn.list::<&str>(ns, &[])?;
            if ctx.json {
                ctx.out.json(&list)?;
            } else {
                for line in tree_lines(&list) {
                    ctx.out.line(&line)?;
                }
            }
        }
        SnapshotsCommand::Info { key } => {
            let info = sn.stat(ns, key)?;
            if ctx.json {
                ctx.out.json(&info)?;
            } else {
                ctx.out.line(format!("name:     {}", info.name))?;
                ctx.out.line(format!("kind:     {}", info.kind))?;
                ctx.out.line(format!(
                    "parent:   {}",
                    info.parent.as_deref().unwrap_or("")
                ))?;
                ctx.out.line(format!("created:  {}", info.created_at))?;
                ctx.out.line(format!("updated:  {}", info.updated_at))?;
                ctx.out
                    .line(format!("labels:   {}", output::labels(&info.labels)))?;
            }
        }
        SnapshotsCommand::Prepare {
            key,
            parent,
            labels,
        } => {
            let mounts = sn.prepare(&scope, key, parent.as_deref(), label_map(labels))?;
            print_mounts(ctx, &mounts)?;
        }
        SnapshotsCommand::View {
            key,
            parent,
            labels,
        } => {
            let mounts = sn.view(&scope, key, parent.as_deref(), label_map(labels))?;
            print_mounts(ctx, &mounts)?;
        }
        SnapshotsCommand::Commit { name, key, labels } => {
            sn.commit(&scope, name, key, label_map(labels))?;
            if ctx.json {
                ctx.out.json(&sn.stat(ns, name)?)?;
            } else {
                ctx.out.line(name)?;
            }
        }
        SnapshotsCommand::Rm { keys } => {
            let (removed, outcome) = each(keys, |k| Ok(sn.remove(&scope, k)?));
            super::print_removed(ctx, &removed)?;
            outcome?;
        }
        SnapshotsCommand::Mounts { key, target } => {
            let mounts = sn.mounts(ns, key)?;
            if ctx.json {
                ctx.out.json(&mounts)?;
            } else {
                for m in &mounts {
                    ctx.out.line(shell_command(m, target))?;
                }
            }
        }
        SnapshotsCommand::Usage { keys } => {
            let keys: Vec<String> = if keys.is_empty() {
                sn.list::<&str>(ns, &[])?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys.clone()
            };
            let mut usages = Vec::new();
            for key in keys {
                let usage = sn.usage(ns, &key)?;
                usages.push(UsageRow { key, usage });
            }
            if ctx.json {
                ctx.out.json(&usages)?;
            } else {
                let mut t = table(["KEY", "SIZE", "INODES"]);
                for u in &usages {
                    t.add_row([
                        u.key.clone(),
                        output::size(u.usage.size),
                        u.usage.inodes.to_string(),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        SnapshotsCommand::Label { key, labels } => {
            for l in labels {
                validate_label(&l.key, &l.value)?;
            }
            let mut info = sn.stat(ns, key)?;
            let paths: Vec<String> = labels.iter().map(|l| format!("labels.{}", l.key)).collect();
            info.labels = label_map(labels);
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let info = sn.update(ns, &info, &paths)?;
            if ctx.json {
                ctx.out.json(&info)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct UsageRow {
    key: String,
    #[serde(flatten)]
    usage: Usage,
}

fn print_mounts(ctx: &mut Ctx, mounts: &[Mount]) -> Result<()> {
    if ctx.json {
        ctx.out.json(&mounts)?;
    } else {
        for m in mounts {
            ctx.out
                .line(format!("{} {} {}", m.kind, m.source, m.options.join(",")))?;
        }
    }
    Ok(())
}

/// `key [kind]` lines, children indented under their parent, roots first, by key.
fn tree_lines(list: &[Info]) -> Vec<String> {
    let mut children: BTreeMap<Option<&str>, Vec<&Info>> = BTreeMap::new();
    for i in list {
        children.entry(i.parent.as_deref()).or_default().push(i);
    }
    let mut lines = Vec::new();
    let mut stack: Vec<(&Info, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|i| (*i, 0)).collect())
        .unwrap_or_default();
    while let Some((info, depth)) = stack.pop() {
        lines.push(format!(
            "{}{} [{}]",
            "  ".repeat(depth),
            info.name,
            info.kind
        ));
        if let Some(kids) = children.get(&Some(info.name.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    lines
}
