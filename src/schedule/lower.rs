//! Dependencies and transfers derived from the ops and the schedule's data flow.
//!
//! Schedules list only compute ops. What an op hands to which other op, and what waits for what,
//! follows from the op and the [`DataFlow`]; this module is the single definition the checker and
//! both interpreters (simulator, executor) use. Whether a hand-off crosses devices depends on
//! placement, which is the interpreter's business.
//!
//! Most hand-offs are *direct*: they release the op they are addressed to. *Gated* hand-offs
//! (gradients under GNNPipe's exact backward, weight gradients of graph parallelism's all-reduce)
//! release a whole group of ops once every hand-off into the gate has arrived.

use super::ir::{BackwardSync, DataFlow, Op, OpKind, Schedule, UpdateMode};

/// What a hand-off carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// Activations (layer outputs) going forward.
    Activation,
    /// Gradients of activations going backward.
    Gradient,
    /// Weight gradients of a data-parallel all-reduce.
    Weights,
}

impl Payload {
    /// The name used in traces and tables.
    pub fn name(self) -> &'static str {
        match self {
            Payload::Activation => "activation",
            Payload::Gradient => "gradient",
            Payload::Weights => "weights",
        }
    }
}

/// Data one op's result hands to another op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// What it carries.
    pub payload: Payload,
    /// The producing op.
    pub from: Op,
    /// The op it is addressed to.
    pub to: Op,
}

/// Why one op must wait for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The earlier op comes first in the same device's list.
    DeviceOrder,
    /// The op consumes the other op's hand-off.
    Data(Payload),
    /// The op uses the other op's result on the same device (a layer's output, its own stash).
    Local,
    /// The optimizer step needs the backwards it applies.
    Backwards,
}

impl Reason {
    /// A short phrase for error messages.
    pub fn phrase(self) -> &'static str {
        match self {
            Reason::DeviceOrder => "comes after it on the same device",
            Reason::Data(Payload::Activation) => "needs its activations",
            Reason::Data(Payload::Gradient) => "needs its gradient",
            Reason::Data(Payload::Weights) => "needs its weight gradients",
            Reason::Local => "needs its result",
            Reason::Backwards => "needs the backwards it applies",
        }
    }
}

/// Calls `visit` for every hand-off `op`'s result makes.
pub fn for_each_handoff(schedule: &Schedule, op: Op, mut visit: impl FnMut(Handoff)) {
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let mut send = |payload, to| {
        visit(Handoff {
            payload,
            from: op,
            to,
        })
    };
    match (schedule.flow(), op.kind) {
        (DataFlow::Pipeline { .. }, OpKind::Forward) if op.stage + 1 < n_stages => {
            send(Payload::Activation, Op::forward(op.chunk, op.stage + 1));
        }
        (DataFlow::Pipeline { .. }, OpKind::Backward) if op.stage > 0 => {
            send(Payload::Gradient, Op::backward(op.chunk, op.stage - 1));
        }
        (DataFlow::GraphParallel { readers }, OpKind::Forward) if op.stage + 1 < n_stages => {
            for &reader in &readers[op.chunk as usize] {
                send(Payload::Activation, Op::forward(reader, op.stage + 1));
            }
        }
        (DataFlow::GraphParallel { readers }, OpKind::Backward) => {
            if op.stage > 0 {
                // The gradient of the rows this partition read goes back to their owners.
                for (owner, owner_readers) in readers.iter().enumerate() {
                    if owner_readers.contains(&op.chunk) {
                        send(Payload::Gradient, Op::backward(owner as u32, op.stage - 1));
                    }
                }
            } else if n_chunks > 1 {
                // Ring all-reduce: each replica sends its share to the next.
                send(
                    Payload::Weights,
                    Op::optimizer((op.chunk + 1) % n_chunks, 0),
                );
            }
        }
        _ => {}
    }
}

/// Calls `visit` for every op that uses `op`'s result on the same device, without a hand-off.
pub fn for_each_local_successor(schedule: &Schedule, op: Op, mut visit: impl FnMut(Op, Reason)) {
    let n_stages = schedule.n_stages();
    match (schedule.flow(), op.kind) {
        (DataFlow::Pipeline { .. }, OpKind::Forward) => {
            visit(Op::backward(op.chunk, op.stage), Reason::Local)
        }
        (DataFlow::Pipeline { update, .. }, OpKind::Backward) => match update {
            UpdateMode::PerEpoch => visit(Op::optimizer(0, op.stage), Reason::Backwards),
            UpdateMode::PerChunk => visit(Op::optimizer(op.chunk, op.stage), Reason::Backwards),
        },
        (DataFlow::GraphParallel { .. }, OpKind::Forward) => {
            if op.stage + 1 < n_stages {
                visit(Op::forward(op.chunk, op.stage + 1), Reason::Local);
            }
            visit(Op::backward(op.chunk, op.stage), Reason::Local);
        }
        (DataFlow::GraphParallel { .. }, OpKind::Backward) => {
            if op.stage > 0 {
                visit(Op::backward(op.chunk, op.stage - 1), Reason::Local);
            } else {
                visit(Op::optimizer(op.chunk, 0), Reason::Backwards);
            }
        }
        (_, OpKind::Optimizer) => {}
    }
}

/// Whether a hand-off goes through a gate rather than releasing its addressee directly.
pub fn is_gated(schedule: &Schedule, handoff: &Handoff) -> bool {
    matches!(
        (schedule.flow(), handoff.payload),
        (
            DataFlow::Pipeline {
                backward: BackwardSync::Barrier,
                ..
            },
            Payload::Gradient,
        ) | (DataFlow::GraphParallel { .. }, Payload::Weights)
    )
}

/// A dense index of the gate a gated hand-off feeds: one gate per payload and receiving stage.
pub fn gate_index(schedule: &Schedule, handoff: &Handoff) -> usize {
    let payload = match handoff.payload {
        Payload::Activation => 0,
        Payload::Gradient => 1,
        Payload::Weights => 2,
    };
    payload * schedule.n_stages() as usize + handoff.to.stage as usize
}

/// Calls `visit` for every op a gate releases: every chunk's op of the addressee's kind and
/// stage.
pub fn for_each_gate_member(schedule: &Schedule, handoff: &Handoff, mut visit: impl FnMut(Op)) {
    for chunk in 0..schedule.n_chunks() {
        visit(Op {
            chunk,
            ..handoff.to
        });
    }
}
