//! Trace -> Chrome trace-event JSON, viewable in Perfetto (ui.perfetto.dev) or chrome://tracing.
//!
//! Process 1 holds a row per device, process 2 a row per link; memory appears as a counter track
//! per device with one series per category. Timestamps are microseconds, as the format requires.

use serde_json::{json, Value};

use crate::schedule::OpKind;
use crate::trace::{Lane, MemoryCategory, SpanKind, Trace};

const DEVICES_PID: u32 = 1;
const LINKS_PID: u32 = 2;

fn micros(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Renders the trace as a Chrome trace-event JSON document.
pub fn render(trace: &Trace) -> String {
    let mut events: Vec<Value> = vec![
        json!({"name": "process_name", "ph": "M", "pid": DEVICES_PID, "args": {"name": "devices"}}),
        json!({"name": "process_name", "ph": "M", "pid": LINKS_PID, "args": {"name": "links"}}),
    ];
    for (i, device) in trace.devices.iter().enumerate() {
        events.push(json!({"name": "thread_name", "ph": "M", "pid": DEVICES_PID, "tid": i, "args": {"name": device.name}}));
    }
    for (i, link) in trace.links.iter().enumerate() {
        let name = format!("{} -> {}", link.from, link.to);
        events.push(json!({"name": "thread_name", "ph": "M", "pid": LINKS_PID, "tid": i, "args": {"name": name}}));
    }
    for span in &trace.spans {
        let (pid, tid) = match span.lane() {
            Lane::Device(d) => (DEVICES_PID, d),
            Lane::Link(l) => (LINKS_PID, l),
        };
        let (name, category) = match span.kind {
            SpanKind::Compute(OpKind::Optimizer) => (format!("U{}", span.stage), "optimizer"),
            SpanKind::Compute(kind) => (
                format!("{}{}", kind.code(), span.chunk),
                if kind == OpKind::Forward {
                    "forward"
                } else {
                    "backward"
                },
            ),
            SpanKind::Transfer(payload) => {
                (format!("{} {}", payload.name(), span.chunk), payload.name())
            }
        };
        let mut event = json!({
            "name": name, "cat": category, "ph": "X", "pid": pid, "tid": tid,
            "ts": micros(span.start_ns), "dur": micros(span.duration_ns()),
            "args": {"chunk": span.chunk, "stage": span.stage},
        });
        if let SpanKind::Transfer(_) = span.kind {
            event["args"]["bytes"] = json!(span.bytes);
            event["args"]["hop"] = json!(span.hop);
        }
        events.push(event);
    }
    let mut current = vec![[0i64; MemoryCategory::ALL.len()]; trace.devices.len()];
    for (i, event) in trace.memory.iter().enumerate() {
        let device = event.device as usize;
        current[device][event.category.index()] += event.delta_bytes;
        // One counter sample per device and instant, after every event of that instant.
        let later_same_instant = trace.memory[i + 1..]
            .iter()
            .take_while(|e| e.time_ns == event.time_ns)
            .any(|e| e.device == event.device);
        if later_same_instant {
            continue;
        }
        let series: serde_json::Map<String, Value> = MemoryCategory::ALL
            .iter()
            .map(|c| (c.name().to_string(), json!(current[device][c.index()])))
            .collect();
        events.push(json!({
            "name": format!("memory {}", trace.devices[device].name), "ph": "C",
            "pid": DEVICES_PID, "tid": device, "ts": micros(event.time_ns), "args": series,
        }));
    }
    let doc = json!({"traceEvents": events, "displayTimeUnit": "ns"});
    serde_json::to_string(&doc).expect("a JSON value always serializes")
}
