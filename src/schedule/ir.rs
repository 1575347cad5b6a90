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
    /// An optimizer step (`U`): of a stage once per epoch (chunk 0), of a stage after each
    /// chunk (`update: per_chunk`), or of a partition's replica (graph parallelism, stage 0).
    Optimizer,
    /// The first half of a split backward (`I`): the gradient with respect to the stage's
    /// input, which is what the previous stage waits for.
    InputGrad,
    /// The second half of a split backward (`W`): the gradient with respect to the stage's
    /// weights, which only the optimizer step waits for. It runs after the chunk's `I` and
    /// keeps what it reads of the chunk's stash alive until it ends.
    WeightGrad,
}

impl OpKind {
    /// The one-letter code used in schedule files and PyTorch's pipelining action lists.
    pub fn code(self) -> &'static str {
        match self {
            OpKind::Forward => "F",
            OpKind::Backward => "B",
            OpKind::Optimizer => "U",
            OpKind::InputGrad => "I",
            OpKind::WeightGrad => "W",
        }
    }

    /// The kind a one-letter code names, if any.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "F" => OpKind::Forward,
            "B" => OpKind::Backward,
            "U" => OpKind::Optimizer,
            "I" => OpKind::InputGrad,
            "W" => OpKind::WeightGrad,
            _ => return None,
        })
    }

    /// Whether the op ends a chunk's use of its stash on its stage: the full backward, or the
    /// weight half of a split one.
    pub fn frees_stash(self) -> bool {
        matches!(self, OpKind::Backward | OpKind::WeightGrad)
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

    /// `U(chunk, stage)`.
    pub fn optimizer(chunk: u32, stage: u32) -> Self {
        Op {
            kind: OpKind::Optimizer,
            chunk,
            stage,
        }
    }

    /// `I(chunk, stage)`.
    pub fn input_grad(chunk: u32, stage: u32) -> Self {
        Op {
            kind: OpKind::InputGrad,
            chunk,
            stage,
        }
    }

    /// `W(chunk, stage)`.
    pub fn weight_grad(chunk: u32, stage: u32) -> Self {
        Op {
            kind: OpKind::WeightGrad,
            chunk,
            stage,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({},{})", self.kind.code(), self.chunk, self.stage)
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
    /// Interleaved 1F1B: several stages per device, round-robin, depth first.
    Interleaved1F1B,
    /// Looped BFS: several stages per device, round-robin, breadth first.
    LoopedBfs,
    /// Interleaved zero bubble (ZB-H1 with one stage per device): split backwards.
    InterleavedZeroBubble,
    /// ZBV: two stages per device as a V, split backwards.
    Zbv,
    /// DualPipeV: two stages per device as a V, overlapped forward-backward pairs.
    DualPipeV,
    /// CAGNET-style 1D graph parallelism (not a pipeline).
    GraphParallel,
    /// Read from a schedule file.
    Custom,
}

impl ScheduleKind {
    /// The name used on the command line, in scenarios and in JSON output: the catalog's
    /// (`custom` for schedule files).
    pub fn name(self) -> &'static str {
        super::catalog::of(self).map_or("custom", |entry| entry.name)
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

/// How a stage's backwards wait for the next stage's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackwardSync {
    /// `B(c, s)` waits for chunk c's gradient only.
    #[default]
    PerChunk,
    /// `B(c, s)` waits for every chunk's gradient from stage s + 1: a per-stage barrier (GNNPipe
    /// with exact cross-chunk gradients).
    Barrier,
}

/// When the optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateMode {
    /// One step per stage per epoch, `U(0, s)`, after every backward of the stage.
    #[default]
    PerEpoch,
    /// One step per chunk, `U(c, s)`, after `B(c, s)`.
    PerChunk,
}

/// Which ops feed which: the data flow both interpreters derive transfers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataFlow {
    /// A layer pipeline: `F(c, s)` feeds `F(c, s + 1)`, `B(c, s)` feeds `B(c, s - 1)`, every
    /// stage on one device.
    Pipeline {
        /// How backwards wait for gradients.
        backward: BackwardSync,
        /// When the optimizer steps.
        update: UpdateMode,
    },
    /// Graph parallelism (CAGNET 1D): "stage" l is layer l, "chunk" p is the partition owned by
    /// one device, which runs every layer for it. `F(p, l)` feeds `F(q, l + 1)` for every q in
    /// `readers[p]` (and p itself); `B(p, l)` feeds `B(q, l - 1)` likewise; `B(p, 0)` feeds the
    /// weight all-reduce that `U(q, 0)` of every partition waits for: lowered as a gate into
    /// which each partition hands its gradients to the next, which the simulator runs as the
    /// all-reduce's steps on the links (`sim::collective`).
    GraphParallel {
        /// For each partition, the other partitions that read its rows at every layer.
        readers: Vec<Vec<u32>>,
    },
    /// GNNPipe's hybrid with graph parallelism: S pipeline stages, each a group of G devices
    /// that each own one graph partition. "Stage" `l * G + g` is layer l of partition g (a
    /// *lane*), which lives on the device of layer l's pipeline stage and partition g; a chunk
    /// is a chunk of every partition. `F(c, l*G + g)` feeds `F(c, (l+1)*G + h)` for h = g and
    /// every h in `readers[g]` (the same chunk's rows of g that h reads: a hand-off partition
    /// to partition across a stage boundary, a halo exchange inside a group: see
    /// [`crate::schedule::lower::handoff_endpoints`]); `B(c, l*G + g)` feeds
    /// `B(c, (l-1)*G + h)` for h = g and every h whose rows g read; and the backward of each
    /// stage's first layer (its last) hands the stage's weight gradients into the group's
    /// all-reduce (a gate, as graph parallelism's), which the optimizer steps of the stage's
    /// lanes wait for. Backwards wait per chunk and the optimizer steps once per epoch.
    Hybrid {
        /// Graph partitions G per stage.
        partitions: u32,
        /// For each partition, the other partitions that read its rows.
        readers: Vec<Vec<u32>>,
    },
}

impl DataFlow {
    /// GPipe, 1F1B and custom files: per-chunk gradients, one step per epoch.
    pub const PIPELINE: DataFlow = DataFlow::Pipeline {
        backward: BackwardSync::PerChunk,
        update: UpdateMode::PerEpoch,
    };
}

/// Per device, the ordered list of ops it issues, and the data flow between ops.
///
/// Devices here are positions `0..n_devices`; a scenario's placement maps them onto its named
/// devices. [`Schedule::from_orders`] enforces that every op appears exactly once and that each
/// stage (pipeline) or partition (graph parallelism) lives on one device, so a `Schedule` value is
/// always well-formed (deadlock freedom is [`super::check`]'s job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: ScheduleKind,
    flow: DataFlow,
    n_stages: u32,
    n_chunks: u32,
    orders: Vec<Vec<Op>>,
    /// Pipeline: device of each stage. Graph parallelism: device of each partition.
    home: Vec<u32>,
    /// Per stage-chunk pair (`stage * K + chunk`), whether its backward is split into `I` and
    /// `W`; empty when no backward is.
    split: Vec<bool>,
}

impl Schedule {
    /// Builds a schedule from per-device orders, checking that it is well-formed: indices in
    /// range, each stage (or partition) on one device, and each op exactly once.
    pub fn from_orders(
        kind: ScheduleKind,
        flow: DataFlow,
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
        let graph_parallel = matches!(flow, DataFlow::GraphParallel { .. });
        if let DataFlow::Hybrid {
            partitions,
            readers,
        } = &flow
        {
            if *partitions == 0
                || n_stages % partitions != 0
                || readers.len() != *partitions as usize
                || readers.iter().flatten().any(|&q| q >= *partitions)
            {
                return Err(ScheduleError::Shape(format!(
                    "the hybrid needs its lanes ({n_stages}) to be layers times partitions ({partitions}) and a reader list per partition"
                )));
            }
        }
        if let DataFlow::GraphParallel { readers } = &flow {
            if readers.len() != n_chunks as usize
                || readers.iter().flatten().any(|&q| q >= n_chunks)
            {
                return Err(ScheduleError::Shape(format!(
                    "graph parallelism needs a reader list for each of the {n_chunks} partitions"
                )));
            }
        }
        let per_chunk_update = matches!(
            flow,
            DataFlow::Pipeline {
                update: UpdateMode::PerChunk,
                ..
            }
        );
        let (s_count, k_count) = (n_stages as usize, n_chunks as usize);
        let mut home = vec![u32::MAX; if graph_parallel { k_count } else { s_count }];
        let mut seen = vec![0u8; N_KINDS * s_count * k_count];
        let mut any_split = false;
        for (device, order) in orders.iter().enumerate() {
            for op in order {
                if op.stage >= n_stages || op.chunk >= n_chunks {
                    return Err(ScheduleError::Shape(format!(
                        "{op} on device {device} is out of range: there are {n_stages} stages and {n_chunks} chunks"
                    )));
                }
                let split_op = matches!(op.kind, OpKind::InputGrad | OpKind::WeightGrad);
                if split_op && !matches!(flow, DataFlow::Pipeline { .. }) {
                    return Err(ScheduleError::Shape(format!(
                        "{op}: graph parallelism and the hybrid run whole backwards (B), not split ones (I and W)"
                    )));
                }
                any_split |= split_op;
                let (owner, what) = if graph_parallel {
                    (op.chunk, "partition")
                } else {
                    (op.stage, "stage")
                };
                let slot_home = &mut home[owner as usize];
                if *slot_home == u32::MAX {
                    *slot_home = device as u32;
                } else if *slot_home != device as u32 {
                    return Err(ScheduleError::Shape(format!(
                        "{what} {owner} has ops on device {} and on device {device}; a {what} lives on one device",
                        *slot_home
                    )));
                }
                let slot = &mut seen[op_id(*op, n_chunks, n_stages)];
                *slot += 1;
                if *slot > 1 {
                    return Err(ScheduleError::Shape(format!("{op} appears more than once")));
                }
            }
        }
        let has =
            |kind, chunk, stage| seen[op_id(Op { kind, chunk, stage }, n_chunks, n_stages)] > 0;
        let mut split = if any_split {
            vec![false; s_count * k_count]
        } else {
            Vec::new()
        };
        for stage in 0..n_stages {
            for chunk in 0..n_chunks {
                let step_here = if graph_parallel {
                    stage == 0
                } else {
                    per_chunk_update || chunk == 0
                };
                let missing = |op: Op| {
                    ScheduleError::Shape(format!(
                        "{op} is missing: every chunk runs forward and backward (B, or I then W) once on every stage, and every stage steps its optimizer"
                    ))
                };
                if !has(OpKind::Forward, chunk, stage) {
                    return Err(missing(Op::forward(chunk, stage)));
                }
                if step_here && !has(OpKind::Optimizer, chunk, stage) {
                    return Err(missing(Op::optimizer(chunk, stage)));
                }
                let whole = has(OpKind::Backward, chunk, stage);
                let (input, weight) = (
                    has(OpKind::InputGrad, chunk, stage),
                    has(OpKind::WeightGrad, chunk, stage),
                );
                match (whole, input, weight) {
                    (true, false, false) => {}
                    (false, true, true) => {
                        split[stage as usize * k_count + chunk as usize] = true;
                    }
                    (false, false, false) => return Err(missing(Op::backward(chunk, stage))),
                    (true, _, _) => {
                        return Err(ScheduleError::Shape(format!(
                            "{} and its split halves are both in the schedule: run B or I and W, not both",
                            Op::backward(chunk, stage)
                        )))
                    }
                    (false, true, false) => return Err(missing(Op::weight_grad(chunk, stage))),
                    (false, false, true) => return Err(missing(Op::input_grad(chunk, stage))),
                }
            }
        }
        if let Some(extra) = orders.iter().flatten().find(|op| {
            op.kind == OpKind::Optimizer
                && if graph_parallel {
                    op.stage != 0
                } else {
                    !per_chunk_update && op.chunk != 0
                }
        }) {
            return Err(ScheduleError::Shape(format!(
                "{extra} is not an optimizer step this schedule takes"
            )));
        }
        Ok(Schedule {
            kind,
            flow,
            n_stages,
            n_chunks,
            orders,
            home,
            split,
        })
    }

    /// The generator or file this schedule came from.
    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }

    /// Which ops feed which.
    pub fn flow(&self) -> &DataFlow {
        &self.flow
    }

    /// Number of stages (layers, for graph parallelism).
    pub fn n_stages(&self) -> u32 {
        self.n_stages
    }

    /// Number of chunks per epoch (partitions, for graph parallelism).
    pub fn n_chunks(&self) -> u32 {
        self.n_chunks
    }

    /// Number of devices (lists), some possibly empty.
    pub fn n_devices(&self) -> usize {
        self.orders.len()
    }

    /// Each device's ops in issue order.
    pub fn orders(&self) -> &[Vec<Op>] {
        &self.orders
    }

    /// The device that runs `op`.
    pub fn device_of(&self, op: Op) -> usize {
        match self.flow {
            DataFlow::GraphParallel { .. } => self.home[op.chunk as usize] as usize,
            DataFlow::Pipeline { .. } | DataFlow::Hybrid { .. } => {
                self.home[op.stage as usize] as usize
            }
        }
    }

    /// Graph partitions per pipeline stage: G for GNNPipe's hybrid, else 1.
    pub fn partitions(&self) -> u32 {
        match self.flow {
            DataFlow::Hybrid { partitions, .. } => partitions,
            _ => 1,
        }
    }

    /// Whether any backward is split into `I` and `W`.
    pub fn has_split_backward(&self) -> bool {
        !self.split.is_empty()
    }

    /// The op that computes chunk `chunk`'s input gradient on `stage`, which the previous stage
    /// waits for: `I(chunk, stage)` where the backward is split, else `B(chunk, stage)`.
    pub fn gradient_op(&self, chunk: u32, stage: u32) -> Op {
        let split = !self.split.is_empty()
            && self.split[stage as usize * self.n_chunks as usize + chunk as usize];
        if split {
            Op::input_grad(chunk, stage)
        } else {
            Op::backward(chunk, stage)
        }
    }

    /// Total number of ops (forward, backward and optimizer) over all devices.
    pub fn n_ops(&self) -> usize {
        self.orders.iter().map(Vec::len).sum()
    }

    /// The size of the dense op index space used by [`op_id`]: `5 * S * K`.
    pub fn n_op_ids(&self) -> usize {
        N_KINDS * self.n_stages as usize * self.n_chunks as usize
    }
}

/// How many op kinds [`op_id`] numbers.
const N_KINDS: usize = 5;

/// A dense index for every possible op: `((kind * S) + stage) * K + chunk`.
pub fn op_id(op: Op, n_chunks: u32, n_stages: u32) -> usize {
    let kind = match op.kind {
        OpKind::Forward => 0,
        OpKind::Backward => 1,
        OpKind::Optimizer => 2,
        OpKind::InputGrad => 3,
        OpKind::WeightGrad => 4,
    };
    (kind * n_stages as usize + op.stage as usize) * n_chunks as usize + op.chunk as usize
}
