//! The `pipegnn` binary: parse the command line, run it, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

/// Counts every allocation by the thread group that made it, so `pipegnn run` can measure each
/// stage's memory (`pipegnn::exec::memory`); without tracking enabled it only adds a header word.
/// Over mimalloc rather than the system's malloc: an epoch frees and allocates the same large
/// tensors again, and glibc hands their pages back to the kernel and faults them in anew each
/// time (a third of a Cora GAT epoch), where mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: tracking_allocator::Allocator<mimalloc::MiMalloc> =
    tracking_allocator::Allocator::from_allocator(mimalloc::MiMalloc);

fn main() -> ExitCode {
    pipegnn::exec::device::keep_candle_on_worker_threads();
    pipegnn::exec::device::count_cores_once();
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
