//! Helpers shared by the fuzz targets: an allocator that refuses absurd allocations, and the
//! check that every diagnostic is one line naming its file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation a parse of a fuzz input (at most a few hundred KiB) may make.
/// Anything larger means a count from the input reached an allocation unchecked; the
/// allocator aborts so that libFuzzer records the input as a crash, with or without a sanitizer
/// (libFuzzer's own `-malloc_limit_mb` needs one).
pub const MAX_ALLOCATION_BYTES: usize = 256 << 20;

/// The system allocator, aborting on any allocation above [`MAX_ALLOCATION_BYTES`].
pub struct Capped;

// SAFETY: every call is forwarded unchanged to `System`; the only addition is an abort before
// forwarding, which never returns.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        refuse_huge(layout);
        // SAFETY: the caller's contract for `layout` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        refuse_huge(layout);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`, as the caller promises.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION_BYTES {
            huge(new_size);
        }
        // SAFETY: as in `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn refuse_huge(layout: Layout) {
    if layout.size() > MAX_ALLOCATION_BYTES {
        huge(layout.size());
    }
}

/// Reports and aborts without allocating (this runs inside the allocator).
fn huge(size: usize) -> ! {
    let mut buf = [0u8; 96];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = writeln!(cursor, "fuzz: refused an allocation of {size} bytes");
    let len = cursor.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..len]);
    std::process::abort()
}

/// Asserts the project's rule for a problem in a YAML file: it has a place (a line and column,
/// or the `--set` that caused it) and prints as one line starting with the file's name.
pub fn assert_located(file: &str, diag: &pipegnn::diag::Diagnostic) {
    assert!(
        diag.origin != pipegnn::diag::Origin::Unknown,
        "a problem must say where it is: {diag}"
    );
    assert_one_line(file, &diag.to_string());
}

/// Asserts the project's rule for a reported problem: one line, starting with the file's name.
pub fn assert_one_line(file: &str, message: &str) {
    assert!(
        message.starts_with(file),
        "a problem must name its file first: {message:?}"
    );
    assert!(
        !message.contains('\n'),
        "a problem must fit on one line: {message:?}"
    );
}

/// With `PIPEGNN_FUZZ_SHOW` set, prints what an input gave (for triage and for checking that
/// seeds are valid: `PIPEGNN_FUZZ_SHOW=1 cargo +nightly fuzz run TARGET fuzz/corpus/TARGET/seed-*`).
pub fn show(outcome: std::fmt::Arguments<'_>) {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *SHOW.get_or_init(|| std::env::var_os("PIPEGNN_FUZZ_SHOW").is_some()) {
        eprintln!("fuzz: {outcome}");
    }
}
