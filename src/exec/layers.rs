//! GNN layers on candle: GCN, GraphSAGE (mean), GAT (multi-head), dropout, ReLU/ELU, and the
//! loss.
//!
//! A layer maps the rows it reads (a [`LayerGraph`]'s `read`) to the rows it computes (the
//! first `out` of them). Dropout masks are drawn per (seed, epoch, layer, vertex, column), so a
//! vertex gets the same mask whichever chunk, stage or halo reads it: the chunking changes which
//! rows are computed, never their values.

use candle_core::{DType, Device, Result, Tensor, Var, D};

use super::activation::bias_activation;
use super::attention::{gat_attention, EdgePattern};
use super::data::LayerGraph;
use super::deferred::{dense_transform, WeightTape};
use super::dropout::{apply_mask, mix, EdgeDropout, Keep};
use super::sparse::SparseMatrix;
use crate::gnn::{Layer, LayerKind};
use crate::graph::rng::Rng;
use crate::scenario::Activation;

/// One layer's parameters.
pub enum ExecLayer {
    /// `A_hat (X W) + b`.
    Gcn {
        /// `d_in x d_out`.
        weight: Var,
        /// `d_out`.
        bias: Var,
    },
    /// `X W_self + mean(X_neighbours) W_neigh + b`.
    Sage {
        /// `d_in x d_out`, applied to the vertex itself.
        weight_self: Var,
        /// `d_in x d_out`, applied to the neighbour mean.
        weight_neigh: Var,
        /// `d_out`.
        bias: Var,
    },
    /// Multi-head attention over each vertex's neighbours and itself.
    Gat {
        /// `d_in x (heads * channels)`.
        weight: Var,
        /// `heads x channels`, scoring the source row.
        att_src: Var,
        /// `heads x channels`, scoring the destination row.
        att_dst: Var,
        /// `heads * channels` when heads concatenate, `channels` when they average.
        bias: Var,
        /// Heads.
        heads: usize,
        /// Channels per head.
        channels: usize,
        /// Concatenate (true) or average the heads.
        concat: bool,
    },
}

/// Glorot-uniform weights from a seeded stream, so a seed fixes the initial model.
fn glorot(
    rng: &mut Rng,
    fan_in: usize,
    fan_out: usize,
    shape: (usize, usize),
    device: &Device,
) -> Result<Var> {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| ((rng.unit_f64() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, device)?)
}

impl ExecLayer {
    /// A freshly initialised layer.
    pub fn new(layer: &Layer, rng: &mut Rng, device: &Device) -> Result<Self> {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        Ok(match layer.kind {
            LayerKind::Gcn => ExecLayer::Gcn {
                weight: glorot(rng, d_in, d_out, (d_in, d_out), device)?,
                bias: Var::zeros(d_out, DType::F32, device)?,
            },
            LayerKind::Sage => ExecLayer::Sage {
                weight_self: glorot(rng, d_in, d_out, (d_in, d_out), device)?,
                weight_neigh: glorot(rng, d_in, d_out, (d_in, d_out), device)?,
                bias: Var::zeros(d_out, DType::F32, device)?,
            },
            LayerKind::Gat { heads, concat } => {
                let (heads, channels) = (heads as usize, layer.head_width() as usize);
                ExecLayer::Gat {
                    weight: glorot(
                        rng,
                        d_in,
                        heads * channels,
                        (d_in, heads * channels),
                        device,
                    )?,
                    att_src: glorot(rng, heads, channels, (heads, channels), device)?,
                    att_dst: glorot(rng, heads, channels, (heads, channels), device)?,
                    bias: Var::zeros(d_out, DType::F32, device)?,
                    heads,
                    channels,
                    concat,
                }
            }
        })
    }

    /// The device its parameters are on.
    pub fn device(&self) -> &Device {
        match self {
            ExecLayer::Gcn { weight, .. }
            | ExecLayer::Sage {
                weight_self: weight,
                ..
            }
            | ExecLayer::Gat { weight, .. } => weight.device(),
        }
    }

    /// The layer's variables, in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        match self {
            ExecLayer::Gcn { weight, bias } => vec![weight.clone(), bias.clone()],
            ExecLayer::Sage {
                weight_self,
                weight_neigh,
                bias,
            } => vec![weight_self.clone(), weight_neigh.clone(), bias.clone()],
            ExecLayer::Gat {
                weight,
                att_src,
                att_dst,
                bias,
                ..
            } => vec![
                weight.clone(),
                att_src.clone(),
                att_dst.clone(),
                bias.clone(),
            ],
        }
    }

    /// The layer over `x` (the rows `graph.read`), giving the rows `graph.out_rows()`;
    /// `attention` is GAT's pattern and its optional attention dropout.
    pub fn forward(
        &self,
        x: &StageInput,
        graph: &LayerGraph,
        attention: Option<(&EdgePattern, Option<&EdgeDropout>)>,
    ) -> Result<Tensor> {
        self.forward_activated(x, graph, attention, None)
    }

    /// [`ExecLayer::forward`] followed by `activation`: the bias and the activation are one op
    /// on the CPU.
    pub fn forward_activated(
        &self,
        x: &StageInput,
        graph: &LayerGraph,
        attention: Option<(&EdgePattern, Option<&EdgeDropout>)>,
        activation: Option<Activation>,
    ) -> Result<Tensor> {
        self.forward_split(x, graph, attention, activation, None)
    }

    /// [`ExecLayer::forward_activated`] whose backward, with a `tape`, leaves every weight
    /// gradient of the dense transforms (`X W`) to it (the split backward's `W`); the bias and
    /// GAT's attention vectors get theirs in the backward as before.
    pub fn forward_split(
        &self,
        x: &StageInput,
        graph: &LayerGraph,
        attention: Option<(&EdgePattern, Option<&EdgeDropout>)>,
        activation: Option<Activation>,
        tape: Option<&WeightTape>,
    ) -> Result<Tensor> {
        let (y, bias) = match self {
            ExecLayer::Gcn { weight, bias } => {
                (graph.gcn()?.matmul(&x.transform(weight, tape)?)?, bias)
            }
            // The neighbour mean commutes with the linear map: mean(X) W = mean(X W), which
            // keeps sparse inputs sparse.
            ExecLayer::Sage {
                weight_self,
                weight_neigh,
                bias,
            } => {
                let own = x.transform(weight_self, tape)?.narrow(0, 0, graph.out)?;
                (
                    (own + graph.mean()?.matmul(&x.transform(weight_neigh, tape)?)?)?,
                    bias,
                )
            }
            ExecLayer::Gat {
                weight,
                att_src,
                att_dst,
                bias,
                heads,
                channels,
                concat,
            } => {
                let Some((pattern, dropout)) = attention else {
                    candle_core::bail!("a GAT layer needs its attention pattern");
                };
                let projected = x.transform(weight, tape)?;
                let out = gat_attention(
                    pattern,
                    &projected,
                    att_src.as_tensor(),
                    att_dst.as_tensor(),
                    (*heads, *channels),
                    0.2,
                    !*concat,
                    dropout.map(|d| (d, &graph.read[..])),
                )?;
                (out, bias)
            }
        };
        bias_activation(&y, bias.as_tensor(), activation)
    }

    /// Whether the layer attends (needs an [`EdgePattern`]).
    pub fn is_attention(&self) -> bool {
        matches!(self, ExecLayer::Gat { .. })
    }

    /// GAT's head count (1 for other layers).
    pub fn heads(&self) -> usize {
        match self {
            ExecLayer::Gat { heads, .. } => *heads,
            _ => 1,
        }
    }
}

/// A layer's input: the first layer reads sparse features, later layers dense rows.
#[derive(Debug, Clone)]
pub enum StageInput {
    /// Dense rows.
    Dense(Tensor),
    /// Sparse rows (input features, as the GCN reference keeps them).
    Sparse(SparseMatrix),
}

impl StageInput {
    /// `X W`; with a tape, `W`'s gradient is deferred to it.
    fn transform(&self, weight: &Var, tape: Option<&WeightTape>) -> Result<Tensor> {
        match (self, tape) {
            (StageInput::Dense(x), None) => x.matmul(weight.as_tensor()),
            (StageInput::Sparse(x), None) => x.matmul(weight.as_tensor()),
            (StageInput::Dense(x), Some(tape)) => dense_transform(x, weight, tape),
            (StageInput::Sparse(x), Some(tape)) => x.matmul_deferred(weight.as_tensor(), tape),
        }
    }

    /// Inverted dropout with masks keyed by `key` and each row's vertex (`rows`); on sparse rows
    /// it drops non-zeros, as the GCN reference does.
    pub(crate) fn dropout(&self, p: f64, key: u64, rows: &[u32]) -> Result<StageInput> {
        if p <= 0.0 {
            return Ok(self.clone());
        }
        let keep = Keep::new(p);
        Ok(match self {
            StageInput::Dense(x) => {
                let (n, d) = x.dims2()?;
                let mut mask = Vec::with_capacity(n * d);
                for &v in &rows[..n] {
                    let row_key = Keep::row_key(key, v);
                    mask.extend((0..d as u64).map(|c| keep.scale(row_key, c)));
                }
                StageInput::Dense(apply_mask(x, mask)?)
            }
            StageInput::Sparse(x) => {
                // Dropped entries leave the matrix: the product and its transpose then skip
                // them (the sums are the same, the zeros added nothing).
                let (mut offsets, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
                for (i, &v) in rows[..x.rows()].iter().enumerate() {
                    let row_key = Keep::row_key(key, v);
                    let (start, end) = x.row_range(i);
                    for k in start..end {
                        let column = x.column(k);
                        let scale = keep.scale(row_key, u64::from(column));
                        if scale != 0.0 {
                            indices.push(column);
                            values.push(x.values()[k] * scale);
                        }
                    }
                    offsets.push(indices.len());
                }
                StageInput::Sparse(SparseMatrix::new(
                    x.rows(),
                    x.cols(),
                    offsets,
                    indices,
                    values,
                ))
            }
        })
    }
}

/// What dropout masks are keyed by in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Training {
    /// The run's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u32,
}

impl Training {
    fn key(&self, layer: usize, stream: u64) -> u64 {
        mix(self.seed ^ mix((layer as u64) << 40 ^ u64::from(self.epoch) << 8 ^ stream))
    }
}

/// The layers one stage owns, applied as the reference implementations do: dropout before each
/// layer, the activation after every layer but the model's last.
pub struct StageModel {
    /// The layers, in order.
    pub layers: Vec<ExecLayer>,
    /// The model index of the first layer.
    pub first_layer: usize,
    /// Whether the stage ends with the model's output layer.
    pub is_last: bool,
    /// Dropout probability in training.
    pub dropout: f64,
    /// Dropout on attention coefficients in training.
    pub attention_dropout: f64,
    /// The non-linearity.
    pub activation: Activation,
}

impl StageModel {
    /// Layer `i` of the stage (model layer `first_layer + i`) over `x`, the rows `graph.read`:
    /// dropout in training, the layer, and the activation unless it is the model's last.
    pub fn layer_forward(
        &self,
        i: usize,
        x: StageInput,
        graph: &LayerGraph,
        pattern: Option<&EdgePattern>,
        training: Option<Training>,
    ) -> Result<Tensor> {
        self.layer_forward_split(i, x, graph, pattern, training, None)
    }

    /// [`StageModel::layer_forward`] whose dense transforms, with a `tape`, leave their weight
    /// gradients to it (see [`ExecLayer::forward_split`]).
    pub fn layer_forward_split(
        &self,
        i: usize,
        x: StageInput,
        graph: &LayerGraph,
        pattern: Option<&EdgePattern>,
        training: Option<Training>,
        tape: Option<&WeightTape>,
    ) -> Result<Tensor> {
        let layer = &self.layers[i];
        let model_layer = self.first_layer + i;
        let x = match training {
            Some(t) => x.dropout(self.dropout, t.key(model_layer, 0), &graph.read)?,
            None => x,
        };
        let dropout = match training {
            Some(t) if self.attention_dropout > 0.0 && layer.is_attention() => Some(
                EdgeDropout::new(self.attention_dropout, t.key(model_layer, 1)),
            ),
            _ => None,
        };
        let activation = if self.is_last && i + 1 == self.layers.len() {
            None
        } else {
            Some(self.activation)
        };
        layer.forward_split(
            &x,
            graph,
            pattern.map(|p| (p, dropout.as_ref())),
            activation,
            tape,
        )
    }

    /// Layer `i`'s aggregation of the rows `graph.read` (`x`, dense, with the training's
    /// dropout): GCN's `Â X`, GraphSAGE's neighbour mean `M X`, before any weight. Linear in the
    /// rows read, so an aggregation over some of them (the others zero, their matrix entries
    /// dropped: graph parallelism's 1.5D) is a part of the whole that the parts sum to. GAT's
    /// softmax over each row's neighbours is not: an error.
    pub fn layer_aggregate(
        &self,
        i: usize,
        x: &Tensor,
        graph: &LayerGraph,
        training: Option<Training>,
    ) -> Result<Tensor> {
        let x = self.dropped(i, x, &graph.read, training)?;
        match &self.layers[i] {
            ExecLayer::Gcn { .. } => graph.gcn()?.matmul(&x),
            ExecLayer::Sage { .. } => graph.mean()?.matmul(&x),
            ExecLayer::Gat { .. } => {
                candle_core::bail!("a GAT layer's attention is not linear in the rows it reads")
            }
        }
    }

    /// Layer `i` from its whole aggregation `aggregated` ([`StageModel::layer_aggregate`]) and
    /// its own input rows `own` (of the vertices `rows`): the weights, GraphSAGE's own term,
    /// the bias and the activation (none after the model's last layer). With
    /// `layer_aggregate`, the same as [`StageModel::layer_forward`].
    pub fn layer_combine(
        &self,
        i: usize,
        own: &Tensor,
        rows: &[u32],
        aggregated: &Tensor,
        training: Option<Training>,
    ) -> Result<Tensor> {
        let activation = if self.is_last && i + 1 == self.layers.len() {
            None
        } else {
            Some(self.activation)
        };
        let (y, bias) = match &self.layers[i] {
            ExecLayer::Gcn { weight, bias } => (aggregated.matmul(weight.as_tensor())?, bias),
            ExecLayer::Sage {
                weight_self,
                weight_neigh,
                bias,
            } => {
                let own = self.dropped(i, own, rows, training)?;
                (
                    (own.matmul(weight_self.as_tensor())?
                        + aggregated.matmul(weight_neigh.as_tensor())?)?,
                    bias,
                )
            }
            ExecLayer::Gat { .. } => {
                candle_core::bail!("a GAT layer's attention is not linear in the rows it reads")
            }
        };
        bias_activation(&y, bias.as_tensor(), activation)
    }

    /// Dense rows `x` of the vertices `rows` after layer `i`'s input dropout.
    fn dropped(
        &self,
        i: usize,
        x: &Tensor,
        rows: &[u32],
        training: Option<Training>,
    ) -> Result<Tensor> {
        let x = StageInput::Dense(x.clone());
        let x = match training {
            Some(t) => x.dropout(self.dropout, t.key(self.first_layer + i, 0), rows)?,
            None => x,
        };
        match x {
            StageInput::Dense(x) => Ok(x),
            StageInput::Sparse(_) => unreachable!("dense rows stay dense"),
        }
    }

    /// Every variable of the stage, in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(ExecLayer::vars).collect()
    }

    /// Copies of the variables' values on the CPU (where accuracy is evaluated), in
    /// [`StageModel::vars`] order.
    pub fn values(&self) -> Result<Vec<Tensor>> {
        self.vars()
            .iter()
            .map(|v| {
                let t = v.as_tensor();
                if t.device().is_cpu() {
                    t.copy()
                } else {
                    t.to_device(&Device::Cpu)
                }
            })
            .collect()
    }
}

/// Softmax cross-entropy summed over `rows` (local indices with their labels), divided by
/// `normaliser` (the whole training set's size, so chunk losses add up to the full mean).
pub fn cross_entropy(logits: &Tensor, rows: &[(u32, u32)], normaliser: usize) -> Result<Tensor> {
    let device = logits.device();
    if rows.is_empty() {
        return (logits.sum_all()? * 0.0)?.to_dtype(DType::F32);
    }
    let index = Tensor::from_vec(
        rows.iter().map(|r| r.0).collect::<Vec<u32>>(),
        rows.len(),
        device,
    )?;
    let labels = Tensor::from_vec(
        rows.iter().map(|r| r.1).collect::<Vec<u32>>(),
        (rows.len(), 1),
        device,
    )?;
    let log_probs = candle_nn::ops::log_softmax(&logits.index_select(&index, 0)?, D::Minus1)?;
    log_probs.gather(&labels, 1)?.sum_all()?.neg()? / normaliser as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::data::{ChunkPlan, PlanShape};
    use crate::exec::deferred::WeightTape;
    use crate::graph::Csr;

    /// A 5-vertex graph with a triangle, a pendant and an edge.
    fn graph() -> Csr {
        Csr::from_undirected_edges(5, &[(0, 1), (1, 2), (0, 2), (2, 3), (3, 4)])
    }

    /// The cost model prices an optimizer step per parameter tensor and per number: both
    /// must be the executor's own.
    #[test]
    fn the_model_counts_the_parameter_tensors_and_numbers_the_layers_hold() -> Result<()> {
        for kind in [
            LayerKind::Gcn,
            LayerKind::Sage,
            LayerKind::Gat {
                heads: 4,
                concat: true,
            },
            LayerKind::Gat {
                heads: 2,
                concat: false,
            },
        ] {
            let layer = Layer {
                kind,
                d_in: 12,
                d_out: 8,
            };
            let vars = ExecLayer::new(&layer, &mut Rng::new(1), &Device::Cpu)?.vars();
            assert_eq!(vars.len() as u64, layer.parameter_tensors(), "{kind:?}");
            let numbers: usize = vars.iter().map(|v| v.elem_count()).sum();
            assert_eq!(numbers as u64, layer.parameters(), "{kind:?}");
        }
        Ok(())
    }

    fn dense(m: &SparseMatrix) -> Result<Tensor> {
        let rows = m.to_dense();
        let (r, c) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.into_iter().flatten().collect(), (r, c), &Device::Cpu)
    }

    fn input(n: usize, d: usize) -> Result<Var> {
        let mut rng = Rng::new(11);
        let values: Vec<f32> = (0..n * d).map(|_| rng.unit_f64() as f32 - 0.5).collect();
        Var::from_tensor(&Tensor::from_vec(values, (n, d), &Device::Cpu)?)
    }

    /// The layer over a chunk's rows against `reference(x, weights...)` written with dense
    /// matrices: outputs and the gradients of the input and every parameter.
    fn check(
        kind: LayerKind,
        reference: impl Fn(&Tensor, &LayerGraph, &[Var]) -> Result<Tensor>,
    ) -> Result<()> {
        let graph = graph();
        let part: Vec<u64> = vec![0, 0, 1, 1, 1];
        let shape = PlanShape {
            layers: 0..1,
            n_layers: 1,
            needs: crate::exec::data::Needs {
                gcn: true,
                mean: true,
                attention: false,
            },
        };
        // Chunk {0, 1} reads its neighbour 2 as well.
        let plan = ChunkPlan::neighbours(&graph, vec![0, 1], |u| part[u as usize], &shape);
        let view = plan.layer(0);
        assert_eq!(view.read, vec![0, 1, 2]);
        let layer = ExecLayer::new(
            &Layer {
                kind,
                d_in: 3,
                d_out: 2,
            },
            &mut Rng::new(5),
            &Device::Cpu,
        )?;
        let x = input(view.read.len(), 3)?;
        let weights = Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &Device::Cpu)?;
        let ours = layer.forward(&StageInput::Dense(x.as_tensor().clone()), view, None)?;
        let theirs = reference(x.as_tensor(), view, &layer.vars())?;
        let close = |a: &Tensor, b: &Tensor| -> Result<()> {
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "max difference {diff}");
            Ok(())
        };
        close(&ours, &theirs)?;
        let g_ours = ours.mul(&weights)?.sum_all()?.backward()?;
        let g_theirs = theirs.mul(&weights)?.sum_all()?.backward()?;
        for var in std::iter::once(&x).chain(layer.vars().iter()) {
            close(
                g_ours.get(var.as_tensor()).expect("ours has the gradient"),
                g_theirs.get(var.as_tensor()).expect("the reference has it"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn gcn_matches_its_dense_formula() -> Result<()> {
        check(LayerKind::Gcn, |x, view, vars| {
            // Â = D^-1/2 (A + I) D^-1/2 with the whole graph's degrees: vertex 0 has degree
            // 2, vertex 1 degree 2, vertex 2 degree 3.
            let a_hat = dense(view.gcn.as_ref().expect("planned"))?;
            let expected = [
                [1.0 / 3.0, 1.0 / 3.0, 1.0 / 12f32.sqrt()],
                [1.0 / 3.0, 1.0 / 3.0, 1.0 / 12f32.sqrt()],
            ];
            for (row, want) in a_hat.to_vec2::<f32>()?.iter().zip(expected) {
                for (a, b) in row.iter().zip(want) {
                    assert!((a - b).abs() < 1e-6);
                }
            }
            a_hat
                .matmul(&x.matmul(vars[0].as_tensor())?)?
                .broadcast_add(vars[1].as_tensor())
        })
    }

    #[test]
    fn sage_matches_its_dense_formula() -> Result<()> {
        check(LayerKind::Sage, |x, view, vars| {
            let mean = dense(view.mean.as_ref().expect("planned"))?;
            let own = x.narrow(0, 0, view.out)?;
            (own.matmul(vars[0].as_tensor())? + mean.matmul(x)?.matmul(vars[1].as_tensor())?)?
                .broadcast_add(vars[2].as_tensor())
        })
    }

    /// Issue 15: a split backward's `I` (the backward with every weight product deferred to a
    /// tape) then `W` (the tape's `X^T dY`) give the full backward's gradients: the input's and
    /// the biases' and attention vectors' at `I`, the dense transforms' weights' at `W` and not
    /// at `I`. `sparse` reads the input as sparse features (a first stage: no input gradient).
    fn split_backward_matches_the_full_one(kind: LayerKind, sparse: bool) -> Result<()> {
        let graph = graph();
        let part: Vec<u64> = vec![0, 0, 1, 1, 1];
        let shape = PlanShape {
            layers: 0..1,
            n_layers: 1,
            needs: crate::exec::data::Needs {
                gcn: true,
                mean: true,
                attention: true,
            },
        };
        let plan = ChunkPlan::neighbours(&graph, vec![0, 1], |u| part[u as usize], &shape);
        let view = plan.layer(0);
        let d_out = 4;
        let layer = ExecLayer::new(
            &Layer {
                kind,
                d_in: 3,
                d_out,
            },
            &mut Rng::new(5),
            &Device::Cpu,
        )?;
        let x = input(view.read.len(), 3)?;
        let x_in = if sparse {
            let rows = x.as_tensor().to_vec2::<f32>()?;
            let (mut offsets, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
            for row in &rows {
                // Every other entry, so the matrix is really sparse.
                for (c, &v) in row.iter().enumerate().step_by(2) {
                    indices.push(c as u32);
                    values.push(v);
                }
                offsets.push(indices.len());
            }
            StageInput::Sparse(SparseMatrix::new(rows.len(), 3, offsets, indices, values))
        } else {
            StageInput::Dense(x.as_tensor().clone())
        };
        let pattern = view.attention.as_ref().map(|a| (&a.edges, None));
        let mut rng = Rng::new(3);
        let values: Vec<f32> = (0..view.out * d_out as usize)
            .map(|_| rng.unit_f64() as f32 - 0.5)
            .collect();
        let upstream = Tensor::from_vec(values, (view.out, d_out as usize), &Device::Cpu)?;
        let activation = Some(Activation::Elu);
        let full = layer.forward_split(&x_in, view, pattern, activation, None)?;
        let full_grads = full.mul(&upstream)?.sum_all()?.backward()?;
        let tape = WeightTape::new();
        let split = layer.forward_split(&x_in, view, pattern, activation, Some(&tape))?;
        let close = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{kind:?} {what}: max difference {diff}");
            Ok(())
        };
        close(&full, &split, "output")?;
        let input_grads = split.mul(&upstream)?.sum_all()?.backward()?;
        let transforms = match kind {
            LayerKind::Sage => 2,
            _ => 1,
        };
        assert_eq!(
            tape.len(),
            transforms,
            "{kind:?}: one record per dense transform"
        );
        match (sparse, input_grads.get(x.as_tensor())) {
            (true, got) => assert!(got.is_none(), "features need no gradient"),
            (false, Some(got)) => close(
                got,
                full_grads
                    .get(x.as_tensor())
                    .expect("the full backward has it"),
                "input gradient",
            )?,
            (false, None) => panic!("{kind:?}: I gave no input gradient"),
        }
        let vars = layer.vars();
        let weight_grads = tape.weight_grads(&vars)?;
        assert!(tape.is_empty(), "W empties the tape");
        let weights: Vec<usize> = (0..transforms).collect();
        assert_eq!(
            weight_grads.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            weights
        );
        for (i, var) in vars.iter().enumerate() {
            let want = full_grads
                .get(var.as_tensor())
                .expect("the full backward has it");
            let at_input = input_grads.get(var.as_tensor());
            if weights.contains(&i) {
                assert!(
                    at_input.is_none(),
                    "{kind:?}: I computed weight {i}'s gradient"
                );
                let (_, got) = &weight_grads[i];
                close(got, want, &format!("weight {i} at W"))?;
            } else {
                let got =
                    at_input.expect("I computes the biases' and attention vectors' gradients");
                close(got, want, &format!("variable {i} at I"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn split_backward_matches_the_full_one_for_every_layer() -> Result<()> {
        for kind in [
            LayerKind::Gcn,
            LayerKind::Sage,
            LayerKind::Gat {
                heads: 2,
                concat: true,
            },
            LayerKind::Gat {
                heads: 2,
                concat: false,
            },
        ] {
            split_backward_matches_the_full_one(kind, false)?;
            split_backward_matches_the_full_one(kind, true)?;
        }
        Ok(())
    }

    #[test]
    fn dropout_masks_depend_on_the_vertex_not_the_row() -> Result<()> {
        let x = StageInput::Dense(Tensor::ones((3, 64), DType::F32, &Device::Cpu)?);
        let a = x.dropout(0.5, 7, &[4, 9, 2])?;
        let b = x.dropout(0.5, 7, &[9, 2, 4])?;
        let (StageInput::Dense(a), StageInput::Dense(b)) = (a, b) else {
            unreachable!("dense in, dense out")
        };
        let (a, b) = (a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert_eq!(a[1], b[0]);
        assert_eq!(a[0], b[2]);
        let kept = a.iter().flatten().filter(|&&v| v > 0.0).count();
        assert!((60..=132).contains(&kept), "kept {kept} of 192");
        Ok(())
    }
}
