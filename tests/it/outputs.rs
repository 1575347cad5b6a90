//! Files the commands write: each replaced whole (a temporary beside it, then a rename), and
//! nothing written by a command that fails.

use std::path::Path;

use crate::support::{pipegnn, scratch, stderr};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Issue 12: `simulate --trace T --plot FILE` exited 3 after overwriting T; now it writes
/// nothing, and leaves no temporary behind.
#[test]
fn a_failing_command_writes_nothing() {
    let dir = scratch("failing-command-writes-nothing");
    let trace = dir.join("t.trace.json");
    let not_a_folder = dir.join("plots");
    std::fs::write(&trace, "old trace").unwrap();
    std::fs::write(&not_a_folder, "a file where the plot folder should go").unwrap();
    let out = pipegnn(&[
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--trace",
        trace.to_str().unwrap(),
        "--plot",
        not_a_folder.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot create the folder"), "{err}");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "old trace");
    assert_eq!(names(&dir), ["plots", "t.trace.json"]);

    // A target that cannot be written (a folder) fails before any other file is replaced.
    let out = pipegnn(&[
        "sweep",
        "scenarios/explicit-pipeline.yaml",
        "--set",
        "schedule.chunks=2,4",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(names(&dir), ["plots", "t.trace.json"]);
}

/// Outputs replace what was there, whole, with nothing left beside them.
#[test]
fn outputs_replace_the_old_file_whole() {
    let dir = scratch("outputs-replace");
    let trace = dir.join("t.trace.json");
    let csv = dir.join("sweep.csv");
    std::fs::write(&trace, "old trace").unwrap();
    std::fs::write(&csv, "old sweep").unwrap();
    let plots = dir.join("figures");
    let out = pipegnn(&[
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--trace",
        trace.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(
        text.starts_with('{') && text.contains("traceEvents"),
        "{text}"
    );
    assert!(!names(&plots).is_empty());
    let out = pipegnn(&[
        "sweep",
        "scenarios/explicit-pipeline.yaml",
        "--set",
        "schedule.chunks=2,4",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
    assert_eq!(names(&dir), ["figures", "sweep.csv", "t.trace.json"]);
    assert!(
        names(&plots).iter().all(|n| n.ends_with(".svg")),
        "{:?}",
        names(&plots)
    );
}
