//! The executor: real training on Cora through the command line, against the targets and the
//! schedule it runs.

use serde_json::Value;

use crate::support::{pipegnn, stderr};

fn run_json(args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = pipegnn(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0].clone()
}

fn losses(result: &Value) -> Vec<f64> {
    result["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn one_stage_gcn_on_cora_reaches_the_published_accuracy() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let result = run_json(&["scenarios/cora-gcn-1stage.yaml"]);
    let accuracy = result["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.79,
        "test accuracy at best validation {accuracy}"
    );
    assert_eq!(result["epochs"].as_array().unwrap().len(), 200);
    for key in [
        "epoch",
        "loss",
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
    ] {
        assert!(result["epochs"][0].get(key).is_some(), "{key}");
    }
}

#[test]
fn two_stages_with_one_chunk_train_exactly_like_one_stage() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let one = run_json(&["scenarios/cora-gcn-1stage.yaml", "--epochs", "15"]);
    let two = run_json(&[
        "scenarios/cora-gpipe-drop.yaml",
        "--set",
        "schedule.chunks=1",
        "--epochs",
        "15",
    ]);
    assert_eq!(two["stages"], 2);
    assert_eq!(losses(&one), losses(&two));
    assert_eq!(one["epochs"], two["epochs"]);
}

#[test]
fn same_seed_same_run_and_dropped_edges_cost_accuracy() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let first = run_json(&["scenarios/cora-gpipe-drop.yaml", "--epochs", "100"]);
    let second = run_json(&["scenarios/cora-gpipe-drop.yaml", "--epochs", "100"]);
    assert_eq!(first["epochs"], second["epochs"]);
    // Dearing & Wang: with 8 chunks most edges are dropped and accuracy falls well below the
    // full graph's.
    let full = run_json(&[
        "scenarios/cora-gpipe-drop.yaml",
        "--set",
        "schedule.chunks=1",
        "--epochs",
        "100",
    ]);
    let chunked = first["test_accuracy"].as_f64().unwrap();
    let whole = full["test_accuracy"].as_f64().unwrap();
    assert!(
        chunked + 0.05 < whole,
        "8 chunks {chunked} vs 1 chunk {whole}"
    );
    assert!(first["dropped_edge_fraction"].as_f64().unwrap() > 0.5);
}

#[test]
fn measured_trace_runs_every_op_in_schedule_order() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let dir = crate::support::scratch("measured");
    let path = dir.join("measured.trace.json");
    let out = pipegnn(&[
        "run",
        "scenarios/cora-gpipe-drop.yaml",
        "--epochs",
        "3",
        "--set",
        "schedule.kind=1f1b",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let generated = pipegnn(&[
        "schedule", "--kind", "1f1b", "--stages", "2", "--chunks", "8", "--format", "json",
    ]);
    let orders: Value =
        serde_json::from_slice::<Value>(&generated.stdout).unwrap()["orders"].clone();
    for device in 0..2u64 {
        let mut spans: Vec<&Value> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["ph"] == "X" && e["pid"] == 1 && e["tid"] == device && e["cat"] != "optimizer"
            })
            .collect();
        spans.sort_by(|a, b| {
            a["ts"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["ts"].as_f64().unwrap())
        });
        let ran: Vec<String> = spans
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        let planned: Vec<String> = orders[device.to_string()]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| format!("{}{}", op[0].as_str().unwrap(), op[1]))
            .collect();
        assert_eq!(ran, planned, "device {device}");
    }
}

#[test]
fn a_run_predicted_not_to_fit_is_refused() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let out = pipegnn(&[
        "run",
        "scenarios/cora-gcn-1stage.yaml",
        "--set",
        "devices.0.memory=1MiB",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("devices[0].memory: cpu needs"), "{err}");
    assert!(
        err.contains("refusing to run a schedule predicted not to fit (use --force"),
        "{err}"
    );
}

#[test]
fn a_diverging_loss_stops_the_run() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let out = pipegnn(&[
        "run",
        "scenarios/cora-gcn-1stage.yaml",
        "--set",
        "training.lr=1e30",
        "--epochs",
        "50",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the loss is not a finite number at epoch"),
        "{err}"
    );
}

#[test]
fn calibrate_then_compare_gives_predicted_against_measured() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let dir = crate::support::scratch("calibrate");
    let profile = dir.join("cora.profile.json");
    let out = pipegnn(&[
        "calibrate",
        "scenarios/cora-gpipe-drop.yaml",
        "--epochs",
        "3",
        "--out",
        profile.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pipegnn(&[
        "compare",
        "scenarios/cora-gpipe-drop.yaml",
        "--profile",
        profile.to_str().unwrap(),
        "--epochs",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let metrics = doc["metrics"].as_array().unwrap();
    for metric in metrics {
        for key in ["name", "device", "predicted", "measured", "relative_error"] {
            assert!(metric.get(key).is_some(), "{key} in {metric}");
        }
    }
    assert_eq!(metrics[0]["name"], "epoch_time_s");
    let links: Vec<&Value> = metrics
        .iter()
        .filter(|m| m["name"] == "link_bytes")
        .collect();
    assert_eq!(links.len(), 2);
    for link in links {
        // Bytes are exact: the prediction and the run move the same tensors.
        assert_eq!(link["relative_error"], 0.0, "{link}");
    }
    let out = pipegnn(&[
        "compare",
        "scenarios/cora-gpipe-drop.yaml",
        "--profile",
        "README.md",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}
