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
//! --simulate`, `proptest`) take this path; switches that two senders share, collectives and
//! shared GPUs take the event loop.

use super::engine::{compute_span, memory_at_end, memory_at_start, send_on_links, SimInput};
use super::SimError;
use crate::network::Route;
use crate::schedule::lower::{Lowered, Payload, Release};
use crate::schedule::Op;
use crate::trace::{MemoryCategory, MemoryEvent, TraceSink};

/// One release as the pass reads it: plain integers, in the order of [`Lowered::release_at`].
#[derive(Clone, Copy)]
struct Hop {
    /// The addressee's position.
    to: u32,
    /// Its route's pair (an index into [`Plan::pairs`]), `u32::MAX` for a local release.
    pair: u32,
    /// The gate it goes through, `u32::MAX` for none.
    gate: u32,
}

/// What the pass reads besides the input: every release flattened, and the route of every
/// pair of schedule devices that hand off, found once.
pub(super) struct Plan<'a> {
    hops: Vec<Hop>,
    /// Per distinct (sender, receiver) pair: its route, and the receiving network device.
    pairs: Vec<(Route<'a>, u32)>,
}

/// The pass's plan for `input` when the pass gives the event loop's answer (no shared
/// processor, no all-reduce, and no directed link that hand-offs from two network devices
/// cross); `None` when it does not.
///
/// # Complexity
/// O(releases + pairs x route length) time, O(releases + links) memory (and a table of 256²
/// pairs).
pub(super) fn plan<'a>(input: &SimInput<'a>, lowered: &Lowered) -> Option<Plan<'a>> {
    let n = lowered.n_devices();
    if input.compute_slots.is_some() {
        return None;
    }
    // The pairs of schedule devices that hand off to each other, each numbered once (in a
    // table up to 256 devices, beyond in a map).
    let mut pair_index = vec![u32::MAX; if n <= 256 { n * n } else { 0 }];
    let mut numbered: std::collections::HashMap<usize, u32> = std::collections::HashMap::new();
    let mut pairs: Vec<(Route<'a>, u32)> = Vec::new();
    // Per directed link, the network device whose hand-offs cross it: a second one, and the
    // pass is off (found at the first pair that shares, before the rest is read).
    let mut sender_of = vec![usize::MAX; input.network.links().len()];
    let mut hops = Vec::with_capacity(lowered.n_releases());
    for position in 0..lowered.ops().len() as u32 {
        for index in lowered.release_range(position) {
            let (to, gate) = match lowered.release_at(index) {
                Release::Local { to } => {
                    hops.push(Hop {
                        to,
                        pair: u32::MAX,
                        gate: u32::MAX,
                    });
                    continue;
                }
                Release::Gated {
                    payload: Payload::Weights,
                    ..
                } => return None,
                Release::Gated { to, gate, .. } => (to, gate),
                Release::Direct { to, .. } => (to, u32::MAX),
            };
            let (a, b) = lowered.endpoints_at(position, index);
            let key = lowered.device_of(a) * n + lowered.device_of(b);
            let next = pairs.len() as u32;
            let slot = match pair_index.get_mut(key) {
                Some(slot) => slot,
                None => numbered.entry(key).or_insert(u32::MAX),
            };
            if *slot == u32::MAX {
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
                pairs.push((route, receiver as u32));
            }
            hops.push(Hop {
                to,
                pair: *slot,
                gate,
            });
        }
    }
    Some(Plan { hops, pairs })
}

/// One position's state in the pass, kept together: the pass reads it where the op's producers
/// count it in, on other devices.
#[derive(Clone, Copy)]
struct Slot {
    /// The latest arrival among its inputs counted in so far.
    ready_ns: u64,
    /// Communication bytes held until the op ends.
    held: u64,
    /// Inputs not yet counted in.
    remaining: u32,
    /// Its schedule device.
    device: u32,
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
    /// ends, and it counts in at the addressee or at its gate.
    fn arrive(&mut self, hop: Hop, at: u64, bytes: u64, walking: usize) {
        let slot = &mut self.slots[hop.to as usize];
        slot.held += bytes;
        let receiver = slot.device as usize;
        self.memory(receiver, at, MemoryCategory::Communication, bytes as i64);
        if hop.gate == u32::MAX {
            return self.release(hop.to, at, walking);
        }
        let g = hop.gate as usize;
        self.gate_ns[g] = self.gate_ns[g].max(at);
        self.gate_remaining[g] -= 1;
        if self.gate_remaining[g] == 0 {
            let opened = self.gate_ns[g];
            for i in 0..self.lowered.gate_members(hop.gate).len() {
                let member = self.lowered.gate_members(hop.gate)[i];
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
            if position == end_position || self.slots[position as usize].remaining > 0 {
                return;
            }
            self.next[device] = position + 1;
            let op = self.lowered.op(position);
            let cost = self.input.cost;
            let start = self.free_ns[device].max(self.slots[position as usize].ready_ns);
            let (activations, halo) = memory_at_start(cost, op);
            self.memory(device, start, MemoryCategory::Activations, activations);
            self.memory(device, start, MemoryCategory::Halo, halo);
            // Saturating: a time past u64 stays at its end, for the caller to refuse.
            let end = start.saturating_add(cost.op_ns(op));
            self.free_ns[device] = end;
            self.sink.span(compute_span(placed, op, start, end));
            let (activations, halo) = memory_at_end(cost, op);
            self.memory(device, end, MemoryCategory::Activations, activations);
            self.memory(device, end, MemoryCategory::Halo, halo);
            let held = std::mem::take(&mut self.slots[position as usize].held);
            self.memory(device, end, MemoryCategory::Communication, -(held as i64));
            for index in self.lowered.release_range(position) {
                let hop = self.plan.hops[index];
                if hop.pair == u32::MAX {
                    self.release(hop.to, end, device);
                } else {
                    self.send(position, index, hop, end, device);
                }
            }
        }
    }

    /// Sends the hand-off at release `index` of the op at `from`, which ended at `now`.
    fn send(&mut self, from: u32, index: usize, hop: Hop, now: u64, walking: usize) {
        let (route, receiver) = self.plan.pairs[hop.pair as usize];
        if route.links.is_empty() {
            return self.arrive(hop, now, 0, walking);
        }
        let handoff = self
            .lowered
            .handoff(from, self.lowered.release_at(index))
            .expect("only hand-offs are sent");
        let (end, bytes) = send_on_links(
            self.sink,
            self.input.cost,
            &route,
            &mut self.link_free,
            &handoff,
            receiver,
            now,
        );
        self.arrive(hop, end, bytes, walking);
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
    plan: &Plan<'_>,
    sink: &mut S,
) -> Result<(), SimError> {
    let n_devices = lowered.n_devices();
    let mut slots = Vec::with_capacity(lowered.ops().len());
    for device in 0..n_devices {
        let positions = lowered.positions(device);
        slots.extend(
            lowered.inputs()[positions.start as usize..positions.end as usize]
                .iter()
                .map(|&remaining| Slot {
                    ready_ns: 0,
                    held: 0,
                    remaining,
                    device: device as u32,
                }),
        );
    }
    let mut pass = Pass {
        input,
        lowered,
        plan,
        sink,
        slots,
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
