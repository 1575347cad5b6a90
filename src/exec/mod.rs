//! The real executor on candle: trains the GNN by running the same schedule the simulator
//! interprets, and measures it into the same `Trace` type.
//!
//! **Architecture Invariant:** only `exec` imports candle, and `exec` never imports `sim`.
//!
//! GCN, GraphSAGE and GAT layers; GPipe, 1F1B, custom pipelines and the catalog's newer kinds
//! (several stages per device, split backwards: [`deferred`]) with halo `drop` or `exact`,
//! GNNPipe with its history buffers (the pipeline worker), graph parallelism's 1D (the
//! graph-parallel worker) and 1.5D (the replicated worker), and GNNPipe's hybrid of the two
//! (the hybrid worker), on the CPU or GPUs, each worker on a rayon pool of its own, memory
//! measured by a counting allocator ([`memory`]).
//!
//! The executor is cut along its seams, one job per file: [`runner`] coordinates a run (one
//! worker thread per schedule device, epochs started on one clock, reports gathered into a
//! measured `Trace`); `pipeline`, `parallel`, `replicated` and `hybrid` are the workers; [`transport`] is how they
//! hand tensors to each other (the [`transport::Transport`] trait and its in-process
//! implementation); `ledger` records what a worker measures (memory, op spans); `evaluate`
//! computes the accuracies after each epoch; [`input`] is what a run reads. Every worker takes
//! every hand-off it sends, relays or waits for from `schedule::lower` (1.5D's broadcasts and
//! replica all-reduces are its own: the lowering lists none).

/// Emits `$name::cpu`, and with `--features cuda` `$name::cuda`, each calling
/// `$body(&Device)`: the same test on every device. Without a GPU the CUDA variant passes with a
/// note on stderr, unless `PIPEGNN_REQUIRE_GPU` is set (on a GPU machine), where it fails.
#[cfg(test)]
macro_rules! test_device {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn cpu() -> candle_core::Result<()> {
                super::$body(&candle_core::Device::Cpu)
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() -> candle_core::Result<()> {
                match crate::exec::device::test_gpu() {
                    Some(device) => super::$body(&device),
                    None => Ok(()),
                }
            }
        }
    };
}

pub mod activation;
pub mod attention;
pub mod calibrate;
mod crew;
mod cuda;
pub mod data;
pub mod deferred;
pub mod device;
pub mod dropout;
mod evaluate;
mod fused_attention;
mod hybrid;
pub mod input;
pub mod layers;
mod ledger;
pub mod memory;
pub mod optim;
mod parallel;
mod pipeline;
mod replicated;
mod rows;
pub mod runner;
pub mod sparse;
pub mod transport;

use thiserror::Error;

pub use input::{CrossChunk, EpochStats, ExecInput, Progress, TrainConfig};
pub use runner::{run, run_rank, RunResult};

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
    /// CUDA was asked for, but this binary was built without it.
    #[error(
        "executor.backend cuda: this binary was built without CUDA (rebuild with --features \
         cuda, the README's GPU build)"
    )]
    CudaNotCompiled,
    /// CUDA was asked for, but no GPU can be used here.
    #[error("no usable CUDA GPU: {0}")]
    NoGpu(String),
    /// `device_map: per_stage` asks for one GPU per worker.
    #[error(
        "executor.device_map per_stage needs {workers} GPUs, this machine has {gpus}: set \
         executor.device_map: shared to run every stage on GPU 0 (the simulator then models the \
         sharing), or auto"
    )]
    TooFewGpus {
        /// Workers (schedule devices).
        workers: usize,
        /// GPUs found.
        gpus: usize,
    },
    /// A candle operation or a worker failed.
    #[error("the run failed: {0}")]
    Failed(String),
}
