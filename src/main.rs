//! The `pipegnn` binary: parse the command line, run it, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

/// Counts every allocation by the thread group that made it, so `pipegnn run` can measure each
/// stage's memory (`pipegnn::exec::memory`); without tracking enabled it only adds a header word.
#[global_allocator]
static ALLOCATOR: tracking_allocator::Allocator<std::alloc::System> =
    tracking_allocator::Allocator::system();

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
