//! Identifier and label rules shared by every record type (containerd's pkg/identifiers and
//! pkg/labels).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Longest identifier accepted (namespaces, container ids).
pub const MAX_IDENTIFIER_LEN: usize = 76;

/// Largest `len(key) + len(value)` of one label, in bytes.
pub const MAX_LABEL_SIZE: usize = 4096;

/// Checks an identifier: 1 to 76 characters, `[A-Za-z0-9]+` runs joined by single `.`, `_`
/// or `-`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what` and the identifier.
pub fn validate_identifier(what: &str, id: &str) -> Result<()> {
    let invalid = |why: &str| Error::InvalidArgument(format!("{what} {id:?} is invalid: {why}"));
    if id.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        return Err(invalid(&format!(
            "longer than {MAX_IDENTIFIER_LEN} characters"
        )));
    }
    let mut prev_sep = true; // the start behaves like a separator: no leading separator
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') {
            if prev_sep {
                return Err(invalid("separators must sit between letters or digits"));
            }
            prev_sep = true;
        } else {
            return Err(invalid(&format!(
                "character {c:?} not allowed; use [A-Za-z0-9] joined by . _ -"
            )));
        }
    }
    if prev_sep {
        return Err(invalid("must not end with a separator"));
    }
    Ok(())
}

/// Checks one label: `len(key) + len(value) <= 4096` and a non-empty key.
///
/// # Errors
/// [`Error::InvalidArgument`] showing at most 64 bytes of the key.
pub fn validate_label(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("label key must not be empty".into()));
    }
    if key.len() + value.len() > MAX_LABEL_SIZE {
        let shown: String = key.chars().take(64).collect();
        return Err(Error::InvalidArgument(format!(
            "label key and value length ({} bytes) greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {shown}",
            key.len() + value.len()
        )));
    }
    Ok(())
}

/// Validates every label of a set, and drops those with empty values (an empty value means
/// "no such label").
pub fn validate_labels(labels: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    for (k, v) in &labels {
        validate_label(k, v)?;
    }
    Ok(labels.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

/// Sets one label; an empty value deletes it.
pub fn set_label(labels: &mut BTreeMap<String, String>, key: &str, value: &str) -> Result<()> {
    validate_label(key, value)?;
    if value.is_empty() {
        labels.remove(key);
    } else {
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(())
}

/// Applies an update of a label map by field paths, containerd style: no paths replaces the
/// whole map; `labels` (or `prefix` itself) replaces it; `labels.<key>` copies that one key
/// from `new` (deleting it when absent or empty). Paths for other fields are left to the
/// caller: this returns `false` for them.
pub fn apply_label_path(
    prefix: &str,
    path: &str,
    current: &mut BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<bool> {
    if path == prefix {
        *current = validate_labels(new.clone())?;
        return Ok(true);
    }
    let Some(key) = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return Ok(false);
    };
    match new.get(key) {
        Some(v) => set_label(current, key, v)?,
        None => {
            current.remove(key);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "default", "k8s.io", "a-b_c.d", "A1", &"x".repeat(76)] {
            assert!(validate_identifier("namespace", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", "é", &"x".repeat(77)] {
            let e = validate_identifier("namespace", bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("namespace") && e.contains("invalid"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn label_size_limit_counts_key_and_value() {
        assert!(validate_label("k", &"v".repeat(4095)).is_ok());
        assert!(validate_label("k", &"v".repeat(4096)).is_err());
        assert!(validate_label("", "v").is_err());
    }

    #[test]
    fn empty_value_deletes() {
        let mut m = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        assert!(set_label(&mut m, "a", "").is_ok());
        assert!(m.is_empty());
    }

    #[test]
    fn field_path_updates() {
        let mut cur = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        let new = BTreeMap::from([("a".into(), "9".into()), ("c".into(), "3".into())]);
        assert_eq!(
            apply_label_path("labels", "labels.a", &mut cur, &new).ok(),
            Some(true)
        );
        assert_eq!(
            apply_label_path("labels", "labels.b", &mut cur, &new).ok(),
            Some(true)
        );
        assert_eq!(cur, BTreeMap::from([("a".into(), "9".into())]));
        assert_eq!(
            apply_label_path("labels", "target", &mut cur, &new).ok(),
            Some(false)
        );
        assert_eq!(
            apply_label_path("labels", "labels", &mut cur, &new).ok(),
            Some(true)
        );
        assert_eq!(cur, new);
    }
}
