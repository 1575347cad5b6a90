//! The simulator's one pass against its event loop: where the pass applies it must find the same
//! spans and memory events at the same times; where it does not, the event loop runs.

use proptest::prelude::*;

use pipegnn::network::{Link, Network};
use pipegnn::schedule::catalog::CATALOG;
use pipegnn::schedule::{
    file, generate_hybrid, BackwardOrder, Generator, GnnPipeBackward, GnnPipeKnobs, GnnPipeOrder,
    PipelineSpec, Schedule, ScheduleError, StagePlacement, UpdateMode,
};
use pipegnn::sim::{
    simulate_events_into, simulate_into, takes_one_pass, Contention, SimError, SimInput,
};
use pipegnn::trace::{MemoryEvent, Span, SpanKind, Trace, TraceSource};

use crate::collectives::{full, ring, switch};
use crate::support::StageCosts;

/// Every catalog kind with a generator, and GNNPipe with each of its knobs.
fn generators() -> Vec<Generator> {
    let mut all: Vec<Generator> = CATALOG.iter().filter_map(|e| e.generator).collect();
    for order in [GnnPipeOrder::GPipe, GnnPipeOrder::OneFOneB] {
        for backward in [GnnPipeBackward::Drop, GnnPipeBackward::Deferred] {
            for update in [UpdateMode::PerEpoch, UpdateMode::PerChunk] {
                all.push(Generator::GnnPipe(GnnPipeKnobs {
                    order,
                    backward,
                    update,
                }));
            }
        }
    }
    all
}

/// A chain of `p` devices, neighbours joined both ways.
fn chain(p: usize, bandwidth_bytes_per_s: f64, latency_ns: u64) -> Network {
    let links = (1..p)
        .flat_map(|d| [(d - 1, d), (d, d - 1)])
        .map(|(from, to)| Link {
            from,
            to,
            bandwidth_bytes_per_s,
            latency_ns,
        })
        .collect();
    Network::build((0..p).map(|d| format!("d{d}")).collect(), vec![], links).unwrap()
}

/// Spans and memory events in a canonical order, so two interpreters' traces compare as sets.
fn canonical(mut trace: Trace) -> (Vec<Span>, Vec<MemoryEvent>) {
    trace.spans.sort_by_key(|s| {
        (
            s.lane_index,
            s.kind,
            s.start_ns,
            s.end_ns,
            s.chunk,
            s.stage,
            s.hop,
            s.device,
            s.bytes,
            s.requested_ns,
        )
    });
    trace
        .memory
        .sort_by_key(|e| (e.device, e.time_ns, e.category, e.delta_bytes));
    (trace.spans, trace.memory)
}

/// Runs `input` both ways.
fn both(input: &SimInput<'_>) -> [Result<Trace, SimError>; 2] {
    let empty = || {
        Trace::with_capacity(
            TraceSource::Predicted,
            Vec::new(),
            Vec::new(),
            (input.schedule.n_stages(), input.schedule.n_chunks()),
            input.schedule.n_ops(),
        )
    };
    let (mut pass, mut events) = (empty(), empty());
    [
        simulate_into(input, &mut pass).map(|()| pass),
        simulate_events_into(input, &mut events).map(|()| events),
    ]
}

fn input<'a>(
    schedule: &'a Schedule,
    placement: &'a [usize],
    cost: &'a StageCosts,
    network: &'a Network,
) -> SimInput<'a> {
    SimInput {
        schedule,
        placement,
        cost,
        network,
        compute_slots: None,
        lowered: None,
        contention: None,
    }
}

/// `generator`'s schedule on `devices` devices: a V's two stages each, `per_device` each where
/// it places stages round robin, else one; `None` where it has no schedule of that shape.
fn generate(
    generator: Generator,
    devices: usize,
    per_device: u32,
    n_chunks: u32,
) -> Result<Option<Schedule>, TestCaseError> {
    let v = match generator.placement() {
        StagePlacement::OnePerDevice => 1,
        StagePlacement::V => 2,
        StagePlacement::RoundRobin => per_device,
    };
    match generator.generate_on(devices as u32 * v, v, n_chunks) {
        Ok(schedule) => Ok(Some(schedule)),
        Err(ScheduleError::Shape(_)) => Ok(None),
        Err(err) => Err(TestCaseError::fail(err.to_string())),
    }
}

/// The last end of any span.
fn makespan(trace: &Trace) -> u64 {
    trace.spans.iter().map(|s| s.end_ns).max().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Ops that slow each other down on a free network, every generated kind: a slowdown of 1
    /// changes nothing; a slowdown `s` for two or more at once leaves one op alone as it was
    /// and stretches every op by 1 to `s`, and the epoch too (fixed orders and no shared link:
    /// times only grow with durations, and scale with them), within a nanosecond's rounding
    /// per op.
    #[test]
    fn contention_stretches_ops_and_the_epoch_within_its_slowdown(
        devices in 1usize..=4,
        n_chunks in 1u32..=8,
        times in proptest::collection::vec((1u64..5_000, 2u64..5_000, 1u64..100), 8),
        slowdown in 1.0f64..3.0,
    ) {
        let network = Network::free((0..devices).map(|d| format!("d{d}")).collect());
        let placement: Vec<usize> = (0..devices).collect();
        let ones = vec![1.0; devices];
        let mut table = vec![slowdown; devices];
        table[0] = 1.0;
        for generator in generators() {
            let Some(schedule) = generate(generator, devices, 1, n_chunks)? else {
                continue;
            };
            let stages = schedule.n_stages() as usize;
            let mut costs = StageCosts::uniform(stages, 1, 1);
            costs.forward_ns = times[..stages].iter().map(|t| t.0).collect();
            costs.backward_ns = times[..stages].iter().map(|t| t.1).collect();
            costs.weight_ns = times[..stages].iter().map(|t| t.1 * t.2 / 100).collect();
            let alone = input(&schedule, &placement, &costs, &network);
            let [free, _] = both(&alone);
            let free = free.unwrap();
            let at = |slowdown: &[f64]| {
                let [_, events] = both(&SimInput {
                    contention: Some(Contention { slowdown }),
                    ..input(&schedule, &placement, &costs, &network)
                });
                events.unwrap()
            };
            prop_assert_eq!(canonical(at(&ones)), canonical(free.clone()), "{:?}", generator);
            let contended = at(&table);
            let ops = schedule.n_ops() as u64;
            let (t, t_s) = (makespan(&free), makespan(&contended));
            prop_assert!(t_s >= t, "{generator:?}: {t_s} < {t}");
            prop_assert!(
                t_s as f64 <= slowdown * t as f64 + ops as f64,
                "{generator:?}: {t_s} > {slowdown} x {t}"
            );
            if devices == 1 {
                prop_assert_eq!(t_s, t);
            }
            let mut stretched = 0;
            for span in &contended.spans {
                let SpanKind::Compute(kind) = span.kind else {
                    continue;
                };
                let op = pipegnn::schedule::Op {
                    kind,
                    chunk: span.chunk,
                    stage: span.stage,
                };
                let ns = pipegnn::cost::CostModel::op_ns(&costs, op) as f64;
                let d = (span.end_ns - span.start_ns) as f64;
                prop_assert!(d >= ns && d <= slowdown * ns + 2.0, "{generator:?}: {d} for {ns}");
                stretched += u32::from(d > ns + 2.0);
            }
            // Two devices or more, and ops overlap: some op was slowed.
            if devices > 1 && n_chunks > 1 && slowdown > 1.01 {
                prop_assert!(stretched > 0, "{:?}", generator);
            }
        }
    }

    /// Every generated kind, random stage times and sizes, on a free network, a chain and a
    /// full mesh (where the pass applies unless a route crosses a link another sender uses), a
    /// ring and a switch (where it mostly does not): both interpreters record the same spans and
    /// memory events.
    #[test]
    fn the_one_pass_records_what_the_event_loop_records(
        devices in 1usize..=6,
        per_device in 1u32..=3,
        n_chunks in 1u32..=12,
        times in proptest::collection::vec((1u64..5_000, 2u64..5_000, 1u64..100), 24),
        activation_kib in 0u64..4_096,
        network_kind in 0usize..5,
        latency_ns in 0u64..20_000,
    ) {
        let bandwidth = 25e9;
        let network = match network_kind {
            0 => Network::free((0..devices).map(|d| format!("d{d}")).collect()),
            1 => chain(devices, bandwidth, latency_ns),
            2 => full(devices, bandwidth, latency_ns),
            3 => ring(devices, bandwidth, latency_ns),
            _ => switch(devices, bandwidth, latency_ns),
        };
        let placement: Vec<usize> = (0..devices).collect();
        for generator in generators() {
            let Some(schedule) = generate(generator, devices, per_device, n_chunks)? else {
                continue;
            };
            let stages = schedule.n_stages() as usize;
            let costs = StageCosts {
                forward_ns: times[..stages].iter().map(|t| t.0).collect(),
                backward_ns: times[..stages].iter().map(|t| t.1).collect(),
                weight_ns: times[..stages].iter().map(|t| t.1 * t.2 / 100).collect(),
                stash_bytes: 3 << 20,
                weight_stash_bytes: Some(1 << 20),
                parameter_bytes: 7 << 20,
                activation_bytes: activation_kib << 10,
            };
            let input = input(&schedule, &placement, &costs, &network);
            if network_kind == 0 || network_kind == 2 {
                // Nothing shared: no links, or each directed link carries one sender's hand-offs.
                prop_assert!(takes_one_pass(&input), "{generator:?} on network {network_kind}");
            }
            let [pass, events] = both(&input);
            let (pass, events) = (pass.unwrap(), events.unwrap());
            prop_assert_eq!(canonical(pass), canonical(events), "{:?}", generator);
        }
    }
}

#[test]
fn a_shared_switch_or_processor_takes_the_event_loop() {
    let schedule = Generator::OneFOneB.generate(4, 8).unwrap();
    let costs = StageCosts::uniform(4, 1_000, 2_000);
    let placement: Vec<usize> = (0..4).collect();
    let shared = switch(4, 25e9, 1_000);
    assert!(!takes_one_pass(&input(
        &schedule, &placement, &costs, &shared
    )));
    // Device 1 receives from 0 and from 2: on a chain by two links, on a switch by one.
    let own = chain(4, 25e9, 1_000);
    assert!(takes_one_pass(&input(&schedule, &placement, &costs, &own)));
    // Stages taking turns on one GPU: the loop decides who goes first.
    let turns = SimInput {
        compute_slots: Some(1),
        ..input(&schedule, &placement, &costs, &own)
    };
    assert!(!takes_one_pass(&turns));
    // Two stages on one network device: the pass delivers their hand-offs at once, as the loop.
    let stacked = [0, 0, 1, 1];
    let two = chain(2, 25e9, 1_000);
    let stacked_input = input(&schedule, &stacked, &costs, &two);
    assert!(takes_one_pass(&stacked_input));
    let [pass, events] = both(&stacked_input);
    assert_eq!(canonical(pass.unwrap()), canonical(events.unwrap()));
}

#[test]
fn a_deadlock_stalls_both_at_the_same_ops() {
    // Device 1 runs chunk 1 first, but chunk 1's activations leave device 0 only after B(0,0).
    let text = "stages: 2\nchunks: 2\norders:\n  0: [[F,0,0],[B,0,0],[F,1,0],[B,1,0]]\n  1: [[F,1,1],[F,0,1],[B,0,1],[B,1,1]]\n";
    let schedule = file::parse("deadlock.yaml", text).unwrap();
    let costs = StageCosts::uniform(2, 1_000, 2_000);
    let placement = [0, 1];
    let network = chain(2, 25e9, 1_000);
    let input = input(&schedule, &placement, &costs, &network);
    assert!(takes_one_pass(&input));
    let [pass, events] = both(&input);
    let (pass, events) = (pass.unwrap_err(), events.unwrap_err());
    assert_eq!(pass, events);
    assert!(
        matches!(pass, SimError::Stalled(ref blocked) if blocked.len() == 2),
        "{pass}"
    );
}

#[test]
fn the_hybrid_with_one_partition_relays_in_the_pass_as_in_the_loop() {
    // GNNPipe's hybrid lowers every release with its endpoints; with one partition nothing is
    // all-reduced, so the pass runs it, reading those endpoints.
    for (order, backward, update) in [
        (
            GnnPipeOrder::OneFOneB,
            GnnPipeBackward::Deferred,
            UpdateMode::PerEpoch,
        ),
        (
            GnnPipeOrder::GPipe,
            GnnPipeBackward::Exact,
            UpdateMode::PerEpoch,
        ),
    ] {
        let spec = PipelineSpec {
            n_stages: 3,
            n_chunks: 5,
            backward_order: BackwardOrder::default(),
        };
        let knobs = GnnPipeKnobs {
            order,
            backward,
            update,
        };
        let schedule = generate_hybrid(&spec, knobs, &[0..2, 2..3, 3..5], vec![vec![]]).unwrap();
        let costs = StageCosts::uniform(schedule.n_stages() as usize, 1_000, 2_500);
        let placement: Vec<usize> = (0..schedule.n_devices()).collect();
        let network = chain(schedule.n_devices(), 25e9, 700);
        let input = input(&schedule, &placement, &costs, &network);
        assert!(takes_one_pass(&input), "{order:?} {backward:?}");
        let [pass, events] = both(&input);
        assert_eq!(canonical(pass.unwrap()), canonical(events.unwrap()));
    }
}
