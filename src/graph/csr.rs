//! Symmetric adjacency in compressed sparse rows, built from undirected edges in linear time.

/// Symmetric adjacency in compressed sparse rows: both directions of each undirected edge, no
/// self loops, no duplicates, each neighbour list sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// `offsets[v]..offsets[v + 1]` is the range of `neighbors` holding `v`'s neighbours.
    offsets: Vec<u64>,
    /// The concatenated neighbour lists.
    neighbors: Vec<u32>,
}

impl Csr {
    /// Builds the adjacency of `n_nodes` vertices from undirected `edges`, given in either
    /// orientation and in any order.
    ///
    /// Self loops are dropped, and so are repeats of an edge in either orientation.
    ///
    /// # Arguments
    /// * `n_nodes`: the number of vertices; every id in `edges` must be below it (checked by a
    ///   debug assertion only: the caller validates user input).
    /// * `edges`: undirected edges.
    ///
    /// # Complexity
    /// A counting sort by endpoint, O(n + m), then a sort of each row, which is linear for rows
    /// that are already sorted (as when `edges` is sorted by `(src, dst)` with `src < dst`) and
    /// O(d log d) for a row of degree d otherwise.
    pub fn from_undirected_edges(n_nodes: usize, edges: &[(u32, u32)]) -> Csr {
        let (offsets, neighbors) = Csr::fill(n_nodes, edges);
        Csr::sort_and_dedup(offsets, neighbors)
    }

    /// [`Csr::from_undirected_edges`], freeing `edges` as soon as the rows hold them, before
    /// they are sorted and their repeats dropped, so that at most two edge-sized arrays are held
    /// at once.
    pub fn from_undirected_edge_list(n_nodes: usize, edges: Vec<(u32, u32)>) -> Csr {
        let (offsets, neighbors) = Csr::fill(n_nodes, &edges);
        drop(edges);
        Csr::sort_and_dedup(offsets, neighbors)
    }

    /// Counts each vertex's neighbours and places them: row offsets, and the rows in input order.
    fn fill(n_nodes: usize, edges: &[(u32, u32)]) -> (Vec<u64>, Vec<u32>) {
        debug_assert!(n_nodes <= u32::MAX as usize + 1, "vertex ids are u32");
        let mut offsets = vec![0u64; n_nodes + 1];
        for &(u, v) in edges {
            debug_assert!((u as usize) < n_nodes && (v as usize) < n_nodes);
            if u != v {
                offsets[u as usize + 1] += 1;
                offsets[v as usize + 1] += 1;
            }
        }
        for v in 0..n_nodes {
            offsets[v + 1] += offsets[v];
        }
        let mut cursor = offsets[..n_nodes].to_vec();
        let mut neighbors = vec![0u32; offsets[n_nodes] as usize];
        for &(u, v) in edges {
            if u != v {
                neighbors[cursor[u as usize] as usize] = v;
                cursor[u as usize] += 1;
                neighbors[cursor[v as usize] as usize] = u;
                cursor[v as usize] += 1;
            }
        }
        drop(cursor);
        (offsets, neighbors)
    }

    /// Sorts each row of `fill`'s output and drops repeats.
    fn sort_and_dedup(mut offsets: Vec<u64>, mut neighbors: Vec<u32>) -> Csr {
        let n_nodes = offsets.len() - 1;
        // Sort each row, drop repeats and slide the row left over the space the repeats of
        // earlier rows freed; `write <= read` always, so nothing unread is overwritten.
        let mut write = 0usize;
        let mut start = 0usize;
        for v in 0..n_nodes {
            let end = offsets[v + 1] as usize;
            neighbors[start..end].sort_unstable();
            let row_begin = write;
            for read in start..end {
                let x = neighbors[read];
                if write == row_begin || neighbors[write - 1] != x {
                    neighbors[write] = x;
                    write += 1;
                }
            }
            offsets[v + 1] = write as u64;
            start = end;
        }
        if write < neighbors.len() {
            neighbors.truncate(write);
            neighbors.shrink_to_fit();
        }
        Csr { offsets, neighbors }
    }

    /// The number of vertices.
    pub fn n_nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The number of directed edges: twice the number of undirected edges.
    pub fn n_directed_edges(&self) -> u64 {
        self.neighbors.len() as u64
    }

    /// The number of undirected edges.
    pub fn n_undirected_edges(&self) -> u64 {
        self.neighbors.len() as u64 / 2
    }

    /// The neighbours of `v`, ascending.
    ///
    /// # Panics
    /// If `v` is not a vertex of the graph.
    pub fn neighbors(&self, v: u32) -> &[u32] {
        let v = v as usize;
        &self.neighbors[self.offsets[v] as usize..self.offsets[v + 1] as usize]
    }

    /// The number of neighbours of `v`.
    ///
    /// # Panics
    /// If `v` is not a vertex of the graph.
    pub fn degree(&self, v: u32) -> u32 {
        let v = v as usize;
        (self.offsets[v + 1] - self.offsets[v]) as u32
    }

    /// Row offsets: `n_nodes() + 1` entries, starting at 0 and ending at `n_directed_edges()`.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// The concatenated neighbour lists, indexed by [`Csr::offsets`].
    pub fn targets(&self) -> &[u32] {
        &self.neighbors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_self_loops_and_duplicates_in_either_orientation() {
        let csr = Csr::from_undirected_edges(4, &[(2, 0), (0, 2), (1, 1), (0, 1), (3, 0), (0, 2)]);
        assert_eq!(csr.n_nodes(), 4);
        assert_eq!(csr.n_undirected_edges(), 3);
        assert_eq!(csr.n_directed_edges(), 6);
        assert_eq!(csr.neighbors(0), &[1, 2, 3]);
        assert_eq!(csr.neighbors(1), &[0]);
        assert_eq!(csr.neighbors(2), &[0]);
        assert_eq!(csr.neighbors(3), &[0]);
        assert_eq!(csr.degree(0), 3);
        assert_eq!(csr.offsets(), &[0, 3, 4, 5, 6]);
        assert_eq!(csr.targets(), &[1, 2, 3, 0, 0, 0]);
    }

    #[test]
    fn isolated_and_empty_graphs() {
        let csr = Csr::from_undirected_edges(3, &[]);
        assert_eq!(csr.n_directed_edges(), 0);
        assert_eq!(csr.degree(2), 0);
        assert!(csr.neighbors(1).is_empty());
        let empty = Csr::from_undirected_edges(0, &[]);
        assert_eq!(empty.n_nodes(), 0);
        assert_eq!(empty.offsets(), &[0]);
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = Csr::from_undirected_edges(5, &[(0, 1), (1, 2), (3, 4), (0, 4)]);
        let b = Csr::from_undirected_edges(5, &[(4, 0), (4, 3), (2, 1), (1, 0), (1, 0)]);
        assert_eq!(a, b);
        let c = Csr::from_undirected_edge_list(5, vec![(1, 0), (2, 1), (4, 3), (0, 4), (0, 1)]);
        assert_eq!(a, c);
    }
}
