//! The binary as a user runs it: the README's commands, output shapes, exit codes.

use serde_json::Value;

use crate::support::{pipegnn, scratch, stderr, stdout};

#[test]
fn readme_quickstart_simulates() {
    let out = pipegnn(&["simulate", "scenarios/quickstart.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("scenario quickstart: 4 devices, 4 stages, 8 chunks"),
        "{text}"
    );
    assert!(text.contains("gnnpipe"));
    assert!(text.contains("stale"));
}

#[test]
fn gnn_comparison_is_byte_identical_twice() {
    let args = [
        "simulate",
        "scenarios/quickstart.yaml",
        "--schedule",
        "all",
        "--format",
        "json",
    ];
    let first = pipegnn(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(first.stdout, pipegnn(&args).stdout);
    let doc: Value = serde_json::from_slice(&first.stdout).unwrap();
    let names: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["schedule"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["gnnpipe", "gpipe-drop", "1f1b-drop", "graph_parallel"]
    );
}

#[test]
fn readme_tour_commands_run() {
    for args in [
        vec!["validate", "scenarios/explicit-pipeline.yaml"],
        vec![
            "simulate",
            "scenarios/explicit-pipeline.yaml",
            "--schedule",
            "all",
            "--timeline",
        ],
        vec![
            "schedule", "--kind", "1f1b", "--stages", "4", "--chunks", "8",
        ],
        vec!["schedule", "--file", "schedules/1f1b-s2-k4.yaml"],
        vec!["bench", "--stages", "4", "--chunks", "16", "--repeat", "1"],
        vec![
            "proptest",
            "--kind",
            "interleaved_1f1b",
            "--stages",
            "2..8",
            "--stages-per-device",
            "1..2",
            "--closed-form",
            "interleaved",
        ],
    ] {
        let out = pipegnn(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty());
    }
}

#[test]
fn schedule_json_has_the_documented_shape() {
    let out = pipegnn(&[
        "schedule", "--kind", "gpipe", "--stages", "2", "--chunks", "3", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["kind"], "gpipe");
    assert_eq!(doc["stages"], 2);
    assert_eq!(doc["chunks"], 3);
    assert_eq!(
        doc["orders"]["0"],
        serde_json::json!([
            ["F", 0, 0],
            ["F", 1, 0],
            ["F", 2, 0],
            ["B", 0, 0],
            ["B", 1, 0],
            ["B", 2, 0]
        ])
    );
    assert!(doc.get("makespan_s").is_none());
}

#[test]
fn schedule_simulate_json_adds_metrics() {
    let out = pipegnn(&[
        "schedule",
        "--kind",
        "1f1b",
        "--stages",
        "4",
        "--chunks",
        "8",
        "--forward",
        "1ms",
        "--backward",
        "2ms",
        "--simulate",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // (K + S - 1)(t_f + t_b) = 11 * 3 ms; bubble (S - 1)/(K + S - 1) = 3/11.
    assert!((doc["makespan_s"].as_f64().unwrap() - 0.033).abs() < 1e-12);
    assert!((doc["bubble_fraction"].as_f64().unwrap() - 3.0 / 11.0).abs() < 1e-12);
    let devices = doc["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 4);
    for (i, device) in devices.iter().enumerate() {
        assert_eq!(device["device"], i);
        assert_eq!(device["peak_in_flight"], 4 - i);
        assert!((device["busy_s"].as_f64().unwrap() - 0.024).abs() < 1e-12);
        assert!((device["idle_s"].as_f64().unwrap() - 0.009).abs() < 1e-12);
        assert!(device.get("bubble_fraction").is_some());
    }
}

#[test]
fn simulate_json_has_the_documented_shape_and_is_deterministic() {
    let args = [
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--schedule",
        "all",
        "--format",
        "json",
    ];
    let first = pipegnn(&args);
    let second = pipegnn(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(first.stdout, second.stdout, "byte-identical output");
    let doc: Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert_eq!(doc["scenario"], "explicit-pipeline");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        for key in [
            "schedule",
            "chunks",
            "epoch_time_s",
            "bubble_fraction",
            "communication_bytes",
            "devices",
            "links",
        ] {
            assert!(result.get(key).is_some(), "result has {key}");
        }
        for device in result["devices"].as_array().unwrap() {
            for key in [
                "name",
                "busy_s",
                "idle_s",
                "bubble_fraction",
                "peak_memory_bytes",
                "memory_bytes",
                "fits",
            ] {
                assert!(device.get(key).is_some(), "device has {key}");
            }
            let parts: u64 = device["memory_bytes"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(parts, device["peak_memory_bytes"].as_u64().unwrap());
        }
        for link in result["links"].as_array().unwrap() {
            for key in ["from", "to", "bytes", "busy_s"] {
                assert!(link.get(key).is_some(), "link has {key}");
            }
        }
    }
}

#[test]
fn trace_export_is_chrome_trace_json_with_device_and_link_rows() {
    let dir = scratch("trace");
    let path = dir.join("explicit.trace.json");
    let out = pipegnn(&[
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let rows: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert!(rows.contains(&"gpu0"));
    assert!(rows.contains(&"gpu0 -> gpu1"));
    let complete = events.iter().filter(|e| e["ph"] == "X").count();
    // 4 stages x 8 chunks x (F + B) + 4 optimizer steps, plus 6 boundaries' worth of transfers.
    assert_eq!(complete, 4 * 8 * 2 + 4 + 3 * 8 * 2);
    assert!(events.iter().any(|e| e["ph"] == "C"), "memory counters");
}
