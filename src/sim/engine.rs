//! The event loop: devices issue their lists, hand-offs cross links, memory rises and falls.

use thiserror::Error;

use super::queue::EventQueue;
use crate::cost::CostModel;
use crate::network::Network;
use crate::schedule::lower::{Lowered, Release};
use crate::schedule::{Op, OpKind, Schedule};
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
    /// The schedule lowered, when the caller already has it (from [`crate::schedule::check_lowered`]);
    /// otherwise the simulation lowers it.
    pub lowered: Option<&'a Lowered>,
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
    lowered: &'a Lowered,
    sink: &'a mut S,
    queue: EventQueue,
    /// Per schedule device: the position of the next op to issue, the end of its list, and the
    /// running op's start.
    next: Vec<u32>,
    end: Vec<u32>,
    busy_since: Vec<Option<u64>>,
    /// With a shared processor: whether it is running an op, and the devices waiting for it.
    shared_busy: bool,
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
        if self.input.shared_compute {
            if self.shared_busy {
                if !self.shared_waiting.contains(&device) {
                    self.shared_waiting.push_back(device);
                }
                return;
            }
            self.shared_busy = true;
        }
        let op = self.lowered.op(position);
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
        // A full backward frees the chunk's stash; a split one frees all but what its `W`
        // reads at `I` (adding the output gradients `I` creates for it), and that at `W`.
        let forward = Op::forward(op.chunk, op.stage);
        match op.kind {
            OpKind::Backward | OpKind::InputGrad => {
                let (own, halo) = self.input.cost.stash(forward);
                let kept = match op.kind {
                    OpKind::InputGrad => self.input.cost.weight_stash(forward) as i64,
                    _ => 0,
                };
                self.memory(device, now, MemoryCategory::Activations, kept - own as i64);
                self.memory(device, now, MemoryCategory::Halo, -(halo as i64));
            }
            OpKind::WeightGrad => {
                let kept = self.input.cost.weight_stash(forward);
                self.memory(device, now, MemoryCategory::Activations, -(kept as i64));
            }
            OpKind::Forward | OpKind::Optimizer => {}
        }
        let held = std::mem::take(&mut self.held[position as usize]);
        self.memory(device, now, MemoryCategory::Communication, -(held as i64));
        self.wake.push(device);
        let range = self.lowered.release_range(position);
        for index in range {
            match self.lowered.release_at(index) {
                Release::Local { to } => self.release(to),
                release => self.send(position, release, now),
            }
        }
        // Devices already waiting for the shared processor go first, in the order they came.
        while !self.shared_busy {
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
    fn send(&mut self, from: u32, release: Release, now: u64) {
        let handoff = self
            .lowered
            .handoff(from, release)
            .expect("only hand-offs are sent");
        let to = match release {
            Release::Direct { to, .. } | Release::Gated { to, .. } => to,
            Release::Local { to } => to,
        };
        let (sender, receiver) = (
            self.placed(self.lowered.device_of(from)),
            self.placed(self.lowered.device_of(to)),
        );
        let route = self.input.network.route(sender as usize, receiver as usize);
        if route.links.is_empty() {
            self.deliver(release, now, 0);
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
                device: receiver,
                requested_ns: now,
            });
        }
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
    let mut engine = Engine {
        input,
        sink,
        queue: EventQueue::with_capacity(2 * n_devices + 16),
        next: (0..n_devices).map(|d| lowered.positions(d).start).collect(),
        end: (0..n_devices).map(|d| lowered.positions(d).end).collect(),
        busy_since: vec![None; n_devices],
        shared_busy: false,
        shared_waiting: std::collections::VecDeque::new(),
        remaining: lowered.inputs().to_vec(),
        held: vec![0; lowered.ops().len()],
        gate_remaining: lowered.gate_inputs().to_vec(),
        link_free: vec![0; input.network.links().len()],
        wake: Vec::new(),
        in_flight: Vec::new(),
        free_slots: Vec::new(),
        lowered,
    };
    for (device, order) in schedule.orders().iter().enumerate() {
        for (category, bytes) in input.cost.resident_bytes(order) {
            engine.memory(device, 0, category, bytes as i64);
        }
    }
    for device in 0..n_devices {
        engine.try_issue(device, 0);
    }
    while let Some((now, code)) = engine.queue.pop() {
        match Event::decode(code) {
            Event::OpEnd { device } => engine.op_end(device as usize, now),
            Event::Arrival { slot } => {
                let (release, bytes) = engine.in_flight[slot as usize];
                engine.free_slots.push(slot);
                engine.deliver(release, now, bytes);
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
