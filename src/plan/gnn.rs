//! Predictions for GNN workloads: resolve the model against the graph, chunk the graph, build the
//! analytic cost model, and run the candidate schedule.

use std::ops::Range;

use super::{
    candidate_stages, pipeline_schedule, run, Candidate, GnnLayout, PlanError, Prediction, Tier,
};
use crate::cost::{AnalyticCost, CostModel, DeviceCost, DeviceRates, GnnWorkload, TrainingShape};
use crate::diag::FieldPath;
use crate::gnn::{split_stages, stats_model, GnnModel, GraphMetrics, Halo, Layer, LayerKind};
use crate::graph::chunks::{chunk_stats, cut_edges, stale_reads};
use crate::graph::dataset::Dataset;
use crate::graph::partition::partition;
use crate::graph::synth::{rmat, sbm};
use crate::graph::{ChunkStats, Chunking, Csr, SparseFeatures};
use crate::scenario::{
    Activation, GnnSpec, GraphSource, GraphStats, LayerKindSpec, Scenario, StageSplit,
};
use crate::schedule::graph_parallel::{self, GraphAlgorithm};
use crate::schedule::{Generator, GnnPipeBackward, Op};

/// A GNN workload's graph, loaded or generated once per scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphData {
    /// A graph with its edges: a dataset or a synthetic graph.
    Real {
        /// The adjacency.
        csr: Csr,
        /// Feature width.
        features: u64,
        /// Mean non-zeros per feature row, when features are sparse.
        nnz_per_row: Option<f64>,
        /// Classes.
        classes: u64,
        /// The features themselves, where the graph has them (what `pipegnn run` trains on).
        sparse_features: Option<SparseFeatures>,
        /// Class per vertex, `-1` for unlabelled.
        labels: Vec<i32>,
        /// Train, validation and test vertices.
        splits: [Vec<u32>; 3],
    },
    /// Counts only.
    Stats(GraphStats),
}

impl GraphData {
    pub(super) fn nodes(&self) -> u64 {
        match self {
            GraphData::Real { csr, .. } => csr.n_nodes() as u64,
            GraphData::Stats(stats) => stats.nodes,
        }
    }

    fn directed_edges(&self) -> u64 {
        match self {
            GraphData::Real { csr, .. } => csr.n_directed_edges(),
            GraphData::Stats(stats) => 2 * stats.undirected_edges,
        }
    }

    pub(super) fn features(&self) -> u64 {
        match self {
            GraphData::Real { features, .. } => *features,
            GraphData::Stats(stats) => stats.features,
        }
    }

    fn classes(&self) -> u64 {
        match self {
            GraphData::Real { classes, .. } => *classes,
            GraphData::Stats(stats) => stats.classes,
        }
    }

    pub(super) fn nnz_per_row(&self) -> Option<f64> {
        match self {
            GraphData::Real { nnz_per_row, .. } => *nnz_per_row,
            GraphData::Stats(stats) => stats.feature_density.map(|d| d * stats.features as f64),
        }
    }
}

/// Loads or generates a GNN scenario's graph. `dataset` is the loaded `graph.dataset` or
/// `graph.ogb` folder (the caller reads files); synthetic graphs are generated here.
pub fn prepare_graph(spec: &GnnSpec, dataset: Option<Dataset>) -> Result<GraphData, PlanError> {
    Ok(match (&spec.graph, dataset) {
        (
            GraphSource::Dataset {
                feature_density, ..
            },
            Some(dataset),
        ) => real(dataset, *feature_density),
        (GraphSource::Ogb { .. }, Some(dataset)) => real(dataset, None),
        (GraphSource::Dataset { path, .. } | GraphSource::Ogb { path, .. }, None) => {
            return Err(PlanError::Mismatch(format!(
                "dataset {} was not loaded",
                path.display()
            )))
        }
        (GraphSource::Sbm(spec), _) => synthetic(sbm(spec)),
        (GraphSource::Rmat(spec), _) => synthetic(rmat(spec)),
        (GraphSource::Stats(stats), _) => GraphData::Stats(*stats),
    })
}

/// A loaded dataset's graph; `feature_density` gives the features' density where it has none.
fn real(dataset: Dataset, feature_density: Option<f64>) -> GraphData {
    let n = dataset.graph.n_nodes().max(1) as f64;
    let nnz_per_row = match &dataset.features {
        Some(features) => Some(features.nnz() as f64 / n),
        None => feature_density.map(|d| d * f64::from(dataset.num_features)),
    };
    GraphData::Real {
        csr: dataset.graph,
        features: u64::from(dataset.num_features),
        nnz_per_row,
        classes: u64::from(dataset.num_classes),
        sparse_features: dataset.features,
        labels: dataset.labels,
        splits: [dataset.train, dataset.val, dataset.test],
    }
}

fn synthetic(graph: crate::graph::synth::SyntheticGraph) -> GraphData {
    let n = graph.graph.n_nodes().max(1) as f64;
    GraphData::Real {
        nnz_per_row: Some(graph.features.nnz() as f64 / n),
        features: u64::from(graph.features.n_cols),
        classes: u64::from(graph.num_classes),
        csr: graph.graph,
        sparse_features: Some(graph.features),
        labels: graph.labels,
        splits: [graph.train, graph.val, graph.test],
    }
}

/// Resolves the layer widths against the graph: the first layer reads the features, GAT hidden
/// layers concatenate their heads, and the last layer must output one value per class.
pub(super) fn resolve_model(
    scenario: &Scenario,
    spec: &GnnSpec,
    graph: &GraphData,
) -> Result<GnnModel, PlanError> {
    let classes = graph.classes();
    let last = spec.layers.len() - 1;
    let mut d_in = graph.features();
    let mut layers = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        let out = if layer.out == 0 { classes } else { layer.out };
        let (kind, d_out) = match layer.kind {
            LayerKindSpec::Gcn => (LayerKind::Gcn, out),
            LayerKindSpec::Sage => (LayerKind::Sage, out),
            LayerKindSpec::Gat { heads, concat } => {
                let concat = concat.unwrap_or(i != last);
                (
                    LayerKind::Gat { heads, concat },
                    if concat { heads * out } else { out },
                )
            }
        };
        layers.push(Layer { kind, d_in, d_out });
        d_in = d_out;
    }
    if d_in != classes {
        let path = FieldPath::root()
            .key("model")
            .key("layers")
            .index(last)
            .key("out");
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            path,
            format!("the last layer outputs {d_in} values per vertex but the graph has {classes} classes"),
        )));
    }
    Ok(GnnModel {
        layers,
        element_bytes: spec.element_bytes,
    })
}

/// The most bytes a prediction may count: 2^60 (1 EiB), well inside the `u64` and `i64` byte
/// counts of the cost model, the simulator and the metrics.
pub const MAX_MODEL_BYTES: f64 = (1u64 << 60) as f64;

/// Refuses a model too large for the byte counts: a generous bound on everything the cost model
/// counts for `k` chunks (every layer's input and output rows, features and edges, once per
/// chunk and a few times more for history, buffers and halo copies; the parameters with their
/// gradients and optimizer state) must stay within [`MAX_MODEL_BYTES`].
fn check_size(
    scenario: &Scenario,
    model: &GnnModel,
    graph: &GraphData,
    k: u32,
) -> Result<(), PlanError> {
    let e = model.element_bytes as f64;
    let (n, edges) = (graph.nodes() as f64, graph.directed_edges() as f64);
    let widths: f64 = model
        .layers
        .iter()
        .map(|l| l.d_in as f64 + 4.0 * l.d_out as f64)
        .sum();
    let heads: f64 = model.layers.iter().map(|l| l.heads() as f64).sum();
    let parameters: f64 = model
        .layers
        .iter()
        .map(|l| {
            let (d_in, d_out, heads) = (l.d_in as f64, l.d_out as f64, l.heads() as f64);
            2.0 * d_in * d_out.max(heads * l.head_width() as f64) + 3.0 * d_out
        })
        .sum();
    let copy = n * (graph.features() as f64 + widths) * e + edges * (16.0 + 4.0 * heads * e);
    let bound = (f64::from(k) + 8.0) * copy + parameters * e * 8.0;
    if bound <= MAX_MODEL_BYTES {
        return Ok(());
    }
    let path = FieldPath::root().key("model").key("layers");
    Err(PlanError::Invalid(scenario.source.diagnostic(
        path,
        format!(
            "the model is too large to count on this graph: its activations, features, edges and \
             parameters over {k} chunks may reach {:.3e} bytes, beyond the {:.3e} (2^60) the \
             prediction counts in",
            bound, MAX_MODEL_BYTES
        ),
    )))
}

/// Chunk statistics, the cut and stale-read counts, and (for graph parallelism) the rows each
/// partition reads from each other.
struct Chunks {
    part: Option<Vec<u32>>,
    stats: Vec<ChunkStats>,
    cut_edges: u64,
    stale_reads: u64,
    pair_rows: Vec<Vec<u64>>,
}

fn chunks(
    graph: &GraphData,
    k: u32,
    chunking: Chunking,
    hops: u32,
    pairs: bool,
) -> Result<Chunks, String> {
    match graph {
        GraphData::Real { csr, .. } => {
            let part = partition(csr, k, chunking);
            let pair_rows = if pairs {
                pair_rows(csr, &part, k)
            } else {
                Vec::new()
            };
            Ok(Chunks {
                stats: chunk_stats(csr, &part, k, hops),
                cut_edges: cut_edges(csr, &part),
                stale_reads: stale_reads(csr, &part),
                pair_rows,
                part: Some(part),
            })
        }
        GraphData::Stats(stats) => {
            let stats = &stats_model::GraphCounts {
                nodes: stats.nodes,
                undirected_edges: stats.undirected_edges,
                cut_fraction: stats.cut_fraction,
            };
            let chunk_stats = stats_model::chunk_stats(stats, k, chunking, hops)?;
            let cut: u64 = chunk_stats
                .iter()
                .map(|c| c.in_edges - c.internal_edges)
                .sum::<u64>()
                / 2;
            let pair_rows = if pairs {
                stats_model::pair_rows(stats, &chunk_stats)
            } else {
                Vec::new()
            };
            Ok(Chunks {
                part: None,
                stats: chunk_stats,
                cut_edges: cut,
                // Of the two directions of a cut edge, the reader in the earlier chunk reads
                // stale.
                stale_reads: cut,
                pair_rows,
            })
        }
    }
}

/// `rows[p][q]`: distinct vertices of part p with a neighbour in part q (the rows q reads).
fn pair_rows(csr: &Csr, part: &[u32], k: u32) -> Vec<Vec<u64>> {
    let k = k as usize;
    let mut rows = vec![vec![0u64; k]; k];
    let mut seen = vec![u32::MAX; k];
    for v in 0..csr.n_nodes() as u32 {
        let owner = part[v as usize] as usize;
        for &u in csr.neighbors(v) {
            let reader = part[u as usize] as usize;
            if reader != owner && seen[reader] != v {
                seen[reader] = v;
                rows[owner][reader] += 1;
            }
        }
    }
    rows
}

fn rates(scenario: &Scenario, device: usize) -> DeviceRates {
    let d = &scenario.devices[device];
    DeviceRates {
        peak_flops: d
            .peak_flops
            .expect("validation requires peak_flops for GNN workloads"),
        memory_bandwidth: d
            .memory_bandwidth_bytes_per_s
            .expect("validation requires memory_bandwidth for GNN workloads"),
        overhead_ns: d.op_overhead_ns.unwrap_or(0) as f64,
    }
}

/// Predicts one candidate on a GNN workload.
pub(super) fn predict(
    scenario: &Scenario,
    spec: &GnnSpec,
    graph: &GraphData,
    candidate: &Candidate,
    tier: Tier<'_>,
) -> Result<Prediction, PlanError> {
    let model = resolve_model(scenario, spec, graph)?;
    if let Candidate::Generated {
        generator: Generator::GnnPipe(knobs),
        partitions,
        ..
    } = candidate
    {
        if *partitions > 1 {
            return predict_hybrid(
                scenario,
                spec,
                graph,
                candidate,
                *knobs,
                *partitions,
                model,
                tier,
            );
        }
    }
    let n_layers = model.layers.len();
    let n_nodes = graph.nodes();
    let (graph_parallel, halo) = match candidate {
        Candidate::Generated { halo, .. } | Candidate::File { halo, .. } => (false, *halo),
        Candidate::GraphParallel { exchange, .. } => (true, *exchange),
    };
    let available: Vec<usize> = match &scenario.schedule.placement {
        Some(list) => list.clone(),
        None => (0..scenario.devices.len()).collect(),
    };
    let k = if graph_parallel {
        available.len() as u32
    } else {
        scenario.schedule.n_chunks
    };
    if u64::from(k) > n_nodes {
        let path = FieldPath::root().key("schedule").key("chunks");
        let what = if graph_parallel {
            "partitions (one per device)"
        } else {
            "chunks"
        };
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            path,
            format!(
                "{k} {what} for a graph of {n_nodes} vertices: a chunk needs at least one vertex"
            ),
        )));
    }
    check_size(scenario, &model, graph, k)?;
    let chunks = chunks(
        graph,
        k,
        scenario.schedule.chunking,
        halo.hops_needed(n_layers),
        graph_parallel,
    )
    .map_err(|message| stats_error(scenario, message))?;
    let (history, gradient_buffers) = match candidate {
        Candidate::Generated {
            generator: Generator::GnnPipe(knobs),
            ..
        } => (true, gradient_buffers(knobs.backward)),
        _ => (false, 0),
    };
    let mut workload = GnnWorkload {
        model,
        stage_layers: (0..n_layers).map(|l| l..l + 1).collect(),
        halo,
        chunks: chunks.stats,
        pair_rows: chunks.pair_rows,
        n_nodes,
        directed_edges: graph.directed_edges(),
        features: graph.features(),
        feature_nnz_per_row: graph.nnz_per_row(),
        optimizer_copies: scenario.optimizer.state_copies(),
        history,
        gradient_buffers,
        graph_parallel,
        hybrid: None,
        labelled: match (graph, &chunks.part) {
            (GraphData::Real { splits, .. }, Some(part)) => {
                let mut counts = vec![0u64; k as usize];
                for &v in &splits[0] {
                    if let Some(&c) = part.get(v as usize) {
                        counts[c as usize] += 1;
                    }
                }
                Some(counts)
            }
            _ => None,
        },
    };
    let metrics = graph_metrics(
        &workload,
        halo,
        chunks.cut_edges,
        chunks.stale_reads,
        graph.directed_edges(),
    );
    let label = candidate.label(scenario);
    if graph_parallel {
        let one_d = !matches!(
            candidate,
            Candidate::GraphParallel { algorithm, .. } if *algorithm != GraphAlgorithm::OneD
        );
        let readers = (0..k as usize)
            .map(|p| {
                (0..k)
                    .filter(|&q| {
                        // 1.5D, 2D and 3D move blocks by collectives, not rows between pairs.
                        one_d
                            && q as usize != p
                            && (halo == Halo::Broadcast || workload.pair_rows[p][q as usize] > 0)
                    })
                    .collect()
            })
            .collect();
        let schedule = graph_parallel::generate(n_layers as u32, readers)?;
        let cost = AnalyticCost {
            rates: available.iter().map(|&d| rates(scenario, d)).collect(),
            workload,
        };
        let layout = GnnLayout {
            model: cost.workload.model.clone(),
            stage_layers: cost.workload.stage_layers.clone(),
            part: chunks.part,
        };
        if let Candidate::GraphParallel { algorithm, .. } = candidate {
            if *algorithm != GraphAlgorithm::OneD {
                return super::cagnet::predict(
                    scenario, schedule, available, &cost, *algorithm, label, metrics, layout,
                );
            }
        }
        return run_tier(
            scenario, spec, schedule, available, &cost, tier, label, metrics, layout,
        );
    }
    let n_stages = candidate_stages(scenario, candidate)?;
    let schedule = pipeline_schedule(scenario, candidate, n_stages)?;
    let placement = scenario
        .schedule
        .placement_for(schedule.n_devices(), scenario.devices.len())
        .map_err(PlanError::Mismatch)?;
    let stage_rates: Vec<DeviceRates> = (0..n_stages)
        .map(|s| rates(scenario, placement[schedule.device_of(Op::forward(0, s))]))
        .collect();
    workload.stage_layers = match &spec.stages {
        StageSplit::Layers(counts) => ranges(counts),
        StageSplit::Auto => split_stages(
            &AnalyticCost::layer_times(&workload, &stage_rates[0]),
            n_stages as usize,
        ),
    };
    let cost = AnalyticCost {
        rates: stage_rates,
        workload,
    };
    let layout = GnnLayout {
        model: cost.workload.model.clone(),
        stage_layers: cost.workload.stage_layers.clone(),
        part: chunks.part,
    };
    run_tier(
        scenario, spec, schedule, placement, &cost, tier, label, metrics, layout,
    )
}

/// GNNPipe's per-layer gradient buffers for its `backward` knob.
fn gradient_buffers(backward: GnnPipeBackward) -> u64 {
    match backward {
        GnnPipeBackward::Drop => 0,
        GnnPipeBackward::Exact => 1,
        GnnPipeBackward::Deferred => 2,
    }
}

/// A graph's counts that cannot be chunked as asked, at `graph.stats`.
fn stats_error(scenario: &Scenario, message: String) -> PlanError {
    PlanError::Invalid(
        scenario
            .source
            .diagnostic(FieldPath::root().key("graph").key("stats"), message),
    )
}

/// `reads[piece][h]`: distinct vertices of each piece (partition g's chunk c at `g * k + c`)
/// with a neighbour in another partition h.
fn partition_reads(csr: &Csr, part: &[u32], k: u32, partitions: u32) -> Vec<Vec<u64>> {
    let g_count = partitions as usize;
    let mut reads = vec![vec![0u64; g_count]; (k * partitions) as usize];
    let mut seen = vec![u32::MAX; g_count];
    for v in 0..csr.n_nodes() as u32 {
        let piece = part[v as usize] as usize;
        let owner = piece / k as usize;
        for &u in csr.neighbors(v) {
            let reader = part[u as usize] as usize / k as usize;
            if reader != owner && seen[reader] != v {
                seen[reader] = v;
                reads[piece][reader] += 1;
            }
        }
    }
    reads
}

/// Predicts GNNPipe's hybrid with graph parallelism: S stages of G devices each, the graph cut
/// into G partitions of K chunks (pieces, by the scenario's chunking over G·K parts, so
/// partition g holds pieces `g·K..(g+1)·K`), each layer a lane per partition.
#[allow(clippy::too_many_arguments)]
fn predict_hybrid(
    scenario: &Scenario,
    spec: &GnnSpec,
    graph: &GraphData,
    candidate: &Candidate,
    knobs: crate::schedule::GnnPipeKnobs,
    partitions: u32,
    model: GnnModel,
    tier: Tier<'_>,
) -> Result<Prediction, PlanError> {
    let n_layers = model.layers.len();
    let n_nodes = graph.nodes();
    let k = scenario.schedule.n_chunks;
    let n_pieces = u64::from(k) * u64::from(partitions);
    if n_pieces > n_nodes {
        let path = FieldPath::root().key("schedule").key("chunks");
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            path,
            format!(
                "{k} chunks on each of {partitions} partitions for a graph of {n_nodes} vertices: a piece needs at least one vertex"
            ),
        )));
    }
    let n_stages = candidate_stages(scenario, candidate)?;
    let lanes = n_layers as u64 * u64::from(partitions);
    if lanes * u64::from(k) > crate::schedule::MAX_STAGE_CHUNKS {
        let path = FieldPath::root().key("schedule").key("chunks");
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            path,
            format!(
                "{k} chunks on {lanes} lanes (layers x partitions) is more than the {} lane-chunk pairs a schedule may have",
                crate::schedule::MAX_STAGE_CHUNKS
            ),
        )));
    }
    check_size(scenario, &model, graph, k * partitions)?;
    let halo = Halo::Stale;
    let chunks = chunks(
        graph,
        k * partitions,
        scenario.schedule.chunking,
        halo.hops_needed(n_layers),
        false,
    )
    .map_err(|message| stats_error(scenario, message))?;
    let reads = match (graph, &chunks.part) {
        (GraphData::Real { csr, .. }, Some(part)) => partition_reads(csr, part, k, partitions),
        (GraphData::Stats(stats), _) => stats_model::partition_reads(
            &stats_model::GraphCounts {
                nodes: stats.nodes,
                undirected_edges: stats.undirected_edges,
                cut_fraction: stats.cut_fraction,
            },
            &chunks.stats,
            partitions,
            k,
        ),
        (GraphData::Real { .. }, None) => unreachable!("graphs with edges are partitioned"),
    };
    // A row is read stale when it comes from a later chunk (of any partition); the same
    // chunk of another partition arrives by its halo hand-off, fresh.
    let stale_reads = match (graph, &chunks.part) {
        (GraphData::Real { csr, .. }, Some(part)) => {
            let chunk_of: Vec<u32> = part.iter().map(|&piece| piece % k).collect();
            stale_reads(csr, &chunk_of)
        }
        // Of a cut edge's other pieces, G·(K-1) of the G·K-1 hold another chunk.
        _ => {
            let other_chunk = u64::from(partitions) * u64::from(k - 1);
            (u128::from(chunks.cut_edges) * u128::from(other_chunk)
                / u128::from((n_pieces - 1).max(1))) as u64
        }
    };
    let g_count = partitions as usize;
    let k_count = k as usize;
    let readers: Vec<Vec<u32>> = (0..g_count)
        .map(|g| {
            (0..partitions)
                .filter(|&h| {
                    h as usize != g && (0..k_count).any(|c| reads[g * k_count + c][h as usize] > 0)
                })
                .collect()
        })
        .collect();
    let history_rows: Vec<u64> = (0..g_count)
        .map(|g| {
            let own: u64 = (0..k_count)
                .map(|c| chunks.stats[g * k_count + c].vertices)
                .sum();
            let read: u64 = reads.iter().map(|r| r[g]).sum();
            (own + read).min(n_nodes)
        })
        .collect();
    let mut workload = GnnWorkload {
        model,
        stage_layers: (0..n_layers).map(|l| l..l + 1).collect(),
        halo,
        chunks: chunks.stats,
        pair_rows: Vec::new(),
        n_nodes,
        directed_edges: graph.directed_edges(),
        features: graph.features(),
        feature_nnz_per_row: graph.nnz_per_row(),
        optimizer_copies: scenario.optimizer.state_copies(),
        history: true,
        gradient_buffers: gradient_buffers(knobs.backward),
        graph_parallel: false,
        labelled: None,
        hybrid: None,
    };
    let metrics = graph_metrics(
        &workload,
        halo,
        chunks.cut_edges,
        stale_reads,
        graph.directed_edges(),
    );
    let placement = scenario
        .schedule
        .placement_for((n_stages * partitions) as usize, scenario.devices.len())
        .map_err(PlanError::Mismatch)?;
    let stage_layers = match &spec.stages {
        StageSplit::Layers(counts) => ranges(counts),
        StageSplit::Auto => split_stages(
            &AnalyticCost::layer_times(&workload, &rates(scenario, placement[0])),
            n_stages as usize,
        ),
    };
    let schedule = crate::schedule::generate_hybrid(
        &crate::schedule::PipelineSpec {
            n_stages,
            n_chunks: k,
            backward_order: crate::schedule::BackwardOrder::Forward,
        },
        knobs,
        &stage_layers,
        readers,
    )?;
    let lane_rates: Vec<DeviceRates> = (0..n_layers as u32 * partitions)
        .map(|lane| {
            rates(
                scenario,
                placement[schedule.device_of(Op::forward(0, lane))],
            )
        })
        .collect();
    workload.stage_layers = (0..n_layers)
        .flat_map(|l| std::iter::repeat_n(l..l + 1, g_count))
        .collect();
    workload.hybrid = Some(crate::cost::analytic::HybridPieces {
        partitions,
        n_chunks: k,
        reads,
        history_rows,
        stage_first: (0..n_layers)
            .map(|l| stage_layers.iter().any(|r| r.start == l))
            .collect(),
    });
    let cost = AnalyticCost {
        rates: lane_rates,
        workload,
    };
    let layout = GnnLayout {
        model: cost.workload.model.clone(),
        stage_layers,
        part: chunks.part,
    };
    // With a device profile, each lane (a layer of a partition) is priced on its device's
    // profile at its piece's shapes.
    run_tier(
        scenario,
        spec,
        schedule,
        placement,
        &cost,
        tier,
        candidate.label(scenario),
        metrics,
        layout,
    )
}

/// What the executor's training adds to every layer.
fn training_shape(scenario: &Scenario, spec: &GnnSpec) -> TrainingShape {
    TrainingShape {
        dropout: scenario.training.dropout,
        attention_dropout: scenario.training.attention_dropout > 0.0,
        elu: spec.activation == Activation::Elu,
    }
}

/// Simulates with the analytic cost, or with a device profile's kernels over the same workload.
#[allow(clippy::too_many_arguments)]
fn run_tier(
    scenario: &Scenario,
    spec: &GnnSpec,
    schedule: crate::schedule::Schedule,
    placement: Vec<usize>,
    cost: &AnalyticCost,
    tier: Tier<'_>,
    label: String,
    metrics: GraphMetrics,
    layout: GnnLayout,
) -> Result<Prediction, PlanError> {
    let Tier::Device(profiles) = tier else {
        return run(
            scenario,
            schedule,
            placement,
            cost,
            tier,
            label,
            Some(metrics),
            Some(layout),
        );
    };
    // The profile of the scenario device each stage (or partition) runs on.
    let per_unit: Vec<&crate::cost::DeviceProfile> = if cost.workload.graph_parallel {
        placement
            .iter()
            .map(|&d| profiles[d.min(profiles.len() - 1)])
            .collect()
    } else {
        (0..schedule.n_stages())
            .map(|s| placement[schedule.device_of(Op::forward(0, s))])
            .map(|d| profiles[d.min(profiles.len() - 1)])
            .collect()
    };
    let profiled = DeviceCost::new(
        &cost.workload,
        training_shape(scenario, spec),
        per_unit,
        cost,
    )
    .in_flight(crate::schedule::peak_in_flight(&schedule));
    let chosen: &dyn CostModel = &profiled;
    let mut prediction = run(
        scenario,
        schedule,
        placement,
        chosen,
        tier,
        label,
        Some(metrics),
        Some(layout),
    )?;
    if let Some((bytes, warmth)) = profiled.cache_warmth() {
        prediction.cost_tier = format!(
            "{}; ops priced {:.0}% of the way from cache-cold to warm, {:.1} MiB passing through the caches between two uses of an op's data (the profile's reuse curve)",
            prediction.cost_tier,
            warmth * 100.0,
            bytes / (1u64 << 20) as f64
        );
    }
    prediction.extrapolated = profiled
        .extrapolations()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(prediction)
}

fn ranges(counts: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    counts
        .iter()
        .map(|&n| {
            start += n;
            start - n..start
        })
        .collect()
}

fn graph_metrics(
    workload: &GnnWorkload,
    halo: Halo,
    cut: u64,
    stale: u64,
    directed_edges: u64,
) -> GraphMetrics {
    let undirected = (directed_edges / 2).max(1) as f64;
    let n_layers = workload.model.layers.len();
    GraphMetrics {
        dropped_edge_fraction: (halo == Halo::Drop).then(|| cut as f64 / undirected),
        stale_read_fraction: (halo == Halo::Stale && n_layers > 1)
            .then(|| stale as f64 / (2.0 * undirected)),
        chunks: workload.chunks.clone(),
        redundant_compute_factor: (halo == Halo::Exact).then(|| {
            let computed: f64 = (0..n_layers)
                .flat_map(|l| (0..workload.chunks.len()).map(move |c| (l, c)))
                .map(|(l, c)| workload.rows(l, c).out)
                .sum();
            computed / (workload.n_nodes as f64 * n_layers as f64)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report;
    use crate::scenario::{parse_scenario, Workload};
    use crate::trace::MemoryCategory;

    /// A 4-layer GCN, 32 wide, on a synthetic SBM graph, on `devices` A100s fully connected.
    fn scenario(devices: usize, schedule: &str) -> (Scenario, GraphData) {
        let text = format!(
            "name: hybrid\ngraph:\n  synthetic: {{kind: sbm, nodes: 2000, avg_degree: 8, classes: 4, features: 32, homophily: 0.8, seed: 5}}\nmodel: {{kind: gcn, depth: 4, hidden: 32}}\ndevices:\n  - {{name: gpu, count: {devices}, preset: a100-80gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{{schedule}}}\n"
        );
        let scenario = parse_scenario("hybrid.yaml", &text, &[], std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let Workload::Gnn(spec) = &scenario.workload else {
            unreachable!()
        };
        let graph = prepare_graph(spec, None).unwrap();
        (scenario, graph)
    }

    fn spec(scenario: &Scenario) -> &GnnSpec {
        let Workload::Gnn(spec) = &scenario.workload else {
            unreachable!()
        };
        spec
    }

    fn hybrid(scenario: &Scenario, graph: &GraphData, partitions: u32) -> Prediction {
        let Candidate::Generated {
            generator: Generator::GnnPipe(knobs),
            ..
        } = super::super::own_candidate(scenario, None).unwrap()
        else {
            unreachable!()
        };
        let candidate = super::super::own_candidate(scenario, None).unwrap();
        let model = resolve_model(scenario, spec(scenario), graph).unwrap();
        predict_hybrid(
            scenario,
            spec(scenario),
            graph,
            &candidate,
            knobs,
            partitions,
            model,
            Tier::Analytic,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Equal but for each op's rounding to the nanosecond: the hybrid times a stage's layers
    /// as separate ops.
    fn close(a: u64, b: u64, ops: usize, what: &str) {
        assert!(a.abs_diff(b) <= ops as u64, "{what}: {a} against {b}");
    }

    fn history(device: &report::DeviceMetrics) -> u64 {
        device.memory_at_peak[MemoryCategory::History.index()]
    }

    #[test]
    fn the_hybrid_with_one_partition_is_gnnpipe() {
        for (devices, stages, chunks) in [(2, "[2, 2]", 4), (4, "auto", 3), (3, "[1, 2, 1]", 1)] {
            let (scenario, graph) = scenario(
                devices,
                &format!("kind: gnnpipe, chunks: {chunks}, stages: {stages}"),
            );
            let plain = super::super::predict(
                &scenario,
                Some(&graph),
                &super::super::own_candidate(&scenario, None).unwrap(),
            )
            .unwrap();
            let one = hybrid(&scenario, &graph, 1);
            let (a, b) = (report::compute(&plain.trace), report::compute(&one.trace));
            let case = format!("{devices} devices, stages {stages}, {chunks} chunks");
            let ops = one.schedule.n_ops();
            close(a.epoch_time_ns, b.epoch_time_ns, ops, &case);
            assert_eq!(a.communication_bytes, b.communication_bytes, "{case}");
            assert_eq!(a.devices.len(), b.devices.len(), "{case}");
            for (x, y) in a.devices.iter().zip(&b.devices) {
                close(x.busy_ns, y.busy_ns, ops, &case);
                // Every part of the peak but the received inputs: the hybrid frees a stage's
                // input when the stage's first layer is done, GNNPipe when the stage is.
                let communication = MemoryCategory::Communication.index();
                for category in MemoryCategory::ALL {
                    let i = category.index();
                    if i != communication {
                        assert_eq!(
                            x.memory_at_peak[i],
                            y.memory_at_peak[i],
                            "{case}: device {} {}",
                            x.device,
                            category.name()
                        );
                    }
                }
                assert!(
                    y.peak_memory_bytes <= x.peak_memory_bytes
                        && x.peak_memory_bytes - y.peak_memory_bytes
                            <= x.memory_at_peak[communication],
                    "{case}: device {}",
                    x.device
                );
            }
            let (p, q) = (plain.graph.unwrap(), one.graph.unwrap());
            assert_eq!(p.stale_read_fraction, q.stale_read_fraction, "{case}");
        }
    }

    #[test]
    fn the_hybrid_on_one_stage_is_graph_parallelism() {
        for devices in [2, 3, 4] {
            let (gp, graph) = scenario(devices, "kind: graph_parallel, exchange: halo");
            let (hy, _) = scenario(devices, "kind: gnnpipe, chunks: 1, stages: [4]");
            let a = report::compute(
                &super::super::predict(
                    &gp,
                    Some(&graph),
                    &super::super::own_candidate(&gp, None).unwrap(),
                )
                .unwrap()
                .trace,
            );
            let one = hybrid(&hy, &graph, devices as u32);
            let b = report::compute(&one.trace);
            assert_eq!(a.communication_bytes, b.communication_bytes, "{devices}");
            let ops = one.schedule.n_ops();
            close(a.epoch_time_ns, b.epoch_time_ns, ops, &format!("{devices}"));
            for (x, y) in a.devices.iter().zip(&b.devices) {
                close(x.busy_ns, y.busy_ns, ops, &format!("{devices}"));
                // GNNPipe keeps its embedding history even where nothing reads it stale.
                assert_eq!(
                    x.peak_memory_bytes,
                    y.peak_memory_bytes - history(y),
                    "{devices}: device {}",
                    x.device
                );
            }
            assert_eq!(one.graph.unwrap().stale_read_fraction, Some(0.0));
        }
    }
}
