//! The schedule checker: dependencies can be met (no deadlock) and peak in-flight chunks.

use std::fmt;

use super::ir::{op_id, Op, OpKind, Schedule};
use super::lower::{
    for_each_gate_member, for_each_handoff, for_each_local_successor, is_gated, Lowered, Reason,
    Release,
};
use super::ScheduleError;
use crate::graph::find_cycle;

/// What the checker found about a well-formed, deadlock-free schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Per stage, the largest number of chunks whose forward has been issued and whose backward
    /// has not yet finished: the activation stash the stage must hold.
    pub peak_in_flight: Vec<u32>,
}

/// One link of a deadlock: `op` (on `device`) cannot start before `waits_for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The blocked op.
    pub op: Op,
    /// The pipeline device whose list holds it.
    pub device: usize,
    /// The op it waits for.
    pub waits_for: Op,
    /// Why it waits.
    pub reason: Reason,
}

/// The ops of a deadlock, each waiting for the next, the last waiting for the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlock(pub Vec<Wait>);

impl fmt::Display for Deadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, wait) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} on device {} waits for {} ({})",
                wait.op,
                wait.device,
                wait.waits_for,
                wait.reason.phrase()
            )?;
        }
        Ok(())
    }
}

/// Checks that every op's dependencies can be met given each device's issue order, and reports
/// each stage's peak number of in-flight chunks.
///
/// The dependency graph has an edge from each op to the next op in its device's list, and from
/// each op to the ops that use its result ([`super::lower`]: `F(c, s-1) -> F(c, s)`,
/// `B(c, s+1) -> B(c, s)`, `F(c, s) -> B(c, s)`, backwards -> optimizer steps, and the gated
/// dependencies of barriers and all-reduces). The schedule runs to completion exactly when this
/// graph is acyclic. The check runs the schedule with no notion of time: every device issues its
/// next op as soon as that op's inputs are there; it finishes exactly when the graph is acyclic
/// (a stalled device waits for an op that waits in turn, and among finitely many ops such a chain
/// closes into a cycle). Only when it stalls is the graph built, to name the ops that wait on each
/// other.
///
/// # Complexity
/// O(S·K + hand-offs) time and memory.
pub fn check(schedule: &Schedule) -> Result<CheckReport, ScheduleError> {
    check_lowered(schedule, &Lowered::new(schedule))
}

/// [`check`] of a schedule already lowered (`lowered` is `Lowered::new(schedule)`), so a caller
/// that simulates next lowers once.
pub fn check_lowered(schedule: &Schedule, lowered: &Lowered) -> Result<CheckReport, ScheduleError> {
    if !runs_to_completion(lowered) {
        return Err(ScheduleError::Deadlock(find_deadlock(schedule)));
    }
    Ok(CheckReport {
        peak_in_flight: peak_in_flight(schedule),
    })
}

/// Issues ops in each device's order as their inputs arrive, without time; whether every op ran.
/// A device is handed the walk when the op it waits at becomes ready, never for a later one.
fn runs_to_completion(lowered: &Lowered) -> bool {
    let n_devices = lowered.n_devices();
    let mut remaining = lowered.inputs().to_vec();
    let mut gate_remaining = lowered.gate_inputs().to_vec();
    let mut next: Vec<u32> = (0..n_devices).map(|d| lowered.positions(d).start).collect();
    let mut ready: Vec<usize> = (0..n_devices).rev().collect();
    let release =
        |to: u32, walking: usize, next: &[u32], ready: &mut Vec<usize>, remaining: &mut [u32]| {
            let left = &mut remaining[to as usize];
            *left -= 1;
            if *left == 0 {
                let device = lowered.device_of(to);
                if device != walking && next[device] == to {
                    ready.push(device);
                }
            }
        };
    while let Some(device) = ready.pop() {
        let end = lowered.positions(device).end;
        while next[device] < end && remaining[next[device] as usize] == 0 {
            let position = next[device];
            next[device] += 1;
            for &r in lowered.releases(position) {
                match r {
                    Release::Local { to } | Release::Direct { to, .. } => {
                        release(to, device, &next, &mut ready, &mut remaining)
                    }
                    Release::Gated { gate, .. } => {
                        gate_remaining[gate as usize] -= 1;
                        if gate_remaining[gate as usize] == 0 {
                            for &member in lowered.gate_members(gate) {
                                release(member, device, &next, &mut ready, &mut remaining);
                            }
                        }
                    }
                }
            }
        }
    }
    (0..n_devices).all(|d| next[d] == lowered.positions(d).end)
}

/// Builds the whole dependency graph of a schedule that stalls and names one cycle of waits.
fn find_deadlock(schedule: &Schedule) -> Deadlock {
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let node = |op: Op| op_id(op, n_chunks, n_stages) as u32;
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(3 * schedule.n_ops());
    let mut reasons: Vec<Reason> = Vec::with_capacity(3 * schedule.n_ops());
    let mut add = |from: Op, to: Op, reason: Reason| {
        edges.push((node(from), node(to)));
        reasons.push(reason);
    };
    for order in schedule.orders() {
        for pair in order.windows(2) {
            add(pair[0], pair[1], Reason::DeviceOrder);
        }
        for &op in order {
            for_each_local_successor(schedule, op, |next, reason| add(op, next, reason));
            for_each_handoff(schedule, op, |handoff| {
                let reason = Reason::Data(handoff.payload);
                if is_gated(schedule, &handoff) {
                    for_each_gate_member(schedule, &handoff, |member| add(op, member, reason));
                } else {
                    add(op, handoff.to, reason);
                }
            });
        }
    }
    let cycle = find_cycle(schedule.n_op_ids(), &edges)
        .expect("a run stalls only when the ops it cannot issue wait on each other in a cycle");
    explain(schedule, &cycle, &edges, &reasons)
}

/// Turns a cycle of node indices back into ops with the reason each one waits.
fn explain(
    schedule: &Schedule,
    cycle: &[usize],
    edges: &[(u32, u32)],
    reasons: &[Reason],
) -> Deadlock {
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let mut op_of = vec![None; schedule.n_op_ids()];
    for &op in schedule.orders().iter().flatten() {
        op_of[op_id(op, n_chunks, n_stages)] = Some(op);
    }
    let at = |i: usize| cycle[i % cycle.len()];
    // Walk the cycle backwards: each node waits for its predecessor on the cycle.
    let waits = (0..cycle.len())
        .rev()
        .map(|i| {
            let (earlier, later) = (at(i), at(i + 1));
            let op = op_of[later].expect("every node on a cycle is an op of the schedule");
            let reason = edges
                .iter()
                .position(|&(a, b)| (a as usize, b as usize) == (earlier, later))
                .map_or(Reason::DeviceOrder, |e| reasons[e]);
            Wait {
                op,
                device: schedule.device_of(op),
                waits_for: op_of[earlier].expect("every node on a cycle is an op of the schedule"),
                reason,
            }
        })
        .collect();
    Deadlock(waits)
}

/// Per stage, the peak count of chunks with `F` issued and `B` (or `W`) not yet finished,
/// walking each device's list in order.
pub fn peak_in_flight(schedule: &Schedule) -> Vec<u32> {
    let mut current = vec![0u32; schedule.n_stages() as usize];
    let mut peak = vec![0u32; schedule.n_stages() as usize];
    for op in schedule.orders().iter().flatten() {
        let stage = op.stage as usize;
        match op.kind {
            OpKind::Forward => {
                current[stage] += 1;
                peak[stage] = peak[stage].max(current[stage]);
            }
            OpKind::Backward | OpKind::WeightGrad => {
                current[stage] = current[stage].saturating_sub(1)
            }
            OpKind::Optimizer | OpKind::InputGrad => {}
        }
    }
    peak
}
