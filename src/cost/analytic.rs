//! The analytic GNN cost model: a roofline over each device's peak rates for every kernel of
//! every layer, plus a per-kernel overhead; memory from the rows each chunk stashes.
//!
//! Per layer and chunk ([`crate::gnn::work`] gives the rows `out`, `read` and the `edges`), with
//! `a = d_in`, `b = d_out`, `e` bytes per element, `H` heads of `c` channels:
//!
//! | layer | forward kernels (flops) | backward kernels |
//! |---|---|---|
//! | GCN | transform `2·read·a·b`, aggregate `2·(edges+out)·b`, bias+ReLU `2·out·b`; or aggregate first `2·(edges+out)·a`, then transform `2·out·a·b`, whichever needs fewer flops (as DGL's `GraphConv` picks by width; with halo rows to read, aggregating first avoids transforming them) | ReLU, aggregate (transposed), `dW`, `dX` (not for layer 0) of the same shapes |
//! | SAGE | mean `2·edges·a`, two linears `4·out·a·b`, bias+ReLU | ReLU, `dW` `4·out·a·b`, `dX` `4·out·a·b` and mean (not for layer 0) |
//! | GAT | projection `2·read·a·H·c`, scores `4·read·H·c`, edge softmax `10·(edges+out)·H`, aggregate `2·(edges+out)·H·c`, bias+ELU | ELU, aggregate twice (features and weights), softmax, scores, `dW`, `dX` (not for layer 0) |
//!
//! Each kernel takes `max(flops / peak, bytes / bandwidth) + overhead`: dense kernels move their
//! operands once, sparse kernels gather `edges` rows of `e·width` bytes plus a 4-byte index.
//! Layer 0 with sparse input features replaces `a` by the mean non-zeros per row in its
//! transform. Backward is built from the forward's kernels, not a fixed multiple.

use std::ops::Range;

use super::CostModel;
use crate::gnn::work::layer_rows;
use crate::gnn::{GnnModel, Halo, LayerKind, LayerRows};
use crate::graph::ChunkStats;
use crate::schedule::lower::{Handoff, Payload};
use crate::schedule::{Op, OpKind};
use crate::trace::MemoryCategory;

/// A device's rates for the roofline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceRates {
    /// Peak floating-point operations per second.
    pub peak_flops: f64,
    /// Memory bandwidth in bytes per second.
    pub memory_bandwidth: f64,
    /// Fixed cost of launching one kernel.
    pub overhead_ns: f64,
}

impl DeviceRates {
    fn kernel_ns(&self, (flops, bytes): (f64, f64)) -> f64 {
        (flops / self.peak_flops).max(bytes / self.memory_bandwidth) * 1e9 + self.overhead_ns
    }
}

/// Everything about the workload the analytic model needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GnnWorkload {
    /// The model.
    pub model: GnnModel,
    /// Pipelines: the layers of each stage. Graph parallelism: stage l is layer l.
    pub stage_layers: Vec<Range<usize>>,
    /// The halo rule (or exchange, for graph parallelism).
    pub halo: Halo,
    /// Per chunk (pipelines) or partition (graph parallelism).
    pub chunks: Vec<ChunkStats>,
    /// Graph parallelism with a halo exchange: `pair_rows[p][q]` rows of partition p that
    /// partition q reads.
    pub pair_rows: Vec<Vec<u64>>,
    /// Vertices.
    pub n_nodes: u64,
    /// Directed edges (twice the undirected ones).
    pub directed_edges: u64,
    /// Input feature width.
    pub features: u64,
    /// Mean non-zeros per feature row, when features are sparse.
    pub feature_nnz_per_row: Option<f64>,
    /// Optimizer state copies (Adam: 2).
    pub optimizer_copies: u64,
    /// GNNPipe: each stage keeps history buffers.
    pub history: bool,
    /// GNNPipe's cross-chunk gradient buffers per owned layer after the first: 0 (`drop`),
    /// 1 (`exact`: this epoch's), 2 (`deferred`: last epoch's, applied now, and this epoch's).
    pub gradient_buffers: u64,
    /// Graph parallelism rather than a pipeline.
    pub graph_parallel: bool,
    /// Training (labelled) vertices per chunk or partition, where the graph has vertices: a
    /// chunk without any has a loss of zero and the executor's backward of the last stage
    /// then skips its layers (candle drops a gradient multiplied by zero).
    pub labelled: Option<Vec<u64>>,
    /// GNNPipe's hybrid with graph parallelism: `chunks` are then pieces, partition g's chunk
    /// c at `g * K + c`, and `stage_layers` is per lane (`l * G + g`: layer l).
    pub hybrid: Option<HybridPieces>,
}

/// How GNNPipe's hybrid cuts the graph: G partitions of K chunks each.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridPieces {
    /// Partitions G.
    pub partitions: u32,
    /// Chunks K per partition.
    pub n_chunks: u32,
    /// `reads[piece][h]`: rows of the piece that partition h reads (0 for its own partition).
    pub reads: Vec<Vec<u64>>,
    /// Per partition: the rows its history holds per layer (its own and the rows it reads).
    pub history_rows: Vec<u64>,
    /// Per layer: whether it is the first of its pipeline stage. A device steps its stage's
    /// layers as one optimizer kernel, as GNNPipe does, so only the first layer's step pays
    /// the kernel overhead.
    pub stage_first: Vec<bool>,
}

impl GnnWorkload {
    /// Rows and edges of `layer` for chunk (or partition) `chunk`.
    pub fn rows(&self, layer: usize, chunk: usize) -> LayerRows {
        layer_rows(
            self.halo,
            layer,
            self.model.layers.len(),
            &self.chunks[chunk],
            self.n_nodes as f64,
        )
    }

    fn layers_of(&self, op: Op) -> Range<usize> {
        self.stage_layers[op.stage as usize].clone()
    }

    /// The index into `chunks` of the rows `op` computes: its chunk, or under the hybrid its
    /// partition's piece of the chunk.
    pub fn unit(&self, op: Op) -> usize {
        match &self.hybrid {
            Some(h) => ((op.stage % h.partitions) * h.n_chunks + op.chunk) as usize,
            None => op.chunk as usize,
        }
    }

    /// The `(flops, bytes)` of each kernel of a layer's forward (`backward = false`) or
    /// backward.
    pub fn kernels(&self, layer: usize, rows: &LayerRows, backward: bool) -> Vec<(f64, f64)> {
        let spec = &self.model.layers[layer];
        let e = self.model.element_bytes as f64;
        let (a, b) = (spec.d_in as f64, spec.d_out as f64);
        let a_in = match (layer, self.feature_nnz_per_row) {
            (0, Some(nnz)) => nnz.min(a),
            _ => a,
        };
        let first = layer == 0;
        let LayerRows {
            out, read, edges, ..
        } = *rows;
        let with_loops = edges + out;
        let dense = |m: f64, k: f64, n: f64, k_stored: f64| {
            (2.0 * m * k * n, (m * k_stored + k * n + m * n) * e)
        };
        let gather = |n_edges: f64, width: f64| {
            (
                2.0 * n_edges * width,
                n_edges * (width * e + 4.0) + out * width * e,
            )
        };
        let elementwise = |n: f64| (2.0 * n, 2.0 * n * e);
        let mut kernels = Vec::new();
        match (spec.kind, backward) {
            (LayerKind::Gcn, false) if self.gcn_aggregates_first(layer, rows) => {
                kernels.push(gather(with_loops, a));
                kernels.push(dense(out, a, b, a));
                kernels.push(elementwise(out * b));
            }
            (LayerKind::Gcn, true) if self.gcn_aggregates_first(layer, rows) => {
                kernels.push(elementwise(out * b));
                kernels.push(dense(out, a, b, a));
                if !first {
                    kernels.push(dense(out, b, a, b));
                    kernels.push(gather(with_loops, a));
                }
            }
            (LayerKind::Gcn, false) => {
                kernels.push(dense(read, a_in, b, a_in));
                kernels.push(gather(with_loops, b));
                kernels.push(elementwise(out * b));
            }
            (LayerKind::Gcn, true) => {
                kernels.push(elementwise(out * b));
                kernels.push(gather(with_loops, b));
                kernels.push(dense(read, a_in, b, a_in));
                if !first {
                    kernels.push(dense(read, b, a, b));
                }
            }
            // Over sparse input features, as the executor runs it: both weights on the rows
            // read (the features as they are, never made dense), then the neighbour mean at the
            // output width.
            (LayerKind::Sage, false) if self.sparse_input(layer) => {
                kernels.push(dense(read, a_in, b, a_in));
                kernels.push(dense(read, a_in, b, a_in));
                kernels.push(gather(edges, b));
                kernels.push(elementwise(out * b));
                kernels.push(elementwise(out * b));
            }
            (LayerKind::Sage, true) if self.sparse_input(layer) => {
                kernels.push(elementwise(out * b));
                kernels.push(gather(edges, b));
                kernels.push(dense(read, a_in, b, a_in));
                kernels.push(dense(read, a_in, b, a_in));
            }
            (LayerKind::Sage, false) => {
                kernels.push(gather(edges, a));
                kernels.push(dense(out, 2.0 * a, b, 2.0 * a));
                kernels.push(elementwise(out * b));
            }
            (LayerKind::Sage, true) => {
                kernels.push(elementwise(out * b));
                kernels.push(dense(out, 2.0 * a, b, 2.0 * a));
                if !first {
                    kernels.push(dense(out, b, 2.0 * a, b));
                    kernels.push(gather(edges, a));
                }
            }
            (LayerKind::Gat { heads, .. }, backward) => {
                let h = heads as f64;
                let projected = h * spec.head_width() as f64;
                let projection = dense(read, a_in, projected, a_in);
                let scores = (4.0 * read * projected, 2.0 * read * projected * e);
                let softmax = (10.0 * with_loops * h, 4.0 * with_loops * h * e);
                let aggregate = gather(with_loops, projected);
                if !backward {
                    kernels.extend([projection, scores, softmax, aggregate, elementwise(out * b)]);
                } else {
                    kernels.extend([
                        elementwise(out * b),
                        aggregate,
                        aggregate,
                        softmax,
                        scores,
                        projection,
                    ]);
                    if !first {
                        kernels.push(dense(read, projected, a, projected));
                    }
                }
            }
        }
        kernels
    }

    /// The `(flops, bytes)` of the kernels of a layer's backward that make its weight gradient
    /// (the bias's row sum and the weight product): what a split backward's `W` runs; its `I`
    /// runs the rest of [`GnnWorkload::kernels`].
    pub fn weight_kernels(&self, layer: usize, rows: &LayerRows) -> Vec<(f64, f64)> {
        let spec = &self.model.layers[layer];
        let e = self.model.element_bytes as f64;
        let (a, b) = (spec.d_in as f64, spec.d_out as f64);
        let a_in = match (layer, self.feature_nnz_per_row) {
            (0, Some(nnz)) => nnz.min(a),
            _ => a,
        };
        let dense = |m: f64, k: f64, n: f64, k_stored: f64| {
            (2.0 * m * k * n, (m * k_stored + k * n + m * n) * e)
        };
        let bias = (2.0 * rows.out * b, 2.0 * rows.out * b * e);
        match spec.kind {
            LayerKind::Gcn if self.gcn_aggregates_first(layer, rows) => {
                vec![bias, dense(rows.out, a, b, a)]
            }
            LayerKind::Gcn => vec![bias, dense(rows.read, a_in, b, a_in)],
            LayerKind::Sage if self.sparse_input(layer) => {
                let product = dense(rows.read, a_in, b, a_in);
                vec![bias, product, product]
            }
            LayerKind::Sage => vec![bias, dense(rows.out, 2.0 * a, b, 2.0 * a)],
            LayerKind::Gat { heads, .. } => {
                let projected = heads as f64 * spec.head_width() as f64;
                vec![bias, dense(rows.read, a_in, projected, a_in)]
            }
        }
    }

    /// Whether `layer` reads the graph's sparse input features.
    fn sparse_input(&self, layer: usize) -> bool {
        layer == 0 && self.feature_nnz_per_row.is_some()
    }

    /// Whether a GCN layer aggregates before transforming: when that needs fewer flops, except
    /// on sparse input features (aggregating sparse rows would be a sparse-sparse product).
    fn gcn_aggregates_first(&self, layer: usize, rows: &LayerRows) -> bool {
        if self.sparse_input(layer) {
            return false;
        }
        let spec = &self.model.layers[layer];
        let (a, b) = (spec.d_in as f64, spec.d_out as f64);
        let with_loops = rows.edges + rows.out;
        let transform_first = rows.read * a * b + with_loops * b;
        let aggregate_first = with_loops * a + rows.out * a * b;
        aggregate_first < transform_first
    }

    /// Bytes a layer stashes for backward for one chunk: `(own rows' part, halo rows' part)`.
    pub fn layer_stash(&self, layer: usize, rows: &LayerRows) -> (f64, f64) {
        let full = self.stash_of(layer, rows);
        let own_only = LayerRows {
            out: rows.out.min(rows.own),
            read: rows.read.min(rows.own),
            ..*rows
        };
        let own = self.stash_of(layer, &own_only);
        (own, full - own)
    }

    /// Bytes a split backward keeps of a layer for its `W`, as the executor's tape holds them:
    /// each dense transform's input (the rows read; none for sparse input features, which stay
    /// resident; GraphSAGE's two transforms share theirs) and its output gradient (the rows
    /// read times the transform's width: the executor transforms before it aggregates).
    pub fn layer_weight_tape(&self, layer: usize, rows: &LayerRows) -> f64 {
        let spec = &self.model.layers[layer];
        let e = self.model.element_bytes as f64;
        let (a, b) = (spec.d_in as f64, spec.d_out as f64);
        let input = if layer == 0 && self.feature_nnz_per_row.is_some() {
            0.0
        } else {
            rows.read * a * e
        };
        match spec.kind {
            LayerKind::Gcn => input + rows.read * b * e,
            LayerKind::Sage => input + 2.0 * rows.read * b * e,
            LayerKind::Gat { heads, .. } => {
                input + rows.read * heads as f64 * spec.head_width() as f64 * e
            }
        }
    }

    fn stash_of(&self, layer: usize, rows: &LayerRows) -> f64 {
        let spec = &self.model.layers[layer];
        let e = self.model.element_bytes as f64;
        let (a, b) = (spec.d_in as f64, spec.d_out as f64);
        let a_in = match (layer, self.feature_nnz_per_row) {
            (0, Some(nnz)) => nnz.min(a),
            _ => a,
        };
        // By default the layer's input rows (for the weight gradient) and its pre- and
        // post-activation output.
        let common = rows.read * a_in * e + 2.0 * rows.out * b * e;
        match spec.kind {
            // Aggregating first stashes the aggregated rows instead of the rows read.
            LayerKind::Gcn if self.gcn_aggregates_first(layer, rows) => {
                (rows.out * a + 2.0 * rows.out * b) * e
            }
            LayerKind::Gcn => common,
            // Both linears read output rows: the rows themselves and their neighbour means.
            LayerKind::Sage => (2.0 * rows.out * a + 2.0 * rows.out * b) * e,
            LayerKind::Gat { heads, .. } => {
                let h = heads as f64;
                common
                    + rows.read * h * spec.head_width() as f64 * e
                    + 2.0 * (rows.edges + rows.out) * h * e
            }
        }
    }

    /// The rows a chunk's plan holds for `layer`: as [`GnnWorkload::rows`], but a broadcast's
    /// partition still plans only the rows its edges read.
    fn plan_rows(&self, layer: usize, chunk: usize) -> LayerRows {
        let halo = match self.halo {
            Halo::Broadcast => Halo::Exchange,
            halo => halo,
        };
        layer_rows(
            halo,
            layer,
            self.model.layers.len(),
            &self.chunks[chunk],
            self.n_nodes as f64,
        )
    }

    /// Feature rows as the executor keeps them: sparse rows in both orientations (the
    /// transpose serves the weight gradient), or dense rows.
    pub fn feature_bytes(&self, rows: f64) -> u64 {
        let e = self.model.element_bytes as f64;
        match self.feature_nnz_per_row {
            Some(nnz) => (2.0 * rows * nnz * (e + 4.0)
                + 8.0 * (rows + 1.0 + self.features as f64 + 1.0))
                .ceil() as u64,
            None => (rows * self.features as f64 * e).ceil() as u64,
        }
    }

    /// One chunk's aggregation structures for `layers`, as the executor builds them
    /// (`src/exec/data.rs`): per view of the chunk (one shared by every layer, except under
    /// halo `exact`, where each layer has its own) the read-row ids and the matrices the
    /// model's layer kinds need, each with its transpose.
    fn plan_bytes(&self, layers: &[usize], chunk: usize) -> u64 {
        let (gcn, mean, gat) = self
            .model
            .layers
            .iter()
            .fold((false, false, false), |k, l| match l.kind {
                LayerKind::Gcn => (true, k.1, k.2),
                LayerKind::Sage => (k.0, true, k.2),
                LayerKind::Gat { .. } => (k.0, k.1, true),
            });
        let views: Vec<usize> = match self.halo {
            Halo::Exact => layers.to_vec(),
            _ => layers.first().copied().into_iter().collect(),
        };
        let matrix = |out: f64, read: f64, nnz: f64| 16.0 * nnz + 8.0 * (out + read + 2.0);
        views
            .into_iter()
            .map(|layer| {
                let r = self.plan_rows(layer, chunk);
                let loops = r.edges + r.out;
                let mut bytes = 4.0 * r.read;
                if gcn {
                    bytes += matrix(r.out, r.read, loops);
                }
                if mean {
                    bytes += matrix(r.out, r.read, r.edges);
                }
                if gat {
                    // The pattern's offsets and sources, and the kernels' index: offsets and
                    // transposed offsets, sources, transposed rows and edge ids.
                    bytes += 8.0 * (r.out + 1.0) + 4.0 * loops;
                    bytes += 8.0 * (r.out + 1.0 + r.read + 1.0) + 12.0 * loops;
                }
                bytes.ceil() as u64
            })
            .sum()
    }

    /// Bytes of the rows layer `layer` hands on for `chunk`, `width` elements each.
    fn boundary_bytes(&self, layer: usize, chunk: usize) -> u64 {
        let rows = self.rows(layer, chunk);
        (rows.out * self.model.layers[layer].d_out as f64 * self.model.element_bytes as f64).ceil()
            as u64
    }
}

/// The analytic cost model over a [`GnnWorkload`], with the rates of the device each stage
/// (pipelines) or partition (graph parallelism) runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticCost {
    /// The workload.
    pub workload: GnnWorkload,
    /// Rates per stage (pipelines) or per partition (graph parallelism).
    pub rates: Vec<DeviceRates>,
}

impl AnalyticCost {
    fn rates_for(&self, op: Op) -> &DeviceRates {
        if self.workload.graph_parallel {
            &self.rates[op.chunk as usize]
        } else {
            &self.rates[op.stage as usize]
        }
    }

    /// Forward plus backward time of each layer over every chunk on `rates`: what `stages:
    /// auto` balances.
    pub fn layer_times(workload: &GnnWorkload, rates: &DeviceRates) -> Vec<f64> {
        (0..workload.model.layers.len())
            .map(|layer| {
                (0..workload.chunks.len())
                    .map(|chunk| {
                        let rows = workload.rows(layer, chunk);
                        [false, true]
                            .iter()
                            .flat_map(|&backward| workload.kernels(layer, &rows, backward))
                            .map(|k| rates.kernel_ns(k))
                            .sum::<f64>()
                    })
                    .sum()
            })
            .collect()
    }
}

impl CostModel for AnalyticCost {
    fn op_ns(&self, op: Op) -> u64 {
        let w = &self.workload;
        let rates = self.rates_for(op);
        let ns: f64 = match op.kind {
            OpKind::Forward | OpKind::Backward | OpKind::InputGrad | OpKind::WeightGrad => w
                .layers_of(op)
                .map(|layer| {
                    let rows = w.rows(layer, w.unit(op));
                    let time = |kernels: Vec<(f64, f64)>| {
                        kernels.into_iter().map(|k| rates.kernel_ns(k)).sum::<f64>()
                    };
                    match op.kind {
                        OpKind::Forward => time(w.kernels(layer, &rows, false)),
                        OpKind::WeightGrad => time(w.weight_kernels(layer, &rows)),
                        OpKind::InputGrad => (time(w.kernels(layer, &rows, true))
                            - time(w.weight_kernels(layer, &rows)))
                        .max(0.0),
                        _ => time(w.kernels(layer, &rows, true)),
                    }
                })
                .sum(),
            OpKind::Optimizer => {
                // Adam reads parameters, gradients and two moments and writes three of them back.
                let layers = if w.graph_parallel {
                    0..w.model.layers.len()
                } else {
                    w.layers_of(op)
                };
                let params = w.model.parameters(layers) as f64;
                let bytes =
                    params * w.model.element_bytes as f64 * (2.0 + 1.5 * w.optimizer_copies as f64);
                let fused = match &w.hybrid {
                    Some(h) => !h.stage_first[(op.stage / h.partitions) as usize],
                    None => false,
                };
                rates.kernel_ns((10.0 * params, bytes))
                    - if fused { rates.overhead_ns } else { 0.0 }
            }
        };
        ns.round() as u64
    }

    fn handoff_bytes(&self, handoff: &Handoff) -> u64 {
        let w = &self.workload;
        let e = w.model.element_bytes as f64;
        if let Some(h) = &w.hybrid {
            let (from, to) = (handoff.from, handoff.to);
            let (g_from, g_to) = (from.stage % h.partitions, to.stage % h.partitions);
            return match handoff.payload {
                // Forwards, the owner's rows to its own next layer or the rows a peer reads;
                // backwards, their gradients from the layer above.
                Payload::Activation | Payload::Gradient => {
                    let (owner, reader) = match handoff.payload {
                        Payload::Activation => (from, g_to),
                        _ => (to, g_from),
                    };
                    let layer = (owner.stage / h.partitions) as usize;
                    let rows = match g_from == g_to {
                        true => w.rows(layer, w.unit(owner)).out,
                        false => h.reads[w.unit(owner)][reader as usize] as f64,
                    };
                    (rows * w.model.layers[layer].d_out as f64 * e).ceil() as u64
                }
                // The stage's weight gradients (from its first layer's backward, the last),
                // all-reduced within the group.
                Payload::Weights => {
                    let first = (from.stage / h.partitions) as usize;
                    let end = (first + 1..h.stage_first.len())
                        .find(|&l| h.stage_first[l])
                        .unwrap_or(h.stage_first.len());
                    (w.model.parameters(first..end) as f64 * e).ceil() as u64
                }
            };
        }
        match (w.graph_parallel, handoff.payload) {
            (false, Payload::Activation) => {
                let last = w.layers_of(handoff.from).end - 1;
                w.boundary_bytes(last, handoff.from.chunk as usize)
            }
            (false, Payload::Gradient) => {
                // The gradient of the rows the receiving stage handed on.
                let last = w.layers_of(handoff.to).end - 1;
                w.boundary_bytes(last, handoff.to.chunk as usize)
            }
            (true, Payload::Activation | Payload::Gradient) => {
                let (owner, reader, layer) = match handoff.payload {
                    Payload::Activation => {
                        (handoff.from.chunk, handoff.to.chunk, handoff.from.stage)
                    }
                    _ => (handoff.to.chunk, handoff.from.chunk, handoff.to.stage),
                };
                let rows = match w.halo {
                    Halo::Broadcast => w.chunks[owner as usize].vertices,
                    _ => w.pair_rows[owner as usize][reader as usize],
                };
                (rows as f64 * w.model.layers[layer as usize].d_out as f64 * e).ceil() as u64
            }
            (true, Payload::Weights) => {
                // The buffer each partition all-reduces: its weight gradients. The simulator
                // runs the all-reduce's steps on the links (`sim::collective`).
                let params = w.model.parameters(0..w.model.layers.len()) as f64;
                (params * e).ceil() as u64
            }
            (false, Payload::Weights) => 0,
        }
    }

    fn stash(&self, forward: Op) -> (u64, u64) {
        let w = &self.workload;
        let (own, halo) = w
            .layers_of(forward)
            .map(|layer| w.layer_stash(layer, &w.rows(layer, w.unit(forward))))
            .fold((0.0, 0.0), |acc, s| (acc.0 + s.0, acc.1 + s.1));
        (own.ceil() as u64, halo.ceil() as u64)
    }

    fn weight_stash(&self, forward: Op) -> u64 {
        let w = &self.workload;
        let kept: f64 = w
            .layers_of(forward)
            .map(|layer| w.layer_weight_tape(layer, &w.rows(layer, w.unit(forward))))
            .sum();
        kept.ceil() as u64
    }

    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        let w = &self.workload;
        let e = w.model.element_bytes;
        let Some(first) = order.first() else {
            return Vec::new();
        };
        let mut layers: Vec<usize> = if w.graph_parallel {
            (0..w.model.layers.len()).collect()
        } else {
            order.iter().flat_map(|op| w.layers_of(*op)).collect()
        };
        layers.sort_unstable();
        layers.dedup();
        let params: u64 = layers
            .iter()
            .map(|&l| w.model.layers[l].parameters())
            .sum::<u64>()
            * e;
        // The chunks (graph parallelism: the partition; the hybrid: its partition's pieces)
        // whose plans the device holds.
        let chunks: Vec<usize> = match &w.hybrid {
            _ if w.graph_parallel => vec![first.chunk as usize],
            Some(h) => {
                let g = (first.stage % h.partitions * h.n_chunks) as usize;
                (g..g + h.n_chunks as usize).collect()
            }
            None => (0..w.chunks.len()).collect(),
        };
        // The rows a history buffer holds per layer: every vertex, or under the hybrid the
        // partition's own and the rows it reads.
        let history_rows = match &w.hybrid {
            Some(h) => h.history_rows[(first.stage % h.partitions) as usize],
            None => w.n_nodes,
        };
        // Deferred gradients are kept for the rows read with gradient: every vertex, or under
        // the hybrid the partition's own (other partitions' rows from history are constants).
        let gradient_rows = match &w.hybrid {
            Some(_) => chunks.iter().map(|&c| w.chunks[c].vertices).sum(),
            None => w.n_nodes,
        };
        let features = if layers.contains(&0) {
            chunks
                .iter()
                .map(|&c| w.feature_bytes(w.plan_rows(0, c).read))
                .sum()
        } else {
            0
        };
        let graph: u64 = chunks.iter().map(|&c| w.plan_bytes(&layers, c)).sum();
        let per_layer_buffers = |enabled: bool, rows: u64| -> u64 {
            if !enabled {
                return 0;
            }
            layers
                .iter()
                .filter(|&&l| l > 0)
                .map(|&l| rows * w.model.layers[l].d_in * e)
                .sum()
        };
        vec![
            (MemoryCategory::Parameters, params),
            (MemoryCategory::Gradients, params),
            (MemoryCategory::OptimizerState, params * w.optimizer_copies),
            (MemoryCategory::Features, features),
            (MemoryCategory::Graph, graph),
            (
                MemoryCategory::History,
                per_layer_buffers(w.history, history_rows),
            ),
            (
                MemoryCategory::DeferredGradients,
                w.gradient_buffers * per_layer_buffers(w.gradient_buffers > 0, gradient_rows),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnn::Layer;

    /// One GraphSAGE layer over `features` input columns, 12 non-zeros a row when `sparse`.
    fn sage(features: u64, sparse: bool) -> GnnWorkload {
        let chunk = ChunkStats {
            vertices: 100,
            internal_edges: 600,
            in_edges: 800,
            boundary: 40,
            halo: Vec::new(),
        };
        GnnWorkload {
            model: GnnModel {
                layers: vec![Layer {
                    kind: LayerKind::Sage,
                    d_in: features,
                    d_out: 16,
                }],
                element_bytes: 4,
            },
            stage_layers: std::iter::once(0..1).collect(),
            halo: Halo::Drop,
            chunks: vec![chunk],
            pair_rows: Vec::new(),
            n_nodes: 100,
            directed_edges: 600,
            features,
            feature_nnz_per_row: sparse.then_some(12.0),
            optimizer_copies: 2,
            history: false,
            gradient_buffers: 0,
            graph_parallel: false,
            labelled: None,
            hybrid: None,
        }
    }

    fn total(kernels: &[(f64, f64)]) -> (f64, f64) {
        kernels
            .iter()
            .fold((0.0, 0.0), |(f, b), k| (f + k.0, b + k.1))
    }

    /// Over sparse features a GraphSAGE layer transforms the features as they are, then
    /// averages at its output width (as the executor runs it): its cost follows the non-zeros,
    /// not the feature width. Over dense features it follows the width.
    #[test]
    fn a_sage_layer_over_sparse_features_costs_their_non_zeros() {
        for backward in [false, true] {
            let narrow = sage(500, true);
            let wide = sage(5000, true);
            let rows = narrow.rows(0, 0);
            let (n, w) = (
                total(&narrow.kernels(0, &rows, backward)),
                total(&wide.kernels(0, &rows, backward)),
            );
            // Only the weight matrix grows with the width.
            assert_eq!(n.0, w.0, "flops, backward {backward}");
            assert!(w.1 - n.1 <= 2.0 * 4500.0 * 16.0 * 4.0, "{n:?} {w:?}");
            let dense = total(&sage(500, false).kernels(0, &rows, backward));
            assert!(dense.0 > 10.0 * n.0, "{dense:?} {n:?}");
        }
    }
}
