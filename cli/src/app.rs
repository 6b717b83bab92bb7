//! What every command shares: the store root, the open store, the namespace, the output,
//! and how an outcome becomes an exit status.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use strata_store::{Scope, Store, StoreOptions};

use crate::args::Cli;
use crate::output::{Out, StdoutError};

/// Exit status of any error.
pub const EXIT_ERROR: u8 = 2;

/// Exit status of a check that found problems (`fsck`).
pub const EXIT_PROBLEMS: u8 = 1;

/// The open store and the global options, handed to every command.
#[derive(Debug)]
pub struct Ctx {
    pub store: Store,
    pub namespace: String,
    pub json: bool,
    pub out: Out,
}

impl Ctx {
    /// Opens the store at the chosen root (creating its layout on first use).
    pub fn open(cli: &Cli) -> Result<Ctx> {
        let root = match &cli.root {
            Some(root) => root.clone(),
            None => default_root(
                rustix::process::geteuid().is_root(),
                std::env::var_os("XDG_DATA_HOME"),
                std::env::var_os("HOME"),
            )?,
        };
        tracing::debug!(root = %root.display(), "opening store");
        // The library's errors name the root (busy, with the holder's pid) or meta.redb
        // (damaged), so they need no context here.
        let store = Store::open(&root, StoreOptions::default())?;
        Ok(Ctx {
            store,
            namespace: cli.namespace.clone(),
            json: cli.json,
            out: Out::stdout(),
        })
    }

    /// The global namespace as a scope; fails for an invalid namespace name.
    pub fn scope(&self) -> Result<Scope> {
        Ok(Scope::new(&self.namespace)?)
    }
}

/// The root when neither `--root` nor `STRATA_ROOT` names one: `/var/lib/strata` for root,
/// else `$XDG_DATA_HOME/strata` (ignored unless absolute, per the XDG spec), else
/// `$HOME/.local/share/strata`.
pub fn default_root(
    is_root: bool,
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    if is_root {
        return Ok(PathBuf::from("/var/lib/strata"));
    }
    if let Some(xdg) = xdg_data_home.map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("strata"));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/strata")),
        None => {
            bail!("cannot choose a store root: HOME is not set; pass --root DIR or set STRATA_ROOT")
        }
    }
}

/// Marks an error whose details are already on stderr (one line per failed item of a
/// multi-item command); it only sets the exit status.
#[derive(Debug)]
pub struct AlreadyReported;

impl fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("some operations failed")
    }
}

impl std::error::Error for AlreadyReported {}

/// Marks a check that ran to the end and found problems, already printed on stdout: exit
/// status 1, nothing more on stderr.
#[derive(Debug)]
pub struct ProblemsFound;

impl fmt::Display for ProblemsFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("problems found")
    }
}

impl std::error::Error for ProblemsFound {}

/// Prints `gcctl: warning: <message>` on stderr.
pub fn warn(message: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "gcctl: warning: {message}");
}

/// Prints `gcctl: <error>: <cause>: ...` on stderr.
pub fn report(e: &anyhow::Error) {
    // Nowhere left to report a failure to write to stderr.
    let _ = writeln!(io::stderr().lock(), "gcctl: {e:#}");
}

/// The exit status of a command's outcome, reporting its error.
pub fn exit_code(outcome: Result<()>) -> ExitCode {
    let Err(e) = outcome else {
        return ExitCode::SUCCESS;
    };
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<StdoutError>()
            .is_some_and(|s| s.0.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        // The reader went away (`| head`): like ripgrep, that is not a failure.
        return ExitCode::SUCCESS;
    }
    if e.is::<ProblemsFound>() {
        return ExitCode::from(EXIT_PROBLEMS);
    }
    if !e.is::<AlreadyReported>() {
        report(&e);
    }
    ExitCode::from(EXIT_ERROR)
}

/// Runs `op` on every item, reporting each failure on stderr and going on with the rest;
/// returns the items that succeeded, or [`AlreadyReported`] after printing them if any failed.
pub fn each<T: fmt::Display>(
    items: &[T],
    mut op: impl FnMut(&T) -> Result<()>,
) -> (Vec<String>, Result<()>) {
    let mut done = Vec::new();
    let mut failed = false;
    for item in items {
        match op(item) {
            Ok(()) => done.push(item.to_string()),
            Err(e) => {
                failed = true;
                report(&e);
            }
        }
    }
    let outcome = if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    };
    (done, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_follows_euid_then_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        let root = |is_root, xdg, home| default_root(is_root, xdg, home).ok();
        assert_eq!(
            root(true, os("/x"), os("/h")),
            Some(PathBuf::from("/var/lib/strata"))
        );
        assert_eq!(
            root(false, os("/x"), os("/h")),
            Some(PathBuf::from("/x/strata"))
        );
        assert_eq!(
            root(false, os("relative"), os("/h")),
            Some(PathBuf::from("/h/.local/share/strata"))
        );
        assert_eq!(
            root(false, None, os("/h")),
            Some(PathBuf::from("/h/.local/share/strata"))
        );
        assert_eq!(root(false, None, None), None);
    }
}
