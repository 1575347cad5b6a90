//! Uniform op times and no memory: the quick what-if of `pipegnn schedule --simulate`.

use super::CostModel;
use crate::schedule::lower::Handoff;
use crate::schedule::{Op, OpKind};
use crate::trace::MemoryCategory;

/// Every forward takes `forward_ns`, every backward `backward_ns` (split, `weight_ns` of it
/// for `W` and the rest for `I`), optimizer steps are free, and nothing is moved or stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformCost {
    /// Duration of each forward.
    pub forward_ns: u64,
    /// Duration of each whole backward.
    pub backward_ns: u64,
    /// Duration of each weight-gradient half (`W`); at most `backward_ns`.
    pub weight_ns: u64,
}

impl UniformCost {
    /// Forwards of `forward_ns`, backwards of `backward_ns`, split evenly (`W` takes half,
    /// rounded down, as in the zero-bubble paper's `F = I = W` setting when `B = 2F`).
    pub fn new(forward_ns: u64, backward_ns: u64) -> Self {
        UniformCost {
            forward_ns,
            backward_ns,
            weight_ns: backward_ns / 2,
        }
    }
}

impl CostModel for UniformCost {
    fn op_ns(&self, op: Op) -> u64 {
        match op.kind {
            OpKind::Forward => self.forward_ns,
            OpKind::Backward => self.backward_ns,
            OpKind::InputGrad => self.backward_ns.saturating_sub(self.weight_ns),
            OpKind::WeightGrad => self.weight_ns.min(self.backward_ns),
            OpKind::Optimizer => 0,
        }
    }

    fn handoff_bytes(&self, _handoff: &Handoff) -> u64 {
        0
    }

    fn stash(&self, _forward: Op) -> (u64, u64) {
        (0, 0)
    }

    fn resident_bytes(&self, _order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        Vec::new()
    }
}
