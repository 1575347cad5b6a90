//! Property tests of the schedule generators, the checker and the simulator against closed
//! forms and an independent earliest-start oracle.

use proptest::prelude::*;

use pipegnn::report;
use pipegnn::schedule::{
    catalog, check, file, BackwardOrder, BackwardSync, DataFlow, Generator, GnnPipeBackward,
    GnnPipeKnobs, GnnPipeOrder, OpKind, Schedule, ScheduleError, UpdateMode,
};
use pipegnn::testing::{self, Bound};
use pipegnn::trace::{Lane, SpanKind, Trace};

use crate::support::{simulate_on, simulate_with, StageCosts};

/// Every generator with every combination of knobs.
fn all_generators() -> Vec<Generator> {
    let mut all = vec![
        Generator::GPipe(BackwardOrder::Forward),
        Generator::GPipe(BackwardOrder::Reverse),
        Generator::OneFOneB,
    ];
    for order in [GnnPipeOrder::GPipe, GnnPipeOrder::OneFOneB] {
        for backward in [
            GnnPipeBackward::Drop,
            GnnPipeBackward::Deferred,
            GnnPipeBackward::Exact,
        ] {
            for update in [UpdateMode::PerEpoch, UpdateMode::PerChunk] {
                // Exact backward with 1F1B order cannot run; a test below checks it is refused.
                if !(backward == GnnPipeBackward::Exact && order == GnnPipeOrder::OneFOneB) {
                    all.push(Generator::GnnPipe(GnnPipeKnobs {
                        order,
                        backward,
                        update,
                    }));
                }
            }
        }
    }
    all
}

/// The stash bound the catalog states for `generator` (`catalog::stash_bound`) on `device` of
/// `schedule`, `v` stages per device: each is reached exactly, so the tests compare with `==`.
fn catalog_bound(generator: Generator, schedule: &Schedule, v: u32, device: u32) -> u32 {
    let bound = Bound::parse(catalog::stash_bound(generator)).unwrap();
    let value = bound
        .eval(testing::bound_vars(schedule, v, device))
        .unwrap();
    u32::try_from(value).unwrap()
}

/// Earliest start times computed independently of the engine: repeatedly let each device issue
/// its next op once the op's inputs are finished (free, instantaneous communication).
fn oracle_makespan(schedule: &Schedule, costs: &StageCosts) -> u64 {
    let (s_n, k_n) = (schedule.n_stages() as usize, schedule.n_chunks() as usize);
    let DataFlow::Pipeline { backward, update } = schedule.flow().clone() else {
        panic!("the oracle covers pipelines")
    };
    let all = |ends: &[Option<u64>]| ends.iter().try_fold(0, |m, e| e.map(|e| m.max(e)));
    // Per stage and chunk: when the forward ended, when the gradient for the previous stage
    // was ready (`B` or `I`), and when the chunk's last backward op ended (`B` or `W`).
    let mut f_end = vec![vec![None::<u64>; k_n]; s_n];
    let mut b_end = vec![vec![None::<u64>; k_n]; s_n];
    let mut last_end = vec![vec![None::<u64>; k_n]; s_n];
    let mut pos = vec![0usize; schedule.n_devices()];
    let mut free_at = vec![0u64; schedule.n_devices()];
    let mut makespan = 0;
    loop {
        let mut progressed = false;
        for (d, order) in schedule.orders().iter().enumerate() {
            while let Some(op) = order.get(pos[d]) {
                let (s, c) = (op.stage as usize, op.chunk as usize);
                let ready = match op.kind {
                    OpKind::Forward => {
                        if s == 0 {
                            Some(0)
                        } else {
                            f_end[s - 1][c]
                        }
                    }
                    OpKind::WeightGrad => b_end[s][c],
                    OpKind::Backward | OpKind::InputGrad => {
                        let grad = match backward {
                            _ if s + 1 == s_n => Some(0),
                            BackwardSync::PerChunk => b_end[s + 1][c],
                            BackwardSync::Barrier => all(&b_end[s + 1]),
                        };
                        f_end[s][c].zip(grad).map(|(a, b)| a.max(b))
                    }
                    OpKind::Optimizer => match update {
                        UpdateMode::PerEpoch => all(&last_end[s]),
                        UpdateMode::PerChunk => last_end[s][c],
                    },
                };
                let Some(ready) = ready else { break };
                let start = ready.max(free_at[d]);
                let end = start
                    + match op.kind {
                        OpKind::Forward => costs.forward_ns[s],
                        OpKind::Backward => costs.backward_ns[s],
                        OpKind::InputGrad => costs.backward_ns[s] - costs.weight_ns[s],
                        OpKind::WeightGrad => costs.weight_ns[s],
                        OpKind::Optimizer => 0,
                    };
                match op.kind {
                    OpKind::Forward => f_end[s][c] = Some(end),
                    OpKind::Backward => {
                        b_end[s][c] = Some(end);
                        last_end[s][c] = Some(end);
                    }
                    OpKind::InputGrad => b_end[s][c] = Some(end),
                    OpKind::WeightGrad => last_end[s][c] = Some(end),
                    OpKind::Optimizer => {}
                }
                free_at[d] = end;
                makespan = makespan.max(end);
                pos[d] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    assert!(
        pos.iter()
            .zip(schedule.orders())
            .all(|(p, o)| *p == o.len()),
        "the oracle finished every list"
    );
    makespan
}

/// Checks that the trace obeys the schedule: per device, spans in list order without overlap;
/// every op after the ops whose data it needs.
fn assert_trace_respects_schedule(schedule: &Schedule, trace: &Trace) {
    let k_n = schedule.n_chunks() as usize;
    let mut f = vec![(0u64, 0u64); schedule.n_stages() as usize * k_n];
    let mut b = f.clone();
    for (d, order) in schedule.orders().iter().enumerate() {
        let spans: Vec<_> = trace
            .spans
            .iter()
            .filter(|s| {
                s.lane() == Lane::Device(d as u32) && matches!(s.kind, SpanKind::Compute(_))
            })
            .collect();
        assert_eq!(spans.len(), order.len());
        for (span, op) in spans.iter().zip(order) {
            assert_eq!(
                (span.kind, span.chunk, span.stage),
                (SpanKind::Compute(op.kind), op.chunk, op.stage)
            );
        }
        for pair in spans.windows(2) {
            assert!(
                pair[0].end_ns <= pair[1].start_ns,
                "ops on one device do not overlap"
            );
        }
        for span in spans {
            let i = span.stage as usize * k_n + span.chunk as usize;
            match span.kind {
                SpanKind::Compute(OpKind::Forward) => f[i] = (span.start_ns, span.end_ns),
                SpanKind::Compute(OpKind::Backward) => b[i] = (span.start_ns, span.end_ns),
                _ => {}
            }
        }
    }
    let s_n = schedule.n_stages() as usize;
    for s in 0..s_n {
        for c in 0..k_n {
            let i = s * k_n + c;
            if s > 0 {
                assert!(
                    f[i].0 >= f[i - k_n].1,
                    "F({c},{s}) starts after F({c},{})",
                    s - 1
                );
            }
            assert!(b[i].0 >= f[i].1, "B({c},{s}) starts after F({c},{s})");
            if s + 1 < s_n {
                assert!(
                    b[i].0 >= b[i + k_n].1,
                    "B({c},{s}) starts after B({c},{})",
                    s + 1
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Devices sharing one processor (`executor.device_map: shared`) with free links: the
    /// processor is never idle while work remains (an idle processor with nothing ready and
    /// nothing in flight would be a deadlock), so the epoch is exactly the sum of every op's
    /// time, and no two ops overlap.
    #[test]
    fn a_shared_processor_runs_one_op_at_a_time_without_idling(
        n_stages in 1u32..=8,
        n_chunks in 1u32..=16,
        times in proptest::collection::vec((1u64..5_000, 1u64..5_000), 8),
    ) {
        let costs = StageCosts {
            forward_ns: times.iter().map(|t| t.0).take(n_stages as usize).collect(),
            backward_ns: times.iter().map(|t| t.1).take(n_stages as usize).collect(),
            ..StageCosts::uniform(n_stages as usize, 0, 0)
        };
        for generator in all_generators() {
            let schedule = generator.generate(n_stages, n_chunks).unwrap();
            let trace = simulate_on(&schedule, &costs, None, true);
            let work: u64 = (0..n_stages as usize)
                .map(|s| u64::from(n_chunks) * (costs.forward_ns[s] + costs.backward_ns[s]))
                .sum();
            let metrics = report::compute(&trace);
            prop_assert_eq!(metrics.epoch_time_ns, work, "{:?}", generator);
            let mut compute: Vec<(u64, u64)> = trace
                .spans
                .iter()
                .filter(|s| matches!(s.kind, SpanKind::Compute(_)) && s.end_ns > s.start_ns)
                .map(|s| (s.start_ns, s.end_ns))
                .collect();
            compute.sort_unstable();
            for pair in compute.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].0, "{:?}: {:?} overlaps", generator, pair);
            }
        }
    }

    #[test]
    fn generated_schedules_pass_the_checker(n_stages in 1u32..=16, n_chunks in 1u32..=64) {
        for generator in all_generators() {
            let schedule = generator.generate(n_stages, n_chunks).unwrap();
            let report = check(&schedule).unwrap();
            for stage in 0..n_stages {
                prop_assert_eq!(
                    report.peak_in_flight[stage as usize],
                    catalog_bound(generator, &schedule, 1, stage),
                    "{:?} stage {}", generator, stage
                );
            }
        }
    }

    #[test]
    fn uniform_times_match_the_closed_form(
        n_stages in 1u32..=16,
        n_chunks in 1u32..=64,
        forward_ns in 1u64..5_000,
        backward_ns in 1u64..5_000,
    ) {
        let (s, k) = (u64::from(n_stages), u64::from(n_chunks));
        let expected_bubble = (s - 1) as f64 / (k + s - 1) as f64;
        for generator in [Generator::GPipe(BackwardOrder::Forward), Generator::GPipe(BackwardOrder::Reverse), Generator::OneFOneB] {
            let schedule = generator.generate(n_stages, n_chunks).unwrap();
            let costs = StageCosts::uniform(n_stages as usize, forward_ns, backward_ns);
            let trace = simulate_with(&schedule, &costs, None);
            let metrics = report::compute(&trace);
            prop_assert_eq!(metrics.epoch_time_ns, (k + s - 1) * (forward_ns + backward_ns));
            prop_assert!((metrics.bubble_fraction - expected_bubble).abs() < 1e-12);
            for device in &metrics.devices {
                prop_assert!((device.bubble_fraction - expected_bubble).abs() < 1e-12);
                prop_assert_eq!(device.communication_wait_ns, 0);
                prop_assert_eq!(
                    device.peak_in_flight,
                    catalog_bound(generator, &schedule, 1, device.device as u32)
                );
            }
        }
    }

    #[test]
    fn random_stage_times_match_the_oracle(
        n_stages in 1usize..=16,
        n_chunks in 1u32..=64,
        seed_times in proptest::collection::vec((1u64..10_000, 1u64..10_000), 16),
    ) {
        let costs = StageCosts {
            forward_ns: seed_times[..n_stages].iter().map(|t| t.0).collect(),
            backward_ns: seed_times[..n_stages].iter().map(|t| t.1).collect(),
            weight_ns: seed_times[..n_stages].iter().map(|t| t.1 / 3).collect(),
            ..StageCosts::uniform(n_stages, 0, 0)
        };
        for generator in all_generators() {
            let schedule = generator.generate(n_stages as u32, n_chunks).unwrap();
            let trace = simulate_with(&schedule, &costs, None);
            assert_trace_respects_schedule(&schedule, &trace);
            // The library's checker (which `pipegnn run` holds every measured epoch to) agrees.
            let placement: Vec<usize> = (0..schedule.n_devices()).collect();
            let problems = report::order::violations(&schedule, &placement, &trace);
            prop_assert!(problems.is_empty(), "{:?}", problems);
            let metrics = report::compute(&trace);
            prop_assert_eq!(metrics.epoch_time_ns, oracle_makespan(&schedule, &costs));
            let busiest = (0..n_stages)
                .map(|s| u64::from(n_chunks) * (costs.forward_ns[s] + costs.backward_ns[s]))
                .max()
                .unwrap();
            prop_assert!(metrics.epoch_time_ns >= busiest);
        }
    }

    #[test]
    fn schedules_survive_a_file_round_trip(n_stages in 1u32..=16, n_chunks in 1u32..=64) {
        for generator in all_generators() {
            let schedule = generator.generate(n_stages, n_chunks).unwrap();
            if *schedule.flow() != DataFlow::PIPELINE {
                // Files hold plain pipelines; barriers and per-chunk steps are generator knobs.
                continue;
            }
            let doc = pipegnn::report::json::ScheduleDoc::new(&schedule, None);
            let text = serde_json::to_string(&doc).unwrap();
            let back = file::parse("round-trip.json", &text).unwrap();
            prop_assert_eq!(back, schedule);
        }
    }
}

#[test]
fn crafted_deadlock_names_the_ops_that_wait_on_each_other() {
    // Device 1 runs chunk 1 first, but chunk 1's activations leave device 0 only after B(0,0),
    // which needs the gradient of B(0,1), which device 1 issues after F(1,1).
    let text = "stages: 2\nchunks: 2\norders:\n  0: [[F,0,0],[B,0,0],[F,1,0],[B,1,0]]\n  1: [[F,1,1],[F,0,1],[B,0,1],[B,1,1]]\n";
    let schedule = file::parse("deadlock.yaml", text).unwrap();
    let err = check(&schedule).unwrap_err();
    let ScheduleError::Deadlock(deadlock) = &err else {
        panic!("expected a deadlock, got {err}")
    };
    let message = err.to_string();
    for op in ["F(1,1)", "F(1,0)", "B(0,0)", "B(0,1)"] {
        assert!(message.contains(op), "{op} missing from: {message}");
    }
    assert!(deadlock.0.len() >= 2);
    // Each op of the cycle waits for the next one's predecessor: the chain closes.
    for pair in deadlock.0.windows(2) {
        assert_eq!(pair[0].waits_for, pair[1].op);
    }
    assert_eq!(deadlock.0.last().unwrap().waits_for, deadlock.0[0].op);
}

#[test]
fn backward_before_its_forward_is_a_deadlock() {
    let text = "stages: 1\nchunks: 1\norders:\n  0: [[B,0,0],[F,0,0]]\n";
    let schedule = file::parse("b-first.yaml", text).unwrap();
    let message = check(&schedule).unwrap_err().to_string();
    assert!(
        message.contains("B(0,0) on device 0 waits for F(0,0) (needs its result)"),
        "{message}"
    );
}

#[test]
fn malformed_schedule_files_are_rejected_with_the_op() {
    let missing = "stages: 2\nchunks: 1\norders:\n  0: [[F,0,0],[B,0,0]]\n  1: [[F,0,1]]\n";
    let err = file::parse("m.yaml", missing).unwrap_err().to_string();
    assert!(err.contains("B(0,1) is missing"), "{err}");
    let split = "stages: 1\nchunks: 2\norders:\n  0: [[F,0,0],[B,0,0]]\n  1: [[F,1,0],[B,1,0]]\n";
    let err = file::parse("s.yaml", split).unwrap_err().to_string();
    assert!(
        err.contains("stage 0 has ops on device 0 and on device 1"),
        "{err}"
    );
    let bad_op = "stages: 1\nchunks: 1\norders:\n  0: [[F,0,0],[X,0,0]]\n";
    let err = file::parse("x.yaml", bad_op).unwrap_err().to_string();
    assert!(err.starts_with("x.yaml:4:"), "{err}");
    assert!(err.contains("orders.0[1]: unknown op `X`"), "{err}");
}

#[test]
fn one_f_one_b_matches_the_published_order() {
    // The order PyTorch's Schedule1F1B and Megatron-LM run for 2 stages and 4 micro-batches.
    let schedule = Generator::OneFOneB.generate(2, 4).unwrap();
    let doc =
        serde_json::to_value(pipegnn::report::json::ScheduleDoc::new(&schedule, None)).unwrap();
    let expected = serde_json::json!({
        "0": [["F",0,0],["F",1,0],["B",0,0],["F",2,0],["B",1,0],["F",3,0],["B",2,0],["B",3,0]],
        "1": [["F",0,1],["B",0,1],["F",1,1],["B",1,1],["F",2,1],["B",2,1],["F",3,1],["B",3,1]],
    });
    assert_eq!(doc["orders"], expected);
    let shipped =
        std::fs::read_to_string(crate::support::root().join("schedules/1f1b-s2-k4.yaml")).unwrap();
    assert_eq!(
        file::parse("schedules/1f1b-s2-k4.yaml", &shipped)
            .unwrap()
            .orders(),
        schedule.orders()
    );
}

#[test]
fn gnnpipe_exact_backward_with_1f1b_order_is_refused() {
    let knobs = GnnPipeKnobs {
        order: GnnPipeOrder::OneFOneB,
        backward: GnnPipeBackward::Exact,
        update: UpdateMode::PerEpoch,
    };
    let err = Generator::GnnPipe(knobs).generate(2, 4).unwrap_err();
    assert!(err.to_string().contains("needs order gpipe"), "{err}");
    let gpipe_order = GnnPipeKnobs {
        order: GnnPipeOrder::GPipe,
        ..knobs
    };
    assert!(check(&Generator::GnnPipe(gpipe_order).generate(2, 4).unwrap()).is_ok());
}

#[test]
fn the_trace_checker_finds_ops_out_of_order_and_before_their_data() {
    let schedule = Generator::OneFOneB.generate(2, 4).unwrap();
    let trace = simulate_with(&schedule, &StageCosts::uniform(2, 100, 200), None);
    let placement = vec![0, 1];
    assert!(report::order::violations(&schedule, &placement, &trace).is_empty());
    // F(1,1) moved to before F(1,0) has ended: it runs ahead of its data.
    let mut early = trace.clone();
    let span = early
        .spans
        .iter_mut()
        .find(|s| s.kind == SpanKind::Compute(OpKind::Forward) && s.chunk == 1 && s.stage == 1)
        .unwrap();
    let length = span.end_ns - span.start_ns;
    span.start_ns = 0;
    span.end_ns = length;
    let problems = report::order::violations(&schedule, &placement, &early);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("F(1,1) started at 0 ns, before the data of F(1,0)")),
        "{problems:?}"
    );
    // A missing op is reported.
    let mut missing = trace.clone();
    missing.spans.retain(|s| {
        !(s.kind == SpanKind::Compute(OpKind::Backward) && s.chunk == 3 && s.stage == 0)
    });
    let problems = report::order::violations(&schedule, &placement, &missing);
    assert!(
        problems.iter().any(|p| p == "B(3,0) did not run"),
        "{problems:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every kind of the catalog (GNNPipe aside, covered above), on up to 8 devices with up to
    /// 4 stages each and up to 64 chunks: the checker passes, every op of every chunk and stage
    /// runs once, the simulated epoch under random per-stage forward, input- and weight-gradient
    /// times equals the independent earliest-start oracle and respects every dependency, and
    /// each device's peak stash is exactly its documented bound.
    #[test]
    fn catalog_kinds_run_every_op_once_match_the_oracle_and_keep_their_stash_bounds(
        devices in 1u32..=8,
        per_device in 1u32..=4,
        n_chunks in 1u32..=64,
        times in proptest::collection::vec((1u64..5_000, 2u64..5_000, 1u64..100), 32),
    ) {
        use pipegnn::schedule::catalog::CATALOG;
        use pipegnn::schedule::StagePlacement;
        for entry in CATALOG.iter().filter(|e| !matches!(e.generator, None | Some(Generator::GnnPipe(_)))) {
            let generator = entry.generator.unwrap();
            let v = match generator.placement() {
                StagePlacement::OnePerDevice => 1,
                StagePlacement::V => 2,
                StagePlacement::RoundRobin => per_device,
            };
            let n_stages = devices * v;
            let schedule = match generator.generate_on(n_stages, v, n_chunks) {
                Ok(schedule) => schedule,
                Err(ScheduleError::Shape(why)) => {
                    // Only the shapes torch refuses too (tests/it/torch_orders.rs).
                    prop_assert!(why.contains("PyTorch refuses"), "{}: {}", entry.name, why);
                    continue;
                }
                Err(err) => return Err(TestCaseError::fail(format!("{}: {err}", entry.name))),
            };
            check(&schedule).map_err(|e| TestCaseError::fail(format!("{}: {e}", entry.name)))?;
            let split = schedule.orders().iter().flatten().filter(|op| op.kind == OpKind::WeightGrad).count();
            let pairs = (n_stages * n_chunks) as usize;
            prop_assert_eq!(schedule.n_ops(), 2 * pairs + split + n_stages as usize, "{}", entry.name);
            let stages = n_stages as usize;
            let costs = StageCosts {
                forward_ns: times[..stages].iter().map(|t| t.0).collect(),
                backward_ns: times[..stages].iter().map(|t| t.1).collect(),
                weight_ns: times[..stages].iter().map(|t| t.1 * t.2 / 100).collect(),
                ..StageCosts::uniform(stages, 0, 0)
            };
            let trace = simulate_with(&schedule, &costs, None);
            let placement: Vec<usize> = (0..schedule.n_devices()).collect();
            let problems = report::order::violations(&schedule, &placement, &trace);
            prop_assert!(problems.is_empty(), "{}: {:?}", entry.name, problems);
            let metrics = report::compute(&trace);
            prop_assert_eq!(metrics.epoch_time_ns, oracle_makespan(&schedule, &costs), "{}", entry.name);
            // The peaks counted from the trace are the ones `pipegnn::testing` counts from the
            // lists, and each is exactly the catalog's bound.
            let from_lists = testing::device_peaks(&schedule);
            for device in &metrics.devices {
                let bound = catalog_bound(generator, &schedule, v, device.device as u32);
                prop_assert_eq!(device.peak_in_flight, bound, "{} device {}", entry.name, device.device);
                prop_assert_eq!(from_lists[device.device], bound, "{} device {}", entry.name, device.device);
            }
        }
    }

    /// Interleaved 1F1B with uniform stage times and free links, K a multiple of P: the
    /// pipeline fills and drains once, `(P - 1)(F + B)`, against `v K (F + B)` of work per
    /// device, so the bubble is `(P - 1) / (v K)` of the ideal time (Narayanan et al. 2021).
    #[test]
    fn interleaved_1f1b_follows_its_closed_form(
        devices in 1u32..=8,
        per_device in 1u32..=4,
        rounds in 1u32..=8,
        forward_ns in 1u64..5_000,
        backward_ns in 1u64..5_000,
    ) {
        let n_chunks = devices * rounds;
        let schedule = Generator::Interleaved1F1B.generate_on(devices * per_device, per_device, n_chunks).unwrap();
        let costs = StageCosts::uniform((devices * per_device) as usize, forward_ns, backward_ns);
        let metrics = report::compute(&simulate_with(&schedule, &costs, None));
        let (p, v, k, op) = (u64::from(devices), u64::from(per_device), u64::from(n_chunks), forward_ns + backward_ns);
        prop_assert_eq!(metrics.epoch_time_ns, v * k * op + (p - 1) * op);
    }

    /// ZB-H1 (interleaved zero bubble with one stage per device), uniform times, free links,
    /// at least as many chunks as devices: the bubble is `(P - 1)(F + B - 2W)` (Qi et al.
    /// 2024), where 1F1B's is `(P - 1)(F + B)`, whenever the weight half is no longer than the
    /// forward and the input half (`W <= F` and `W <= B - W`).
    #[test]
    fn zb_h1_follows_its_closed_form(
        devices in 1u32..=8,
        extra_chunks in 0u32..=24,
        forward_ns in 1u64..5_000,
        backward_ns in 2u64..5_000,
        weight_percent in 0u64..=50,
    ) {
        let n_chunks = devices + extra_chunks;
        let weight_ns = (backward_ns * weight_percent / 100).min(forward_ns);
        // Shapes torch refuses (chunks not in whole rounds) are skipped.
        let Ok(schedule) = Generator::InterleavedZeroBubble.generate_on(devices, 1, n_chunks) else {
            return Ok(());
        };
        let costs = StageCosts {
            weight_ns: vec![weight_ns; devices as usize],
            ..StageCosts::uniform(devices as usize, forward_ns, backward_ns)
        };
        let metrics = report::compute(&simulate_with(&schedule, &costs, None));
        let (p, k) = (u64::from(devices), u64::from(n_chunks));
        prop_assert_eq!(
            metrics.epoch_time_ns,
            k * (forward_ns + backward_ns) + (p - 1) * (forward_ns + backward_ns - 2 * weight_ns)
        );
    }
}
