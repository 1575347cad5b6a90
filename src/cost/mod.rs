//! Cost models: how long each op takes and what it moves and holds.
//!
//! The simulator asks a [`CostModel`] for every op's duration, every hand-off's size and every
//! stage's memory. Link time is the network's business ([`crate::network`]), not the cost
//! model's.

pub mod analytic;
pub mod device;
mod explicit;
pub mod fit;
pub mod kernels;
pub mod profiled;
mod uniform;

pub use analytic::{AnalyticCost, DeviceRates, GnnWorkload};
pub use device::{DeviceProfile, HandoffCost, Kernel, ProfileTarget};
pub use explicit::ExplicitCost;
pub use kernels::{DeviceCost, TrainingShape};
pub use profiled::{Profile, ProfiledCost};
pub use uniform::UniformCost;

use crate::schedule::lower::Handoff;
use crate::schedule::Op;
use crate::trace::MemoryCategory;

/// Durations, transfer sizes and memory of a workload's ops.
pub trait CostModel {
    /// Duration of a compute op on its stage's device, in nanoseconds.
    fn op_ns(&self, op: Op) -> u64;
    /// Bytes a hand-off carries between stages; for weight gradients (`Payload::Weights`), the
    /// bytes each replica all-reduces, whose steps the simulator puts on the links.
    fn handoff_bytes(&self, handoff: &Handoff) -> u64;
    /// Bytes a forward op stashes from its start until its backward ends: its own rows'
    /// activations, and halo rows.
    fn stash(&self, forward: Op) -> (u64, u64);
    /// Bytes of a chunk's stash that a split backward keeps from its `I` to its `W`: what the
    /// weight gradients read (each dense transform's input rows and output gradient, which
    /// `I` creates). `I` frees the rest of the stash and `W` these. By default all of the
    /// own rows' stash, so that `W` frees it.
    fn weight_stash(&self, forward: Op) -> u64 {
        self.stash(forward).0
    }
    /// Bytes `op` allocates while it runs and frees before it ends, beyond the stash it adds
    /// or frees (its temporaries: a backward's gradients, an optimizer step's copies).
    fn transient(&self, _op: Op) -> u64 {
        0
    }
    /// Memory a device running `order` holds for the whole epoch, by category.
    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)>;
}
