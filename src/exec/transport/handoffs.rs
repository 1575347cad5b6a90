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

/// How a worker waits for a hand-off, or for a link's emulated arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::exec) enum Waiting {
    /// It keeps its core and polls until the wait is over, as a device polling for its input
    /// does: for workers in one process that have a core each. A thread that blocks for
    /// milliseconds takes tens of microseconds to wake, and its next op then runs slower
    /// (measured on a 2-core VM: a light last stage's forward 10-25% slower after a blocked
    /// wait than after a polled one). It yields its core now and then ([`Spin`]).
    Spin,
    /// It polls this long, then blocks and gives its core up: where threads outnumber the
    /// cores, or other processes (MPI ranks) may need them.
    Block { after: Duration },
}

/// How often a worker that spins checks whether the run was called off.
const SPIN_CHECK: Duration = Duration::from_millis(20);

/// A polling worker's pause between two polls: a spin, and every 50 us a yield of its core,
/// so that a thread of another process that wants the core (another run, a test beside this
/// one) gets it.
struct Spin {
    next_yield: Instant,
}

impl Spin {
    const YIELD_EVERY: Duration = Duration::from_micros(50);

    fn new() -> Self {
        Spin {
            next_yield: Instant::now() + Self::YIELD_EVERY,
        }
    }

    fn pause(&mut self) {
        let now = Instant::now();
        if now >= self.next_yield {
            std::thread::yield_now();
            self.next_yield = now + Self::YIELD_EVERY;
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Received messages waiting for the op they are addressed to.
pub(in crate::exec) struct Inbox {
    /// The receiving worker's device.
    device: Device,
    /// How [`Inbox::wait_for`] waits.
    waiting: Waiting,
    /// Tag -> (tensor, when it may be used in ns from the epoch's start).
    pending: BTreeMap<Tag, (Tensor, u64)>,
}

impl Inbox {
    pub(in crate::exec) fn new(device: Device, waiting: Waiting) -> Self {
        Inbox {
            device,
            waiting,
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
        let now = || start.elapsed().as_nanos() as u64;
        if !self.pending.contains_key(&tag) {
            ledger.give_turn_back();
        }
        match self.waiting {
            Waiting::Spin => {
                let mut check = Instant::now() + SPIN_CHECK;
                let mut spin = Spin::new();
                while !self.pending.contains_key(&tag) {
                    if let Some(message) = transport.try_recv()? {
                        self.keep(message, ledger, now())?;
                    } else if Instant::now() >= check {
                        // A zero wait reports a run that was called off.
                        if let Some(message) = transport.recv_timeout(Duration::ZERO)? {
                            self.keep(message, ledger, now())?;
                        }
                        check = Instant::now() + SPIN_CHECK;
                    } else {
                        spin.pause();
                    }
                }
            }
            Waiting::Block { after } => {
                let spin_until = Instant::now() + after;
                while !self.pending.contains_key(&tag) && Instant::now() < spin_until {
                    match transport.try_recv()? {
                        Some(message) => self.keep(message, ledger, now())?,
                        None => std::hint::spin_loop(),
                    }
                }
                while !self.pending.contains_key(&tag) {
                    if let Some(message) = transport.recv_timeout(Duration::from_millis(20))? {
                        self.keep(message, ledger, now())?;
                    }
                }
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
        wait_until(start + Duration::from_nanos(ready_ns), self.waiting);
        let now = start.elapsed().as_nanos() as u64;
        ledger.change(
            now,
            MemoryCategory::Communication,
            -((tensor.elem_count() * 4) as i64),
        );
        Ok(tensor)
    }
}

/// Sleeps (then spins) until `moment`; polls all the way, yielding, for a worker that keeps its
/// core.
fn wait_until(moment: Instant, waiting: Waiting) {
    let mut spin = Spin::new();
    loop {
        let now = Instant::now();
        if now >= moment {
            return;
        }
        let left = moment - now;
        if waiting == Waiting::Spin {
            spin.pause();
        } else if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::exec::crew::Cores;
    use crate::exec::memory;
    use crate::exec::transport::channel::ChannelTransport;
    use crate::exec::transport::links::Links;
    use crate::network::Network;
    use crate::schedule::lower::Payload;
    use crate::schedule::Op;

    fn tag(chunk: u32) -> Tag {
        Tag {
            payload: Payload::Activation,
            to: Op::forward(chunk, 1),
            from_chunk: chunk,
            from_stage: 0,
        }
    }

    /// A worker that keeps its core takes a hand-off sent while it polls, and its wait ends
    /// with an error, not a hang, once the run is called off.
    #[test]
    fn a_spinning_wait_takes_its_hand_off_and_ends_when_the_run_is_called_off(
    ) -> candle_core::Result<()> {
        let network = Network::free(vec!["dev0".into(), "dev1".into()]);
        let links = Links {
            network: &network,
            placement: &[0, 1],
            emulate: false,
        };
        let mut ranks = ChannelTransport::mesh(2, links, Arc::new(AtomicBool::new(false)));
        let (mut zero, mut one) = (ranks.remove(0), ranks.remove(0));
        let start = Instant::now();
        let mut inbox = Inbox::new(Device::Cpu, Waiting::Spin);
        let mut ledger = Ledger::new(memory::take_slot(), 1, None);
        let sent = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
        let received = std::thread::scope(|scope| {
            scope.spawn(|| -> candle_core::Result<()> {
                std::thread::sleep(Duration::from_millis(30));
                zero.send(1, tag(0), &sent, start)?;
                Ok(())
            });
            inbox.take(&mut one, tag(0), &mut ledger, start)
        })?;
        assert_eq!(received.to_vec1::<f32>()?, vec![1.0, 2.0, 3.0]);
        zero.abort();
        let called_off = inbox.take(&mut one, tag(1), &mut ledger, start);
        assert!(called_off.is_err(), "a wait on a called-off run must end");
        Ok(())
    }

    /// A worker whose op holds the only turn on shared cores and then waits for a hand-off
    /// gives the turn back first: the sender, queued for that turn, sends once it has it. (Were
    /// the turn kept, the sender would wait for it for ever; a watchdog calls the run off after
    /// 10 s, so that the test fails rather than hangs.)
    #[test]
    fn a_wait_never_holds_a_turn_on_shared_cores() -> candle_core::Result<()> {
        let network = Network::free(vec!["dev0".into(), "dev1".into()]);
        let links = Links {
            network: &network,
            placement: &[0, 1],
            emulate: false,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut ranks = ChannelTransport::mesh(2, links, stop.clone());
        let (mut zero, mut one) = (ranks.remove(0), ranks.remove(0));
        let start = Instant::now();
        let cores = Arc::new(Cores::new(1));
        let mut inbox = Inbox::new(
            Device::Cpu,
            Waiting::Block {
                after: Duration::ZERO,
            },
        );
        let mut ledger = Ledger::new(memory::take_slot(), 1, None).sharing(Some(cores.clone()));
        ledger.op_starts(&Device::Cpu, start)?;
        assert!(ledger.holds_turn());
        let sent = Tensor::new(&[4f32], &Device::Cpu)?;
        let (done, watched) = std::sync::mpsc::channel::<()>();
        let (received, held) = std::thread::scope(|scope| {
            let (cores, sent, stop) = (&cores, &sent, &stop);
            let zero = &mut zero;
            scope.spawn(move || -> candle_core::Result<()> {
                let turn = cores.take();
                zero.send(1, tag(0), sent, start)?;
                drop(turn);
                Ok(())
            });
            scope.spawn(move || {
                if watched.recv_timeout(Duration::from_secs(10)).is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
            });
            let received = inbox.take(&mut one, tag(0), &mut ledger, start);
            let held = ledger.holds_turn();
            let _ = done.send(());
            // Whatever happened, the sender gets its turn and ends.
            ledger.give_turn_back();
            (received, held)
        });
        assert!(received.is_ok(), "the wait kept the turn its sender needed");
        assert!(!held);
        Ok(())
    }
}
