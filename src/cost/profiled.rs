//! The profiled cost tier: op times measured by the executor (`pipegnn calibrate`) on this
//! machine for a scenario's shapes; bytes and memory still come from the analytic model.
//!
//! A profile is JSON: `{"format": "pipegnn-profile v1", "scenario": NAME, "schedule": LABEL,
//! "ops": [{"op": "F", "chunk": 0, "stage": 1, "ns": 123456}, ...], "handoff_ns": 25000}`, one
//! entry per op with its median duration over the measured epochs, and the median time from a
//! hand-off's arrival to the start of the op waiting for it (the receiving worker's wake-up: on
//! one machine without link emulation it is what a hand-off costs beyond the link), and
//! `"gap_ns"`, the median time a worker spends between two ops when the second has its inputs
//! (added to every profiled op's duration). Where the
//! run measured memory, forward ops also carry `"stash_bytes"` (what the forward left for its
//! backward, its received input included) and `"workspace": [{"op", "chunk", "stage",
//! "bytes"}]` gives, per device (named by the first op of its list), the most workspace it
//! held (what it held at the epoch's start plus its largest temporaries).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::CostModel;
use crate::schedule::lower::Handoff;
use crate::schedule::{Op, OpKind};
use crate::trace::{MemoryCategory, SpanKind, Trace};

/// Measured op durations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// The scenario it was measured on.
    pub scenario: String,
    /// The schedule it was measured with.
    pub schedule: String,
    /// Median duration per op.
    pub ops: BTreeMap<Op, u64>,
    /// Median delay from a hand-off's arrival to the start of the op that waited for it.
    pub handoff_ns: Option<u64>,
    /// Median gap between two ops of a device when the second had its inputs: the worker's
    /// own time between ops, added to every op's duration.
    pub gap_ns: u64,
    /// Median measured stash of each forward.
    pub stash: BTreeMap<Op, u64>,
    /// Largest workspace of each device, keyed by the first op of its list.
    pub workspace: BTreeMap<Op, u64>,
}

impl Profile {
    /// The median duration of every compute op over `traces` (one per epoch), and the median
    /// hand-off delay.
    pub fn from_traces(scenario: &str, schedule: &str, traces: &[Trace]) -> Self {
        let mut samples: BTreeMap<Op, Vec<u64>> = BTreeMap::new();
        let mut delays = Vec::new();
        let mut gaps = Vec::new();
        for trace in traces {
            let mut on_device: BTreeMap<u32, Vec<&crate::trace::Span>> = BTreeMap::new();
            for span in &trace.spans {
                if let SpanKind::Compute(kind) = span.kind {
                    let op = Op {
                        kind,
                        chunk: span.chunk,
                        stage: span.stage,
                    };
                    samples.entry(op).or_default().push(span.duration_ns());
                    on_device.entry(span.device).or_default().push(span);
                }
            }
            for spans in on_device.values_mut() {
                spans.sort_by_key(|s| s.start_ns);
            }
            // When each op's last input arrived.
            let mut ready: BTreeMap<(OpKind, u32, u32, u32), u64> = BTreeMap::new();
            for transfer in trace.spans.iter().filter(|s| s.hop == 0) {
                if let SpanKind::Transfer(payload) = transfer.kind {
                    let kind = match payload {
                        crate::schedule::lower::Payload::Activation => OpKind::Forward,
                        crate::schedule::lower::Payload::Gradient => OpKind::Backward,
                        crate::schedule::lower::Payload::Weights => OpKind::Optimizer,
                    };
                    let key = (kind, transfer.chunk, transfer.stage, transfer.device);
                    let at = ready.entry(key).or_default();
                    *at = (*at).max(transfer.end_ns);
                }
            }
            // The gap between two ops of a device when the second did not wait for data: what
            // the worker spends between ops.
            for (&device, spans) in &on_device {
                for pair in spans.windows(2) {
                    let SpanKind::Compute(kind) = pair[1].kind else {
                        continue;
                    };
                    let arrived = ready
                        .get(&(kind, pair[1].chunk, pair[1].stage, device))
                        .copied()
                        .unwrap_or(0);
                    if arrived <= pair[0].end_ns && pair[1].start_ns >= pair[0].end_ns {
                        gaps.push(pair[1].start_ns - pair[0].end_ns);
                    }
                }
            }
            for transfer in trace.spans.iter().filter(|s| s.hop == 0) {
                let SpanKind::Transfer(payload) = transfer.kind else {
                    continue;
                };
                let kind = match payload {
                    crate::schedule::lower::Payload::Activation => OpKind::Forward,
                    crate::schedule::lower::Payload::Gradient => OpKind::Backward,
                    crate::schedule::lower::Payload::Weights => OpKind::Optimizer,
                };
                let Some(spans) = on_device.get(&transfer.device) else {
                    continue;
                };
                let Some(i) = spans.iter().position(|s| {
                    s.kind == SpanKind::Compute(kind)
                        && s.chunk == transfer.chunk
                        && s.stage == transfer.stage
                }) else {
                    continue;
                };
                // Only where the receiver sat waiting for this hand-off.
                let idle_since = if i == 0 { 0 } else { spans[i - 1].end_ns };
                if idle_since <= transfer.end_ns && spans[i].start_ns >= transfer.end_ns {
                    delays.push(spans[i].start_ns - transfer.end_ns);
                }
            }
        }
        delays.sort_unstable();
        gaps.sort_unstable();
        let (stash, workspace) = memory_profile(traces);
        Profile {
            scenario: scenario.to_string(),
            schedule: schedule.to_string(),
            ops: samples
                .into_iter()
                .map(|(op, mut ns)| {
                    ns.sort_unstable();
                    (op, ns[ns.len() / 2])
                })
                .collect(),
            handoff_ns: (!delays.is_empty()).then(|| delays[delays.len() / 2]),
            gap_ns: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
            stash,
            workspace,
        }
    }

    /// The profile as JSON text.
    pub fn to_json(&self) -> String {
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|(op, ns)| {
                let mut entry =
                    json!({"op": op.kind.code(), "chunk": op.chunk, "stage": op.stage, "ns": ns});
                if let Some(bytes) = self.stash.get(op) {
                    entry["stash_bytes"] = json!(bytes);
                }
                entry
            })
            .collect();
        let workspace: Vec<Value> = self
            .workspace
            .iter()
            .map(|(op, bytes)| json!({"op": op.kind.code(), "chunk": op.chunk, "stage": op.stage, "bytes": bytes}))
            .collect();
        let doc = json!({"format": "pipegnn-profile v1", "scenario": self.scenario, "schedule": self.schedule, "ops": ops, "handoff_ns": self.handoff_ns, "gap_ns": self.gap_ns, "workspace": workspace});
        serde_json::to_string_pretty(&doc).expect("a JSON value always serializes") + "\n"
    }

    /// Parses a profile written by [`Profile::to_json`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if doc["format"] != "pipegnn-profile v1" {
            return Err("not a pipegnn profile (`format` is not \"pipegnn-profile v1\")".into());
        }
        let text_of = |key: &str| {
            doc[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` is missing"))
        };
        let mut ops = BTreeMap::new();
        let mut stash = BTreeMap::new();
        let mut workspace = BTreeMap::new();
        for (i, entry) in doc["workspace"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .enumerate()
        {
            let op = op_of(entry).map_err(|e| format!("workspace[{i}]: {e}"))?;
            let bytes = entry["bytes"]
                .as_u64()
                .ok_or_else(|| format!("workspace[{i}].bytes is not a non-negative integer"))?;
            workspace.insert(op, bytes);
        }
        for (i, entry) in doc["ops"]
            .as_array()
            .ok_or("`ops` is not a list")?
            .iter()
            .enumerate()
        {
            let kind = match entry["op"].as_str() {
                Some("F") => OpKind::Forward,
                Some("B") => OpKind::Backward,
                Some("U") => OpKind::Optimizer,
                _ => return Err(format!("ops[{i}].op is not F, B or U")),
            };
            let number = |key: &str| {
                entry[key]
                    .as_u64()
                    .ok_or_else(|| format!("ops[{i}].{key} is not a non-negative integer"))
            };
            let op = Op {
                kind,
                chunk: number("chunk")? as u32,
                stage: number("stage")? as u32,
            };
            ops.insert(op, number("ns")?);
            if !entry["stash_bytes"].is_null() {
                stash.insert(op, number("stash_bytes")?);
            }
        }
        let handoff_ns = match &doc["handoff_ns"] {
            Value::Null => None,
            value => Some(
                value
                    .as_u64()
                    .ok_or("`handoff_ns` is not a non-negative integer")?,
            ),
        };
        let gap_ns = match &doc["gap_ns"] {
            Value::Null => 0,
            value => value
                .as_u64()
                .ok_or("`gap_ns` is not a non-negative integer")?,
        };
        Ok(Profile {
            scenario: text_of("scenario")?,
            schedule: text_of("schedule")?,
            ops,
            handoff_ns,
            gap_ns,
            stash,
            workspace,
        })
    }
}

/// Measured op times over another model's bytes and memory; ops the profile lacks fall back to
/// the other model.
pub struct ProfiledCost<'a> {
    /// The measured durations.
    pub profile: &'a Profile,
    /// Bytes, memory, and the durations the profile lacks.
    pub fallback: &'a dyn CostModel,
}

impl CostModel for ProfiledCost<'_> {
    fn op_ns(&self, op: Op) -> u64 {
        match self.profile.ops.get(&op) {
            Some(&ns) => ns + self.profile.gap_ns,
            None => self.fallback.op_ns(op),
        }
    }

    fn handoff_bytes(&self, handoff: &Handoff) -> u64 {
        self.fallback.handoff_bytes(handoff)
    }

    fn stash(&self, forward: Op) -> (u64, u64) {
        match self.profile.stash.get(&forward) {
            Some(&bytes) => (bytes, 0),
            None => self.fallback.stash(forward),
        }
    }

    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        let mut resident = self.fallback.resident_bytes(order);
        if let Some(&bytes) = order.first().and_then(|op| self.profile.workspace.get(op)) {
            resident.push((MemoryCategory::Workspace, bytes));
        }
        resident
    }
}

/// An op named by `{"op", "chunk", "stage"}`.
fn op_of(entry: &Value) -> Result<Op, String> {
    let kind = match entry["op"].as_str() {
        Some("F") => OpKind::Forward,
        Some("B") => OpKind::Backward,
        Some("U") => OpKind::Optimizer,
        _ => return Err("op is not F, B or U".into()),
    };
    let number = |key: &str| {
        entry[key]
            .as_u64()
            .map(|n| n as u32)
            .ok_or_else(|| format!("{key} is not a non-negative integer"))
    };
    Ok(Op {
        kind,
        chunk: number("chunk")?,
        stage: number("stage")?,
    })
}

/// From measured traces: each forward's median stash (the activations it added, plus the input
/// it received), and each device's largest workspace (keyed by its first op).
fn memory_profile(traces: &[Trace]) -> (BTreeMap<Op, u64>, BTreeMap<Op, u64>) {
    let mut stash: BTreeMap<Op, Vec<u64>> = BTreeMap::new();
    let mut workspace: BTreeMap<Op, Vec<u64>> = BTreeMap::new();
    for trace in traces.iter().filter(|t| !t.memory.is_empty()) {
        let mut events: Vec<&crate::trace::MemoryEvent> = trace.memory.iter().collect();
        events.sort_by_key(|e| (e.device, e.time_ns));
        // Per device, the activations level after each event time, for lookups by time.
        let mut levels: BTreeMap<u32, Vec<(u64, i64)>> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.category == MemoryCategory::Activations)
        {
            let series = levels.entry(e.device).or_default();
            let now = series.last().map_or(0, |&(_, l)| l) + e.delta_bytes;
            match series.last_mut() {
                Some(last) if last.0 == e.time_ns => last.1 = now,
                _ => series.push((e.time_ns, now)),
            }
        }
        // The activations level of a device once every event at or before `t` has happened.
        let level = |device: u32, t: u64| -> i64 {
            let Some(series) = levels.get(&device) else {
                return 0;
            };
            match series.partition_point(|&(time, _)| time <= t) {
                0 => 0,
                i => series[i - 1].1,
            }
        };
        let mut received: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for span in &trace.spans {
            if span.kind == SpanKind::Transfer(crate::schedule::lower::Payload::Activation)
                && span.hop == 0
            {
                *received.entry((span.chunk, span.stage)).or_default() += span.bytes;
            }
        }
        let mut first: BTreeMap<u32, &crate::trace::Span> = BTreeMap::new();
        for span in &trace.spans {
            if let SpanKind::Compute(kind) = span.kind {
                let entry = first.entry(span.device).or_insert(span);
                if span.start_ns < entry.start_ns {
                    *entry = span;
                }
                if kind == OpKind::Forward {
                    let kept = level(span.device, span.end_ns) - level(span.device, span.start_ns);
                    let input = received
                        .get(&(span.chunk, span.stage))
                        .copied()
                        .unwrap_or(0);
                    stash
                        .entry(Op::forward(span.chunk, span.stage))
                        .or_default()
                        .push((kept.max(0) as u64) + input);
                }
            }
        }
        for (device, span) in first {
            let SpanKind::Compute(kind) = span.kind else {
                continue;
            };
            let mut now = 0i64;
            let mut most = 0i64;
            for e in events
                .iter()
                .filter(|e| e.device == device && e.category == MemoryCategory::Workspace)
            {
                now += e.delta_bytes;
                most = most.max(now);
            }
            let op = Op {
                kind,
                chunk: span.chunk,
                stage: span.stage,
            };
            workspace.entry(op).or_default().push(most.max(0) as u64);
        }
    }
    let median = |map: BTreeMap<Op, Vec<u64>>| {
        map.into_iter()
            .map(|(op, mut v)| {
                v.sort_unstable();
                (op, v[v.len() / 2])
            })
            .collect()
    };
    (median(stash), median(workspace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip() {
        let mut profile = Profile {
            scenario: "s".into(),
            schedule: "gpipe-drop".into(),
            ops: BTreeMap::new(),
            handoff_ns: Some(20_000),
            gap_ns: 1_500,
            stash: BTreeMap::from([(Op::forward(3, 1), 4096)]),
            workspace: BTreeMap::from([(Op::forward(0, 1), 1 << 20)]),
        };
        profile.ops.insert(Op::forward(3, 1), 1234);
        profile.ops.insert(Op::optimizer(0, 0), 7);
        assert_eq!(Profile::parse(&profile.to_json()), Ok(profile));
        assert!(Profile::parse("{}")
            .unwrap_err()
            .contains("not a pipegnn profile"));
    }
}
