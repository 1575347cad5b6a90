//! The planner on clusters: device counts in whole nodes (and every count elsewhere), points
//! pruned before simulating and counted by reason, the memory lower bound held to full
//! predictions, and the papers100M plan the README and the scenario quote.

use pipegnn::plan::search::{self, MemoryFloor, PlanPoint};
use pipegnn::report;
use serde_json::{json, Value};

use crate::scenarios::{load, own, predict};
use crate::support::{pipegnn, root, stderr, stdout};

/// `pipegnn plan ARGS --format json`, which must succeed.
fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = pipegnn(&all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_cluster_is_searched_in_whole_nodes_and_other_links_at_every_count() {
    let cluster = "scenarios/cluster-graph-parallel.yaml";
    let base = ["--schedules", "graph_parallel", "--max-devices"];
    // DGX H100 nodes of 8: 1, 2, 4 within a node, then whole nodes.
    let doc = plan_json(&[cluster, base[0], base[1], base[2], "40"]);
    assert_eq!(doc["device_counts"], json!([1, 2, 4, 8, 16, 24, 32, 40]));
    // Nodes of 4 GPUs sharing one NIC: 1, 2, then 4, 8, 12.
    let doc = plan_json(&[
        cluster,
        "--set",
        "links.topology={kind: cluster, node: pcie-4gpu}",
        base[0],
        base[1],
        base[2],
        "12",
    ]);
    assert_eq!(doc["device_counts"], json!([1, 2, 4, 8, 12]));
    // The same devices on a full mesh: every count.
    let doc = plan_json(&[
        cluster,
        "--set",
        "links.topology={kind: full, preset: nvlink4}",
        base[0],
        base[1],
        base[2],
        "6",
    ]);
    assert_eq!(doc["device_counts"], json!([1, 2, 3, 4, 5, 6]));

    let out = pipegnn(&["plan", cluster, base[0], base[1], base[2], "40"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("x devices 1/2/4 then whole 8-GPU nodes up to 40 x"),
        "{table}"
    );
    // 2D on 8, 24, 32 and 40 (not squares); 3D on 16, 24, 32 and 40 (not cubes).
    assert!(
        table.contains("pruned before simulating: 8 grids do not apply"),
        "{table}"
    );
}

#[test]
fn papers100m_on_256_gpus_prunes_what_cannot_fit_and_answers_in_whole_nodes() {
    let doc = plan_json(&["scenarios/papers100m-planning.yaml", "--max-devices", "256"]);
    let counts: Vec<u64> = doc["device_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let mut expected = vec![1, 2, 4];
    expected.extend((1..=32).map(|k| 8 * k));
    assert_eq!(counts, expected);
    let pruned = &doc["pruned"];
    // Pipelines (3 kinds x 6 chunk counts) on the 33 counts above 3 need more stages than the
    // 3 layers.
    assert_eq!(pruned["more_stages_than_layers"], 3 * 6 * 33);
    // 2D on the 33 counts from 4 but the squares 4, 16, 64, 144, 256; 3D on the 32 from 8 but
    // the cubes 8, 64, 216.
    assert_eq!(pruned["grid_does_not_apply"], (33 - 5) + (32 - 3));
    // GNNPipe on 1 and 2 GPUs (auto and every split: 2 + 3 points per chunk count): a layer's
    // history alone, N x 256 x 4 bytes, is past 80 GiB.
    assert_eq!(pruned["would_not_fit"], 6 * 5);
    let history = 111_059_956u64 * 256 * 4;
    assert!(pruned["lowest_bound_bytes"].as_u64().unwrap() >= history);
    assert_eq!(pruned["capacity_bytes"], 80u64 << 30);
    // GNNPipe's hybrids: G partitions for each G dividing the count that leaves at most 3
    // stages, past the budget where 3 layers x K chunks x G^2 hand-offs exceed it.
    let over_budget = counts
        .iter()
        .flat_map(|&c| (2..=c).filter(move |g| c % g == 0 && c / g <= 3))
        .flat_map(|g| [1u64, 2, 4, 8, 16, 32].map(|k| 3 * k * g * g))
        .filter(|&handoffs| handoffs > search::MAX_HYBRID_HANDOFFS)
        .count() as u64;
    assert!(over_budget > 0);
    assert_eq!(pruned["over_budget"], over_budget);
    let simulated = doc["simulated"].as_u64().unwrap();
    assert_eq!(
        doc["configurations"].as_u64().unwrap(),
        simulated + 3 * 6 * 33 + 57 + 30 + over_budget
    );
    let rejected = &doc["rejected"];
    let accounted = ["does_not_fit", "slower", "more_devices", "close", "invalid"]
        .iter()
        .map(|k| rejected[k].as_u64().unwrap())
        .sum::<u64>()
        + doc["best"].as_array().unwrap().len() as u64;
    assert_eq!(accounted, simulated);
    // The answer: graph parallelism (1D) on all 256 GPUs, well inside an H100.
    let best = &doc["best"][0];
    assert_eq!(best["schedule"], "graph_parallel");
    assert_eq!(best["devices"], 256);
    assert!(best["peak_memory_bytes"].as_u64().unwrap() < 80 << 30);
    let ms = best["epoch_time_s"].as_f64().unwrap() * 1e3;
    assert!((300.0..420.0).contains(&ms), "{ms} ms");
}

#[test]
fn everything_pruned_for_memory_exits_6_and_says_so() {
    let out = pipegnn(&[
        "plan",
        "scenarios/papers100m-planning.yaml",
        "--schedules",
        "gnnpipe",
        "--max-devices",
        "2",
        "--chunks",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        // The hybrid on 2 GPUs (a stage of 2 partitions) is simulated: its bound, with half
        // the graph per device, is under the capacity.
        stderr(&out).contains("1 do not fit, 5 pruned as too large"),
        "{}",
        stderr(&out)
    );
    let table = stdout(&out);
    assert!(
        table.contains("pruned before simulating: 5 would not fit (memory lower bound "),
        "{table}"
    );
}

/// Holds the bound to the simulator's peak for every point of `schedules` x `chunks` x
/// `counts` that is not pruned as invalid, on `scenario` with `sets`; returns how many were
/// checked and the largest bound/peak ratio.
fn bound_holds(
    scenario: &str,
    sets: &[&str],
    schedules: &[&str],
    chunks: &[u32],
    counts: &[u32],
) -> (usize, f64) {
    let path = root().join(scenario);
    let base = load(&path, sets);
    let floor = MemoryFloor::new(&base.scenario, base.graph.as_ref()).expect("a GNN");
    let n_layers = Some(base.scenario.n_layers());
    let schedules: Vec<String> = schedules.iter().map(|s| s.to_string()).collect();
    let points: Vec<PlanPoint> = search::search_space(&schedules, chunks, counts, n_layers)
        .into_iter()
        .filter(|p| search::prune(p, n_layers, None).is_none())
        .collect();
    let mut closest = 0.0f64;
    for point in &points {
        let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        all.extend(point.overrides());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let loaded = load(&path, &all);
        let prediction = predict(&loaded, &own(&loaded.scenario));
        let peak = report::compute(&prediction.trace)
            .devices
            .iter()
            .map(|d| d.peak_memory_bytes)
            .max()
            .unwrap();
        let bound = floor.bytes(point);
        assert!(
            bound <= peak,
            "{scenario} {point:?}: bound {bound} > predicted peak {peak}"
        );
        closest = closest.max(bound as f64 / peak as f64);
    }
    (points.len(), closest)
}

#[test]
fn the_memory_lower_bound_never_exceeds_the_predicted_peak() {
    // A generated graph with sparse features, every kind, split and algorithm up to 4 devices.
    let (checked, _) = bound_holds(
        "scenarios/quickstart.yaml",
        &[
            "graph.synthetic.nodes=2000",
            "model.layers=[{kind: gcn, out: 16}, {kind: sage, out: 16}, {kind: gcn, out: 8}]",
        ],
        &["gpipe", "1f1b", "gnnpipe", "graph_parallel"],
        &[1, 4],
        &[1, 2, 3, 4],
    );
    assert!(checked > 40, "{checked}");
    // ogbn-papers100M by its counts on DGX H100 nodes. The bound counts resident memory only
    // (the peak adds stashes, activations and the adjacency), yet at its closest it is a fifth
    // of the peak.
    let (checked, closest) = bound_holds(
        "scenarios/papers100m-planning.yaml",
        &[],
        &["gpipe", "gnnpipe", "graph_parallel"],
        &[8],
        &[1, 2, 8, 16],
    );
    assert!(checked > 10, "{checked}");
    assert!(closest > 0.15, "{closest}");
    // The deep GCN on one DGX A100 node, halo `exact` for the pipelines.
    let (checked, _) = bound_holds(
        "scenarios/gnnpipe-vs-graph-parallel.yaml",
        &["schedule.kind=1f1b", "schedule.halo=exact"],
        &["1f1b", "gnnpipe", "graph_parallel"],
        &[16],
        &[8],
    );
    assert!(checked >= 5, "{checked}");
}
