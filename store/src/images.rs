//! Image records: a name pointing at a target descriptor (usually a manifest or index).
//!
//! Validation and update rules are containerd's: a non-empty name, a valid target digest, a
//! size above zero and a non-empty media type; updates by field paths `labels[.k]`,
//! `annotations[.k]` and `target`. An image created or updated under a lease joins the
//! lease only when it carries `containerd.io/gc.expire`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{self, IMAGES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter, label_lookup};
use crate::identifiers::{apply_label_path, validate_labels};
use crate::leases::{self, LABEL_EXPIRE};
use crate::namespaces;
use crate::object::{Kind, Node};
use crate::store::{Scope, Store};
use crate::timestamp::Timestamp;

const TABLE: &str = "images";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type, e.g. `application/vnd.oci.image.manifest.v1+json`.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Its name, e.g. `docker.io/library/alpine:3.20`.
    pub name: String,
    /// What it points at.
    pub target: Descriptor,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update time.
    pub updated_at: Timestamp,
}

impl Image {
    /// A new image record (timestamps are set by the store).
    pub fn new(name: impl Into<String>, target: Descriptor) -> Image {
        Image {
            name: name.into(),
            target,
            labels: BTreeMap::new(),
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        }
    }
}

impl Adaptor for Image {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        match path {
            ["name"] => Some(self.name.as_str().into()),
            ["target", "digest"] => Some(self.target.digest.to_string().into()),
            ["target", "mediatype"] => Some(self.target.media_type.as_str().into()),
            ["labels", rest @ ..] => label_lookup(&self.labels, rest),
            ["annotations", rest @ ..] => label_lookup(&self.target.annotations, rest),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub(crate) target: Descriptor,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
}

impl ImageRecord {
    fn into_image(self, name: String) -> Image {
        Image {
            name,
            target: self.target,
            labels: self.labels,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    if image.target.media_type.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "image {:?}: target media type must not be empty",
            image.name
        )));
    }
    if image.target.size == 0 {
        return Err(Error::InvalidArgument(format!(
            "image {:?}: target size must be greater than zero",
            image.name
        )));
    }
    Ok(())
}

/// Image operations; see [`Store::images`].
#[derive(Debug)]
pub struct Images<'a> {
    pub(crate) store: &'a Store,
}

impl Images<'_> {
    /// One image.
    ///
    /// # Errors
    /// NotFound.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Image> {
        let txn = self.store.db().read()?;
        let rec: ImageRecord = db::get(&txn.open_table(IMAGES)?, TABLE, namespace, name)?
            .ok_or_else(|| Error::not_found("image", name))?;
        Ok(rec.into_image(name.to_owned()))
    }

    /// The images of a namespace matching `filters` (fields `name`, `target.digest`,
    /// `target.mediatype`, `labels.*`, `annotations.*`; several filters are OR'd).
    pub fn list<S: AsRef<str>>(&self, namespace: &str, filters: &[S]) -> Result<Vec<Image>> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.store.db().read()?;
        Ok(
            db::list::<ImageRecord>(&txn.open_table(IMAGES)?, TABLE, namespace)?
                .into_iter()
                .map(|(name, r)| r.into_image(name))
                .filter(|i| filter.matches(i))
                .collect(),
        )
    }

    /// Creates an image; created and updated times are set to now.
    ///
    /// # Errors
    /// InvalidArgument (empty name, zero size, empty media type, bad label); AlreadyExists;
    /// NotFound for a scope lease that does not exist.
    pub fn create(&self, scope: &Scope, image: Image) -> Result<Image> {
        validate(&image)?;
        let now = Timestamp::now();
        let rec = ImageRecord {
            labels: validate_labels(image.labels)?,
            target: image.target,
            created_at: now,
            updated_at: now,
        };
        let ns = scope.namespace();
        let txn = self.store.db().write()?;
        namespaces::ensure(&txn, ns)?;
        {
            let mut t = txn.open_table(IMAGES)?;
            if db::exists(&t, ns, &image.name)? {
                return Err(Error::already_exists("image", &image.name));
            }
            db::put(&mut t, TABLE, ns, &image.name, &rec)?;
        }
        txn.touch(Node::new(Kind::Image, ns, &image.name));
        note_expiry(&txn, &rec.labels);
        if rec.labels.contains_key(LABEL_EXPIRE) {
            leases::attach(&txn, scope, "images", &image.name)?;
        }
        txn.commit()?;
        Ok(rec.into_image(image.name))
    }

    /// Updates an image by field paths: `labels`, `labels.<k>`, `annotations`,
    /// `annotations.<k>`, `target`. No paths replaces labels and target.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for another path or an invalid result.
    pub fn update(&self, scope: &Scope, image: &Image, paths: &[&str]) -> Result<Image> {
        let ns = scope.namespace();
        let txn = self.store.db().write()?;
        let updated = {
            let mut t = txn.open_table(IMAGES)?;
            let rec: ImageRecord = db::get(&t, TABLE, ns, &image.name)?
                .ok_or_else(|| Error::not_found("image", &image.name))?;
            let mut cur = rec.into_image(image.name.clone());
            if paths.is_empty() {
                cur.labels = validate_labels(image.labels.clone())?;
                cur.target = image.target.clone();
            }
            for path in paths {
                let handled = *path == "target"
                    || apply_label_path("labels", path, &mut cur.labels, &image.labels)?
                    || apply_label_path(
                        "annotations",
                        path,
                        &mut cur.target.annotations,
                        &image.target.annotations,
                    )?;
                if *path == "target" {
                    cur.target.clone_from(&image.target);
                }
                if !handled {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {path:?} field on image {:?}",
                        image.name
                    )));
                }
            }
            validate(&cur)?;
            cur.updated_at = Timestamp::now();
            let rec = ImageRecord {
                target: cur.target.clone(),
                labels: cur.labels.clone(),
                created_at: cur.created_at,
                updated_at: cur.updated_at,
            };
            db::put(&mut t, TABLE, ns, &image.name, &rec)?;
            cur
        };
        txn.touch(Node::new(Kind::Image, ns, &image.name));
        note_expiry(&txn, &updated.labels);
        if updated.labels.contains_key(LABEL_EXPIRE) {
            leases::attach(&txn, scope, "images", &image.name)?;
        }
        txn.commit()?;
        Ok(updated)
    }

    /// Deletes an image record (its content stays until GC).
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&self, scope: &Scope, name: &str) -> Result<()> {
        let txn = self.store.db().write()?;
        {
            let mut t = txn.open_table(IMAGES)?;
            if t.remove((scope.namespace(), name))?.is_none() {
                return Err(Error::not_found("image", name));
            }
        }
        leases::detach(&txn, scope, "images", name)?;
        txn.deleted();
        txn.commit()?;
        Ok(())
    }
}

/// An image with `gc.expire` becomes collectible then: the scheduler is told when.
fn note_expiry(txn: &crate::db::WriteTxn<'_>, labels: &BTreeMap<String, String>) {
    if let Some(at) = labels
        .get(LABEL_EXPIRE)
        .and_then(|v| Timestamp::parse_rfc3339(v))
    {
        txn.expires(at);
    }
}
