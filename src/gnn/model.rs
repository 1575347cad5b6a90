//! GNN layers (GCN, GraphSAGE-mean, GAT), exact parameter counts, and stage splitting.

use std::ops::Range;

/// A layer's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Kipf & Welling's graph convolution: `D^-1/2 (A + I) D^-1/2 X W + b`.
    Gcn,
    /// GraphSAGE with mean aggregation: `X W_self + mean(X_neighbours) W_neigh + b`.
    Sage,
    /// Graph attention with `heads` heads of `d_out / heads` (concatenated) or `d_out`
    /// (averaged) channels each.
    Gat {
        /// Number of attention heads.
        heads: u64,
        /// Whether head outputs are concatenated (hidden layers) or averaged (output layer).
        concat: bool,
    },
}

impl LayerKind {
    /// Whether the layer attends over its neighbours (GAT).
    pub fn is_attention(self) -> bool {
        matches!(self, LayerKind::Gat { .. })
    }
}

/// One layer with its widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// GCN, SAGE or GAT.
    pub kind: LayerKind,
    /// Input width.
    pub d_in: u64,
    /// Output width (after concatenating or averaging heads).
    pub d_out: u64,
}

impl Layer {
    /// Channels per attention head (the whole width for GCN and SAGE).
    pub fn head_width(&self) -> u64 {
        match self.kind {
            LayerKind::Gat {
                heads,
                concat: true,
            } => self.d_out / heads,
            _ => self.d_out,
        }
    }

    /// Number of heads (1 for GCN and SAGE).
    pub fn heads(&self) -> u64 {
        match self.kind {
            LayerKind::Gat { heads, .. } => heads,
            _ => 1,
        }
    }

    /// Exact parameter count, as PyTorch Geometric's `GCNConv`, `SAGEConv` (mean, root weight,
    /// one bias) and `GATConv` (no bias in the projection, per-head source and target attention
    /// vectors, one bias of the output width) define them.
    pub fn parameters(&self) -> u64 {
        match self.kind {
            LayerKind::Gcn => self.d_in * self.d_out + self.d_out,
            LayerKind::Sage => 2 * self.d_in * self.d_out + self.d_out,
            LayerKind::Gat { heads, .. } => {
                let projected = heads * self.head_width();
                self.d_in * projected + 2 * projected + self.d_out
            }
        }
    }

    /// The numbers of its largest parameter tensor: the weight (GraphSAGE's two are alike).
    pub fn largest_tensor(&self) -> u64 {
        match self.kind {
            LayerKind::Gcn | LayerKind::Sage => self.d_in * self.d_out,
            LayerKind::Gat { heads, .. } => self.d_in * heads * self.head_width(),
        }
    }

    /// Its parameter tensors, as the executor holds them: a weight and a bias (GCN), two
    /// weights and a bias (GraphSAGE), a weight, two attention vectors and a bias (GAT).
    pub fn parameter_tensors(&self) -> u64 {
        match self.kind {
            LayerKind::Gcn => 2,
            LayerKind::Sage => 3,
            LayerKind::Gat { .. } => 4,
        }
    }
}

/// A GNN: its layers and the size of one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GnnModel {
    /// Layers from input to output.
    pub layers: Vec<Layer>,
    /// Bytes per element of activations and parameters (4 for f32, 2 for bf16 and f16).
    pub element_bytes: u64,
}

impl GnnModel {
    /// Parameters of the layers in `layers`.
    pub fn parameters(&self, layers: Range<usize>) -> u64 {
        self.layers[layers].iter().map(Layer::parameters).sum()
    }

    /// Parameter tensors of the layers in `layers`.
    pub fn parameter_tensors(&self, layers: Range<usize>) -> u64 {
        self.layers[layers]
            .iter()
            .map(Layer::parameter_tensors)
            .sum()
    }
}

/// Splits `costs.len()` layers into `n_stages` consecutive non-empty groups minimising the
/// largest group's total cost.
///
/// # Returns
/// The layer range of each stage.
///
/// # Complexity
/// O(S·L²) dynamic programming over prefix sums (the linear partition problem).
pub fn split_stages(costs: &[f64], n_stages: usize) -> Vec<Range<usize>> {
    let n = costs.len();
    assert!(
        (1..=n).contains(&n_stages),
        "validation guarantees 1 <= stages <= layers"
    );
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(costs.iter().scan(0.0, |sum, c| {
            *sum += c;
            Some(*sum)
        }))
        .collect();
    // best[s][i]: the smallest achievable maximum for the first i layers in s stages.
    let mut best = vec![vec![f64::INFINITY; n + 1]; n_stages + 1];
    let mut cut = vec![vec![0usize; n + 1]; n_stages + 1];
    best[0][0] = 0.0;
    for s in 1..=n_stages {
        for i in s..=n {
            for j in (s - 1)..i {
                let candidate = best[s - 1][j].max(prefix[i] - prefix[j]);
                // Strictly better only: ties keep the earliest cut, so splits are deterministic.
                if candidate < best[s][i] {
                    best[s][i] = candidate;
                    cut[s][i] = j;
                }
            }
        }
    }
    let mut ranges = Vec::with_capacity(n_stages);
    let mut end = n;
    for s in (1..=n_stages).rev() {
        let start = cut[s][end];
        ranges.push(start..end);
        end = start;
    }
    ranges.reverse();
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_pyg() {
        // GCNConv(1433, 16) has 1433*16 + 16 = 22944 parameters.
        let gcn = Layer {
            kind: LayerKind::Gcn,
            d_in: 1433,
            d_out: 16,
        };
        assert_eq!(gcn.parameters(), 22_944);
        // SAGEConv(1433, 16): lin_l (with bias) + lin_r (without) = 2*1433*16 + 16.
        let sage = Layer {
            kind: LayerKind::Sage,
            ..gcn
        };
        assert_eq!(sage.parameters(), 45_872);
        // GATConv(500, 8, heads=8): lin 500*64, att_src 64, att_dst 64, bias 64 = 32192.
        let gat = Layer {
            kind: LayerKind::Gat {
                heads: 8,
                concat: true,
            },
            d_in: 500,
            d_out: 64,
        };
        assert_eq!(gat.parameters(), 32_192);
        // GATConv(64, 3, heads=1, concat=False): 64*3 + 3 + 3 + 3 = 201.
        let out = Layer {
            kind: LayerKind::Gat {
                heads: 1,
                concat: false,
            },
            d_in: 64,
            d_out: 3,
        };
        assert_eq!(out.parameters(), 201);
    }

    #[test]
    fn stage_split_balances_the_largest_stage() {
        assert_eq!(split_stages(&[1.0, 1.0, 1.0, 1.0], 2), vec![0..2, 2..4]);
        assert_eq!(
            split_stages(&[5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2),
            vec![0..1, 1..6]
        );
        assert_eq!(split_stages(&[1.0, 2.0, 3.0], 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(split_stages(&[1.0; 8], 1), vec![0..8]);
    }
}
