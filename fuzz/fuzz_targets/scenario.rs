//! Scenario text (and `--set` overrides) through parsing, the locator and validation, the path
//! `pipegnn validate` takes before it reads a dataset.
//!
//! Input: the scenario's YAML, then optionally a NUL byte followed by `--set` overrides, one a
//! line. Input that is not UTF-8 is skipped: the CLI rejects it before parsing.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pipegnn_fuzz::{assert_located, show, Capped};

#[global_allocator]
static ALLOCATOR: Capped = Capped;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, overrides) = input.split_once('\0').unwrap_or((input, ""));
    let overrides: Vec<String> = overrides.lines().map(str::to_owned).collect();
    let parsed = pipegnn::scenario::parse_scenario(FILE, text, &overrides, Path::new("scenarios"));
    match &parsed {
        Ok(scenario) => show(format_args!("valid scenario {:?}", scenario.name)),
        Err(diags) => show(format_args!("{diags}")),
    }
    if let Err(diags) = parsed {
        assert!(!diags.0.is_empty(), "an error with no problem in it");
        for diag in &diags.0 {
            assert_located(FILE, diag);
        }
    }
});
