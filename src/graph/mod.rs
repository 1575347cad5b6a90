//! Graphs: CSR, datasets, synthetic graphs, partitioning, chunk statistics; the only petgraph use.
//!
//! The input graphs of GNN training live here as plain arrays: [`Csr`] adjacency,
//! [`SparseFeatures`], the graph-csv v1 loader ([`dataset`]) and the OGB-layout one ([`ogb`]),
//! seeded synthetic graphs ([`synth`], driven by the pinned [`rng`]), vertex partitioning into
//! pipeline chunks ([`partition`]) and the per-chunk statistics the cost model needs
//! ([`chunks`]).
//!
//! **Architecture Invariant:** this is the only module that names petgraph types (cheapest
//! routes over the device network, cycle finding for the schedule checker). Callers pass nodes
//! as `0..n` and edges as index pairs, and get indices back, so the rest of the crate does not
//! depend on petgraph's API.

pub mod chunks;
pub mod csr;
mod cycles;
pub mod dataset;
pub mod features;
pub mod ogb;
pub mod partition;
pub mod rng;
mod routes;
pub mod synth;

pub use chunks::{ChunkStats, Ring};
pub use csr::Csr;
pub use cycles::find_cycle;
pub use features::SparseFeatures;
pub use partition::Chunking;
pub use routes::{shortest_routes, WeightedEdge};
