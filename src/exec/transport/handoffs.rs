//! A rank's hand-offs as the lowered schedule lists them, whatever the transport: what each op
//! sends ([`outgoing`]) and receives ([`Inbound`]), and the messages that have arrived, kept
//! until the op they are addressed to takes them ([`Inbox`]). Workers read both directions from
//! here, so the checker, the simulator and the executor cannot disagree on a hand-off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::{Tag, Transport};
use crate::exec::ledger::Ledger;
use crate::schedule::lower::{Handoff, Lowered, Release};
use crate::trace::MemoryCategory;

/// What the op at `position` sends, in the order the data flow lists it, each with the rank it
/// goes to: its hand-offs, except those another op relays (GNNPipe's hybrid, where a
/// partition's rows and their gradients cross a stage boundary partition to partition: see
/// [`crate::schedule::lower::handoff_endpoints`]); a hand-off goes to the rank of the op its
/// bytes travel to, which is its addressee's unless it is relayed there.
pub(in crate::exec) fn outgoing(lowered: &Lowered, position: u32) -> Vec<(Handoff, usize)> {
    lowered
        .release_range(position)
        .filter_map(|index| {
            let release = lowered.release_at(index);
            let handoff = lowered.handoff(position, release)?;
            let (from, to) = lowered.endpoints_at(position, index);
            (from == position).then(|| (handoff, lowered.device_of(to)))
        })
        .collect()
}

/// A hand-off an op receives.
#[derive(Debug, Clone, Copy)]
pub(in crate::exec) struct Incoming {
    /// The hand-off.
    pub handoff: Handoff,
    /// The gate it goes through, if it is gated (every hand-off into the gate is awaited
    /// before the first of the gate's members runs).
    pub gate: Option<u32>,
}

impl Incoming {
    pub(in crate::exec) fn tag(&self) -> Tag {
        Tag::of(&self.handoff)
    }
}

/// What each op of one rank receives, from [`Lowered`]: the hand-offs whose bytes travel to it,
/// by sender (chunk, then stage), and per gate the hand-offs into it that this rank receives;
/// and the hand-offs of other ops it relays. A hand-off travels to its addressee, except in
/// GNNPipe's hybrid ([`crate::schedule::lower::handoff_endpoints`]): there the gradients a
/// partition computes for another's rows at a stage's first layer travel to that partition's
/// op of the same layer (listed here among that op's, addressed to another), which adds them
/// to its own gradient; and the rows a partition reads of another at a stage's first layer are
/// relayed by that partition's op of the layer once its own rows have arrived.
pub(in crate::exec) struct Inbound {
    /// Per op, by its index in the rank's list.
    per_op: Vec<Vec<Incoming>>,
    /// Per op, the hand-offs of other ops it sends on, with the rank each goes to.
    relays: Vec<Vec<(Handoff, usize)>>,
    gates: BTreeMap<u32, Vec<Tag>>,
}

impl Inbound {
    /// What the ops of `device`'s list receive and relay.
    ///
    /// # Complexity
    /// O(ops + hand-offs) of the whole schedule.
    pub(in crate::exec) fn new(lowered: &Lowered, device: usize) -> Self {
        let mine = lowered.positions(device);
        let mut per_op: Vec<Vec<Incoming>> = vec![Vec::new(); mine.len()];
        let mut relays: Vec<Vec<(Handoff, usize)>> = vec![Vec::new(); mine.len()];
        let mut gates: BTreeMap<u32, Vec<Tag>> = BTreeMap::new();
        for from in 0..lowered.ops().len() as u32 {
            for index in lowered.release_range(from) {
                let release = lowered.release_at(index);
                let gate = match release {
                    Release::Local { .. } => continue,
                    Release::Direct { .. } => None,
                    Release::Gated { gate, .. } => Some(gate),
                };
                let handoff = lowered
                    .handoff(from, release)
                    .expect("a release that is not local is a hand-off");
                let (source, target) = lowered.endpoints_at(from, index);
                if source != from && mine.contains(&source) {
                    relays[(source - mine.start) as usize]
                        .push((handoff, lowered.device_of(target)));
                }
                if !mine.contains(&target) {
                    continue;
                }
                if let Some(gate) = gate {
                    gates.entry(gate).or_default().push(Tag::of(&handoff));
                }
                per_op[(target - mine.start) as usize].push(Incoming { handoff, gate });
            }
        }
        for incoming in &mut per_op {
            incoming.sort_by_key(|i| (i.handoff.from.chunk, i.handoff.from.stage));
        }
        Inbound {
            per_op,
            relays,
            gates,
        }
    }

    /// What the rank's `index`-th op receives.
    pub(in crate::exec) fn of(&self, index: usize) -> &[Incoming] {
        &self.per_op[index]
    }

    /// The hand-offs of other ops the rank's `index`-th op sends on, each with its rank.
    pub(in crate::exec) fn relays(&self, index: usize) -> &[(Handoff, usize)] {
        &self.relays[index]
    }

    /// The hand-offs into `gate` this rank receives.
    pub(in crate::exec) fn gate(&self, gate: u32) -> &[Tag] {
        self.gates.get(&gate).map_or(&[], Vec::as_slice)
    }
}

/// Received messages waiting for the op they are addressed to.
pub(in crate::exec) struct Inbox {
    /// The receiving worker's device.
    device: Device,
    /// How long [`Inbox::wait_for`] polls before it blocks.
    poll: Duration,
    /// Tag -> (tensor, when it may be used in ns from the epoch's start).
    pending: BTreeMap<Tag, (Tensor, u64)>,
}

impl Inbox {
    pub(in crate::exec) fn new(device: Device, poll: Duration) -> Self {
        Inbox {
            device,
            poll,
            pending: BTreeMap::new(),
        }
    }

    fn keep(
        &mut self,
        message: super::Received,
        ledger: &mut Ledger,
        now_ns: u64,
    ) -> candle_core::Result<()> {
        // The receiver holds its own copy, as after a transfer between devices: on another
        // GPU (or another stream of the same one) a device-to-device copy on the receiver's
        // stream.
        let tensor = if message.tensor.device().same_device(&self.device) {
            message.tensor.copy()?
        } else {
            message.tensor.to_device(&self.device)?
        };
        let bytes = (tensor.elem_count() * 4) as i64;
        ledger.change(now_ns, MemoryCategory::Communication, bytes);
        self.pending.insert(message.tag, (tensor, message.ready_ns));
        Ok(())
    }

    /// Takes in whatever has arrived, without waiting.
    pub(in crate::exec) fn drain(
        &mut self,
        transport: &mut dyn Transport,
        ledger: &mut Ledger,
        now_ns: u64,
    ) -> candle_core::Result<()> {
        while let Some(message) = transport.try_recv()? {
            self.keep(message, ledger, now_ns)?;
        }
        Ok(())
    }

    /// Waits until the message `tag` has been received.
    pub(in crate::exec) fn wait_for(
        &mut self,
        transport: &mut dyn Transport,
        tag: Tag,
        ledger: &mut Ledger,
        start: Instant,
    ) -> candle_core::Result<()> {
        // Poll a little before blocking (`Crew::poll`): a device polling for its input picks it
        // up within a microsecond, where a blocked thread takes tens of microseconds to wake,
        // while the worker's core has nothing else to do meanwhile.
        let spin_until = Instant::now() + self.poll;
        while !self.pending.contains_key(&tag) && Instant::now() < spin_until {
            match transport.try_recv()? {
                Some(message) => {
                    let now = start.elapsed().as_nanos() as u64;
                    self.keep(message, ledger, now)?;
                }
                None => std::hint::spin_loop(),
            }
        }
        while !self.pending.contains_key(&tag) {
            if let Some(message) = transport.recv_timeout(Duration::from_millis(20))? {
                let now = start.elapsed().as_nanos() as u64;
                self.keep(message, ledger, now)?;
            }
        }
        Ok(())
    }

    /// Waits for message `tag` and its arrival, and hands it over: from now on it is the
    /// consuming op's.
    pub(in crate::exec) fn take(
        &mut self,
        transport: &mut dyn Transport,
        tag: Tag,
        ledger: &mut Ledger,
        start: Instant,
    ) -> candle_core::Result<Tensor> {
        self.wait_for(transport, tag, ledger, start)?;
        let (tensor, ready_ns) = self.pending.remove(&tag).expect("waited for above");
        wait_until(start + Duration::from_nanos(ready_ns));
        let now = start.elapsed().as_nanos() as u64;
        ledger.change(
            now,
            MemoryCategory::Communication,
            -((tensor.elem_count() * 4) as i64),
        );
        Ok(tensor)
    }
}

/// Sleeps (then spins) until `moment`.
fn wait_until(moment: Instant) {
    loop {
        let now = Instant::now();
        if now >= moment {
            return;
        }
        let left = moment - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}
