//! GNN layers on candle: GCN and GraphSAGE (mean), dropout, and one stage's slice of the model.

use candle_core::{DType, Device, Result, Tensor, Var, D};

use super::data::ChunkGraph;
use super::sparse::SparseMatrix;
use crate::gnn::{Layer, LayerKind};
use crate::graph::rng::Rng;

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
}

/// Glorot-uniform weights from a seeded stream, so a seed fixes the initial model.
fn glorot(rng: &mut Rng, d_in: usize, d_out: usize, device: &Device) -> Result<Var> {
    let bound = (6.0 / (d_in + d_out) as f64).sqrt();
    let values: Vec<f32> = (0..d_in * d_out)
        .map(|_| ((rng.unit_f64() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, (d_in, d_out), device)?)
}

impl ExecLayer {
    /// A freshly initialised layer, or an error naming a kind the executor cannot run yet.
    pub fn new(layer: &Layer, rng: &mut Rng, device: &Device) -> std::result::Result<Self, String> {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        let mut make = || -> Result<ExecLayer> {
            Ok(match layer.kind {
                LayerKind::Gcn => ExecLayer::Gcn {
                    weight: glorot(rng, d_in, d_out, device)?,
                    bias: Var::zeros(d_out, DType::F32, device)?,
                },
                LayerKind::Sage => ExecLayer::Sage {
                    weight_self: glorot(rng, d_in, d_out, device)?,
                    weight_neigh: glorot(rng, d_in, d_out, device)?,
                    bias: Var::zeros(d_out, DType::F32, device)?,
                },
                LayerKind::Gat { .. } => unreachable!("refused above"),
            })
        };
        if matches!(layer.kind, LayerKind::Gat { .. }) {
            return Err("the executor does not run GAT layers yet (GCN and GraphSAGE only)".into());
        }
        make().map_err(|e| e.to_string())
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
        }
    }

    /// The layer over one chunk's graph.
    pub fn forward(&self, x: &StageInput, graph: &ChunkGraph) -> Result<Tensor> {
        match self {
            ExecLayer::Gcn { weight, bias } => graph
                .gcn
                .matmul(&x.matmul(weight.as_tensor())?)?
                .broadcast_add(bias.as_tensor()),
            // The neighbour mean commutes with the linear map: mean(X) W = mean(X W), which
            // keeps sparse inputs sparse.
            ExecLayer::Sage {
                weight_self,
                weight_neigh,
                bias,
            } => (x.matmul(weight_self.as_tensor())?
                + graph.mean.matmul(&x.matmul(weight_neigh.as_tensor())?)?)?
            .broadcast_add(bias.as_tensor()),
        }
    }
}

/// A stage's input: the first stage reads sparse features, later stages dense activations.
#[derive(Debug, Clone)]
pub enum StageInput {
    /// Dense rows.
    Dense(Tensor),
    /// Sparse rows (input features, as the GCN reference keeps them).
    Sparse(SparseMatrix),
}

impl StageInput {
    /// `X W`.
    fn matmul(&self, weight: &Tensor) -> Result<Tensor> {
        match self {
            StageInput::Dense(x) => x.matmul(weight),
            StageInput::Sparse(x) => x.matmul(weight),
        }
    }

    /// Inverted dropout; on sparse rows it drops non-zeros, as the GCN reference does.
    fn dropout(&self, p: f64, rng: &mut Rng) -> Result<StageInput> {
        if p <= 0.0 {
            return Ok(self.clone());
        }
        Ok(match self {
            StageInput::Dense(x) => StageInput::Dense(
                (x * Tensor::from_vec(
                    dropout_mask(x.elem_count(), p, rng),
                    x.shape(),
                    x.device(),
                )?)?,
            ),
            StageInput::Sparse(x) => {
                let mask = dropout_mask(x.values().len(), p, rng);
                StageInput::Sparse(
                    x.with_values(x.values().iter().zip(mask).map(|(v, m)| v * m).collect()),
                )
            }
        })
    }
}

/// An inverted-dropout mask of `n` entries: 0, or `1 / (1 - p)` with probability `1 - p`.
fn dropout_mask(n: usize, p: f64, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 - p;
    // Four 16-bit draws per 64-bit word: a keep probability resolved to 1/65536 is plenty for
    // dropout, and mask generation stays a small part of an epoch.
    let threshold = (keep * 65536.0).round() as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = Vec::with_capacity(n);
    while mask.len() < n {
        let word = rng.next_u64();
        for lane in 0..4 {
            if mask.len() < n {
                let draw = (word >> (16 * lane)) & 0xffff;
                mask.push(if draw < threshold { scale } else { 0.0 });
            }
        }
    }
    mask
}

/// Dropout in training: the masks of layer `l` for chunk `c` in epoch `e` come from a stream
/// seeded by `(seed, l, e, c)`, so they do not depend on how layers split into stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Training {
    /// The run's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u32,
    /// The chunk.
    pub chunk: u32,
}

impl Training {
    fn rng(&self, layer: usize) -> Rng {
        Rng::new(
            self.seed
                ^ ((layer as u64) << 48)
                ^ (u64::from(self.epoch) << 24)
                ^ u64::from(self.chunk),
        )
    }
}

/// The layers one stage owns, applied as the GCN reference does: dropout before each layer,
/// ReLU after every layer but the model's last.
pub struct StageModel {
    /// The layers, in order.
    pub layers: Vec<ExecLayer>,
    /// The model index of the first layer.
    pub first_layer: usize,
    /// Whether the stage ends with the model's output layer.
    pub is_last: bool,
    /// Dropout probability in training.
    pub dropout: f64,
}

impl StageModel {
    /// The stage's output for one chunk; `training` is `Some` in training (dropout on).
    pub fn forward(
        &self,
        x: StageInput,
        graph: &ChunkGraph,
        training: Option<Training>,
    ) -> Result<Tensor> {
        let mut h = x;
        let mut out = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(training) = training {
                h = h.dropout(self.dropout, &mut training.rng(self.first_layer + i))?;
            }
            let mut y = layer.forward(&h, graph)?;
            if !(self.is_last && i + 1 == self.layers.len()) {
                y = y.relu()?;
            }
            h = StageInput::Dense(y.clone());
            out = Some(y);
        }
        Ok(out.expect("a stage owns at least one layer"))
    }

    /// Every variable of the stage, in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(ExecLayer::vars).collect()
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
