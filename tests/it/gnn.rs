//! The GNN workload against computations made here from first principles: edge counts read from
//! edges.csv, traffic and memory formulas, parameter counts.

use std::path::PathBuf;

use pipegnn::plan;
use pipegnn::report::{self, json};

use crate::scenarios::{load, own, predict, Loaded};
use crate::support::{scratch, write};

/// Where the shared datasets are looked for: `PIPEGNN_DATA`, else `../shared/data` beside the
/// checkout.
pub fn data_path() -> PathBuf {
    std::env::var_os("PIPEGNN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::support::root().join("../shared/data"))
}

/// `--set` arguments that point a scenario of `scenarios/` at the dataset `name` where
/// [`data_dir`] found it, rather than at the `../../shared/data` the file names: a test reads
/// the data from the place its skip looked.
pub fn dataset_set(name: &str) -> [String; 2] {
    [
        "--set".into(),
        format!("graph.dataset.path={}", data_path().join(name).display()),
    ]
}

/// The shared datasets (`PIPEGNN_DATA`, else `../shared/data` beside the checkout), or `None`
/// with a note on stderr when they are absent.
pub fn data_dir() -> Option<PathBuf> {
    let dir = data_path();
    if dir.join("cora/edges.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: no datasets at {} (set PIPEGNN_DATA)",
            dir.display()
        );
        None
    }
}

fn scenario(name: &str, text: &str) -> Loaded {
    let dir = scratch(name);
    load(&write(&dir, "scenario.yaml", text), &[])
}

fn result_json(loaded: &Loaded, candidate: &plan::Candidate) -> serde_json::Value {
    let p = predict(loaded, candidate);
    let metrics = report::compute(&p.trace);
    let doc = json::ResultDoc::new(
        &p.label,
        p.schedule.n_stages(),
        p.schedule.n_chunks(),
        &metrics,
        p.graph.as_ref(),
        plan::fit::fits(&loaded.scenario, &metrics),
    );
    serde_json::to_value(doc).unwrap()
}

#[test]
fn cora_contiguous_fractions_match_counts_from_edges_csv() {
    let Some(data) = data_dir() else { return };
    let text = std::fs::read_to_string(data.join("cora/edges.csv")).unwrap();
    let edges: Vec<(u64, u64)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let (a, b) = line.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let n = 2708u64;
    for k in [2u64, 4, 8] {
        // Contiguous chunk c holds ids floor(c*N/K) .. floor((c+1)*N/K).
        let chunk = |v: u64| (0..k).find(|&c| v < (c + 1) * n / k).unwrap();
        let cut = edges.iter().filter(|&&(u, v)| chunk(u) != chunk(v)).count() as f64;
        let directed: Vec<(u64, u64)> = edges.iter().flat_map(|&(u, v)| [(u, v), (v, u)]).collect();
        let stale = directed
            .iter()
            .filter(|&&(reader, read)| chunk(read) > chunk(reader))
            .count() as f64;
        let yaml = |kind: &str| {
            format!(
                "# test\nname: cora\ngraph:\n  dataset: {{path: {}}}\nmodel:\n  layers: [{{kind: gcn, out: 16}}, {{kind: gcn, out: 7}}]\ndevices:\n  - {{name: gpu, count: 2, preset: v100-32gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{kind: {kind}, chunks: {k}}}\n",
                data.join("cora").display()
            )
        };
        let gpipe = scenario("cora-gpipe", &yaml("gpipe"));
        let doc = result_json(&gpipe, &own(&gpipe.scenario));
        let dropped = doc["dropped_edge_fraction"].as_f64().unwrap();
        assert!(
            (dropped - cut / edges.len() as f64).abs() < 1e-12,
            "k={k}: {dropped}"
        );
        let gnnpipe = scenario("cora-gnnpipe", &yaml("gnnpipe"));
        let doc = result_json(&gnnpipe, &own(&gnnpipe.scenario));
        let stale_fraction = doc["stale_read_fraction"].as_f64().unwrap();
        assert!(
            (stale_fraction - stale / directed.len() as f64).abs() < 1e-12,
            "k={k}: {stale_fraction}"
        );
    }
}

const SBM: &str = "graph:\n  synthetic: {kind: sbm, nodes: 3000, avg_degree: 8, classes: 4, features: 64, homophily: 0.8, seed: 3}\n";

/// A GCN of `depth` layers, 32 wide, on the test SBM; `extra` is appended to the schedule
/// mapping (e.g. `, stages: [2, 2]`).
fn deep_gcn(depth: usize, extra: &str, devices: usize, kind: &str) -> String {
    format!(
        "# test\nname: deep\n{SBM}model: {{kind: gcn, depth: {depth}, hidden: 32}}\ndevices:\n  - {{name: gpu, count: {devices}, preset: a100-40gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{kind: {kind}, chunks: 6{extra}}}\n"
    )
}

#[test]
fn gnnpipe_moves_two_n_d_per_boundary_per_epoch() {
    // 4 layers, 4 stages: every boundary carries layer outputs 32 wide.
    let loaded = scenario("traffic", &deep_gcn(4, "", 4, "gnnpipe"));
    let doc = result_json(&loaded, &own(&loaded.scenario));
    let n_d_bytes = 3000 * 32 * 4;
    for link in doc["links"].as_array().unwrap() {
        assert_eq!(link["bytes"], n_d_bytes, "{link}");
    }
    assert_eq!(doc["links"].as_array().unwrap().len(), 2 * 3);
    assert_eq!(doc["communication_bytes"], 3 * 2 * n_d_bytes);
}

#[test]
fn graph_parallel_traffic_grows_with_depth_and_gnnpipe_does_not() {
    let traffic = |depth: usize, kind: &str| {
        // GNNPipe on two stages of depth/2 layers each; graph parallelism on two partitions.
        let half = depth / 2;
        let split = match kind {
            "gnnpipe" => format!(", stages: [{half}, {half}]"),
            _ => String::new(),
        };
        let loaded = scenario("depth", &deep_gcn(depth, &split, 2, kind));
        result_json(&loaded, &own(&loaded.scenario))["communication_bytes"]
            .as_u64()
            .unwrap()
    };
    let gnnpipe: Vec<u64> = [2, 4, 8].iter().map(|&d| traffic(d, "gnnpipe")).collect();
    assert!(gnnpipe.iter().all(|&t| t == gnnpipe[0]), "{gnnpipe:?}");
    let parallel: Vec<u64> = [2, 4, 8]
        .iter()
        .map(|&d| traffic(d, "graph_parallel"))
        .collect();
    assert!(
        parallel[1] > parallel[0] && parallel[2] > parallel[1],
        "{parallel:?}"
    );
    // Every extra layer adds the same exchange (hidden layers are equally wide) ...
    assert_eq!(parallel[2] - parallel[1], 2 * (parallel[1] - parallel[0]));
    // ... and graph parallelism moves more than GNNPipe at depth 8 by about the layer count.
    assert!(parallel[2] > 3 * gnnpipe[2], "{parallel:?} vs {gnnpipe:?}");
}

#[test]
fn history_and_optimizer_memory_follow_their_formulas() {
    // 4 layers in stages [2, 2]: stage 0 holds layers 0 (reads features: no history) and 1
    // (N x 32); stage 1 holds layers 2 and 3 (N x 32 each).
    let text = deep_gcn(4, ", stages: [2, 2]", 2, "gnnpipe");
    for (optimizer, copies) in [("adam", 2), ("momentum", 1), ("sgd", 0)] {
        let loaded = scenario(
            "memory",
            &format!("{text}training: {{optimizer: {optimizer}}}\n"),
        );
        let doc = result_json(&loaded, &own(&loaded.scenario));
        let devices = doc["devices"].as_array().unwrap();
        let history: Vec<u64> = devices
            .iter()
            .map(|d| d["memory_bytes"]["history"].as_u64().unwrap())
            .collect();
        assert_eq!(history, vec![3000 * 32 * 4, 2 * 3000 * 32 * 4]);
        // Parameters, counted here: GCN(64->32), GCN(32->32) | GCN(32->32), GCN(32->4).
        let params = [
            (64 * 32 + 32) + (32 * 32 + 32),
            (32 * 32 + 32) + (32 * 4 + 4),
        ];
        for (device, expected) in devices.iter().zip(params) {
            let memory = &device["memory_bytes"];
            assert_eq!(memory["parameters"], expected * 4);
            assert_eq!(memory["gradients"], expected * 4);
            assert_eq!(memory["optimizer_state"], copies * expected * 4);
        }
    }
    // GPipe keeps no history.
    let loaded = scenario("memory-gpipe", &deep_gcn(4, ", stages: [2, 2]", 2, "gpipe"));
    let doc = result_json(&loaded, &own(&loaded.scenario));
    assert!(doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["memory_bytes"]["history"] == 0));
}

#[test]
fn exact_halo_recomputes_and_drop_loses_edges() {
    let exact = scenario("exact", &deep_gcn(3, ", halo: exact", 3, "gpipe"));
    let doc = result_json(&exact, &own(&exact.scenario));
    let factor = doc["redundant_compute_factor"].as_f64().unwrap();
    assert!(factor > 1.0, "{factor}");
    assert!(doc.get("dropped_edge_fraction").is_none());
    let drop = scenario("drop", &deep_gcn(3, "", 3, "gpipe"));
    let doc = result_json(&drop, &own(&drop.scenario));
    let dropped = doc["dropped_edge_fraction"].as_f64().unwrap();
    // Random-looking SBM ids, 6 contiguous chunks: about 5/6 of the edges cross chunks.
    assert!((dropped - 5.0 / 6.0).abs() < 0.05, "{dropped}");
}

#[test]
fn billion_edge_stats_scenario_plans_without_per_vertex_memory() {
    let loaded = load(
        &crate::support::root().join("scenarios/papers100m-planning.yaml"),
        &[],
    );
    for candidate in plan::all_candidates(own(&loaded.scenario), &loaded.scenario) {
        let p = predict(&loaded, &candidate);
        assert!(report::compute(&p.trace).epoch_time_ns > 0);
    }
}
