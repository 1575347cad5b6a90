//! GNNPipe's hybrid with graph parallelism (`schedule.partitions: G`): what crosses a stage
//! boundary (each partition's own rows, N x d per direction per epoch in all), what stays inside
//! a group (the halo exchange and the weight all-reduce), determinism, validation, the named
//! candidate; and real runs: exactly the full graph's training with one chunk, learning and
//! repeating itself with several, and moving the bytes the simulator predicts. The hybrid's
//! prediction against GNNPipe (G = 1) and graph parallelism (one stage) is checked in
//! `plan::gnn`'s unit tests.

use std::collections::BTreeMap;

use pipegnn::plan;
use pipegnn::report;
use pipegnn::trace::SpanKind;

use crate::scenarios::{load, own, predict, Loaded};
use crate::support::{invalid_scenario, pipegnn, root, scratch, stderr, stdout, write};

const NODES: u64 = 2000;
const HIDDEN: u64 = 32;

/// A 4-layer GCN, 32 wide, on a 2,000-vertex SBM graph, on `devices` A100s fully connected.
fn text(devices: usize, schedule: &str) -> String {
    format!(
        "# test\nname: hybrid\ngraph:\n  synthetic: {{kind: sbm, nodes: {NODES}, avg_degree: 8, classes: 4, features: 48, homophily: 0.8, seed: 5}}\nmodel: {{kind: gcn, depth: 4, hidden: {HIDDEN}}}\ndevices:\n  - {{name: gpu, count: {devices}, preset: a100-80gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{kind: gnnpipe{schedule}}}\n"
    )
}

fn scenario(name: &str, devices: usize, schedule: &str) -> Loaded {
    load(
        &write(&scratch(name), "scenario.yaml", &text(devices, schedule)),
        &[],
    )
}

/// Bytes per (payload, sending device, receiving device), each transfer once.
fn moved(loaded: &Loaded) -> BTreeMap<(&'static str, usize, usize), u64> {
    let p = predict(loaded, &own(&loaded.scenario));
    let device = |name: &str| name.trim_start_matches("gpu").parse::<usize>().unwrap();
    let mut out = BTreeMap::new();
    for s in p.trace.spans.iter().filter(|s| s.hop == 0) {
        let SpanKind::Transfer(payload) = s.kind else {
            continue;
        };
        let link = &p.trace.links[s.lane_index as usize];
        let key = (payload.name(), device(&link.from), device(&link.to));
        *out.entry(key).or_insert(0) += s.bytes;
    }
    out
}

#[test]
fn a_stage_boundary_carries_each_partitions_own_rows_and_the_halo_stays_in_the_group() {
    // Two stages of two layers, each a group of G devices: stage s on devices s*G..s*G+G.
    for g in [2usize, 3] {
        let loaded = scenario(
            "hybrid-boundary",
            2 * g,
            &format!(", chunks: 4, partitions: {g}, stages: [2, 2]"),
        );
        let moved = moved(&loaded);
        let group = |d: usize| d / g;
        let across = |payload: &str, from_stage: usize| -> u64 {
            moved
                .iter()
                .filter(|((p, a, b), _)| {
                    *p == payload && group(*a) == from_stage && group(*b) != from_stage
                })
                .map(|(_, bytes)| bytes)
                .sum()
        };
        // N rows of layer 1's output (32 wide, f32) forward, their gradients backward.
        let n_d = NODES * HIDDEN * 4;
        assert_eq!(across("activation", 0), n_d, "G={g}");
        assert_eq!(across("gradient", 1), n_d, "G={g}");
        // Partition to partition: device s*G+p only to (s+1)*G+p.
        for (payload, a, b) in moved.keys() {
            if group(*a) != group(*b) {
                assert_eq!(a % g, b % g, "G={g}: {payload} {a} -> {b}");
            }
        }
        // The halo exchange and the weight all-reduce stay inside a group, and happen.
        for stage in 0..2 {
            let inside = |payload: &str| -> u64 {
                moved
                    .iter()
                    .filter(|((p, a, b), _)| {
                        *p == payload && group(*a) == stage && group(*b) == stage
                    })
                    .map(|(_, bytes)| bytes)
                    .sum()
            };
            assert!(inside("activation") > 0, "G={g}: stage {stage}");
            assert!(inside("gradient") > 0, "G={g}: stage {stage}");
            assert!(inside("weights") > 0, "G={g}: stage {stage}");
        }
        assert!(moved
            .keys()
            .all(|(p, a, b)| *p != "weights" || group(*a) == group(*b)));
    }
}

#[test]
fn more_partitions_cut_each_devices_memory() {
    let metrics = |devices: usize, schedule: &str| {
        let loaded = scenario("hybrid-scale", devices, schedule);
        report::compute(&predict(&loaded, &own(&loaded.scenario)).trace)
    };
    let plain = metrics(2, ", chunks: 4, stages: [2, 2]");
    let hybrid = metrics(8, ", chunks: 4, partitions: 4, stages: [2, 2]");
    let peak = |m: &report::Metrics| m.devices.iter().map(|d| d.peak_memory_bytes).max().unwrap();
    assert!(
        peak(&hybrid) < peak(&plain),
        "{} vs {}",
        peak(&hybrid),
        peak(&plain)
    );
}

#[test]
fn the_same_scenario_gives_the_same_trace() {
    let once = || {
        let loaded = scenario("hybrid-determinism", 6, ", chunks: 3, partitions: 3");
        predict(&loaded, &own(&loaded.scenario)).trace
    };
    let (a, b) = (once(), once());
    assert_eq!(a.spans, b.spans);
    assert_eq!(a.memory, b.memory);
}

#[test]
fn named_candidates_parse_partition_labels() {
    let loaded = scenario("hybrid-names", 8, ", chunks: 4");
    for name in ["gnnpipe-p2", "gnnpipe-1f1b-p4"] {
        let candidate = plan::named_candidate(name, &loaded.scenario).unwrap();
        assert_eq!(candidate.label(&loaded.scenario), name);
    }
    let path = write(
        &scratch("hybrid-cli"),
        "scenario.yaml",
        &text(8, ", chunks: 4"),
    );
    let out = pipegnn(&[
        "simulate",
        path.to_str().unwrap(),
        "--schedule",
        "gnnpipe-p2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(stdout(&out).contains("gnnpipe-p2"), "{doc}");
}

/// Runs `validate` on the scenario and returns its one error line after checking exit 4.
fn invalid(devices: usize, schedule: &str) -> String {
    invalid_scenario("hybrid-invalid", &text(devices, schedule))
}

#[test]
fn impossible_partitions_are_refused() {
    let err = invalid(4, ", chunks: 2, partitions: 0");
    assert!(
        err.contains("schedule.partitions: must be between 1 and"),
        "{err}"
    );
    let err = invalid(2, ", chunks: 2, partitions: 3");
    assert!(
        err.contains(
            "schedule.partitions: 3 partitions per stage need at least 3 devices, 2 are placed"
        ),
        "{err}"
    );
    let err = invalid(4, ", chunks: 2, partitions: 2, backward: exact");
    assert!(
        err.contains("schedule.backward: gnnpipe with partitions runs backward drop or deferred"),
        "{err}"
    );
    let err = invalid(4, ", chunks: 2, partitions: 2, stages: [1, 1, 2]");
    assert!(
        err.contains("of 2 partitions each need 6 devices but the scenario has 4"),
        "{err}"
    );
    let gpipe = text(4, "").replace("{kind: gnnpipe}", "{kind: gpipe, chunks: 2, partitions: 2}");
    let path = write(&scratch("hybrid-invalid-kind"), "scenario.yaml", &gpipe);
    let out = pipegnn(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("schedule.partitions"),
        "{}",
        stderr(&out)
    );
}

/// A small run of the hybrid: a four-layer GCN/GraphSAGE on a 240-vertex SBM graph over
/// `devices` CPU cores, one thread each, for `epochs` epochs with dropout.
fn tiny(devices: usize, schedule: &str, epochs: u32) -> String {
    format!(
        "# test\nname: tiny\ngraph:\n  synthetic: {{kind: sbm, nodes: 240, avg_degree: 5, classes: 3, features: 12, seed: 3}}\nmodel:\n  layers: [{{kind: gcn, out: 8}}, {{kind: sage, out: 8}}, {{kind: gcn, out: 8}}, {{kind: gcn, out: 3}}]\ntraining: {{epochs: {epochs}, dropout: 0.5, seed: 5}}\ndevices:\n  - {{name: cpu, count: {devices}, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\nexecutor: {{threads_per_device: 1}}\nschedule: {schedule}\n"
    )
}

/// `pipegnn run`'s losses for `text`; every measured epoch is held to the schedule on the way
/// (`launch::finish`), so a run that broke its order would fail here.
fn run_losses(name: &str, text: &str) -> Vec<f64> {
    let path = write(&scratch(name), "scenario.yaml", text);
    let out = pipegnn(&["run", path.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::support::losses(&doc["results"][0])
}

/// With one chunk per partition every row a piece reads of another partition arrives fresh
/// and its gradient goes back the same epoch: the hybrid trains exactly as the full graph does
/// (a one-chunk GPipe over the same devices), for any number of stages and partitions.
#[test]
fn the_hybrid_with_one_chunk_trains_exactly_as_the_full_graph() {
    let full = run_losses("hybrid-full", &tiny(4, "{kind: gpipe, chunks: 1}", 4));
    for (devices, partitions) in [(4, 2), (4, 4), (8, 2), (6, 3)] {
        let schedule = format!("{{kind: gnnpipe, chunks: 1, partitions: {partitions}}}");
        let hybrid = run_losses("hybrid-one-chunk", &tiny(devices, &schedule, 4));
        assert_eq!(hybrid.len(), full.len());
        for (epoch, (x, y)) in hybrid.iter().zip(&full).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs(),
                "{devices} devices, {partitions} partitions, epoch {}: {x} vs {y}",
                epoch + 1
            );
        }
    }
}

/// With several chunks the hybrid reads other chunks' rows from its history (stale ones from
/// the previous epoch): it is no longer the full graph, but it learns, and the same scenario
/// and seed give the same run, bit for bit.
#[test]
fn the_hybrid_with_chunks_learns_and_repeats_itself() {
    for backward in ["drop", "deferred"] {
        let schedule = format!("{{kind: gnnpipe, chunks: 3, partitions: 2, backward: {backward}}}");
        let text = tiny(4, &schedule, 30);
        let first = run_losses("hybrid-chunks", &text);
        let again = run_losses("hybrid-chunks", &text);
        assert_eq!(first, again, "{backward}");
        let (start, end) = (first[0], first[first.len() - 1]);
        assert!(end < 0.8 * start, "{backward}: {start} -> {end}");
    }
}

/// The executor moves exactly the bytes the simulator predicts on every link, hand-off by
/// hand-off: each partition's own rows across a stage boundary, the relayed halo rows and the
/// gradients inside a group. (The weight all-reduce is a collective of steps in the simulator
/// and one share per device in the executor: only its total per device is the same.)
#[test]
fn a_run_moves_the_bytes_the_simulator_predicts() {
    for (devices, schedule) in [
        (
            4,
            "{kind: gnnpipe, chunks: 2, partitions: 2, backward: drop}",
        ),
        (
            6,
            "{kind: gnnpipe, chunks: 3, partitions: 3, backward: deferred, stages: [1, 3]}",
        ),
    ] {
        let path = write(
            &scratch("hybrid-bytes"),
            "scenario.yaml",
            &tiny(devices, schedule, 2),
        );
        let loaded = load(&path, &[]);
        let candidate = own(&loaded.scenario);
        let predicted = predict(&loaded, &candidate);
        let executed = pipegnn::launch::run(
            loaded.scenario.clone(),
            loaded.graph.as_ref(),
            &candidate,
            &pipegnn::launch::Options::default(),
        )
        .unwrap_or_else(|e| panic!("{schedule}: {e}"));
        let per_link = |trace: &pipegnn::trace::Trace| {
            let mut out: BTreeMap<(&'static str, u32), u64> = BTreeMap::new();
            for s in &trace.spans {
                if let SpanKind::Transfer(payload) = s.kind {
                    if payload != pipegnn::schedule::lower::Payload::Weights {
                        *out.entry((payload.name(), s.lane_index)).or_insert(0) += s.bytes;
                    }
                }
            }
            out
        };
        let expected = per_link(&predicted.trace);
        assert!(!expected.is_empty());
        for (epoch, trace) in executed.result.traces.iter().enumerate() {
            assert_eq!(per_link(trace), expected, "{schedule}, epoch {}", epoch + 1);
        }
    }
}

#[test]
fn the_cluster_scenario_cuts_communication_by_about_the_number_of_layers() {
    let loaded = load(&root().join("scenarios/gnnpipe-hybrid-cluster.yaml"), &[]);
    let hybrid = report::compute(&predict(&loaded, &own(&loaded.scenario)).trace);
    let graph_parallel = plan::named_candidate("graph_parallel", &loaded.scenario).unwrap();
    let baseline = report::compute(&predict(&loaded, &graph_parallel).trace);
    // 8 layers: graph parallelism moves every layer's halo, the hybrid the 7 stage boundaries
    // and halos inside each node.
    let ratio = baseline.communication_bytes as f64 / hybrid.communication_bytes as f64;
    assert!((5.0..10.0).contains(&ratio), "{ratio}");
    assert!(hybrid.epoch_time_ns * 2 < baseline.epoch_time_ns);
    // What the scenario's header quotes.
    let ms = |m: &report::Metrics| (m.epoch_time_ns as f64 / 1e5).round() / 10.0;
    assert_eq!((ms(&hybrid), ms(&baseline)), (43.3, 166.5));
}
