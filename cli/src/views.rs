//! The JSON shapes `--json` prints: the library's records with digests as `alg:hex` strings
//! and times as RFC 3339 strings (as containerd's JSON has them), so scripts can compare
//! them with what they hold.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_store::content::{BlobInfo, IngestStatus};
use strata_store::images::{Descriptor, Image};
use strata_store::leases::{Lease, Resource};
use strata_store::namespaces::Namespace;

#[derive(Debug, Serialize)]
pub struct BlobView {
    pub digest: String,
    pub size: u64,
    pub created_at: String,
    pub updated_at: String,
    pub labels: BTreeMap<String, String>,
}

impl From<&BlobInfo> for BlobView {
    fn from(b: &BlobInfo) -> Self {
        BlobView {
            digest: b.digest.to_string(),
            size: b.size,
            created_at: b.created_at.to_rfc3339(),
            updated_at: b.updated_at.to_rfc3339(),
            labels: b.labels.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IngestView {
    #[serde(rename = "ref")]
    pub reference: String,
    pub offset: u64,
    pub total: u64,
    pub expected: Option<String>,
    pub started_at: String,
    pub updated_at: String,
}

impl From<&IngestStatus> for IngestView {
    fn from(s: &IngestStatus) -> Self {
        IngestView {
            reference: s.reference.clone(),
            offset: s.offset,
            total: s.total,
            expected: s.expected.as_ref().map(ToString::to_string),
            started_at: s.started_at.to_rfc3339(),
            updated_at: s.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DescriptorView {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

impl From<&Descriptor> for DescriptorView {
    fn from(d: &Descriptor) -> Self {
        DescriptorView {
            media_type: d.media_type.clone(),
            digest: d.digest.to_string(),
            size: d.size,
            annotations: d.annotations.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ImageView {
    pub name: String,
    pub target: DescriptorView,
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Image> for ImageView {
    fn from(i: &Image) -> Self {
        ImageView {
            name: i.name.clone(),
            target: DescriptorView::from(&i.target),
            labels: i.labels.clone(),
            created_at: i.created_at.to_rfc3339(),
            updated_at: i.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LeaseView {
    pub id: String,
    pub created_at: String,
    /// From `containerd.io/gc.expire`; `None` for a lease that never expires.
    pub expires_at: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl From<&Lease> for LeaseView {
    fn from(l: &Lease) -> Self {
        LeaseView {
            id: l.id.clone(),
            created_at: l.created_at.to_rfc3339(),
            expires_at: l.expires_at().map(|t| t.to_rfc3339()),
            labels: l.labels.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ResourceView {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl From<&Resource> for ResourceView {
    fn from(r: &Resource) -> Self {
        ResourceView {
            kind: r.kind.clone(),
            id: r.id.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NamespaceView {
    pub name: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
}

impl From<&Namespace> for NamespaceView {
    fn from(n: &Namespace) -> Self {
        NamespaceView {
            name: n.name.clone(),
            created_at: n.created_at.to_rfc3339(),
            labels: n.labels.clone(),
        }
    }
}

/// What a removal command prints with `--json`.
#[derive(Debug, Serialize)]
pub struct Removed<'a> {
    pub removed: &'a [String],
}
