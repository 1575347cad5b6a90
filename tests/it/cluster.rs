//! Cluster topologies: routes derived from nodes, NICs and switch tiers, node presets, scale,
//! determinism, and one-line errors for bad clusters.

use pipegnn::network::{ClusterShape, LinkSpec, Network};
use pipegnn::scenario::parse_scenario;

use crate::scenarios::{load, own, predict};
use crate::support::{pipegnn, root, scratch, stderr, stdout, write};

/// Explicit 1F1B work over `devices` GPUs on `topology`.
fn scenario(devices: usize, topology: &str) -> String {
    format!(
        "name: c\ndevices:\n  - {{name: gpu, count: {devices}, preset: h100}}\nlinks:\n  topology: {topology}\n\
         workload:\n  kind: explicit\n  per: batch\n  stages:\n    - {{forward: 1ms, backward: 2ms, activation: 64MiB}}\n    - {{forward: 1ms, backward: 2ms, activation: 64MiB}}\n\
         training: {{optimizer: adam}}\nschedule: {{kind: 1f1b, chunks: 4}}\n"
    )
}

fn network(devices: usize, topology: &str) -> Result<Network, String> {
    parse_scenario(
        "c.yaml",
        &scenario(devices, topology),
        &[],
        root().as_path(),
    )
    .map(|s| s.network)
    .map_err(|e| e.to_string())
}

fn shape(gpus: usize, nics: usize, per_leaf: Option<usize>, oversubscription: f64) -> ClusterShape {
    ClusterShape {
        gpus_per_node: gpus,
        nics_per_node: nics,
        nodes_per_leaf: per_leaf,
        intra: LinkSpec {
            bandwidth_bytes_per_s: 450e9,
            latency_ns: 1_000,
        },
        inter: LinkSpec {
            bandwidth_bytes_per_s: 50e9,
            latency_ns: 5_000,
        },
        oversubscription,
    }
}

#[test]
fn routes_follow_nodes_nics_leaves_and_the_spine() {
    let names: Vec<String> = (0..64).map(|d| format!("gpu{d}")).collect();
    let net = Network::cluster(names, shape(8, 4, Some(2), 2.0));
    let hops = |a: usize, b: usize| -> Vec<(String, String)> {
        net.route(a, b)
            .links
            .iter()
            .map(|&l| {
                let link = &net.links()[l];
                (
                    net.node_name(link.from).to_string(),
                    net.node_name(link.to).to_string(),
                )
            })
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert!(net.route(5, 5).links.is_empty());
    // Same node: through the node's switch.
    assert_eq!(
        hops(1, 6),
        vec![pair("gpu1", "node0.switch"), pair("node0.switch", "gpu6")]
    );
    assert_eq!(net.route(1, 6).latency_ns, 2_000);
    assert_eq!(net.route(1, 6).bandwidth_bytes_per_s, 450e9);
    // Nodes 0 and 1 share leaf 0: GPU 3 uses NIC 1 (two GPUs a NIC), GPU 8 + 6 NIC 3.
    assert_eq!(
        hops(3, 14),
        vec![pair("node0.nic1", "leaf0"), pair("leaf0", "node1.nic3")]
    );
    assert_eq!(net.route(3, 14).latency_ns, 10_000);
    assert_eq!(net.route(3, 14).bandwidth_bytes_per_s, 50e9);
    // Node 2 is on leaf 1: up the port's uplink to the spine and down the receiver's, at half
    // the NIC's bandwidth (oversubscription 2).
    assert_eq!(
        hops(0, 17),
        vec![
            pair("node0.nic0", "leaf0"),
            pair("leaf0", "spine"),
            pair("spine", "leaf1"),
            pair("leaf1", "node2.nic0"),
        ]
    );
    assert_eq!(net.route(0, 17).latency_ns, 20_000);
    assert_eq!(net.route(0, 17).bandwidth_bytes_per_s, 25e9);
    // The uplinks of two NICs under one leaf are different links; one NIC's up and down are
    // opposite directions of one cable.
    assert_ne!(net.route(0, 17).links[1], net.route(2, 17).links[1]);
    assert_eq!(net.route(0, 17).links[1], net.route(1, 17).links[1]);
    // Links: 64 GPUs, 32 NICs, 32 uplinks, each two directions.
    assert_eq!(net.links().len(), 2 * (64 + 32 + 32));
    // Every directed link joins the nodes the routes say it does.
    for a in [0, 9, 33, 63] {
        for b in [1, 8, 40, 62] {
            let route = net.route(a, b);
            let links = &route.links;
            for w in links.windows(2) {
                assert_eq!(net.links()[w[0]].to, net.links()[w[1]].from, "{a} -> {b}");
            }
        }
    }
}

#[test]
fn a_scenario_spells_a_cluster_and_a_node_preset_fills_it() {
    let explicit = network(
        20,
        "{kind: cluster, gpus_per_node: 8, intra: nvlink4, inter: {bandwidth: 400Gbit/s, latency: 5us}, nics_per_node: 8, oversubscription: 1}",
    )
    .unwrap();
    let preset = network(20, "{kind: cluster, node: dgx-h100}").unwrap();
    assert_eq!(explicit, preset);
    // 20 devices fill two nodes and part of a third.
    assert_eq!(explicit.machine_of(19), 2);
    assert_eq!(explicit.route(0, 19).bandwidth_bytes_per_s, 50e9);
    assert_eq!(explicit.route(0, 7).bandwidth_bytes_per_s, 450e9);
    // A preset's field can be overridden.
    let shared = network(16, "{kind: cluster, node: dgx-h100, nics_per_node: 2}").unwrap();
    assert_eq!(shared.cluster_shape().unwrap().nics_per_node, 2);
}

#[test]
fn a_4096_gpu_cluster_loads_without_a_route_per_pair() {
    let net = network(
        4096,
        "{kind: cluster, node: dgx-h100, nodes_per_leaf: 32, oversubscription: 2}",
    )
    .unwrap();
    // 4,096 GPUs, 4,096 NICs, 4,096 uplinks: linear, where a table would hold 16.7 M routes.
    assert_eq!(net.links().len(), 2 * 3 * 4096);
    assert_eq!(net.route(0, 4095).links.len(), 4);
}

#[test]
fn a_pipeline_across_two_nodes_pays_the_nic_and_is_deterministic() {
    let dir = scratch("cluster-pipeline");
    let text = scenario(
        16,
        "{kind: cluster, node: dgx-h100}\n  # pipeline stages 0 and 1 on GPUs of different nodes",
    )
    .replace(
        "schedule: {kind: 1f1b, chunks: 4}",
        "schedule: {kind: 1f1b, chunks: 4, placement: [gpu0, gpu8]}",
    );
    let path = write(&dir, "scenario.yaml", &text);
    let loaded = load(&path, &[]);
    let prediction = predict(&loaded, &own(&loaded.scenario));
    // Every transfer crosses node0.nic0 -> leaf0 -> node1.nic0 (or back).
    let links = &prediction.trace.links;
    for span in &prediction.trace.spans {
        if let pipegnn::trace::SpanKind::Transfer(_) = span.kind {
            let link = &links[span.lane_index as usize];
            assert!(
                link.from.contains("nic0") || link.to.contains("nic0"),
                "{link:?}"
            );
        }
    }
    let first = stdout(&pipegnn(&[
        "simulate",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let second = stdout(&pipegnn(&[
        "simulate",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert!(first.contains("node0.nic0"), "{first}");
    assert_eq!(first, second);
}

/// `validate` on a cluster topology: exit 4 and one `error:` line naming the file, `line` and
/// field.
fn refused(name: &str, devices: usize, topology: &str, line: u32) -> String {
    let dir = scratch(name);
    let path = write(&dir, "scenario.yaml", &scenario(devices, topology));
    let out = pipegnn(&["validate", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(&format!("scenario.yaml:{line}:")),
        "names the line: {err}"
    );
    err
}

#[test]
fn bad_clusters_are_one_line_errors() {
    let cases = [
        (
            "{kind: cluster, gpus_per_node: 0, intra: nvlink4, inter: net400g}",
            "links.topology.gpus_per_node: must be between 1 and 1024, got 0",
        ),
        (
            "{kind: cluster, intra: nvlink4, inter: net400g}",
            "links.topology.gpus_per_node: give `gpus_per_node` or a `node` preset",
        ),
        (
            "{kind: cluster, node: dgx-z9}",
            "links.topology.node: unknown node preset `dgx-z9` (known: dgx-a100, dgx-h100, hgx-h200, pcie-4gpu)",
        ),
        (
            "{kind: cluster, gpus_per_node: 8, intra: nvlink9, inter: net400g}",
            "links.topology.intra: unknown link preset `nvlink9`",
        ),
        (
            "{kind: cluster, gpus_per_node: 8, intra: nvlink4}",
            "links.topology.inter: give a link preset",
        ),
        (
            "{kind: cluster, gpus_per_node: 8, nics_per_node: 3, intra: nvlink4, inter: net400g}",
            "links.topology.nics_per_node: must divide gpus_per_node (8)",
        ),
        (
            "{kind: cluster, node: dgx-h100, oversubscription: 2}",
            "links.topology.oversubscription: applies to a leaf's uplinks",
        ),
        (
            "{kind: cluster, node: dgx-h100, nodes_per_leaf: 4, oversubscription: 0.5}",
            "links.topology.oversubscription: must be between 1",
        ),
        (
            "{kind: cluster, node: dgx-h100, nodes_per_leaf: 0}",
            "links.topology.nodes_per_leaf: must be between 1",
        ),
        (
            "{kind: cluster, node: dgx-h100, preset: nvlink4}",
            "links.topology.preset: a cluster takes its links as `intra` and `inter`",
        ),
        (
            "{kind: cluster, gpus_per_node: 8, intra: {bandwidth: 0GB/s, latency: 1us}, inter: net400g}",
            "links.topology.intra.bandwidth:",
        ),
        (
            "{kind: ring, preset: nvlink4, gpus_per_node: 8}",
            "links.topology.gpus_per_node: only a `kind: cluster` topology takes `gpus_per_node`",
        ),
        (
            "{kind: mesh, preset: nvlink4}",
            "unknown topology `mesh` (expected full, ring, switch or cluster)",
        ),
    ];
    for (i, (topology, expected)) in cases.iter().enumerate() {
        let err = refused(&format!("bad-cluster-{i}"), 16, topology, 5);
        assert!(err.contains(expected), "{topology}: {err}");
    }
}

#[test]
fn device_counts_past_the_stored_route_bound_need_a_cluster() {
    let err = refused("ring-300", 300, "{kind: ring, preset: nvlink4}", 3);
    assert!(err.contains("a `cluster` topology holds more"), "{err}");
    let err = refused(
        "cluster-70000",
        70_000,
        "{kind: cluster, node: dgx-h100}",
        3,
    );
    assert!(
        err.contains("must be between 1 and 65536, got 70000"),
        "{err}"
    );
}

#[test]
fn a_cluster_takes_no_explicit_pairs() {
    let text = scenario(16, "{kind: cluster, node: dgx-h100}").replace(
        "links:\n",
        "links:\n  pairs:\n    - {between: [gpu0, gpu1], preset: nvlink4}\n",
    );
    let dir = scratch("cluster-pairs");
    let path = write(&dir, "scenario.yaml", &text);
    let out = pipegnn(&["validate", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("links.pairs: a cluster's routes follow its structure"),
        "{err}"
    );
}
