//! Cycle detection in a dependency graph, returning one cycle to report.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// Finds one directed cycle among `n_nodes` nodes joined by `edges` (`from -> to`), if any.
///
/// # Returns
/// `None` when the graph is acyclic; otherwise the nodes of one cycle in edge order, the first
/// node not repeated at the end.
///
/// # Complexity
/// O(V + E): a topological sort, and on failure Tarjan's strongly connected components and a
/// breadth-first search inside one component.
pub fn find_cycle(n_nodes: usize, edges: &[(u32, u32)]) -> Option<Vec<usize>> {
    let mut graph = DiGraph::<(), (), u32>::with_capacity(n_nodes, edges.len());
    for _ in 0..n_nodes {
        graph.add_node(());
    }
    for &(from, to) in edges {
        graph.add_edge(
            NodeIndex::new(from as usize),
            NodeIndex::new(to as usize),
            (),
        );
    }
    if toposort(&graph, None).is_ok() {
        return None;
    }
    let component = tarjan_scc(&graph)
        .into_iter()
        .find(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .expect("toposort failed, so some strongly connected component holds a cycle");
    let mut in_component = vec![false; n_nodes];
    for node in &component {
        in_component[node.index()] = true;
    }
    // Breadth-first search from the component's smallest node back to itself gives a shortest
    // cycle through it, which keeps the reported chain of waiting ops short.
    let start = *component.iter().min().expect("components are not empty");
    let mut parent = vec![usize::MAX; n_nodes];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            if !in_component[next.index()] {
                continue;
            }
            if next == start {
                let mut cycle = vec![node.index()];
                let mut at = node.index();
                while at != start.index() {
                    at = parent[at];
                    cycle.push(at);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if parent[next.index()] == usize::MAX {
                parent[next.index()] = node.index();
                queue.push_back(next);
            }
        }
    }
    unreachable!("every node of a strongly connected component reaches its start again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acyclic_has_no_cycle() {
        assert_eq!(find_cycle(3, &[(0, 1), (1, 2), (0, 2)]), None);
    }

    #[test]
    fn finds_the_cycle() {
        let cycle = find_cycle(4, &[(0, 1), (1, 2), (2, 3), (3, 1)]).unwrap();
        assert_eq!(cycle, vec![1, 2, 3]);
        assert_eq!(find_cycle(2, &[(1, 1)]).unwrap(), vec![1]);
    }
}
