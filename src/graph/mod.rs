//! Graph algorithms over petgraph, behind plain-index interfaces.
//!
//! **Architecture Invariant:** this is the only module that names petgraph types. Callers pass
//! nodes as `0..n` and edges as index pairs, and get indices back, so the rest of the crate does
//! not depend on petgraph's API.

mod cycles;
mod routes;

pub use cycles::find_cycle;
pub use routes::{shortest_routes, WeightedEdge};
