//! Hand-computed results: transfers over links, FIFO queueing, memory peaks and breakdowns.

use pipegnn::network::{Link, Network};
use pipegnn::report;
use pipegnn::schedule::{BackwardOrder, Generator};
use pipegnn::trace::MemoryCategory;

use crate::support::{simulate_with, StageCosts};

fn two_device_network(bandwidth_bytes_per_s: f64, latency_ns: u64) -> Network {
    let link = |from, to| Link {
        from,
        to,
        bandwidth_bytes_per_s,
        latency_ns,
    };
    Network::build(
        vec!["dev0".into(), "dev1".into()],
        vec![],
        vec![link(0, 1), link(1, 0)],
    )
    .unwrap()
}

#[test]
fn one_chunk_over_a_link_adds_two_transfers() {
    // 1 MB at 10 GB/s is 100 us, plus 1 us latency: 101 us each way.
    let network = two_device_network(10e9, 1_000);
    let mut costs = StageCosts::uniform(2, 1_000_000, 2_000_000);
    costs.activation_bytes = 1_000_000;
    let schedule = Generator::GPipe(BackwardOrder::Forward)
        .generate(2, 1)
        .unwrap();
    let trace = simulate_with(&schedule, &costs, Some(&network));
    let metrics = report::compute(&trace);
    assert_eq!(
        metrics.epoch_time_ns,
        1_000_000 + 101_000 + 1_000_000 + 2_000_000 + 101_000 + 2_000_000
    );
    assert_eq!(metrics.communication_bytes, 2_000_000);
    assert_eq!(metrics.links.len(), 2);
    for link in &metrics.links {
        assert_eq!((link.bytes, link.busy_ns), (1_000_000, 101_000));
    }
    // dev1 waits 1 ms for dev0's forward (fill) and 101 us for the activations (link).
    assert_eq!(metrics.devices[1].communication_wait_ns, 101_000);
    assert_eq!(
        metrics.devices[1].fill_drain_ns,
        metrics.devices[1].idle_ns - 101_000
    );
    assert_eq!(metrics.devices[0].communication_wait_ns, 101_000);
}

#[test]
fn transfers_on_one_link_queue_first_in_first_out() {
    // Forwards and backwards take 10 us, each transfer 1 ms: the link is the bottleneck.
    // Forward transfers requested at 10, 20, 30, 40 us run back to back from 10 us; stage 1's
    // backwards end at 4030..4060 us and their gradients queue on the reverse link from 4030 us;
    // stage 0's last backward runs 8030..8040 us.
    let network = two_device_network(1e9, 0);
    let mut costs = StageCosts::uniform(2, 10_000, 10_000);
    costs.activation_bytes = 1_000_000;
    let schedule = Generator::GPipe(BackwardOrder::Forward)
        .generate(2, 4)
        .unwrap();
    let trace = simulate_with(&schedule, &costs, Some(&network));
    let metrics = report::compute(&trace);
    assert_eq!(metrics.epoch_time_ns, 8_040_000);
    for link in &metrics.links {
        assert_eq!(link.busy_ns, 4_000_000);
    }
    assert_eq!(metrics.communication_bytes, 8_000_000);
}

#[test]
fn memory_peaks_follow_the_stash_bound() {
    // Parameters 100 B resident; 10 B stashed per in-flight chunk; free communication.
    let (n_stages, n_chunks) = (4u32, 8u32);
    let mut costs = StageCosts::uniform(n_stages as usize, 1_000, 2_000);
    costs.stash_bytes = 10;
    costs.parameter_bytes = 100;
    for (generator, bound) in [
        (Generator::GPipe(BackwardOrder::Forward), [8, 8, 8, 8]),
        (Generator::OneFOneB, [4, 3, 2, 1]),
    ] {
        let schedule = generator.generate(n_stages, n_chunks).unwrap();
        let metrics = report::compute(&simulate_with(&schedule, &costs, None));
        for (device, expected) in metrics.devices.iter().zip(bound) {
            assert_eq!(
                device.peak_memory_bytes,
                100 + 10 * expected,
                "{generator:?} {}",
                device.name
            );
            assert_eq!(
                device.memory_at_peak[MemoryCategory::Activations.index()],
                10 * expected
            );
            assert_eq!(
                device.memory_at_peak[MemoryCategory::Parameters.index()],
                100
            );
            assert_eq!(device.peak_in_flight, expected as u32);
        }
    }
}

/// A split backward frees a chunk's stash in two steps: `I` all but what `W` reads (plus the
/// output gradients `I` made for it), `W` the rest. Checked event by event on ZB-H1 (2 stages,
/// 2 chunks): stash 100, 30 kept.
#[test]
fn a_split_backward_frees_the_stash_at_i_except_what_w_reads() {
    let schedule = Generator::InterleavedZeroBubble
        .generate_on(2, 1, 2)
        .unwrap();
    let costs = StageCosts {
        stash_bytes: 100,
        weight_stash_bytes: Some(30),
        weight_ns: vec![1_000; 2],
        ..StageCosts::uniform(2, 1_000, 2_000)
    };
    let trace = simulate_with(&schedule, &costs, None);
    let activations: Vec<(u64, i64)> = trace
        .memory
        .iter()
        .filter(|e| e.category == MemoryCategory::Activations)
        .map(|e| (e.time_ns, e.delta_bytes))
        .collect();
    // Per chunk and stage: +100 at F, -70 at I's end, -30 at W's end.
    let of = |delta: i64| activations.iter().filter(|e| e.1 == delta).count();
    assert_eq!((of(100), of(-70), of(-30)), (4, 4, 4), "{activations:?}");
    for span in trace.spans.iter() {
        use pipegnn::trace::SpanKind;
        let delta = match span.kind {
            SpanKind::Compute(pipegnn::schedule::OpKind::InputGrad) => -70,
            SpanKind::Compute(pipegnn::schedule::OpKind::WeightGrad) => -30,
            _ => continue,
        };
        let device_events: Vec<&pipegnn::trace::MemoryEvent> = trace
            .memory
            .iter()
            .filter(|e| e.device == span.device && e.time_ns == span.end_ns)
            .collect();
        assert!(
            device_events
                .iter()
                .any(|e| e.category == MemoryCategory::Activations && e.delta_bytes == delta),
            "{span:?}: {device_events:?}"
        );
    }
    // Everything allocated is freed by the epoch's end.
    let total: i64 = activations.iter().map(|e| e.1).sum();
    assert_eq!(total, 0);
    // Without a statement, `W` keeps the whole stash (the default).
    let whole = StageCosts {
        weight_stash_bytes: None,
        ..costs
    };
    let trace = simulate_with(&schedule, &whole, None);
    assert!(trace
        .memory
        .iter()
        .filter(|e| e.category == MemoryCategory::Activations)
        .all(|e| e.delta_bytes == 100 || e.delta_bytes == -100 || e.delta_bytes == 0));
}
