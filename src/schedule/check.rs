//! The schedule checker: dependencies can be met (no deadlock) and peak in-flight chunks.

use std::fmt;

use super::ir::{slot, Op, OpKind, Schedule};
use super::lower::{for_each_input, Reason};
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
/// each op to the ops consuming its data (`F(c, s-1) -> F(c, s)`, `B(c, s+1) -> B(c, s)`,
/// `F(c, s) -> B(c, s)`, every `B(c, s) -> U(s)`). The schedule runs to completion exactly when
/// this graph is acyclic; otherwise the error names the ops that wait on each other.
///
/// # Complexity
/// O(S·K) time and memory.
pub fn check(schedule: &Schedule) -> Result<CheckReport, ScheduleError> {
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let n_pipeline_ops = 2 * n_stages as usize * n_chunks as usize;
    let node = |op: Op| match op.kind {
        OpKind::Optimizer => n_pipeline_ops + op.stage as usize,
        kind => slot(kind, op.chunk, op.stage, n_chunks),
    };
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(3 * n_pipeline_ops + n_stages as usize);
    for order in schedule.orders() {
        for pair in order.windows(2) {
            edges.push((node(pair[0]) as u32, node(pair[1]) as u32));
        }
        for &op in order {
            for_each_input(op, n_stages, n_chunks, |dep, _| {
                edges.push((node(dep) as u32, node(op) as u32));
            });
        }
    }
    if let Some(cycle) = find_cycle(n_pipeline_ops + n_stages as usize, &edges) {
        return Err(ScheduleError::Deadlock(explain(schedule, &cycle, node)));
    }
    Ok(CheckReport {
        peak_in_flight: peak_in_flight(schedule),
    })
}

/// Turns a cycle of node indices back into ops with the reason each one waits.
fn explain(schedule: &Schedule, cycle: &[usize], node: impl Fn(Op) -> usize) -> Deadlock {
    let (n_stages, n_chunks) = (schedule.n_stages(), schedule.n_chunks());
    let mut op_of = vec![None; 2 * n_stages as usize * n_chunks as usize + n_stages as usize];
    for order in schedule.orders() {
        for &op in order {
            op_of[node(op)] = Some(op);
        }
    }
    let op_at = |i: usize| op_of[cycle[i % cycle.len()]].expect("every node is an op");
    // Walk the cycle backwards: each node waits for its predecessor on the cycle.
    let waits = (0..cycle.len())
        .rev()
        .map(|i| {
            let (earlier, op) = (op_at(i), op_at(i + 1));
            let device = schedule.device_of_stage(op.stage);
            let mut reason = None;
            for_each_input(op, n_stages, n_chunks, |dep, why| {
                if dep == earlier {
                    reason = Some(why);
                }
            });
            Wait {
                op,
                device,
                waits_for: earlier,
                reason: reason.unwrap_or(Reason::DeviceOrder),
            }
        })
        .collect();
    Deadlock(waits)
}

/// Per stage, the peak count of chunks with `F` issued and `B` not yet finished, walking each
/// device's list in order.
fn peak_in_flight(schedule: &Schedule) -> Vec<u32> {
    let mut current = vec![0u32; schedule.n_stages() as usize];
    let mut peak = vec![0u32; schedule.n_stages() as usize];
    for order in schedule.orders() {
        for op in order {
            let stage = op.stage as usize;
            match op.kind {
                OpKind::Forward => {
                    current[stage] += 1;
                    peak[stage] = peak[stage].max(current[stage]);
                }
                OpKind::Backward => current[stage] -= 1,
                OpKind::Optimizer => {}
            }
        }
    }
    peak
}
