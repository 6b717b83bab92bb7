//! The little JSON writer `records.json` needs (this crate has no JSON dependency): objects
//! keep their fields in the order given, strings are escaped as RFC 8259 requires.

use std::collections::BTreeMap;

/// A JSON value, as far as `records.json` needs one.
#[derive(Debug)]
pub(super) enum Json {
    /// A string.
    Str(String),
    /// A non-negative integer.
    Num(u64),
    /// `null`.
    Null,
    /// An object of string values, keys sorted (a record's labels).
    Map(BTreeMap<String, String>),
    /// An object whose fields keep the order given.
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// A string value.
    pub(super) fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    /// An object with `fields` in this order.
    pub(super) fn obj(fields: Vec<(&'static str, Json)>) -> Json {
        Json::Obj(fields)
    }

    /// Appends the value to `out`, all on one line.
    pub(super) fn render(&self, out: &mut String) {
        match self {
            Json::Str(s) => json_string(s, out),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Null => out.push_str("null"),
            Json::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    json_string(k, out);
                    out.push_str(": ");
                    json_string(v, out);
                }
                out.push('}');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    json_string(k, out);
                    out.push_str(": ");
                    v.render(out);
                }
                out.push('}');
            }
        }
    }
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}
