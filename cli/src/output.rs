//! Everything printed on stdout: tables for people, pretty JSON for scripts, raw bytes for
//! `content get`, and the small formatters the tables share.
//!
//! Every write goes through [`Out`], which tags its failures as [`StdoutError`] so `main`
//! can tell a closed pipe (`gcctl ... | head`, a success) from any other error.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufWriter, Write};

use bytesize::ByteSize;
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;
use strata_store::Timestamp;

/// A failed write to stdout.
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Buffered stdout. Call [`Out::flush`] at the end: dropping it loses late write errors.
#[derive(Debug)]
pub struct Out {
    w: BufWriter<io::Stdout>,
}

type Result<T = ()> = std::result::Result<T, StdoutError>;

impl Out {
    pub fn stdout() -> Out {
        Out {
            w: BufWriter::with_capacity(1 << 16, io::stdout()),
        }
    }

    /// Raw bytes.
    pub fn bytes(&mut self, data: &[u8]) -> Result {
        self.w.write_all(data).map_err(StdoutError)
    }

    /// One line of text.
    pub fn line(&mut self, text: impl fmt::Display) -> Result {
        writeln!(self.w, "{text}").map_err(StdoutError)
    }

    /// `value` as pretty JSON and a newline.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        serde_json::to_writer_pretty(&mut self.w, value).map_err(|e| StdoutError(e.into()))?;
        self.line("")
    }

    /// A table, lines right-trimmed.
    pub fn table(&mut self, table: &Table) -> Result {
        for line in table.lines() {
            self.line(line.trim_end())?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result {
        self.w.flush().map_err(StdoutError)
    }
}

/// A borderless table like ctr's tabwriter output: upper-case header, columns separated by
/// three spaces, never wrapped to the terminal's width.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header);
    let last = N.saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
    }
    t
}

/// `k=v,k2=v2`, or `-` when there are none.
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A byte count for people, e.g. `3.0 MiB`.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).to_string()
}

/// RFC 3339 to the second, e.g. `2026-11-22T17:00:00Z`.
pub fn time(t: Timestamp) -> String {
    Timestamp(t.0 - t.0.rem_euclid(1_000_000_000)).to_rfc3339()
}

/// How long ago `t` was, the way docker and ctr say it: `3 seconds`, `About a minute`, ...
pub fn age(t: Timestamp, now: Timestamp) -> String {
    let secs = now.0.saturating_sub(t.0) / 1_000_000_000;
    human_duration(secs)
}

fn human_duration(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (minutes, hours) = (secs / 60, secs / 3600);
    match secs {
        i64::MIN..=0 => "Less than a second".to_owned(),
        1..60 => plural(secs, "second"),
        60..120 => "About a minute".to_owned(),
        120..3600 => plural(minutes, "minute"),
        3600..7200 => "About an hour".to_owned(),
        7200..172_800 => plural(hours, "hour"),
        172_800..1_209_600 => plural(hours / 24, "day"),
        1_209_600..5_184_000 => plural(hours / 24 / 7, "week"),
        5_184_000..63_072_000 => plural(hours / 24 / 30, "month"),
        _ => plural(hours / 24 / 365, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 60), "3 minutes");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(400 * 86400), "13 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn tables_are_borderless_and_trimmed() {
        let mut t = table(["NAME", "LABELS"]);
        t.add_row(["a", "-"]);
        t.add_row(["longer-name", "k=v"]);
        let lines: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
        assert_eq!(
            lines,
            [
                "NAME          LABELS",
                "a             -",
                "longer-name   k=v"
            ]
        );
    }

    #[test]
    fn times_drop_sub_seconds() {
        assert_eq!(
            time(Timestamp(1_795_366_800_123_456_789)),
            "2026-11-22T17:00:00Z"
        );
    }
}
