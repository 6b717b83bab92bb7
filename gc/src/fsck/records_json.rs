//! `records.json`: every record a repair removed or added, written to the quarantine
//! directory before the repair commits, one record per line. Each removed record's `raw` is
//! its stored value, so putting it back under its key restores it bit for bit.

use std::fmt;

use super::json::Json;
use super::records::ChildRow;

/// The records a repair removed and added, for `records.json`.
#[derive(Debug, Default)]
pub(super) struct RecordLog {
    /// One entry per record removed, in the order removed.
    pub(super) removed: Vec<Json>,
    /// One entry per record added.
    pub(super) added: Vec<Json>,
}

impl RecordLog {
    /// `{"format": 1, "removed": [...], "added": [...]}`, one record per line.
    pub(super) fn render(&self) -> String {
        let mut out = String::from("{\n  \"format\": 1,\n");
        for (name, list, last) in [
            ("removed", &self.removed, false),
            ("added", &self.added, true),
        ] {
            out.push_str(&format!("  \"{name}\": ["));
            for (i, j) in list.iter().enumerate() {
                out.push_str(if i == 0 { "\n    " } else { ",\n    " });
                j.render(&mut out);
            }
            out.push_str(if list.is_empty() { "]" } else { "\n  ]" });
            out.push_str(if last { "\n" } else { ",\n" });
        }
        out.push_str("}\n");
        out
    }
}

/// The `records.json` entry of a `snapshot_children` row.
pub(super) fn child_json(row: &ChildRow) -> Json {
    Json::obj(vec![
        ("table", Json::str("snapshot_children")),
        ("namespace", Json::str(&row.ns)),
        ("snapshotter", Json::str(&row.sn)),
        ("parent", Json::str(&row.parent)),
        ("child", Json::str(&row.child)),
    ])
}

/// `bytes` in lower-case hex (a record's `raw` value).
pub(super) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_json_escapes() {
        let log = RecordLog {
            removed: vec![Json::obj(vec![
                ("a", Json::str("q\"\\\n\u{1}")),
                ("n", Json::Num(3)),
                ("p", Json::Null),
            ])],
            added: vec![],
        };
        assert_eq!(
            log.render(),
            "{\n  \"format\": 1,\n  \"removed\": [\n    {\"a\": \"q\\\"\\\\\\n\\u0001\", \
             \"n\": 3, \"p\": null}\n  ],\n  \"added\": []\n}\n"
        );
    }
}
