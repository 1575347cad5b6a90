//! The planner's search space and ranking: which configurations `pipegnn plan` tries, and how
//! their predictions rank.
//!
//! Pure: the caller evaluates each [`PlanPoint`] (by applying [`PlanPoint::overrides`] to the
//! scenario and predicting) and hands the [`Evaluation`]s back to [`rank`]. Points that cannot
//! be valid or cannot fit are pruned first ([`prune`]), without building their schedules: a
//! pipeline over more stages than the model has layers, a grid that the device count does not
//! make, or a per-device memory lower bound ([`MemoryFloor`]) above every device's capacity.
//!
//! On a cluster the device counts are whole nodes ([`device_counts`]): 1, 2, 4, ... up to a
//! node, then multiples of the node.

use super::fit::{self, Overflow};
use super::gnn::{resolve_model, GraphData};
use super::Prediction;
use crate::gnn::GnnModel;
use crate::report::Metrics;
use crate::scenario::{Scenario, Workload};
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::{catalog, StagePlacement};

/// The most halo hand-offs (layers x chunks x partitions², every partition reading every other)
/// a hybrid point of a search may have: about a quarter of a second to simulate each, so a
/// search over hundreds of device counts stays within seconds. Larger ones are pruned and
/// counted; `simulate` runs any of them alone.
pub const MAX_HYBRID_HANDOFFS: u64 = 1 << 17;

/// Models with at most this many layers get every contiguous stage split tried, not only `auto`.
pub const MAX_LAYERS_FOR_SPLITS: usize = 8;

/// How a point splits the layers into stages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    /// An explicit workload: its stages are the workload's, left as they are.
    Workload,
    /// Graph parallelism: every layer on every device (`schedule.stages` cleared).
    None,
    /// `schedule.stages: auto`.
    Auto,
    /// Layers per stage.
    Layers(Vec<usize>),
}

impl Split {
    /// `auto`, `1+2+1`, or `-` for workloads and graph parallelism.
    pub fn label(&self) -> String {
        match self {
            Split::Workload | Split::None => "-".into(),
            Split::Auto => "auto".into(),
            Split::Layers(counts) => counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("+"),
        }
    }
}

/// One configuration the planner tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPoint {
    /// A `schedule.kind` of the catalog.
    pub schedule: String,
    /// Chunks per epoch; `None` for graph parallelism (one partition per device).
    pub chunks: Option<u32>,
    /// The count of the scenario's first device entry.
    pub devices: u32,
    /// The stage split.
    pub split: Split,
    /// Graph parallelism's algorithm (`None` for pipelines).
    pub algorithm: Option<GraphAlgorithm>,
    /// GNNPipe's graph partitions per stage (its hybrid with graph parallelism); 1 otherwise.
    pub partitions: u32,
}

/// The stages per device the planner gives a kind: two for the interleaved, looped and V
/// shapes (interleaving only pays with more than one), one for the rest.
pub fn planned_stages_per_device(kind: &str) -> u32 {
    match catalog::find(kind)
        .and_then(|e| e.generator)
        .map(|g| g.placement())
    {
        Some(StagePlacement::RoundRobin | StagePlacement::V) => 2,
        _ => 1,
    }
}

impl PlanPoint {
    /// Stages each device holds at this point ([`planned_stages_per_device`]).
    pub fn stages_per_device(&self) -> u32 {
        planned_stages_per_device(&self.schedule)
    }

    /// The `--set` overrides that turn the scenario into this configuration. Schedule knobs that
    /// do not apply to the point's kind are cleared, as are a schedule file and a placement.
    pub fn overrides(&self) -> Vec<String> {
        let kind = self.schedule.as_str();
        let mut sets = vec![
            format!("schedule.kind={kind}"),
            "schedule.file=null".to_string(),
            "schedule.placement=null".to_string(),
            format!("devices.0.count={}", self.devices),
            match self.chunks {
                Some(chunks) => format!("schedule.chunks={chunks}"),
                None => "schedule.chunks=null".to_string(),
            },
        ];
        let entry = catalog::find(kind);
        for knob in catalog::all_knobs() {
            let applies = entry.is_some_and(|e| e.knobs.contains(&knob));
            if applies && knob == "stages_per_device" {
                sets.push(format!("schedule.{knob}={}", self.stages_per_device()));
            } else if applies && knob == "partitions" {
                sets.push(match self.partitions {
                    1 => "schedule.partitions=null".into(),
                    g => format!("schedule.partitions={g}"),
                });
            } else if !applies {
                sets.push(format!("schedule.{knob}=null"));
            }
        }
        match self.algorithm {
            Some(GraphAlgorithm::OneD) => {
                sets.push("schedule.algorithm=null".into());
                sets.push("schedule.replication=null".into());
            }
            Some(algorithm) => {
                sets.push("schedule.exchange=null".into());
                sets.push(format!("schedule.algorithm={}", algorithm.name()));
                sets.push(match algorithm {
                    GraphAlgorithm::OneHalfD { replication } => {
                        format!("schedule.replication={replication}")
                    }
                    _ => "schedule.replication=null".into(),
                });
            }
            None => {
                for knob in ["exchange", "algorithm", "replication"] {
                    sets.push(format!("schedule.{knob}=null"));
                }
            }
        }
        let pipeline = entry.is_some_and(|e| {
            e.generator
                .is_some_and(|g| !matches!(g, crate::schedule::Generator::GnnPipe(_)))
        });
        if self.split != Split::Workload && !pipeline {
            // GNNPipe's halo is always stale, graph parallelism's is its exchange.
            sets.push("schedule.halo=null".into());
        }
        match &self.split {
            Split::Workload => {}
            Split::None => sets.push("schedule.stages=null".into()),
            Split::Auto => sets.push("schedule.stages=auto".into()),
            Split::Layers(counts) => sets.push(format!(
                "schedule.stages=[{}]",
                counts
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        }
        sets
    }
}

/// Every way to split `layers` layers into `parts` non-empty contiguous stages, in
/// lexicographic order.
pub fn contiguous_splits(layers: usize, parts: usize) -> Vec<Vec<usize>> {
    fn go(left: usize, parts: usize, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if parts == 1 {
            prefix.push(left);
            out.push(prefix.clone());
            prefix.pop();
            return;
        }
        for first in 1..=left.saturating_sub(parts - 1) {
            prefix.push(first);
            go(left - first, parts - 1, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    if parts >= 1 && layers >= parts {
        go(layers, parts, &mut Vec::new(), &mut out);
    }
    out
}

/// The device counts the planner tries up to `max_devices`: every count `1..=max_devices`, or
/// on a cluster of `gpus_per_node`-GPU nodes whole nodes: the powers of two dividing the node
/// size and the node size itself (a part of one node), then every multiple of the node size.
pub fn device_counts(max_devices: u32, gpus_per_node: Option<u32>) -> Vec<u32> {
    let max = max_devices.max(1);
    let Some(node) = gpus_per_node.filter(|&n| n >= 1) else {
        return (1..=max).collect();
    };
    let mut counts: Vec<u32> = std::iter::successors(Some(1u32), |&c| c.checked_mul(2))
        .take_while(|&c| c < node && node % c == 0)
        .chain((1..).map_while(|k: u32| k.checked_mul(node)))
        .take_while(|&c| c <= max)
        .collect();
    counts.dedup();
    counts
}

/// How the device counts were chosen, for the plan's header: `1..=8`, or on a cluster
/// `1/2/4 then whole 8-GPU nodes up to 256`.
pub fn describe_counts(counts: &[u32], gpus_per_node: Option<u32>) -> String {
    let max = counts.last().copied().unwrap_or(1);
    match gpus_per_node {
        None => format!("1..={max}"),
        Some(node) => {
            let within: Vec<String> = counts
                .iter()
                .filter(|&&c| c < node)
                .map(u32::to_string)
                .collect();
            let whole = if max >= node {
                format!("whole {node}-GPU nodes up to {max}")
            } else {
                format!("no whole {node}-GPU node within {max}")
            };
            if within.is_empty() {
                whole
            } else {
                format!("{} then {whole}", within.join("/"))
            }
        }
    }
}

/// The configurations to try: `schedules` x `chunks` x `device_counts` ([`device_counts`]) x
/// stage splits (into the devices times [`planned_stages_per_device`]). `n_layers` is the GNN's
/// depth (`None` for an explicit workload, whose stages are fixed). Pipelines on a GNN get the
/// `auto` split and, when the model has at most [`MAX_LAYERS_FOR_SPLITS`] layers, every
/// contiguous split into the device count; graph parallelism gets one point per device count
/// and algorithm: 1D, 1.5D for each replication dividing the count
/// ([`GraphAlgorithm::applicable`]), and 2D and 3D from 4 and 8 devices whether or not the
/// count makes their grid ([`prune`] takes out those that do not). GNNPipe also gets its hybrid
/// with graph parallelism: G partitions per stage for every G > 1 dividing the count with at
/// most a stage per layer left (count / G <= layers), split `auto` (the layers balanced over
/// count / G stages).
pub fn search_space(
    schedules: &[String],
    chunks: &[u32],
    device_counts: &[u32],
    n_layers: Option<usize>,
) -> Vec<PlanPoint> {
    let mut points = Vec::new();
    for schedule in schedules {
        let graph_parallel = schedule == "graph_parallel";
        let chunk_choices: Vec<Option<u32>> = if graph_parallel {
            vec![None]
        } else {
            chunks.iter().map(|&c| Some(c)).collect()
        };
        for &chunks in &chunk_choices {
            for &devices in device_counts {
                let splits = match n_layers {
                    None => vec![Split::Workload],
                    Some(_) if graph_parallel => vec![Split::None],
                    Some(layers) => {
                        let mut splits = vec![Split::Auto];
                        if layers <= MAX_LAYERS_FOR_SPLITS {
                            let v = planned_stages_per_device(schedule) as usize;
                            splits.extend(
                                contiguous_splits(layers, v * devices as usize)
                                    .into_iter()
                                    .map(Split::Layers),
                            );
                        }
                        splits
                    }
                };
                let algorithms: Vec<Option<GraphAlgorithm>> = if graph_parallel {
                    let mut algorithms: Vec<GraphAlgorithm> = GraphAlgorithm::applicable(devices)
                        .into_iter()
                        .filter(|a| !matches!(a, GraphAlgorithm::TwoD | GraphAlgorithm::ThreeD))
                        .collect();
                    // 2D from 4 devices and 3D from 8, grid or not: `prune` counts the misfits.
                    if devices >= 4 {
                        algorithms.push(GraphAlgorithm::TwoD);
                    }
                    if devices >= 8 {
                        algorithms.push(GraphAlgorithm::ThreeD);
                    }
                    algorithms.into_iter().map(Some).collect()
                } else {
                    vec![None]
                };
                for split in splits {
                    for &algorithm in &algorithms {
                        points.push(PlanPoint {
                            schedule: schedule.clone(),
                            chunks,
                            devices,
                            split: split.clone(),
                            algorithm,
                            partitions: 1,
                        });
                    }
                }
                // GNNPipe's hybrid: G partitions per stage for every G > 1 dividing the count
                // that leaves at most a stage per layer (devices / G <= layers).
                if let (true, Some(layers)) = (hybrid_kind(schedule), n_layers) {
                    for g in (2..=devices).filter(|g| devices % g == 0) {
                        let stages = (devices / g) as usize;
                        if stages > layers {
                            continue;
                        }
                        points.push(PlanPoint {
                            schedule: schedule.clone(),
                            chunks,
                            devices,
                            split: Split::Auto,
                            algorithm: None,
                            partitions: g,
                        });
                    }
                }
            }
        }
    }
    points
}

/// Whether the kind takes `partitions` (GNNPipe's hybrid).
fn hybrid_kind(kind: &str) -> bool {
    catalog::find(kind).is_some_and(|e| e.knobs.contains(&"partitions"))
}

/// Why a point was not simulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pruned {
    /// A pipeline over the point's devices needs more stages than the model has layers.
    MoreStagesThanLayers {
        /// Stages the devices hold (devices times stages per device).
        stages: u32,
        /// The model's layers.
        layers: usize,
    },
    /// Graph parallelism's grid does not apply to the device count (2D on a non-square, 3D on a
    /// non-cube); the reason as [`GraphAlgorithm::grid_side`] words it.
    NoGrid(String),
    /// GNNPipe's hybrid whose halo hand-offs (layers x chunks x partitions²) are past
    /// [`MAX_HYBRID_HANDOFFS`]: simulated alone, not within a search.
    OverBudget {
        /// Its hand-offs.
        handoffs: u64,
    },
    /// The per-device memory lower bound exceeds every device's capacity.
    WouldNotFit {
        /// The bound ([`MemoryFloor::bytes`]).
        bound_bytes: u64,
        /// The largest capacity among the scenario's devices.
        capacity_bytes: u64,
    },
}

/// A lower bound on the largest per-device peak memory the simulator would report for a point,
/// from the model and the graph's counts alone, without chunking the graph or building a
/// schedule. It counts only what the cost model's resident memory surely holds
/// (`cost::analytic`'s `resident_bytes`, and `plan::cagnet`'s for 1.5D, 2D and 3D):
///
/// - the parameters, gradients and optimizer state of the layers a device holds: every layer
///   under graph parallelism, and for a pipeline the layers of one stage (any stage of an
///   explicit split; one layer under `auto`, whose split is not known before the cost model);
/// - the device holding layer 0 of a pipeline keeps every chunk's feature rows (at least the
///   graph's N) and, per chunk, 4 bytes per row read; under 1D graph parallelism the largest
///   partition, at least N/P rows, does the same;
/// - GNNPipe's history: N rows of each held layer's input width, for every layer but the first;
/// - under GNNPipe's hybrid, the device of a stage's largest partition, at least N/G vertices,
///   holds the same with N/G for N.
///
/// Activations, stashes, hand-offs, the adjacency's non-zeros and workspaces come on top, so the
/// simulator's peak is never below it (`tests/it/gnn.rs` checks it against full predictions).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryFloor {
    /// The model with resolved widths.
    model: GnnModel,
    /// Vertices.
    nodes: u64,
    /// Feature width.
    features: u64,
    /// Mean feature non-zeros per row, for sparse features.
    nnz_per_row: Option<f64>,
    /// Optimizer state per parameter, in copies.
    optimizer_copies: u64,
    /// The largest capacity among the scenario's devices.
    capacity_bytes: u64,
}

impl MemoryFloor {
    /// The bound for a GNN scenario on its prepared graph; `None` for an explicit workload or a
    /// model that does not resolve against the graph (the prediction reports that).
    pub fn new(scenario: &Scenario, graph: Option<&GraphData>) -> Option<Self> {
        let (Workload::Gnn(spec), Some(graph)) = (&scenario.workload, graph) else {
            return None;
        };
        let model = resolve_model(scenario, spec, graph).ok()?;
        Some(MemoryFloor {
            model,
            nodes: graph.nodes(),
            features: graph.features(),
            nnz_per_row: graph.nnz_per_row(),
            optimizer_copies: scenario.optimizer.state_copies(),
            capacity_bytes: scenario
                .devices
                .iter()
                .map(|d| d.memory_bytes)
                .max()
                .unwrap_or(0),
        })
    }

    /// The largest capacity among the scenario's devices.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Feature rows as `GnnWorkload::feature_bytes` counts them (its floor: that one rounds up).
    fn feature_bytes(&self, rows: f64) -> f64 {
        let e = self.model.element_bytes as f64;
        match self.nnz_per_row {
            Some(nnz) => {
                2.0 * rows * nnz * (e + 4.0) + 8.0 * (rows + 1.0 + self.features as f64 + 1.0)
            }
            None => rows * self.features as f64 * e,
        }
    }

    /// Parameters, gradients and optimizer state of `layers`.
    fn weights(&self, layers: std::ops::Range<usize>) -> f64 {
        (self.model.parameters(layers) * self.model.element_bytes * (2 + self.optimizer_copies))
            as f64
    }

    /// What a pipeline device holding (at least) `layers` of a partition of at least `n` of
    /// the graph's vertices (all of them, but under the hybrid) surely keeps.
    fn stage(&self, layers: std::ops::Range<usize>, history: bool, n: f64) -> f64 {
        let e = self.model.element_bytes as f64;
        let mut bytes = self.weights(layers.clone());
        if layers.start == 0 {
            bytes += self.feature_bytes(n);
        }
        // Every chunk's view of the graph: 4 bytes per row read, at least one per vertex.
        bytes += 4.0 * n;
        if history {
            bytes += layers
                .filter(|&l| l > 0)
                .map(|l| n * self.model.layers[l].d_in as f64 * e)
                .sum::<f64>();
        }
        bytes
    }

    /// The bound for `point`, in bytes: the largest of its devices' bounds.
    pub fn bytes(&self, point: &PlanPoint) -> u64 {
        let n_layers = self.model.layers.len();
        let bytes = match point.algorithm {
            Some(GraphAlgorithm::OneD) => {
                let rows = self.nodes as f64 / f64::from(point.devices.max(1));
                self.weights(0..n_layers) + self.feature_bytes(rows) + 4.0 * rows
            }
            Some(_) => self.weights(0..n_layers),
            None => {
                let history = point.schedule == "gnnpipe";
                // Under the hybrid, the largest of a stage's G partitions: N / G vertices or
                // more.
                let n = self.nodes as f64 / f64::from(point.partitions.max(1));
                match &point.split {
                    Split::Layers(counts) => {
                        let mut start = 0;
                        counts
                            .iter()
                            .map(|&c| {
                                let b = self.stage(start..start + c, history, n);
                                start += c;
                                b
                            })
                            .fold(0.0, f64::max)
                    }
                    _ => (0..n_layers)
                        .map(|l| self.stage(l..l + 1, history, n))
                        .fold(0.0, f64::max),
                }
            }
        };
        bytes.floor() as u64
    }
}

/// Whether `point` can be skipped without simulating it, and why: a pipeline over more stages
/// than the model's `n_layers`, a grid the device count does not make, or a memory lower bound
/// (`floor`) above every device's capacity. `None` when it must be simulated.
pub fn prune(
    point: &PlanPoint,
    n_layers: Option<usize>,
    floor: Option<&MemoryFloor>,
) -> Option<Pruned> {
    match (point.algorithm, n_layers) {
        (None, Some(layers)) if point.split == Split::Auto => {
            let stages = point.stages_per_device() * point.devices / point.partitions;
            if stages as usize > layers {
                return Some(Pruned::MoreStagesThanLayers { stages, layers });
            }
        }
        (Some(algorithm), _) => {
            if let Err(why) = algorithm.grid_side(point.devices) {
                return Some(Pruned::NoGrid(why));
            }
        }
        _ => {}
    }
    if let (1.., Some(layers)) = (point.partitions - 1, n_layers) {
        let g = u64::from(point.partitions);
        let handoffs = layers as u64 * u64::from(point.chunks.unwrap_or(1)) * g * g;
        if handoffs > MAX_HYBRID_HANDOFFS {
            return Some(Pruned::OverBudget { handoffs });
        }
    }
    let floor = floor?;
    let bound_bytes = floor.bytes(point);
    (bound_bytes > floor.capacity_bytes).then_some(Pruned::WouldNotFit {
        bound_bytes,
        capacity_bytes: floor.capacity_bytes,
    })
}

/// Pruned points counted by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Points whose memory lower bound exceeds every device's capacity.
    pub would_not_fit: usize,
    /// The smallest such bound (the point closest to fitting), with the capacity.
    pub lowest_bound: Option<(u64, u64)>,
    /// Pipelines with more stages than layers.
    pub more_stages_than_layers: usize,
    /// Grids the device count does not make.
    pub no_grid: usize,
    /// Hybrids past the simulation budget.
    pub over_budget: usize,
}

impl PruneCounts {
    /// Counts `pruned`.
    pub fn of<'a>(pruned: impl IntoIterator<Item = &'a Pruned>) -> Self {
        let mut counts = PruneCounts::default();
        for p in pruned {
            match p {
                Pruned::WouldNotFit {
                    bound_bytes,
                    capacity_bytes,
                } => {
                    counts.would_not_fit += 1;
                    if counts.lowest_bound.is_none_or(|(b, _)| *bound_bytes < b) {
                        counts.lowest_bound = Some((*bound_bytes, *capacity_bytes));
                    }
                }
                Pruned::MoreStagesThanLayers { .. } => counts.more_stages_than_layers += 1,
                Pruned::NoGrid(_) => counts.no_grid += 1,
                Pruned::OverBudget { .. } => counts.over_budget += 1,
            }
        }
        counts
    }

    /// All pruned points.
    pub fn total(&self) -> usize {
        self.would_not_fit + self.more_stages_than_layers + self.no_grid + self.over_budget
    }
}

/// The figures of one predicted configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The schedule's label (`gpipe-drop`, `1f1b`, ...).
    pub label: String,
    /// Pipeline stages (layers, for graph parallelism).
    pub stages: u32,
    /// Chunks per epoch.
    pub chunks: u32,
    /// Devices in the scenario.
    pub devices: u32,
    /// Predicted epoch time.
    pub epoch_time_ns: u64,
    /// Mean bubble fraction.
    pub bubble_fraction: f64,
    /// Bytes moved between devices.
    pub communication_bytes: u64,
    /// The largest peak over the devices.
    pub peak_memory_bytes: u64,
    /// What does not fit (empty when the configuration fits): devices alone, then a GPU that
    /// stages share.
    pub over: Vec<Overflow>,
}

impl Figures {
    /// The figures of a prediction of `scenario` and its metrics, with what does not fit
    /// ([`fit::overflows`]).
    pub fn new(scenario: &Scenario, prediction: &Prediction, metrics: &Metrics) -> Self {
        Figures {
            label: prediction.label.clone(),
            stages: prediction.schedule.n_stages(),
            chunks: prediction.schedule.n_chunks(),
            devices: scenario.devices.len() as u32,
            epoch_time_ns: metrics.epoch_time_ns,
            bubble_fraction: metrics.bubble_fraction,
            communication_bytes: metrics.communication_bytes,
            peak_memory_bytes: metrics
                .devices
                .iter()
                .map(|d| d.peak_memory_bytes)
                .max()
                .unwrap_or(0),
            over: fit::overflows(scenario, metrics),
        }
    }

    /// Whether everything fits.
    pub fn fits(&self) -> bool {
        self.over.is_empty()
    }
}

/// A point with its prediction, or the one-line reason it could not be predicted.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The configuration.
    pub point: PlanPoint,
    /// Its figures, or why the scenario rejected it.
    pub result: Result<Figures, String>,
}

/// How the evaluations rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Indices of the best fitting configurations, the choice first.
    pub shown: Vec<usize>,
    /// Fitting configurations not shown that are more than 1% slower than the fastest.
    pub slower: usize,
    /// Fitting configurations not shown within 1% of the fastest that use more devices than the
    /// choice.
    pub more_devices: usize,
    /// Fitting configurations not shown within 1% of the fastest on as few devices as the choice.
    pub close: usize,
    /// Indices of configurations that do not fit, in evaluation order.
    pub does_not_fit: Vec<usize>,
    /// Indices of configurations the scenario rejects, in evaluation order.
    pub invalid: Vec<usize>,
}

impl Ranking {
    /// The chosen configuration, if any fits.
    pub fn choice(&self) -> Option<usize> {
        self.shown.first().copied()
    }
}

/// Whether `time` is within 1% of `best`.
fn within_one_percent(time: u64, best: u64) -> bool {
    u128::from(time) * 100 <= u128::from(best) * 101
}

/// Ranks fitting configurations by (epoch time, devices, chunks, schedule, split) and picks the
/// fastest, preferring fewer devices among those within 1% of the fastest time; keeps the best
/// `top` (the choice first) and counts why the others lost.
pub fn rank(evaluations: &[Evaluation], top: usize) -> Ranking {
    let mut ranking = Ranking::default();
    let mut fitting: Vec<(usize, &Figures)> = Vec::new();
    for (i, e) in evaluations.iter().enumerate() {
        match &e.result {
            Ok(f) if f.fits() => fitting.push((i, f)),
            Ok(_) => ranking.does_not_fit.push(i),
            Err(_) => ranking.invalid.push(i),
        }
    }
    let key = |&(i, f): &(usize, &Figures)| {
        let p = &evaluations[i].point;
        // Equal times: fewer devices, then less memory.
        (
            f.epoch_time_ns,
            p.devices,
            f.peak_memory_bytes,
            f.chunks,
            p.schedule.clone(),
            p.split.clone(),
            p.partitions,
        )
    };
    fitting.sort_by(|a, b| key(a).cmp(&key(b)).then(a.0.cmp(&b.0)));
    let Some(&(_, fastest)) = fitting.first() else {
        return ranking;
    };
    let best = fastest.epoch_time_ns;
    let choice_pos = fitting
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| within_one_percent(f.epoch_time_ns, best))
        .min_by(|(a, (ia, _)), (b, (ib, _))| {
            evaluations[*ia]
                .point
                .devices
                .cmp(&evaluations[*ib].point.devices)
                .then(a.cmp(b))
        })
        .map_or(0, |(pos, _)| pos);
    let choice = fitting.remove(choice_pos);
    let choice_devices = evaluations[choice.0].point.devices;
    ranking.shown.push(choice.0);
    for (n, (i, f)) in fitting.iter().enumerate() {
        if n + 1 < top.max(1) {
            ranking.shown.push(*i);
        } else if !within_one_percent(f.epoch_time_ns, best) {
            ranking.slower += 1;
        } else if evaluations[*i].point.devices > choice_devices {
            ranking.more_devices += 1;
        } else {
            ranking.close += 1;
        }
    }
    ranking
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_counted_in_whole_nodes() {
        assert_eq!(device_counts(5, None), vec![1, 2, 3, 4, 5]);
        assert_eq!(device_counts(40, Some(8)), vec![1, 2, 4, 8, 16, 24, 32, 40]);
        // Up to 30: the last whole node is 24.
        assert_eq!(device_counts(30, Some(8)), vec![1, 2, 4, 8, 16, 24]);
        // Powers of two that divide the node, then the node: 6-GPU nodes take 1, 2, 6.
        assert_eq!(device_counts(20, Some(6)), vec![1, 2, 6, 12, 18]);
        assert_eq!(device_counts(3, Some(1)), vec![1, 2, 3]);
        assert_eq!(device_counts(4, Some(8)), vec![1, 2, 4]);
        assert_eq!(describe_counts(&[1, 2, 3], None), "1..=3");
        assert_eq!(
            describe_counts(&device_counts(40, Some(8)), Some(8)),
            "1/2/4 then whole 8-GPU nodes up to 40"
        );
        assert_eq!(
            describe_counts(&device_counts(4, Some(8)), Some(8)),
            "1/2/4 then no whole 8-GPU node within 4"
        );
    }

    #[test]
    fn invalid_points_are_pruned_with_their_reason() {
        let schedules = ["gpipe".to_string(), "graph_parallel".to_string()];
        let points = search_space(&schedules, &[4], &[1, 2, 4, 8], Some(2));
        let pruned: Vec<Pruned> = points
            .iter()
            .filter_map(|p| prune(p, Some(2), None))
            .collect();
        let counts = PruneCounts::of(&pruned);
        // GPipe's `auto` on 4 and 8 devices needs 4 and 8 stages of a 2-layer model.
        assert_eq!(counts.more_stages_than_layers, 2);
        // 2D at 8 (not a square); 3D at 8 is a cube, 2D at 4 a square.
        assert_eq!(counts.no_grid, 1);
        assert_eq!(counts.would_not_fit, 0);
        assert!(pruned.contains(&Pruned::MoreStagesThanLayers {
            stages: 8,
            layers: 2
        }));
        // Two stages per device: the interleaved kind on 2 devices needs 4 stages.
        let interleaved = PlanPoint {
            schedule: "interleaved_1f1b".into(),
            chunks: Some(4),
            devices: 2,
            split: Split::Auto,
            algorithm: None,
            partitions: 1,
        };
        assert_eq!(
            prune(&interleaved, Some(3), None),
            Some(Pruned::MoreStagesThanLayers {
                stages: 4,
                layers: 3
            })
        );
        assert_eq!(prune(&interleaved, Some(4), None), None);
    }

    #[test]
    fn gnnpipe_gets_a_hybrid_point_per_partition_count_that_leaves_a_stage_per_layer() {
        let schedules = vec!["gnnpipe".to_string(), "1f1b".to_string()];
        let points = search_space(&schedules, &[4], &[6, 8], Some(3));
        let hybrids: Vec<(u32, u32)> = points
            .iter()
            .filter(|p| p.partitions > 1)
            .map(|p| (p.devices, p.partitions))
            .collect();
        // 6 devices: 3 stages of 2, 2 of 3, 1 of 6; 8: 2 of 4, 1 of 8 (4 stages of 2 is
        // more stages than layers).
        assert_eq!(hybrids, vec![(6, 2), (6, 3), (6, 6), (8, 4), (8, 8)]);
        let point = points.iter().find(|p| p.partitions == 3).unwrap();
        assert_eq!(point.schedule, "gnnpipe");
        assert!(point
            .overrides()
            .contains(&"schedule.partitions=3".to_string()));
        let plain = points.iter().find(|p| p.schedule == "gnnpipe").unwrap();
        assert!(plain
            .overrides()
            .contains(&"schedule.partitions=null".to_string()));
        let other = points.iter().find(|p| p.schedule == "1f1b").unwrap();
        assert!(other
            .overrides()
            .contains(&"schedule.partitions=null".to_string()));
        // Stages are devices over partitions; past the budget a hybrid is pruned.
        assert_eq!(prune(point, Some(3), None), None);
        let big = PlanPoint {
            devices: 512,
            partitions: 256,
            chunks: Some(1),
            ..point.clone()
        };
        assert_eq!(
            prune(&big, Some(3), None),
            Some(Pruned::OverBudget {
                handoffs: 3 * 256 * 256
            })
        );
    }

    #[test]
    fn splits_are_compositions() {
        assert_eq!(
            contiguous_splits(4, 2),
            vec![vec![1, 3], vec![2, 2], vec![3, 1]]
        );
        assert_eq!(contiguous_splits(3, 3), vec![vec![1, 1, 1]]);
        assert!(contiguous_splits(2, 3).is_empty());
        assert_eq!(contiguous_splits(5, 1), vec![vec![5]]);
    }

    fn eval(schedule: &str, devices: u32, time: u64, fits: bool) -> Evaluation {
        Evaluation {
            point: PlanPoint {
                schedule: schedule.into(),
                chunks: Some(4),
                devices,
                split: Split::Auto,
                algorithm: None,
                partitions: 1,
            },
            result: Ok(Figures {
                label: schedule.into(),
                stages: devices,
                chunks: 4,
                devices,
                epoch_time_ns: time,
                bubble_fraction: 0.0,
                communication_bytes: 0,
                peak_memory_bytes: 0,
                over: if fits {
                    Vec::new()
                } else {
                    vec![Overflow {
                        device: "gpu0".into(),
                        index: 0,
                        peak_bytes: 2,
                        capacity_bytes: 1,
                        shared_by: None,
                    }]
                },
            }),
        }
    }

    #[test]
    fn fewer_devices_win_within_one_percent() {
        let evals = vec![
            eval("gpipe", 4, 1000, true),
            eval("1f1b", 2, 1009, true),
            eval("gpipe", 1, 500, false),
            eval("1f1b", 3, 1005, true),
            eval("gpipe", 2, 2000, true),
            Evaluation {
                result: Err("bad".into()),
                ..eval("gpipe", 3, 1, true)
            },
        ];
        let ranking = rank(&evals, 2);
        assert_eq!(ranking.shown, vec![1, 0]);
        assert_eq!(ranking.more_devices, 1);
        assert_eq!(ranking.slower, 1);
        assert_eq!(ranking.does_not_fit, vec![2]);
        assert_eq!(ranking.invalid, vec![5]);
        assert_eq!(
            PlanPoint::overrides(&evals[0].point)[0],
            "schedule.kind=gpipe"
        );
    }
}
