//! From a scenario to a real run: predict its own schedule, open the devices (predicting again
//! when stages must share a GPU), refuse a schedule predicted not to fit, turn the prediction's
//! layout into the executor's input, train, and hold every measured epoch to the schedule.
//!
//! The command line's `run`, `compare`, `calibrate` and `fidelity` call it, and so do tests: a
//! run is built here, not in `cli`, which only reads the files and maps [`LaunchError`] to exit
//! codes.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipegnn::{launch, plan, scenario};
//! let text = "name: tiny
//! graph:
//!   synthetic: {kind: sbm, nodes: 200, avg_degree: 4, classes: 2, features: 8, seed: 1}
//! model:
//!   layers: [{kind: gcn, out: 8}, {kind: gcn, out: 2}]
//! training: {epochs: 2}
//! devices: [{name: cpu, count: 2, preset: cpu-core}]
//! links: {topology: {kind: full, bandwidth: 10GB/s, latency: 1us}}
//! schedule: {kind: gpipe, chunks: 2}
//! ";
//! let scenario = scenario::parse_scenario("tiny.yaml", text, &[], ".".as_ref())?;
//! let scenario::Workload::Gnn(spec) = &scenario.workload else { unreachable!() };
//! let graph = plan::prepare_graph(spec, None)?;
//! let candidate = plan::own_candidate(&scenario, None)?;
//! let run = launch::run(scenario, Some(&graph), &candidate, &launch::Options::default())?;
//! assert_eq!(run.result.epochs.len(), 2);
//! # Ok(())
//! # }
//! ```

use thiserror::Error;

use crate::diag::{Diagnostic, Diagnostics, FieldPath};
use crate::exec::data::NodeData;
use crate::exec::device::Compute;
use crate::exec::transport::links::Links;
use crate::exec::transport::Transport;
use crate::exec::{self, CrossChunk, ExecError, ExecInput, Progress, RunResult, TrainConfig};
use crate::gnn::Halo;
use crate::graph::Csr;
use crate::plan::{self, Candidate, GraphData, PlanError, Prediction, Tier};
use crate::report;
use crate::scenario::{Activation, Backend, DeviceMap, GraphSource, Scenario, Workload};
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::{Generator, GnnPipeBackward};

/// Why a run could not be built or did not complete.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The scenario's schedule could not be predicted.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The devices cannot be opened: a build without CUDA, no GPU, too few, or a device map
    /// the backend does not have.
    #[error("{0}")]
    Devices(ExecError),
    /// A device's predicted peak memory exceeds its capacity: one problem per device (or GPU
    /// shared by stages), each pointing at its entry in the scenario.
    #[error("{0}")]
    DoesNotFit(Diagnostics),
    /// The scenario names no training vertices.
    #[error("{0}")]
    NothingToTrain(Box<Diagnostic>),
    /// The run failed, or the scenario asks for something the executor cannot run.
    #[error("{0}")]
    Run(ExecError),
    /// A measured epoch departed from the schedule (a bug in the executor).
    #[error(
        "epoch {epoch} did not run the schedule as written ({problems} problems), first: {first}"
    )]
    Order {
        /// The epoch, from 1.
        epoch: usize,
        /// How many problems `report::order` found.
        problems: usize,
        /// The first of them.
        first: String,
    },
}

/// How to launch a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// Epochs to run instead of the scenario's `training.epochs`.
    pub epochs: Option<u32>,
    /// Run even when the prediction says it does not fit.
    pub force: bool,
    /// Where the prediction's op times and memory come from.
    pub tier: Tier<'a>,
    /// The backend instead of the scenario's `executor.backend`.
    pub backend: Option<Backend>,
    /// The cores of the machine whose threads the workers are (the in-process transport):
    /// `executor.cores` of a CPU run that does not give it, so that the prediction shares
    /// them as the run will.
    pub host_cores: Option<u32>,
    /// The devices, opened by the caller (one rank's GPU, `exec::device::open_rank`, for a
    /// run between processes); otherwise they are opened from the scenario.
    pub compute: Option<&'a Compute>,
}

/// A run ready to start: the scenario (its device map as the devices were opened), the
/// prediction it was planned from, its devices, and the executor's input.
pub struct Prepared<'g> {
    /// The scenario.
    pub scenario: Scenario,
    /// The prediction of its own schedule on the devices as opened.
    pub prediction: Prediction,
    /// The devices the workers compute on.
    pub compute: Compute,
    graph: &'g Csr,
    halo: Halo,
    cross_chunk: CrossChunk,
    replication: Option<u32>,
    data: NodeData,
    config: TrainConfig,
    threads_per_device: usize,
}

/// A real run with the prediction it was planned from.
pub struct Executed {
    /// The scenario as it ran.
    pub scenario: Scenario,
    /// The prediction of its schedule.
    pub prediction: Prediction,
    /// Losses, accuracies and measured traces.
    pub result: RunResult,
    /// Metrics of every epoch's measured trace.
    pub metrics_of: Vec<report::Metrics>,
    /// The epoch whose time is the median (the first, a warm-up, left out when there are
    /// others).
    pub median: usize,
    /// Where it ran.
    pub executor: String,
}

/// Plans `candidate` (the scenario's own schedule) on `graph` with `options.tier`'s costs and
/// runs it, without progress display: [`prepare`] then [`execute`].
pub fn run(
    scenario: Scenario,
    graph: Option<&GraphData>,
    candidate: &Candidate,
    options: &Options<'_>,
) -> Result<Executed, LaunchError> {
    execute(prepare(scenario, graph, candidate, options)?, None)
}

/// Predicts `candidate` for the scenario, opens its devices and builds the executor's input:
/// everything before the first epoch.
pub fn prepare<'g>(
    mut scenario: Scenario,
    graph: Option<&'g GraphData>,
    candidate: &Candidate,
    options: &Options<'_>,
) -> Result<Prepared<'g>, LaunchError> {
    let mut replication = None;
    if let Candidate::GraphParallel { algorithm, .. } = candidate {
        match algorithm {
            GraphAlgorithm::OneD => {}
            GraphAlgorithm::OneHalfD { replication: c } => {
                let attends = match &scenario.workload {
                    Workload::Gnn(spec) => spec
                        .layers
                        .iter()
                        .any(|l| matches!(l.kind, crate::scenario::LayerKindSpec::Gat { .. })),
                    Workload::Explicit(_) => false,
                };
                if attends {
                    return Err(LaunchError::Run(ExecError::Unsupported(
                        "pipegnn run trains graph parallelism's 1.5d on GCN and GraphSAGE layers: GAT's softmax over a row's neighbours does not split by column blocks (1d trains it)".into(),
                    )));
                }
                replication = Some(*c);
            }
            // The simulator plays 2D and 3D out; the executor's graph-parallel workers
            // multiply block rows, whole or by column blocks.
            _ => {
                return Err(LaunchError::Run(ExecError::Unsupported(format!(
                    "pipegnn run trains graph parallelism's 1d and 1.5d algorithms; `algorithm: {}` is simulated (use simulate or plan)",
                    algorithm.name()
                ))));
            }
        }
    }
    if let Some(backend) = options.backend {
        scenario.executor.backend = backend;
    }
    if scenario.executor.backend == Backend::Cpu && scenario.executor.cores.is_none() {
        scenario.executor.cores = options.host_cores;
    }
    let tier = options.tier;
    let mut prediction = plan::predict_profiled(&scenario, graph, candidate, tier)?;
    // The devices come first: `device_map: auto` on a machine with fewer GPUs than stages runs
    // them on one, and the prediction must model that sharing.
    let compute = match options.compute {
        Some(compute) => compute.clone(),
        None => exec::device::open(
            scenario.executor.backend,
            scenario.executor.device_map,
            prediction.schedule.n_devices(),
        )
        .map_err(LaunchError::Devices)?,
    };
    if compute.is_shared() && scenario.executor.device_map != DeviceMap::Shared {
        scenario.executor.device_map = DeviceMap::Shared;
        prediction = plan::predict_profiled(&scenario, graph, candidate, tier)?;
    }
    if scenario.executor.backend == Backend::Cpu {
        let devices = prediction.schedule.n_devices();
        if let (Some(slots), Some(cores)) = (
            plan::compute_slots(&scenario, devices),
            scenario.executor.cores,
        ) {
            prediction.cost_tier.push_str(&format!(
                "; {devices} devices' threads share {cores} core{}: {slots} op{} at a time, first come first served",
                if cores == 1 { "" } else { "s" },
                if slots == 1 { "" } else { "s" },
            ));
        }
    }
    if !options.force {
        let metrics = report::compute(&prediction.trace);
        let over: Vec<Diagnostic> = plan::fit::overflows(&scenario, &metrics)
            .into_iter()
            .map(|over| over.diagnostic(&scenario, &prediction.label))
            .collect();
        if !over.is_empty() {
            return Err(LaunchError::DoesNotFit(Diagnostics(over)));
        }
    }
    let (
        Some(GraphData::Real {
            csr,
            features,
            sparse_features,
            labels,
            splits,
            classes,
            ..
        }),
        Some(layout),
    ) = (graph, &prediction.layout)
    else {
        return Err(LaunchError::Run(ExecError::Unsupported(
            "pipegnn run trains a GNN on a graph with vertices: a dataset or a synthetic graph"
                .into(),
        )));
    };
    if splits[0].is_empty() {
        // Training on no vertices would report a loss of 0 for every epoch.
        let source = match &scenario.workload {
            Workload::Gnn(spec) => match &spec.graph {
                GraphSource::Dataset { .. } => "dataset",
                GraphSource::Ogb { .. } => "ogb",
                _ => "synthetic",
            },
            Workload::Explicit(_) => "synthetic",
        };
        let at = FieldPath::root().key("graph").key(source);
        let diag = scenario.source.diagnostic(
            at,
            format!(
                "the training split is empty ({} vertices): there is nothing to train on",
                csr.n_nodes()
            ),
        );
        return Err(LaunchError::NothingToTrain(Box::new(diag)));
    }
    let (halo, cross_chunk) = halo_rule(candidate);
    assert!(layout.part.is_some(), "graphs with edges are partitioned");
    let density = match &scenario.workload {
        Workload::Gnn(spec) => match &spec.graph {
            GraphSource::Dataset {
                feature_density, ..
            } => feature_density.unwrap_or(0.1),
            _ => 0.1,
        },
        Workload::Explicit(_) => 0.1,
    };
    let data = NodeData::new(
        csr.n_nodes(),
        sparse_features.as_ref(),
        *features as usize,
        density,
        labels.clone(),
        *classes as usize,
        splits.clone(),
    );
    let training = scenario.training;
    let config = TrainConfig {
        epochs: options.epochs.unwrap_or(training.epochs),
        lr: training.lr,
        weight_decay: training.weight_decay,
        dropout: training.dropout,
        attention_dropout: training.attention_dropout,
        activation: match &scenario.workload {
            Workload::Gnn(spec) => spec.activation,
            Workload::Explicit(_) => Activation::Relu,
        },
        seed: training.seed,
    };
    // One core per stage, the device the `cpu-core` preset describes, when the machine has
    // enough of them; the whole machine for a single stage.
    let threads_per_device = scenario.executor.threads_per_device.map_or_else(
        || {
            (std::thread::available_parallelism().map_or(1, |n| n.get())
                / prediction.schedule.n_devices().max(1))
            .max(1)
        },
        |n| n as usize,
    );
    Ok(Prepared {
        scenario,
        prediction,
        compute,
        graph: csr,
        halo,
        cross_chunk,
        replication,
        data,
        config,
        threads_per_device,
    })
}

/// The halo rule a candidate's chunks follow, and GNNPipe's cross-chunk gradients.
fn halo_rule(candidate: &Candidate) -> (Halo, CrossChunk) {
    match candidate {
        Candidate::Generated {
            generator, halo, ..
        } => (
            *halo,
            match generator {
                Generator::GnnPipe(knobs) => match knobs.backward {
                    GnnPipeBackward::Drop => CrossChunk::Drop,
                    GnnPipeBackward::Deferred => CrossChunk::Deferred,
                    GnnPipeBackward::Exact => CrossChunk::Exact,
                },
                _ => CrossChunk::Drop,
            },
        ),
        Candidate::GraphParallel { exchange, .. } => (
            match exchange {
                Halo::Broadcast => Halo::Broadcast,
                _ => Halo::Exchange,
            },
            CrossChunk::Drop,
        ),
        Candidate::File { halo, .. } => (*halo, CrossChunk::Drop),
    }
}

impl Prepared<'_> {
    /// Epochs the run will train.
    pub fn epochs(&self) -> u32 {
        self.config.epochs
    }

    /// A fingerprint of everything the run reads (`ExecInput::fingerprint`), for ranks in other
    /// processes to compare.
    pub fn fingerprint(&self) -> u64 {
        self.input(None).fingerprint()
    }

    /// The network the run's transfers cross, with its placement, for a transport.
    pub fn links(&self) -> Links<'_> {
        Links {
            network: &self.scenario.network,
            placement: &self.prediction.placement,
            emulate: self.scenario.executor.emulate_links,
        }
    }

    /// The executor's input, calling `progress` after every epoch.
    pub fn input<'a>(&'a self, progress: Option<&'a Progress<'a>>) -> ExecInput<'a> {
        let layout = self
            .prediction
            .layout
            .as_ref()
            .expect("a prepared run has a layout");
        ExecInput {
            schedule: &self.prediction.schedule,
            placement: &self.prediction.placement,
            devices: plan::trace_devices(&self.scenario),
            network: &self.scenario.network,
            model: &layout.model,
            stage_layers: &layout.stage_layers,
            graph: self.graph,
            part: layout
                .part
                .as_deref()
                .expect("graphs with edges are partitioned"),
            halo: self.halo,
            cross_chunk: self.cross_chunk,
            replication: self.replication,
            data: &self.data,
            config: self.config,
            compute: &self.compute,
            threads_per_device: self.threads_per_device,
            emulate_links: self.scenario.executor.emulate_links,
            compute_slots: (self.scenario.executor.backend == Backend::Cpu)
                .then(|| plan::compute_slots(&self.scenario, self.prediction.schedule.n_devices()))
                .flatten(),
            progress,
        }
    }
}

/// Trains a prepared run, calling `progress` after every epoch, and holds every measured epoch
/// to the schedule (`report::order`): the executor's contract.
pub fn execute(
    prepared: Prepared<'_>,
    progress: Option<&Progress<'_>>,
) -> Result<Executed, LaunchError> {
    let result = exec::run(&prepared.input(progress)).map_err(LaunchError::Run)?;
    finish(prepared, result)
}

/// Trains this process's rank of a prepared run between processes over `transport` (one rank
/// per schedule device; `exec::run_rank`), whose endpoint may borrow the run's
/// [`Prepared::links`]: on rank 0 the run, for [`finish`], on the other ranks `None`.
pub fn run_rank<T: Transport>(
    prepared: &Prepared<'_>,
    progress: Option<&Progress<'_>>,
    transport: T,
) -> Result<Option<RunResult>, LaunchError> {
    exec::run_rank(&prepared.input(progress), transport).map_err(LaunchError::Run)
}

/// Holds every measured epoch of `result` to the schedule, as [`execute`] does, and picks the
/// median epoch.
pub fn finish(prepared: Prepared<'_>, result: RunResult) -> Result<Executed, LaunchError> {
    // The epoch whose time is the median of the timed ones stands for the run.
    let skip = result.traces.len() - result.timed_traces().len();
    let mut order: Vec<usize> = (skip..result.traces.len()).collect();
    let metrics_of: Vec<report::Metrics> = result.traces.iter().map(report::compute).collect();
    order.sort_by_key(|&i| metrics_of[i].epoch_time_ns);
    let median = order[order.len() / 2];
    let executor = prepared.compute.describe_with_memory();
    Ok(Executed {
        scenario: prepared.scenario,
        prediction: prepared.prediction,
        result,
        metrics_of,
        median,
        executor,
    })
}
