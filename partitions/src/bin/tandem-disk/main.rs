//! `tandem-disk`: make A/B disk images, write slots, show and change boot state, and run the
//! reference firmware once. `main` only parses flags, runs a command and maps errors to an
//! exit code (0 success, also when stdout was closed early; 1 failure — including "nothing
//! bootable" for `boot` — and 2 for bad flags, from clap).

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(proto::term::colour(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut out = std::io::stdout().lock();
    match commands::run(args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if commands::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tandem-disk: error: {}", proto::chain(err.as_ref()));
            if let Some(hint) = commands::hint(&err) {
                eprintln!("tandem-disk: hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}
