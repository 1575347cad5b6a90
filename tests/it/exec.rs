//! The executor: real training on Cora through the command line, against the targets and the
//! schedule it runs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{losses, scratch, stderr, stdout, write};

/// Runs `pipegnn` with every Cora scenario among `args` pointed at the dataset where
/// [`crate::gnn::data_dir`] found it.
fn pipegnn(args: &[&str]) -> std::process::Output {
    let set = crate::gnn::dataset_set("cora");
    let mut all: Vec<&str> = Vec::with_capacity(args.len() + 2);
    for &arg in args {
        all.push(arg);
        if arg.starts_with("scenarios/cora") {
            all.extend(set.iter().map(String::as_str));
        }
    }
    crate::support::pipegnn(&all)
}

fn run_json(args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = pipegnn(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0].clone()
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

/// `compare --replay`: op times measured on the even epochs of one run, replayed against its
/// odd epochs (a replay, not a prediction; the device-profile tier is `tests/it/calibration.rs`).
#[test]
fn a_replay_gives_predicted_against_measured() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let out = pipegnn(&[
        "compare",
        "scenarios/cora-gpipe-drop.yaml",
        "--replay",
        "--epochs",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["cost_tier"].as_str().unwrap().starts_with("replay"),
        "{doc}"
    );
    let metrics = doc["metrics"].as_array().unwrap();
    for metric in metrics {
        for key in ["name", "device", "predicted", "measured", "relative_error"] {
            assert!(metric.get(key).is_some(), "{key} in {metric}");
        }
    }
    assert_eq!(metrics[0]["name"], "epoch_time_s");
    for memory in metrics.iter().filter(|m| m["name"] == "peak_memory_bytes") {
        // The counting allocator measured it.
        assert!(memory["measured"].as_f64().unwrap() > 0.0, "{memory}");
    }
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

/// Losses of two runs agree to a relative `tolerance` (summation order may differ).
fn assert_losses_close(a: &Value, b: &Value, tolerance: f64) {
    let (a, b) = (losses(a), losses(b));
    assert_eq!(a.len(), b.len());
    for (epoch, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tolerance * y.abs(),
            "epoch {}: {x} vs {y}",
            epoch + 1
        );
    }
}

#[test]
fn gnnpipe_with_one_chunk_is_full_graph_training() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let one = run_json(&["scenarios/cora-gcn-1stage.yaml", "--epochs", "12"]);
    for backward in ["drop", "deferred", "exact"] {
        let gnnpipe = run_json(&[
            "scenarios/cora-gcn.yaml",
            "--set",
            "schedule.chunks=1",
            "--set",
            &format!("schedule.backward={backward}"),
            "--epochs",
            "12",
        ]);
        assert_eq!(gnnpipe["stages"], 2);
        assert_eq!(one["epochs"], gnnpipe["epochs"], "backward {backward}");
    }
}

#[test]
fn exact_halos_and_graph_parallelism_train_like_the_full_graph() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    // Dropout masks are drawn per vertex, so recomputed halo rows see the masks the full graph
    // does: 8 chunks with their receptive fields are the full-graph model.
    let one = run_json(&["scenarios/cora-gcn-1stage.yaml", "--epochs", "12"]);
    for kind in ["gpipe", "1f1b"] {
        let exact = run_json(&[
            "scenarios/cora-gpipe-drop.yaml",
            "--set",
            "schedule.halo=exact",
            "--set",
            &format!("schedule.kind={kind}"),
            "--epochs",
            "12",
        ]);
        assert_eq!(exact["schedule"], format!("{kind}-exact"));
        assert!(exact["redundant_compute_factor"].as_f64().unwrap() > 1.0);
        assert_losses_close(&one, &exact, 1e-5);
    }
    for exchange in ["halo", "broadcast"] {
        let parallel = run_json(&[
            "scenarios/cora-graph-parallel.yaml",
            "--set",
            &format!("schedule.exchange={exchange}"),
            "--epochs",
            "12",
        ]);
        assert_losses_close(&one, &parallel, 1e-5);
    }
}

#[test]
fn gnnpipe_keeps_full_graph_accuracy_and_dropping_cross_chunk_gradients_costs_some() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let one = run_json(&["scenarios/cora-gcn-1stage.yaml"]);
    let deferred = run_json(&["scenarios/cora-gcn.yaml"]);
    let (full, pipelined) = (
        one["test_accuracy"].as_f64().unwrap(),
        deferred["test_accuracy"].as_f64().unwrap(),
    );
    assert!(
        (full - pipelined).abs() <= 0.015,
        "1 stage {full}, gnnpipe {pipelined}"
    );
    assert!(deferred["stale_read_fraction"].as_f64().unwrap() > 0.1);
    // GNNPipe's hybrid: each stage a group of two devices with a partition each.
    let hybrid = run_json(&[
        "scenarios/cora-gcn.yaml",
        "--set",
        "devices.0.count=4",
        "--set",
        "schedule.partitions=2",
    ]);
    assert_eq!(hybrid["schedule"], "gnnpipe-deferred-p2");
    let hybrid = hybrid["test_accuracy"].as_f64().unwrap();
    assert!(
        (full - hybrid).abs() <= 0.015,
        "1 stage {full}, hybrid {hybrid}"
    );
}

#[test]
fn history_and_gradient_buffers_are_measured_at_their_size() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let result = run_json(&["scenarios/cora-gcn.yaml", "--epochs", "3"]);
    let stage1 = &result["devices"][1]["memory_bytes"];
    // Stage 1 owns layer 1, whose input is 16 wide: one N x 16 f32 history, two gradient
    // buffers (deferred: last epoch's and this one's).
    let rows = 2708 * 16 * 4;
    assert_eq!(stage1["history"], rows, "{stage1}");
    assert_eq!(stage1["deferred_gradients"], 2 * rows, "{stage1}");
    assert_eq!(result["devices"][0]["memory_bytes"]["history"], 0);
    for device in result["devices"].as_array().unwrap() {
        assert!(device["memory_bytes"]["activations"].as_u64().unwrap() > 0);
        assert!(device["memory_bytes"]["parameters"].as_u64().unwrap() > 0);
    }
}

#[test]
fn gat_on_cora_learns() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let result = run_json(&["scenarios/cora-gat.yaml", "--epochs", "40"]);
    let accuracy = result["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.7,
        "GAT test accuracy after 40 epochs {accuracy}"
    );
}

#[test]
fn emulated_links_take_their_latency_and_bandwidth() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let result = run_json(&[
        "scenarios/cora-gpipe-drop.yaml",
        "--set",
        "executor.emulate_links=true",
        "--set",
        "links.topology.bandwidth=200MB/s",
        "--set",
        "links.topology.latency=50us",
        "--epochs",
        "3",
    ]);
    for link in result["links"].as_array().unwrap() {
        let bytes = link["bytes"].as_f64().unwrap();
        // 8 transfers, each 50us plus its bytes at 200 MB/s, one after another on the link.
        let expected = 8.0 * 50e-6 + bytes / 200e6;
        let busy = link["busy_s"].as_f64().unwrap();
        assert!(
            (busy - expected).abs() <= 0.02 * expected,
            "{link}: busy {busy} expected {expected}"
        );
    }
}

/// A scenario on a small synthetic graph with `layers`, over `devices` CPU devices, running
/// `schedule` (a YAML mapping) for 4 epochs.
fn synthetic(layers: &str, devices: u32, schedule: &str) -> String {
    format!(
        "# test\nname: split\ngraph:\n  synthetic: {{kind: sbm, nodes: 240, avg_degree: 5, classes: 3, features: 12, seed: 3}}\nmodel:\n  layers: {layers}\ntraining: {{epochs: 4, dropout: 0.5, seed: 5}}\ndevices:\n  - {{name: cpu, count: {devices}, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\nexecutor: {{threads_per_device: 1}}\nschedule: {schedule}\n"
    )
}

/// `pipegnn schedule --kind KIND ... --format json` saved in `dir`: a schedule file.
fn schedule_file(dir: &Path, kind: &str, stages: u32, per_device: u32, chunks: u32) -> PathBuf {
    let (stages, per_device, chunks) = (
        stages.to_string(),
        per_device.to_string(),
        chunks.to_string(),
    );
    let out = crate::support::pipegnn(&[
        "schedule",
        "--kind",
        kind,
        "--stages",
        &stages,
        "--stages-per-device",
        &per_device,
        "--chunks",
        &chunks,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{kind}: {}", stderr(&out));
    write(
        dir,
        &format!("{kind}-s{stages}-v{per_device}.json"),
        &stdout(&out),
    )
}

/// `pipegnn run` of the scenario `text` (saved in `dir` as `name`) with `extra` arguments.
fn run_text(dir: &Path, name: &str, text: &str, extra: &[&str]) -> Value {
    let path = write(dir, name, text);
    let mut args = vec!["run", path.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = crate::support::pipegnn(&args);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0].clone()
}

/// Issue 15: a zero-bubble schedule (ZB-H1: `interleaved_zb` with one stage per device) splits
/// every backward into `I` and `W`; for GCN, GraphSAGE and GAT it trains to 1F1B's losses (the
/// same chunks and the same math, the gradients summed in another order), and its measured
/// trace runs every `I` and `W` in the schedule's order (`pipegnn run` holds every epoch to it).
#[test]
fn zero_bubble_trains_like_1f1b_for_every_layer() {
    let dir = scratch("zb-h1");
    let zb = schedule_file(&dir, "interleaved_zb", 2, 1, 4);
    let gcn = "[{kind: gcn, out: 8}, {kind: gcn, out: 8}, {kind: gcn, out: 3}]";
    for (name, layers, halo) in [
        ("gcn", gcn, "drop"),
        ("sage", "[{kind: sage, out: 8}, {kind: sage, out: 8}, {kind: sage, out: 3}]", "drop"),
        ("gat", "[{kind: gat, out: 8, heads: 2}, {kind: gat, out: 8, heads: 2}, {kind: gat, out: 3, heads: 1}]", "drop"),
        // Halo rows recomputed: the transforms' inputs W keeps are the receptive fields.
        ("gcn-exact", gcn, "exact"),
    ] {
        let split = format!("{{file: {}, chunks: 4, halo: {halo}}}", zb.display());
        let whole = run_text(
            &dir,
            &format!("{name}-1f1b.yaml"),
            &synthetic(layers, 2, &format!("{{kind: 1f1b, chunks: 4, halo: {halo}}}")),
            &[],
        );
        let trace = dir.join(format!("{name}.trace.json"));
        let halves = run_text(
            &dir,
            &format!("{name}-zb.yaml"),
            &synthetic(layers, 2, &split),
            &["--trace", trace.to_str().unwrap()],
        );
        assert_eq!(halves["stages"], 2, "{name}");
        assert_eq!(whole["schedule"], format!("1f1b-{halo}"), "{name}");
        if halo == "exact" {
            assert!(halves["redundant_compute_factor"].as_f64().unwrap() > 1.0);
        }
        assert_losses_close(&whole, &halves, 1e-5);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
        for category in ["input_gradient", "weight_gradient"] {
            let ran = doc["traceEvents"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["ph"] == "X" && e["cat"] == category)
                .count();
            assert_eq!(ran, 2 * 4, "{name}: {category} spans");
        }
    }
}

/// Issue 15: schedules with several stages per device (round-robin: interleaved 1F1B, looped
/// BFS, interleaved zero bubble; as a V: ZBV, DualPipeV) train 4 stages on 2 devices to the
/// losses of GPipe on 4 devices with the same chunks and stage split.
#[test]
fn several_stages_per_device_train_like_gpipe() {
    let dir = scratch("stages-per-device");
    let layers = "[{kind: gcn, out: 8}, {kind: sage, out: 8}, {kind: gat, out: 8, heads: 2}, {kind: gcn, out: 3}]";
    let gpipe = run_text(
        &dir,
        "gpipe.yaml",
        &synthetic(layers, 4, "{kind: gpipe, chunks: 4, stages: [1, 1, 1, 1]}"),
        &[],
    );
    for kind in [
        "interleaved_1f1b",
        "looped_bfs",
        "interleaved_zb",
        "zbv",
        "dualpipev",
    ] {
        let file = schedule_file(&dir, kind, 4, 2, 4);
        let schedule = format!(
            "{{file: {}, chunks: 4, stages: [1, 1, 1, 1]}}",
            file.display()
        );
        let run = run_text(
            &dir,
            &format!("{kind}.yaml"),
            &synthetic(layers, 2, &schedule),
            &[],
        );
        assert_eq!(run["stages"], 4, "{kind}");
        assert_eq!(run["devices"].as_array().unwrap().len(), 2, "{kind}");
        assert_losses_close(&gpipe, &run, 1e-5);
    }
}

/// Issue 15: the shipped ZB-H1 file on Cora (2 stages, 8 chunks) trains to 1F1B's losses.
#[test]
fn zb_h1_file_on_cora_trains_like_1f1b() {
    if crate::gnn::data_dir().is_none() {
        return;
    }
    let whole = run_json(&[
        "scenarios/cora-gpipe-drop.yaml",
        "--set",
        "schedule.kind=1f1b",
        "--epochs",
        "15",
    ]);
    let halves = run_json(&[
        "scenarios/cora-gpipe-drop.yaml",
        "--set",
        "schedule.kind=null",
        "--set",
        "schedule.file=../schedules/zb-h1-s2-k8.yaml",
        "--epochs",
        "15",
    ]);
    assert_eq!(halves["schedule"], "file:zb-h1-s2-k8");
    assert_losses_close(&whole, &halves, 1e-5);
}
