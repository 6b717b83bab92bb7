//! Record encoding: one format-version byte, then postcard.
//!
//! redb's `Value::from_bytes` cannot fail, so typed values would have to panic on bad bytes.
//! Tables therefore store `&[u8]` and every read decodes here, turning damage into
//! [`Error::Corrupt`] that names the table and key.

use serde::Deserialize;
use serde::Serialize;

use crate::error::{Error, Result};

/// Version byte written before every record. Bump it (and add a migration) when a record's
/// shape changes.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes a record with its version byte.
pub fn encode<T: Serialize>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    value: &T,
) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    postcard::to_io(value, &mut out).map_err(|e| Error::Corrupt {
        table,
        key: key.to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    Ok(out)
}

/// Decodes a record written by [`encode`]. `T` may borrow strings from `bytes` (the
/// collector's scans decode records in place, without copying them).
///
/// # Errors
/// [`Error::Corrupt`] when the version byte is unknown or the bytes do not decode.
pub fn decode<'b, T: Deserialize<'b>>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &'b [u8],
) -> Result<T> {
    let (value, rest) = take(table, key, bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(corrupt(
            table,
            key,
            format!("{} trailing bytes", rest.len()),
        ))
    }
}

/// Decodes only the leading fields of a record written by [`encode`] (`T` a prefix of the
/// record's fields, e.g. its first field alone): for scans that need one field of every
/// record and should not pay for the rest.
///
/// # Errors
/// [`Error::Corrupt`] when the version byte is unknown or the prefix does not decode.
pub fn decode_prefix<'b, T: Deserialize<'b>>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &'b [u8],
) -> Result<T> {
    take(table, key, bytes).map(|(value, _)| value)
}

/// Checks the version byte and decodes a `T` from the front of the body; returns it and the
/// bytes after it.
fn take<'b, T: Deserialize<'b>>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &'b [u8],
) -> Result<(T, &'b [u8])> {
    match bytes.split_first() {
        None => Err(corrupt(table, key, "empty value".into())),
        Some((&FORMAT_VERSION, body)) => postcard::take_from_bytes(body)
            .map_err(|e| corrupt(table, key, format!("cannot decode: {e}"))),
        Some((v, _)) => Err(corrupt(table, key, format!("unknown format version {v}"))),
    }
}

fn corrupt(table: &'static str, key: &dyn std::fmt::Display, reason: String) -> Error {
    Error::Corrupt {
        table,
        key: key.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        a: u64,
        b: String,
    }

    #[test]
    fn round_trip() {
        let r = R {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode("t", &"k", &r).unwrap_or_default();
        assert_eq!(bytes.first(), Some(&FORMAT_VERSION));
        assert_eq!(decode::<R>("t", &"k", &bytes).ok(), Some(r));
    }

    #[test]
    fn damage_is_an_error_naming_table_and_key() {
        for bad in [
            &[][..],
            &[9, 1, 2][..],
            &[FORMAT_VERSION, 0xff, 0xff, 0xff][..],
        ] {
            let err = decode::<R>("images", &"ns/name", bad).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("images") && msg.contains("ns/name"), "{msg}");
        }
        let mut trailing = encode(
            "t",
            &"k",
            &R {
                a: 1,
                b: String::new(),
            },
        )
        .unwrap_or_default();
        trailing.push(0);
        assert!(decode::<R>("t", &"k", &trailing).is_err());
    }

    #[test]
    fn a_prefix_decodes_the_leading_fields_only() {
        let r = R {
            a: 300,
            b: "rest".into(),
        };
        let bytes = encode("t", &"k", &r).unwrap_or_default();
        assert_eq!(decode_prefix::<u64>("t", &"k", &bytes).ok(), Some(300));
        assert!(decode_prefix::<u32>("t", &"k", &[9, 1]).is_err());
        assert!(decode_prefix::<u32>("t", &"k", &[]).is_err());
    }
}
