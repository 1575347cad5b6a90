//! Collectives on the links against closed forms, by hand on a two-node cluster, and their
//! invariants: bytes per member, and groups on disjoint links not interacting.

use proptest::prelude::*;

use pipegnn::network::{ClusterShape, Link, LinkSpec, Network};
use pipegnn::report;
use pipegnn::schedule::graph_parallel;
use pipegnn::schedule::lower::Payload;
use pipegnn::sim::collective::{simulate, Algorithm, CollectiveKind, Plan};
use pipegnn::trace::SpanKind;

use crate::support::{simulate_with, StageCosts};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|d| format!("d{d}")).collect()
}

fn duplex(a: usize, b: usize, bandwidth_bytes_per_s: f64, latency_ns: u64) -> [Link; 2] {
    let link = |from, to| Link {
        from,
        to,
        bandwidth_bytes_per_s,
        latency_ns,
    };
    [link(a, b), link(b, a)]
}

/// A uniform ring of `p` devices (two devices: one link).
pub fn ring(p: usize, bandwidth: f64, latency_ns: u64) -> Network {
    let links = (0..p)
        .filter(|&a| p > 2 || a == 0)
        .flat_map(|a| duplex(a, (a + 1) % p, bandwidth, latency_ns))
        .collect();
    Network::build(names(p), vec![], links).unwrap()
}

/// Every pair of `p` devices joined directly.
pub fn full(p: usize, bandwidth: f64, latency_ns: u64) -> Network {
    let links = (0..p)
        .flat_map(|a| (a + 1..p).map(move |b| (a, b)))
        .flat_map(|(a, b)| duplex(a, b, bandwidth, latency_ns))
        .collect();
    Network::build(names(p), vec![], links).unwrap()
}

/// `p` devices on one switch.
pub fn switch(p: usize, bandwidth: f64, latency_ns: u64) -> Network {
    let links = (0..p)
        .flat_map(|a| duplex(a, p, bandwidth, latency_ns))
        .collect();
    Network::build(names(p), vec!["switch".into()], links).unwrap()
}

fn plan(kind: CollectiveKind, algorithm: Algorithm, p: usize, bytes: u64, net: &Network) -> Plan {
    Plan::new(&kind, algorithm, (0..p).collect(), bytes, net).unwrap()
}

/// When the last member is done, every member contributing at 0.
fn alone(net: &Network, plan: &Plan) -> u64 {
    let outcome = simulate(net, &[(plan, vec![0; plan.members().len()])]);
    *outcome[0].done_ns.iter().max().unwrap()
}

#[test]
fn ring_all_reduce_on_a_uniform_ring_takes_2_p_minus_1_over_p_n_over_b_plus_2_p_minus_1_a() {
    // 1 GB/s is a byte per ns: with n a multiple of P every step is whole nanoseconds.
    let (bandwidth, a) = (1e9, 700u64);
    for p in 2..=9u64 {
        let n = 5040 * 64;
        let net = ring(p as usize, bandwidth, a);
        let plan = plan(
            CollectiveKind::AllReduce,
            Algorithm::Ring,
            p as usize,
            n,
            &net,
        );
        let expected = 2 * (p - 1) * n / p + 2 * (p - 1) * a;
        assert_eq!(alone(&net, &plan), expected, "P = {p}");
    }
}

#[test]
fn all_gather_and_reduce_scatter_take_half_an_all_reduce() {
    let (bandwidth, a) = (1e9, 300u64);
    for p in 2..=8u64 {
        let n = 840 * 100;
        let net = ring(p as usize, bandwidth, a);
        for kind in [CollectiveKind::AllGather, CollectiveKind::ReduceScatter] {
            let plan = plan(kind.clone(), Algorithm::Ring, p as usize, n, &net);
            let expected = (p - 1) * n / p + (p - 1) * a;
            assert_eq!(alone(&net, &plan), expected, "{kind:?}, P = {p}");
        }
    }
}

#[test]
fn tree_broadcast_takes_floor_log2_p_levels_and_chain_p_minus_1() {
    let (bandwidth, a, n) = (1e9, 1_000u64, 10_000u64);
    for p in 2..=17usize {
        let net = full(p, bandwidth, a);
        let tree = plan(
            CollectiveKind::Broadcast { root: 0 },
            Algorithm::Tree,
            p,
            n,
            &net,
        );
        let depth = (p as f64).log2().floor() as u64;
        assert_eq!(alone(&net, &tree), depth * (a + n), "tree, P = {p}");
        let chain = plan(
            CollectiveKind::Broadcast { root: 1 },
            Algorithm::Ring,
            p,
            n,
            &net,
        );
        assert_eq!(
            alone(&net, &chain),
            (p as u64 - 1) * (a + n),
            "chain, P = {p}"
        );
    }
}

#[test]
fn tree_all_reduce_goes_up_and_down_the_tree() {
    let (bandwidth, a, n) = (1e9, 1_000u64, 10_000u64);
    for p in 2..=17usize {
        let net = full(p, bandwidth, a);
        let tree = plan(CollectiveKind::AllReduce, Algorithm::Tree, p, n, &net);
        let depth = (p as f64).log2().floor() as u64;
        assert_eq!(alone(&net, &tree), 2 * depth * (a + n), "P = {p}");
    }
}

#[test]
fn pairwise_all_to_all_on_a_switch_takes_p_minus_1_rounds() {
    // Round r: member i sends its 1,000 B to member i + r; no two sends of a round share a port
    // of the switch, so each round takes the route's two hops of 400 ns plus 1,000 ns.
    for p in 2..=9usize {
        let block = 1_000u64;
        let net = switch(p, 1e9, 400);
        let blocks = vec![vec![block; p]; p];
        let plan = plan(
            CollectiveKind::AllToAll { blocks },
            Algorithm::Auto,
            p,
            0,
            &net,
        );
        assert_eq!(plan.steps().len(), p * (p - 1));
        assert_eq!(plan.bytes_sent(), vec![(p as u64 - 1) * block; p]);
        assert_eq!(
            alone(&net, &plan),
            (p as u64 - 1) * (800 + block),
            "P = {p}"
        );
    }
    // All-to-all(v): empty blocks are no steps.
    let net = switch(3, 1e9, 0);
    let blocks = vec![vec![0, 5, 0], vec![0, 0, 7], vec![0, 0, 0]];
    let plan = plan(
        CollectiveKind::AllToAll { blocks },
        Algorithm::Auto,
        3,
        0,
        &net,
    );
    assert_eq!(plan.bytes_sent(), vec![5, 7, 0]);
}

fn cluster(devices: usize, gpus: usize, nics: usize) -> Network {
    Network::cluster(
        names(devices),
        ClusterShape {
            gpus_per_node: gpus,
            nics_per_node: nics,
            nodes_per_leaf: None,
            intra: LinkSpec {
                bandwidth_bytes_per_s: 4e9,
                latency_ns: 100,
            },
            inter: LinkSpec {
                bandwidth_bytes_per_s: 1e9,
                latency_ns: 2_000,
            },
            oversubscription: 1.0,
        },
    )
}

#[test]
fn hierarchical_all_reduce_on_two_nodes_by_hand() {
    // Two nodes of two GPUs, n = 8,000 B. Intra routes: 2 hops of 100 ns at 4 B/ns; inter: NIC
    // up and down, 2 hops of 2 us at 1 B/ns.
    // 1. Reduce-scatter in each node: one round of n/2 = 4,000 B: 200 + 1,000 = 1,200 ns.
    // 2. Per local rank, a ring all-reduce of its 4,000 B across 2 nodes: 2 rounds of 2,000 B,
    //    4,000 + 2,000 = 6,000 ns each; with a NIC per GPU the two ranks never meet: 12,000 ns.
    // 3. All-gather in each node: 1,200 ns. In all 14,400 ns.
    let n = 8_000;
    let rail = cluster(4, 2, 2);
    let plan_rail = plan(
        CollectiveKind::AllReduce,
        Algorithm::Hierarchical,
        4,
        n,
        &rail,
    );
    assert_eq!(plan_rail.algorithm(), Algorithm::Hierarchical);
    assert_eq!(alone(&rail, &plan_rail), 1_200 + 12_000 + 1_200);
    // One NIC per node: the two ranks' 2,000 B steps take turns on it, 6,000 ns each. From
    // 1,200 ns: rank 1's first round (whose reduce-scatter step arrived first) to 7,200, rank
    // 0's to 13,200, rank 1's second round to 19,200, rank 0's to 25,200; then the all-gather.
    let shared = cluster(4, 2, 1);
    let plan_shared = plan(
        CollectiveKind::AllReduce,
        Algorithm::Hierarchical,
        4,
        n,
        &shared,
    );
    assert_eq!(alone(&shared, &plan_shared), 25_200 + 1_200);
    // Auto picks the hierarchical form across nodes, and a flat one inside a node.
    let auto = plan(CollectiveKind::AllReduce, Algorithm::Auto, 4, n, &rail);
    assert_eq!(auto.algorithm(), Algorithm::Hierarchical);
    let one_node = cluster(2, 2, 2);
    let flat = plan(CollectiveKind::AllReduce, Algorithm::Auto, 2, n, &one_node);
    assert_eq!(flat.algorithm(), Algorithm::Ring);
}

#[test]
fn bad_groups_are_refused() {
    let net = switch(4, 1e9, 0);
    let kind = CollectiveKind::AllReduce;
    let err = |members: Vec<usize>, algorithm| {
        Plan::new(&kind, algorithm, members, 8, &net)
            .unwrap_err()
            .to_string()
    };
    assert!(err(vec![], Algorithm::Ring).contains("at least one member"));
    assert!(err(vec![0, 1, 1], Algorithm::Ring).contains("twice"));
    assert!(err(vec![0, 9], Algorithm::Ring).contains("not in the network"));
    assert!(err(vec![0, 1], Algorithm::Hierarchical).contains("several machines"));
    let gather = Plan::new(
        &CollectiveKind::AllGather,
        Algorithm::Tree,
        vec![0, 1],
        8,
        &net,
    );
    assert_eq!(
        gather.unwrap_err().to_string(),
        "an all-gather has no tree form"
    );
}

#[test]
fn graph_parallel_weight_all_reduce_runs_as_a_ring_on_the_links() {
    // One layer, no halo: each partition runs F, B, then U after the all-reduce of 4,000 B.
    for p in 2..=6u64 {
        let (t_f, t_b, a, n) = (3_000u64, 5_000u64, 250u64, 60_000u64);
        let schedule = graph_parallel::generate(1, vec![Vec::new(); p as usize]).unwrap();
        let mut costs = StageCosts::uniform(1, t_f, t_b);
        costs.activation_bytes = n;
        let net = ring(p as usize, 1e9, a);
        let trace = simulate_with(&schedule, &costs, Some(&net));
        let metrics = report::compute(&trace);
        let all_reduce = 2 * (p - 1) * n / p + 2 * (p - 1) * a;
        assert_eq!(metrics.epoch_time_ns, t_f + t_b + all_reduce, "P = {p}");
        assert_eq!(metrics.communication_bytes, 2 * (p - 1) * n, "P = {p}");
    }
}

#[test]
fn the_weight_all_reduce_queues_behind_a_gradient_hand_off() {
    // Two partitions, two layers; partition 0 reads partition 1's rows, so B(0, 1) hands a
    // gradient of 10,000 B to B(1, 0) over link 0 -> 1 (10,000..20,000 ns, at a byte per ns).
    // B(0, 0) ends at 11,000 and its first ring step (5,000 B, 0 -> 1) waits for that link until
    // 20,000. B(1, 0) runs 20,000..21,000 and sends 1 -> 0 at 21,000..26,000. Round two: 1 -> 0
    // once the step into 1 arrived (25,000), behind round one's 1 -> 0 (26,000..31,000); 0 -> 1
    // once the step into 0 arrived (26,000..31,000).
    let schedule = graph_parallel::generate(2, vec![Vec::new(), vec![0]]).unwrap();
    let mut costs = StageCosts::uniform(2, 0, 0);
    costs.backward_ns = vec![1_000, 0];
    costs.activation_bytes = 10_000;
    let link = |from, to| Link {
        from,
        to,
        bandwidth_bytes_per_s: 1e9,
        latency_ns: 0,
    };
    let net = Network::build(names(2), vec![], vec![link(0, 1), link(1, 0)]).unwrap();
    let trace = simulate_with(&schedule, &costs, Some(&net));
    assert_eq!(report::compute(&trace).epoch_time_ns, 31_000);
    let mut weights: Vec<(u32, u64, u64, u64)> = trace
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Transfer(Payload::Weights))
        .map(|s| (s.lane_index, s.requested_ns, s.start_ns, s.end_ns))
        .collect();
    weights.sort();
    assert_eq!(
        weights,
        vec![
            (0, 11_000, 20_000, 25_000),
            (0, 26_000, 26_000, 31_000),
            (1, 21_000, 21_000, 26_000),
            (1, 25_000, 26_000, 31_000),
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A ring all-reduce moves 2(P-1)/P n bytes from each member when P divides n, and
    /// 2(P-1) n in all whatever n.
    #[test]
    fn ring_all_reduce_moves_2_p_minus_1_over_p_n_per_member(p in 1usize..12, n in 0u64..100_000) {
        let net = Network::free(names(p));
        let plan = plan(CollectiveKind::AllReduce, Algorithm::Ring, p, n, &net);
        let sent = plan.bytes_sent();
        prop_assert_eq!(sent.iter().sum::<u64>(), 2 * (p as u64 - 1) * n);
        let whole = n - n % p as u64;
        let plan = self::plan(CollectiveKind::AllReduce, Algorithm::Ring, p, whole, &net);
        for bytes in plan.bytes_sent() {
            prop_assert_eq!(bytes * p as u64, 2 * (p as u64 - 1) * whole);
        }
    }

    /// Two collectives over disjoint devices of a switch use disjoint links: together they
    /// finish exactly as each does alone, whatever their kinds, sizes and start times.
    #[test]
    fn collectives_on_disjoint_devices_do_not_interact(
        split in 1usize..7,
        kinds in (0usize..4, 0usize..4),
        bytes in (1u64..50_000, 1u64..50_000),
        starts in proptest::collection::vec(0u64..20_000, 8),
    ) {
        let p = 8;
        let net = switch(p, 2e9, 500);
        let make = |k: usize, members: Vec<usize>, n: u64| {
            let (kind, algorithm) = match k {
                0 => (CollectiveKind::AllReduce, Algorithm::Ring),
                1 => (CollectiveKind::AllReduce, Algorithm::Tree),
                2 => (CollectiveKind::AllGather, Algorithm::Ring),
                _ => (CollectiveKind::Broadcast { root: 0 }, Algorithm::Tree),
            };
            Plan::new(&kind, algorithm, members, n, &net).unwrap()
        };
        let a = make(kinds.0, (0..split).collect(), bytes.0);
        let b = make(kinds.1, (split..p).rev().collect(), bytes.1);
        let ready_a = starts[..split].to_vec();
        let ready_b = starts[split..].to_vec();
        let together = simulate(&net, &[(&a, ready_a.clone()), (&b, ready_b.clone())]);
        let alone_a = simulate(&net, &[(&a, ready_a)]);
        let alone_b = simulate(&net, &[(&b, ready_b)]);
        prop_assert_eq!(&together[0], &alone_a[0]);
        prop_assert_eq!(&together[1], &alone_b[0]);
    }
}

#[test]
fn collectives_sharing_a_nic_queue_behind_each_other() {
    // Two all-reduces across the same two nodes, one over each node's GPU 0 and one over GPU 1:
    // with a NIC per GPU they do not meet; with one NIC per node the second waits.
    let n = 10_000;
    let run = |net: &Network| {
        let a = Plan::new(
            &CollectiveKind::AllReduce,
            Algorithm::Ring,
            vec![0, 2],
            n,
            net,
        )
        .unwrap();
        let b = Plan::new(
            &CollectiveKind::AllReduce,
            Algorithm::Ring,
            vec![1, 3],
            n,
            net,
        )
        .unwrap();
        let outcomes = simulate(net, &[(&a, vec![0, 0]), (&b, vec![0, 0])]);
        let a_alone = simulate(net, &[(&a, vec![0, 0])]);
        (outcomes, a_alone[0].done_ns[0])
    };
    let (rail, alone_ns) = run(&cluster(4, 2, 2));
    assert_eq!(rail[1].done_ns[0], alone_ns);
    let (shared, _) = run(&cluster(4, 2, 1));
    assert!(shared[1].done_ns[0] > alone_ns, "{:?}", shared);
}
