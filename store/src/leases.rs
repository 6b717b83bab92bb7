//! Leases: named, optionally expiring sets of resources that keep objects alive for GC.
//!
//! containerd semantics: a lease holds content (by digest), ingests (by ref), images (by
//! name) and snapshots (`snapshots/<snapshotter>`, by key). Resources need not exist. Work
//! done in a [`Scope`] with a lease adds what it creates to that lease in the same
//! transaction. The label `containerd.io/gc.expire` (RFC 3339) makes a lease expire;
//! `containerd.io/gc.flat` makes it flat. Lease labels are not size-checked (a containerd quirk
//! kept for compatibility).

use std::collections::BTreeMap;
use std::time::Duration;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::db::{self, LEASE_RESOURCES, LEASES, WriteTxn};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_lookup};
use crate::namespaces;
use crate::object::Node;
use crate::store::{Scope, Store};
use crate::timestamp::Timestamp;

const TABLE: &str = "leases";

/// Label holding a lease's (or image's) expiry time, RFC 3339.
pub const LABEL_EXPIRE: &str = "containerd.io/gc.expire";
/// Label making a lease flat: it keeps only its own resources, not what they reference.
pub const LABEL_FLAT: &str = "containerd.io/gc.flat";

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Its id.
    pub id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its labels (including `containerd.io/gc.expire` when it expires).
    pub labels: BTreeMap<String, String>,
}

impl Lease {
    /// The expiry from `containerd.io/gc.expire`, if set and parseable.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.labels
            .get(LABEL_EXPIRE)
            .and_then(|v| Timestamp::parse_rfc3339(v))
    }

    /// The label that makes a lease expire `after` from now.
    pub fn expire_label(after: Duration) -> (String, String) {
        (
            LABEL_EXPIRE.to_owned(),
            Timestamp::now().plus(after).to_rfc3339(),
        )
    }
}

impl Adaptor for Lease {
    fn field(&self, path: &[&str]) -> Option<std::borrow::Cow<'_, str>> {
        match path {
            ["id"] => Some(self.id.as_str().into()),
            ["labels", rest @ ..] => label_lookup(&self.labels, rest),
            _ => None,
        }
    }
}

/// One resource of a lease: `kind` is `content`, `ingests`, `images` or
/// `snapshots/<snapshotter>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Resource {
    /// The resource id: a digest, an ingest ref, an image name or a snapshot key.
    pub id: String,
    /// The resource type (`type` in JSON, as containerd names it).
    #[serde(rename = "type")]
    pub kind: String,
}

impl Resource {
    /// A resource of `kind` named `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Resource {
            id: id.into(),
            kind: kind.into(),
        }
    }

    /// Checks the type and normalizes the id, with containerd's rules.
    fn validated(&self) -> Result<Resource> {
        if self.id.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "lease resource of type {:?} needs an id",
                self.kind
            )));
        }
        match self.kind.split('/').collect::<Vec<_>>().as_slice() {
            ["content"] => {
                let d: Digest = self.id.parse()?;
                Ok(Resource::new("content", d.to_string()))
            }
            ["ingests"] | ["images"] => Ok(self.clone()),
            ["snapshots", sn] if !sn.is_empty() => Ok(self.clone()),
            ["snapshots"] | ["snapshots", ..] | ["images" | "content" | "ingests", ..] => {
                Err(Error::InvalidArgument(format!(
                    "invalid lease resource type {:?}: expected content, ingests, images or snapshots/<snapshotter>",
                    self.kind
                )))
            }
            _ => Err(Error::NotImplemented(format!(
                "lease resource type {:?}",
                self.kind
            ))),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub(crate) created_at: Timestamp,
    pub(crate) labels: BTreeMap<String, String>,
}

/// Lease operations; see [`Store::leases`].
#[derive(Debug)]
pub struct Leases<'a> {
    pub(crate) store: &'a Store,
}

impl Leases<'_> {
    /// Creates a lease.
    ///
    /// # Errors
    /// InvalidArgument for an empty id; AlreadyExists.
    pub fn create(
        &self,
        namespace: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease> {
        let scope = Scope::new(namespace)?;
        if id.is_empty() {
            return Err(Error::InvalidArgument("lease id must not be empty".into()));
        }
        let labels: BTreeMap<_, _> = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let txn = self.store.db().write()?;
        namespaces::ensure(&txn, scope.namespace())?;
        let rec = LeaseRecord {
            created_at: Timestamp::now(),
            labels,
        };
        {
            let mut t = txn.open_table(LEASES)?;
            if t.get((scope.namespace(), id))?.is_some() {
                return Err(Error::already_exists("lease", id));
            }
            db::put(&mut t, TABLE, scope.namespace(), id, &rec)?;
        }
        txn.touch(Node::new(crate::object::Kind::Lease, scope.namespace(), id));
        if let Some(at) = rec
            .labels
            .get(LABEL_EXPIRE)
            .and_then(|v| Timestamp::parse_rfc3339(v))
        {
            txn.expires(at);
        }
        txn.commit()?;
        Ok(Lease {
            id: id.to_owned(),
            created_at: rec.created_at,
            labels: rec.labels,
        })
    }

    /// One lease.
    ///
    /// # Errors
    /// NotFound.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Lease> {
        let txn = self.store.db().read()?;
        let t = txn.open_table(LEASES)?;
        let rec: LeaseRecord =
            db::get(&t, TABLE, namespace, id)?.ok_or_else(|| Error::not_found("lease", id))?;
        Ok(Lease {
            id: id.to_owned(),
            created_at: rec.created_at,
            labels: rec.labels,
        })
    }

    /// The leases of a namespace matching `filters` (fields `id`, `labels.*`; several
    /// filters are OR'd).
    pub fn list<S: AsRef<str>>(&self, namespace: &str, filters: &[S]) -> Result<Vec<Lease>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read()?;
        let t = txn.open_table(LEASES)?;
        Ok(db::list::<LeaseRecord>(&t, TABLE, namespace)?
            .into_iter()
            .map(|(id, r)| Lease {
                id,
                created_at: r.created_at,
                labels: r.labels,
            })
            .filter(|l| filter.matches(l))
            .collect())
    }

    /// Deletes a lease and its resource list. The resources themselves stay until GC finds
    /// nothing else keeps them.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<()> {
        let txn = self.store.db().write()?;
        {
            let mut t = txn.open_table(LEASES)?;
            if t.remove((namespace, id))?.is_none() {
                return Err(Error::not_found("lease", id));
            }
        }
        remove_resources(&txn, namespace, Some(id))?;
        txn.deleted();
        txn.commit()?;
        Ok(())
    }

    /// Adds a resource to a lease; idempotent; the resource need not exist.
    ///
    /// # Errors
    /// NotFound for a missing lease; InvalidArgument for a bad digest or snapshot type;
    /// NotImplemented for another type.
    pub fn add_resource(&self, namespace: &str, id: &str, resource: &Resource) -> Result<()> {
        self.change_resource(namespace, id, resource, true)
    }

    /// Adds several resources to a lease in one transaction (see [`Leases::add_resource`]):
    /// either all are added or none.
    ///
    /// # Errors
    /// Those of [`Leases::add_resource`], for the first resource that fails.
    pub fn add_resources(&self, namespace: &str, id: &str, resources: &[Resource]) -> Result<()> {
        let valid = resources
            .iter()
            .map(Resource::validated)
            .collect::<Result<Vec<_>>>()?;
        let txn = self.store.db().write()?;
        require_lease(&txn, namespace, id)?;
        {
            let mut t = txn.open_table(LEASE_RESOURCES)?;
            for r in &valid {
                t.insert((namespace, id, r.kind.as_str(), r.id.as_str()), ())?;
                touch_resource(&txn, namespace, &r.kind, &r.id);
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes a resource from a lease; a resource not in it is fine.
    ///
    /// # Errors
    /// NotFound for a missing lease; the type errors of [`Leases::add_resource`].
    pub fn delete_resource(&self, namespace: &str, id: &str, resource: &Resource) -> Result<()> {
        self.change_resource(namespace, id, resource, false)
    }

    fn change_resource(
        &self,
        namespace: &str,
        id: &str,
        resource: &Resource,
        add: bool,
    ) -> Result<()> {
        let r = resource.validated()?;
        let txn = self.store.db().write()?;
        require_lease(&txn, namespace, id)?;
        let key = (namespace, id, r.kind.as_str(), r.id.as_str());
        let mut t = txn.open_table(LEASE_RESOURCES)?;
        if add {
            t.insert(key, ())?;
            touch_resource(&txn, namespace, &r.kind, &r.id);
        } else {
            t.remove(key)?;
            txn.deleted();
        }
        drop(t);
        txn.commit()?;
        Ok(())
    }

    /// A lease's resources, ordered by type (content, images, ingests, snapshots/...) then id.
    ///
    /// # Errors
    /// NotFound for a missing lease.
    pub fn resources(&self, namespace: &str, id: &str) -> Result<Vec<Resource>> {
        let txn = self.store.db().read()?;
        if db::get::<LeaseRecord>(&txn.open_table(LEASES)?, TABLE, namespace, id)?.is_none() {
            return Err(Error::not_found("lease", id));
        }
        let t = txn.open_table(LEASE_RESOURCES)?;
        let mut out = Vec::new();
        for item in t.range((namespace, id, "", "")..)? {
            let (k, ()) = item.map(|(k, _)| (k, ()))?;
            let (kns, kid, kind, rid) = k.value();
            if kns != namespace || kid != id {
                break;
            }
            out.push(Resource::new(kind, rid));
        }
        Ok(out)
    }
}

fn require_lease(txn: &WriteTxn<'_>, namespace: &str, id: &str) -> Result<()> {
    let t = txn.open_table(LEASES)?;
    if t.get((namespace, id))?.is_none() {
        return Err(Error::not_found("lease", id));
    }
    Ok(())
}

/// Adds `(kind, id)` to the scope's lease, if it has one, inside `txn`.
///
/// # Errors
/// NotFound ("lease ... not found") when the scope names a lease that does not exist.
pub fn attach(txn: &WriteTxn<'_>, scope: &Scope, kind: &str, id: &str) -> Result<()> {
    let Some(lease) = scope.lease() else {
        return Ok(());
    };
    require_lease(txn, scope.namespace(), lease)?;
    txn.open_table(LEASE_RESOURCES)?
        .insert((scope.namespace(), lease, kind, id), ())?;
    touch_resource(txn, scope.namespace(), kind, id);
    Ok(())
}

/// A lease taking an object is a new reference to it: a concurrent mark must keep it.
fn touch_resource(txn: &WriteTxn<'_>, namespace: &str, kind: &str, id: &str) {
    if let Some(node) = Node::of_lease_resource(namespace, kind, id) {
        txn.touch(node);
    }
}

/// Removes `(kind, id)` from the scope's lease, if it has one, inside `txn`.
pub fn detach(txn: &WriteTxn<'_>, scope: &Scope, kind: &str, id: &str) -> Result<()> {
    let Some(lease) = scope.lease() else {
        return Ok(());
    };
    txn.open_table(LEASE_RESOURCES)?
        .remove((scope.namespace(), lease, kind, id))?;
    Ok(())
}

/// Removes every resource row of one lease, or of every lease in the namespace when `lease` is
/// `None`.
pub(crate) fn remove_resources(
    txn: &WriteTxn<'_>,
    namespace: &str,
    lease: Option<&str>,
) -> Result<()> {
    let mut t = txn.open_table(LEASE_RESOURCES)?;
    let mut doomed: Vec<(String, String, String)> = Vec::new();
    for item in t.range((namespace, lease.unwrap_or(""), "", "")..)? {
        let (k, _) = item?;
        let (kns, kid, kind, rid) = k.value();
        if kns != namespace || lease.is_some_and(|l| l != kid) {
            break;
        }
        doomed.push((kid.to_owned(), kind.to_owned(), rid.to_owned()));
    }
    for (kid, kind, rid) in &doomed {
        t.remove((namespace, kid.as_str(), kind.as_str(), rid.as_str()))?;
    }
    Ok(())
}
