//! Graph parallelism's 1.5D, 2D and 3D (CAGNET): the bytes each device receives per layer
//! against closed forms worked out here, 1.5D with c = 1 against 1D's broadcast, validation,
//! determinism, the planner's search over algorithms; `run` of 1.5D against the full graph and
//! the simulated bytes, and its refusals (2D, 3D, attention under 1.5D).

use std::collections::BTreeMap;

use pipegnn::plan;
use pipegnn::schedule::lower::Payload;
use pipegnn::trace::{SpanKind, Trace};

use crate::scenarios::{load, own, predict, Loaded};
use crate::support::{invalid_scenario, losses, pipegnn, scratch, stderr, stdout, write};

/// Vertices, undirected edges, hidden width: divisible by every block count used here.
const N: u64 = 4800;
const EDGES: u64 = 24_000;
const NNZ: u64 = 2 * EDGES;
const F: u64 = 32;
/// f32 elements; a non-zero moves as its value and a 4-byte column index.
const W: u64 = 4;
const NONZERO: u64 = 4 + W;

/// A 3-layer GCN, 32 wide, on a counts-only graph, on `devices` A100s fully connected.
fn text(devices: usize, schedule: &str) -> String {
    format!(
        "# test\nname: cagnet\ngraph: {{stats: {{nodes: {N}, edges: {EDGES}, features: 64, classes: 8}}}}\nmodel: {{kind: gcn, depth: 3, hidden: {F}}}\ndevices:\n  - {{name: gpu, count: {devices}, preset: a100-80gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{kind: graph_parallel{schedule}}}\n"
    )
}

fn scenario(name: &str, devices: usize, schedule: &str) -> Loaded {
    load(
        &write(&scratch(name), "scenario.yaml", &text(devices, schedule)),
        &[],
    )
}

/// Per (receiving device, layer): bytes of the products' transfers (activations forward,
/// gradients backward), counted once per transfer (its first hop).
fn product_bytes(trace: &Trace) -> BTreeMap<(u32, u32), u64> {
    let mut out = BTreeMap::new();
    for s in &trace.spans {
        if s.hop == 0
            && matches!(
                s.kind,
                SpanKind::Transfer(Payload::Activation | Payload::Gradient)
            )
        {
            *out.entry((s.device, s.stage)).or_insert(0) += s.bytes;
        }
    }
    out
}

/// Checks every device's bytes at layers 1 and 2 (two products each: forward and backward)
/// against `per_product(device)`, and that layer 0 moves nothing.
fn check_closed_form(trace: &Trace, p: u32, per_product: impl Fn(u32) -> u64) {
    let bytes = product_bytes(trace);
    for d in 0..p {
        assert_eq!(bytes.get(&(d, 0)), None, "layer 0 of device {d}");
        for layer in 1..3 {
            assert_eq!(
                bytes.get(&(d, layer)).copied().unwrap_or(0),
                2 * per_product(d),
                "device {d}, layer {layer}"
            );
        }
    }
}

#[test]
fn two_d_moves_q_minus_1_sparse_and_dense_blocks_per_product() {
    // q = 2: each SUMMA stage but the own one brings a sparse block of nnz/P non-zeros along the
    // row and a dense block of n/q x f/q along the column: (q - 1)(nnz + n f)/P words, about
    // (nnz + n f)/sqrt(P).
    let loaded = scenario("cagnet-2d", 4, ", algorithm: 2d");
    let p = predict(&loaded, &own(&loaded.scenario));
    assert_eq!(p.label, "graph_parallel-2d");
    check_closed_form(&p.trace, 4, |_| (NNZ / 4) * NONZERO + N * F * W / 4);
}

#[test]
fn three_d_gathers_two_blocks_and_reduce_scatters_one_per_product() {
    // q = 2 on 8 devices: all-gathers of the sparse block (nnz/q^2) and the dense block
    // (n/q x f/q) and a reduce-scatter of the partial product (n/q x f/q), each receiving
    // (q - 1)/q of its size: about (nnz + n f)/P^(2/3).
    let loaded = scenario("cagnet-3d", 8, ", algorithm: 3d");
    let p = predict(&loaded, &own(&loaded.scenario));
    assert_eq!(p.label, "graph_parallel-3d");
    let q = 2;
    check_closed_form(&p.trace, 8, |_| {
        (q - 1) * (NNZ / (q * q) * NONZERO + 2 * N * F * W / (q * q)) / q
    });
}

#[test]
fn one_half_d_broadcasts_its_groups_rows_then_all_reduces_across_replicas() {
    // P = 8, c = 2: 4 block rows of n/4; device d is block row d/2, replica d%2. Replica group
    // j broadcasts block rows j and j + 2; a device receives those that are not its own, then a
    // ring all-reduce of its block row over 2 replicas brings 2(c-1)/c of it: about n f / c.
    let loaded = scenario("cagnet-15d", 8, ", algorithm: 1.5d, replication: 2");
    let p = predict(&loaded, &own(&loaded.scenario));
    assert_eq!(p.label, "graph_parallel-1.5d-c2");
    let block = N / 4 * F * W;
    check_closed_form(&p.trace, 8, |d| {
        let (r, j) = (d / 2, d % 2);
        let broadcast = [j, j + 2].iter().filter(|&&k| k != r).count() as u64 * block;
        broadcast + block
    });
}

#[test]
fn one_half_d_with_one_copy_receives_what_one_d_broadcast_does() {
    let received = |schedule: &str| {
        let loaded = scenario("cagnet-c1", 4, schedule);
        let p = predict(&loaded, &own(&loaded.scenario));
        let mut per_device = BTreeMap::new();
        for ((device, _), bytes) in product_bytes(&p.trace) {
            *per_device.entry(device).or_insert(0u64) += bytes;
        }
        per_device
    };
    let one_d = received(", exchange: broadcast");
    assert_eq!(received(", algorithm: 1.5d, replication: 1"), one_d);
    // Two products a layer after the first, (P - 1)/P n f each.
    assert_eq!(one_d[&0], 2 * 2 * 3 * N / 4 * F * W);
}

#[test]
fn memory_follows_each_algorithms_blocks() {
    let graph_bytes = |schedule: &str, devices: usize| {
        let loaded = scenario("cagnet-memory", devices, schedule);
        let p = predict(&loaded, &own(&loaded.scenario));
        let metrics = pipegnn::report::compute(&p.trace);
        let d = &metrics.devices[0];
        let at = pipegnn::trace::MemoryCategory::ALL
            .iter()
            .position(|c| *c == pipegnn::trace::MemoryCategory::Graph)
            .unwrap();
        let graph = d.memory_at_peak[at];
        // A product run phase by phase is still one op per layer in flight.
        assert_eq!(d.peak_in_flight, 3, "{schedule}");
        (graph, d.peak_memory_bytes)
    };
    // 1.5D keeps c times a P-th of the non-zeros, 2D and 3D a P-th.
    assert_eq!(
        graph_bytes(", algorithm: 1.5d, replication: 2", 8).0,
        2 * NNZ / 8 * NONZERO
    );
    assert_eq!(graph_bytes(", algorithm: 2d", 4).0, NNZ / 4 * NONZERO);
    assert_eq!(graph_bytes(", algorithm: 3d", 8).0, NNZ / 8 * NONZERO);
    // More copies, more memory.
    assert!(
        graph_bytes(", algorithm: 1.5d, replication: 4", 8).1
            > graph_bytes(", algorithm: 1.5d, replication: 2", 8).1
    );
}

#[test]
fn the_same_scenario_gives_the_same_trace() {
    for (devices, schedule) in [
        (8, ", algorithm: 1.5d, replication: 2"),
        (4, ", algorithm: 2d"),
        (8, ", algorithm: 3d"),
    ] {
        let once = || {
            let loaded = scenario("cagnet-determinism", devices, schedule);
            predict(&loaded, &own(&loaded.scenario)).trace
        };
        let (a, b) = (once(), once());
        assert_eq!(a.spans, b.spans, "{schedule}");
        assert_eq!(a.memory, b.memory, "{schedule}");
    }
}

#[test]
fn named_candidates_parse_algorithm_labels() {
    let loaded = scenario("cagnet-names", 8, "");
    for name in ["graph_parallel-1.5d-c4", "graph_parallel-3d"] {
        let candidate = plan::named_candidate(name, &loaded.scenario).unwrap();
        assert_eq!(candidate.label(&loaded.scenario), name);
    }
}

/// Runs `validate` on the scenario and returns its one error line after checking exit 4.
fn invalid(devices: usize, schedule: &str) -> String {
    invalid_scenario("cagnet-invalid", &text(devices, schedule))
}

#[test]
fn grids_that_do_not_fit_the_device_count_are_refused() {
    let err = invalid(8, ", algorithm: 2d");
    assert!(
        err.contains("scenario.yaml:9:")
            && err.contains(
                "schedule.algorithm: 2d runs on a square grid: 8 devices is not a perfect square"
            ),
        "{err}"
    );
    let err = invalid(4, ", algorithm: 3d");
    assert!(
        err.contains("schedule.algorithm: 3d runs on a cube"),
        "{err}"
    );
    let err = invalid(6, ", algorithm: 1.5d, replication: 4");
    assert!(
        err.contains("schedule.replication: 1.5d needs the replication to divide the device count: 4 does not divide 6"),
        "{err}"
    );
    let err = invalid(4, ", algorithm: 1.5d");
    assert!(
        err.contains("schedule.algorithm: 1.5d needs `replication: c`"),
        "{err}"
    );
    let err = invalid(4, ", algorithm: 2d, replication: 2");
    assert!(
        err.contains("schedule.replication: only applies to `algorithm: 1.5d`"),
        "{err}"
    );
    let err = invalid(4, ", algorithm: 4d");
    assert!(
        err.contains("unknown value `4d` (expected 1d, 1.5d, 2d or 3d)"),
        "{err}"
    );
    let err = invalid(4, ", algorithm: 2d, exchange: halo");
    assert!(
        err.contains("schedule.exchange: only applies to `algorithm: 1d`"),
        "{err}"
    );
    let gpipe = text(4, "").replace(
        "{kind: graph_parallel}",
        "{kind: gpipe, chunks: 2, algorithm: 2d}",
    );
    let path = write(&scratch("cagnet-invalid-kind"), "scenario.yaml", &gpipe);
    let out = pipegnn(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("schedule.algorithm: only applies to `kind: graph_parallel`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_refuses_2d_and_3d() {
    let text = text(4, ", algorithm: 2d").replace(
        "{stats: {nodes: 4800, edges: 24000, features: 64, classes: 8}}",
        "{synthetic: {kind: sbm, nodes: 400, avg_degree: 4, classes: 8, features: 64, homophily: 0.8, seed: 1}}",
    );
    let path = write(&scratch("cagnet-run"), "scenario.yaml", &text);
    let out = pipegnn(&["run", path.to_str().unwrap(), "--epochs", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`algorithm: 2d` is simulated"), "{err}");
}

/// A four-layer GCN/GraphSAGE on a 240-vertex SBM graph over `devices` CPU cores, one thread
/// each, for 3 epochs with dropout.
fn tiny(devices: usize, schedule: &str) -> String {
    format!(
        "# test\nname: tiny\ngraph:\n  synthetic: {{kind: sbm, nodes: 240, avg_degree: 5, classes: 3, features: 12, seed: 3}}\nmodel:\n  layers: [{{kind: gcn, out: 8}}, {{kind: sage, out: 8}}, {{kind: gcn, out: 8}}, {{kind: gcn, out: 3}}]\ntraining: {{epochs: 3, dropout: 0.5, seed: 5}}\ndevices:\n  - {{name: cpu, count: {devices}, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\nexecutor: {{threads_per_device: 1}}\nschedule: {schedule}\n"
    )
}

/// `pipegnn COMMAND` on `text` as JSON: the first result.
fn result_of(command: &str, text: &str) -> serde_json::Value {
    let path = write(&scratch("cagnet-1.5d"), "scenario.yaml", text);
    let out = pipegnn(&[command, path.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{command}: {}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["results"][0].clone()
}

/// 1.5D for real: the replicas' partial aggregations sum to the whole, so it trains exactly as
/// the full graph does (a one-chunk GPipe), for every replication; and a measured epoch moves
/// the bytes the simulated program does in all (the broadcasts, their gradients back, the
/// replicas' all-reduces and the weights'; links differ where the simulator picks a tree).
#[test]
fn run_trains_1_5d_as_the_full_graph_and_moves_the_predicted_bytes() {
    let full = losses(&result_of("run", &tiny(4, "{kind: gpipe, chunks: 1}")));
    for (devices, c) in [(2, 2), (4, 2), (4, 4), (6, 3), (8, 2)] {
        let text = tiny(
            devices,
            &format!("{{kind: graph_parallel, algorithm: 1.5d, replication: {c}}}"),
        );
        let run = result_of("run", &text);
        assert_eq!(run["schedule"], format!("graph_parallel-1.5d-c{c}"));
        let measured = losses(&run);
        assert_eq!(measured.len(), full.len());
        for (x, y) in measured.iter().zip(&full) {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs(),
                "{devices} devices, c = {c}: {measured:?} vs {full:?}"
            );
        }
        let predicted = result_of("simulate", &text);
        assert_eq!(
            run["communication_bytes"], predicted["communication_bytes"],
            "{devices} devices, c = {c}"
        );
    }
}

#[test]
fn run_refuses_1_5d_for_attention() {
    let text = tiny(4, "{kind: graph_parallel, algorithm: 1.5d, replication: 2}")
        .replace("{kind: sage, out: 8}", "{kind: gat, out: 8, heads: 2}");
    let path = write(&scratch("cagnet-1.5d-gat"), "scenario.yaml", &text);
    let out = pipegnn(&["run", path.to_str().unwrap(), "--epochs", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("GAT's softmax"), "{err}");
}

#[test]
fn the_planner_searches_every_algorithm_that_fits_the_device_count() {
    let path = write(&scratch("cagnet-plan"), "scenario.yaml", &text(8, ""));
    let out = pipegnn(&[
        "plan",
        path.to_str().unwrap(),
        "--schedules",
        "graph_parallel",
        "--max-devices",
        "8",
        "--top",
        "100",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // 1..=8 devices: 1D everywhere, 1.5D for c in {2} at 4, {2, 3} at 6, {2, 4} at 8, 2D at 4,
    // 3D at 8; 2D at 5 to 8 is tried and pruned (not a square).
    assert_eq!(doc["simulated"], 8 + 5 + 2);
    assert_eq!(doc["pruned"]["grid_does_not_apply"], 4);
    assert_eq!(doc["configurations"], 8 + 5 + 2 + 4);
    let best = doc["best"].as_array().unwrap();
    let labels: Vec<&str> = best
        .iter()
        .map(|b| b["schedule"].as_str().unwrap())
        .collect();
    for label in [
        "graph_parallel-1.5d-c2",
        "graph_parallel-1.5d-c3",
        "graph_parallel-1.5d-c4",
        "graph_parallel-2d",
        "graph_parallel-3d",
    ] {
        assert!(labels.contains(&label), "{labels:?}");
    }
    let fastest = best
        .iter()
        .map(|b| b["epoch_time_s"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(best[0]["epoch_time_s"].as_f64().unwrap() <= fastest * 1.01);
}

#[test]
fn one_half_d_moves_p_over_c_minus_1_plus_2_c_minus_1_blocks_of_n_f_in_all() {
    // Per product, over all devices: each of the P/c block rows reaches the other P/c - 1
    // members of its replica group (n f (P/c - 1) in all), and each block row's ring
    // all-reduce over c replicas moves 2(c - 1) times the row block (2 (c - 1) n f in all).
    for p in [4u64, 6, 12] {
        for c in (1..=p).filter(|c| p % c == 0) {
            let loaded = scenario(
                "cagnet-15d-sweep",
                p as usize,
                &format!(", algorithm: 1.5d, replication: {c}"),
            );
            let trace = predict(&loaded, &own(&loaded.scenario)).trace;
            let mut per_layer = BTreeMap::new();
            for ((_, layer), bytes) in product_bytes(&trace) {
                *per_layer.entry(layer).or_insert(0u64) += bytes;
            }
            let expected = 2 * (p / c - 1 + 2 * (c - 1)) * N * F * W;
            for layer in 1..3 {
                assert_eq!(
                    per_layer.get(&layer).copied().unwrap_or(0),
                    expected,
                    "P = {p}, c = {c}, layer {layer}"
                );
            }
        }
    }
}

#[test]
fn readme_plan_on_the_cluster_picks_3d_on_64_gpus() {
    let out = pipegnn(&[
        "plan",
        "scenarios/cluster-graph-parallel.yaml",
        "--schedules",
        "graph_parallel",
        "--max-devices",
        "64",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // Whole 8-GPU nodes: 1, 2, 4, 8, 16, ..., 64 (11 counts), 1D at each, 1.5D for each
    // replication dividing it; 2D and 3D where the count is a square or a cube, and pruned on
    // the other 6 and 6 counts.
    assert_eq!(doc["device_counts"].as_array().unwrap().len(), 11);
    assert_eq!(doc["simulated"], 57);
    assert_eq!(doc["pruned"]["grid_does_not_apply"], 12);
    assert_eq!(doc["configurations"], 69);
    let best = &doc["best"][0];
    assert_eq!(best["schedule"], "graph_parallel-3d");
    assert_eq!(best["devices"], 64);
    let ms = best["epoch_time_s"].as_f64().unwrap() * 1e3;
    assert!((27.5..28.5).contains(&ms), "{ms} ms");
}
