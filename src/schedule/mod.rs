//! Schedules are data: generators, custom files, the checker and the derived transfers.
//!
//! **Architecture Invariant:** this module is pure: no I/O, no clocks, no candle, no randomness.
//! Generators are functions of their shape and knobs; files are parsed from text the caller read.

pub mod bound;
pub mod catalog;
mod check;
mod dualpipev;
pub mod file;
mod gnnpipe;
mod gpipe;
pub mod graph_parallel;
mod interleaved;
mod ir;
mod looped_bfs;
pub mod lower;
mod one_f_one_b;
pub mod torch_csv;
mod zbv;

use thiserror::Error;

pub use check::{check, check_lowered, peak_in_flight, CheckReport, Deadlock, Wait};
pub use gnnpipe::{generate_hybrid, GnnPipeBackward, GnnPipeKnobs, GnnPipeOrder};
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

/// The most devices a schedule holds, and a scenario's network where it stores a route per pair
/// (explicit links, `full`, `ring`, `switch`; a cluster derives its routes and holds more, but
/// its schedules are bounded here too): 256. Routes are stored for every device pair and a
/// transfer holds every link of its route, so a ring's memory grows with the cube of its size
/// and a full topology's route search with the cube too: at 256 devices the largest case
/// measured (graph parallelism on a ring) predicts in about 3 s and 1.7 GB, at 512 it needs
/// 6.5 GB and at 1,024 a full topology takes 43 s to route.
pub const MAX_DEVICES: usize = 256;

/// The most stages one device may hold (`schedule.stages_per_device`, `--stages-per-device`,
/// a `-vN` suffix).
pub const MAX_STAGES_PER_DEVICE: u32 = 64;

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
    /// Interleaved 1F1B (PyTorch's `ScheduleInterleaved1F1B`).
    Interleaved1F1B,
    /// Looped BFS (PyTorch's `ScheduleLoopedBFS`).
    LoopedBfs,
    /// Interleaved zero bubble (PyTorch's `ScheduleInterleavedZeroBubble`; ZB-H1 with one
    /// stage per device).
    InterleavedZeroBubble,
    /// ZBV (PyTorch's `ScheduleZBVZeroBubble`): two stages per device as a V.
    Zbv,
    /// DualPipeV (PyTorch's `ScheduleDualPipeV`): two stages per device as a V.
    DualPipeV,
}

/// How a generator places stages on devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagePlacement {
    /// One stage per device: stage s on device s.
    OnePerDevice,
    /// `v` stages per device, round-robin: stage k on device `k mod P`.
    RoundRobin,
    /// Two stages per device as a V: device d holds stages d and `2P - 1 - d`.
    V,
}

impl Generator {
    /// How this generator places stages on devices.
    pub fn placement(self) -> StagePlacement {
        match self {
            Generator::GPipe(_) | Generator::OneFOneB | Generator::GnnPipe(_) => {
                StagePlacement::OnePerDevice
            }
            Generator::Interleaved1F1B
            | Generator::LoopedBfs
            | Generator::InterleavedZeroBubble => StagePlacement::RoundRobin,
            Generator::Zbv | Generator::DualPipeV => StagePlacement::V,
        }
    }

    /// The stages per device this generator uses unless told: 2 for the V-shaped ones, else 1.
    pub fn default_stages_per_device(self) -> u32 {
        match self.placement() {
            StagePlacement::V => 2,
            StagePlacement::OnePerDevice | StagePlacement::RoundRobin => 1,
        }
    }

    /// Generates the schedule for `n_stages` stages and `n_chunks` chunks with the generator's
    /// default stages per device; see [`Generator::generate_on`].
    pub fn generate(self, n_stages: u32, n_chunks: u32) -> Result<Schedule, ScheduleError> {
        self.generate_on(n_stages, self.default_stages_per_device(), n_chunks)
    }

    /// Generates the schedule for `n_stages` stages in all, `stages_per_device` of them on each
    /// device, and `n_chunks` chunks; at most [`MAX_STAGE_CHUNKS`] stage-chunk pairs.
    ///
    /// # Errors
    /// A zero shape, too many pairs, stages that do not divide into the devices, a stage count
    /// per device the generator cannot place (one for GPipe, 1F1B and GNNPipe, two for the V
    /// shapes), or a shape the generator refuses (see each).
    pub fn generate_on(
        self,
        n_stages: u32,
        stages_per_device: u32,
        n_chunks: u32,
    ) -> Result<Schedule, ScheduleError> {
        if u64::from(n_stages) * u64::from(n_chunks) > MAX_STAGE_CHUNKS {
            return Err(ScheduleError::Shape(format!(
                "{n_stages} stages x {n_chunks} chunks is more than {MAX_STAGE_CHUNKS} stage-chunk pairs"
            )));
        }
        if n_stages == 0 || n_chunks == 0 || stages_per_device == 0 {
            return Err(ScheduleError::Shape(
                "stages, chunks and stages per device must be at least 1".into(),
            ));
        }
        let kind = self.kind().name();
        match (self.placement(), stages_per_device) {
            (StagePlacement::OnePerDevice, 1) | (StagePlacement::V, 2) => {}
            (StagePlacement::OnePerDevice, v) => {
                return Err(ScheduleError::Shape(format!(
                    "{kind} runs one stage per device, not {v} (interleaved_1f1b, looped_bfs and interleaved_zb run several)"
                )))
            }
            (StagePlacement::V, v) => {
                return Err(ScheduleError::Shape(format!(
                    "{kind} places exactly two stages per device as a V, not {v}"
                )))
            }
            (StagePlacement::RoundRobin, _) => {}
        }
        if n_stages % stages_per_device != 0 {
            return Err(ScheduleError::Shape(format!(
                "{n_stages} stages do not divide into devices of {stages_per_device} stages each"
            )));
        }
        let devices = n_stages / stages_per_device;
        if devices as usize > MAX_DEVICES {
            return Err(ScheduleError::Shape(format!(
                "{n_stages} stages at {stages_per_device} per device need {devices} devices; a network holds at most {MAX_DEVICES}"
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
            Generator::Interleaved1F1B => interleaved::generate(
                devices,
                stages_per_device,
                n_chunks,
                interleaved::Backward::Whole,
            ),
            Generator::InterleavedZeroBubble => interleaved::generate(
                devices,
                stages_per_device,
                n_chunks,
                interleaved::Backward::ZeroBubble,
            ),
            Generator::LoopedBfs => looped_bfs::generate(devices, stages_per_device, n_chunks),
            Generator::Zbv => zbv::generate(devices, n_chunks),
            Generator::DualPipeV => dualpipev::generate(devices, n_chunks),
        }
    }

    /// The schedule kind this generator produces.
    pub fn kind(self) -> ScheduleKind {
        match self {
            Generator::GPipe(_) => ScheduleKind::GPipe,
            Generator::OneFOneB => ScheduleKind::OneFOneB,
            Generator::GnnPipe(_) => ScheduleKind::GnnPipe,
            Generator::Interleaved1F1B => ScheduleKind::Interleaved1F1B,
            Generator::LoopedBfs => ScheduleKind::LoopedBfs,
            Generator::InterleavedZeroBubble => ScheduleKind::InterleavedZeroBubble,
            Generator::Zbv => ScheduleKind::Zbv,
            Generator::DualPipeV => ScheduleKind::DualPipeV,
        }
    }
}
