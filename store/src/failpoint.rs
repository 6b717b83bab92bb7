//! Named fault-injection points on the durability path.
//!
//! Every step between a file operation and the transaction that publishes it carries a
//! `failpoint!("area.op.step")`. Without the `failpoints` feature the macro compiles to
//! nothing. With it, a point is armed through the `fail` crate (`fail::cfg(name, action)` or
//! the `FAILPOINTS` environment variable read by `fail::FailScenario::setup`):
//!
//! - `return` (or `return(error)`): the operation fails there with [`Error::Injected`];
//! - `return(kill)`: the process sends itself SIGKILL there, as `kill -9` would, so crash tests
//!   see exactly the on-disk state of that step;
//! - `panic`, `sleep(ms)`, `pause`, ...: the `fail` crate's own actions.
//!
//! [`ALL`] lists every point; `docs/crash-consistency.md` says what holds after each.

#[cfg(feature = "failpoints")]
use crate::error::Error;
use crate::error::Result;

/// Every failpoint in the crate, in the order an operation reaches them.
pub const ALL: &[&str] = &[
    "content.writer.after_record",
    "content.commit.before_rename",
    "content.commit.after_rename",
    "content.commit.after_dir_sync",
    "content.commit.after_db",
    "content.abort.after_db",
    "content.delete.after_db",
];

/// Evaluates the failpoint `name`. Use through [`crate::failpoint!`].
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) -> Result<()> {
    match fail::eval(name, |arg| arg) {
        None => Ok(()),
        Some(Some(arg)) if arg == "kill" => {
            // SIGKILL cannot be caught: nothing below this line runs, no destructor, no flush.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            Err(Error::Injected(name))
        }
        Some(_) => Err(Error::Injected(name)),
    }
}

/// Without the `failpoints` feature every point is a no-op.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> Result<()> {
    Ok(())
}

/// Marks a named fault-injection point; returns early with the injected error when armed.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint::hit($name)?
    };
}
