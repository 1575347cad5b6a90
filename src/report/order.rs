//! Whether a trace, predicted or measured, ran a schedule as written: every op exactly once on
//! its device, each device's ops in its list's order without overlap, and no op starting before
//! what it depends on was there (the data it receives had arrived, the local result it uses had
//! been computed).

use std::collections::BTreeMap;

use crate::schedule::lower::{
    for_each_gate_member, for_each_handoff, for_each_local_successor, is_gated, Payload,
};
use crate::schedule::{Op, OpKind, Schedule};
use crate::trace::{SpanKind, Trace};

/// Where and when an op ran.
#[derive(Debug, Clone, Copy)]
struct Ran {
    device: u32,
    start: u64,
    end: u64,
}

/// Every way `trace` departs from `schedule` placed by `placement` (schedule device -> trace
/// device), one line each; empty when it ran the schedule as written.
pub fn violations(schedule: &Schedule, placement: &[usize], trace: &Trace) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ran: BTreeMap<Op, Ran> = BTreeMap::new();
    // When the data for (payload, receiving op) was there: the latest end over its transfers'
    // hops.
    let mut arrived: BTreeMap<(Payload, Op), u64> = BTreeMap::new();
    for span in &trace.spans {
        match span.kind {
            SpanKind::Compute(kind) => {
                let op = Op {
                    kind,
                    chunk: span.chunk,
                    stage: span.stage,
                };
                let record = Ran {
                    device: span.device,
                    start: span.start_ns,
                    end: span.end_ns,
                };
                if ran.insert(op, record).is_some() {
                    problems.push(format!("{op} ran more than once"));
                }
            }
            SpanKind::Transfer(payload) => {
                let kind = match payload {
                    Payload::Activation => OpKind::Forward,
                    Payload::Gradient => OpKind::Backward,
                    Payload::Weights => OpKind::Optimizer,
                };
                let to = Op {
                    kind,
                    chunk: span.chunk,
                    stage: span.stage,
                };
                let at = arrived.entry((payload, to)).or_default();
                *at = (*at).max(span.end_ns);
            }
        }
    }
    for (device, order) in schedule.orders().iter().enumerate() {
        let mut previous: Option<(Op, Ran)> = None;
        for &op in order {
            let Some(&here) = ran.get(&op) else {
                problems.push(format!("{op} did not run"));
                continue;
            };
            if here.device as usize != placement[device] {
                problems.push(format!(
                    "{op} ran on device {} but the schedule places it on device {}",
                    here.device, placement[device]
                ));
            }
            if let Some((before, then)) = previous {
                if here.start < then.end {
                    problems.push(format!(
                        "{op} started at {} ns, before {before} (ahead of it on the device) ended at {} ns",
                        here.start, then.end
                    ));
                }
            }
            previous = Some((op, here));
        }
    }
    for (&op, &here) in &ran {
        let mut check = |waiting: Op, ready: u64, why: &str| {
            if let Some(there) = ran.get(&waiting) {
                if there.start < ready {
                    problems.push(format!(
                        "{waiting} started at {} ns, before {why} of {op} ({} ns)",
                        there.start, ready
                    ));
                }
            }
        };
        for_each_local_successor(schedule, op, |next, _| check(next, here.end, "the result"));
        for_each_handoff(schedule, op, |h| {
            // Within a device the result is there when the op ends; across devices, when the
            // transfer arrives (a measured op may hand its result on before its span ends).
            let ready = if schedule.device_of(h.to) == schedule.device_of(op) {
                here.end
            } else {
                match arrived.get(&(h.payload, h.to)) {
                    Some(&at) => at,
                    None => here.end,
                }
            };
            if is_gated(schedule, &h) {
                for_each_gate_member(schedule, &h, |member| check(member, ready, "the data"));
            } else {
                check(h.to, ready, "the data");
            }
        });
    }
    problems
}
