//! gcctl: strata's maintenance CLI, a thin layer over `strata-store`.
//!
//! Exit status: 0 success (a closed stdout pipe included, as `gcctl ... | head` expects),
//! 1 "problems found" (`fsck`), 2 any error, usage errors included.
//! Errors go to stderr as `gcctl: <message with its causes>`.

mod app;
mod args;
mod commands;
mod logging;
mod output;
mod parse;
mod views;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout and exit 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(app::EXIT_ERROR));
        }
    };
    logging::init(cli.verbose);
    app::exit_code(commands::run(&cli))
}
