//! The explicit workload: per-stage times and sizes written in the scenario.

use super::CostModel;
use crate::scenario::{ExplicitWorkload, Optimizer, StageWork, WorkUnit};
use crate::schedule::lower::{Handoff, Payload};
use crate::schedule::{Op, OpKind};
use crate::trace::MemoryCategory;

/// Costs read from a scenario's `workload: {kind: explicit}` section for a given chunk count.
///
/// With `per: batch`, times and activation sizes describe the whole batch and each chunk gets
/// `1/K` of them (rounded up), so sweeping the chunk count keeps the work per epoch fixed. With
/// `per: chunk` they describe one chunk as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitCost {
    /// Per stage, the work as written, and one chunk's share of it (computed once: the simulator
    /// asks for every op).
    stages: Vec<StageWork>,
    shares: Vec<ChunkShare>,
    optimizer: Optimizer,
}

/// One chunk's share of a stage's per-batch quantities.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ChunkShare {
    forward_ns: u64,
    backward_ns: u64,
    activation_bytes: u64,
    stash_bytes: u64,
}

impl ExplicitCost {
    /// Costs for `n_chunks` chunks with `optimizer`'s state size.
    pub fn new(workload: &ExplicitWorkload, n_chunks: u32, optimizer: Optimizer) -> Self {
        let divisor = match workload.per {
            WorkUnit::Chunk => 1,
            WorkUnit::Batch => u64::from(n_chunks.max(1)),
        };
        let share = |total: u64| total.div_ceil(divisor);
        ExplicitCost {
            stages: workload.stages.clone(),
            shares: workload
                .stages
                .iter()
                .map(|work| ChunkShare {
                    forward_ns: share(work.forward_ns),
                    backward_ns: share(work.backward_ns),
                    activation_bytes: share(work.activation_bytes),
                    stash_bytes: share(work.stash_bytes),
                })
                .collect(),
            optimizer,
        }
    }
}

impl CostModel for ExplicitCost {
    fn op_ns(&self, op: Op) -> u64 {
        let share = &self.shares[op.stage as usize];
        match op.kind {
            OpKind::Forward => share.forward_ns,
            OpKind::Backward => share.backward_ns,
            // A split backward: the stated backward halved (an explicit workload states no
            // weight-gradient share), `I` taking the odd nanosecond.
            OpKind::InputGrad => share.backward_ns - share.backward_ns / 2,
            OpKind::WeightGrad => share.backward_ns / 2,
            OpKind::Optimizer => self.stages[op.stage as usize].optimizer_ns,
        }
    }

    fn handoff_bytes(&self, handoff: &Handoff) -> u64 {
        // A gradient has the shape of the activation it is the gradient of: the output of the
        // stage that receives it.
        let producer = match handoff.payload {
            Payload::Activation => handoff.from.stage,
            Payload::Gradient => handoff.to.stage,
            Payload::Weights => return 0,
        };
        self.shares[producer as usize].activation_bytes
    }

    fn stash(&self, forward: Op) -> (u64, u64) {
        (self.shares[forward.stage as usize].stash_bytes, 0)
    }

    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        let mut stages: Vec<u32> = order.iter().map(|op| op.stage).collect();
        stages.sort_unstable();
        stages.dedup();
        let params: u64 = stages
            .iter()
            .map(|&s| self.stages[s as usize].parameter_bytes)
            .sum();
        vec![
            (MemoryCategory::Parameters, params),
            (MemoryCategory::Gradients, params),
            (
                MemoryCategory::OptimizerState,
                params * self.optimizer.state_copies(),
            ),
        ]
    }
}
