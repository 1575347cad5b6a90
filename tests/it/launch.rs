//! Runs built through the library (`pipegnn::launch`), without the binary: they train exactly
//! as `pipegnn run` does, and every transfer the executor measures is a hand-off
//! `schedule::lower` lists, for pipelines and graph parallelism alike.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use pipegnn::exec::transport::channel::ChannelTransport;
use pipegnn::exec::transport::{Received, Tag, Transport};
use pipegnn::launch::{self, Executed, LaunchError, Options};
use pipegnn::plan;
use pipegnn::scenario::{self, Workload};
use pipegnn::schedule::lower::{Lowered, Payload};
use pipegnn::schedule::Op;
use pipegnn::trace::{Span, SpanKind};
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

/// `text` parsed, its graph prepared and its own schedule chosen.
fn planned(text: &str) -> (scenario::Scenario, plan::GraphData, plan::Candidate) {
    let scenario = scenario::parse_scenario("tiny.yaml", text, &[], Path::new("."))
        .unwrap_or_else(|d| panic!("{d}"));
    let Workload::Gnn(spec) = &scenario.workload else {
        panic!("a GNN scenario")
    };
    let graph = plan::prepare_graph(spec, None).unwrap();
    let candidate = plan::own_candidate(&scenario, None).unwrap();
    (scenario, graph, candidate)
}

/// Plans and runs `text` through the library.
fn run(text: &str, options: &Options<'_>) -> Result<Executed, LaunchError> {
    let (scenario, graph, candidate) = planned(text);
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

/// Ranks that act as processes of their own: the in-process transport, each rank with its own
/// coordinator (`launch::run_rank`), meeting through the transport's barrier and reporting to
/// rank 0 through a channel, so the coordination of a run between processes is tested without
/// MPI.
struct Apart<'a> {
    inner: ChannelTransport<'a>,
    to_root: Sender<(usize, Vec<u8>)>,
    at_root: Option<Receiver<(usize, Vec<u8>)>>,
}

impl Transport for Apart<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn n_ranks(&self) -> usize {
        self.inner.n_ranks()
    }

    fn send(
        &mut self,
        to: usize,
        tag: Tag,
        tensor: &Tensor,
        epoch_start: Instant,
    ) -> candle_core::Result<Vec<Span>> {
        self.inner.send(to, tag, tensor, epoch_start)
    }

    fn try_recv(&mut self) -> candle_core::Result<Option<Received>> {
        self.inner.try_recv()
    }

    fn recv_timeout(&mut self, timeout: Duration) -> candle_core::Result<Option<Received>> {
        self.inner.recv_timeout(timeout)
    }

    fn barrier(&mut self) -> candle_core::Result<()> {
        self.inner.barrier()
    }

    fn start_all_reduce(
        &mut self,
        group: &[usize],
        tensors: Vec<Tensor>,
    ) -> candle_core::Result<()> {
        self.inner.start_all_reduce(group, tensors)
    }

    fn finish_all_reduce(&mut self, device: &Device) -> candle_core::Result<Vec<Tensor>> {
        self.inner.finish_all_reduce(device)
    }

    fn abort(&self) {
        self.inner.abort()
    }

    fn across_processes(&self) -> bool {
        true
    }

    fn gather(&mut self, bytes: Vec<u8>) -> candle_core::Result<Option<Vec<Vec<u8>>>> {
        let Some(at_root) = &self.at_root else {
            self.to_root.send((self.rank(), bytes)).unwrap();
            return Ok(None);
        };
        let mut all = vec![(0, bytes)];
        all.extend((1..self.n_ranks()).map(|_| at_root.recv().unwrap()));
        all.sort_by_key(|(rank, _)| *rank);
        Ok(Some(all.into_iter().map(|(_, bytes)| bytes).collect()))
    }
}

/// Issue 13: a run whose ranks coordinate as processes do (each its own coordinator, reports
/// encoded and gathered to rank 0) trains to the bit as the in-process run, and only rank 0
/// returns the run, held to the schedule's order.
#[test]
fn ranks_coordinating_as_processes_train_as_one_process() {
    for schedule in SCHEDULES {
        let text = tiny(schedule);
        let one = run(&text, &Options::default()).unwrap();
        let scenario = scenario::parse_scenario("tiny.yaml", &text, &[], Path::new("."))
            .unwrap_or_else(|d| panic!("{d}"));
        let Workload::Gnn(spec) = &scenario.workload else {
            panic!("a GNN scenario")
        };
        let graph = plan::prepare_graph(spec, None).unwrap();
        let candidate = plan::own_candidate(&scenario, None).unwrap();
        let prepared =
            launch::prepare(scenario, Some(&graph), &candidate, &Options::default()).unwrap();
        let n = prepared.prediction.schedule.n_devices();
        let (to_root, at_root) = channel();
        let mut at_root = Some(at_root);
        let stop = Arc::new(AtomicBool::new(false));
        let ranks: Vec<Apart<'_>> = ChannelTransport::mesh(n, prepared.links(), stop)
            .into_iter()
            .map(|inner| Apart {
                at_root: if inner.rank() == 0 {
                    at_root.take()
                } else {
                    None
                },
                inner,
                to_root: to_root.clone(),
            })
            .collect();
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|rank| scope.spawn(|| launch::run_rank(&prepared, None, rank)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut results = results.into_iter();
        let root = results
            .next()
            .unwrap()
            .unwrap()
            .expect("rank 0 returns the run");
        assert!(results.all(|r| r.unwrap().is_none()), "{schedule}");
        assert!(root.clock_skew_ns.iter().all(|&s| s > 0), "{schedule}");
        let apart = launch::finish(prepared, root).unwrap();
        let losses = |e: &Executed| e.result.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
        assert_eq!(losses(&apart), losses(&one), "{schedule}");
        assert_eq!(apart.result.traces.len(), one.result.traces.len());
        let spans = |e: &Executed| e.result.traces.iter().map(|t| t.spans.len()).sum::<usize>();
        assert_eq!(spans(&apart), spans(&one), "{schedule}");
    }
}

/// A run's workers are threads of one process: `host_cores` becomes `executor.cores` when the
/// scenario gives none, and the prediction then shares them; a scenario's own value stands.
#[test]
fn a_run_on_fewer_cores_than_threads_is_predicted_taking_turns() {
    let prepare = |text: &str, host_cores: Option<u32>| {
        let (scenario, graph, candidate) = planned(text);
        let options = Options {
            host_cores,
            ..Options::default()
        };
        let prepared = launch::prepare(scenario, Some(&graph), &candidate, &options).unwrap();
        let metrics = pipegnn::report::compute(&prepared.prediction.trace);
        let busy: u64 = metrics.devices.iter().map(|d| d.busy_ns).sum();
        (
            prepared.scenario.executor.cores,
            metrics.epoch_time_ns,
            busy,
        )
    };
    let text = tiny("{kind: gpipe, chunks: 3}");
    let (cores, own, busy) = prepare(&text, None);
    assert_eq!(cores, None);
    assert!(
        own < busy,
        "two devices of their own overlap: {own} vs {busy}"
    );
    // Two workers of one thread on one core: one op at a time.
    let (cores, one, _) = prepare(&text, Some(1));
    assert_eq!(cores, Some(1));
    assert!(one >= busy, "{one} vs {busy}");
    // Enough cores: as if each had its own.
    assert_eq!(prepare(&text, Some(2)).1, own);
    // The scenario's own count stands.
    let given = text.replace("threads_per_device: 1}", "threads_per_device: 1, cores: 2}");
    assert_eq!(prepare(&given, Some(1)), (Some(2), own, busy));
}
