//! Snapshot kinds, infos and usage: what callers see of a snapshot record.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use strata_store::Timestamp;
use strata_store::filters::{Adaptor, label_lookup};

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, cannot be committed.
    View,
    /// Writable, can be committed.
    Active,
    /// Immutable; can be the parent of others.
    Committed,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        })
    }
}

/// Disk used by one snapshot's own layer (not its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of allocated blocks.
    pub size: u64,
    /// Inodes.
    pub inodes: u64,
}

/// A snapshot as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Its key (or name, once committed).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The committed snapshot it is based on, if any.
    pub parent: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update.
    pub updated_at: Timestamp,
}

impl Adaptor for Info {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        match path {
            ["kind"] => Some(self.kind.to_string().into()),
            ["name"] => Some(self.name.as_str().into()),
            // containerd matches `parent==""` for snapshots without one.
            ["parent"] => Some(self.parent.as_deref().unwrap_or("").into()),
            ["labels", rest @ ..] => label_lookup(&self.labels, rest),
            _ => None,
        }
    }
}

/// The stored record of one snapshot, keyed by (namespace, snapshotter, key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// Its directory: `snapshots/<snapshotter>/<id>`. The first field: cleanup decodes it
    /// alone (`gc::snapshot_dirs`).
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) parent: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
    /// Measured at commit; `None` while active.
    pub(crate) usage: Option<Usage>,
}

impl SnapshotRecord {
    /// A record created now (created and updated times are the clock's).
    pub(crate) fn new(
        id: u64,
        kind: Kind,
        parent: Option<String>,
        labels: BTreeMap<String, String>,
        usage: Option<Usage>,
    ) -> SnapshotRecord {
        let now = Timestamp::now();
        SnapshotRecord {
            id,
            kind,
            parent,
            labels,
            created_at: now,
            updated_at: now,
            usage,
        }
    }

    pub(crate) fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            kind: self.kind,
            parent: self.parent.clone(),
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}
