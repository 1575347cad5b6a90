//! The event loop: devices issue their lists, hand-offs cross links, memory rises and falls.

use thiserror::Error;

use super::collective::{self, Algorithm, CollectiveKind, Plan, Progress};
use super::queue::EventQueue;
use crate::cost::CostModel;
use crate::network::{Network, Route};
use crate::schedule::lower::{Handoff, Lowered, Payload, Release};
use crate::schedule::{Op, OpKind, Schedule};
use crate::trace::{
    MemoryCategory, MemoryEvent, Span, SpanKind, Trace, TraceDevice, TraceSink, TraceSource,
};

/// Everything one simulation reads.
pub struct SimInput<'a> {
    /// The schedule to interpret.
    pub schedule: &'a Schedule,
    /// For each device of the schedule, the network device that runs it.
    pub placement: &'a [usize],
    /// Op durations, hand-off sizes and memory.
    pub cost: &'a dyn CostModel,
    /// Links and routes between the network's devices.
    pub network: &'a Network,
    /// The devices of the schedule compute on one shared processor that runs this many ops at
    /// a time, a device whose op is ready waiting first-in first-out for a free slot: 1 for
    /// stages on one GPU, each on its own stream (`executor.device_map: shared`); the cores
    /// over the threads per device for CPU workers whose threads outnumber the cores
    /// (`executor.cores`). `None`: every device computes on its own; `Some(0)` reads as 1.
    pub compute_slots: Option<u32>,
    /// The schedule lowered, when the caller already has it (from [`crate::schedule::check_lowered`]);
    /// otherwise the simulation lowers it.
    pub lowered: Option<&'a Lowered>,
    /// The devices compute on one machine whose ops slow each other down while they run at
    /// once (`None`: they do not).
    pub contention: Option<Contention<'a>>,
}

/// How ops that run at the same time on one machine's cores slow each other down (they share
/// its memory system and its last-level cache): while `n` ops run, each advances at
/// `1 / slowdown[n - 1]` of its speed alone, the last entry standing for more. Every device of
/// the simulation shares the machine; an op's time is its work alone stretched by the
/// slowdown of each stretch of time it runs through (processor sharing), so an op that starts
/// beside another and outlives it speeds up when the other ends.
#[derive(Debug, Clone, Copy)]
pub struct Contention<'a> {
    /// Per number of ops running at once (1, 2, ...): the slowdown, at least 1 for one.
    pub slowdown: &'a [f64],
}

impl Contention<'_> {
    /// The slowdown while `running` ops run at once.
    pub fn at(&self, running: usize) -> f64 {
        match (running, self.slowdown.last()) {
            (0, _) | (_, None) => 1.0,
            (n, Some(&last)) => self.slowdown.get(n - 1).copied().unwrap_or(last),
        }
    }
}

/// Why a simulation could not run to the end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SimError {
    /// The placement does not match the schedule or the network.
    #[error("placement: {0}")]
    Placement(String),
    /// Some devices could not issue their next op and nothing else was pending.
    #[error("simulation stalled: {}", describe_stall(.0))]
    Stalled(Vec<(usize, Op)>),
}

fn describe_stall(blocked: &[(usize, Op)]) -> String {
    blocked
        .iter()
        .map(|(device, op)| format!("device {device} blocked at {op}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What happens at an instant, packed into the queue's `u32` payload: the low two bits say
/// which.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The running op of a device ends.
    OpEnd { device: u32 },
    /// A hand-off arrives; `slot` indexes the engine's `in_flight` slab.
    Arrival { slot: u32 },
    /// A collective's step arrives; `slot` indexes the engine's `steps_in_flight` slab.
    Step { slot: u32 },
}

impl Event {
    fn encode(self) -> u32 {
        match self {
            Event::OpEnd { device } => device << 2,
            Event::Arrival { slot } => (slot << 2) | 1,
            Event::Step { slot } => (slot << 2) | 2,
        }
    }

    fn decode(code: u32) -> Self {
        match code & 3 {
            0 => Event::OpEnd { device: code >> 2 },
            1 => Event::Arrival { slot: code >> 2 },
            _ => Event::Step { slot: code >> 2 },
        }
    }
}

/// A gate of weight gradients run as an all-reduce on the links: its members are the schedule
/// devices of the ops the gate releases.
struct Collective {
    /// Positions of the ops it releases, by member (one or more per device: the hybrid's
    /// stage steps each of its layers).
    members: Vec<Vec<u32>>,
    /// Per schedule device: its member index (`u32::MAX` if none) and the hand-offs into the
    /// gate it has yet to send before it has contributed.
    member_of: Vec<u32>,
    pending: Vec<u32>,
    /// Planned at the first contribution, when the bytes are known.
    plan: Option<(Plan, Progress)>,
}

/// A compute op's span on device `placed`.
pub(super) fn compute_span(placed: u32, op: Op, start_ns: u64, end_ns: u64) -> Span {
    Span {
        lane_index: placed,
        kind: SpanKind::Compute(op.kind),
        chunk: op.chunk,
        stage: op.stage,
        start_ns,
        end_ns,
        bytes: 0,
        hop: 0,
        device: placed,
        requested_ns: start_ns,
    }
}

/// Puts a hand-off requested at `now` on its route's links (after the transfers queued ahead
/// of it) and records its span on each.
///
/// # Returns
/// When it arrives, and its bytes.
pub(super) fn send_on_links<S: TraceSink>(
    sink: &mut S,
    cost: &dyn CostModel,
    route: &Route<'_>,
    link_free: &mut [u64],
    handoff: &Handoff,
    receiver: u32,
    requested_ns: u64,
) -> (u64, u64) {
    let bytes = cost.handoff_bytes(handoff);
    let (start_ns, end_ns) = collective::reserve(route, link_free, requested_ns, bytes);
    for (hop, &link) in route.links.iter().enumerate() {
        sink.span(Span {
            lane_index: link as u32,
            kind: SpanKind::Transfer(handoff.payload),
            chunk: handoff.to.chunk,
            stage: handoff.to.stage,
            start_ns,
            end_ns,
            bytes,
            hop: hop as u16,
            device: receiver,
            requested_ns,
        });
    }
    (end_ns, bytes)
}

/// What an op allocates when it starts: (activations, halo, workspace) bytes; a forward, its
/// chunk's stash; every op, its temporaries.
pub(super) fn memory_at_start(cost: &dyn CostModel, op: Op) -> (i64, i64, i64) {
    let transient = cost.transient(op) as i64;
    if op.kind != OpKind::Forward {
        return (0, 0, transient);
    }
    let (own, halo) = cost.stash(op);
    (own as i64, halo as i64, transient)
}

/// What an op frees (negative) when it ends: (activations, halo, workspace) bytes. A full
/// backward frees the chunk's stash; a split one frees all but what its `W` reads at `I`
/// (adding the output gradients `I` creates for it), and that at `W`; every op, its
/// temporaries.
pub(super) fn memory_at_end(cost: &dyn CostModel, op: Op) -> (i64, i64, i64) {
    let (activations, halo) = stash_freed(cost, op);
    (activations, halo, -(cost.transient(op) as i64))
}

fn stash_freed(cost: &dyn CostModel, op: Op) -> (i64, i64) {
    let forward = Op::forward(op.chunk, op.stage);
    match op.kind {
        OpKind::Backward | OpKind::InputGrad => {
            let (own, halo) = cost.stash(forward);
            let kept = match op.kind {
                OpKind::InputGrad => cost.weight_stash(forward) as i64,
                _ => 0,
            };
            (kept - own as i64, -(halo as i64))
        }
        OpKind::WeightGrad => (-(cost.weight_stash(forward) as i64), 0),
        OpKind::Forward | OpKind::Optimizer => (0, 0),
    }
}

struct Engine<'a, S: TraceSink> {
    input: &'a SimInput<'a>,
    lowered: &'a Lowered,
    sink: &'a mut S,
    queue: EventQueue,
    /// Per schedule device: the position of the next op to issue, the end of its list, and the
    /// running op's start.
    next: Vec<u32>,
    end: Vec<u32>,
    busy_since: Vec<Option<u64>>,
    /// With a shared processor: the ops it is running, and the devices waiting for it.
    shared_running: u32,
    shared_waiting: std::collections::VecDeque<usize>,
    /// Per position: inputs not yet available, and communication bytes held until the op ends.
    remaining: Vec<u32>,
    held: Vec<u64>,
    /// Per gate: gated hand-offs not yet arrived.
    gate_remaining: Vec<u32>,
    /// Per directed link: when it is next free.
    link_free: Vec<u64>,
    /// Devices to try after the current event, in the order they were touched.
    wake: Vec<usize>,
    /// Hand-offs on links (sender's position and release), with their bytes; `free_slots` lists
    /// reusable entries.
    in_flight: Vec<(Release, u64)>,
    free_slots: Vec<u32>,
    /// All-reduces, and per gate the one it runs as (`u32::MAX`: a plain gate).
    collectives: Vec<Collective>,
    gate_collective: Vec<u32>,
    /// Collective steps on links (collective, step), and reusable entries.
    steps_in_flight: Vec<(u32, u32)>,
    free_step_slots: Vec<u32>,
    /// With contention: the ops running and how far each has come.
    sharing: Option<Sharing>,
}

/// The ops running under [`Contention`]: per device, its op's work left (ns at full speed) as
/// of `since`, and its end as last scheduled (an `OpEnd` event at any other time is stale).
struct Sharing {
    running: Vec<usize>,
    left: Vec<f64>,
    since: Vec<u64>,
    end_at: Vec<u64>,
    slowdown: f64,
}

impl<S: TraceSink> Engine<'_, S> {
    fn placed(&self, device: usize) -> u32 {
        self.input.placement[device] as u32
    }

    fn memory(&mut self, device: usize, time_ns: u64, category: MemoryCategory, delta: i64) {
        if delta != 0 {
            let device = self.placed(device);
            self.sink.memory(MemoryEvent {
                device,
                time_ns,
                category,
                delta_bytes: delta,
            });
        }
    }

    /// Starts the device's next op if the device is idle and the op's inputs are there.
    fn try_issue(&mut self, device: usize, now: u64) {
        let position = self.next[device];
        if self.busy_since[device].is_some()
            || position == self.end[device]
            || self.remaining[position as usize] > 0
        {
            return;
        }
        if let Some(slots) = self.input.compute_slots {
            if self.shared_running >= slots.max(1) {
                if !self.shared_waiting.contains(&device) {
                    self.shared_waiting.push_back(device);
                }
                return;
            }
            self.shared_running += 1;
        }
        let op = self.lowered.op(position);
        let (activations, halo, workspace) = memory_at_start(self.input.cost, op);
        self.memory(device, now, MemoryCategory::Activations, activations);
        self.memory(device, now, MemoryCategory::Halo, halo);
        self.memory(device, now, MemoryCategory::Workspace, workspace);
        self.busy_since[device] = Some(now);
        let ns = self.input.cost.op_ns(op);
        let shared = self.reshare(now, |sharing| {
            sharing.running.push(device);
            sharing.left[device] = ns as f64;
            sharing.since[device] = now;
            sharing.end_at[device] = u64::MAX;
        });
        if shared {
            return;
        }
        // Saturating: a time past u64 stays at its end, for the caller to refuse, never wraps.
        let end = now.saturating_add(ns);
        let event = Event::OpEnd {
            device: device as u32,
        };
        self.queue.push(end, event.encode());
    }

    /// Under contention, changes the ops running at `now`: takes the work done since the last
    /// change off every running op's work left, applies `change`, and schedules every running
    /// op's end at the slowdown of the ops running now (an end that moved gets a new event; the
    /// old one is then stale and skipped). Returns whether there is contention.
    fn reshare(&mut self, now: u64, change: impl FnOnce(&mut Sharing)) -> bool {
        let (Some(sharing), Some(contention)) = (self.sharing.as_mut(), self.input.contention)
        else {
            return false;
        };
        for &d in &sharing.running {
            let done = (now - sharing.since[d]) as f64 / sharing.slowdown;
            sharing.left[d] = (sharing.left[d] - done).max(0.0);
            sharing.since[d] = now;
        }
        change(sharing);
        sharing.slowdown = contention.at(sharing.running.len());
        for &d in &sharing.running {
            // Saturating: a time past u64 stays at its end, for the caller to refuse.
            let end = now.saturating_add((sharing.left[d] * sharing.slowdown).ceil() as u64);
            if end != sharing.end_at[d] {
                sharing.end_at[d] = end;
                self.queue
                    .push(end, Event::OpEnd { device: d as u32 }.encode());
            }
        }
        true
    }

    /// Whether an `OpEnd` of `device` at `now` ends its running op (not a stale one, left
    /// behind when contention moved the op's end).
    fn ends_now(&self, device: usize, now: u64) -> bool {
        match &self.sharing {
            Some(sharing) => self.busy_since[device].is_some() && sharing.end_at[device] == now,
            None => true,
        }
    }

    /// Finds the gates of weight gradients (graph parallelism's and the hybrid's all-reduces)
    /// and makes each a collective whose members are the schedule devices of the ops the gate
    /// releases; a gate whose devices share a network device stays a plain gate.
    fn plan_collectives(&mut self) {
        let lowered = self.lowered;
        let n_devices = lowered.n_devices();
        for position in 0..lowered.ops().len() as u32 {
            for index in lowered.release_range(position) {
                let Release::Gated {
                    payload: Payload::Weights,
                    gate,
                    ..
                } = lowered.release_at(index)
                else {
                    continue;
                };
                let c = match self.gate_collective[gate as usize] {
                    u32::MAX => {
                        let mut members: Vec<Vec<u32>> = Vec::new();
                        let mut member_of = vec![u32::MAX; n_devices];
                        for &op in lowered.gate_members(gate) {
                            let slot = &mut member_of[lowered.device_of(op)];
                            if *slot == u32::MAX {
                                *slot = members.len() as u32;
                                members.push(Vec::new());
                            }
                            members[*slot as usize].push(op);
                        }
                        self.collectives.push(Collective {
                            members,
                            member_of,
                            pending: vec![0; n_devices],
                            plan: None,
                        });
                        let c = self.collectives.len() as u32 - 1;
                        self.gate_collective[gate as usize] = c;
                        c
                    }
                    c => c,
                };
                let sender = lowered.device_of(position);
                self.collectives[c as usize].pending[sender] += 1;
            }
        }
        // Every sender must be a member, or the collective could not know when it is done.
        for c in 0..self.collectives.len() {
            let collective = &self.collectives[c];
            let whole = (0..n_devices)
                .all(|d| collective.pending[d] == 0 || collective.member_of[d] != u32::MAX)
                && (0..n_devices)
                    .all(|d| collective.member_of[d] == u32::MAX || collective.pending[d] > 0);
            if !whole {
                for gate in self.gate_collective.iter_mut().filter(|g| **g == c as u32) {
                    *gate = u32::MAX;
                }
            }
        }
    }

    fn release(&mut self, position: u32) {
        let remaining = &mut self.remaining[position as usize];
        *remaining -= 1;
        if *remaining == 0 {
            self.wake.push(self.lowered.device_of(position));
        }
    }

    fn op_end(&mut self, device: usize, now: u64) {
        let position = self.next[device];
        let op = self.lowered.op(position);
        let start = self.busy_since[device]
            .take()
            .expect("an op ends only on a device that started it");
        self.next[device] += 1;
        if self.input.compute_slots.is_some() {
            self.shared_running -= 1;
        }
        self.reshare(now, |sharing| {
            sharing.running.retain(|&d| d != device);
            sharing.end_at[device] = u64::MAX;
        });
        let placed = self.placed(device);
        self.sink.span(compute_span(placed, op, start, now));
        let (activations, halo, workspace) = memory_at_end(self.input.cost, op);
        self.memory(device, now, MemoryCategory::Activations, activations);
        self.memory(device, now, MemoryCategory::Halo, halo);
        self.memory(device, now, MemoryCategory::Workspace, workspace);
        let held = std::mem::take(&mut self.held[position as usize]);
        self.memory(device, now, MemoryCategory::Communication, -(held as i64));
        self.wake.push(device);
        let range = self.lowered.release_range(position);
        for index in range {
            match self.lowered.release_at(index) {
                Release::Local { to } => self.release(to),
                release => self.send(position, index, release, now),
            }
        }
        // Devices already waiting for the shared processor go first, in the order they came.
        while self
            .input
            .compute_slots
            .is_some_and(|slots| self.shared_running < slots.max(1))
        {
            let Some(waiting) = self.shared_waiting.pop_front() else {
                break;
            };
            self.try_issue(waiting, now);
        }
        self.wake_all(now);
    }

    fn wake_all(&mut self, now: u64) {
        let wake = std::mem::take(&mut self.wake);
        for &d in &wake {
            self.try_issue(d, now);
        }
        self.wake = wake;
        self.wake.clear();
    }

    /// Sends a hand-off: delivered at once on the same device or over a free route, else over
    /// the route's links after any transfer queued ahead of it.
    fn send(&mut self, from: u32, index: usize, release: Release, now: u64) {
        let handoff = self
            .lowered
            .handoff(from, release)
            .expect("only hand-offs are sent");
        if let Release::Gated { gate, .. } = release {
            let c = self.gate_collective[gate as usize];
            if c != u32::MAX && self.contribute(c, from, &handoff, now) {
                return;
            }
        }
        let (a, b) = self.lowered.endpoints_at(from, index);
        let (sender, receiver) = (
            self.placed(self.lowered.device_of(a)),
            self.placed(self.lowered.device_of(b)),
        );
        let route = self.input.network.route(sender as usize, receiver as usize);
        if route.links.is_empty() {
            self.deliver(release, now, 0);
            return;
        }
        let (end, bytes) = send_on_links(
            self.sink,
            self.input.cost,
            &route,
            &mut self.link_free,
            &handoff,
            receiver,
            now,
        );
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.in_flight[slot as usize] = (release, bytes);
                slot
            }
            None => {
                self.in_flight.push((release, bytes));
                self.in_flight.len() as u32 - 1
            }
        };
        self.queue.push(end, Event::Arrival { slot }.encode());
    }

    /// The op at `from` sent its hand-off into collective `c`'s gate: once its device has sent
    /// all of them, the device contributes, and the steps that can start go on the links.
    ///
    /// # Returns
    /// Whether the collective took the hand-off (false: it cannot be planned on this
    /// placement, and the gate stays a plain gate).
    fn contribute(&mut self, c: u32, from: u32, handoff: &Handoff, now: u64) -> bool {
        let device = self.lowered.device_of(from);
        let collective = &mut self.collectives[c as usize];
        if collective.plan.is_none() {
            let members: Vec<usize> = collective
                .members
                .iter()
                .map(|ops| self.input.placement[self.lowered.device_of(ops[0])])
                .collect();
            let bytes = self.input.cost.handoff_bytes(handoff);
            let kind = CollectiveKind::AllReduce;
            match Plan::new(&kind, Algorithm::Auto, members, bytes, self.input.network) {
                Ok(plan) => {
                    let progress = Progress::new(&plan);
                    collective.plan = Some((plan, progress));
                }
                Err(_) => {
                    // Two members on one network device (a shared GPU): a plain gate.
                    for gate in self.gate_collective.iter_mut().filter(|g| **g == c) {
                        *gate = u32::MAX;
                    }
                    return false;
                }
            }
        }
        let pending = &mut collective.pending[device];
        *pending -= 1;
        if *pending > 0 {
            return true;
        }
        let member = collective.member_of[device] as usize;
        let (mut start, mut done) = (Vec::new(), Vec::new());
        if let Some((_, progress)) = collective.plan.as_mut() {
            progress.contribute(member, &mut start, &mut done);
        }
        self.advance(c, start, done, now);
        true
    }

    /// Puts collective `c`'s startable steps on the links (a step between members on one
    /// network device arrives at once) and releases the ops of members that are done.
    fn advance(&mut self, c: u32, mut start: Vec<u32>, mut done: Vec<u32>, now: u64) {
        while !start.is_empty() || !done.is_empty() {
            for member in std::mem::take(&mut done) {
                let collective = &self.collectives[c as usize];
                let ops = &collective.members[member as usize];
                let position = ops[0];
                let received = collective
                    .plan
                    .as_ref()
                    .map_or(0, |(_, progress)| progress.received(member as usize));
                let receiver = self.lowered.device_of(position);
                self.held[position as usize] += received;
                self.memory(
                    receiver,
                    now,
                    MemoryCategory::Communication,
                    received as i64,
                );
                for i in 0..self.collectives[c as usize].members[member as usize].len() {
                    let op = self.collectives[c as usize].members[member as usize][i];
                    self.release(op);
                }
            }
            for step in std::mem::take(&mut start) {
                let collective = &self.collectives[c as usize];
                let (plan, _) = collective
                    .plan
                    .as_ref()
                    .expect("steps start after planning");
                let s = plan.steps()[step as usize];
                let (sender, receiver) = (
                    plan.members()[s.from as usize],
                    plan.members()[s.to as usize],
                );
                let addressee = self.lowered.op(collective.members[s.to as usize][0]);
                let route = self.input.network.route(sender, receiver);
                if route.links.is_empty() {
                    if let Some((plan, progress)) = self.collectives[c as usize].plan.as_mut() {
                        progress.arrived(plan, step, &mut start, &mut done);
                    }
                    continue;
                }
                let (begin, end) = collective::reserve(&route, &mut self.link_free, now, s.bytes);
                for (hop, &link) in route.links.iter().enumerate() {
                    self.sink.span(Span {
                        lane_index: link as u32,
                        kind: SpanKind::Transfer(Payload::Weights),
                        chunk: addressee.chunk,
                        stage: addressee.stage,
                        start_ns: begin,
                        end_ns: end,
                        bytes: s.bytes,
                        hop: hop as u16,
                        device: receiver as u32,
                        requested_ns: now,
                    });
                }
                let slot = match self.free_step_slots.pop() {
                    Some(slot) => {
                        self.steps_in_flight[slot as usize] = (c, step);
                        slot
                    }
                    None => {
                        self.steps_in_flight.push((c, step));
                        self.steps_in_flight.len() as u32 - 1
                    }
                };
                self.queue.push(end, Event::Step { slot }.encode());
            }
        }
    }

    /// A collective's step arrived.
    fn step_arrived(&mut self, slot: u32, now: u64) {
        let (c, step) = self.steps_in_flight[slot as usize];
        self.free_step_slots.push(slot);
        let (mut start, mut done) = (Vec::new(), Vec::new());
        if let Some((plan, progress)) = self.collectives[c as usize].plan.as_mut() {
            progress.arrived(plan, step, &mut start, &mut done);
        }
        self.advance(c, start, done, now);
    }

    /// A hand-off's data is on its receiving device: hold its buffer until the addressee ends,
    /// and release the addressee (or, for a gated hand-off, the gate).
    fn deliver(&mut self, release: Release, now: u64, bytes: u64) {
        let (to, gate) = match release {
            Release::Gated { to, gate, .. } => (to, Some(gate)),
            Release::Direct { to, .. } | Release::Local { to } => (to, None),
        };
        let receiver = self.lowered.device_of(to);
        self.held[to as usize] += bytes;
        self.memory(receiver, now, MemoryCategory::Communication, bytes as i64);
        match gate {
            Some(gate) => {
                let left = &mut self.gate_remaining[gate as usize];
                *left -= 1;
                if *left == 0 {
                    for i in 0..self.lowered.gate_members(gate).len() {
                        let member = self.lowered.gate_members(gate)[i];
                        self.release(member);
                    }
                }
            }
            None => self.release(to),
        }
    }
}

/// Runs the schedule and pushes every span and memory event into `sink`: in one pass where
/// time order cannot change the answer (`sim/pass.rs`), else by the event loop.
///
/// # Complexity
/// O(n log n) in the number of ops and transfers (O(n) in one pass), O(S·K) memory besides the
/// sink's.
pub fn simulate_into<S: TraceSink>(input: &SimInput<'_>, sink: &mut S) -> Result<(), SimError> {
    run(input, sink, true)
}

/// [`simulate_into`] by the event loop even where one pass would do: the reference the pass is
/// tested against, and `pipegnn bench`'s side-by-side.
pub fn simulate_events_into<S: TraceSink>(
    input: &SimInput<'_>,
    sink: &mut S,
) -> Result<(), SimError> {
    run(input, sink, false)
}

/// Whether [`simulate_into`] runs `input` in one pass (no shared processor, no contention, no
/// all-reduce, no directed link that two senders' hand-offs cross) rather than by the event
/// loop.
pub fn takes_one_pass(input: &SimInput<'_>) -> bool {
    if input.placement.len() != input.schedule.n_devices() {
        return false;
    }
    match input.lowered {
        Some(lowered) => super::pass::plan(input, lowered).is_some(),
        None => super::pass::plan(input, &Lowered::new(input.schedule)).is_some(),
    }
}

fn run<S: TraceSink>(input: &SimInput<'_>, sink: &mut S, one_pass: bool) -> Result<(), SimError> {
    let schedule = input.schedule;
    if input.placement.len() != schedule.n_devices() {
        return Err(SimError::Placement(format!(
            "the schedule has {} devices but {} are placed",
            schedule.n_devices(),
            input.placement.len()
        )));
    }
    if let Some(&bad) = input
        .placement
        .iter()
        .find(|&&d| d >= input.network.n_devices())
    {
        return Err(SimError::Placement(format!(
            "device {bad} is placed but the network has {} devices",
            input.network.n_devices()
        )));
    }
    // Every op's inputs are counted from the same definitions the engine releases them by.
    let own;
    let lowered = match input.lowered {
        Some(lowered) => lowered,
        None => {
            own = Lowered::new(schedule);
            &own
        }
    };
    let n_devices = schedule.n_devices();
    for (device, order) in schedule.orders().iter().enumerate() {
        for (category, bytes) in input.cost.resident_bytes(order) {
            if bytes != 0 {
                sink.memory(MemoryEvent {
                    device: input.placement[device] as u32,
                    time_ns: 0,
                    category,
                    delta_bytes: bytes as i64,
                });
            }
        }
    }
    if let Some(plan) = one_pass
        .then(|| super::pass::plan(input, lowered))
        .flatten()
    {
        return super::pass::run(input, lowered, plan, sink);
    }
    let mut engine = Engine {
        input,
        sink,
        queue: EventQueue::with_capacity(2 * n_devices + 16),
        next: (0..n_devices).map(|d| lowered.positions(d).start).collect(),
        end: (0..n_devices).map(|d| lowered.positions(d).end).collect(),
        busy_since: vec![None; n_devices],
        shared_running: 0,
        shared_waiting: std::collections::VecDeque::new(),
        remaining: lowered.inputs().to_vec(),
        held: vec![0; lowered.ops().len()],
        gate_remaining: lowered.gate_inputs().to_vec(),
        link_free: vec![0; input.network.links().len()],
        wake: Vec::new(),
        in_flight: Vec::new(),
        free_slots: Vec::new(),
        collectives: Vec::new(),
        gate_collective: vec![u32::MAX; lowered.gate_inputs().len()],
        steps_in_flight: Vec::new(),
        free_step_slots: Vec::new(),
        sharing: input.contention.map(|_| Sharing {
            running: Vec::with_capacity(n_devices),
            left: vec![0.0; n_devices],
            since: vec![0; n_devices],
            end_at: vec![u64::MAX; n_devices],
            slowdown: 1.0,
        }),
        lowered,
    };
    engine.plan_collectives();
    for device in 0..n_devices {
        engine.try_issue(device, 0);
    }
    while let Some((now, code)) = engine.queue.pop() {
        match Event::decode(code) {
            Event::OpEnd { device } if engine.ends_now(device as usize, now) => {
                engine.op_end(device as usize, now)
            }
            Event::OpEnd { .. } => {}
            Event::Arrival { slot } => {
                let (release, bytes) = engine.in_flight[slot as usize];
                engine.free_slots.push(slot);
                engine.deliver(release, now, bytes);
                engine.wake_all(now);
            }
            Event::Step { slot } => {
                engine.step_arrived(slot, now);
                engine.wake_all(now);
            }
        }
    }
    let blocked: Vec<(usize, Op)> = (0..n_devices)
        .filter(|&d| engine.next[d] < engine.end[d])
        .map(|d| (d, engine.lowered.op(engine.next[d])))
        .collect();
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(SimError::Stalled(blocked))
    }
}

/// Runs `schedule` with `cost` on a network of free links, schedule device `d` on a device of
/// its own named `devd`: a schedule's timing alone, as `schedule --simulate` and
/// `pipegnn proptest` ask for it. `lowered` is the schedule's lowering, if already built.
pub fn simulate_free(
    schedule: &Schedule,
    cost: &dyn CostModel,
    lowered: Option<&Lowered>,
) -> Result<Trace, SimError> {
    let names: Vec<String> = (0..schedule.n_devices())
        .map(|d| format!("dev{d}"))
        .collect();
    let network = Network::free(names.clone());
    let placement: Vec<usize> = (0..schedule.n_devices()).collect();
    let input = SimInput {
        schedule,
        placement: &placement,
        cost,
        network: &network,
        compute_slots: None,
        lowered,
        contention: None,
    };
    let devices = names
        .into_iter()
        .map(|name| TraceDevice {
            name,
            capacity_bytes: None,
        })
        .collect();
    simulate(&input, devices)
}

/// Runs the schedule and returns its predicted trace. `devices` names the network's devices.
pub fn simulate(input: &SimInput<'_>, devices: Vec<TraceDevice>) -> Result<Trace, SimError> {
    let network = input.network;
    let links = super::trace_links(network);
    let mut trace = Trace::with_capacity(
        TraceSource::Predicted,
        devices,
        links,
        (input.schedule.n_stages(), input.schedule.n_chunks()),
        input.schedule.n_ops(),
    );
    simulate_into(input, &mut trace)?;
    Ok(trace)
}
