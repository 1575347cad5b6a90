//! Training data on the executor's side: features, labels, splits, and for each chunk the rows
//! every layer computes and reads, with their aggregation matrices.
//!
//! A [`LayerGraph`] is one layer's view of one chunk: `read` lists the global ids of the rows the
//! layer reads, of which the first `out` are the rows it computes. How a chunk's layers see the
//! graph is the halo rule ([`ChunkPlan`]'s constructors):
//!
//! - `drop` ([`ChunkPlan::induced`]): the chunk's induced subgraph, normalised over it, as
//!   torchgpipe saw a micro-batch.
//! - `stale` and graph parallelism ([`ChunkPlan::neighbours`]): the chunk's vertices, reading
//!   every neighbour; rows outside the chunk follow, ordered by (owning chunk, id).
//! - `exact` ([`ChunkPlan::receptive_field`]): layer l computes every vertex within `L - 1 - l`
//!   hops of the chunk and reads one ring further, rings in order, so each layer's output rows
//!   are exactly the next layer's read rows.
//!
//! Outside `drop`, normalisation uses the whole graph's degrees, so a chunk's rows get the
//! values a full-graph layer gives them.

use std::sync::Arc;

use std::ops::Range;

use super::attention::EdgePattern;
use super::sparse::SparseMatrix;
use crate::graph::rng::Rng;
use crate::graph::{Csr, SparseFeatures};

/// Vertex features, labels and the train/validation/test split.
#[derive(Debug, Clone)]
pub struct NodeData {
    /// Row-normalised features as sparse rows: offsets, columns, values.
    offsets: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
    /// Feature width.
    pub n_features: usize,
    /// Class per vertex, `-1` for unlabelled.
    pub labels: Vec<i32>,
    /// Number of classes.
    pub n_classes: usize,
    /// Training vertices.
    pub train: Vec<u32>,
    /// Validation vertices.
    pub val: Vec<u32>,
    /// Test vertices.
    pub test: Vec<u32>,
}

impl NodeData {
    /// Adds the features, labels and splits to `f`.
    pub(super) fn fingerprint(&self, f: &mut super::transport::wire::Fingerprint) {
        f.u64s([self.n_features as u64, self.n_classes as u64]);
        f.u64s(self.offsets.iter().map(|&o| o as u64));
        f.u64s(self.columns.iter().map(|&c| u64::from(c)));
        f.u64s(self.values.iter().map(|&v| u64::from(v.to_bits())));
        f.u64s(self.labels.iter().map(|&l| l as u64));
        for split in [&self.train, &self.val, &self.test] {
            f.u64s([split.len() as u64]);
            f.u64s(split.iter().map(|&v| u64::from(v)));
        }
    }

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
        let (mut offsets, mut columns, mut values) = (vec![0usize], Vec::new(), Vec::new());
        let mut rng = Rng::new(0x5eed_f00d);
        let per_row = ((density * n_features as f64).round() as u64).max(1);
        for row in 0..n_nodes {
            let start = columns.len();
            match features {
                Some(sparse) if row < sparse.n_rows as usize => {
                    let (cols, vals) = sparse.row(row as u32);
                    columns.extend_from_slice(cols);
                    values.extend_from_slice(vals);
                }
                Some(_) => {}
                None => {
                    let mut picked: Vec<u32> = (0..per_row)
                        .map(|_| rng.below(n_features as u64) as u32)
                        .collect();
                    picked.sort_unstable();
                    picked.dedup();
                    values.extend(std::iter::repeat_n(1.0, picked.len()));
                    columns.extend(picked);
                }
            }
            let sum: f32 = values[start..].iter().sum();
            if sum != 0.0 {
                values[start..].iter_mut().for_each(|v| *v /= sum);
            }
            offsets.push(columns.len());
        }
        let [train, val, test] = splits;
        NodeData {
            offsets,
            columns,
            values,
            n_features,
            labels,
            n_classes,
            train,
            val,
            test,
        }
    }

    /// Number of vertices.
    pub fn n_nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The features of `vertices` as a sparse `(n, F)` matrix of their non-zeros.
    pub fn feature_rows(&self, vertices: &[u32]) -> SparseMatrix {
        let (mut offsets, mut indices, mut values) = (vec![0usize], Vec::new(), Vec::new());
        for &v in vertices {
            let range = self.offsets[v as usize]..self.offsets[v as usize + 1];
            indices.extend_from_slice(&self.columns[range.clone()]);
            values.extend_from_slice(&self.values[range]);
            offsets.push(indices.len());
        }
        SparseMatrix::new(vertices.len(), self.n_features, offsets, indices, values)
    }
}

/// Bytes a sparse matrix holds (both orientations: offsets, indices and values).
pub fn sparse_bytes(m: &SparseMatrix) -> u64 {
    (8 * (m.rows() + m.cols() + 2) + 16 * m.nnz()) as u64
}

/// Which aggregation matrices a model's layers use, so a plan builds only those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// GCN's normalised adjacency.
    pub gcn: bool,
    /// GraphSAGE's neighbour mean.
    pub mean: bool,
    /// GAT's attention pattern.
    pub attention: bool,
}

impl Needs {
    /// What the layers of `model` aggregate with.
    pub fn of(model: &crate::gnn::GnnModel) -> Self {
        let mut needs = Needs::default();
        for layer in &model.layers {
            match layer.kind {
                crate::gnn::LayerKind::Gcn => needs.gcn = true,
                crate::gnn::LayerKind::Sage => needs.mean = true,
                crate::gnn::LayerKind::Gat { .. } => needs.attention = true,
            }
        }
        needs
    }
}

/// GAT's view of a layer's edges: each output row's neighbours and itself.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Row `i`'s edges are `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<usize>,
    /// The read row (local index) of each edge.
    pub sources: Vec<u32>,
    /// The same edges indexed for the attention kernels.
    pub edges: EdgePattern,
}

/// One layer's view of one chunk.
#[derive(Debug, Clone)]
pub struct LayerGraph {
    /// Global ids of the rows read; the first `out` are the rows computed.
    pub read: Vec<u32>,
    /// Rows computed.
    pub out: usize,
    /// GCN's `D^-1/2 (A + I) D^-1/2`, `out x read` (models with GCN layers).
    pub gcn: Option<SparseMatrix>,
    /// The mean over each row's neighbours, `out x read` (models with GraphSAGE layers).
    pub mean: Option<SparseMatrix>,
    /// The attention pattern (models with GAT layers).
    pub attention: Option<Attention>,
}

fn missing(what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("the chunk plan was built without its {what}"))
}

impl LayerGraph {
    /// The global ids of the rows computed.
    pub fn out_rows(&self) -> &[u32] {
        &self.read[..self.out]
    }

    /// The read rows that are not computed here: halo rows.
    pub fn halo_rows(&self) -> &[u32] {
        &self.read[self.out..]
    }

    /// GCN's matrix.
    pub fn gcn(&self) -> candle_core::Result<&SparseMatrix> {
        self.gcn.as_ref().ok_or_else(|| missing("GCN matrix"))
    }

    /// GraphSAGE's matrix.
    pub fn mean(&self) -> candle_core::Result<&SparseMatrix> {
        self.mean
            .as_ref()
            .ok_or_else(|| missing("neighbour-mean matrix"))
    }

    /// GAT's pattern.
    pub fn attention(&self) -> candle_core::Result<&Attention> {
        self.attention
            .as_ref()
            .ok_or_else(|| missing("attention pattern"))
    }

    /// Bytes of its index arrays and matrices.
    pub fn bytes(&self) -> u64 {
        4 * self.read.len() as u64
            + self.gcn.as_ref().map_or(0, sparse_bytes)
            + self.mean.as_ref().map_or(0, sparse_bytes)
            + self.attention.as_ref().map_or(0, |a| {
                (8 * a.offsets.len() + 4 * a.sources.len()) as u64 + a.edges.bytes()
            })
    }

    /// The same view with only the matrix entries of the read rows `keep` says: a product over
    /// some column blocks (graph parallelism's 1.5D). Attention patterns are dropped (GAT's
    /// softmax does not split by columns).
    pub fn keep_columns(&self, keep: &[bool]) -> LayerGraph {
        let cut = |m: &SparseMatrix| {
            let (mut offsets, mut indices, mut values) = (vec![0usize], Vec::new(), Vec::new());
            for row in 0..m.rows() {
                let (begin, end) = m.row_range(row);
                for k in begin..end {
                    let column = m.column(k);
                    if keep[column as usize] {
                        indices.push(column);
                        values.push(m.values()[k]);
                    }
                }
                offsets.push(indices.len());
            }
            SparseMatrix::new(m.rows(), m.cols(), offsets, indices, values)
        };
        LayerGraph {
            read: self.read.clone(),
            out: self.out,
            gcn: self.gcn.as_ref().map(cut),
            mean: self.mean.as_ref().map(cut),
            attention: None,
        }
    }

    /// Builds the matrices `needs` asks for, computing `read[..out]` from `read`.
    /// `full_degrees`: normalise by the whole graph's degrees (otherwise by the degrees among
    /// `read`, the induced subgraph).
    fn build(
        graph: &Csr,
        read: Vec<u32>,
        out: usize,
        full_degrees: bool,
        needs: Needs,
        scratch: &mut [u32],
    ) -> Self {
        for (i, &v) in read.iter().enumerate() {
            scratch[v as usize] = i as u32;
        }
        let local = |u: u32, scratch: &[u32]| {
            let i = scratch[u as usize];
            (i != u32::MAX).then_some(i)
        };
        let degree: Vec<f32> = read
            .iter()
            .map(|&v| {
                let neighbours = graph.neighbors(v);
                let d = if full_degrees {
                    neighbours.len()
                } else {
                    neighbours
                        .iter()
                        .filter(|&&u| local(u, scratch).is_some())
                        .count()
                };
                d as f32 + 1.0
            })
            .collect();
        let mut gcn = (vec![0usize], Vec::new(), Vec::new());
        let mut mean = (vec![0usize], Vec::new(), Vec::new());
        let mut pattern = (vec![0usize], Vec::new());
        let mut row: Vec<u32> = Vec::new();
        for (i, &v) in read[..out].iter().enumerate() {
            row.clear();
            row.extend(graph.neighbors(v).iter().filter_map(|&u| local(u, scratch)));
            row.sort_unstable();
            if needs.mean {
                let n_neighbours = row.len();
                for &j in &row {
                    mean.1.push(j);
                    mean.2.push(1.0 / n_neighbours as f32);
                }
                mean.0.push(mean.1.len());
            }
            let at = row.partition_point(|&j| j < i as u32);
            row.insert(at, i as u32);
            if needs.gcn {
                for &j in &row {
                    gcn.1.push(j);
                    gcn.2.push(1.0 / (degree[i] * degree[j as usize]).sqrt());
                }
                gcn.0.push(gcn.1.len());
            }
            if needs.attention {
                pattern.1.extend_from_slice(&row);
                pattern.0.push(pattern.1.len());
            }
        }
        for &v in &read {
            scratch[v as usize] = u32::MAX;
        }
        let n = read.len();
        let matrix = |(offsets, indices, values): (Vec<usize>, Vec<u32>, Vec<f32>)| {
            SparseMatrix::new(out, n, offsets, indices, values)
        };
        let attention = needs.attention.then(|| {
            let (offsets, sources) = pattern;
            let ones = vec![1.0; sources.len()];
            let edges = EdgePattern::new(&SparseMatrix::new(
                out,
                n,
                offsets.clone(),
                sources.clone(),
                ones,
            ))
            .expect("chunk patterns fit u32 indices");
            Attention {
                offsets,
                sources,
                edges,
            }
        });
        LayerGraph {
            gcn: needs.gcn.then(|| matrix(gcn)),
            mean: needs.mean.then(|| matrix(mean)),
            attention,
            read,
            out,
        }
    }
}

/// How the layers a stage owns see one chunk.
#[derive(Debug, Clone)]
pub struct ChunkPlan {
    /// The chunk's own vertices, ascending: the rows of the model's last layer.
    pub vertices: Vec<u32>,
    /// The model index of the first layer planned.
    first: usize,
    /// One view per planned layer (shared where layers see the chunk alike).
    layers: Vec<Arc<LayerGraph>>,
}

/// What a plan is built for: which of the model's `n_layers` layers, and whether they attend.
#[derive(Debug, Clone)]
pub struct PlanShape {
    /// The layers to plan.
    pub layers: Range<usize>,
    /// The model's depth.
    pub n_layers: usize,
    /// The matrices to build.
    pub needs: Needs,
}

impl ChunkPlan {
    /// Halo `drop`: every layer sees the subgraph induced by `vertices` (ascending).
    pub fn induced(graph: &Csr, vertices: Vec<u32>, shape: &PlanShape) -> Self {
        let mut scratch = vec![u32::MAX; graph.n_nodes()];
        let layer = Arc::new(LayerGraph::build(
            graph,
            vertices.clone(),
            vertices.len(),
            false,
            shape.needs,
            &mut scratch,
        ));
        ChunkPlan {
            vertices,
            first: shape.layers.start,
            layers: vec![layer; shape.layers.len()],
        }
    }

    /// Halo `stale` and graph parallelism: every layer computes `vertices` (ascending) and
    /// reads all their neighbours; the rows outside the chunk follow ordered by `key` (their
    /// owner: a chunk, a partition), then id.
    pub fn neighbours(
        graph: &Csr,
        vertices: Vec<u32>,
        key: impl Fn(u32) -> u64,
        shape: &PlanShape,
    ) -> Self {
        let mut scratch = vec![u32::MAX; graph.n_nodes()];
        for &v in &vertices {
            scratch[v as usize] = 0;
        }
        let mut halo: Vec<u32> = vertices
            .iter()
            .flat_map(|&v| graph.neighbors(v).iter().copied())
            .filter(|&u| scratch[u as usize] == u32::MAX)
            .collect();
        for &v in &vertices {
            scratch[v as usize] = u32::MAX;
        }
        halo.sort_unstable_by_key(|&u| (key(u), u));
        halo.dedup();
        let out = vertices.len();
        let mut read = vertices.clone();
        read.extend(halo);
        let layer = Arc::new(LayerGraph::build(
            graph,
            read,
            out,
            true,
            shape.needs,
            &mut scratch,
        ));
        ChunkPlan {
            vertices,
            first: shape.layers.start,
            layers: vec![layer; shape.layers.len()],
        }
    }

    /// Halo `exact`: layer l computes every vertex within `n_layers - 1 - l` hops of `vertices`
    /// (ascending) and reads one ring further.
    pub fn receptive_field(graph: &Csr, vertices: Vec<u32>, shape: &PlanShape) -> Self {
        let n_layers = shape.n_layers;
        let mut scratch = vec![u32::MAX; graph.n_nodes()];
        // ball[r]: how many rows of `order` lie within r hops.
        let mut order = vertices.clone();
        let mut seen = vec![false; graph.n_nodes()];
        for &v in &vertices {
            seen[v as usize] = true;
        }
        let mut ball = vec![order.len()];
        let mut frontier = 0;
        for _ in 0..n_layers - shape.layers.start {
            let mut ring: Vec<u32> = Vec::new();
            for &v in &order[frontier..] {
                for &u in graph.neighbors(v) {
                    if !seen[u as usize] {
                        seen[u as usize] = true;
                        ring.push(u);
                    }
                }
            }
            ring.sort_unstable();
            frontier = order.len();
            order.extend(ring);
            ball.push(order.len());
        }
        let layers = shape
            .layers
            .clone()
            .map(|l| {
                let out = ball[n_layers - 1 - l];
                let read = order[..ball[n_layers - l]].to_vec();
                Arc::new(LayerGraph::build(
                    graph,
                    read,
                    out,
                    true,
                    shape.needs,
                    &mut scratch,
                ))
            })
            .collect();
        ChunkPlan {
            vertices,
            first: shape.layers.start,
            layers,
        }
    }

    /// The view of model layer `layer`.
    pub fn layer(&self, layer: usize) -> &LayerGraph {
        &self.layers[layer - self.first]
    }

    /// Bytes of the plan (each shared view once).
    pub fn bytes(&self) -> u64 {
        let mut total = 4 * self.vertices.len() as u64;
        let mut last: Option<*const LayerGraph> = None;
        for layer in &self.layers {
            let ptr = Arc::as_ptr(layer);
            if last != Some(ptr) {
                total += layer.bytes();
            }
            last = Some(ptr);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path 0 - 1 - 2 - 3 - 4 - 5.
    fn path() -> Csr {
        let edges: Vec<(u32, u32)> = (0..5).map(|v| (v, v + 1)).collect();
        Csr::from_undirected_edges(6, &edges)
    }

    fn shape(layers: Range<usize>) -> PlanShape {
        PlanShape {
            layers,
            n_layers: 2,
            needs: Needs {
                gcn: true,
                mean: true,
                attention: false,
            },
        }
    }

    #[test]
    fn receptive_fields_nest_and_grow_one_ring_per_layer() {
        let plan = ChunkPlan::receptive_field(&path(), vec![2, 3], &shape(0..2));
        // Layer 0 computes 1 hop around {2, 3} and reads 2 hops; layer 1 computes {2, 3}.
        assert_eq!(plan.layer(0).read, vec![2, 3, 1, 4, 0, 5]);
        assert_eq!(plan.layer(0).out, 4);
        assert_eq!(plan.layer(1).read, vec![2, 3, 1, 4]);
        assert_eq!(plan.layer(1).out, 2);
        // Full-graph normalisation: vertex 2 has degree 2, so Â[2][2] = 1/3.
        assert!((plan.layer(1).gcn.as_ref().unwrap().to_dense()[0][0] - 1.0 / 3.0).abs() < 1e-7);
        // A plan of the second layer alone sees it the same way.
        let second = ChunkPlan::receptive_field(&path(), vec![2, 3], &shape(1..2));
        assert_eq!(second.layer(1).read, plan.layer(1).read);
    }

    #[test]
    fn induced_subgraphs_drop_outside_edges_and_neighbours_keep_them() {
        let graph = path();
        let induced = ChunkPlan::induced(&graph, vec![2, 3], &shape(0..2));
        assert_eq!(induced.layer(0).read, vec![2, 3]);
        // Degree 1 inside the chunk: Â[0][0] = 1/2.
        assert!((induced.layer(0).gcn.as_ref().unwrap().to_dense()[0][0] - 0.5).abs() < 1e-7);
        let part = [0, 0, 1, 1, 2, 2];
        let stale = ChunkPlan::neighbours(&graph, vec![2, 3], |u| part[u as usize], &shape(0..2));
        assert_eq!(stale.layer(0).read, vec![2, 3, 1, 4]);
        assert_eq!(stale.layer(0).halo_rows(), &[1, 4]);
        assert_eq!(
            stale.layer(0).mean.as_ref().unwrap().to_dense()[0],
            vec![0.0, 0.5, 0.5, 0.0]
        );
    }
}
