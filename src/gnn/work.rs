//! The rows and edges one layer touches for one chunk, under each rule for edges that cross
//! chunks.

use crate::graph::ChunkStats;

/// Figures about how a schedule treats the graph's edges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphMetrics {
    /// Halo `drop`: undirected edges between chunks (ignored) over all undirected edges.
    pub dropped_edge_fraction: Option<f64>,
    /// GNNPipe: directed neighbour reads served from history, over all reads, at layers whose
    /// input is not the features.
    pub stale_read_fraction: Option<f64>,
    /// Halo `exact`: vertex-layer outputs computed over those a full-graph pass computes.
    pub redundant_compute_factor: Option<f64>,
    /// Each chunk's (graph parallelism: partition's) vertices, edges and halo.
    pub chunks: Vec<ChunkStats>,
}

/// What happens to edges between chunks (pipelines), or how partitions exchange rows (graph
/// parallelism).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halo {
    /// Ignored, as torchgpipe did: a chunk aggregates only its internal edges.
    Drop,
    /// Each chunk carries its full multi-hop receptive field and recomputes it.
    Exact,
    /// GNNPipe: neighbours outside the chunk are read (fresh or from the history buffer).
    Stale,
    /// Graph parallelism, halo exchange: each partition receives the rows its edges read.
    Exchange,
    /// Graph parallelism, CAGNET 1D broadcast: each partition receives every row.
    Broadcast,
}

impl Halo {
    /// The scenario's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Halo::Drop => "drop",
            Halo::Exact => "exact",
            Halo::Stale => "stale",
            Halo::Exchange => "halo",
            Halo::Broadcast => "broadcast",
        }
    }

    /// How many rings of halo vertices chunk statistics must carry for an `n_layers` model.
    pub fn hops_needed(self, n_layers: usize) -> u32 {
        match self {
            Halo::Exact => n_layers as u32,
            _ => 0,
        }
    }
}

/// Rows and edges of one layer for one chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerRows {
    /// The chunk's own vertices.
    pub own: f64,
    /// Rows whose output the layer computes.
    pub out: f64,
    /// Distinct input rows the layer reads (its output rows and their neighbours it aggregates).
    pub read: f64,
    /// Directed edges aggregated (self loops not included).
    pub edges: f64,
}

/// The rows and edges layer `layer` (0-based, of `n_layers`) touches for `chunk` in a graph of
/// `n_nodes` vertices.
///
/// - `Drop`: the chunk's vertices and internal edges only.
/// - `Stale`, `Exchange`: the chunk's vertices, reading every neighbour (`boundary` rows more)
///   over all its in-edges.
/// - `Broadcast`: as `Exchange`, but every row of the graph is received.
/// - `Exact`: layer l must produce outputs for every vertex within `L - 1 - l` hops of the chunk
///   (so the last layer has the chunk's own), reading one ring further.
pub fn layer_rows(
    halo: Halo,
    layer: usize,
    n_layers: usize,
    chunk: &ChunkStats,
    n_nodes: f64,
) -> LayerRows {
    let own = chunk.vertices as f64;
    match halo {
        Halo::Drop => LayerRows {
            own,
            out: own,
            read: own,
            edges: chunk.internal_edges as f64,
        },
        Halo::Stale | Halo::Exchange => LayerRows {
            own,
            out: own,
            read: own + chunk.boundary as f64,
            edges: chunk.in_edges as f64,
        },
        Halo::Broadcast => LayerRows {
            own,
            out: own,
            read: n_nodes,
            edges: chunk.in_edges as f64,
        },
        Halo::Exact => {
            let depth = n_layers - 1 - layer;
            let rings = &chunk.halo;
            let inner = &rings[..depth.min(rings.len())];
            let out = own + inner.iter().map(|r| r.vertices as f64).sum::<f64>();
            let next = rings.get(depth).map_or(0.0, |r| r.vertices as f64);
            LayerRows {
                own,
                out,
                read: out + next,
                edges: chunk.in_edges as f64
                    + inner.iter().map(|r| r.degree_sum as f64).sum::<f64>(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Ring;

    #[test]
    fn exact_grows_with_depth_and_others_do_not() {
        let chunk = ChunkStats {
            vertices: 10,
            internal_edges: 12,
            in_edges: 30,
            boundary: 5,
            halo: vec![
                Ring {
                    vertices: 5,
                    degree_sum: 20,
                },
                Ring {
                    vertices: 7,
                    degree_sum: 40,
                },
            ],
        };
        let last = layer_rows(Halo::Exact, 1, 2, &chunk, 100.0);
        assert_eq!((last.out, last.read, last.edges), (10.0, 15.0, 30.0));
        let first = layer_rows(Halo::Exact, 0, 2, &chunk, 100.0);
        assert_eq!((first.out, first.read, first.edges), (15.0, 22.0, 50.0));
        let drop = layer_rows(Halo::Drop, 0, 2, &chunk, 100.0);
        assert_eq!((drop.out, drop.read, drop.edges), (10.0, 10.0, 12.0));
        let stale = layer_rows(Halo::Stale, 0, 2, &chunk, 100.0);
        assert_eq!((stale.out, stale.read, stale.edges), (10.0, 15.0, 30.0));
        assert_eq!(layer_rows(Halo::Broadcast, 0, 2, &chunk, 100.0).read, 100.0);
    }
}
