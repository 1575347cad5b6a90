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

#[allow(unsafe_code)]
extern "C" {
    // mimalloc's option API, from the library `mimalloc` links (`libmimalloc-sys`).
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Makes mimalloc keep the pages an epoch frees for the next one, rather than hand them back
/// to the kernel a while after they are freed (its `purge_delay`: 1 s in mimalloc v3, 10 ms
/// in v2).
///
/// An epoch's forwards allocate what its backwards free, so a stage's memory comes and goes
/// every epoch; the pages went back about once a second and were faulted in anew as 2 MiB
/// huge pages the kernel zeroes (`clear_page_erms` was 14% of a `perf` profile of one-stage
/// GraphSAGE on a 100,000-vertex graph, 16,498 page faults in 40 epochs, 501 when kept). The
/// calibration's microbenchmarks reuse their memory within the delay and never saw that cost.
/// The process holds its peak, as PyTorch's caching allocator does on a GPU; memory is
/// measured by what is allocated, not held. A `MIMALLOC_PURGE_DELAY` of the user's stands.
fn keep_freed_pages() {
    // `mi_option_purge_delay`, the 16th option in mimalloc v2 and v3 alike; its default is
    // 1000 (ms) in v3, 10 in v2. Any other value means the option moved: it is left alone.
    const PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: both functions only read and write mimalloc's option table; this runs first
    // in `main`, before any thread of ours exists (mimalloc does not guard the table).
    #[allow(unsafe_code)]
    unsafe {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && matches!(mi_option_get(PURGE_DELAY), 10 | 1000)
        {
            mi_option_set(PURGE_DELAY, -1);
        }
    }
}

fn main() -> ExitCode {
    keep_freed_pages();
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
