//! The event loop: devices issue their lists, hand-offs cross links, memory rises and falls.

use thiserror::Error;

use super::queue::EventQueue;
use crate::cost::CostModel;
use crate::network::Network;
use crate::schedule::lower::{handoff_after, Payload};
use crate::schedule::{Op, OpKind, Schedule};
use crate::trace::{
    Lane, MemoryCategory, MemoryEvent, Span, SpanKind, Trace, TraceDevice, TraceLink, TraceSink,
    TraceSource,
};

/// Everything one simulation reads.
pub struct SimInput<'a> {
    /// The schedule to interpret.
    pub schedule: &'a Schedule,
    /// For each pipeline device of the schedule, the network device that runs it.
    pub placement: &'a [usize],
    /// Op durations, hand-off sizes and memory.
    pub cost: &'a dyn CostModel,
    /// Links and routes between the network's devices.
    pub network: &'a Network,
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

#[derive(Debug, Clone, Copy)]
enum Event {
    OpEnd {
        device: u32,
    },
    Arrival {
        payload: Payload,
        chunk: u32,
        stage: u32,
        bytes: u64,
    },
}

const NOT_YET: u64 = u64::MAX;

struct Engine<'a, S: TraceSink> {
    input: &'a SimInput<'a>,
    sink: &'a mut S,
    queue: EventQueue<Event>,
    n_stages: u32,
    n_chunks: u32,
    /// Per pipeline device: index of the next op to issue, and the running op's start.
    next: Vec<usize>,
    busy_since: Vec<Option<u64>>,
    /// Per `(stage, chunk)`: when `F`'s input and `B`'s incoming gradient became available.
    forward_ready: Vec<u64>,
    backward_ready: Vec<u64>,
    forward_done: Vec<bool>,
    /// Per `(stage, chunk)`: communication buffer bytes held for `F`'s and `B`'s input.
    forward_buffer: Vec<u64>,
    backward_buffer: Vec<u64>,
    backwards_done: Vec<u32>,
    /// Per directed link: when it is next free.
    link_free: Vec<u64>,
}

impl<'a, S: TraceSink> Engine<'a, S> {
    fn idx(&self, chunk: u32, stage: u32) -> usize {
        stage as usize * self.n_chunks as usize + chunk as usize
    }

    fn device_of(&self, pipeline_device: usize) -> u32 {
        self.input.placement[pipeline_device] as u32
    }

    fn memory(
        &mut self,
        pipeline_device: usize,
        time_ns: u64,
        category: MemoryCategory,
        delta: i64,
    ) {
        if delta != 0 {
            let device = self.device_of(pipeline_device);
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
        let i = self.idx(op.chunk, op.stage);
        let ready = match op.kind {
            OpKind::Forward => self.forward_ready[i] <= now,
            OpKind::Backward => self.forward_done[i] && self.backward_ready[i] <= now,
            OpKind::Optimizer => self.backwards_done[op.stage as usize] == self.n_chunks,
        };
        if !ready {
            return;
        }
        if op.kind == OpKind::Forward {
            let stash = self.input.cost.stash_bytes(op.chunk, op.stage);
            self.memory(device, now, MemoryCategory::Activations, stash as i64);
        }
        self.busy_since[device] = Some(now);
        let end = now + self.input.cost.op_ns(op);
        self.queue.push(
            end,
            Event::OpEnd {
                device: device as u32,
            },
        );
    }

    fn op_end(&mut self, device: usize, now: u64) {
        let op = self.input.schedule.orders()[device][self.next[device]];
        let start = self.busy_since[device]
            .take()
            .expect("an op ends only on a device that started it");
        self.next[device] += 1;
        self.sink.span(Span {
            lane: Lane::Device(self.device_of(device)),
            kind: SpanKind::Compute(op.kind),
            chunk: op.chunk,
            stage: op.stage,
            start_ns: start,
            end_ns: now,
            bytes: 0,
            hop: 0,
        });
        let i = self.idx(op.chunk, op.stage);
        match op.kind {
            OpKind::Forward => {
                self.forward_done[i] = true;
                if op.stage + 1 == self.n_stages {
                    // The loss is computed where the last stage lives: its gradient is local.
                    self.backward_ready[i] = now;
                }
                let held = std::mem::take(&mut self.forward_buffer[i]);
                self.memory(device, now, MemoryCategory::Communication, -(held as i64));
            }
            OpKind::Backward => {
                self.backwards_done[op.stage as usize] += 1;
                let stash = self.input.cost.stash_bytes(op.chunk, op.stage);
                self.memory(device, now, MemoryCategory::Activations, -(stash as i64));
                let held = std::mem::take(&mut self.backward_buffer[i]);
                self.memory(device, now, MemoryCategory::Communication, -(held as i64));
            }
            OpKind::Optimizer => {}
        }
        let receiver = handoff_after(op, self.n_stages).map(|handoff| {
            let receiver = self.input.schedule.device_of_stage(handoff.to_stage);
            let (from, to) = (
                self.device_of(device) as usize,
                self.device_of(receiver) as usize,
            );
            let route = self.input.network.route(from, to);
            if route.links.is_empty() {
                self.arrive(handoff.payload, handoff.chunk, handoff.to_stage, now, 0);
            } else {
                let bytes = self.input.cost.handoff_bytes(&handoff);
                let start = route
                    .links
                    .iter()
                    .map(|&l| self.link_free[l])
                    .fold(now, u64::max);
                let end = start + route.transfer_ns(bytes);
                for (hop, &link) in route.links.iter().enumerate() {
                    self.link_free[link] = end;
                    self.sink.span(Span {
                        lane: Lane::Link(link as u32),
                        kind: SpanKind::Transfer(handoff.payload),
                        chunk: handoff.chunk,
                        stage: handoff.to_stage,
                        start_ns: start,
                        end_ns: end,
                        bytes,
                        hop: hop as u16,
                    });
                }
                self.queue.push(
                    end,
                    Event::Arrival {
                        payload: handoff.payload,
                        chunk: handoff.chunk,
                        stage: handoff.to_stage,
                        bytes,
                    },
                );
            }
            receiver
        });
        self.try_issue(device, now);
        if let Some(receiver) = receiver.filter(|&r| r != device) {
            self.try_issue(receiver, now);
        }
    }

    /// Marks a hand-off's data as present on its receiving stage, holding `buffer_bytes` there
    /// until the consuming op ends.
    fn arrive(&mut self, payload: Payload, chunk: u32, stage: u32, now: u64, buffer_bytes: u64) {
        let i = self.idx(chunk, stage);
        let receiver = self.input.schedule.device_of_stage(stage);
        match payload {
            Payload::Activation => {
                self.forward_ready[i] = now;
                self.forward_buffer[i] = buffer_bytes;
            }
            Payload::Gradient => {
                self.backward_ready[i] = now;
                self.backward_buffer[i] = buffer_bytes;
            }
        }
        self.memory(
            receiver,
            now,
            MemoryCategory::Communication,
            buffer_bytes as i64,
        );
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
    let cells = n_stages as usize * n_chunks as usize;
    let mut forward_ready = vec![NOT_YET; cells];
    forward_ready[..n_chunks as usize].fill(0);
    let mut engine = Engine {
        input,
        sink,
        queue: EventQueue::with_capacity(2 * schedule.n_devices() + 16),
        n_stages,
        n_chunks,
        next: vec![0; schedule.n_devices()],
        busy_since: vec![None; schedule.n_devices()],
        forward_ready,
        backward_ready: vec![NOT_YET; cells],
        forward_done: vec![false; cells],
        forward_buffer: vec![0; cells],
        backward_buffer: vec![0; cells],
        backwards_done: vec![0; n_stages as usize],
        link_free: vec![0; input.network.links().len()],
    };
    for stage in 0..n_stages {
        let device = schedule.device_of_stage(stage);
        for (category, bytes) in input.cost.resident_bytes(stage) {
            engine.memory(device, 0, category, bytes as i64);
        }
    }
    for device in 0..schedule.n_devices() {
        engine.try_issue(device, 0);
    }
    while let Some((now, event)) = engine.queue.pop() {
        match event {
            Event::OpEnd { device } => engine.op_end(device as usize, now),
            Event::Arrival {
                payload,
                chunk,
                stage,
                bytes,
            } => {
                engine.arrive(payload, chunk, stage, now, bytes);
                engine.try_issue(schedule.device_of_stage(stage), now);
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
