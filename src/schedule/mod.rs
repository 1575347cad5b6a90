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

/// The largest `stages x chunks` a generator produces: 16.7 million pairs, about 2 GiB of
/// simulator state, far beyond any real pipeline, small enough to refuse a typo politely.
pub const MAX_STAGE_CHUNKS: u64 = 1 << 24;

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
