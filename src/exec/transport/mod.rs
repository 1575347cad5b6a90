//! How workers hand tensors to each other: the [`Transport`] trait, one endpoint per schedule
//! device (a *rank*), and its implementations, one file each.
//!
//! A worker knows only this trait. It sends what `schedule::lower` says its op hands on, tagged
//! with the hand-off ([`Tag`]), receives tagged tensors in whatever order they arrive, and meets
//! the other ranks in a barrier and an all-reduce over a group of them (graph parallelism's
//! weight gradients over every rank, GNNPipe's hybrid's over each stage's group). Graph
//! parallelism's halo exchange and broadcast need no collective of their own: they are grouped
//! point-to-point sends, one tagged message per reader, which the lowering lists. An endpoint
//! between processes (MPI: tensors as bytes with their shape, tags from the hand-off; between
//! GPUs, the same with the tensors over NCCL) implements the same methods.
//!
//! - [`channel`]: the threads of one process, over channels, with optional link emulation;
//!   the default and the reference the others are tested against.
//! - `mpi` (`--features mpi`): one rank per process under `mpirun`, tensors as bytes over MPI
//!   point-to-point messages.
//! - `nccl` (`--features nccl`): the MPI transport's tensors between GPUs over NCCL, device to
//!   device, MPI carrying what describes them.
//! - `handoffs`: what every transport's ranks share: what each op sends and receives, read
//!   from the lowering, and the inbox that keeps messages until the op they are addressed to
//!   takes them.
//! - [`links`]: link emulation and transfer spans; [`wire`]: what crosses between processes,
//!   as bytes.

pub mod channel;
pub(super) mod handoffs;
pub mod links;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod wire;

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::schedule::lower::{Handoff, Payload};
use crate::schedule::Op;
use crate::trace::Span;

/// What a message is: one hand-off of the lowered schedule. Unique within an epoch, so a
/// transport between processes can derive its message tags from it (payload, the addressee's
/// chunk and stage, the sender's chunk and stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// What it carries.
    pub payload: Payload,
    /// The op it is addressed to.
    pub to: Op,
    /// The chunk of the op that sent it (graph parallelism: the sending partition).
    pub from_chunk: u32,
    /// The stage of the op that sent it (GNNPipe's hybrid: its lane, a layer of a partition).
    pub from_stage: u32,
}

impl Tag {
    /// The tag of `handoff`'s message.
    pub fn of(handoff: &Handoff) -> Self {
        Tag {
            payload: handoff.payload,
            to: handoff.to,
            from_chunk: handoff.from.chunk,
            from_stage: handoff.from.stage,
        }
    }
}

/// Checks a group an all-reduce is started over: distinct ranks below `n_ranks`, `rank` among
/// them.
pub(super) fn check_group(group: &[usize], rank: usize, n_ranks: usize) -> candle_core::Result<()> {
    let distinct = group
        .iter()
        .enumerate()
        .all(|(i, r)| !group[..i].contains(r));
    if !group.contains(&rank) || !distinct || group.iter().any(|&r| r >= n_ranks) {
        candle_core::bail!(
            "rank {rank} offers to an all-reduce among ranks {group:?} of {n_ranks}"
        );
    }
    Ok(())
}

/// A message as it was received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which hand-off it is.
    pub tag: Tag,
    /// The data, on the sender's device (the receiver copies it onto its own).
    pub tensor: Tensor,
    /// When it may be used: once the (emulated) links have carried it, in ns from the epoch's
    /// start on the sender's clock. A receiver in another process waits until its own clock
    /// reads as much, so that no op is measured starting before its data arrived.
    pub ready_ns: u64,
}

/// One rank's endpoint: tagged point-to-point messages of tensors, a barrier over every rank,
/// and a summing all-reduce over a group of ranks (every rank, or a stage's group in GNNPipe's
/// hybrid).
///
/// Every wait returns an error once the run is called off ([`Transport::abort`], on any rank),
/// so a failing worker never leaves the others waiting for it.
pub trait Transport: Send {
    /// This endpoint's rank: the schedule device it serves.
    fn rank(&self) -> usize;

    /// How many ranks take part.
    fn n_ranks(&self) -> usize;

    /// Sends `tensor` under `tag` to rank `to` without waiting for the receiver, and returns
    /// the transfer as the links carry it: one span per hop of the route, with its bytes, timed
    /// from `epoch_start` (none between ranks on one device).
    fn send(
        &mut self,
        to: usize,
        tag: Tag,
        tensor: &Tensor,
        epoch_start: Instant,
    ) -> candle_core::Result<Vec<Span>>;

    /// A message that has arrived, if any, without waiting.
    fn try_recv(&mut self) -> candle_core::Result<Option<Received>>;

    /// The next message to arrive, waiting at most `timeout`: `None` when none came.
    fn recv_timeout(&mut self, timeout: Duration) -> candle_core::Result<Option<Received>>;

    /// Waits until every rank has called it.
    fn barrier(&mut self) -> candle_core::Result<()>;

    /// Offers this rank's `tensors` to an all-reduce among the ranks of `group` (distinct,
    /// this one among them, every member naming the same group in the same order) and returns
    /// at once; every member offers tensors of the same shapes, in the same order. A rank takes
    /// part in one all-reduce at a time, and every rank joins its all-reduces in the same order
    /// as the other members of each; all-reduces of different groups may run at once.
    fn start_all_reduce(
        &mut self,
        group: &[usize],
        tensors: Vec<Tensor>,
    ) -> candle_core::Result<()>;

    /// Waits for every member's offer to the all-reduce this rank started and returns the
    /// sums on `device`, added in the group's order, so that every member holds bit-identical
    /// results.
    fn finish_all_reduce(&mut self, device: &Device) -> candle_core::Result<Vec<Tensor>>;

    /// Calls the run off on every rank.
    fn abort(&self);

    /// Whether the ranks are processes of their own, each with its own coordinator, that meet
    /// through [`Transport::barrier`] and report through [`Transport::gather`]; false for
    /// threads of one process, which share one coordinator.
    fn across_processes(&self) -> bool {
        false
    }

    /// Hands `bytes` to rank 0: there, every rank's bytes in rank order; elsewhere `None`.
    fn gather(&mut self, bytes: Vec<u8>) -> candle_core::Result<Option<Vec<Vec<u8>>>> {
        let _ = bytes;
        candle_core::bail!("this transport's ranks report to one coordinator in their process")
    }
}
