//! Runs built through the library (`pipegnn::launch`), without the binary: they train exactly
//! as `pipegnn run` does, and every transfer the executor measures is a hand-off
//! `schedule::lower` lists, for pipelines and graph parallelism alike.

use std::path::Path;

use pipegnn::launch::{self, Executed, LaunchError, Options};
use pipegnn::plan;
use pipegnn::scenario::{self, Workload};
use pipegnn::schedule::lower::{Lowered, Payload};
use pipegnn::schedule::Op;
use pipegnn::trace::SpanKind;
use serde_json::Value;

use crate::support::{pipegnn, scratch, stderr, stdout, write};

/// A two-layer GCN on a small synthetic graph over two CPU devices, run with `schedule`.
fn tiny(schedule: &str) -> String {
    format!(
        "# test\nname: tiny\ngraph:\n  synthetic: {{kind: sbm, nodes: 240, avg_degree: 5, classes: 3, features: 12, seed: 3}}\nmodel:\n  layers: [{{kind: gcn, out: 8}}, {{kind: sage, out: 8}}, {{kind: gcn, out: 3}}]\ntraining: {{epochs: 3, dropout: 0.5, seed: 5}}\ndevices:\n  - {{name: cpu, count: 2, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\nexecutor: {{threads_per_device: 1}}\nschedule: {schedule}\n"
    )
}

/// The schedules the tests run: every worker, every gate and exchange.
const SCHEDULES: [&str; 7] = [
    "{kind: gpipe, chunks: 3}",
    "{kind: gpipe, chunks: 3, halo: exact}",
    "{kind: 1f1b, chunks: 4}",
    "{kind: gnnpipe, chunks: 3, backward: exact}",
    "{kind: gnnpipe, chunks: 3, backward: deferred}",
    "{kind: graph_parallel, exchange: halo}",
    "{kind: graph_parallel, exchange: broadcast}",
];

/// The `"loss"` figures of `pipegnn run --format json`'s output, read from the text: serde_json
/// reads floats to within a unit in the last place, and the losses must be equal to the bit.
fn losses_of(json: &str) -> Vec<f64> {
    json.split("\"loss\": ")
        .skip(1)
        .map(|rest| {
            let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
            rest[..end].trim().parse().unwrap()
        })
        .collect()
}

/// Plans and runs `text` through the library.
fn run(text: &str, options: &Options<'_>) -> Result<Executed, LaunchError> {
    let scenario = scenario::parse_scenario("tiny.yaml", text, &[], Path::new("."))
        .unwrap_or_else(|d| panic!("{d}"));
    let Workload::Gnn(spec) = &scenario.workload else {
        panic!("a GNN scenario")
    };
    let graph = plan::prepare_graph(spec, None).unwrap();
    let candidate = plan::own_candidate(&scenario, None).unwrap();
    launch::run(scenario, Some(&graph), &candidate, options)
}

#[test]
fn a_run_built_by_the_library_trains_as_the_command_line_does() {
    let dir = scratch("launch-same-losses");
    for (i, schedule) in SCHEDULES.iter().enumerate() {
        let text = tiny(schedule);
        let path = write(&dir, &format!("tiny{i}.yaml"), &text);
        let out = pipegnn(&["run", path.to_str().unwrap(), "--format", "json"]);
        assert!(out.status.success(), "{schedule}: {}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cli = losses_of(&stdout(&out));
        let library = run(&text, &Options::default()).unwrap();
        let losses: Vec<f64> = library.result.epochs.iter().map(|e| e.loss).collect();
        assert_eq!(losses.len(), 3, "{schedule}");
        assert_eq!(cli, losses, "{schedule}");
        assert_eq!(
            doc["results"][0]["schedule"], library.prediction.label,
            "{schedule}"
        );
    }
}

/// The hand-offs of `run`'s schedule that cross devices, as (payload, sending schedule device,
/// receiving op), against the first hop of every transfer each measured epoch recorded.
#[test]
fn every_transfer_the_executor_makes_is_a_handoff_of_the_lowering() {
    for schedule in SCHEDULES {
        let run = run(&tiny(schedule), &Options::default()).unwrap();
        let (plan, placement) = (&run.prediction.schedule, &run.prediction.placement);
        let lowered = Lowered::new(plan);
        let mut expected: Vec<(Payload, usize, Op)> = Vec::new();
        for from in 0..lowered.ops().len() as u32 {
            for &release in lowered.releases(from) {
                let Some(handoff) = lowered.handoff(from, release) else {
                    continue;
                };
                let (sender, receiver) = (lowered.device_of(from), plan.device_of(handoff.to));
                if placement[sender] != placement[receiver] {
                    expected.push((handoff.payload, sender, handoff.to));
                }
            }
        }
        expected.sort();
        assert!(!expected.is_empty(), "{schedule}");
        for (epoch, trace) in run.result.traces.iter().enumerate() {
            let device_of = |name: &str| {
                let network = trace.devices.iter().position(|d| d.name == name).unwrap();
                placement.iter().position(|&p| p == network).unwrap()
            };
            let mut measured: Vec<(Payload, usize, Op)> = trace
                .spans
                .iter()
                .filter(|s| s.hop == 0)
                .filter_map(|s| match s.kind {
                    SpanKind::Transfer(payload) => {
                        let to = Op {
                            kind: match payload {
                                Payload::Activation => pipegnn::schedule::OpKind::Forward,
                                Payload::Gradient => pipegnn::schedule::OpKind::Backward,
                                Payload::Weights => pipegnn::schedule::OpKind::Optimizer,
                            },
                            chunk: s.chunk,
                            stage: s.stage,
                        };
                        let from = device_of(&trace.links[s.lane_index as usize].from);
                        Some((payload, from, to))
                    }
                    SpanKind::Compute(_) => None,
                })
                .collect();
            measured.sort();
            assert_eq!(measured, expected, "{schedule}, epoch {}", epoch + 1);
        }
    }
}

#[test]
fn the_library_refuses_a_run_predicted_not_to_fit_unless_forced() {
    let text = tiny(SCHEDULES[0]).replace("preset: cpu-core}", "preset: cpu-core, memory: 1KiB}");
    let Err(LaunchError::DoesNotFit(over)) = run(&text, &Options::default()) else {
        panic!("1 KiB devices do not fit")
    };
    assert!(!over.0.is_empty());
    assert!(over.to_string().contains("devices[0].memory"), "{over}");
    // Forced, it runs anyway.
    let forced = Options {
        force: true,
        epochs: Some(1),
        ..Options::default()
    };
    let run = run(&text, &forced).unwrap();
    assert_eq!(run.result.epochs.len(), 1);
}
