//! Diagnostics on stderr through `tracing` (the library logs, it never installs a
//! subscriber; this binary does).

use std::io::{self, IsTerminal};

use tracing_subscriber::EnvFilter;

/// `-v` info, `-vv` debug, `-vvv` trace; without `-v`, `RUST_LOG` if set, else warnings.
pub fn init(verbose: u8) {
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    // Fails only if a subscriber is already installed, which nothing else here does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}
