//! The event loop: devices issue their lists, hand-offs cross links, memory rises and falls.

use thiserror::Error;

use super::queue::EventQueue;
use crate::cost::CostModel;
use crate::network::Network;
use crate::schedule::lower::{
    for_each_gate_member, for_each_handoff, for_each_local_successor, gate_index, is_gated, Handoff,
};
use crate::schedule::{op_id, Op, OpKind, Schedule};
use crate::trace::{
    MemoryCategory, MemoryEvent, Span, SpanKind, Trace, TraceDevice, TraceLink, TraceSink,
    TraceSource,
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
    /// Every device of the schedule computes on one shared processor (`executor.device_map:
    /// shared`: stages on one GPU, each on its own stream): their ops run one at a time, a
    /// device whose op is ready waiting first-in first-out for the processor.
    pub shared_compute: bool,
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

/// What happens at an instant, packed into the queue's `u32` payload: the low bit says which.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The running op of a device ends.
    OpEnd { device: u32 },
    /// A hand-off arrives; `slot` indexes the engine's `in_flight` slab.
    Arrival { slot: u32 },
}

impl Event {
    fn encode(self) -> u32 {
        match self {
            Event::OpEnd { device } => device << 1,
            Event::Arrival { slot } => (slot << 1) | 1,
        }
    }

    fn decode(code: u32) -> Self {
        if code & 1 == 0 {
            Event::OpEnd { device: code >> 1 }
        } else {
            Event::Arrival { slot: code >> 1 }
        }
    }
}

struct Engine<'a, S: TraceSink> {
    input: &'a SimInput<'a>,
    sink: &'a mut S,
    queue: EventQueue,
    /// Per schedule device: index of the next op to issue, and the running op's start.
    next: Vec<usize>,
    busy_since: Vec<Option<u64>>,
    /// With a shared processor: whether it is running an op, and the devices waiting for it.
    shared_busy: bool,
    shared_waiting: std::collections::VecDeque<usize>,
    /// Per op id: inputs not yet available, and communication bytes held until the op ends.
    remaining: Vec<u32>,
    held: Vec<u64>,
    /// Per gate: gated hand-offs not yet arrived.
    gate_remaining: Vec<u32>,
    /// Per directed link: when it is next free.
    link_free: Vec<u64>,
    /// Devices to try after the current event, in the order they were touched.
    wake: Vec<usize>,
    /// Hand-offs on links, with their bytes; `free_slots` lists reusable entries.
    in_flight: Vec<(Handoff, u64)>,
    free_slots: Vec<u32>,
}

impl<S: TraceSink> Engine<'_, S> {
    fn id(&self, op: Op) -> usize {
        let schedule = self.input.schedule;
        op_id(op, schedule.n_chunks(), schedule.n_stages())
    }

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
        if self.busy_since[device].is_some() {
            return;
        }
        let Some(&op) = self.input.schedule.orders()[device].get(self.next[device]) else {
            return;
        };
        if self.remaining[self.id(op)] > 0 {
            return;
        }
        if self.input.shared_compute {
            if self.shared_busy {
                if !self.shared_waiting.contains(&device) {
                    self.shared_waiting.push_back(device);
                }
                return;
            }
            self.shared_busy = true;
        }
        if op.kind == OpKind::Forward {
            let (own, halo) = self.input.cost.stash(op);
            self.memory(device, now, MemoryCategory::Activations, own as i64);
            self.memory(device, now, MemoryCategory::Halo, halo as i64);
        }
        self.busy_since[device] = Some(now);
        // Saturating: a time past u64 stays at its end, for the caller to refuse, never wraps.
        let end = now.saturating_add(self.input.cost.op_ns(op));
        let event = Event::OpEnd {
            device: device as u32,
        };
        self.queue.push(end, event.encode());
    }

    fn release(&mut self, op: Op) {
        let id = self.id(op);
        self.remaining[id] -= 1;
        if self.remaining[id] == 0 {
            self.wake.push(self.input.schedule.device_of(op));
        }
    }

    fn op_end(&mut self, device: usize, now: u64) {
        let schedule = self.input.schedule;
        let op = schedule.orders()[device][self.next[device]];
        let start = self.busy_since[device]
            .take()
            .expect("an op ends only on a device that started it");
        self.next[device] += 1;
        if self.input.shared_compute {
            self.shared_busy = false;
        }
        let placed = self.placed(device);
        self.sink.span(Span {
            lane_index: placed,
            kind: SpanKind::Compute(op.kind),
            chunk: op.chunk,
            stage: op.stage,
            start_ns: start,
            end_ns: now,
            bytes: 0,
            hop: 0,
            device: placed,
            requested_ns: start,
        });
        if op.kind == OpKind::Backward {
            let (own, halo) = self.input.cost.stash(Op::forward(op.chunk, op.stage));
            self.memory(device, now, MemoryCategory::Activations, -(own as i64));
            self.memory(device, now, MemoryCategory::Halo, -(halo as i64));
        }
        let id = self.id(op);
        let held = std::mem::take(&mut self.held[id]);
        self.memory(device, now, MemoryCategory::Communication, -(held as i64));
        self.wake.push(device);
        for_each_local_successor(schedule, op, |next, _| self.release(next));
        for_each_handoff(schedule, op, |handoff| self.send(handoff, now));
        // Devices already waiting for the shared processor go first, in the order they came.
        while !self.shared_busy {
            let Some(waiting) = self.shared_waiting.pop_front() else {
                break;
            };
            self.try_issue(waiting, now);
        }
        let wake = std::mem::take(&mut self.wake);
        for &d in &wake {
            self.try_issue(d, now);
        }
        self.wake = wake;
        self.wake.clear();
    }

    /// Sends a hand-off: delivered at once on the same device or over a free route, else over
    /// the route's links after any transfer queued ahead of it.
    fn send(&mut self, handoff: Handoff, now: u64) {
        let schedule = self.input.schedule;
        let (from, to) = (
            self.placed(schedule.device_of(handoff.from)),
            self.placed(schedule.device_of(handoff.to)),
        );
        let route = self.input.network.route(from as usize, to as usize);
        if route.links.is_empty() {
            self.deliver(handoff, now, 0);
            return;
        }
        let bytes = self.input.cost.handoff_bytes(&handoff);
        let start = route
            .links
            .iter()
            .map(|&l| self.link_free[l])
            .fold(now, u64::max);
        let end = start.saturating_add(route.transfer_ns(bytes));
        for (hop, &link) in route.links.iter().enumerate() {
            self.link_free[link] = end;
            self.sink.span(Span {
                lane_index: link as u32,
                kind: SpanKind::Transfer(handoff.payload),
                chunk: handoff.to.chunk,
                stage: handoff.to.stage,
                start_ns: start,
                end_ns: end,
                bytes,
                hop: hop as u16,
                device: to,
                requested_ns: now,
            });
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.in_flight[slot as usize] = (handoff, bytes);
                slot
            }
            None => {
                self.in_flight.push((handoff, bytes));
                self.in_flight.len() as u32 - 1
            }
        };
        self.queue.push(end, Event::Arrival { slot }.encode());
    }

    /// A hand-off's data is on its receiving device: hold its buffer until the addressee ends,
    /// and release the addressee (or, for a gated hand-off, the gate).
    fn deliver(&mut self, handoff: Handoff, now: u64, bytes: u64) {
        let schedule = self.input.schedule;
        let receiver = schedule.device_of(handoff.to);
        let id = self.id(handoff.to);
        self.held[id] += bytes;
        self.memory(receiver, now, MemoryCategory::Communication, bytes as i64);
        if is_gated(schedule, &handoff) {
            let gate = gate_index(schedule, &handoff);
            self.gate_remaining[gate] -= 1;
            if self.gate_remaining[gate] == 0 {
                for_each_gate_member(schedule, &handoff, |member| self.release(member));
            }
        } else {
            self.release(handoff.to);
        }
    }
}

/// Runs the schedule and pushes every span and memory event into `sink`.
///
/// # Complexity
/// O(n log n) in the number of ops and transfers, O(S·K) memory besides the sink's.
pub fn simulate_into<S: TraceSink>(input: &SimInput<'_>, sink: &mut S) -> Result<(), SimError> {
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
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let id = |op: Op| op_id(op, n_chunks, n_stages);
    // Count every op's inputs from the same definitions the engine releases them by.
    let mut remaining = vec![0u32; schedule.n_op_ids()];
    let mut gate_remaining = vec![0u32; 3 * n_stages as usize];
    let mut gates: Vec<Handoff> = Vec::new();
    for &op in schedule.orders().iter().flatten() {
        for_each_local_successor(schedule, op, |next, _| remaining[id(next)] += 1);
        for_each_handoff(schedule, op, |handoff| {
            if is_gated(schedule, &handoff) {
                let gate = gate_index(schedule, &handoff);
                if gate_remaining[gate] == 0 {
                    gates.push(handoff);
                }
                gate_remaining[gate] += 1;
            } else {
                remaining[id(handoff.to)] += 1;
            }
        });
    }
    for handoff in &gates {
        for_each_gate_member(schedule, handoff, |member| remaining[id(member)] += 1);
    }
    let mut engine = Engine {
        input,
        sink,
        queue: EventQueue::with_capacity(2 * schedule.n_devices() + 16),
        next: vec![0; schedule.n_devices()],
        busy_since: vec![None; schedule.n_devices()],
        shared_busy: false,
        shared_waiting: std::collections::VecDeque::new(),
        remaining,
        held: vec![0; schedule.n_op_ids()],
        gate_remaining,
        link_free: vec![0; input.network.links().len()],
        wake: Vec::new(),
        in_flight: Vec::new(),
        free_slots: Vec::new(),
    };
    for (device, order) in schedule.orders().iter().enumerate() {
        for (category, bytes) in input.cost.resident_bytes(order) {
            engine.memory(device, 0, category, bytes as i64);
        }
    }
    for device in 0..schedule.n_devices() {
        engine.try_issue(device, 0);
    }
    while let Some((now, code)) = engine.queue.pop() {
        match Event::decode(code) {
            Event::OpEnd { device } => engine.op_end(device as usize, now),
            Event::Arrival { slot } => {
                let (handoff, bytes) = engine.in_flight[slot as usize];
                engine.free_slots.push(slot);
                engine.deliver(handoff, now, bytes);
                let wake = std::mem::take(&mut engine.wake);
                for &d in &wake {
                    engine.try_issue(d, now);
                }
                engine.wake = wake;
                engine.wake.clear();
            }
        }
    }
    let blocked: Vec<(usize, Op)> = (0..schedule.n_devices())
        .filter_map(|d| schedule.orders()[d].get(engine.next[d]).map(|&op| (d, op)))
        .collect();
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(SimError::Stalled(blocked))
    }
}

/// Runs the schedule and returns its predicted trace. `devices` names the network's devices.
pub fn simulate(input: &SimInput<'_>, devices: Vec<TraceDevice>) -> Result<Trace, SimError> {
    let network = input.network;
    let links = network
        .links()
        .iter()
        .map(|link| TraceLink {
            from: network.node_name(link.from).to_string(),
            to: network.node_name(link.to).to_string(),
        })
        .collect();
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
