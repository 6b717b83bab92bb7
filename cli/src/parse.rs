//! Value parsers for arguments: `KEY=VALUE` labels and Go-style durations.

use std::collections::BTreeMap;
use std::time::Duration;

/// One `KEY=VALUE` argument; an empty value means "remove" where labels are updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// Parses `KEY=VALUE` (split at the first `=`; the value may be empty or contain `=`).
pub fn parse_label(s: &str) -> Result<Label, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if key.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok(Label {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// Labels as a map; a later duplicate key wins, as it would on a command line.
pub fn label_map(labels: &[Label]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect()
}

/// Parses a duration the way Go's `time.ParseDuration` does for non-negative values:
/// a sequence of decimal numbers with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g.
/// `24h`, `1h30m`, `1.5h`, `500ms`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (examples: 24h, 30m, 1h30m, 0)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad("expected a number"));
        }
        let value: f64 = num.parse().map_err(|_| bad("expected a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("a=b=c"),
            Ok(Label {
                key: "a".into(),
                value: "b=c".into()
            })
        );
        assert_eq!(parse_label("k=").map(|l| l.value), Ok(String::new()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
    }

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(secs("0"), Ok(0.0));
        assert_eq!(secs("24h"), Ok(86400.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "h", "10", "1x", "-1h", "1..5h", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
