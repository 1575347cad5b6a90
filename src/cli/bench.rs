//! `pipegnn bench`: the simulator's speed on a large 1F1B schedule, as medians.

use std::time::Instant;

use super::run::{generate, CliError, ExitStatus};
use super::BenchArgs;
use crate::cost::ExplicitCost;
use crate::network::{Link, Network};
use crate::scenario::{ExplicitWorkload, Optimizer, StageWork, WorkUnit};
use crate::schedule::lower::Lowered;
use crate::schedule::{self, Generator};
use crate::sim::{simulate_events_into, simulate_into, takes_one_pass, SimError, SimInput};
use crate::trace::{CountingSink, Trace, TraceSource};

fn median_ns(mut samples: Vec<u128>) -> u128 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn time<T>(repeat: u32, mut f: impl FnMut() -> T) -> (u128, T) {
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..repeat.max(1) {
        // Drop the previous result before the clock starts.
        drop(last.take());
        let start = Instant::now();
        let result = f();
        samples.push(start.elapsed().as_nanos());
        last = Some(result);
    }
    (median_ns(samples), last.expect("repeat is at least 1"))
}

/// Runs the benchmark: a chain of devices with 100 GB/s links, 1 ms forwards, 2 ms backwards,
/// 16 MiB activations, so every hand-off is a real link transfer.
pub fn run(
    args: &BenchArgs,
    print: &mut dyn FnMut(&str) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let (stages, chunks) = (args.stages.max(1), args.chunks.max(1));
    let (gen_ns, schedule) = time(args.repeat, || {
        generate(Generator::OneFOneB, stages, chunks)
    });
    let schedule = schedule?;
    let (check_ns, check) = time(args.repeat, || schedule::check(&schedule));
    check.map_err(|e| CliError::new(ExitStatus::Internal, e))?;
    // What `simulate` and `plan` pay: one lowering shared by the check and the simulation.
    let (lower_ns, lowered) = time(args.repeat, || Lowered::new(&schedule));
    let (check_lowered_ns, check) =
        time(args.repeat, || schedule::check_lowered(&schedule, &lowered));
    check.map_err(|e| CliError::new(ExitStatus::Internal, e))?;
    let names: Vec<String> = (0..stages).map(|d| format!("dev{d}")).collect();
    let links = (1..stages as usize)
        .flat_map(|d| [(d - 1, d), (d, d - 1)])
        .map(|(from, to)| Link {
            from,
            to,
            bandwidth_bytes_per_s: 100e9,
            latency_ns: 1_000,
        })
        .collect();
    let network = Network::build(names, vec![], links)
        .map_err(|_| CliError::new(ExitStatus::Internal, "bench network is a connected chain"))?;
    let workload = ExplicitWorkload {
        per: WorkUnit::Chunk,
        stages: vec![
            StageWork {
                forward_ns: 1_000_000,
                backward_ns: 2_000_000,
                optimizer_ns: 0,
                activation_bytes: 16 << 20,
                stash_bytes: 16 << 20,
                parameter_bytes: 1 << 30,
            };
            stages as usize
        ],
    };
    let cost = ExplicitCost::new(&workload, chunks, Optimizer::Adam);
    let placement: Vec<usize> = (0..stages as usize).collect();
    let input = SimInput {
        schedule: &schedule,
        placement: &placement,
        cost: &cost,
        network: &network,
        compute_slots: None,
        lowered: Some(&lowered),
        contention: None,
    };
    // Both interpreters, interleaved in each repetition so that the machine's noise falls on
    // them alike: the one pass this schedule takes (each chain link carries one sender's
    // hand-offs), and the event loop it would take were a link shared.
    if !takes_one_pass(&input) {
        return Err(CliError::new(
            ExitStatus::Internal,
            "the bench's chain no longer takes the one pass",
        ));
    }
    let trace = || {
        Trace::with_capacity(
            TraceSource::Predicted,
            Vec::new(),
            Vec::new(),
            (stages, chunks),
            schedule.n_ops(),
        )
    };
    let internal = |e: SimError| CliError::new(ExitStatus::Internal, e);
    let mut samples = [const { Vec::new() }; 4];
    let mut counts = Vec::new();
    for _ in 0..args.repeat.max(1) {
        for (i, one_pass) in [true, false].into_iter().enumerate() {
            let simulate = |run: &mut dyn FnMut() -> Result<(), SimError>| {
                let start = Instant::now();
                run().map(|()| start.elapsed().as_nanos())
            };
            let mut counted = CountingSink::default();
            samples[i].push(
                simulate(&mut || match one_pass {
                    true => simulate_into(&input, &mut counted),
                    false => simulate_events_into(&input, &mut counted),
                })
                .map_err(internal)?,
            );
            counts.push(counted);
            let mut traced = trace();
            samples[2 + i].push(
                simulate(&mut || match one_pass {
                    true => simulate_into(&input, &mut traced),
                    false => simulate_events_into(&input, &mut traced),
                })
                .map_err(internal)?,
            );
            // Freeing the trace is not simulation: it is dropped after the clock stops.
            drop(traced);
        }
    }
    if counts.windows(2).any(|pair| pair[0] != pair[1]) {
        return Err(CliError::new(
            ExitStatus::Internal,
            "the one pass and the event loop recorded different counts",
        ));
    }
    let counted = counts[0];
    let ratios = |fast: usize, slow: usize| -> f64 {
        let mut ratios: Vec<f64> = samples[slow]
            .iter()
            .zip(&samples[fast])
            .map(|(&s, &f)| s as f64 / f.max(1) as f64)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let (count_ratio, trace_ratio) = (ratios(0, 1), ratios(2, 3));
    let [count_ns, events_count_ns, trace_ns, events_trace_ns] = samples.map(median_ns);
    let ops = schedule.n_ops() as f64;
    let rate = |ns: u128| ops / (ns as f64 / 1e9) / 1e6;
    let ms = |ns: u128| ns as f64 / 1e6;
    print(&format!(
        "1f1b, {stages} stages x {chunks} chunks: {} ops, {} spans, {} memory events; median of {} runs\n\
         generate           {:>9.2} ms\n\
         check              {:>9.2} ms  (lowering included)\n\
         lower              {:>9.2} ms  (shared by the check and the simulation below)\n\
         check (lowered)    {:>9.2} ms\n\
         simulate (count)   {:>9.2} ms  {:>6.2} M ops/s  (one pass)\n\
         simulate (trace)   {:>9.2} ms  {:>6.2} M ops/s  (one pass)\n\
         event loop (count) {:>9.2} ms  {:>6.2} M ops/s  (one pass {:.2}x faster, median ratio)\n\
         event loop (trace) {:>9.2} ms  {:>6.2} M ops/s  (one pass {:.2}x faster)\n",
        schedule.n_ops(),
        counted.spans,
        counted.memory_events,
        args.repeat.max(1),
        ms(gen_ns),
        ms(check_ns),
        ms(lower_ns),
        ms(check_lowered_ns),
        ms(count_ns),
        rate(count_ns),
        ms(trace_ns),
        rate(trace_ns),
        ms(events_count_ns),
        rate(events_count_ns),
        count_ratio,
        ms(events_trace_ns),
        rate(events_trace_ns),
        trace_ratio,
    ))
}
