//! The schedule IR: per-device ordered op lists, the value both interpreters run.

use std::fmt;

use super::ScheduleError;

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Forward of one chunk through one stage's layers (`F`).
    Forward,
    /// Backward of one chunk through one stage's layers (`B`).
    Backward,
    /// The optimizer step of one stage (`U`); its chunk field is unused and always 0.
    Optimizer,
}

impl OpKind {
    /// The one-letter code used in schedule files and PyTorch's pipelining action lists.
    pub fn code(self) -> &'static str {
        match self {
            OpKind::Forward => "F",
            OpKind::Backward => "B",
            OpKind::Optimizer => "U",
        }
    }
}

/// One unit of work: `F(chunk, stage)`, `B(chunk, stage)` or `U(stage)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Op {
    /// Forward, backward or optimizer step.
    pub kind: OpKind,
    /// The chunk (micro-batch) index; 0 for optimizer steps.
    pub chunk: u32,
    /// The stage index.
    pub stage: u32,
}

impl Op {
    /// `F(chunk, stage)`.
    pub fn forward(chunk: u32, stage: u32) -> Self {
        Op {
            kind: OpKind::Forward,
            chunk,
            stage,
        }
    }

    /// `B(chunk, stage)`.
    pub fn backward(chunk: u32, stage: u32) -> Self {
        Op {
            kind: OpKind::Backward,
            chunk,
            stage,
        }
    }

    /// `U(stage)`.
    pub fn optimizer(stage: u32) -> Self {
        Op {
            kind: OpKind::Optimizer,
            chunk: 0,
            stage,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            OpKind::Optimizer => write!(f, "U({})", self.stage),
            kind => write!(f, "{}({},{})", kind.code(), self.chunk, self.stage),
        }
    }
}

/// Which generator (or file) a schedule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScheduleKind {
    /// All forwards, then all backwards (GPipe).
    GPipe,
    /// One forward, one backward after a warm-up (PipeDream-Flush).
    OneFOneB,
    /// GNNPipe's whole-graph chunk pipeline with stale embeddings.
    GnnPipe,
    /// Read from a schedule file.
    Custom,
}

impl ScheduleKind {
    /// The name used on the command line, in scenarios and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::GPipe => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::GnnPipe => "gnnpipe",
            ScheduleKind::Custom => "custom",
        }
    }
}

/// The order in which GPipe runs its backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackwardOrder {
    /// `B(0..K)`, as PyTorch's `ScheduleGPipe` does.
    #[default]
    Forward,
    /// `B(K-1..0)`, the order autograd (and torchgpipe) produces.
    Reverse,
}

/// The shape a generator is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSpec {
    /// Number of stages S (one device each).
    pub n_stages: u32,
    /// Number of chunks K per epoch.
    pub n_chunks: u32,
    /// GPipe's backward order (ignored by other generators).
    pub backward_order: BackwardOrder,
}

/// Per device, the ordered list of ops it issues.
///
/// Devices here are pipeline positions `0..n_devices`; a scenario's placement maps them onto its
/// named devices. Every stage lives on exactly one pipeline device, and every `F(c, s)`, `B(c, s)`
/// and `U(s)` appears exactly once: [`Schedule::from_orders`] enforces both, so a `Schedule`
/// value is always well-formed (deadlock freedom is [`super::check`]'s job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: ScheduleKind,
    n_stages: u32,
    n_chunks: u32,
    orders: Vec<Vec<Op>>,
    stage_device: Vec<u32>,
}

impl Schedule {
    /// Builds a schedule from per-device orders, checking that it is well-formed: indices in
    /// range, each stage on one device, and each op exactly once.
    pub fn from_orders(
        kind: ScheduleKind,
        n_stages: u32,
        n_chunks: u32,
        orders: Vec<Vec<Op>>,
    ) -> Result<Self, ScheduleError> {
        if n_stages == 0 {
            return Err(ScheduleError::Shape("stages must be at least 1".into()));
        }
        if n_chunks == 0 {
            return Err(ScheduleError::Shape("chunks must be at least 1".into()));
        }
        let (s_count, k_count) = (n_stages as usize, n_chunks as usize);
        let mut stage_device = vec![u32::MAX; s_count];
        let mut seen = vec![0u8; 2 * s_count * k_count];
        let mut optimizer_seen = vec![false; s_count];
        for (device, order) in orders.iter().enumerate() {
            for op in order {
                if op.stage >= n_stages {
                    return Err(ScheduleError::Shape(format!(
                        "{op} on device {device} names stage {} but there are {n_stages} stages",
                        op.stage
                    )));
                }
                if op.chunk >= n_chunks {
                    return Err(ScheduleError::Shape(format!(
                        "{op} on device {device} names chunk {} but there are {n_chunks} chunks",
                        op.chunk
                    )));
                }
                let home = &mut stage_device[op.stage as usize];
                if *home == u32::MAX {
                    *home = device as u32;
                } else if *home != device as u32 {
                    return Err(ScheduleError::Shape(format!(
                        "stage {} has ops on device {} and on device {device}; a stage lives on one device",
                        op.stage, *home
                    )));
                }
                let duplicate = match op.kind {
                    OpKind::Optimizer => {
                        std::mem::replace(&mut optimizer_seen[op.stage as usize], true)
                    }
                    kind => {
                        let slot = &mut seen[slot(kind, op.chunk, op.stage, n_chunks)];
                        *slot += 1;
                        *slot > 1
                    }
                };
                if duplicate {
                    return Err(ScheduleError::Shape(format!("{op} appears more than once")));
                }
            }
        }
        for stage in 0..n_stages {
            for chunk in 0..n_chunks {
                for kind in [OpKind::Forward, OpKind::Backward] {
                    if seen[slot(kind, chunk, stage, n_chunks)] == 0 {
                        let op = Op { kind, chunk, stage };
                        return Err(ScheduleError::Shape(format!(
                            "{op} is missing: every chunk runs forward and backward once on every stage"
                        )));
                    }
                }
            }
            if !optimizer_seen[stage as usize] {
                return Err(ScheduleError::Shape(format!(
                    "{} is missing: every stage ends its epoch with an optimizer step",
                    Op::optimizer(stage)
                )));
            }
        }
        Ok(Schedule {
            kind,
            n_stages,
            n_chunks,
            orders,
            stage_device,
        })
    }

    /// The generator or file this schedule came from.
    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }

    /// Number of stages.
    pub fn n_stages(&self) -> u32 {
        self.n_stages
    }

    /// Number of chunks per epoch.
    pub fn n_chunks(&self) -> u32 {
        self.n_chunks
    }

    /// Number of pipeline devices (lists), some possibly empty.
    pub fn n_devices(&self) -> usize {
        self.orders.len()
    }

    /// Each device's ops in issue order.
    pub fn orders(&self) -> &[Vec<Op>] {
        &self.orders
    }

    /// The pipeline device that runs `stage`.
    pub fn device_of_stage(&self, stage: u32) -> usize {
        self.stage_device[stage as usize] as usize
    }

    /// Total number of ops (forward, backward and optimizer) over all devices.
    pub fn n_ops(&self) -> usize {
        self.orders.iter().map(Vec::len).sum()
    }
}

/// A dense index for `F`/`B` ops: `(stage * K + chunk) * 2`, plus one for backward.
pub(crate) fn slot(kind: OpKind, chunk: u32, stage: u32, n_chunks: u32) -> usize {
    (stage as usize * n_chunks as usize + chunk as usize) * 2
        + usize::from(kind == OpKind::Backward)
}
