//! The device-profile cost tier: every op's time and memory from a [`DeviceProfile`]'s fitted
//! functions at that op's real shapes.
//!
//! [`layer_calls`] lists the kernels the executor runs for one layer's forward or backward
//! (`src/exec/layers.rs` and candle's backward of each op), in the executor's order; the
//! layer's time is its profile's `*_forward`/`*_backward` function of their summed predicted
//! time and the elements the layer touches (what candle's autograd costs beyond the kernels).
//! An op adds what the worker does around its layers: GNNPipe's history reads and writes, the
//! loss on the last stage, the surrogate product elsewhere, gradient accumulation, the Adam
//! step, and the worker's gap between ops.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::analytic::GnnWorkload;
use super::device::{DeviceProfile, Extrapolation, Kernel};
use super::CostModel;
use crate::gnn::{Halo, LayerKind};
use crate::schedule::lower::Handoff;
use crate::schedule::{Op, OpKind};
use crate::trace::MemoryCategory;

/// What the executor's training adds to a layer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainingShape {
    /// The dropout rate on layer inputs (0 without). On a sparse input, dropped entries leave
    /// the matrix, so the products after it run on the kept `1 - p` of them alone.
    pub dropout: f64,
    /// Dropout on attention coefficients.
    pub attention_dropout: bool,
    /// ELU rather than ReLU between layers.
    pub elu: bool,
}

/// One layer over one chunk, as the executor runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerShape {
    /// GCN, SAGE or GAT.
    pub kind: LayerKind,
    /// Rows computed.
    pub out: f64,
    /// Rows read (the computed ones first).
    pub read: f64,
    /// Edges aggregated, self-loops excluded.
    pub edges: f64,
    /// Input width.
    pub d_in: f64,
    /// Output width.
    pub d_out: f64,
    /// GAT heads (1 otherwise).
    pub heads: f64,
    /// Non-zeros of sparse input rows (the model's first layer), or `None` for dense rows.
    pub sparse_nnz: Option<f64>,
    /// Whether the backward computes the input's gradient (every layer but the model's first).
    pub input_grad: bool,
    /// Whether an activation follows (every layer but the model's last).
    pub activation: bool,
    /// Dropout and the non-linearity.
    pub training: TrainingShape,
}

impl LayerShape {
    fn channels(&self) -> f64 {
        match self.kind {
            LayerKind::Gat { concat: true, .. } => self.d_out / self.heads,
            _ => self.d_out,
        }
    }

    /// The elements the layer's tensors hold: its glue term.
    pub fn elements(&self) -> f64 {
        self.read * self.d_in + self.produced()
    }

    /// The elements the layer computes: its transformed rows and its output.
    fn produced(&self) -> f64 {
        let projected = match self.kind {
            LayerKind::Gat { .. } => self.heads * self.channels(),
            _ => self.d_out,
        };
        self.read * projected + self.out * self.d_out
    }

    /// The elements of the gradients a backward builds (autograd allocates each one and sums
    /// into it): the input's when it is wanted, the transformed rows' and the output's. A
    /// sparse input, or a dense one that is the model's input, gets none.
    pub fn gradient_elements(&self) -> f64 {
        let input = if self.input_grad {
            self.read * self.d_in
        } else {
            0.0
        };
        input + self.produced()
    }

    /// The elements behind a mask in a backward: a dropped input's, when its gradient is
    /// wanted (autograd differentiates the product by the mask both ways), and the
    /// activation's output.
    pub fn masked_elements(&self) -> f64 {
        let dropped = if self.input_grad && self.training.dropout > 0.0 {
            self.read * self.d_in
        } else {
            0.0
        };
        let activated = if self.activation {
            self.out * self.d_out
        } else {
            0.0
        };
        dropped + activated
    }

    /// The non-zeros of a sparse input that its products see: all of them, or after dropout
    /// the kept share.
    pub fn kept_nnz(&self) -> Option<f64> {
        self.sparse_nnz
            .map(|nnz| nnz * (1.0 - self.training.dropout))
    }

    /// The terms of the layer's memory functions (stash and temporaries): the input's elements
    /// when dense and its non-zeros when sparse (apart: a backward allocates nothing per
    /// non-zero, a dropout keeps a copy of them), the transformed rows, the output rows, the
    /// edges (per head for GAT), the dropout copy of either input, and the activation output.
    pub fn memory_terms(&self) -> [f64; 8] {
        let (dense, sparse) = match self.sparse_nnz {
            Some(nnz) => (0.0, nnz),
            None => (self.read * self.d_in, 0.0),
        };
        let dropout = if self.training.dropout > 0.0 {
            1.0
        } else {
            0.0
        };
        let activation = if self.activation {
            self.out * self.d_out
        } else {
            0.0
        };
        let (transformed, edges) = match self.kind {
            LayerKind::Gat { .. } => (
                self.read * self.heads * self.channels(),
                (self.edges + self.out) * self.heads,
            ),
            _ => (self.read * self.d_out, self.edges + self.out),
        };
        [
            dense,
            sparse,
            transformed,
            self.out * self.d_out,
            edges,
            dropout * dense,
            dropout * sparse,
            activation,
        ]
    }

    /// The layer's glue function, stash function and temporaries function of its forward
    /// (`backward = false`) or backward.
    pub fn functions(&self, backward: bool) -> (Kernel, Kernel, Kernel) {
        match (self.kind, backward) {
            (LayerKind::Gcn, false) => {
                (Kernel::GcnForward, Kernel::GcnStash, Kernel::GcnTemporaries)
            }
            (LayerKind::Gcn, true) => (
                Kernel::GcnBackward,
                Kernel::GcnStash,
                Kernel::GcnBackwardTemporaries,
            ),
            (LayerKind::Sage, false) => (
                Kernel::SageForward,
                Kernel::SageStash,
                Kernel::SageTemporaries,
            ),
            (LayerKind::Sage, true) => (
                Kernel::SageBackward,
                Kernel::SageStash,
                Kernel::SageBackwardTemporaries,
            ),
            (LayerKind::Gat { .. }, false) => {
                (Kernel::GatForward, Kernel::GatStash, Kernel::GatTemporaries)
            }
            (LayerKind::Gat { .. }, true) => (
                Kernel::GatBackward,
                Kernel::GatStash,
                Kernel::GatBackwardTemporaries,
            ),
        }
    }
}

/// A dense product's terms, `(m, k) x (k, n)` (or its gradients): the elements it touches, its
/// multiply-adds, and those a microkernel of 8-wide vectors (an AVX2 register of f32) spends on
/// padding `k` and `n` up to a multiple of 8. On this project's CPU a product whose narrow side
/// is 4 wide (a last layer's classes) took 1.2-2x the time per multiply-add of one 16 wide.
pub fn dense_terms(m: f64, k: f64, n: f64) -> Vec<f64> {
    let padded = |v: f64| (v / 8.0).ceil() * 8.0;
    vec![
        m * k + k * n + m * n,
        m * k * n,
        m * (padded(k) * padded(n) - k * n),
    ]
}

/// The kernels of one layer's forward (`backward = false`) or backward, with their terms, in
/// the executor's order.
pub fn layer_calls(s: &LayerShape, backward: bool) -> Vec<(Kernel, Vec<f64>)> {
    let (a, b) = (s.d_in, s.d_out);
    let projected = match s.kind {
        LayerKind::Gat { .. } => s.heads * s.channels(),
        _ => b,
    };
    let dense = |kernel, m: f64, k: f64, n: f64| (kernel, dense_terms(m, k, n));
    let elementwise = |kernel, n: f64| (kernel, vec![n]);
    // A sparse product over `nnz` edges writes `rows` rows of `w` and gathers from a table of
    // `table` rows.
    let aggregate = |kernel, nnz: f64, rows: f64, table: f64, w: f64| {
        (
            kernel,
            vec![nnz, rows, rows * w, nnz * w, table * w, nnz * row_lines(w)],
        )
    };
    // `X W` for the layer's input; a sparse input after dropout keeps only its kept entries.
    let kept = s.kept_nnz();
    let transform = |n: f64| match kept {
        Some(nnz) => (Kernel::SparseForward, vec![nnz, s.read * n, nnz * n]),
        None => dense(Kernel::DenseForward, s.read, a, n),
    };
    let weight_grad = |n: f64| match kept {
        Some(nnz) => (
            Kernel::SparseGradWeight,
            vec![nnz, a * n, nnz * n, s.read * n],
        ),
        None => dense(Kernel::DenseGradWeight, s.read, a, n),
    };
    let (act_f, act_b) = if s.training.elu {
        (Kernel::EluForward, Kernel::EluBackward)
    } else {
        (Kernel::ReluForward, Kernel::ReluBackward)
    };
    let mut calls = Vec::new();
    if !backward {
        if s.training.dropout > 0.0 {
            calls.push(match s.sparse_nnz {
                Some(nnz) => (Kernel::DropoutSparse, vec![s.read + a, nnz]),
                None => elementwise(Kernel::DropoutDense, s.read * a),
            });
        }
        match s.kind {
            LayerKind::Gcn => {
                calls.push(transform(b));
                calls.push(aggregate(
                    Kernel::Aggregate,
                    s.edges + s.out,
                    s.out,
                    s.read,
                    b,
                ));
            }
            LayerKind::Sage => {
                calls.push(transform(b));
                calls.push(transform(b));
                calls.push(aggregate(Kernel::Aggregate, s.edges, s.out, s.read, b));
                calls.push(elementwise(Kernel::Elementwise, s.out * b));
            }
            LayerKind::Gat { concat, .. } => {
                calls.push(transform(projected));
                let nnz = s.edges + s.out;
                if s.training.attention_dropout {
                    calls.push(elementwise(Kernel::DropoutDense, nnz * s.heads));
                }
                calls.push((
                    Kernel::AttentionForward,
                    vec![nnz, nnz * s.heads, s.read * projected, nnz * projected],
                ));
                if !concat {
                    calls.push(elementwise(Kernel::Elementwise, s.out * projected));
                }
            }
        }
        calls.push(elementwise(Kernel::Elementwise, s.out * b));
        if s.activation {
            calls.push(elementwise(act_f, s.out * b));
        }
    } else {
        if s.activation {
            calls.push(elementwise(act_b, s.out * b));
        }
        // The bias gradient sums the output gradient's rows.
        calls.push(elementwise(Kernel::Elementwise, s.out * b));
        match s.kind {
            LayerKind::Gcn => {
                calls.push(aggregate(
                    Kernel::AggregateTranspose,
                    s.edges + s.out,
                    s.read,
                    s.out,
                    b,
                ));
                calls.push(weight_grad(b));
                if s.input_grad {
                    calls.push(dense(Kernel::DenseGradInput, s.read, a, b));
                }
            }
            LayerKind::Sage => {
                calls.push(aggregate(
                    Kernel::AggregateTranspose,
                    s.edges,
                    s.read,
                    s.out,
                    b,
                ));
                calls.push(weight_grad(b));
                calls.push(weight_grad(b));
                if s.input_grad {
                    calls.push(dense(Kernel::DenseGradInput, s.read, a, b));
                    calls.push(dense(Kernel::DenseGradInput, s.read, a, b));
                    calls.push(elementwise(Kernel::Elementwise, s.read * a));
                }
            }
            LayerKind::Gat { concat, .. } => {
                if !concat {
                    calls.push(elementwise(Kernel::Elementwise, s.out * projected));
                }
                let nnz = s.edges + s.out;
                calls.push((
                    Kernel::AttentionBackward,
                    vec![nnz, nnz * s.heads, s.read * projected, nnz * projected],
                ));
                calls.push(weight_grad(projected));
                if s.input_grad {
                    calls.push(dense(Kernel::DenseGradInput, s.read, a, projected));
                }
            }
        }
        if s.training.dropout > 0.0 && s.input_grad && s.sparse_nnz.is_none() {
            calls.push(elementwise(Kernel::Elementwise, s.read * a));
        }
    }
    calls
}

/// The kernels of one layer's backward that make its weight gradient: the bias's row sum and
/// the weight products (what a split backward's `W` runs; `I` runs the rest of
/// [`layer_calls`]).
pub fn weight_calls(s: &LayerShape) -> Vec<(Kernel, Vec<f64>)> {
    let (a, b) = (s.d_in, s.d_out);
    let n = match s.kind {
        LayerKind::Gat { .. } => s.heads * s.channels(),
        _ => b,
    };
    let product = match s.kept_nnz() {
        Some(nnz) => (
            Kernel::SparseGradWeight,
            vec![nnz, a * n, nnz * n, s.read * n],
        ),
        None => (Kernel::DenseGradWeight, dense_terms(s.read, a, n)),
    };
    let products = if matches!(s.kind, LayerKind::Sage) {
        2
    } else {
        1
    };
    let mut calls = vec![(Kernel::Elementwise, vec![s.out * b])];
    calls.extend(std::iter::repeat_n(product, products));
    calls
}

/// The predicted time of one layer's forward or backward: its glue function of its kernels'
/// summed time and the elements it touches ([`glue_terms`]). Extrapolations are pushed onto
/// `flags`.
pub fn layer_ns(
    profile: &DeviceProfile,
    shape: &LayerShape,
    backward: bool,
    flags: &mut Vec<Extrapolation>,
) -> f64 {
    let terms = glue_terms(shape, backward, |k, terms| eval(profile, k, terms, flags));
    let (glue, _, _) = shape.functions(backward);
    match profile.kernels.get(&glue) {
        Some(_) => eval(profile, glue, &terms, flags),
        // No glue function: the kernels alone (a forward's dropout, then the others).
        None => terms[..if backward { 1 } else { 2 }].iter().sum(),
    }
}

/// The cache lines a gathered row of `width` f32 values spans: a row of 3 values costs its line
/// as one of 16 does.
pub fn row_lines(width: f64) -> f64 {
    (width / 16.0).ceil().max(1.0)
}

/// The terms of a layer's glue function ([`LayerShape::functions`]) from its kernels' prices
/// (`price`): a forward's input dropout apart from its other kernels (the dropout is the
/// first to touch the layer's input, cold as in its microbenchmark; the others find their
/// operands just written), then the elements; a backward's kernels, then the elements of its
/// gradients and those behind a mask; GAT's, then attention's values per edge and head.
pub fn glue_terms(
    shape: &LayerShape,
    backward: bool,
    mut price: impl FnMut(Kernel, &[f64]) -> f64,
) -> Vec<f64> {
    let input_dropout = !backward && shape.training.dropout > 0.0;
    let (mut dropout, mut kernels) = (0.0, 0.0);
    for (i, (kernel, terms)) in layer_calls(shape, backward).into_iter().enumerate() {
        let ns = price(kernel, &terms);
        if i == 0 && input_dropout {
            dropout += ns;
        } else {
            kernels += ns;
        }
    }
    let mut terms = if backward {
        vec![kernels, shape.gradient_elements(), shape.masked_elements()]
    } else {
        vec![dropout, kernels, shape.elements()]
    };
    if let LayerKind::Gat { .. } = shape.kind {
        // Attention's tensors of one value per edge and head (scores, coefficients and their
        // gradients), self-loops included.
        terms.push((shape.edges + shape.out) * shape.heads);
    }
    terms
}

/// A history buffer's kernel over `rows` rows `width` wide, none when there are no rows (the
/// executor then makes no call).
fn history(
    profile: &DeviceProfile,
    kernel: Kernel,
    rows: f64,
    width: f64,
    flags: &mut Vec<Extrapolation>,
) -> f64 {
    if rows > 0.0 {
        eval(profile, kernel, &[rows, rows * width], flags)
    } else {
        0.0
    }
}

fn eval(
    profile: &DeviceProfile,
    kernel: Kernel,
    terms: &[f64],
    flags: &mut Vec<Extrapolation>,
) -> f64 {
    let (value, beyond) = profile.eval(kernel, terms);
    flags.extend(beyond);
    value
}

/// The device-profile cost model: op times and memory from each stage's profile at the
/// workload's shapes; hand-off bytes and resident memory as the analytic model counts them.
pub struct DeviceCost<'a> {
    /// The workload (shapes, stage layers, halo rule).
    pub workload: &'a GnnWorkload,
    /// Training's dropout and non-linearity.
    pub training: TrainingShape,
    /// The profile of each stage's device (pipelines) or each partition's (graph parallelism).
    pub profiles: Vec<&'a DeviceProfile>,
    /// Bytes and resident memory.
    pub fallback: &'a dyn CostModel,
    /// Output classes (the loss's width).
    pub classes: f64,
    /// Kernels evaluated past their calibrated range, the largest ratio of each.
    flags: RefCell<BTreeMap<(Kernel, &'static str), f64>>,
    /// Each profile's time functions timed warm ([`DeviceProfile::warm`]), where measured.
    warm: Vec<Option<DeviceProfile>>,
    /// The data between two uses of an op's data ([`DeviceCost::footprint`]), once computed.
    footprint: Cell<Option<f64>>,
    /// Per stage, the most chunks the schedule holds between a forward and its backward
    /// ([`DeviceCost::in_flight`]); `None`: every chunk.
    in_flight: Option<Vec<u32>>,
}

impl<'a> DeviceCost<'a> {
    /// A cost model over `workload` with one profile per stage (or partition).
    pub fn new(
        workload: &'a GnnWorkload,
        training: TrainingShape,
        profiles: Vec<&'a DeviceProfile>,
        fallback: &'a dyn CostModel,
    ) -> Self {
        let classes = workload.model.layers.last().map_or(1, |l| l.d_out) as f64;
        let warm = profiles.iter().map(|p| p.warm()).collect();
        DeviceCost {
            workload,
            training,
            profiles,
            fallback,
            classes,
            flags: RefCell::new(BTreeMap::new()),
            warm,
            footprint: Cell::new(None),
            in_flight: None,
        }
    }

    /// The same model for a schedule that holds at most `peaks[s]` chunks on stage `s` between
    /// a forward and its backward ([`crate::schedule::peak_in_flight`]): between two uses of
    /// a chunk's data only that many chunks' stashes pass through the caches, not all of them
    /// (1F1B holds as many as there are stages from `s` to the last, GPipe every chunk).
    pub fn in_flight(mut self, peaks: Vec<u32>) -> Self {
        self.in_flight = Some(peaks);
        self.footprint.set(None);
        self
    }

    /// Every kernel that was evaluated past its calibrated range, with how far.
    pub fn extrapolations(&self) -> Vec<Extrapolation> {
        self.flags
            .borrow()
            .iter()
            .map(|(&(kernel, term), &ratio)| Extrapolation {
                kernel,
                term,
                ratio,
            })
            .collect()
    }

    /// The data that passes through the caches between two uses of an op's data
    /// ([`DeviceCost::footprint`]) and how warm the first stage's (partition's) profile finds
    /// an op's data at that size; `None` where no profile measured its warm functions.
    pub fn cache_warmth(&self) -> Option<(f64, f64)> {
        self.warm.first()?.as_ref()?;
        let bytes = self.footprint();
        Some((bytes, self.profiles[0].warmth(bytes)))
    }

    /// The index of the profile `op` runs on.
    fn device_of(&self, op: Op) -> usize {
        let w = self.workload;
        let i = if w.graph_parallel { op.chunk } else { op.stage } as usize;
        i.min(self.profiles.len() - 1)
    }

    fn profile_of(&self, op: Op) -> &DeviceProfile {
        self.profiles[self.device_of(op)]
    }

    /// The data that passes through the caches between two uses of an op's data: what each
    /// forward keeps for its backward (inputs, activations, the graph's rows), of the chunks
    /// a stage holds at once where the schedule is known ([`DeviceCost::in_flight`]), every
    /// chunk's otherwise; each device's parameters with their gradients and optimizer state;
    /// and its workers' matrix-product buffers. The workers of one machine share its
    /// last-level cache, so all of that passes through it, and the profile's
    /// [`DeviceProfile::warmth`] at this size says how warm the op finds its data.
    fn footprint(&self) -> f64 {
        if let Some(bytes) = self.footprint.get() {
            return bytes;
        }
        let w = self.workload;
        let all = 0..w.model.layers.len();
        let (forwards, parameters, devices): (Vec<Op>, u64, usize) = if w.graph_parallel {
            let partitions = w.chunks.len() as u32;
            let layers = w.model.layers.len() as u32;
            (
                (0..partitions)
                    .flat_map(|p| (0..layers).map(move |l| Op::forward(p, l)))
                    .collect(),
                w.model.parameters(all) * u64::from(partitions),
                partitions as usize,
            )
        } else {
            let chunks = w
                .hybrid
                .as_ref()
                .map_or(w.chunks.len() as u32, |h| h.n_chunks);
            let stages = w.stage_layers.len() as u32;
            (
                (0..stages)
                    .flat_map(|s| (0..chunks).map(move |c| Op::forward(c, s)))
                    .collect(),
                w.stage_layers
                    .iter()
                    .map(|layers| w.model.parameters(layers.clone()))
                    .sum(),
                stages as usize,
            )
        };
        // A stage's stash, all its chunks' or, where the schedule holds fewer at once, that
        // share of it (not for graph parallelism or the hybrid, whose units are not chunks of
        // a stage).
        let held = |f: Op| match &self.in_flight {
            Some(peaks) if !w.graph_parallel && w.hybrid.is_none() => {
                let chunks = w.chunks.len().max(1) as f64;
                let peak = peaks
                    .get(f.stage as usize)
                    .map_or(chunks, |&p| f64::from(p));
                peak.min(chunks) / chunks
            }
            _ => 1.0,
        };
        let stash: f64 = forwards
            .iter()
            .map(|&f| self.stash(f).0 as f64 * held(f))
            .sum();
        let copies = 2 + w.optimizer_copies;
        let parameters = (parameters * copies * w.model.element_bytes) as f64;
        let buffers = (0..devices)
            .map(|d| self.profiles[d.min(self.profiles.len() - 1)].matrix_buffer_bytes as f64)
            .sum::<f64>();
        let bytes = stash + parameters + buffers;
        self.footprint.set(Some(bytes));
        bytes
    }

    fn layers_of(&self, op: Op) -> std::ops::Range<usize> {
        let w = self.workload;
        if w.graph_parallel {
            op.stage as usize..op.stage as usize + 1
        } else {
            w.stage_layers[op.stage as usize].clone()
        }
    }

    /// The shape of `layer` for `chunk`, as the executor runs it.
    pub fn shape(&self, layer: usize, chunk: usize) -> LayerShape {
        let w = self.workload;
        let spec = &w.model.layers[layer];
        let rows = w.rows(layer, chunk);
        let first = layer == 0;
        let heads = match spec.kind {
            LayerKind::Gat { heads, .. } => heads as f64,
            _ => 1.0,
        };
        LayerShape {
            kind: spec.kind,
            out: rows.out,
            read: rows.read,
            edges: rows.edges,
            d_in: spec.d_in as f64,
            d_out: spec.d_out as f64,
            heads,
            sparse_nnz: first.then(|| {
                rows.read
                    * w.feature_nnz_per_row
                        .unwrap_or(spec.d_in as f64)
                        .min(spec.d_in as f64)
            }),
            input_grad: !first,
            activation: layer + 1 < w.model.layers.len(),
            training: self.training,
        }
    }

    /// The elements a stage whose first layer is `layer` receives for `chunk` (its input):
    /// the rows the layer reads with exact halos, else the chunk's own.
    fn received_elements(&self, layer: usize, chunk: usize) -> f64 {
        let first = self.shape(layer, chunk);
        let rows = if self.workload.halo == Halo::Exact {
            first.read
        } else {
            first.out
        };
        rows * first.d_in
    }

    /// The share of a chunk's halo rows a stale layer reads with their gradient: none without
    /// GNNPipe's gradient buffers, all of them with `deferred`'s, and with `exact`'s the rows
    /// of earlier chunks, taken as `chunk / (K - 1)` of them (none for the first chunk, all for
    /// the last: a locality chunk's halo lies mostly in the chunks grown just before and just
    /// after it).
    fn halo_with_gradient(&self, unit: usize) -> f64 {
        let w = self.workload;
        let (chunk, chunks) = match &w.hybrid {
            Some(h) => (unit % h.n_chunks as usize, h.n_chunks as usize),
            None => (unit, w.chunks.len()),
        };
        match w.gradient_buffers {
            0 => 0.0,
            1 => chunk as f64 / (chunks.max(2) - 1) as f64,
            _ => 1.0,
        }
    }

    /// A whole backward's predicted time, without the op gap.
    fn backward_ns(&self, op: Op, profile: &DeviceProfile, flags: &mut Vec<Extrapolation>) -> f64 {
        let w = self.workload;
        let chunk = w.unit(op);
        let layers = self.layers_of(op);
        let n_layers = w.model.layers.len();
        let mut ns = 0.0;
        let last = layers.end == n_layers;
        let top = self.shape(layers.end - 1, chunk);
        let labelled = w.labelled.as_ref().map(|l| l[chunk] as f64);
        // The gradient of the stage's input (every stage but the first), zeros when nothing
        // reached it; with GNNPipe's gradient buffers, what other chunks' reads left for this
        // chunk's rows is read and added to it.
        let input_rows = self.received_elements(layers.start, chunk);
        let buffered_input = if w.gradient_buffers > 0 && layers.start > 0 {
            let first = self.shape(layers.start, chunk);
            history(profile, Kernel::HistoryRead, first.out, first.d_in, flags)
                + eval(profile, Kernel::Elementwise, &[input_rows], flags)
        } else {
            0.0
        };
        // With GNNPipe's buffers, every layer past the model's first reads its halo rows from
        // the history as a leaf: the concatenation's gradient is split (zeros where nothing
        // reached it) and the halo rows' part added to their buffers, the stage's first layer
        // too.
        let halo_gradient = |layer: usize, shape: &LayerShape, flags: &mut Vec<Extrapolation>| {
            if w.gradient_buffers > 0 && layer > 0 {
                let halo = (shape.read - shape.out) * self.halo_with_gradient(chunk);
                eval(profile, Kernel::RowCopy, &[shape.read * shape.d_in], flags)
                    + history(profile, Kernel::HistoryAdd, halo, shape.d_in, flags)
            } else {
                0.0
            }
        };
        if last && labelled == Some(0.0) {
            // A zero loss: candle skips the backward of everything beneath it, and the
            // input's gradient is made of zeros.
            ns += eval(
                profile,
                Kernel::Loss,
                &[top.out * self.classes, 0.0, 0.0, 0.0],
                flags,
            );
            for layer in layers.clone() {
                ns += halo_gradient(layer, &self.shape(layer, chunk), flags);
            }
            if layers.start > 0 {
                ns += eval(profile, Kernel::Elementwise, &[input_rows], flags) + buffered_input;
            }
            return ns;
        }
        if last {
            let rows = labelled.unwrap_or(top.out);
            ns += eval(
                profile,
                Kernel::Loss,
                &[
                    top.out * self.classes,
                    rows * self.classes,
                    f64::from(u8::from(rows > 0.0)),
                    rows,
                ],
                flags,
            );
        } else {
            // The surrogate `(out * grad).sum()` and its backward.
            ns += eval(profile, Kernel::Objective, &[top.out * top.d_out], flags);
        }
        for layer in layers.clone().rev() {
            let shape = self.shape(layer, chunk);
            ns += layer_ns(profile, &shape, true, flags);
            ns += halo_gradient(layer, &shape, flags);
            if w.gradient_buffers > 0 && layer > layers.start {
                // The buffered neighbour gradients of this chunk's rows, read, as one more
                // surrogate objective on the layer's input, with its backward (the stage's
                // first layer adds them to its input's gradient instead).
                ns += history(profile, Kernel::HistoryRead, shape.out, shape.d_in, flags);
                ns += eval(profile, Kernel::Objective, &[shape.out * shape.d_in], flags);
            }
        }
        ns += buffered_input;
        // Summing this chunk's parameter gradients into the stage's.
        let params = w.model.parameters(layers) as f64;
        ns += eval(profile, Kernel::Elementwise, &[params], flags);
        ns
    }

    /// The weight-gradient half of a backward: each layer's bias and weight products and the
    /// sum into the stage's gradients, without the op gap. A chunk with no labelled vertex on
    /// the last stage has no backward at all.
    fn weight_ns(&self, op: Op, profile: &DeviceProfile, flags: &mut Vec<Extrapolation>) -> f64 {
        let w = self.workload;
        let layers = self.layers_of(op);
        let labelled = w.labelled.as_ref().map(|l| l[w.unit(op)] as f64);
        if layers.end == w.model.layers.len() && labelled == Some(0.0) {
            return 0.0;
        }
        let mut ns: f64 = layers
            .clone()
            .map(|layer| {
                weight_calls(&self.shape(layer, w.unit(op)))
                    .into_iter()
                    .map(|(k, terms)| eval(profile, k, &terms, flags))
                    .sum::<f64>()
            })
            .sum();
        let params = w.model.parameters(layers) as f64;
        ns += eval(profile, Kernel::Elementwise, &[params], flags);
        ns
    }

    /// What `forward`'s layer `layer` keeps for its backward: its stash function, and the
    /// input tensors the worker builds for it, which the autograd graph holds too: the
    /// received rows' copy (a stage's first layer past the model's first), and under stale
    /// halos the history's halo rows and their concatenation with the own rows (graph
    /// parallelism: the own rows' copy, the received halo rows and the concatenation).
    fn layer_stash(
        &self,
        profile: &DeviceProfile,
        layer: usize,
        forward: Op,
        flags: &mut Vec<Extrapolation>,
    ) -> f64 {
        let w = self.workload;
        let chunk = w.unit(forward);
        let shape = self.shape(layer, chunk);
        let (_, stash, _) = shape.functions(false);
        let fitted = eval(profile, stash, &shape.memory_terms(), flags);
        if fitted <= 0.0 || layer == 0 {
            return fitted;
        }
        let mut elements = 0.0;
        if w.graph_parallel {
            elements += 2.0 * shape.read * shape.d_in;
        } else {
            if layer == self.layers_of(forward).start {
                elements += self.received_elements(layer, chunk);
            }
            if w.halo == Halo::Stale {
                elements += (2.0 * shape.read - shape.out) * shape.d_in;
            }
        }
        fitted + elements * w.model.element_bytes as f64
    }

    /// The most `op` allocates beyond the stash while it runs (unscaled): a forward's layer
    /// temporaries over what its earlier layers already keep; a backward's most of each
    /// layer's temporaries with its output's gradient (the objective's temporaries for the top
    /// layer: the loss's on the last stage, the surrogate's elsewhere) and the parameter
    /// gradients of the layers after it (candle holds them to the end), and of the sum of the
    /// chunk's gradients into the stage's; `W`, its parameter gradients; the optimizer step,
    /// its copies of the largest tensor.
    fn transient_bytes(
        &self,
        op: Op,
        profile: &DeviceProfile,
        flags: &mut Vec<Extrapolation>,
    ) -> f64 {
        let w = self.workload;
        let chunk = w.unit(op);
        let layers = self.layers_of(op);
        let element = w.model.element_bytes as f64;
        let gradients = |range: std::ops::Range<usize>| w.model.parameters(range) as f64 * element;
        match op.kind {
            OpKind::Forward => {
                let (mut kept, mut most) = (0.0f64, 0.0f64);
                for layer in layers.clone() {
                    let shape = self.shape(layer, chunk);
                    let (_, _, temporaries) = shape.functions(false);
                    kept += self.layer_stash(profile, layer, op, flags);
                    most =
                        most.max(kept + eval(profile, temporaries, &shape.memory_terms(), flags));
                }
                (most - kept).max(0.0)
            }
            OpKind::Backward | OpKind::InputGrad => {
                let last = layers.end == w.model.layers.len();
                let top = self.shape(layers.end - 1, chunk);
                let labelled = w.labelled.as_ref().map_or(top.out, |l| l[chunk] as f64);
                if last && labelled == 0.0 {
                    // A zero loss: only the input's gradient, zeros.
                    return if layers.start > 0 {
                        self.received_elements(layers.start, chunk) * element
                    } else {
                        0.0
                    };
                }
                // The objective (the loss on the last stage, elsewhere the surrogate product
                // with the received gradient) gives the top layer its output's gradient; each
                // layer beneath gets its own from the layer above.
                let objective = if last {
                    eval(
                        profile,
                        Kernel::LossTemporaries,
                        &[top.out * self.classes, labelled * self.classes],
                        flags,
                    )
                } else {
                    eval(
                        profile,
                        Kernel::ObjectiveTemporaries,
                        &[top.out * top.d_out],
                        flags,
                    )
                };
                let mut most = 2.0 * gradients(layers.clone());
                for layer in layers.clone() {
                    let shape = self.shape(layer, chunk);
                    let (_, _, temporaries) = shape.functions(true);
                    let output = if layer + 1 == layers.end {
                        objective
                    } else {
                        shape.out * shape.d_out * element
                    };
                    let later = gradients(layer + 1..layers.end);
                    most = most.max(
                        output + later + eval(profile, temporaries, &shape.memory_terms(), flags),
                    );
                }
                most
            }
            OpKind::WeightGrad => gradients(layers),
            OpKind::Optimizer => {
                let layers = if w.graph_parallel {
                    0..w.model.layers.len()
                } else {
                    layers
                };
                let largest = w.model.layers[layers]
                    .iter()
                    .map(|l| l.largest_tensor())
                    .max()
                    .unwrap_or(0);
                eval(profile, Kernel::AdamTemporaries, &[largest as f64], flags)
            }
        }
    }

    /// The op's kernels and glue, priced with `profile`'s functions (no gap).
    fn kernels_ns(&self, op: Op, profile: &DeviceProfile, flags: &mut Vec<Extrapolation>) -> f64 {
        let w = self.workload;
        let chunk = w.unit(op);
        let layers = self.layers_of(op);
        let n_layers = w.model.layers.len();
        let mut ns = 0.0;
        match op.kind {
            OpKind::Forward => {
                if !w.graph_parallel && layers.start > 0 {
                    // The received rows become the stage's input, a leaf of its own (a copy).
                    let bytes =
                        self.received_elements(layers.start, chunk) * w.model.element_bytes as f64;
                    ns += eval(profile, Kernel::HandoffCopy, &[bytes], flags);
                }
                for layer in layers.clone() {
                    let shape = self.shape(layer, chunk);
                    ns += layer_ns(profile, &shape, false, flags);
                    let input_rows = shape.read * shape.d_in;
                    if w.graph_parallel && layer > 0 {
                        // The partition's rows and the received halo rows, concatenated.
                        ns += eval(profile, Kernel::RowCopy, &[input_rows], flags);
                    }
                    if w.halo == Halo::Stale && layer > 0 {
                        // The history: own rows written into it, halo rows read out of it
                        // (with GNNPipe's gradient buffers, copied again into a leaf), and
                        // the own and halo rows concatenated.
                        let halo = shape.read - shape.out;
                        let leaf = halo * self.halo_with_gradient(chunk);
                        ns += history(profile, Kernel::HistoryWrite, shape.out, shape.d_in, flags);
                        ns += history(profile, Kernel::HistoryRead, halo, shape.d_in, flags);
                        ns += eval(
                            profile,
                            Kernel::RowCopy,
                            &[leaf * shape.d_in + input_rows],
                            flags,
                        );
                    }
                }
                if w.graph_parallel && op.stage as usize + 1 < n_layers {
                    // The rows each reader needs, gathered.
                    let layer = op.stage as usize;
                    let sent: f64 = w.pair_rows[chunk].iter().map(|&r| r as f64).sum::<f64>()
                        * w.model.layers[layer].d_out as f64;
                    ns += eval(profile, Kernel::RowCopy, &[sent], flags);
                }
            }
            OpKind::Backward => ns += self.backward_ns(op, profile, flags),
            OpKind::WeightGrad => ns += self.weight_ns(op, profile, flags),
            OpKind::InputGrad => {
                let whole = self.backward_ns(op, profile, flags);
                ns += (whole - self.weight_ns(op, profile, flags)).max(0.0);
            }
            OpKind::Optimizer => {
                let layers = if w.graph_parallel {
                    0..n_layers
                } else {
                    w.stage_layers[op.stage as usize].clone()
                };
                let tensors = w.model.parameter_tensors(layers.clone()) as f64;
                let params = w.model.parameters(layers) as f64;
                ns += eval(profile, Kernel::Adam, &[tensors, params], flags);
            }
        }
        ns
    }

    fn record(&self, flags: Vec<Extrapolation>) {
        let mut all = self.flags.borrow_mut();
        for f in flags {
            let entry = all.entry((f.kernel, f.term)).or_insert(0.0);
            *entry = entry.max(f.ratio);
        }
    }
}

impl CostModel for DeviceCost<'_> {
    /// The op's kernels and glue priced cold, less the share of their warm saving that the
    /// run's data leaves in the caches ([`DeviceCost::footprint`]), and the worker's gap.
    fn op_ns(&self, op: Op) -> u64 {
        let profile = self.profile_of(op);
        let mut flags = Vec::new();
        let mut ns = self.kernels_ns(op, profile, &mut flags);
        if let Some(warm) = &self.warm[self.device_of(op)] {
            let warmth = profile.warmth(self.footprint());
            if warmth > 0.0 {
                let warm_ns = self.kernels_ns(op, warm, &mut Vec::new());
                ns -= warmth * (ns - warm_ns).max(0.0);
            }
        }
        self.record(flags);
        (ns + profile.gap_ns as f64).round() as u64
    }

    fn handoff_bytes(&self, handoff: &Handoff) -> u64 {
        self.fallback.handoff_bytes(handoff)
    }

    fn stash(&self, forward: Op) -> (u64, u64) {
        let profile = self.profile_of(forward);
        let mut flags = Vec::new();
        let bytes: f64 = self
            .layers_of(forward)
            .map(|layer| self.layer_stash(profile, layer, forward, &mut flags))
            .sum();
        self.record(flags);
        if bytes > 0.0 {
            ((bytes * profile.stash_scale).ceil() as u64, 0)
        } else {
            self.fallback.stash(forward)
        }
    }

    /// What `W` reads: byte counts of the executor's tape, as the roofline's model counts them.
    fn weight_stash(&self, forward: Op) -> u64 {
        self.fallback.weight_stash(forward)
    }

    fn transient(&self, op: Op) -> u64 {
        let profile = self.profile_of(op);
        let mut flags = Vec::new();
        let bytes = self.transient_bytes(op, profile, &mut flags);
        self.record(flags);
        (bytes * profile.workspace_scale).ceil() as u64
    }

    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        let mut resident = self.fallback.resident_bytes(order);
        // The worker's matrix-product buffer, held from before the first epoch; temporaries
        // are each op's own (`transient`).
        let matrix_buffer_bytes = order
            .first()
            .map_or(0, |&op| self.profile_of(op).matrix_buffer_bytes);
        if matrix_buffer_bytes > 0 {
            resident.push((MemoryCategory::Workspace, matrix_buffer_bytes));
        }
        resident
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::device::ProfileTarget;
    use crate::cost::fit::Fit;
    use crate::cost::uniform::UniformCost;
    use crate::gnn::{GnnModel, Layer};
    use crate::graph::chunks::ChunkStats;

    /// A linear function, fitted exactly, of any size.
    fn linear(coefficients: Vec<f64>) -> Fit {
        Fit {
            range: coefficients.iter().map(|_| (0.0, 1e12)).collect(),
            coefficients,
            samples: 3,
            median_error: 0.0,
            p90_error: 0.0,
            max_error: 0.0,
            knee: None,
            spills: Vec::new(),
        }
    }

    /// A profile of seven linear kernels, every other kernel free: element-wise ops cost 1 ns
    /// an element, row copies 2, the loss 100 ns a call, a hand-off's copy 0.5 ns a byte, a
    /// history buffer's rows 10 ns a row and 3 an element read, 20 and 5 written, 30 and 7
    /// added.
    fn profile() -> DeviceProfile {
        DeviceProfile {
            device: "cpu: 1 thread".into(),
            target: ProfileTarget {
                backend: "cpu".into(),
                threads: 1,
                dtype: "f32".into(),
            },
            machine: "test".into(),
            kernels: BTreeMap::from([
                (Kernel::Elementwise, linear(vec![0.0, 1.0])),
                (Kernel::RowCopy, linear(vec![0.0, 2.0])),
                (Kernel::Loss, linear(vec![100.0, 0.0, 0.0, 0.0, 0.0])),
                (Kernel::HandoffCopy, linear(vec![0.0, 0.5])),
                (Kernel::HistoryRead, linear(vec![0.0, 10.0, 3.0])),
                (Kernel::HistoryWrite, linear(vec![0.0, 20.0, 5.0])),
                (Kernel::HistoryAdd, linear(vec![0.0, 30.0, 7.0])),
            ]),
            wakeup_ns: 0,
            gap_ns: 0,
            stash_scale: 1.0,
            workspace_scale: 1.0,
            matrix_buffer_bytes: 0,
            between_processes: None,
            probe: None,
            passes_apart: None,
            corun_slowdown: Vec::new(),
            warm_kernels: BTreeMap::new(),
            reuse: Vec::new(),
        }
    }

    /// GNNPipe over two chunks of 10 vertices, a GCN layer (8 -> 4 -> 3) per stage, with
    /// `gradient_buffers` per layer; only chunk 0 holds training vertices.
    fn workload(gradient_buffers: u64) -> GnnWorkload {
        let layer = |d_in, d_out| Layer {
            kind: LayerKind::Gcn,
            d_in,
            d_out,
        };
        let chunk = ChunkStats {
            vertices: 10,
            internal_edges: 20,
            in_edges: 24,
            boundary: 2,
            halo: Vec::new(),
        };
        GnnWorkload {
            model: GnnModel {
                layers: vec![layer(8, 4), layer(4, 3)],
                element_bytes: 4,
            },
            stage_layers: vec![0..1, 1..2],
            halo: Halo::Stale,
            chunks: vec![chunk.clone(), chunk],
            pair_rows: Vec::new(),
            n_nodes: 20,
            directed_edges: 48,
            features: 8,
            feature_nnz_per_row: None,
            optimizer_copies: 2,
            history: true,
            gradient_buffers,
            graph_parallel: false,
            labelled: Some(vec![5, 0]),
            hybrid: None,
        }
    }

    /// `op`'s time over `w` with [`profile`] on both stages.
    fn priced(w: &GnnWorkload, op: Op) -> u64 {
        let profile = profile();
        let fallback = UniformCost::new(1, 1);
        DeviceCost::new(w, TrainingShape::default(), vec![&profile; 2], &fallback).op_ns(op)
    }

    /// A chunk without training vertices skips its layers' backward on the last stage, but the
    /// executor still hands back its input's gradient: zeros, plus with GNNPipe's buffers the
    /// gradients other chunks' reads left for its rows, read and added, and its halo rows'
    /// (zero) gradient added to their buffers. A chunk with training vertices adds the buffered
    /// rows to its input's gradient too.
    #[test]
    fn a_backward_without_a_loss_still_hands_back_its_input_s_gradient() {
        // The last stage's input: 10 rows of 4; its layer reads 12 rows of 4, whose gradient
        // is split (a row copy at 2 ns an element) and its 2 halo rows' part added to their
        // buffer; the buffered gradient of its 10 own rows is read and added.
        let rows = 10.0 * 4.0;
        let halo_gradient = 2.0 * 12.0 * 4.0 + (30.0 * 2.0 + 7.0 * 8.0);
        let buffered_rows = 10.0 * 10.0 + 3.0 * rows + rows;
        let op = Op::backward(1, 1);
        assert_eq!(priced(&workload(0), op), (100.0 + rows) as u64);
        let buffered = workload(2);
        assert_eq!(
            priced(&buffered, op),
            (100.0 + halo_gradient + rows + buffered_rows) as u64
        );
        // Chunk 0's backward: the loss, the bias gradient over 10 x 3 outputs, the halo rows'
        // gradient, the buffered rows added to its input's gradient and the parameter sums
        // (4 x 3 + 3).
        assert_eq!(
            priced(&buffered, Op::backward(0, 1)),
            (100.0 + 30.0 + halo_gradient + buffered_rows + 15.0) as u64
        );
    }

    /// A GCN layer over 100 rows reading 120 (400 edges), 16 wide in, `d_out` out, the model's
    /// last.
    fn gcn_shape(d_out: f64) -> LayerShape {
        LayerShape {
            kind: LayerKind::Gcn,
            out: 100.0,
            read: 120.0,
            edges: 400.0,
            d_in: 16.0,
            d_out,
            heads: 1.0,
            sparse_nnz: None,
            input_grad: true,
            activation: false,
            training: TrainingShape::default(),
        }
    }

    /// A gather pays each gathered row's cache lines whole: a GCN layer's aggregation over
    /// its edges and self-loops, one line a row up to 16 values, four at 64; and the
    /// transpose in its backward alike.
    #[test]
    fn a_gather_counts_the_cache_lines_of_its_rows() {
        assert_eq!([3.0, 16.0, 17.0, 64.0].map(row_lines), [1.0, 1.0, 2.0, 4.0]);
        for (width, lines) in [(4.0, 1.0), (64.0, 4.0)] {
            let shape = gcn_shape(width);
            let gathers: Vec<Vec<f64>> = layer_calls(&shape, false)
                .into_iter()
                .chain(layer_calls(&shape, true))
                .filter(|(k, _)| matches!(k, Kernel::Aggregate | Kernel::AggregateTranspose))
                .map(|(_, terms)| terms)
                .collect();
            assert_eq!(gathers.len(), 2, "{gathers:?}");
            for terms in gathers {
                assert_eq!(terms[0], 500.0);
                assert_eq!(terms[5], 500.0 * lines, "{terms:?}");
            }
        }
    }

    /// The loss costs per labelled row whatever its classes: chunk 0's 5 labelled rows at 3 ns
    /// each; chunk 1, with none, pays nothing for them.
    #[test]
    fn the_loss_is_priced_per_labelled_row() {
        let w = workload(0);
        let fallback = UniformCost::new(1, 1);
        let mut per_row = profile();
        per_row
            .kernels
            .insert(Kernel::Loss, linear(vec![100.0, 0.0, 0.0, 0.0, 3.0]));
        let price = |p: &DeviceProfile, op: Op| {
            DeviceCost::new(&w, TrainingShape::default(), vec![p; 2], &fallback).op_ns(op)
        };
        let (with, without) = (Op::backward(0, 1), Op::backward(1, 1));
        assert_eq!(price(&per_row, with), price(&profile(), with) + 15);
        assert_eq!(price(&per_row, without), price(&profile(), without));
    }

    /// A stage that receives its input copies it into a leaf of its own in its forward; the
    /// first stage reads its features as they are. The hand-off itself then costs only the
    /// receiver's wake-up.
    #[test]
    fn a_forward_copies_what_its_stage_received() {
        let w = workload(0);
        // Stage 0: the bias over 10 x 4 outputs.
        assert_eq!(priced(&w, Op::forward(0, 0)), 40);
        // Stage 1: 10 received rows of 4 floats copied (160 bytes at 0.5 ns), its 10 own rows
        // written into the history (10 x 20 + 40 x 5 ns), its 2 halo rows read out of it
        // (2 x 10 + 8 x 3), all 12 concatenated (48 elements at 2 ns) and the bias over
        // 10 x 3 outputs.
        let history = 400 + 44 + 96;
        assert_eq!(priced(&w, Op::forward(0, 1)), 80 + history + 30);
        // With `deferred`'s gradient buffers the halo rows are copied into a leaf too; with
        // `exact`'s only the rows of earlier chunks: none of the first chunk's, all of the
        // last's.
        assert_eq!(
            priced(&workload(2), Op::forward(0, 1)),
            80 + history + 16 + 30
        );
        assert_eq!(priced(&workload(1), Op::forward(0, 1)), 80 + history + 30);
        assert_eq!(
            priced(&workload(1), Op::forward(1, 1)),
            80 + history + 16 + 30
        );
        assert_eq!(profile().handoff().ns_per_byte, 0.0);
    }

    /// A dense product's padding: none where both sides are multiples of 8, and the
    /// multiply-adds up to the next multiples otherwise, in the forward, both gradients and a
    /// split backward's weight gradient alike.
    #[test]
    fn dense_products_count_the_padding_of_a_narrow_side() {
        assert_eq!(dense_terms(10.0, 16.0, 64.0), vec![1824.0, 10240.0, 0.0]);
        // 16 x 4 pads to 16 x 8: as many multiply-adds again.
        assert_eq!(dense_terms(10.0, 16.0, 4.0), vec![264.0, 640.0, 640.0]);
        // 3 classes from 12 pads to 16 x 8.
        assert_eq!(dense_terms(1.0, 12.0, 3.0)[2], 128.0 - 36.0);
        let shape = gcn_shape(4.0);
        let dense: Vec<(Kernel, Vec<f64>)> = layer_calls(&shape, false)
            .into_iter()
            .chain(layer_calls(&shape, true))
            .chain(weight_calls(&shape))
            .filter(|(k, _)| k.name().starts_with("dense"))
            .collect();
        // The forward's transform, the backward's two gradients, the split backward's one.
        assert_eq!(dense.len(), 4, "{dense:?}");
        for (kernel, terms) in dense {
            assert_eq!(terms, dense_terms(120.0, 16.0, 4.0), "{kernel:?}");
        }
    }

    /// Dropout on a sparse input removes the dropped entries, so the sparse products after it
    /// are priced on the kept share of the non-zeros (the dropout itself reads all of them),
    /// and on all of them without dropout.
    #[test]
    fn sparse_products_after_dropout_see_the_kept_non_zeros() {
        let mut w = workload(0);
        w.feature_nnz_per_row = Some(3.0);
        let mut profile = profile();
        // 1 ns a non-zero for each sparse kernel, nothing else.
        profile.kernels = BTreeMap::from([
            (Kernel::SparseForward, linear(vec![0.0, 1.0, 0.0, 0.0])),
            (
                Kernel::SparseGradWeight,
                linear(vec![0.0, 1.0, 0.0, 0.0, 0.0]),
            ),
            (Kernel::DropoutSparse, linear(vec![0.0, 0.0, 1.0])),
        ]);
        let fallback = UniformCost::new(1, 1);
        let price = |training: TrainingShape, op: Op| {
            DeviceCost::new(&w, training, vec![&profile; 2], &fallback).op_ns(op)
        };
        // Stage 0 reads 12 rows (10 own, 2 halo) of 3 non-zeros each.
        let nnz = 12.0 * 3.0;
        let plain = TrainingShape::default();
        let dropout = TrainingShape {
            dropout: 0.75,
            ..plain
        };
        assert_eq!(price(plain, Op::forward(0, 0)), nnz as u64);
        assert_eq!(price(dropout, Op::forward(0, 0)), (nnz + 0.25 * nnz) as u64);
        assert_eq!(price(plain, Op::backward(0, 0)), nnz as u64);
        assert_eq!(price(dropout, Op::backward(0, 0)), (0.25 * nnz) as u64);
        assert_eq!(price(dropout, Op::weight_grad(0, 0)), (0.25 * nnz) as u64);
    }

    /// A forward's glue sees its input's dropout (the first kernel, on cold data) apart from its
    /// other kernels; a backward's glue sees all its kernels together.
    #[test]
    fn a_forward_s_glue_prices_its_input_dropout_apart() {
        let shape = LayerShape {
            kind: LayerKind::Gcn,
            out: 10.0,
            read: 12.0,
            edges: 20.0,
            d_in: 8.0,
            d_out: 4.0,
            heads: 1.0,
            sparse_nnz: None,
            input_grad: true,
            activation: true,
            training: TrainingShape {
                dropout: 0.5,
                ..TrainingShape::default()
            },
        };
        // Every kernel 1 ns but the dropout, 100 ns.
        let price = |k: Kernel, _: &[f64]| {
            if k == Kernel::DropoutDense {
                100.0
            } else {
                1.0
            }
        };
        let calls = layer_calls(&shape, false).len() as f64;
        assert_eq!(
            glue_terms(&shape, false, price),
            vec![100.0, calls - 1.0, shape.elements()]
        );
        let plain = LayerShape {
            training: TrainingShape::default(),
            ..shape
        };
        let calls = layer_calls(&plain, false).len() as f64;
        assert_eq!(
            glue_terms(&plain, false, price),
            vec![0.0, calls, plain.elements()]
        );
        // A backward: its kernels, the gradients' elements (input 12 x 8, transformed rows
        // 12 x 4, output 10 x 4) and those behind a mask (the dropped input, the
        // activation's 10 x 4).
        let calls = layer_calls(&shape, true).len() as f64;
        assert_eq!(
            glue_terms(&shape, true, price),
            vec![calls, 96.0 + 48.0 + 40.0, 96.0 + 40.0]
        );
        // The model's first layer on sparse rows: no input gradient, so neither its elements
        // nor its dropout's mask; a last layer: no activation.
        let first = LayerShape {
            sparse_nnz: Some(30.0),
            input_grad: false,
            activation: false,
            ..shape
        };
        let calls = layer_calls(&first, true).len() as f64;
        assert_eq!(
            glue_terms(&first, true, price),
            vec![calls, 48.0 + 40.0, 0.0]
        );
        // GAT's both ways add attention's values per edge and head: (20 edges + 10
        // self-loops) x 2 heads.
        let gat = LayerShape {
            kind: LayerKind::Gat {
                heads: 2,
                concat: true,
            },
            heads: 2.0,
            ..shape
        };
        for backward in [false, true] {
            let terms = glue_terms(&gat, backward, price);
            assert_eq!(terms.len(), 4);
            assert_eq!(terms.last(), Some(&60.0));
        }
    }

    /// A stage but the last runs the surrogate objective over its output and back, priced by
    /// its own function; the last stage runs the loss instead.
    #[test]
    fn a_backward_prices_its_stage_s_objective() {
        let w = workload(0);
        let mut profile = profile();
        let fallback = UniformCost::new(1, 1);
        let without = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback)
            .op_ns(Op::backward(0, 0));
        profile
            .kernels
            .insert(Kernel::Objective, linear(vec![0.0, 10.0]));
        let cost = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback);
        // Stage 0's output: 10 rows of 4.
        assert_eq!(cost.op_ns(Op::backward(0, 0)), without + 400);
        assert_eq!(
            cost.op_ns(Op::backward(0, 1)),
            priced(&w, Op::backward(0, 1))
        );
    }

    /// [`profile`] with memory functions of constant bytes: every layer's stash 1,000, forward
    /// temporaries 300, backward temporaries 2,000; the loss's 50, the surrogate objective's
    /// 70; an Adam step 7 bytes a number of the largest tensor.
    fn memory_profile() -> DeviceProfile {
        let mut p = profile();
        let constant = |kernel: Kernel, c: f64| {
            let mut coefficients = vec![0.0; kernel.terms().len() + 1];
            coefficients[0] = c;
            (kernel, linear(coefficients))
        };
        p.kernels.extend([
            constant(Kernel::GcnStash, 1000.0),
            constant(Kernel::GcnTemporaries, 300.0),
            constant(Kernel::GcnBackwardTemporaries, 2000.0),
            constant(Kernel::LossTemporaries, 50.0),
            constant(Kernel::ObjectiveTemporaries, 70.0),
            (Kernel::AdamTemporaries, linear(vec![0.0, 7.0])),
        ]);
        p
    }

    /// With warm functions measured, an op costs its cold price less the share of its warm
    /// saving that the run's data leaves in the caches: the footprint is every forward's
    /// stash, the parameters with their gradients and Adam's two moments, and the workers'
    /// matrix buffers; the share is the profile's warmth at that size.
    #[test]
    fn an_op_keeps_the_warm_saving_its_run_s_data_leaves_in_the_caches() {
        let w = workload(0);
        let fallback = UniformCost::new(1, 1);
        let cold = memory_profile();
        let op = Op::backward(0, 1);
        let full = DeviceCost::new(&w, TrainingShape::default(), vec![&cold; 2], &fallback)
            .op_ns(op) as f64;
        // Warm, every time function at half its price.
        let mut profile = memory_profile();
        profile.warm_kernels = profile
            .kernels
            .iter()
            .filter(|(k, _)| !k.is_memory())
            .map(|(&k, f)| (k, linear(f.coefficients.iter().map(|c| c / 2.0).collect())))
            .collect();
        // Stash: stage 0's 1,000 bytes and stage 1's 1,384 per chunk, two chunks; parameters:
        // 8 x 4 + 4 and 4 x 3 + 3 numbers, four copies of 4 bytes each.
        let footprint = 2.0 * (1000.0 + 1384.0) + 51.0 * 4.0 * 4.0;
        for (reuse, warmth) in [
            (vec![(10_000.0, 1.0), (20_000.0, 0.0)], 1.0),
            (vec![(1_000.0, 1.0), (2_000.0, 0.0)], 0.0),
            (vec![(footprint / 2.0, 1.0), (footprint * 2.0, 0.0)], 0.5),
        ] {
            profile.reuse = reuse;
            let cost = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback);
            assert_eq!(cost.footprint(), footprint);
            let priced = cost.op_ns(op) as f64;
            let expected = full * (1.0 - warmth / 2.0);
            assert!((priced - expected).abs() <= 1.0, "{priced} for {expected}");
        }
        // The workers' matrix buffers count, one per device.
        profile.matrix_buffer_bytes = 1000;
        let cost = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback);
        assert_eq!(cost.footprint(), footprint + 2000.0);
        // A schedule that holds one chunk at a time on stage 0 and both on stage 1: stage 0's
        // stash counts once, and the op is priced warmer, never dearer.
        let all = cost.op_ns(op);
        let held = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback)
            .in_flight(vec![1, 2]);
        assert_eq!(held.footprint(), footprint + 2000.0 - 1000.0);
        assert!(held.op_ns(op) <= all);
        // More in flight than there are chunks is every chunk.
        let every = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback)
            .in_flight(vec![5, 5]);
        assert_eq!(every.footprint(), footprint + 2000.0);
    }

    proptest::proptest! {
        /// Whatever the warm functions and the curve: every op of the workload is priced
        /// between its warm and its cold price, and a curve no warmer anywhere never prices
        /// an op lower.
        #[test]
        fn an_op_is_priced_between_warm_and_cold(
            scale in proptest::collection::vec(0.0f64..2.0, 7),
            warmth in 0.0f64..=1.0,
            cooler in 0.0f64..=1.0,
            size in 1.0f64..1e5,
        ) {
            let w = workload(2);
            let fallback = UniformCost::new(1, 1);
            let cold = memory_profile();
            let mut warm = memory_profile();
            // Each time function's warm twin at its own factor (some warmer, some not).
            warm.warm_kernels = cold
                .kernels
                .iter()
                .filter(|(k, _)| !k.is_memory())
                .zip(scale.iter().cycle())
                .map(|((&k, f), &x)| {
                    (k, linear(f.coefficients.iter().map(|c| c * x).collect()))
                })
                .collect();
            let mut cooler_profile = warm.clone();
            warm.reuse = vec![(size, warmth), (size * 2.0, 0.0)];
            cooler_profile.reuse = vec![(size, warmth * cooler), (size * 2.0, 0.0)];
            // Its warm functions as its cold ones: priced warm whatever the curve.
            let all_warm = warm.warm().unwrap();
            let price = |p: &DeviceProfile, op: Op| {
                DeviceCost::new(&w, TrainingShape::default(), vec![p; 2], &fallback).op_ns(op)
            };
            for op in [
                Op::forward(0, 0),
                Op::forward(1, 1),
                Op::backward(0, 1),
                Op::backward(1, 0),
                Op::optimizer(0, 0),
            ] {
                let (hot, cool) = (price(&all_warm, op), price(&cold, op));
                let priced = price(&warm, op);
                proptest::prop_assert!(
                    priced + 1 >= hot.min(cool) && priced <= cool + 1,
                    "{:?}: {} outside {} and {}", op, priced, hot, cool
                );
                proptest::prop_assert!(price(&cooler_profile, op) + 1 >= priced);
            }
        }
    }

    /// A stage's stash holds the inputs the worker builds for its layers beside the layers'
    /// own: the received rows' copy, and with stale halos the halo rows read from the history
    /// and their concatenation with the own rows. An op's temporaries: a backward's most of
    /// each layer's temporaries with its output's gradient (the objective's for the top layer:
    /// the loss's on the last stage, the surrogate's elsewhere) and the gradients of the layers
    /// after it; a forward's beyond what its layers keep; an Adam step's by its largest tensor.
    #[test]
    fn memory_counts_the_inputs_a_stage_builds_and_each_op_s_temporaries() {
        let profile = memory_profile();
        let fallback = UniformCost::new(1, 1);
        let w = workload(0);
        let cost = DeviceCost::new(&w, TrainingShape::default(), vec![&profile; 2], &fallback);
        // Stage 0 reads its features as they are; stage 1 copies 10 received rows of 4, reads
        // 2 halo rows and concatenates 12 rows: (40 + 8 + 48) floats.
        assert_eq!(cost.stash(Op::forward(0, 0)), (1000, 0));
        assert_eq!(cost.stash(Op::forward(0, 1)), (1000 + 4 * 96, 0));
        assert_eq!(cost.transient(Op::forward(0, 1)), 300);
        // The last stage's backward: its layer's temporaries and the loss's.
        assert_eq!(cost.transient(Op::backward(0, 1)), 2000 + 50);
        // Without a training vertex, only the input's gradient: 10 x 4 zeros.
        assert_eq!(cost.transient(Op::backward(1, 1)), 160);
        // Stage 0's: the surrogate objective's.
        assert_eq!(cost.transient(Op::backward(0, 0)), 2000 + 70);
        // Adam over stage 0's 8 x 4 weight.
        assert_eq!(cost.transient(Op::optimizer(0, 0)), 7 * 32);

        // Both layers on one stage, no halo: the first layer's backward runs with its output's
        // gradient (10 x 4) from the second, whose parameter gradients (4 x 3 + 3 numbers)
        // candle still holds.
        let w = GnnWorkload {
            stage_layers: std::iter::once(0..2).collect(),
            halo: Halo::Drop,
            history: false,
            ..workload(0)
        };
        let cost = DeviceCost::new(&w, TrainingShape::default(), vec![&profile], &fallback);
        assert_eq!(cost.stash(Op::forward(0, 0)), (2000, 0));
        assert_eq!(cost.transient(Op::forward(0, 0)), 300);
        assert_eq!(cost.transient(Op::backward(0, 0)), 4 * 40 + 4 * 15 + 2000);
    }
}
