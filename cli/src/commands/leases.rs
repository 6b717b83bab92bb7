//! `gcctl leases ls|create|rm [--sync]|prune --expired|add|rm-resource|resources`.

use std::fs::File;
use std::io::Read;
use std::time::Duration;

use anyhow::Result;
use strata_store::Timestamp;
use strata_store::leases::{Lease, Resource};

use crate::app::{Ctx, each};
use crate::args::{LeasesCommand, ResourceArgs};
use crate::output::{self, table};
use crate::parse::label_map;
use crate::views::LeaseView;

pub fn run(ctx: &mut Ctx, cmd: &LeasesCommand) -> Result<()> {
    let scope = ctx.scope()?;
    let ns = scope.namespace();
    let leases = ctx.store.leases();
    match cmd {
        LeasesCommand::Ls(f) => {
            let list = leases.list(ns, &f.filters)?;
            let views = list
                .iter()
                .map(|l| Ok(LeaseView::new(l, leases.resources(ns, &l.id)?.len())))
                .collect::<Result<Vec<_>>>()?;
            if ctx.json {
                ctx.out.json(&views)?;
            } else {
                let now = Timestamp::now();
                let mut t = table(["ID", "CREATED", "EXPIRES", "RESOURCES", "LABELS"]);
                for (l, v) in list.iter().zip(&views) {
                    let expires = match l.expires_at() {
                        None => "-".to_owned(),
                        // Expired leases keep nothing; `leases prune --expired` removes them.
                        Some(t) if t <= now => format!("{} (expired)", output::time(t)),
                        Some(t) => output::time(t),
                    };
                    t.add_row([
                        l.id.clone(),
                        output::time(l.created_at),
                        expires,
                        v.resources.to_string(),
                        output::labels(&l.labels),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        LeasesCommand::Create {
            id,
            expires,
            labels,
        } => {
            let id = id.clone().unwrap_or_else(random_id);
            let mut labels = label_map(labels);
            if *expires > Duration::ZERO {
                let (k, v) = Lease::expire_label(*expires);
                labels.insert(k, v);
            }
            let lease = leases.create(ns, &id, labels)?;
            if ctx.json {
                ctx.out.json(&LeaseView::new(&lease, 0))?;
            } else {
                ctx.out.line(&lease.id)?;
            }
        }
        LeasesCommand::Rm { ids, sync } => {
            let (removed, outcome) = each(ids, |id| Ok(leases.delete(ns, id)?));
            super::print_removed_then(ctx, &removed, *sync)?;
            outcome?;
        }
        LeasesCommand::Prune { expired } => {
            // `--expired` is required by the parser: the only criterion so far.
            debug_assert!(*expired);
            let now = Timestamp::now();
            let none: &[&str] = &[];
            let doomed: Vec<String> = leases
                .list(ns, none)?
                .into_iter()
                .filter(|l| l.expires_at().is_some_and(|t| t <= now))
                .map(|l| l.id)
                .collect();
            let (removed, outcome) = each(&doomed, |id| Ok(leases.delete(ns, id)?));
            super::print_removed_then(ctx, &removed, true)?;
            outcome?;
        }
        LeasesCommand::Add(r) => {
            leases.add_resource(ns, &r.id, &resource(r))?;
        }
        LeasesCommand::RmResource(r) => {
            leases.delete_resource(ns, &r.id, &resource(r))?;
        }
        LeasesCommand::Resources { id } => {
            let list = leases.resources(ns, id)?;
            if ctx.json {
                ctx.out.json(&list)?;
            } else {
                let mut t = table(["TYPE", "ID"]);
                for r in &list {
                    t.add_row([r.kind.clone(), r.id.clone()]);
                }
                ctx.out.table(&t)?;
            }
        }
    }
    Ok(())
}

fn resource(r: &ResourceArgs) -> Resource {
    Resource::new(r.kind.clone(), r.resource.clone())
}

/// `<unix nanos>-<6 base64url characters>`, like containerd's `WithRandomID` (which uses 4).
fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let now = Timestamp::now();
    let mut bytes = [0u8; 6];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: fall back to the std hasher's per-process random keys.
        use std::hash::{BuildHasher, RandomState};
        let h = RandomState::new().hash_one(now.0);
        bytes.copy_from_slice(h.to_le_bytes().get(..6).unwrap_or(&[0; 6]));
    }
    let suffix: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect();
    format!("{}-{suffix}", now.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_look_like_containerds() {
        let a = random_id();
        let (nanos, suffix) = a.split_once('-').unwrap_or_default();
        assert!(nanos.parse::<i64>().is_ok(), "{a}");
        assert_eq!(suffix.len(), 6, "{a}");
        assert_ne!(a, random_id());
    }
}
