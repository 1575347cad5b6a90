//! Per-chunk statistics for the cost model: sizes, edges, halo rings, cut edges and stale reads.

use super::csr::Csr;

/// Vertices at one hop distance outside a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ring {
    /// The number of vertices in the ring.
    pub vertices: u64,
    /// The sum of their degrees.
    pub degree_sum: u64,
}

/// One chunk's shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkStats {
    /// The number of vertices in the chunk.
    pub vertices: u64,
    /// Directed edges with both endpoints in the chunk.
    pub internal_edges: u64,
    /// Directed edges whose target is in the chunk (the sum of the chunk's degrees).
    pub in_edges: u64,
    /// Distinct vertices outside the chunk adjacent to it (`halo[0].vertices` when `halo` is not
    /// empty).
    pub boundary: u64,
    /// `halo[h]`: the vertices at distance exactly `h + 1` from the chunk and the sum of their
    /// degrees; exactly `max_hops` rings, the ones past the chunk's reach empty.
    pub halo: Vec<Ring>,
}

/// Computes every chunk's statistics.
///
/// # Arguments
/// * `graph`: the graph.
/// * `part`: `part[v]` is `v`'s chunk, below `k`, one entry per vertex.
/// * `k`: the number of chunks; chunks without vertices get zero statistics.
/// * `max_hops`: how many halo rings to compute (0 = none; `boundary` is computed anyway).
///
/// # Returns
/// One [`ChunkStats`] per chunk, in chunk order.
///
/// # Complexity
/// Vertices, edges and the boundary: O(N + M) over all chunks. Each further ring is a
/// depth-limited multi-source breadth-first search per chunk, O(N + M) per chunk at worst,
/// so O(K (N + M)) in all for `max_hops >= 2`. A visited-stamp array (the chunk's index plus
/// one) is shared by all chunks, so no O(N) clearing happens between them.
///
/// # Panics
/// If `part` does not hold one chunk below `k` per vertex.
pub fn chunk_stats(graph: &Csr, part: &[u32], k: u32, max_hops: u32) -> Vec<ChunkStats> {
    let n = graph.n_nodes();
    assert_eq!(part.len(), n, "one chunk per vertex");
    let k = k as usize;
    // The vertices of each chunk, ascending: a counting sort by chunk.
    let mut start = vec![0usize; k + 1];
    for &p in part {
        start[p as usize + 1] += 1;
    }
    for c in 0..k {
        start[c + 1] += start[c];
    }
    let mut cursor = start.clone();
    let mut members = vec![0u32; n];
    for (v, &p) in part.iter().enumerate() {
        members[cursor[p as usize]] = v as u32;
        cursor[p as usize] += 1;
    }
    drop(cursor);

    // stamp[v] == c + 1 when chunk c's search has reached v (or v is in chunk c).
    let mut stamp = vec![0u32; n];
    let mut frontier: Vec<u32> = Vec::new();
    let mut next: Vec<u32> = Vec::new();
    let mut stats = Vec::with_capacity(k);
    for c in 0..k {
        let tag = c as u32 + 1;
        let own = &members[start[c]..start[c + 1]];
        for &v in own {
            stamp[v as usize] = tag;
        }
        let mut s = ChunkStats {
            vertices: own.len() as u64,
            ..ChunkStats::default()
        };
        frontier.clear();
        for &v in own {
            let neighbors = graph.neighbors(v);
            s.in_edges += neighbors.len() as u64;
            for &u in neighbors {
                if part[u as usize] as usize == c {
                    s.internal_edges += 1;
                } else if stamp[u as usize] != tag {
                    stamp[u as usize] = tag;
                    frontier.push(u);
                }
            }
        }
        s.boundary = frontier.len() as u64;
        for hop in 0..max_hops {
            if hop > 0 {
                next.clear();
                for &v in &frontier {
                    for &u in graph.neighbors(v) {
                        if stamp[u as usize] != tag {
                            stamp[u as usize] = tag;
                            next.push(u);
                        }
                    }
                }
                std::mem::swap(&mut frontier, &mut next);
            }
            s.halo.push(Ring {
                vertices: frontier.len() as u64,
                degree_sum: frontier.iter().map(|&v| u64::from(graph.degree(v))).sum(),
            });
        }
        stats.push(s);
    }
    stats
}

/// Undirected edges whose endpoints lie in different chunks.
///
/// # Complexity
/// O(N + M).
pub fn cut_edges(graph: &Csr, part: &[u32]) -> u64 {
    let mut cut = 0;
    for v in 0..graph.n_nodes() as u32 {
        let p = part[v as usize];
        cut += graph
            .neighbors(v)
            .iter()
            .filter(|&&u| u > v && part[u as usize] != p)
            .count() as u64;
    }
    cut
}

/// Directed neighbour reads `v <- u` (both directions of every undirected edge) where `u`'s
/// chunk is later than `v`'s (`part[u] > part[v]`): reads that come from GNNPipe's history.
///
/// Each cut edge is read stale in exactly one direction, so this equals [`cut_edges`]; it is
/// kept as its own function because it names a different quantity of the schedule.
///
/// # Complexity
/// O(N + M).
pub fn stale_reads(graph: &Csr, part: &[u32]) -> u64 {
    let mut stale = 0;
    for v in 0..graph.n_nodes() as u32 {
        let p = part[v as usize];
        stale += graph
            .neighbors(v)
            .iter()
            .filter(|&&u| part[u as usize] > p)
            .count() as u64;
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::super::partition::{partition, Chunking};
    use super::*;

    fn ring(vertices: u64, degree_sum: u64) -> Ring {
        Ring {
            vertices,
            degree_sum,
        }
    }

    #[test]
    fn path_of_six_in_two_chunks() {
        let g = Csr::from_undirected_edges(6, &[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        let part = [0, 0, 0, 1, 1, 1];
        let stats = chunk_stats(&g, &part, 2, 4);
        assert_eq!(
            stats[0],
            ChunkStats {
                vertices: 3,
                internal_edges: 4,
                in_edges: 5,
                boundary: 1,
                halo: vec![ring(1, 2), ring(1, 2), ring(1, 1), ring(0, 0)],
            }
        );
        assert_eq!(
            stats[1].halo,
            vec![ring(1, 2), ring(1, 2), ring(1, 1), ring(0, 0)]
        );
        assert_eq!(cut_edges(&g, &part), 1);
        assert_eq!(stale_reads(&g, &part), 1);
        // Without rings the boundary is still there.
        let flat = chunk_stats(&g, &part, 2, 0);
        assert_eq!((flat[0].boundary, flat[0].halo.len()), (1, 0));
    }

    #[test]
    fn ring_of_eight_in_four_chunks() {
        let edges: Vec<(u32, u32)> = (0..8).map(|v| (v, (v + 1) % 8)).collect();
        let g = Csr::from_undirected_edges(8, &edges);
        let part = partition(&g, 4, Chunking::Contiguous);
        assert_eq!(part, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        for s in chunk_stats(&g, &part, 4, 4) {
            assert_eq!(
                (s.vertices, s.internal_edges, s.in_edges, s.boundary),
                (2, 2, 4, 2)
            );
            assert_eq!(s.halo, vec![ring(2, 4), ring(2, 4), ring(2, 4), ring(0, 0)]);
        }
        assert_eq!(cut_edges(&g, &part), 4);
        // Chunk c reads chunk c + 1 once; chunk 3's neighbour 0 is earlier.
        assert_eq!(stale_reads(&g, &part), 4);
    }

    #[test]
    fn two_cliques_joined_by_one_edge() {
        let mut edges = Vec::new();
        for base in [0u32, 4] {
            for i in 0..4 {
                for j in i + 1..4 {
                    edges.push((base + i, base + j));
                }
            }
        }
        edges.push((3, 4));
        let g = Csr::from_undirected_edges(8, &edges);
        let part = [0, 0, 0, 0, 1, 1, 1, 1];
        let stats = chunk_stats(&g, &part, 2, 2);
        assert_eq!(
            stats[0],
            ChunkStats {
                vertices: 4,
                internal_edges: 12,
                in_edges: 13,
                boundary: 1,
                halo: vec![ring(1, 4), ring(3, 9)],
            }
        );
        assert_eq!(cut_edges(&g, &part), 1);
        assert_eq!(stale_reads(&g, &part), 1);
        // Everything in one chunk: nothing outside.
        let one = chunk_stats(&g, &[0; 8], 1, 2);
        assert_eq!(one[0].boundary, 0);
        assert_eq!(one[0].internal_edges, 26);
        assert_eq!(one[0].halo, vec![ring(0, 0); 2]);
    }

    #[test]
    fn empty_chunks_and_stale_reads_equal_cut_edges() {
        let g = Csr::from_undirected_edges(5, &[(0, 4), (1, 3), (2, 3), (0, 1)]);
        let part = [2, 0, 2, 0, 3];
        let stats = chunk_stats(&g, &part, 5, 1);
        assert_eq!(
            stats[1],
            ChunkStats {
                halo: vec![ring(0, 0)],
                ..ChunkStats::default()
            }
        );
        assert_eq!(stats[0].vertices, 2);
        assert_eq!(stats[0].boundary, 2);
        let cut = cut_edges(&g, &part);
        assert_eq!(cut, 3);
        assert_eq!(stale_reads(&g, &part), cut);
    }

    /// Cut edges on the real datasets for k = 8: prints a table and checks that the locality
    /// partitioner cuts far fewer edges than contiguous and random chunks, within bounds.
    #[test]
    fn real_graphs_k8() {
        use super::super::dataset::tests::load_shared;
        for name in ["cora", "citeseer", "pubmed", "facebook"] {
            let Some(d) = load_shared(name) else { return };
            let g = &d.graph;
            let n = g.n_nodes() as u64;
            let k = 8;
            let contiguous = partition(g, k, Chunking::Contiguous);
            let random = partition(g, k, Chunking::Random { seed: 1 });
            let locality = partition(g, k, Chunking::Locality);
            assert_eq!(locality, partition(g, k, Chunking::Locality));
            let cuts = [
                cut_edges(g, &contiguous),
                cut_edges(g, &random),
                cut_edges(g, &locality),
            ];
            eprintln!(
                "{name}: {} edges, k = 8 cut: contiguous {} random {} locality {} ({:.3} of contiguous, {:.3} of random)",
                g.n_undirected_edges(),
                cuts[0],
                cuts[1],
                cuts[2],
                cuts[2] as f64 / cuts[0] as f64,
                cuts[2] as f64 / cuts[1] as f64,
            );
            for s in chunk_stats(g, &locality, k, 1) {
                let target = n as f64 / f64::from(k);
                assert!((s.vertices as f64 - target).abs() <= 0.05 * target + 1.0);
            }
            assert!(cuts[2] as f64 <= 0.6 * cuts[0] as f64, "{name}: {cuts:?}");
            assert!(cuts[2] as f64 <= 0.6 * cuts[1] as f64, "{name}: {cuts:?}");
        }
    }
}
