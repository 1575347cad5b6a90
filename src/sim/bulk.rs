//! Bulk-synchronous programs: phases of concurrent collectives, each followed by compute on
//! the devices that took part (graph parallelism's 1.5D, 2D and 3D products).
//!
//! A phase's collectives start together: each member contributes when its device has finished
//! what the previous phases gave it, and every step is a transfer under the engine's link rule
//! (FIFO per directed link, every hop held until arrival), on link clocks shared by the whole
//! program, so the row and column broadcasts of a SUMMA stage, or the all-reduces of several
//! replica groups, contend where their routes meet. A device's compute in the phase starts when
//! it is free and every collective it is a member of is done for it.
//!
//! Memory: resident bytes are allocated at time 0. A compute's stash is allocated when it starts
//! (a positive `stash_bytes`) or freed when it ends (negative). What a device received in a
//! phase is a communication buffer from when its collectives are done until its compute in the
//! phase ends (or at once, when it computes nothing there).

use super::collective::{self, Plan, Progress};
use super::queue::EventQueue;
use crate::network::Network;
use crate::schedule::lower::Payload;
use crate::schedule::Op;
use crate::trace::{
    MemoryCategory, MemoryEvent, Span, SpanKind, Trace, TraceDevice, TraceSink, TraceSource,
};

/// One collective of a phase.
#[derive(Debug, Clone)]
pub struct PhaseCollective {
    /// Its steps, over network devices that run the program.
    pub plan: Plan,
    /// What it carries, as its transfer spans name it.
    pub payload: Payload,
    /// The stage (layer) its transfer spans name.
    pub stage: u32,
}

/// One device's compute in a phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseCompute {
    /// The program device (index into [`Program::placement`]).
    pub device: usize,
    /// The op it runs (a piece of a layer's product carries the layer's op).
    pub op: Op,
    /// Its duration.
    pub ns: u64,
    /// Activation bytes allocated at its start (positive) or freed at its end (negative).
    pub stash_bytes: i64,
}

/// Collectives that start together, then compute.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Run concurrently.
    pub collectives: Vec<PhaseCollective>,
    /// At most one per device.
    pub compute: Vec<PhaseCompute>,
}

/// A bulk-synchronous epoch.
#[derive(Debug, Clone)]
pub struct Program<'a> {
    /// For each program device, the network device that runs it (distinct).
    pub placement: &'a [usize],
    /// Links and routes.
    pub network: &'a Network,
    /// Per program device: memory held for the whole epoch.
    pub resident: Vec<Vec<(MemoryCategory, u64)>>,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// Stages and chunks the trace records (layers and partitions).
    pub shape: (u32, u32),
}

/// Runs `program` and pushes its spans and memory events into `sink`.
///
/// # Complexity
/// O(S log S + C) in the steps S of every collective and the computes C.
pub fn simulate_into<S: TraceSink>(program: &Program<'_>, sink: &mut S) {
    let network = program.network;
    let n = program.placement.len();
    let mut device_of = vec![u32::MAX; network.n_devices()];
    for (d, &net) in program.placement.iter().enumerate() {
        device_of[net] = d as u32;
    }
    let mut clock = vec![0u64; n];
    let mut link_free = vec![0u64; network.links().len()];
    // Memory events as (time, sequence), sorted before they are pushed.
    let mut memory: Vec<(u64, usize, MemoryEvent)> = Vec::new();
    let note = |memory: &mut Vec<(u64, usize, MemoryEvent)>, d: usize, t, category, delta| {
        if delta != 0 {
            let seq = memory.len();
            memory.push((
                t,
                seq,
                MemoryEvent {
                    device: program.placement[d] as u32,
                    time_ns: t,
                    category,
                    delta_bytes: delta,
                },
            ));
        }
    };
    for (d, held) in program.resident.iter().enumerate() {
        for &(category, bytes) in held {
            note(&mut memory, d, 0, category, bytes as i64);
        }
    }
    let mut done_at = vec![0u64; n];
    let mut received = vec![0u64; n];
    for phase in &program.phases {
        done_at.copy_from_slice(&clock);
        received.iter_mut().for_each(|r| *r = 0);
        run_collectives(
            phase,
            network,
            &device_of,
            &clock,
            &mut link_free,
            &mut done_at,
            &mut received,
            sink,
        );
        let mut computed = vec![false; n];
        for c in &phase.compute {
            let d = c.device;
            let start = clock[d].max(done_at[d]);
            let end = start.saturating_add(c.ns);
            note(
                &mut memory,
                d,
                start,
                MemoryCategory::Communication,
                received[d] as i64,
            );
            if c.stash_bytes > 0 {
                note(
                    &mut memory,
                    d,
                    start,
                    MemoryCategory::Activations,
                    c.stash_bytes,
                );
            }
            let placed = program.placement[d] as u32;
            sink.span(Span {
                kind: SpanKind::Compute(c.op.kind),
                hop: 0,
                lane_index: placed,
                chunk: c.op.chunk,
                stage: c.op.stage,
                device: placed,
                start_ns: start,
                end_ns: end,
                bytes: 0,
                requested_ns: start,
            });
            if c.stash_bytes < 0 {
                note(
                    &mut memory,
                    d,
                    end,
                    MemoryCategory::Activations,
                    c.stash_bytes,
                );
            }
            note(
                &mut memory,
                d,
                end,
                MemoryCategory::Communication,
                -(received[d] as i64),
            );
            clock[d] = end;
            computed[d] = true;
        }
        for d in (0..n).filter(|&d| !computed[d]) {
            let at = clock[d].max(done_at[d]);
            clock[d] = at;
            let held = received[d] as i64;
            note(&mut memory, d, at, MemoryCategory::Communication, held);
            note(&mut memory, d, at, MemoryCategory::Communication, -held);
        }
    }
    memory.sort_by_key(|&(t, seq, _)| (t, seq));
    for (_, _, event) in memory {
        sink.memory(event);
    }
}

/// Runs one phase's collectives together, each member contributing at its device's clock;
/// records when each device is done and what it received.
#[allow(clippy::too_many_arguments)]
fn run_collectives<S: TraceSink>(
    phase: &Phase,
    network: &Network,
    device_of: &[u32],
    clock: &[u64],
    link_free: &mut [u64],
    done_at: &mut [u64],
    received: &mut [u64],
    sink: &mut S,
) {
    let mut queue = EventQueue::with_capacity(16);
    let mut progress: Vec<Progress> = phase
        .collectives
        .iter()
        .map(|c| Progress::new(&c.plan))
        .collect();
    // Events: (collective, member or step, is a step).
    let mut events: Vec<(u32, u32, bool)> = Vec::new();
    for (i, c) in phase.collectives.iter().enumerate() {
        for (member, &net) in c.plan.members().iter().enumerate() {
            events.push((i as u32, member as u32, false));
            queue.push(clock[device_of[net] as usize], events.len() as u32 - 1);
        }
    }
    let (mut start, mut done) = (Vec::new(), Vec::new());
    while let Some((now, code)) = queue.pop() {
        let (i, index, is_step) = events[code as usize];
        let c = &phase.collectives[i as usize];
        if is_step {
            progress[i as usize].arrived(&c.plan, index, &mut start, &mut done);
        } else {
            progress[i as usize].contribute(index as usize, &mut start, &mut done);
        }
        for member in done.drain(..) {
            let d = device_of[c.plan.members()[member as usize]] as usize;
            done_at[d] = done_at[d].max(now);
        }
        for step in std::mem::take(&mut start) {
            let s = c.plan.steps()[step as usize];
            let (from, to) = (
                c.plan.members()[s.from as usize],
                c.plan.members()[s.to as usize],
            );
            let route = network.route(from, to);
            let (begin, end) = collective::reserve(&route, link_free, now, s.bytes);
            received[device_of[to] as usize] += s.bytes;
            for (hop, &link) in route.links.iter().enumerate() {
                sink.span(Span {
                    kind: SpanKind::Transfer(c.payload),
                    hop: hop as u16,
                    lane_index: link as u32,
                    chunk: device_of[to],
                    stage: c.stage,
                    device: to as u32,
                    start_ns: begin,
                    end_ns: end,
                    bytes: s.bytes,
                    requested_ns: now,
                });
            }
            events.push((i, step, true));
            queue.push(end, events.len() as u32 - 1);
        }
    }
}

/// Runs `program` and returns its predicted trace; `devices` names the network's devices.
pub fn simulate(program: &Program<'_>, devices: Vec<TraceDevice>) -> Trace {
    let network = program.network;
    let links = super::trace_links(network);
    let computes: usize = program.phases.iter().map(|p| p.compute.len()).sum();
    let mut trace = Trace::with_capacity(
        TraceSource::Predicted,
        devices,
        links,
        program.shape,
        computes,
    );
    simulate_into(program, &mut trace);
    trace
}
