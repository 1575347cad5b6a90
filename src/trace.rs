//! The trace: what happened, as spans on devices and links and memory events.
//!
//! The simulator (predicted) and the executor (measured) both push into a [`TraceSink`]; every
//! metric, table, export and comparison reads a [`Trace`], never the engine that made it.

use crate::schedule::lower::Payload;
use crate::schedule::OpKind;

/// Where a trace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceSource {
    /// The discrete-event simulator's prediction.
    Predicted,
    /// The executor's measurement.
    Measured,
}

/// A device as the trace names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceDevice {
    /// The scenario's device name.
    pub name: String,
    /// Memory capacity in bytes, where known.
    pub capacity_bytes: Option<u64>,
}

/// A directed link as the trace names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLink {
    /// Sending node's name (a device or a switch).
    pub from: String,
    /// Receiving node's name.
    pub to: String,
}

/// What a span did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanKind {
    /// A compute op on a device.
    Compute(OpKind),
    /// A transfer on a link.
    Transfer(Payload),
}

/// The lane a span occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// A device, by index into [`Trace::devices`].
    Device(u32),
    /// A link, by index into [`Trace::links`].
    Link(u32),
}

/// One interval of activity. Kept at 48 bytes: a simulation of a million ops records about two
/// million of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Compute op or transfer; says whether `lane_index` is a device or a link.
    pub kind: SpanKind,
    /// For transfers, which hop of the route this link is (0 for the first).
    pub hop: u16,
    /// The device (compute) or link (transfer) index.
    pub lane_index: u32,
    /// Compute: the op's chunk. Transfer: the receiving op's chunk.
    pub chunk: u32,
    /// Compute: the op's stage. Transfer: the receiving op's stage.
    pub stage: u32,
    /// Compute: the device. Transfer: the receiving device.
    pub device: u32,
    /// Start, nanoseconds from the epoch's start.
    pub start_ns: u64,
    /// End, nanoseconds from the epoch's start.
    pub end_ns: u64,
    /// Bytes moved (transfers) or 0.
    pub bytes: u64,
    /// Compute: when the op started. Transfer: when its data was ready to send (it may have
    /// queued for the link until `start_ns`).
    pub requested_ns: u64,
}

impl Span {
    /// The lane the span occupies.
    pub fn lane(&self) -> Lane {
        match self.kind {
            SpanKind::Compute(_) => Lane::Device(self.lane_index),
            SpanKind::Transfer(_) => Lane::Link(self.lane_index),
        }
    }

    /// Length of the span in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// What a block of memory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryCategory {
    /// Model parameters.
    Parameters,
    /// Parameter gradients.
    Gradients,
    /// Optimizer state (Adam: two moments).
    OptimizerState,
    /// Input features a stage holds.
    Features,
    /// Graph structure (CSR offsets and neighbour ids) a stage holds.
    Graph,
    /// Activations stashed for backward, per in-flight chunk (the chunk's own rows).
    Activations,
    /// Stashed rows of halo vertices (`halo: exact` recomputation, and neighbour rows read).
    Halo,
    /// GNNPipe's history buffers: N x d_in per owned layer whose input is not the features.
    History,
    /// GNNPipe's deferred cross-chunk gradients (`backward: deferred`).
    DeferredGradients,
    /// Buffers holding received data until it is consumed.
    Communication,
    /// Measured only: what a stage's allocations held at the epoch's start beyond the buffers
    /// above (kernel workspaces, thread caches, bookkeeping). The simulator predicts none.
    Workspace,
}

impl MemoryCategory {
    /// Every category, in the order tables and JSON list them.
    pub const ALL: [MemoryCategory; 11] = [
        MemoryCategory::Parameters,
        MemoryCategory::Gradients,
        MemoryCategory::OptimizerState,
        MemoryCategory::Features,
        MemoryCategory::Graph,
        MemoryCategory::Activations,
        MemoryCategory::Halo,
        MemoryCategory::History,
        MemoryCategory::DeferredGradients,
        MemoryCategory::Communication,
        MemoryCategory::Workspace,
    ];

    /// The JSON key.
    pub fn name(self) -> &'static str {
        match self {
            MemoryCategory::Parameters => "parameters",
            MemoryCategory::Gradients => "gradients",
            MemoryCategory::OptimizerState => "optimizer_state",
            MemoryCategory::Features => "features",
            MemoryCategory::Graph => "graph",
            MemoryCategory::Activations => "activations",
            MemoryCategory::Halo => "halo",
            MemoryCategory::History => "history",
            MemoryCategory::DeferredGradients => "deferred_gradients",
            MemoryCategory::Communication => "communication",
            MemoryCategory::Workspace => "workspace",
        }
    }

    /// Position in [`MemoryCategory::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An allocation (positive) or release (negative) of memory on a device at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEvent {
    /// Device index.
    pub device: u32,
    /// When, nanoseconds from the epoch's start.
    pub time_ns: u64,
    /// What the memory holds.
    pub category: MemoryCategory,
    /// Bytes allocated (positive) or freed (negative).
    pub delta_bytes: i64,
}

/// Receives trace records as they happen (push model).
pub trait TraceSink {
    /// Records a span.
    fn span(&mut self, span: Span);
    /// Records a memory event. Events need not arrive in time order (the simulator's one pass
    /// records them device by device); readers that need it sort.
    fn memory(&mut self, event: MemoryEvent);
}

/// A whole trace of one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Predicted or measured.
    pub source: TraceSource,
    /// All devices of the scenario.
    pub devices: Vec<TraceDevice>,
    /// All directed links of the scenario.
    pub links: Vec<TraceLink>,
    /// Number of stages of the schedule.
    pub n_stages: u32,
    /// Number of chunks of the schedule.
    pub n_chunks: u32,
    /// Spans in the order they were recorded.
    pub spans: Vec<Span>,
    /// Memory events in the order they were recorded (not necessarily by time).
    pub memory: Vec<MemoryEvent>,
}

impl Trace {
    /// An empty trace with room for about `n_ops` ops' spans and memory events.
    pub fn with_capacity(
        source: TraceSource,
        devices: Vec<TraceDevice>,
        links: Vec<TraceLink>,
        (n_stages, n_chunks): (u32, u32),
        n_ops: usize,
    ) -> Self {
        Trace {
            source,
            devices,
            links,
            n_stages,
            n_chunks,
            spans: Vec::with_capacity(2 * n_ops),
            memory: Vec::with_capacity(3 * n_ops),
        }
    }
}

impl TraceSink for Trace {
    fn span(&mut self, span: Span) {
        self.spans.push(span);
    }

    fn memory(&mut self, event: MemoryEvent) {
        self.memory.push(event);
    }
}

/// A sink that only counts, for benchmarks that must not measure allocation of the trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountingSink {
    /// Spans seen.
    pub spans: u64,
    /// Memory events seen.
    pub memory_events: u64,
}

impl TraceSink for CountingSink {
    fn span(&mut self, _span: Span) {
        self.spans += 1;
    }

    fn memory(&mut self, _event: MemoryEvent) {
        self.memory_events += 1;
    }
}
