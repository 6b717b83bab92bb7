//! `gcctl ns ls|create|rm|label`.

use anyhow::Result;
use strata_store::identifiers::validate_label;

use crate::app::{Ctx, each};
use crate::args::NsCommand;
use crate::output::{self, table};
use crate::parse::label_map;

pub fn run(ctx: &mut Ctx, cmd: &NsCommand) -> Result<()> {
    match cmd {
        NsCommand::Ls => {
            let namespaces = ctx.store.namespaces().list()?;
            if ctx.json {
                ctx.out.json(&namespaces)?;
            } else {
                let mut t = table(["NAME", "LABELS"]);
                for n in &namespaces {
                    t.add_row([n.name.clone(), output::labels(&n.labels)]);
                }
                ctx.out.table(&t)?;
            }
        }
        NsCommand::Create { name, labels } => {
            let ns = ctx.store.namespaces().create(name, label_map(labels))?;
            if ctx.json {
                ctx.out.json(&ns)?;
            } else {
                ctx.out.line(&ns.name)?;
            }
        }
        NsCommand::Rm { names } => {
            let namespaces = ctx.store.namespaces();
            let (removed, outcome) = each(names, |name| Ok(namespaces.delete(name)?));
            super::print_removed(ctx, &removed)?;
            outcome?;
        }
        NsCommand::Label { name, labels } => {
            // Each label is its own transaction in the library: check them all first so a
            // bad one changes nothing.
            for l in labels {
                validate_label(&l.key, &l.value)?;
            }
            let namespaces = ctx.store.namespaces();
            let mut ns = namespaces.get(name)?;
            for l in labels {
                ns = namespaces.set_label(name, &l.key, &l.value)?;
            }
            if ctx.json {
                ctx.out.json(&ns)?;
            }
        }
    }
    Ok(())
}
