//! The simulation as one pass in dependency order, with no event queue, where time order does
//! not change the answer.
//!
//! The event loop orders events by time because three things depend on that order: which of
//! several senders gets a shared link first, which device gets a shared processor first, and
//! how a collective's steps interleave on the links. Take them away (no shared processor, no
//! all-reduce, and no directed link carrying hand-offs from two network devices) and every
//! time is a function of the ops before it alone: an op
//! starts at the later of its device's previous end and its inputs' arrivals, and a transfer
//! starts when its sender's earlier transfers on the same links have left, which the sender's
//! own order fixes. The pass then walks the lowered schedule as the checker does (a device
//! issues ops while their inputs are counted in, and hands the walk on when it waits),
//! computing each op's start and end as it goes. It finds the same spans and memory events as
//! the event loop, at the same times; it pushes them in another order (by device, as it walks),
//! which [`crate::trace::TraceSink`] allows.
//!
//! Pipelines on point-to-point links (chains, full meshes, a free network: `schedule
//! --simulate`, `proptest`) take this path; switches that two senders share, collectives,
//! shared GPUs and contention take the event loop.

use std::collections::HashMap;

use super::engine::{compute_span, memory_at_end, memory_at_start, send_on_links, SimInput};
use super::SimError;
use crate::network::Route;
use crate::schedule::lower::{Handoff, Lowered, Payload, Release};
use crate::schedule::{Op, OpKind};
use crate::trace::{MemoryCategory, MemoryEvent, TraceSink};

/// What the pass reads besides the input: every op's [`Slot`], the route of every pair of
/// schedule devices that hand off, found once, and how to find a pair's number.
pub(super) struct Plan<'a> {
    /// Per position.
    slots: Vec<Slot>,
    /// Per distinct (sender, receiver) pair: its route, and the receiving network device.
    pairs: Vec<(Route<'a>, u32)>,
    /// Pair numbers by `sender x devices + receiver`: in a table up to 256 devices, beyond in a
    /// map.
    n_devices: usize,
    table: Vec<u32>,
    map: HashMap<usize, u32>,
    /// Some hand-offs travel between the devices of other ops than their producer and addressee
    /// (GNNPipe's hybrid: [`Lowered::endpoints_at`]).
    relays: bool,
}

impl Plan<'_> {
    /// The number of the pair from schedule device `a` to `b`, which [`plan`] found.
    fn pair(&self, a: usize, b: usize) -> usize {
        let key = a * self.n_devices + b;
        let number = match self.table.get(key) {
            Some(&number) => number,
            None => self.map.get(&key).copied().unwrap_or(u32::MAX),
        };
        debug_assert!(
            number != u32::MAX,
            "the plan numbered every pair that hands off"
        );
        number as usize
    }
}

/// The pass's plan for `input` when the pass gives the event loop's answer (no shared
/// processor, no contention, no all-reduce, and no directed link that hand-offs from two
/// network devices cross); `None` when it does not.
///
/// # Complexity
/// O(releases + pairs x route length) time, O(ops + pairs + links) memory (and a table of
/// 256² pairs).
pub(super) fn plan<'a>(input: &SimInput<'a>, lowered: &Lowered) -> Option<Plan<'a>> {
    let n = lowered.n_devices();
    if input.compute_slots.is_some() || input.contention.is_some() {
        return None;
    }
    let mut plan = Plan {
        slots: Vec::with_capacity(lowered.ops().len()),
        pairs: Vec::new(),
        n_devices: n,
        table: vec![u32::MAX; if n <= 256 { n * n } else { 0 }],
        map: HashMap::new(),
        relays: lowered.relays(),
    };
    // Per directed link, the network device whose hand-offs cross it: a second one, and the
    // pass is off (found at the first pair that shares, before the rest is read).
    let mut sender_of = vec![usize::MAX; input.network.links().len()];
    // Per position, how many of its inputs its device's order implies.
    let mut implied = vec![0u32; lowered.ops().len()];
    for device in 0..n {
        let positions = lowered.positions(device);
        for position in positions.clone() {
            let mut made = lowered.release_range(position);
            // The leading results to ops later on the same device follow from its order.
            for &release in lowered.releases(position) {
                match release {
                    Release::Local { to } if to > position && to < positions.end => {
                        implied[to as usize] += 1;
                        made.start += 1;
                    }
                    _ => break,
                }
            }
            for index in made.clone() {
                match lowered.release_at(index) {
                    Release::Local { .. } => continue,
                    Release::Gated {
                        payload: Payload::Weights,
                        ..
                    } => return None,
                    Release::Gated { .. } | Release::Direct { .. } => {}
                }
                let (a, b) = lowered.endpoints_at(position, index);
                let key = lowered.device_of(a) * n + lowered.device_of(b);
                let next = plan.pairs.len() as u32;
                let slot = match plan.table.get_mut(key) {
                    Some(slot) => slot,
                    None => plan.map.entry(key).or_insert(u32::MAX),
                };
                if *slot != u32::MAX {
                    continue;
                }
                *slot = next;
                let (sender, receiver) = (input.placement[key / n], input.placement[key % n]);
                let route = input.network.route(sender, receiver);
                for &link in route.links.iter() {
                    match sender_of[link] {
                        usize::MAX => sender_of[link] = sender,
                        other if other == sender => {}
                        _ => return None,
                    }
                }
                plan.pairs.push((route, receiver as u32));
            }
            let one = (made.len() == 1).then(|| lowered.release_at(made.start));
            let (made, a) = match one {
                _ if made.is_empty() => (Made::Nothing, 0),
                Some(Release::Local { to }) => (Made::Local, to),
                Some(Release::Direct { to, payload }) if !plan.relays => {
                    (Made::Handoff(payload), to)
                }
                _ => (Made::Several, made.start as u32),
            };
            let op = lowered.op(position);
            // The ops earlier on this device whose results it uses have all been read.
            plan.slots.push(Slot {
                ready_ns: 0,
                held: 0,
                chunk: op.chunk,
                stage: op.stage,
                kind: op.kind,
                remaining: lowered.inputs()[position as usize] - implied[position as usize],
                device: device as u32,
                made,
                a,
            });
        }
    }
    Some(plan)
}

/// One position's state in the pass, with what the pass reads of its op, kept together (in 40
/// bytes): a device's walk reads one stream of these, and an op's producers on other devices
/// the addressee's.
#[derive(Clone, Copy)]
struct Slot {
    /// The latest arrival among its inputs counted in so far.
    ready_ns: u64,
    /// Communication bytes held until the op ends.
    held: u64,
    /// The op, its fields side by side with the rest.
    chunk: u32,
    stage: u32,
    kind: OpKind,
    /// Inputs not yet counted in.
    remaining: u32,
    /// Its schedule device.
    device: u32,
    /// The releases its end makes, with [`Made`]'s number.
    made: Made,
    a: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 40);

impl Slot {
    fn op(&self) -> Op {
        Op {
            kind: self.kind,
            chunk: self.chunk,
            stage: self.stage,
        }
    }
}

/// The releases an op's end makes, besides the results its own device uses later in its list:
/// those the device's order implies (the user starts after the op ends), which are neither
/// counted nor made.
#[derive(Clone, Copy)]
enum Made {
    /// None.
    Nothing,
    /// One: its result to the op at position `a`, on the same device.
    Local,
    /// One: a hand-off of this payload to the op at position `a`, through no gate.
    Handoff(Payload),
    /// The releases from index `a` to the op's last in the lowering (always, where hand-offs
    /// relay: [`Plan::relays`]).
    Several,
}

/// The pass's state besides the input.
struct Pass<'a, S: TraceSink> {
    input: &'a SimInput<'a>,
    lowered: &'a Lowered,
    plan: &'a Plan<'a>,
    sink: &'a mut S,
    /// Per position.
    slots: Vec<Slot>,
    /// Per gate: hand-offs not yet in, and the latest arrival among those that are.
    gate_remaining: Vec<u32>,
    gate_ns: Vec<u64>,
    /// Per schedule device: its next position, and when its last op ended.
    next: Vec<u32>,
    free_ns: Vec<u64>,
    /// Per directed link: when it is next free.
    link_free: Vec<u64>,
    /// Devices whose next op may have become ready.
    work: Vec<usize>,
}

impl<S: TraceSink> Pass<'_, S> {
    fn memory(&mut self, device: usize, time_ns: u64, category: MemoryCategory, delta: i64) {
        if delta != 0 {
            self.sink.memory(MemoryEvent {
                device: self.input.placement[device] as u32,
                time_ns,
                category,
                delta_bytes: delta,
            });
        }
    }

    /// One input of the op at `to` is in at `at`.
    fn release(&mut self, to: u32, at: u64, walking: usize) {
        let slot = &mut self.slots[to as usize];
        slot.ready_ns = slot.ready_ns.max(at);
        slot.remaining -= 1;
        if slot.remaining == 0 {
            let device = slot.device as usize;
            if device != walking && self.next[device] == to {
                self.work.push(device);
            }
        }
    }

    /// A hand-off's data is on its receiver at `at`: its buffer is held until the addressee
    /// `to` ends, and it counts in at the addressee or at its gate (`u32::MAX`: none).
    fn arrive(&mut self, to: u32, gate: u32, at: u64, bytes: u64, walking: usize) {
        let slot = &mut self.slots[to as usize];
        slot.held += bytes;
        let receiver = slot.device as usize;
        self.memory(receiver, at, MemoryCategory::Communication, bytes as i64);
        if gate == u32::MAX {
            return self.release(to, at, walking);
        }
        let g = gate as usize;
        self.gate_ns[g] = self.gate_ns[g].max(at);
        self.gate_remaining[g] -= 1;
        if self.gate_remaining[g] == 0 {
            let opened = self.gate_ns[g];
            for i in 0..self.lowered.gate_members(gate).len() {
                let member = self.lowered.gate_members(gate)[i];
                self.release(member, opened, walking);
            }
        }
    }

    /// Runs device `device`'s ops from its next one while their inputs are in.
    fn walk(&mut self, device: usize) {
        let end_position = self.lowered.positions(device).end;
        let placed = self.input.placement[device] as u32;
        loop {
            let position = self.next[device];
            if position == end_position {
                return;
            }
            let slot = self.slots[position as usize];
            if slot.remaining > 0 {
                return;
            }
            self.next[device] = position + 1;
            let op = slot.op();
            let cost = self.input.cost;
            let start = self.free_ns[device].max(slot.ready_ns);
            let (activations, halo, workspace) = memory_at_start(cost, op);
            self.memory(device, start, MemoryCategory::Activations, activations);
            self.memory(device, start, MemoryCategory::Halo, halo);
            self.memory(device, start, MemoryCategory::Workspace, workspace);
            // Saturating: a time past u64 stays at its end, for the caller to refuse.
            let end = start.saturating_add(cost.op_ns(op));
            self.free_ns[device] = end;
            self.sink.span(compute_span(placed, op, start, end));
            let (activations, halo, workspace) = memory_at_end(cost, op);
            self.memory(device, end, MemoryCategory::Activations, activations);
            self.memory(device, end, MemoryCategory::Halo, halo);
            self.memory(device, end, MemoryCategory::Workspace, workspace);
            self.memory(
                device,
                end,
                MemoryCategory::Communication,
                -(slot.held as i64),
            );
            match slot.made {
                Made::Nothing => {}
                Made::Local => self.release(slot.a, end, device),
                Made::Handoff(payload) => {
                    self.send(position, u32::MAX, (slot.a, payload, u32::MAX), end, device)
                }
                Made::Several => {
                    let last = self.lowered.release_range(position).end as u32;
                    for index in slot.a..last {
                        match self.lowered.release_at(index as usize) {
                            Release::Local { to } => self.release(to, end, device),
                            Release::Direct { to, payload } => {
                                self.send(position, index, (to, payload, u32::MAX), end, device)
                            }
                            Release::Gated { to, payload, gate } => {
                                self.send(position, index, (to, payload, gate), end, device)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sends the hand-off at release `index` of the op at `from` (addressed to the op at `to`,
    /// into `gate`), which ended at `now` on device `walking`. The index is read only where
    /// hand-offs relay.
    fn send(
        &mut self,
        from: u32,
        index: u32,
        (to, payload, gate): (u32, Payload, u32),
        now: u64,
        walking: usize,
    ) {
        let (a, b) = match self.plan.relays {
            true => {
                let (a, b) = self.lowered.endpoints_at(from, index as usize);
                (self.lowered.device_of(a), self.lowered.device_of(b))
            }
            false => (walking, self.slots[to as usize].device as usize),
        };
        let (route, receiver) = self.plan.pairs[self.plan.pair(a, b)];
        if route.links.is_empty() {
            return self.arrive(to, gate, now, 0, walking);
        }
        let handoff = Handoff {
            payload,
            from: self.slots[from as usize].op(),
            to: self.slots[to as usize].op(),
        };
        let (end, bytes) = send_on_links(
            self.sink,
            self.input.cost,
            &route,
            &mut self.link_free,
            &handoff,
            receiver,
            now,
        );
        self.arrive(to, gate, end, bytes, walking);
    }
}

/// Runs the schedule in one pass (the caller has made its [`plan`] and pushed the resident
/// memory), and pushes every span and memory event into `sink`.
///
/// # Complexity
/// O(ops + hand-offs x route length) time, O(ops) memory besides the sink's.
pub(super) fn run<S: TraceSink>(
    input: &SimInput<'_>,
    lowered: &Lowered,
    mut plan: Plan<'_>,
    sink: &mut S,
) -> Result<(), SimError> {
    let n_devices = lowered.n_devices();
    let slots = std::mem::take(&mut plan.slots);
    let mut pass = Pass {
        input,
        lowered,
        sink,
        slots,
        plan: &plan,
        gate_remaining: lowered.gate_inputs().to_vec(),
        gate_ns: vec![0; lowered.gate_inputs().len()],
        next: (0..n_devices).map(|d| lowered.positions(d).start).collect(),
        free_ns: vec![0; n_devices],
        link_free: vec![0; input.network.links().len()],
        work: (0..n_devices).rev().collect(),
    };
    while let Some(device) = pass.work.pop() {
        pass.walk(device);
    }
    let blocked: Vec<(usize, Op)> = (0..n_devices)
        .filter(|&d| pass.next[d] < lowered.positions(d).end)
        .map(|d| (d, lowered.op(pass.next[d])))
        .collect();
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(SimError::Stalled(blocked))
    }
}
