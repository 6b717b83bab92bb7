//! JSON shapes `--json` prints beyond the library's own records (which serialize with digests
//! as `alg:hex` and times as RFC 3339 themselves).

use std::collections::BTreeMap;

use serde::Serialize;
use strata_store::leases::Lease;

#[derive(Debug, Serialize)]
pub struct LeaseView {
    pub id: String,
    pub created_at: String,
    /// From `containerd.io/gc.expire`; `None` for a lease that never expires.
    pub expires_at: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// How many resources it holds.
    pub resources: usize,
}

impl LeaseView {
    pub fn new(l: &Lease, resources: usize) -> Self {
        LeaseView {
            id: l.id.clone(),
            created_at: l.created_at.to_rfc3339(),
            expires_at: l.expires_at().map(|t| t.to_rfc3339()),
            labels: l.labels.clone(),
            resources,
        }
    }
}

/// What a removal command prints with `--json`.
#[derive(Debug, Serialize)]
pub struct Removed<'a> {
    pub removed: &'a [String],
}
