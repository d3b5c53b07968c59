//! `tandem-signer`: parses arguments, runs one command from [`commands`], turns an error into
//! a message with a fix and a non-zero exit code. Nothing else lives here (CONTRIBUTING.md §1).

mod cli;
mod commands;
mod hints;
mod keys;
mod out;
mod repository;
mod verity;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing left to say to anyone.
        Err(err) if out::is_closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = hints::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
