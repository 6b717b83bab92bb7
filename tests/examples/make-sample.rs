//! Writes the sample image (`strata_tests::fixture::sample()`) as an OCI archive.
//!
//! ```text
//! cargo run -p strata-tests --example make-sample -- fixtures/sample.tar
//! ```
//!
//! The output is deterministic: two runs write identical bytes. Prints the image name, its
//! manifest digest and the archive size.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_tests::fixture::{self, OciLayout};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: make-sample OUT.tar");
        return ExitCode::from(2);
    };
    let out = PathBuf::from(out);
    let written = fixture::sample().and_then(|image| {
        let archive = OciLayout::new(&[&image]).archive()?;
        std::fs::write(&out, &archive)?;
        Ok((image, archive.len()))
    });
    match written {
        Ok((image, size)) => {
            println!(
                "{} {} manifest {} ({size} bytes)",
                out.display(),
                image.name,
                image.manifest.digest
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make-sample: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
