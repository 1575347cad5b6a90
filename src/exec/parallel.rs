//! Graph parallelism on the executor (CAGNET 1D): every worker owns a partition and runs every
//! layer for it, exchanging halo rows at every layer and all-reducing the weight gradients.

use std::sync::mpsc::Receiver;

use super::runner::{ExecInput, Message, Shared};

/// A graph-parallel worker.
pub(super) fn work(
    _input: &ExecInput<'_>,
    _device: usize,
    _slot: usize,
    _inbox: Receiver<Message>,
    _shared: Shared,
) -> candle_core::Result<()> {
    candle_core::bail!("graph parallelism is not executable yet")
}
