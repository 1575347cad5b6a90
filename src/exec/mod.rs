//! The real executor on candle: trains the GNN by running the same schedule the simulator
//! interprets, and measures it into the same `Trace` type.
//!
//! **Architecture Invariant:** only `exec` imports candle, and `exec` never imports `sim`.
//!
//! GCN, GraphSAGE and GAT layers; GPipe, 1F1B and custom pipelines with halo `drop` or `exact`,
//! GNNPipe with its history buffers ([`runner`]), and graph parallelism ([`parallel`]), on the
//! CPU, each stage worker on a rayon pool of its own, memory measured by a counting allocator
//! ([`memory`]).

pub mod attention;
pub mod data;
pub mod layers;
pub mod memory;
pub mod optim;
pub mod parallel;
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
