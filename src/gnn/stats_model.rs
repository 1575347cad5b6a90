//! Chunk statistics of a graph known only by its counts (`graph: {stats: ...}`).
//!
//! The stated model: chunk c of K holds `floor((c+1)N/K) - floor(cN/K)` vertices of average
//! degree `d = 2M/N`. A fraction `phi` of a chunk's edge endpoints lie outside it: for contiguous
//! or random chunking edges are placed uniformly at random, so `phi = 1 - (n - 1)/(N - 1)`; for
//! locality chunking `phi` is the scenario's `cut_fraction`. The outside vertices those `n·d·phi`
//! edges reach are distinct in proportion to a Poisson occupancy: `(N - n)(1 - exp(-n·d·phi /
//! (N - n)))`. Further rings grow the same way from the last ring, whose edges leave the reached
//! set with probability `1 - reached/N`. Nothing here allocates per vertex, so billion-edge
//! graphs are planned in microseconds.

use crate::graph::{ChunkStats, Chunking, Ring};

/// What the model knows of a graph: the counts a `graph: {stats: ...}` scenario states, handed
/// over as plain values so that `gnn` needs nothing of the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphCounts {
    /// Vertices.
    pub nodes: u64,
    /// Undirected edges.
    pub undirected_edges: u64,
    /// Fraction of edges a locality partitioner cuts (needed for locality chunking).
    pub cut_fraction: Option<f64>,
}

/// Vertices of chunk `c` of `k` over `n` vertices (the contiguous sizes).
pub fn chunk_size(n: u64, k: u64, c: u64) -> u64 {
    ((c + 1) as u128 * n as u128 / k as u128 - c as u128 * n as u128 / k as u128) as u64
}

/// Expected distinct vertices among `pool` hit by `throws` uniformly random edge endpoints.
fn occupied(pool: f64, throws: f64) -> f64 {
    if pool <= 0.0 {
        0.0
    } else {
        pool * (1.0 - (-throws / pool).exp())
    }
}

/// The fraction of a chunk's edge endpoints that lie outside it.
pub fn cut_fraction(
    stats: &GraphCounts,
    chunking: Chunking,
    chunk_vertices: u64,
) -> Result<f64, String> {
    match chunking {
        Chunking::Locality => stats.cut_fraction.ok_or_else(|| {
            "a stats graph needs `cut_fraction` for locality chunking: the fraction of edges your partitioner cuts".to_string()
        }),
        Chunking::Contiguous | Chunking::Random { .. } => {
            let n = stats.nodes as f64;
            Ok(if n <= 1.0 {
                0.0
            } else {
                1.0 - (chunk_vertices as f64 - 1.0) / (n - 1.0)
            })
        }
    }
}

/// Each chunk's statistics under the model, with `hops` halo rings.
pub fn chunk_stats(
    stats: &GraphCounts,
    k: u32,
    chunking: Chunking,
    hops: u32,
) -> Result<Vec<ChunkStats>, String> {
    let n = stats.nodes as f64;
    let degree = 2.0 * stats.undirected_edges as f64 / n;
    (0..u64::from(k))
        .map(|c| {
            let size = chunk_size(stats.nodes, u64::from(k), c);
            let phi = cut_fraction(stats, chunking, size)?;
            let own = size as f64;
            let in_edges = own * degree;
            let leaving = in_edges * phi;
            let boundary = occupied(n - own, leaving);
            let mut rings = Vec::new();
            let (mut reached, mut last) = (own, boundary);
            if hops > 0 {
                rings.push(boundary);
                reached += boundary;
                for _ in 1..hops {
                    let next = occupied(n - reached, last * degree * (1.0 - reached / n));
                    rings.push(next);
                    reached += next;
                    last = next;
                }
            }
            Ok(ChunkStats {
                vertices: size,
                internal_edges: (in_edges - leaving).round() as u64,
                in_edges: in_edges.round() as u64,
                boundary: boundary.round() as u64,
                halo: rings
                    .into_iter()
                    .map(|v| Ring {
                        vertices: v.round() as u64,
                        degree_sum: (v * degree).round() as u64,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// `rows[p][q]`: expected rows of partition p that partition q reads (q's edges into p).
pub fn pair_rows(stats: &GraphCounts, parts: &[ChunkStats]) -> Vec<Vec<u64>> {
    let n = stats.nodes as f64;
    parts
        .iter()
        .enumerate()
        .map(|(p, owner)| {
            parts
                .iter()
                .enumerate()
                .map(|(q, reader)| {
                    if p == q {
                        return 0;
                    }
                    let leaving = (reader.in_edges - reader.internal_edges) as f64;
                    let into_owner =
                        leaving * owner.vertices as f64 / (n - reader.vertices as f64).max(1.0);
                    occupied(owner.vertices as f64, into_owner).round() as u64
                })
                .collect()
        })
        .collect()
}

/// GNNPipe's hybrid: `reads[piece][h]`, the rows of each piece that partition h reads, where
/// `pieces` are G partitions of `k` chunks each (partition g's chunk c at `g * k + c`). Each
/// piece of h sends its leaving edges to the rest of the graph in proportion to vertices (as
/// [`pair_rows`]); the rows they hit in a piece of another partition are its occupied share.
pub fn partition_reads(
    stats: &GraphCounts,
    pieces: &[ChunkStats],
    partitions: u32,
    k: u32,
) -> Vec<Vec<u64>> {
    let n = stats.nodes as f64;
    let k = k as usize;
    // Per partition h: its pieces' leaving edges per vertex outside each piece, summed.
    let pull: Vec<f64> = (0..partitions as usize)
        .map(|h| {
            pieces[h * k..(h + 1) * k]
                .iter()
                .map(|q| (q.in_edges - q.internal_edges) as f64 / (n - q.vertices as f64).max(1.0))
                .sum()
        })
        .collect();
    pieces
        .iter()
        .enumerate()
        .map(|(p, piece)| {
            (0..partitions as usize)
                .map(|h| match p / k == h {
                    true => 0,
                    false => {
                        let into = pull[h] * piece.vertices as f64;
                        occupied(piece.vertices as f64, into).round() as u64
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn papers() -> GraphCounts {
        GraphCounts {
            nodes: 111_059_956,
            undirected_edges: 1_615_685_872,
            cut_fraction: Some(0.2),
        }
    }

    #[test]
    fn sizes_cover_the_graph() {
        let total: u64 = (0..7).map(|c| chunk_size(100, 7, c)).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn random_chunks_cut_about_one_minus_one_over_k() {
        let stats = chunk_stats(&papers(), 8, Chunking::Contiguous, 2).unwrap();
        let cut: u64 = stats.iter().map(|c| c.in_edges - c.internal_edges).sum();
        let fraction = cut as f64 / (2.0 * papers().undirected_edges as f64);
        assert!((fraction - 7.0 / 8.0).abs() < 1e-3, "{fraction}");
        assert_eq!(stats[0].halo.len(), 2);
        let locality = chunk_stats(&papers(), 8, Chunking::Locality, 0).unwrap();
        let cut: u64 = locality.iter().map(|c| c.in_edges - c.internal_edges).sum();
        assert!((cut as f64 / (2.0 * papers().undirected_edges as f64) - 0.2).abs() < 1e-3);
        let mut no_cut = papers();
        no_cut.cut_fraction = None;
        assert!(chunk_stats(&no_cut, 8, Chunking::Locality, 0)
            .unwrap_err()
            .contains("cut_fraction"));
    }
}
