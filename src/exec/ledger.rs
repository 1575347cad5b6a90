//! The measurement ledger: what a worker records of an epoch. Its memory as it evolves (the
//! buffers it knows exactly, the received data waiting to be used, and, from the counting
//! allocator or the GPU's used bytes, activations as the rest), and the span of each op it runs.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::crew::{Cores, Turn};
use super::device::synchronize;
use super::memory;
use crate::schedule::Op;
use crate::trace::{MemoryCategory, MemoryEvent, Span, SpanKind};

/// A worker's memory as it evolves through an epoch: the buffers it knows exactly, the received
/// data waiting to be used, and (from the allocator, or the GPU's used bytes) activations as the
/// rest.
pub(super) struct Ledger {
    slot: usize,
    /// On a GPU: what the device reports.
    gpu: Option<memory::DeviceMeter>,
    device: u32,
    known: [i64; MemoryCategory::ALL.len()],
    /// Allocated bytes at the epoch's start beyond the known buffers.
    workspace: i64,
    pub events: Vec<MemoryEvent>,
    /// The shared cores an op takes a turn on, and the turn of the op under way.
    cores: Option<Arc<Cores>>,
    turn: Option<Turn>,
}

impl Ledger {
    pub(super) fn new(slot: usize, device: u32, gpu: Option<memory::DeviceMeter>) -> Self {
        Ledger {
            slot,
            gpu,
            device,
            known: [0; MemoryCategory::ALL.len()],
            workspace: 0,
            events: Vec::new(),
            cores: None,
            turn: None,
        }
    }

    /// Ops take turns on `cores` (where the workers' threads outnumber them): each from
    /// [`Ledger::op_starts`] to [`Ledger::op_ends`].
    pub(super) fn sharing(mut self, cores: Option<Arc<Cores>>) -> Self {
        self.cores = cores;
        self
    }

    fn emit(&mut self, time_ns: u64, category: MemoryCategory, delta_bytes: i64) {
        if delta_bytes != 0 {
            self.events.push(MemoryEvent {
                device: self.device,
                time_ns,
                category,
                delta_bytes,
            });
        }
    }

    /// Starts an epoch with the resident buffers: everything else allocated now is workspace.
    pub(super) fn start(&mut self, resident: &[(MemoryCategory, u64)]) -> candle_core::Result<()> {
        self.events.clear();
        self.known = [0; MemoryCategory::ALL.len()];
        for &(category, bytes) in resident {
            self.known[category.index()] += bytes as i64;
        }
        let explained: i64 = self.known.iter().sum();
        let live = match self.gpu.as_mut() {
            Some(gpu) => gpu.start(explained),
            None => {
                memory::take_peak(self.slot);
                memory::current(self.slot)
            }
        };
        self.workspace = (live - explained).max(0);
        self.known[MemoryCategory::Workspace.index()] = self.workspace;
        for category in MemoryCategory::ALL {
            let bytes = self.known[category.index()];
            self.emit(0, category, bytes);
        }
        Ok(())
    }

    /// A known buffer changed size.
    pub(super) fn change(&mut self, time_ns: u64, category: MemoryCategory, delta: i64) {
        self.known[category.index()] += delta;
        self.emit(time_ns, category, delta);
    }

    /// An op starts on `device` once its queued work is done and it has its turn on shared
    /// cores: samples the memory it starts from and returns the start (`epoch_start` is time 0
    /// of the memory events).
    pub(super) fn op_starts(
        &mut self,
        device: &Device,
        epoch_start: Instant,
    ) -> candle_core::Result<Instant> {
        synchronize(device)?;
        if let (Some(cores), None) = (&self.cores, &self.turn) {
            self.turn = Some(cores.take());
        }
        let began = Instant::now();
        if let Some(gpu) = self.gpu.as_mut() {
            gpu.mark()?;
        }
        self.sample(began.duration_since(epoch_start).as_nanos() as u64)?;
        Ok(began)
    }

    /// An op (and its sends) ended at `time_ns`: samples the memory it leaves and gives its turn
    /// on shared cores back.
    pub(super) fn op_ends(&mut self, time_ns: u64) -> candle_core::Result<()> {
        let sampled = self.sample(time_ns);
        self.give_turn_back();
        sampled
    }

    /// Gives the op's turn on shared cores back, if it holds one, before [`Ledger::op_ends`]:
    /// a worker never waits for another holding a turn, which the other may be queued for (the
    /// hybrid's backward waits for the gradients it relays after its compute).
    pub(super) fn give_turn_back(&mut self) {
        self.turn = None;
    }

    /// Whether an op holds a turn on shared cores.
    #[cfg(test)]
    pub(super) fn holds_turn(&self) -> bool {
        self.turn.is_some()
    }

    /// Samples the allocator (or the GPU): activations are what it holds beyond everything
    /// known. The allocator's peak since the last sample, if higher, shows as workspace one
    /// nanosecond long.
    pub(super) fn sample(&mut self, time_ns: u64) -> candle_core::Result<()> {
        let (live, peak) = match self.gpu.as_mut() {
            Some(gpu) => {
                let live = gpu.live()?;
                (live, live)
            }
            None => (memory::current(self.slot), memory::take_peak(self.slot)),
        };
        self.record(time_ns, live, peak);
        Ok(())
    }

    /// Records a sample: `live` bytes now, at most `peak` since the last sample.
    fn record(&mut self, time_ns: u64, live: i64, peak: i64) {
        let activations = MemoryCategory::Activations.index();
        let others: i64 = self
            .known
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != activations)
            .map(|(_, b)| b)
            .sum();
        let now = (live - others).max(0);
        let delta = now - self.known[activations];
        // What an op allocated and freed again before its end (its temporaries) is workspace
        // for that moment, on top of the higher of the memory before the op and after it: an
        // op that frees a stash at its end peaked while it still held it, one that keeps a
        // new stash peaked holding it (then shown 1 ns early).
        let shown: i64 = self.known.iter().sum();
        let spike = if peak > live {
            (peak - shown.max(live)).max(0)
        } else {
            0
        };
        let early = spike > 0 && time_ns > 0;
        if early && delta > 0 {
            self.change(time_ns - 1, MemoryCategory::Activations, delta);
        }
        if early {
            self.emit(time_ns - 1, MemoryCategory::Workspace, spike);
            self.emit(time_ns, MemoryCategory::Workspace, -spike);
        }
        if !(early && delta > 0) {
            self.change(time_ns, MemoryCategory::Activations, delta);
        }
    }
}

/// The span of `op` computed on `device` from `start_ns` to `end_ns`.
pub(super) fn compute_span(op: Op, device: u32, start_ns: u64, end_ns: u64) -> Span {
    Span {
        kind: SpanKind::Compute(op.kind),
        hop: 0,
        lane_index: device,
        chunk: op.chunk,
        stage: op.stage,
        device,
        start_ns,
        end_ns,
        bytes: 0,
        requested_ns: start_ns,
    }
}

/// A collective's share of rank `from` (the bytes it sends in a ring all-reduce, say) as one
/// transfer span on the first link of its route to rank `to`, for `addressee`, stamped `now`:
/// the transport runs the collective itself, so the span records its bytes, not its timing.
pub(super) fn share_span(
    input: &super::input::ExecInput<'_>,
    (from, to): (usize, usize),
    addressee: Op,
    payload: crate::schedule::lower::Payload,
    bytes: u64,
    now: u64,
) -> Span {
    let (src, dst) = (input.placement[from], input.placement[to]);
    let route = input.network.route(src, dst);
    Span {
        kind: SpanKind::Transfer(payload),
        hop: 0,
        lane_index: route.links.first().map_or(0, |&l| l as u32),
        chunk: addressee.chunk,
        stage: addressee.stage,
        device: dst as u32,
        start_ns: now,
        end_ns: now,
        bytes,
        requested_ns: now,
    }
}

/// Bytes of f32 tensors.
pub(super) fn bytes_of<'t>(tensors: impl IntoIterator<Item = &'t Tensor>) -> i64 {
    tensors
        .into_iter()
        .map(|t| (t.elem_count() * 4) as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peak an epoch's events show is the allocator's, its temporaries as workspace: a
    /// forward that keeps a new stash peaks holding it; a backward that peaks while it still
    /// holds its chunk's stash, and frees the stash by its end, peaks at what it held.
    #[test]
    fn an_op_s_peak_shows_at_what_the_allocator_held() {
        let mut ledger = Ledger::new(0, 0, None);
        ledger.change(0, MemoryCategory::Parameters, 100);
        // A forward leaves 1,000 bytes of stash, and peaks 50 bytes above it.
        ledger.record(10, 1_100, 1_150);
        // The backward peaks at 1,600 (the stash and 500 of temporaries) and frees it all.
        ledger.record(20, 100, 1_600);
        // The optimizer step peaks at 150 and ends where it began.
        ledger.record(30, 100, 150);
        let total = |time: u64| -> i64 {
            ledger
                .events
                .iter()
                .filter(|e| e.time_ns <= time)
                .map(|e| e.delta_bytes)
                .sum()
        };
        let peak = ledger.events.iter().map(|e| total(e.time_ns)).max();
        assert_eq!(peak, Some(1_600));
        let workspace = |time: u64| -> i64 {
            ledger
                .events
                .iter()
                .filter(|e| e.time_ns <= time && e.category == MemoryCategory::Workspace)
                .map(|e| e.delta_bytes)
                .sum()
        };
        assert_eq!((total(9), workspace(9)), (1_150, 50));
        assert_eq!((total(10), workspace(10)), (1_100, 0));
        assert_eq!(total(19), 1_600);
        assert_eq!(workspace(19), 500);
        assert_eq!(total(20), 100);
        assert_eq!(total(29), 150);
        assert_eq!(total(30), 100);
    }
}
