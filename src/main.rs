//! The `pipegnn` binary: parse the command line, run it, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pipegnn::cli::Cli::parse();
    match pipegnn::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            for line in err.message.lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(err.status as u8)
        }
    }
}
