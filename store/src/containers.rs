//! Container records: the roots that keep a running container's snapshot and image alive.
//!
//! The store keeps only what GC needs (image, snapshotter, snapshot key, labels) plus the
//! runtime name for filtering; specs and runtime options belong to the engine above.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{self, CONTAINERS};
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_lookup};
use crate::identifiers::{apply_label_path, validate_identifier, validate_labels};
use crate::namespaces;
use crate::object::{Kind, Node};
use crate::store::{Scope, Store};
use crate::timestamp::Timestamp;

const TABLE: &str = "containers";

/// A container record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Its id (an identifier).
    pub id: String,
    /// The image it was created from (may be empty).
    pub image: String,
    /// The snapshotter holding its root filesystem, e.g. `overlay`.
    pub snapshotter: String,
    /// Key of its active snapshot in that snapshotter.
    pub snapshot_key: String,
    /// Runtime name, e.g. `io.containerd.runc.v2`.
    pub runtime: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time (set by the store).
    pub created_at: Timestamp,
    /// Last update (set by the store).
    pub updated_at: Timestamp,
}

impl Container {
    /// A container record with just an id; fill in the rest before creating it.
    pub fn new(id: impl Into<String>) -> Container {
        Container {
            id: id.into(),
            image: String::new(),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            runtime: String::new(),
            labels: BTreeMap::new(),
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        }
    }
}

impl Adaptor for Container {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        match path {
            ["id"] => Some(self.id.as_str().into()),
            ["image"] => Some(self.image.as_str().into()),
            ["runtime", "name"] => Some(self.runtime.as_str().into()),
            ["snapshotter"] => Some(self.snapshotter.as_str().into()),
            ["labels", rest @ ..] => label_lookup(&self.labels, rest),
            _ => None,
        }
    }
}

/// Container operations; see [`Store::containers`].
#[derive(Debug)]
pub struct Containers<'a> {
    pub(crate) store: &'a Store,
}

impl Containers<'_> {
    /// One container.
    ///
    /// # Errors
    /// NotFound.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Container> {
        let txn = self.store.db().read()?;
        db::get(&txn.open_table(CONTAINERS)?, TABLE, namespace, id)?
            .ok_or_else(|| Error::not_found("container", id))
    }

    /// The containers of a namespace matching `filters` (fields `id`, `image`,
    /// `runtime.name`, `snapshotter`, `labels.*`).
    pub fn list<S: AsRef<str>>(&self, namespace: &str, filters: &[S]) -> Result<Vec<Container>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read()?;
        Ok(
            db::list::<Container>(&txn.open_table(CONTAINERS)?, TABLE, namespace)?
                .into_iter()
                .map(|(_, c)| c)
                .filter(|c| filter.matches(c))
                .collect(),
        )
    }

    /// Creates a container record.
    ///
    /// # Errors
    /// InvalidArgument (bad id, a snapshot key without a snapshotter, bad label);
    /// AlreadyExists.
    pub fn create(&self, scope: &Scope, mut container: Container) -> Result<Container> {
        validate_identifier("container id", &container.id)?;
        if !container.snapshot_key.is_empty() && container.snapshotter.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {:?}: a snapshot key needs a snapshotter",
                container.id
            )));
        }
        container.labels = validate_labels(container.labels)?;
        let now = Timestamp::now();
        container.created_at = now;
        container.updated_at = now;
        let ns = scope.namespace();
        let txn = self.store.db().write()?;
        namespaces::ensure(&txn, ns)?;
        {
            let mut t = txn.open_table(CONTAINERS)?;
            if db::exists(&t, ns, &container.id)? {
                return Err(Error::already_exists("container", &container.id));
            }
            db::put(&mut t, TABLE, ns, &container.id, &container)?;
        }
        txn.touch(Node::new(Kind::Container, ns, &container.id));
        txn.commit()?;
        Ok(container)
    }

    /// Updates by field paths `labels`, `labels.<k>`, `image`, `snapshotkey`; no paths replaces
    /// all three (runtime and snapshotter must stay as they are).
    ///
    /// # Errors
    /// NotFound; InvalidArgument for another path.
    pub fn update(
        &self,
        scope: &Scope,
        container: &Container,
        paths: &[&str],
    ) -> Result<Container> {
        let ns = scope.namespace();
        let txn = self.store.db().write()?;
        let cur = {
            let mut t = txn.open_table(CONTAINERS)?;
            let mut cur: Container = db::get(&t, TABLE, ns, &container.id)?
                .ok_or_else(|| Error::not_found("container", &container.id))?;
            if paths.is_empty() {
                // A full update replaces every mutable field; the runtime and snapshotter of
                // a container never change.
                if container.runtime != cur.runtime || container.snapshotter != cur.snapshotter {
                    return Err(Error::InvalidArgument(format!(
                        "container {:?}: runtime and snapshotter cannot be changed",
                        container.id
                    )));
                }
                cur.labels = validate_labels(container.labels.clone())?;
                cur.image.clone_from(&container.image);
                cur.snapshot_key.clone_from(&container.snapshot_key);
            }
            for path in paths {
                if *path == "image" {
                    cur.image.clone_from(&container.image);
                } else if *path == "snapshotkey" {
                    cur.snapshot_key.clone_from(&container.snapshot_key);
                } else if !apply_label_path("labels", path, &mut cur.labels, &container.labels)? {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {path:?} field on container {:?}",
                        container.id
                    )));
                }
            }
            cur.updated_at = Timestamp::now();
            db::put(&mut t, TABLE, ns, &container.id, &cur)?;
            cur
        };
        txn.touch(Node::new(Kind::Container, ns, &container.id));
        txn.commit()?;
        Ok(cur)
    }

    /// Deletes a container record.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&self, scope: &Scope, id: &str) -> Result<()> {
        let txn = self.store.db().write()?;
        if txn
            .open_table(CONTAINERS)?
            .remove((scope.namespace(), id))?
            .is_none()
        {
            return Err(Error::not_found("container", id));
        }
        txn.deleted();
        txn.commit()?;
        Ok(())
    }
}
