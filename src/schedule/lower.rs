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

use std::ops::Range;

use super::ir::{op_id, BackwardSync, DataFlow, Op, OpKind, Schedule, UpdateMode};

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
        (DataFlow::Pipeline { .. }, OpKind::Backward | OpKind::InputGrad) if op.stage > 0 => {
            send(
                Payload::Gradient,
                schedule.gradient_op(op.chunk, op.stage - 1),
            );
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
                // The weight all-reduce's gate: each replica hands its gradients on to the next
                // (the simulator runs it as a collective of steps; the executor's transport
                // all-reduces).
                send(
                    Payload::Weights,
                    Op::optimizer((op.chunk + 1) % n_chunks, 0),
                );
            }
        }
        (
            DataFlow::Hybrid {
                partitions,
                readers,
            },
            OpKind::Forward,
        ) => {
            let (g, lane) = (op.stage % partitions, op.stage);
            if lane + partitions < n_stages {
                // This chunk's rows of partition g go on to its own next layer (across a stage
                // boundary, or on the same device) and to the partitions that read them.
                let next = lane - g + partitions;
                send(Payload::Activation, Op::forward(op.chunk, next + g));
                for &reader in &readers[g as usize] {
                    send(Payload::Activation, Op::forward(op.chunk, next + reader));
                }
            }
        }
        (
            DataFlow::Hybrid {
                partitions,
                readers,
            },
            OpKind::Backward,
        ) => {
            let (g, lane) = (op.stage % partitions, op.stage);
            if lane >= *partitions {
                let previous = lane - g - partitions;
                send(Payload::Gradient, Op::backward(op.chunk, previous + g));
                for (owner, owner_readers) in readers.iter().enumerate() {
                    if owner_readers.contains(&g) {
                        send(
                            Payload::Gradient,
                            Op::backward(op.chunk, previous + owner as u32),
                        );
                    }
                }
            }
            let layers = hybrid_stage_layers(schedule, *partitions, lane);
            if *partitions > 1 && lane / partitions == layers.start {
                // The stage's last backward: its weight gradients into the group's all-reduce.
                send(
                    Payload::Weights,
                    Op::optimizer(0, lane - g + (g + 1) % partitions),
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
            visit(schedule.gradient_op(op.chunk, op.stage), Reason::Local)
        }
        (DataFlow::Pipeline { .. }, OpKind::InputGrad) => {
            visit(Op::weight_grad(op.chunk, op.stage), Reason::Local)
        }
        (DataFlow::Pipeline { update, .. }, OpKind::Backward | OpKind::WeightGrad) => {
            match update {
                UpdateMode::PerEpoch => visit(Op::optimizer(0, op.stage), Reason::Backwards),
                UpdateMode::PerChunk => visit(Op::optimizer(op.chunk, op.stage), Reason::Backwards),
            }
        }
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
        (DataFlow::Hybrid { .. }, OpKind::Forward) => {
            visit(Op::backward(op.chunk, op.stage), Reason::Local)
        }
        (DataFlow::Hybrid { .. }, OpKind::Backward) => {
            visit(Op::optimizer(0, op.stage), Reason::Backwards)
        }
        (_, OpKind::Optimizer)
        | (
            DataFlow::GraphParallel { .. } | DataFlow::Hybrid { .. },
            OpKind::InputGrad | OpKind::WeightGrad,
        ) => {}
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
        ) | (
            DataFlow::GraphParallel { .. } | DataFlow::Hybrid { .. },
            Payload::Weights
        )
    )
}

/// In GNNPipe's hybrid, the layers of the pipeline stage that runs lane `lane`'s layer: the
/// run of layers whose first partition's lanes share its device.
///
/// # Complexity
/// O(layers).
pub fn hybrid_stage_layers(schedule: &Schedule, partitions: u32, lane: u32) -> Range<u32> {
    let layers = schedule.n_stages() / partitions;
    let device = |layer: u32| schedule.device_of(Op::forward(0, layer * partitions));
    let layer = lane / partitions;
    let here = device(layer);
    let start = (0..=layer)
        .rev()
        .take_while(|&l| device(l) == here)
        .last()
        .unwrap_or(layer);
    let end = (layer..layers)
        .take_while(|&l| device(l) == here)
        .last()
        .unwrap_or(layer)
        + 1;
    start..end
}

/// The ops whose devices a hand-off's bytes travel between: its producer and addressee, except
/// in GNNPipe's hybrid, where a partition's rows (and their gradients) cross a stage boundary
/// partition to partition and the halo exchange stays inside a stage's group. There, the rows
/// of partition g that partition h reads in the first layer of a stage travel from g's device of
/// that stage (which received them with g's own hand-off) to h's; and the gradients partition g
/// computes for h's rows in a stage's first layer travel to h's device of the same stage, which
/// sums them into h's own hand-off backwards. The addressee is unchanged: the hand-off still
/// releases it when it arrives.
pub fn handoff_endpoints(schedule: &Schedule, handoff: &Handoff) -> (Op, Op) {
    let (from, to) = (handoff.from, handoff.to);
    let DataFlow::Hybrid { partitions, .. } = schedule.flow() else {
        return (from, to);
    };
    let (g, h) = (from.stage % partitions, to.stage % partitions);
    let crosses = |a: Op, b: Op| schedule.device_of(a) != schedule.device_of(b);
    match handoff.payload {
        Payload::Activation if g != h => {
            // The rows reach g's device of the next layer first.
            let own = Op::forward(to.chunk, to.stage - h + g);
            if crosses(from, own) {
                (own, to)
            } else {
                (from, to)
            }
        }
        Payload::Gradient if g != h => {
            // The gradients of h's rows are summed on h's device of this layer first.
            let owner = Op::backward(from.chunk, from.stage - g + h);
            if crosses(owner, to) {
                (from, owner)
            } else {
                (from, to)
            }
        }
        _ => (from, to),
    }
}

/// A dense index of the gate a gated hand-off feeds: one gate per payload and receiving stage
/// (for the hybrid's weights, per layer: the lane of its first partition).
pub fn gate_index(schedule: &Schedule, handoff: &Handoff) -> usize {
    let payload = match handoff.payload {
        Payload::Activation => 0,
        Payload::Gradient => 1,
        Payload::Weights => 2,
    };
    let stage = match (schedule.flow(), handoff.payload) {
        (DataFlow::Hybrid { partitions, .. }, Payload::Weights) => {
            handoff.to.stage - handoff.to.stage % partitions
        }
        _ => handoff.to.stage,
    };
    payload * schedule.n_stages() as usize + stage as usize
}

/// Calls `visit` for every op a gate releases: every chunk's op of the addressee's kind and
/// stage (for gradients, each chunk's [`Schedule::gradient_op`]); for the hybrid's weights,
/// the optimizer step of the layer on every partition.
pub fn for_each_gate_member(schedule: &Schedule, handoff: &Handoff, mut visit: impl FnMut(Op)) {
    if let (DataFlow::Hybrid { partitions, .. }, Payload::Weights) =
        (schedule.flow(), handoff.payload)
    {
        for layer in hybrid_stage_layers(schedule, *partitions, handoff.to.stage) {
            for g in 0..*partitions {
                visit(Op::optimizer(0, layer * partitions + g));
            }
        }
        return;
    }
    for chunk in 0..schedule.n_chunks() {
        visit(match handoff.payload {
            Payload::Gradient => schedule.gradient_op(chunk, handoff.to.stage),
            _ => Op {
                chunk,
                ..handoff.to
            },
        });
    }
}

/// What one op's completion does for another op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The op at `to` uses the result on the same device.
    Local {
        /// Position of the op it releases.
        to: u32,
    },
    /// A hand-off addressed to the op at `to`; it releases that op when it arrives.
    Direct {
        /// Position of the addressee.
        to: u32,
        /// What it carries.
        payload: Payload,
    },
    /// A hand-off addressed to the op at `to` that goes through gate `gate`, which releases its
    /// members once every hand-off into it has arrived.
    Gated {
        /// Position of the addressee.
        to: u32,
        /// What it carries.
        payload: Payload,
        /// Index into [`Lowered::gate_members`].
        gate: u32,
    },
}

/// A schedule lowered for interpretation: its ops numbered by *position* (device 0's list in
/// issue order, then device 1's, ...), what each op's completion releases, and how many inputs
/// each op waits for besides its device's order.
///
/// Built once from [`for_each_local_successor`], [`for_each_handoff`] and the gates, so the
/// checker and the simulator read the same dependencies as everything else, without calling
/// back into the data flow per event.
///
/// # Complexity
/// O(S·K + hand-offs) time and memory to build.
#[derive(Debug, Clone)]
pub struct Lowered {
    ops: Vec<Op>,
    device_of: Vec<u32>,
    device_starts: Vec<u32>,
    inputs: Vec<u32>,
    release_starts: Vec<u32>,
    releases: Vec<Release>,
    /// Per release, the positions whose devices its bytes travel between, where they are not
    /// the producer's and the addressee's ([`handoff_endpoints`]); empty when none differ.
    endpoints: Vec<(u32, u32)>,
    gate_inputs: Vec<u32>,
    gate_starts: Vec<u32>,
    gate_members: Vec<u32>,
}

impl Lowered {
    /// Lowers `schedule`.
    pub fn new(schedule: &Schedule) -> Self {
        let n_ops = schedule.n_ops();
        let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
        let mut ops = Vec::with_capacity(n_ops);
        let mut device_of = Vec::with_capacity(n_ops);
        let mut device_starts = Vec::with_capacity(schedule.n_devices() + 1);
        let mut position_of = vec![u32::MAX; schedule.n_op_ids()];
        for (device, order) in schedule.orders().iter().enumerate() {
            device_starts.push(ops.len() as u32);
            for &op in order {
                position_of[op_id(op, n_chunks, n_stages)] = ops.len() as u32;
                ops.push(op);
                device_of.push(device as u32);
            }
        }
        device_starts.push(ops.len() as u32);
        let at = |op: Op| {
            let position = position_of[op_id(op, n_chunks, n_stages)];
            debug_assert!(position != u32::MAX, "{op} is not in the schedule");
            position
        };
        let mut inputs = vec![0u32; n_ops];
        let mut release_starts = Vec::with_capacity(n_ops + 1);
        let mut releases = Vec::with_capacity(2 * n_ops);
        let mut endpoints: Vec<(u32, u32)> = Vec::new();
        let relays = matches!(schedule.flow(), DataFlow::Hybrid { .. });
        // Gates are numbered in the order their first hand-off appears.
        let mut gate_of = vec![u32::MAX; 3 * n_stages as usize];
        let mut gate_inputs: Vec<u32> = Vec::new();
        let mut gate_starts = vec![0u32];
        let mut gate_members = Vec::new();
        for &op in &ops {
            release_starts.push(releases.len() as u32);
            for_each_local_successor(schedule, op, |next, _| {
                let to = at(next);
                inputs[to as usize] += 1;
                releases.push(Release::Local { to });
                if relays {
                    endpoints.push((at(op), to));
                }
            });
            for_each_handoff(schedule, op, |handoff| {
                let to = at(handoff.to);
                if relays {
                    let (a, b) = handoff_endpoints(schedule, &handoff);
                    endpoints.push((at(a), at(b)));
                }
                let payload = handoff.payload;
                if is_gated(schedule, &handoff) {
                    let slot = &mut gate_of[gate_index(schedule, &handoff)];
                    if *slot == u32::MAX {
                        *slot = gate_inputs.len() as u32;
                        gate_inputs.push(0);
                        for_each_gate_member(schedule, &handoff, |member| {
                            let member = at(member);
                            inputs[member as usize] += 1;
                            gate_members.push(member);
                        });
                        gate_starts.push(gate_members.len() as u32);
                    }
                    gate_inputs[*slot as usize] += 1;
                    releases.push(Release::Gated {
                        to,
                        payload,
                        gate: *slot,
                    });
                } else {
                    inputs[to as usize] += 1;
                    releases.push(Release::Direct { to, payload });
                }
            });
        }
        release_starts.push(releases.len() as u32);
        Lowered {
            ops,
            device_of,
            device_starts,
            inputs,
            release_starts,
            releases,
            endpoints,
            gate_inputs,
            gate_starts,
            gate_members,
        }
    }

    /// The op at `position`.
    pub fn op(&self, position: u32) -> Op {
        self.ops[position as usize]
    }

    /// Every op, by position.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The device whose list holds the op at `position`.
    pub fn device_of(&self, position: u32) -> usize {
        self.device_of[position as usize] as usize
    }

    /// Number of devices (lists) of the schedule.
    pub fn n_devices(&self) -> usize {
        self.device_starts.len() - 1
    }

    /// Device `device`'s positions, in issue order.
    pub fn positions(&self, device: usize) -> std::ops::Range<u32> {
        self.device_starts[device]..self.device_starts[device + 1]
    }

    /// Per position, how many releases the op waits for (results, hand-offs and gates), not
    /// counting its device's order.
    pub fn inputs(&self) -> &[u32] {
        &self.inputs
    }

    /// What the completion of the op at `position` releases, in the order the data flow lists
    /// it (local successors first, then hand-offs).
    pub fn releases(&self, position: u32) -> &[Release] {
        let p = position as usize;
        &self.releases[self.release_starts[p] as usize..self.release_starts[p + 1] as usize]
    }

    /// Indices of the op at `position`'s releases, for [`Lowered::release_at`]: a range a
    /// caller can walk while it mutates its own state.
    pub fn release_range(&self, position: u32) -> std::ops::Range<usize> {
        let p = position as usize;
        self.release_starts[p] as usize..self.release_starts[p + 1] as usize
    }

    /// Number of releases of all ops (indices of [`Lowered::release_at`] are below it).
    pub fn n_releases(&self) -> usize {
        self.releases.len()
    }

    /// The release at `index` of [`Lowered::release_range`].
    pub fn release_at(&self, index: usize) -> Release {
        self.releases[index]
    }

    /// The positions whose devices the release at `index` (of the op at `from`) travels
    /// between: [`handoff_endpoints`].
    pub fn endpoints_at(&self, from: u32, index: usize) -> (u32, u32) {
        match self.endpoints.get(index) {
            Some(&pair) => pair,
            None => match self.releases[index] {
                Release::Local { to } | Release::Direct { to, .. } | Release::Gated { to, .. } => {
                    (from, to)
                }
            },
        }
    }

    /// Whether some release's bytes travel between the devices of other ops than its producer
    /// and addressee ([`Lowered::endpoints_at`]).
    pub fn relays(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Per gate, how many hand-offs must arrive before it opens.
    pub fn gate_inputs(&self) -> &[u32] {
        &self.gate_inputs
    }

    /// The positions gate `gate` releases when it opens.
    pub fn gate_members(&self, gate: u32) -> &[u32] {
        let g = gate as usize;
        &self.gate_members[self.gate_starts[g] as usize..self.gate_starts[g + 1] as usize]
    }

    /// The [`Handoff`] a release that is a hand-off describes, from the op at `from`.
    pub fn handoff(&self, from: u32, release: Release) -> Option<Handoff> {
        match release {
            Release::Local { .. } => None,
            Release::Direct { to, payload } | Release::Gated { to, payload, .. } => Some(Handoff {
                payload,
                from: self.op(from),
                to: self.op(to),
            }),
        }
    }
}
