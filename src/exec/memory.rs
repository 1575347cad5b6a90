//! Each stage's memory, measured by a counting allocator.
//!
//! Why an allocator rather than adding up tensor sizes: candle's autograd keeps every
//! intermediate tensor a backward needs alive through the graph hanging off a stashed output,
//! and candle does not expose that graph, so no tensor accounting can see what a stashed chunk
//! really holds. A counting allocator sees every byte. Attribution follows the thread that
//! allocated: each stage worker and the threads of its compute pool enter the stage's
//! allocation group ([`enter`]), and a freed block is subtracted from the group that allocated
//! it, wherever it is freed. A received tensor is copied by the receiver, as a transfer between
//! devices would.
//!
//! The binary installs `tracking_allocator::Allocator` as the global allocator; without it
//! (the library used on its own) nothing is counted and [`available`] says so.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Once;

use tracking_allocator::{
    AllocationGroupId, AllocationGroupToken, AllocationRegistry, AllocationTracker,
};

/// Stage slots counted at once; a run takes as many as it has stages.
const SLOTS: usize = 64;
/// Allocation groups (one per thread that entered a slot) that can be mapped to slots.
const GROUPS: usize = 8192;

static CURRENT: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static PEAK: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
/// Group id -> slot + 1 (0: not a stage's group).
static GROUP_SLOT: [AtomicUsize; GROUPS] = [const { AtomicUsize::new(0) }; GROUPS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: Once = Once::new();
static WORKS: AtomicBool = AtomicBool::new(false);

struct Counter;

fn slot_of(group: &AllocationGroupId) -> Option<usize> {
    let id = group.as_usize().get();
    let slot = GROUP_SLOT.get(id)?.load(Ordering::Relaxed);
    (slot > 0).then(|| slot - 1)
}

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, size: usize, _wrapped: usize, group: AllocationGroupId) {
        if let Some(slot) = slot_of(&group) {
            let now = CURRENT[slot].fetch_add(size as i64, Ordering::Relaxed) + size as i64;
            PEAK[slot].fetch_max(now, Ordering::Relaxed);
        }
    }

    fn deallocated(
        &self,
        _addr: usize,
        size: usize,
        _wrapped: usize,
        source: AllocationGroupId,
        _current: AllocationGroupId,
    ) {
        if let Some(slot) = slot_of(&source) {
            CURRENT[slot].fetch_sub(size as i64, Ordering::Relaxed);
        }
    }
}

/// Installs the counter (once per process) and says whether allocations are being counted.
pub fn available() -> bool {
    INSTALLED.call_once(|| {
        if AllocationRegistry::set_global_tracker(Counter).is_ok() {
            AllocationRegistry::enable_tracking();
            // Probe: a block allocated inside a slot must show up in it.
            let slot = take_slot();
            let before = current(slot);
            std::thread::spawn(move || {
                enter(slot);
                // black_box: an allocation nobody reads may be optimised away.
                let probe = std::hint::black_box(vec![1u8; 1 << 16]);
                WORKS.store(current(slot) - before >= 1 << 16, Ordering::Relaxed);
                drop(probe);
            })
            .join()
            .expect("the probe thread does not panic");
        }
    });
    WORKS.load(Ordering::Relaxed)
}

/// A fresh slot for one stage of a run, its counters at zero.
pub fn take_slot() -> usize {
    let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    CURRENT[slot].store(0, Ordering::Relaxed);
    PEAK[slot].store(0, Ordering::Relaxed);
    slot
}

/// Attributes the calling thread's allocations to `slot` for the rest of its life.
pub fn enter(slot: usize) {
    let Some(token) = AllocationGroupToken::register() else {
        return;
    };
    let id = token.id().as_usize().get();
    if let Some(entry) = GROUP_SLOT.get(id) {
        entry.store(slot + 1, Ordering::Relaxed);
        // The thread stays in the group until it ends: the token and its guard live as long.
        let token: &'static mut AllocationGroupToken = Box::leak(Box::new(token));
        std::mem::forget(token.enter());
    }
}

/// Bytes the slot's threads hold now.
pub fn current(slot: usize) -> i64 {
    CURRENT[slot].load(Ordering::Relaxed)
}

/// The highest count since the last call, which restarts the peak from the current count.
pub fn take_peak(slot: usize) -> i64 {
    let now = current(slot);
    PEAK[slot].swap(now, Ordering::Relaxed).max(now)
}

/// A GPU's memory as a worker reads it: the device's used bytes (`cuMemGetInfo`, after
/// synchronizing).
///
/// A stage is credited with the change in use across its own ops ([`DeviceMeter::mark`] at an
/// op's start, [`DeviceMeter::live`] at its end), on top of the buffers it was known to hold
/// when the epoch started. Stages sharing one GPU are told apart that way (ops of other stages
/// running at the same time blur the split), and a stage on a GPU of its own is measured the
/// same way, so that what the CUDA runtime allocates once on first use (cuBLAS's workspace,
/// loaded kernel modules, the allocator's pool) is no stage's in either case. Temporaries an
/// op frees before it ends are not seen.
pub struct DeviceMeter {
    device: candle_core::Device,
    own: OwnUse,
}

/// [`DeviceMeter`]'s arithmetic on the device's used bytes as it reads them.
#[derive(Debug, Default)]
struct OwnUse {
    own: i64,
    mark: i64,
}

impl OwnUse {
    fn start(&mut self, explained: i64) -> i64 {
        self.own = explained;
        self.own
    }

    fn mark(&mut self, used: i64) {
        self.mark = used;
    }

    fn live(&mut self, used: i64) -> i64 {
        self.own += used - self.mark;
        self.mark = used;
        self.own
    }
}

impl DeviceMeter {
    /// A meter for `device`, or none on the CPU (the allocator counts there).
    pub fn new(device: &candle_core::Device) -> candle_core::Result<Option<Self>> {
        if device.is_cpu() {
            return Ok(None);
        }
        Ok(Some(DeviceMeter {
            device: device.clone(),
            own: OwnUse::default(),
        }))
    }

    fn used(&self) -> candle_core::Result<i64> {
        super::device::synchronize(&self.device)?;
        let (free, total) = super::device::memory_info(&self.device)?.unwrap_or((0, 0));
        Ok(total as i64 - free as i64)
    }

    /// Starts an epoch holding `explained` bytes of known buffers; returns the bytes held now.
    pub fn start(&mut self, explained: i64) -> i64 {
        self.own.start(explained)
    }

    /// An op starts.
    pub fn mark(&mut self) -> candle_core::Result<()> {
        let used = self.used()?;
        self.own.mark(used);
        Ok(())
    }

    /// Bytes the stage holds now.
    pub fn live(&mut self) -> candle_core::Result<i64> {
        let used = self.used()?;
        Ok(self.own.live(used))
    }
}

#[cfg(test)]
mod tests {
    use super::OwnUse;

    /// Found on an H200: a stage alone on its GPU was measured at 130 MB against 2.3 MB
    /// predicted, because the runtime's first-use allocations (cuBLAS's workspace, kernel
    /// modules) counted as the stage's. Only the stage's own ops' changes count now, from the
    /// buffers it is known to hold at each epoch's start.
    #[test]
    fn what_the_runtime_allocates_once_is_no_stage_s() {
        let mut use_ = OwnUse::default();
        // Epoch 1: the context holds 500; the first op allocates 100 of its own and the runtime
        // 128 more that it keeps; the op's output (100) is handed on and freed later.
        assert_eq!(use_.start(40), 40);
        use_.mark(500);
        assert_eq!(use_.live(500 + 100 + 128), 40 + 228);
        // Epoch 2 starts from its known buffers again: the runtime's 128 are gone from the
        // count, and the same op now adds its own 100 alone.
        assert_eq!(use_.start(40), 40);
        use_.mark(628);
        assert_eq!(use_.live(728), 140);
        // What other stages allocate between this stage's ops (728 -> 900) is not this
        // stage's; what its op frees (20) is.
        use_.mark(900);
        assert_eq!(use_.live(880), 120);
    }
}
