//! `pipegnn sweep` and `pipegnn plan`: order, determinism, agreement with `simulate`, and the
//! planner's choice against a brute-force search.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{pipegnn, root, stderr, stdout};

const SCENARIO: &str = "scenarios/explicit-pipeline.yaml";

/// Runs `pipegnn` with `RAYON_NUM_THREADS` set.
fn pipegnn_threads(args: &[&str], threads: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipegnn"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .expect("the test binary can be started")
}

fn sweep_args(format: &str) -> Vec<&str> {
    vec![
        "sweep",
        SCENARIO,
        "--set",
        "schedule.chunks=1,2,4",
        "--set",
        "schedule.kind=gpipe,1f1b",
        "--set",
        "devices.0.count=4",
        "--format",
        format,
    ]
}

#[test]
fn sweep_is_identical_across_runs_and_thread_counts() {
    let args = sweep_args("json");
    let one = pipegnn_threads(&args, "1");
    assert!(one.status.success(), "{}", stderr(&one));
    let two = pipegnn_threads(&args, "2");
    assert_eq!(one.stdout, two.stdout);
    assert_eq!(one.stdout, pipegnn(&args).stdout);
    let csv = sweep_args("csv");
    assert_eq!(
        pipegnn_threads(&csv, "1").stdout,
        pipegnn_threads(&csv, "2").stdout
    );
}

#[test]
fn sweep_rows_are_the_cross_product_first_axis_slowest() {
    let out = pipegnn(&sweep_args("json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["scenario"], "explicit-pipeline");
    let axes = doc["axes"].as_array().unwrap();
    assert_eq!(axes.len(), 2, "a value without commas is not an axis");
    assert_eq!(axes[0]["key"], "schedule.chunks");
    assert_eq!(axes[0]["values"], serde_json::json!([1, 2, 4]));
    assert_eq!(axes[1]["values"], serde_json::json!(["gpipe", "1f1b"]));
    let points = doc["points"].as_array().unwrap();
    assert_eq!(points.len(), 3 * 2);
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["set"]["schedule.chunks"], [1, 2, 4][i / 2]);
        assert_eq!(p["set"]["schedule.kind"], ["gpipe", "1f1b"][i % 2]);
        assert_eq!(p["chunks"], [1, 2, 4][i / 2]);
        assert_eq!(p["schedule"], ["gpipe", "1f1b"][i % 2]);
        assert_eq!(p["error"], Value::Null);
    }
    let csv = stdout(&pipegnn(&sweep_args("csv")));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 6);
    assert!(
        lines[0].starts_with(
            "schedule.chunks,schedule.kind,schedule,stages,chunks,devices,epoch_time_s"
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("1,gpipe,gpipe,4,1,4,"), "{}", lines[1]);
    assert!(lines[6].starts_with("4,1f1b,1f1b,4,4,4,"), "{}", lines[6]);
}

#[test]
fn sweep_point_equals_simulate() {
    let out = pipegnn(&sweep_args("json"));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = &doc["points"][3]; // chunks 2, 1f1b
    let sim = pipegnn(&[
        "simulate",
        SCENARIO,
        "--set",
        "schedule.chunks=2",
        "--set",
        "schedule.kind=1f1b",
        "--set",
        "devices.0.count=4",
        "--format",
        "json",
    ]);
    assert!(sim.status.success(), "{}", stderr(&sim));
    let sim: Value = serde_json::from_slice(&sim.stdout).unwrap();
    let r = &sim["results"][0];
    for key in [
        "schedule",
        "stages",
        "chunks",
        "epoch_time_s",
        "bubble_fraction",
        "communication_bytes",
        "fits",
    ] {
        assert_eq!(point[key], r[key], "{key}");
    }
    let peak = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["peak_memory_bytes"].as_u64().unwrap())
        .max();
    assert_eq!(point["peak_memory_bytes"].as_u64(), peak);
    assert_eq!(point["devices"], r["devices"].as_array().unwrap().len());
}

#[test]
fn sweep_failing_points_are_rows_and_bad_keys_fail_up_front() {
    let out = pipegnn(&[
        "sweep",
        SCENARIO,
        "--set",
        "devices.0.count=2,4",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = &doc["points"][0];
    assert_eq!(bad["fits"], false);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("4 stages need 4 devices"),
        "{bad}"
    );
    assert!(!bad["error"].as_str().unwrap().contains('\n'));
    assert_eq!(doc["points"][1]["error"], Value::Null);

    for set in ["schedule.chunkz=1,2", "devices.count=2,4"] {
        let out = pipegnn(&["sweep", SCENARIO, "--set", set]);
        assert_eq!(out.status.code(), Some(4), "{set}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("--set {set}")),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

/// Picks like the planner: the fastest fitting time; among configurations within 1% of it the
/// fewest devices, then time, chunks, schedule.
fn brute_force(max_devices: u32, chunks: &[u32]) -> (String, u32, u32, f64) {
    let mut fitting: Vec<(f64, u32, u32, String)> = Vec::new();
    for kind in ["gpipe", "1f1b"] {
        for &c in chunks {
            for d in 1..=max_devices {
                let (kind_set, chunk_set, device_set) = (
                    format!("schedule.kind={kind}"),
                    format!("schedule.chunks={c}"),
                    format!("devices.0.count={d}"),
                );
                let out = pipegnn(&[
                    "simulate",
                    SCENARIO,
                    "--set",
                    &kind_set,
                    "--set",
                    &chunk_set,
                    "--set",
                    &device_set,
                    "--format",
                    "json",
                ]);
                if !out.status.success() {
                    continue;
                }
                let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
                let r = &doc["results"][0];
                fitting.push((
                    r["epoch_time_s"].as_f64().unwrap(),
                    d,
                    c,
                    r["schedule"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let best = fitting.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
    let mut close: Vec<_> = fitting
        .into_iter()
        .filter(|f| f.0 <= best * 1.01 + 1e-12)
        .collect();
    close.sort_by(|a, b| {
        (a.1, a.0, a.2, &a.3)
            .partial_cmp(&(b.1, b.0, b.2, &b.3))
            .unwrap()
    });
    let (time, devices, chunks, schedule) = close.remove(0);
    (schedule, chunks, devices, time)
}

#[test]
fn plan_choice_equals_brute_force() {
    let args = [
        "plan",
        SCENARIO,
        "--max-devices",
        "4",
        "--chunks",
        "1,2,4,8",
        "--format",
        "json",
    ];
    let out = pipegnn(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, pipegnn_threads(&args, "1").stdout);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["configurations"], 2 * 4 * 4);
    assert_eq!(
        doc["rejected"]["invalid"],
        2 * 4 * 3,
        "1-3 devices cannot hold 4 stages"
    );
    let best = &doc["best"][0];
    let (schedule, chunks, devices, time) = brute_force(4, &[1, 2, 4, 8]);
    assert_eq!(best["schedule"], schedule.as_str());
    assert_eq!(best["chunks"], chunks);
    assert_eq!(best["devices"], devices);
    assert_eq!(best["epoch_time_s"].as_f64().unwrap(), time);

    let table = pipegnn(&[
        "plan",
        SCENARIO,
        "--max-devices",
        "4",
        "--chunks",
        "1,2,4,8",
    ]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).contains("rejected:"), "{}", stdout(&table));
}

#[test]
fn plan_with_nothing_fitting_exits_6() {
    let out = pipegnn(&[
        "plan",
        SCENARIO,
        "--set",
        "devices.0.memory=1GiB",
        "--max-devices",
        "4",
        "--chunks",
        "1,2",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no configuration fits the devices' memory"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("does not fit: gpipe"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn plan_searches_stage_splits_of_a_small_gnn() {
    let out = pipegnn(&[
        "plan",
        "scenarios/quickstart.yaml",
        "--set",
        "graph.synthetic.nodes=2000",
        "--set",
        "model.layers=[{kind: gcn, out: 16}, {kind: gcn, out: 16}, {kind: gcn, out: 8}]",
        "--max-devices",
        "3",
        "--chunks",
        "1,4",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Pipelines: 3 kinds x 2 chunk counts x (1 + 2 + 3 devices: auto plus 1, 2, 1 splits);
    // graph parallelism: one per device count; GNNPipe's hybrid: a stage of 2 and one of 3
    // partitions, per chunk count.
    assert_eq!(doc["configurations"], 3 * 2 * (2 + 3 + 2) + 3 + 2 * 2);
    let best = &doc["best"][0];
    assert!(best["epoch_time_s"].as_f64().unwrap() > 0.0, "{best}");
}
