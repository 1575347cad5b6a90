//! Training data on the executor's side: features, labels, splits, and each chunk's subgraph.

use candle_core::{Device, Result, Tensor};

use super::sparse::SparseMatrix;
use crate::graph::rng::Rng;
use crate::graph::{Csr, SparseFeatures};

/// Vertex features, labels and the train/validation/test split.
#[derive(Debug, Clone)]
pub struct NodeData {
    /// Row-normalised features, one row per vertex (dense, f32).
    pub features: Vec<f32>,
    /// Feature width.
    pub n_features: usize,
    /// Class per vertex, `-1` for unlabelled.
    pub labels: Vec<i32>,
    /// Number of classes.
    pub n_classes: usize,
    /// Training, validation and test vertices.
    pub train: Vec<u32>,
    /// Validation vertices.
    pub val: Vec<u32>,
    /// Test vertices.
    pub test: Vec<u32>,
}

impl NodeData {
    /// From sparse features (or, where a dataset has none, seeded random binary features of
    /// `density`), row-normalised as the GCN reference code does.
    pub fn new(
        n_nodes: usize,
        features: Option<&SparseFeatures>,
        n_features: usize,
        density: f64,
        labels: Vec<i32>,
        n_classes: usize,
        splits: [Vec<u32>; 3],
    ) -> Self {
        let mut dense = vec![0f32; n_nodes * n_features];
        match features {
            Some(sparse) => {
                for row in 0..n_nodes.min(sparse.n_rows as usize) {
                    let (cols, values) = sparse.row(row as u32);
                    for (&c, &v) in cols.iter().zip(values) {
                        dense[row * n_features + c as usize] = v;
                    }
                }
            }
            None => {
                let mut rng = Rng::new(0x5eed_f00d);
                let per_row = ((density * n_features as f64).round() as u64).max(1);
                for row in dense.chunks_mut(n_features) {
                    for _ in 0..per_row {
                        row[rng.below(n_features as u64) as usize] = 1.0;
                    }
                }
            }
        }
        for row in dense.chunks_mut(n_features) {
            let sum: f32 = row.iter().sum();
            if sum > 0.0 {
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
        let [train, val, test] = splits;
        NodeData {
            features: dense,
            n_features,
            labels,
            n_classes,
            train,
            val,
            test,
        }
    }

    /// The features of `vertices` as a sparse `(n, F)` matrix of their non-zeros.
    pub fn feature_rows_sparse(&self, vertices: &[u32]) -> SparseMatrix {
        let (mut offsets, mut indices, mut values) = (vec![0usize], Vec::new(), Vec::new());
        for &v in vertices {
            let row = &self.features[v as usize * self.n_features..][..self.n_features];
            for (c, &x) in row.iter().enumerate() {
                if x != 0.0 {
                    indices.push(c as u32);
                    values.push(x);
                }
            }
            offsets.push(indices.len());
        }
        SparseMatrix::new(vertices.len(), self.n_features, offsets, indices, values)
    }

    /// The features of `vertices`, as an `(n, F)` tensor.
    pub fn feature_rows(&self, vertices: &[u32], device: &Device) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(vertices.len() * self.n_features);
        for &v in vertices {
            rows.extend_from_slice(
                &self.features[v as usize * self.n_features..][..self.n_features],
            );
        }
        Tensor::from_vec(rows, (vertices.len(), self.n_features), device)
    }
}

/// One chunk's induced subgraph (the edges `halo: drop` keeps), as aggregation matrices.
#[derive(Debug, Clone)]
pub struct ChunkGraph {
    /// The chunk's vertices, ascending; local row i is vertex `vertices[i]`.
    pub vertices: Vec<u32>,
    /// GCN's `D^-1/2 (A + I) D^-1/2` over the subgraph.
    pub gcn: SparseMatrix,
    /// The mean over each vertex's neighbours in the subgraph (GraphSAGE).
    pub mean: SparseMatrix,
}

impl ChunkGraph {
    /// The subgraph of `graph` induced by `vertices` (ascending).
    pub fn induced(graph: &Csr, vertices: Vec<u32>) -> Self {
        let n = vertices.len();
        let local = |v: u32| vertices.binary_search(&v).ok();
        let mut neighbours: Vec<Vec<u32>> = Vec::with_capacity(n);
        for &v in &vertices {
            neighbours.push(
                graph
                    .neighbors(v)
                    .iter()
                    .filter_map(|&u| local(u).map(|i| i as u32))
                    .collect(),
            );
        }
        let degree: Vec<f32> = neighbours
            .iter()
            .map(|list| list.len() as f32 + 1.0)
            .collect();
        let (mut gcn_offsets, mut gcn_indices, mut gcn_values) =
            (vec![0usize], Vec::new(), Vec::new());
        let (mut mean_offsets, mut mean_indices, mut mean_values) =
            (vec![0usize], Vec::new(), Vec::new());
        for (i, list) in neighbours.iter().enumerate() {
            // Self loop first, then neighbours in ascending order.
            let mut row: Vec<u32> = std::iter::once(i as u32)
                .chain(list.iter().copied())
                .collect();
            row.sort_unstable();
            for &j in &row {
                gcn_indices.push(j);
                gcn_values.push(1.0 / (degree[i] * degree[j as usize]).sqrt());
            }
            gcn_offsets.push(gcn_indices.len());
            for &j in list {
                mean_indices.push(j);
                mean_values.push(1.0 / list.len() as f32);
            }
            mean_offsets.push(mean_indices.len());
        }
        ChunkGraph {
            gcn: SparseMatrix::new(n, n, gcn_offsets, gcn_indices, gcn_values),
            mean: SparseMatrix::new(n, n, mean_offsets, mean_indices, mean_values),
            vertices,
        }
    }
}
