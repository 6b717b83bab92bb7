//! The `leases` check: every `lease_resources` row belongs to an existing lease. It reads
//! keys only, so it runs even when a record does not decode.

use super::ProblemKind;
use super::plan::Action;
use super::records::Records;
use super::run::Run;

impl Run<'_, '_> {
    /// Guarantees: each `lease_resources` row belongs to a lease record, else
    /// `orphan_lease_resource` (such a row would hold its resource for a lease no one can see
    /// or delete).
    pub(super) fn check_leases(&mut self, records: &Records) {
        let total = records.resources.len() as u64;
        self.tick("leases", 0, total);
        for (i, row) in records.resources.iter().enumerate() {
            self.report.checked.leases += 1;
            if !records
                .leases
                .contains(&(row.ns.clone(), row.lease.clone()))
            {
                self.planned(
                    ProblemKind::OrphanLeaseResource,
                    format!(
                        "lease_resources {}/{} {} {}",
                        row.ns, row.lease, row.kind, row.id
                    ),
                    format!("lease {:?} has no record", row.lease),
                    Action::LeaseResource(row.clone()),
                );
            }
            self.tick("leases", i as u64 + 1, total);
        }
    }
}
