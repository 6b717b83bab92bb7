//! `gcctl content ls|info|get|ingest|label|rm|active|abort`.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_store::content::{BlobInfo, Writer, WriterOptions};
use strata_store::identifiers::validate_labels;
use strata_store::{Digest, ErrorKind, Scope, Timestamp};

use crate::app::{Ctx, each};
use crate::args::{ContentCommand, IngestArgs};
use crate::output::{self, table};
use crate::parse::{Label, label_map};

/// Copy buffer size, as containerd's content helpers use.
const CHUNK: usize = 1 << 20;

/// A copy that takes longer than this gets a progress bar (on a terminal, without --json).
const PROGRESS_AFTER: Duration = Duration::from_millis(500);

pub fn run(ctx: &mut Ctx, cmd: &ContentCommand) -> Result<()> {
    let scope = ctx.scope()?;
    let ns = scope.namespace();
    match cmd {
        ContentCommand::Ls(f) => {
            let blobs = ctx.store.content().list(ns, &f.filters)?;
            if ctx.json {
                ctx.out.json(&blobs)?;
            } else {
                let now = Timestamp::now();
                let mut t = table(["DIGEST", "SIZE", "AGE", "LABELS"]);
                for b in &blobs {
                    t.add_row([
                        b.digest.to_string(),
                        output::size(b.size),
                        output::age(b.created_at, now),
                        output::labels(&b.labels),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        ContentCommand::Info { digest } => {
            let info = ctx.store.content().info(ns, digest)?;
            print_blob(ctx, &info)?;
        }
        ContentCommand::Get { digest } => get(ctx, ns, digest)?,
        ContentCommand::Ingest(args) => ingest(ctx, scope.clone(), args)?,
        ContentCommand::Label { digest, labels } => {
            let info = set_labels(ctx, ns, digest, labels)?;
            if ctx.json {
                ctx.out.json(&info)?;
            }
        }
        ContentCommand::Rm { digests } => {
            let content = ctx.store.content();
            let (removed, outcome) = each(digests, |d| Ok(content.delete(&scope, d)?));
            super::print_removed(ctx, &removed)?;
            outcome?;
        }
        ContentCommand::Active(f) => {
            let statuses = ctx.store.content().list_statuses(ns, &f.filters)?;
            if ctx.json {
                ctx.out.json(&statuses)?;
            } else {
                let mut t = table(["REF", "OFFSET", "TOTAL", "EXPECTED", "STARTED", "UPDATED"]);
                for s in &statuses {
                    t.add_row([
                        s.reference.clone(),
                        s.offset.to_string(),
                        s.total.to_string(),
                        s.expected
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), ToString::to_string),
                        output::time(s.started_at),
                        output::time(s.updated_at),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        ContentCommand::Abort { refs } => {
            let content = ctx.store.content();
            let (aborted, outcome) = each(refs, |r| Ok(content.abort(&scope, r)?));
            super::print_removed(ctx, &aborted)?;
            outcome?;
        }
    }
    Ok(())
}

fn print_blob(ctx: &mut Ctx, info: &BlobInfo) -> Result<()> {
    if ctx.json {
        ctx.out.json(info)?;
        return Ok(());
    }
    let out = &mut ctx.out;
    out.line(format_args!("digest:   {}", info.digest))?;
    out.line(format_args!(
        "size:     {} ({})",
        info.size,
        output::size(info.size)
    ))?;
    out.line(format_args!("created:  {}", info.created_at))?;
    out.line(format_args!("updated:  {}", info.updated_at))?;
    out.line(format_args!("labels:   {}", output::labels(&info.labels)))?;
    Ok(())
}

/// Sets (or, for empty values, removes) labels on a blob in one transaction.
fn set_labels(ctx: &Ctx, ns: &str, digest: &Digest, labels: &[Label]) -> Result<BlobInfo> {
    let content = ctx.store.content();
    let mut info = content.info(ns, digest)?;
    info.labels = label_map(labels);
    let paths: Vec<String> = labels.iter().map(|l| format!("labels.{}", l.key)).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    Ok(content.update(ns, &info, &paths)?)
}

/// Streams a blob's bytes to stdout, then checks them against its size and digest (a
/// damaged blob file fails with exit 2 after its bytes went out, as `cat` would).
fn get(ctx: &mut Ctx, ns: &str, digest: &Digest) -> Result<()> {
    let reader = ctx.store.content().reader(ns, digest)?;
    let mut hasher = digest.algorithm().hasher();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = reader.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        ctx.out.bytes(chunk)?;
        offset += n as u64;
    }
    if offset != reader.size() {
        bail!(
            "blob {digest}: its file has {offset} bytes but the record says {}; the blob file is damaged",
            reader.size()
        );
    }
    let actual = hasher.finish();
    if actual != *digest {
        bail!("blob {digest}: its file hashes to {actual}; the blob file is damaged");
    }
    Ok(())
}

/// `content ingest`: stdin into a writer, committed with the expectations and labels.
fn ingest(ctx: &mut Ctx, scope: Scope, args: &IngestArgs) -> Result<()> {
    let scope = match &args.lease {
        Some(lease) => scope.with_lease(lease.clone()),
        None => scope,
    };
    let labels = label_map(&args.labels);
    // Check labels before reading anything, so bad input changes nothing.
    validate_labels(labels.clone())?;
    if io::stdin().is_terminal() {
        bail!(
            "content ingest reads the blob from stdin, which is a terminal; redirect a file into it"
        );
    }
    let content = ctx.store.content();
    let options = WriterOptions {
        expected: args.expected_digest.clone(),
        total: args.expected_size.unwrap_or(0),
    };
    // The digest, and whether the namespace had the blob already.
    let (digest, existed) = match content.writer(&scope, &args.reference, options) {
        Ok(mut writer) => {
            copy_stdin(&mut writer, args, ctx.json)?;
            let digest = writer.digest();
            match writer.commit(
                args.expected_size.unwrap_or(0),
                args.expected_digest.as_ref(),
                labels.clone(),
            ) {
                Ok(d) => (d, false),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    // The namespace has the blob already (the library gave it to the scope's
                    // lease); like ctr, that is success.
                    tracing::info!(%digest, "blob already present in this namespace");
                    (digest, true)
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Only with --expected-digest: the namespace has that blob, and the library has
        // already added it to the scope's lease. Like ctr, that is success.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let digest = args.expected_digest.clone().ok_or_else(|| anyhow!(e))?;
            tracing::info!(%digest, "blob already present in this namespace");
            drain_stdin();
            (digest, true)
        }
        Err(e) => return Err(e.into()),
    };
    // A blob that was there already gets the labels given now (the commit that would have
    // set them did not happen); its other labels stay.
    let labelled = if existed && !args.labels.is_empty() {
        Some(set_labels(ctx, scope.namespace(), &digest, &args.labels)?)
    } else {
        None
    };
    if ctx.json {
        let info = match labelled {
            Some(info) => info,
            None => content.info(scope.namespace(), &digest)?,
        };
        ctx.out.json(&info)?;
    } else {
        ctx.out.line(&digest)?;
    }
    Ok(())
}

/// Copies stdin into `writer`.
///
/// A writer that resumes an earlier ingest of the same ref (or that starts complete because
/// the blob is on disk already) holds `offset` bytes: stdin's first `offset` bytes are read
/// and hashed, and if they are exactly those bytes only the rest is written. If they differ,
/// a seekable stdin is rewound and the ingest restarted; a pipe cannot be, so that fails.
fn copy_stdin(writer: &mut Writer, args: &IngestArgs, json: bool) -> Result<()> {
    let mut input = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .context("read stdin")?;
    let meta = input.metadata().context("stat stdin")?;
    let start = if meta.is_file() {
        input.stream_position().context("seek stdin")?
    } else {
        0
    };
    let total = if meta.is_file() {
        Some(meta.len().saturating_sub(start))
    } else {
        args.expected_size
    };
    let mut progress = Progress::new(total, json);
    let mut buf = vec![0u8; CHUNK];

    let held = writer.status().offset;
    if held > 0 {
        let held_digest = writer.digest();
        let mut hasher = held_digest.algorithm().hasher();
        let mut remaining = held;
        while remaining > 0 {
            let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
            let n = read_some(&mut input, buf.get_mut(..want).unwrap_or_default())?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            remaining -= n as u64;
            progress.inc(n);
        }
        if remaining == 0 && hasher.finish() == held_digest {
            tracing::info!(
                reference = %args.reference,
                offset = held,
                "resuming ingest: its bytes so far match stdin"
            );
        } else if meta.is_file() {
            tracing::info!(reference = %args.reference, "restarting ingest: stdin differs from its bytes so far");
            input.seek(SeekFrom::Start(start)).context("seek stdin")?;
            writer
                .truncate(0)
                .with_context(|| format!("restart ingest {:?}", args.reference))?;
            progress.reset();
        } else {
            bail!(
                "ingest {:?} already holds {held} bytes (from an earlier attempt, or the expected \
                 blob already on disk) that differ from the start of stdin, and a pipe cannot be \
                 rewound: redirect a file instead, or abort the ingest first (gcctl content abort {})",
                args.reference,
                args.reference
            );
        }
    }

    loop {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        writer
            .write_all(buf.get(..n).unwrap_or_default())
            .with_context(|| format!("write ingest {:?}", args.reference))?;
        progress.inc(n);
    }
    progress.finish();
    Ok(())
}

/// Reads a piped stdin to its end without storing it, so the writer at the other end of a
/// pipeline (`curl ... | gcctl content ingest`) is not killed by SIGPIPE when its upload turns
/// out to be unnecessary. A regular file needs no draining; read errors are ignored.
fn drain_stdin() {
    let stdin = io::stdin();
    let is_file = stdin
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file());
    if !is_file {
        let _ = io::copy(&mut stdin.lock(), &mut io::sink());
    }
}

fn read_some(input: &mut File, buf: &mut [u8]) -> Result<usize> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("read stdin"),
        }
    }
}

/// A byte progress bar on stderr that appears only once a copy has run for a while, and
/// never when stderr is not a terminal or output is JSON.
#[derive(Debug)]
struct Progress {
    bar: ProgressBar,
    enabled: bool,
    started: Instant,
}

impl Progress {
    fn new(total: Option<u64>, json: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        let template = if total.is_some() {
            "{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, eta {eta}"
        } else {
            "{spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            enabled: !json && io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn inc(&mut self, n: usize) {
        self.bar.inc(n as u64);
        if self.enabled && self.started.elapsed() >= PROGRESS_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.enabled = false;
        }
    }

    fn reset(&self) {
        self.bar.set_position(0);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
