//! Schedules are data: generators, custom files, the checker and the derived transfers.
//!
//! **Architecture Invariant:** this module is pure: no I/O, no clocks, no candle, no randomness.
//! Generators are functions of their shape and knobs; files are parsed from text the caller read.

mod check;
pub mod file;
mod gnnpipe;
mod gpipe;
pub mod graph_parallel;
mod ir;
pub mod lower;
mod one_f_one_b;

use thiserror::Error;

pub use check::{check, check_lowered, CheckReport, Deadlock, Wait};
pub use gnnpipe::{GnnPipeBackward, GnnPipeKnobs, GnnPipeOrder};
pub use ir::{
    op_id, BackwardOrder, BackwardSync, DataFlow, Op, OpKind, PipelineSpec, Schedule, ScheduleKind,
    UpdateMode,
};

/// A schedule that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    /// Ops out of range, missing, repeated, or a stage split over devices.
    #[error("invalid schedule: {0}")]
    Shape(String),
    /// The dependencies cannot be met in the devices' orders.
    #[error("schedule deadlocks: {0}")]
    Deadlock(Deadlock),
}

/// The largest `stages x chunks` a schedule may have: 4,194,304 (2^22) stage-chunk pairs, 8.4
/// million forward and backward ops. Simulating 1F1B at this size takes about 9 s and 0.9 GiB
/// on a 2-core machine (2^24 took 44 s and 3.5 GiB); far beyond any real pipeline.
pub const MAX_STAGE_CHUNKS: u64 = 1 << 22;

/// The most chunks an epoch may have: 1,048,576 (2^20), for scenarios, schedule files and
/// `pipegnn schedule --chunks`.
pub const MAX_CHUNKS: u32 = 1 << 20;

/// The most devices a schedule or a scenario's network holds: 256. Routes are stored for every device pair and a
/// transfer holds every link of its route, so a ring's memory grows with the cube of its size
/// and a full topology's route search with the cube too: at 256 devices the largest case
/// measured (graph parallelism on a ring) predicts in about 3 s and 1.7 GB, at 512 it needs
/// 6.5 GB and at 1,024 a full topology takes 43 s to route.
pub const MAX_DEVICES: usize = 256;

/// The most stages a schedule file may have: 4,096, the deepest model's layers (a stage holds
/// at least one).
pub const MAX_STAGES: u32 = 4096;

/// The pipeline generators, with their knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// GPipe with its backward order.
    GPipe(BackwardOrder),
    /// 1F1B.
    OneFOneB,
    /// GNNPipe with its knobs.
    GnnPipe(GnnPipeKnobs),
}

impl Generator {
    /// Generates the schedule for `n_stages` stages and `n_chunks` chunks; at most
    /// [`MAX_STAGE_CHUNKS`] stage-chunk pairs.
    pub fn generate(self, n_stages: u32, n_chunks: u32) -> Result<Schedule, ScheduleError> {
        if u64::from(n_stages) * u64::from(n_chunks) > MAX_STAGE_CHUNKS {
            return Err(ScheduleError::Shape(format!(
                "{n_stages} stages x {n_chunks} chunks is more than {MAX_STAGE_CHUNKS} stage-chunk pairs"
            )));
        }
        let mut spec = PipelineSpec {
            n_stages,
            n_chunks,
            backward_order: BackwardOrder::Forward,
        };
        match self {
            Generator::GPipe(order) => {
                spec.backward_order = order;
                gpipe::generate(&spec)
            }
            Generator::OneFOneB => one_f_one_b::generate(&spec),
            Generator::GnnPipe(knobs) => gnnpipe::generate(&spec, knobs),
        }
    }

    /// The schedule kind this generator produces.
    pub fn kind(self) -> ScheduleKind {
        match self {
            Generator::GPipe(_) => ScheduleKind::GPipe,
            Generator::OneFOneB => ScheduleKind::OneFOneB,
            Generator::GnnPipe(_) => ScheduleKind::GnnPipe,
        }
    }
}
