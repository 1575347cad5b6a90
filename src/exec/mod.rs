//! The real executor on candle: trains the GNN by running the same schedule the simulator
//! interprets, and measures it into the same `Trace` type.
//!
//! **Architecture Invariant:** only `exec` imports candle, and `exec` never imports `sim`.
//!
//! Status: GCN and GraphSAGE layers, GPipe, 1F1B and custom pipelines with halo `drop` (each
//! chunk its induced subgraph; one chunk is full-graph training), on the CPU, each stage worker
//! on a rayon pool of its own. GNNPipe's history, halo `exact`, GAT, graph parallelism, link
//! emulation and memory measurement come next.

pub mod attention;
pub mod data;
pub mod layers;
pub mod memory;
pub mod optim;
mod parallel;
pub mod runner;
pub mod sparse;

use thiserror::Error;

pub use runner::{run, CrossChunk, EpochStats, ExecInput, RunResult, TrainConfig};

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecError {
    /// The scenario asks for something the executor cannot run yet.
    #[error("not executable yet: {0}")]
    Unsupported(String),
    /// The loss stopped being a finite number.
    #[error("the loss is not a finite number at epoch {epoch}: lower the learning rate or check the features")]
    NotFinite {
        /// The epoch.
        epoch: u32,
    },
    /// A candle operation or a worker failed.
    #[error("the run failed: {0}")]
    Failed(String),
}
