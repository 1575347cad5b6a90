//! Shortest routes over a link topology.

use petgraph::algo::dijkstra;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// A directed edge with a non-negative cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedEdge {
    /// Source node.
    pub from: usize,
    /// Target node.
    pub to: usize,
    /// Cost of using the edge.
    pub cost: u64,
}

/// For each source in `sources` and each target in `targets`, the edges (indices into `edges`)
/// of a cheapest route, or `None` when the target is unreachable; a node reaches itself by the
/// empty route.
///
/// # Returns
/// `routes[i][j]` for `sources[i]` and `targets[j]`. Ties between equally cheap routes go to the
/// one whose last edge has the lowest index, so routes are deterministic.
///
/// # Complexity
/// One Dijkstra per source: O(|sources| · (E + V log V)).
pub fn shortest_routes(
    n_nodes: usize,
    edges: &[WeightedEdge],
    sources: &[usize],
    targets: &[usize],
) -> Vec<Vec<Option<Vec<usize>>>> {
    let mut graph = DiGraph::<(), u64, u32>::with_capacity(n_nodes, edges.len());
    for _ in 0..n_nodes {
        graph.add_node(());
    }
    for edge in edges {
        graph.add_edge(
            NodeIndex::new(edge.from),
            NodeIndex::new(edge.to),
            edge.cost,
        );
    }
    sources
        .iter()
        .map(|&source| {
            let dist = dijkstra(&graph, NodeIndex::new(source), None, |e| *e.weight());
            targets
                .iter()
                .map(|&target| {
                    let mut at = NodeIndex::new(target);
                    let mut route = Vec::new();
                    dist.get(&at)?;
                    while at.index() != source {
                        let d_at = dist[&at];
                        let step = graph
                            .edges_directed(at, Direction::Incoming)
                            .filter(|e| {
                                dist.get(&e.source())
                                    .is_some_and(|d| d + e.weight() == d_at)
                            })
                            .map(|e| e.id().index())
                            .min()
                            .expect("a reached node has a predecessor on a cheapest route");
                        route.push(step);
                        at = NodeIndex::new(edges[step].from);
                    }
                    route.reverse();
                    Some(route)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: usize, to: usize, cost: u64) -> WeightedEdge {
        WeightedEdge { from, to, cost }
    }

    #[test]
    fn routes_around_a_ring() {
        // 0 -> 1 -> 2 -> 3 -> 0 one way only.
        let edges = [edge(0, 1, 1), edge(1, 2, 1), edge(2, 3, 1), edge(3, 0, 1)];
        let routes = shortest_routes(4, &edges, &[0], &[0, 3]);
        assert_eq!(routes[0][0], Some(vec![]));
        assert_eq!(routes[0][1], Some(vec![0, 1, 2]));
    }

    #[test]
    fn unreachable_is_none() {
        let routes = shortest_routes(3, &[edge(0, 1, 1)], &[0], &[2]);
        assert_eq!(routes[0][0], None);
    }
}
