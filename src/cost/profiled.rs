//! The profiled cost tier: op times measured by the executor (`pipegnn calibrate`) on this
//! machine for a scenario's shapes; bytes and memory still come from the analytic model.
//!
//! A profile is JSON: `{"format": "pipegnn-profile v1", "scenario": NAME, "schedule": LABEL,
//! "ops": [{"op": "F", "chunk": 0, "stage": 1, "ns": 123456}, ...], "handoff_ns": 25000}`, one
//! entry per op with its median duration over the measured epochs, and the median time from a
//! hand-off's arrival to the start of the op waiting for it (the receiving worker's wake-up: on
//! one machine without link emulation it is what a hand-off costs beyond the link).

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
}

impl Profile {
    /// The median duration of every compute op over `traces` (one per epoch), and the median
    /// hand-off delay.
    pub fn from_traces(scenario: &str, schedule: &str, traces: &[Trace]) -> Self {
        let mut samples: BTreeMap<Op, Vec<u64>> = BTreeMap::new();
        let mut delays = Vec::new();
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
        }
    }

    /// The profile as JSON text.
    pub fn to_json(&self) -> String {
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|(op, ns)| json!({"op": op.kind.code(), "chunk": op.chunk, "stage": op.stage, "ns": ns}))
            .collect();
        let doc = json!({"format": "pipegnn-profile v1", "scenario": self.scenario, "schedule": self.schedule, "ops": ops, "handoff_ns": self.handoff_ns});
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
        }
        let handoff_ns = match &doc["handoff_ns"] {
            Value::Null => None,
            value => Some(
                value
                    .as_u64()
                    .ok_or("`handoff_ns` is not a non-negative integer")?,
            ),
        };
        Ok(Profile {
            scenario: text_of("scenario")?,
            schedule: text_of("schedule")?,
            ops,
            handoff_ns,
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
        self.profile
            .ops
            .get(&op)
            .copied()
            .unwrap_or_else(|| self.fallback.op_ns(op))
    }

    fn handoff_bytes(&self, handoff: &Handoff) -> u64 {
        self.fallback.handoff_bytes(handoff)
    }

    fn stash(&self, forward: Op) -> (u64, u64) {
        self.fallback.stash(forward)
    }

    fn resident_bytes(&self, order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        self.fallback.resident_bytes(order)
    }
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
        };
        profile.ops.insert(Op::forward(3, 1), 1234);
        profile.ops.insert(Op::optimizer(0, 0), 7);
        assert_eq!(Profile::parse(&profile.to_json()), Ok(profile));
        assert!(Profile::parse("{}")
            .unwrap_err()
            .contains("not a pipegnn profile"));
    }
}
