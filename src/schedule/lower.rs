//! Dependencies and transfers derived from the ops and stage placement.
//!
//! Schedules list only compute ops. The data an op needs, and the transfers that carry it between
//! stages, follow from the op itself; this module is the single definition both the checker and
//! the interpreters (simulator, executor) use.

use super::ir::{Op, OpKind};

/// What a transfer between stages carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// A chunk's activations, from stage s to s + 1 after `F(c, s)`.
    Activation,
    /// A chunk's gradient, from stage s to s - 1 after `B(c, s)`.
    Gradient,
}

impl Payload {
    /// The name used in traces and tables.
    pub fn name(self) -> &'static str {
        match self {
            Payload::Activation => "activation",
            Payload::Gradient => "gradient",
        }
    }
}

/// The hand-off an op's result makes to a neighbouring stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// Activation or gradient.
    pub payload: Payload,
    /// The chunk it belongs to.
    pub chunk: u32,
    /// The stage that produced it.
    pub from_stage: u32,
    /// The stage that consumes it.
    pub to_stage: u32,
}

/// The hand-off `op`'s result makes to another stage, if any: `F(c, s)` feeds `F(c, s + 1)`,
/// `B(c, s)` feeds `B(c, s - 1)`. Whether it crosses devices depends on placement.
pub fn handoff_after(op: Op, n_stages: u32) -> Option<Handoff> {
    match op.kind {
        OpKind::Forward if op.stage + 1 < n_stages => Some(Handoff {
            payload: Payload::Activation,
            chunk: op.chunk,
            from_stage: op.stage,
            to_stage: op.stage + 1,
        }),
        OpKind::Backward if op.stage > 0 => Some(Handoff {
            payload: Payload::Gradient,
            chunk: op.chunk,
            from_stage: op.stage,
            to_stage: op.stage - 1,
        }),
        _ => None,
    }
}

/// The hand-off `op` waits for, if any (the inverse of [`handoff_after`]).
pub fn handoff_into(op: Op, n_stages: u32) -> Option<Handoff> {
    match op.kind {
        OpKind::Forward if op.stage > 0 => Some(Handoff {
            payload: Payload::Activation,
            chunk: op.chunk,
            from_stage: op.stage - 1,
            to_stage: op.stage,
        }),
        OpKind::Backward if op.stage + 1 < n_stages => Some(Handoff {
            payload: Payload::Gradient,
            chunk: op.chunk,
            from_stage: op.stage + 1,
            to_stage: op.stage,
        }),
        _ => None,
    }
}

/// Why one op must wait for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The earlier op comes first in the same device's list.
    DeviceOrder,
    /// The op consumes the other op's activations or gradient.
    Data(Payload),
    /// A backward needs its own forward's stash (and, on the last stage, its loss).
    OwnForward,
    /// The optimizer step needs every backward of its stage.
    AllBackwards,
}

impl Reason {
    /// A short phrase for error messages.
    pub fn phrase(self) -> &'static str {
        match self {
            Reason::DeviceOrder => "comes after it on the same device",
            Reason::Data(Payload::Activation) => "needs its activations",
            Reason::Data(Payload::Gradient) => "needs its gradient",
            Reason::OwnForward => "needs its forward stash",
            Reason::AllBackwards => "needs every backward of the stage",
        }
    }
}

/// Calls `visit(dep, reason)` for every op `op` needs data from (device order excluded).
pub fn for_each_input(op: Op, n_stages: u32, n_chunks: u32, mut visit: impl FnMut(Op, Reason)) {
    match op.kind {
        OpKind::Forward => {
            if let Some(h) = handoff_into(op, n_stages) {
                visit(Op::forward(h.chunk, h.from_stage), Reason::Data(h.payload));
            }
        }
        OpKind::Backward => {
            visit(Op::forward(op.chunk, op.stage), Reason::OwnForward);
            if let Some(h) = handoff_into(op, n_stages) {
                visit(Op::backward(h.chunk, h.from_stage), Reason::Data(h.payload));
            }
        }
        OpKind::Optimizer => {
            for chunk in 0..n_chunks {
                visit(Op::backward(chunk, op.stage), Reason::AllBackwards);
            }
        }
    }
}
