//! Schedule files (YAML or JSON action lists) through the reader and, when they parse, the
//! checker, as `pipegnn schedule --file` does.
//!
//! Input: the file's text. Input that is not UTF-8 is skipped: the CLI rejects it first.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipegnn_fuzz::{assert_located, show, Capped};

#[global_allocator]
static ALLOCATOR: Capped = Capped;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match pipegnn::schedule::file::parse(FILE, text) {
        Ok(schedule) => {
            // A deadlock or shape error is a normal answer; only a panic or a hang is a finding.
            match pipegnn::schedule::check(&schedule) {
                Ok(_) => show(format_args!("checked: {} devices", schedule.n_devices())),
                Err(err) => show(format_args!("parsed, check failed: {err}")),
            }
        }
        Err(diags) => {
            show(format_args!("{diags}"));
            assert!(!diags.0.is_empty(), "an error with no problem in it");
            for diag in &diags.0 {
                assert_located(FILE, diag);
            }
        }
    }
});
