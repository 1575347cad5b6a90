//! Trace -> Chrome trace-event JSON, viewable in Perfetto (ui.perfetto.dev) or chrome://tracing.
//!
//! Process 1 holds a row per device, process 2 a row per link; memory appears as a counter track
//! per device with one series per category. Timestamps are microseconds, as the format requires.
//!
//! The document is written event by event: a trace of millions of spans becomes a file of
//! hundreds of megabytes without that file, or its events as JSON values, ever being held in
//! memory.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::schedule::OpKind;
use crate::trace::{Lane, MemoryCategory, MemoryEvent, SpanKind, Trace};

const DEVICES_PID: u32 = 1;
const LINKS_PID: u32 = 2;

fn micros(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Renders the trace as a Chrome trace-event JSON document (see [`write`]).
pub fn render(trace: &Trace) -> String {
    let mut bytes = Vec::new();
    write(trace, &mut bytes).expect("writing to a Vec cannot fail");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// Writes the trace as a Chrome trace-event JSON document to `out`, one event at a time:
/// `{"displayTimeUnit":"ns","traceEvents":[...]}`, metadata events first, then a complete event
/// per span, then the memory counters. Buffer `out` (a `BufWriter`) when it is a file.
///
/// # Errors
/// Whatever `out` returns.
pub fn write(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")?;
    let mut first = true;
    let mut event = |value: Value| -> io::Result<()> {
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        serde_json::to_writer(&mut *out, &value).map_err(io::Error::from)
    };
    event(
        json!({"name": "process_name", "ph": "M", "pid": DEVICES_PID, "args": {"name": "devices"}}),
    )?;
    event(json!({"name": "process_name", "ph": "M", "pid": LINKS_PID, "args": {"name": "links"}}))?;
    for (i, device) in trace.devices.iter().enumerate() {
        event(
            json!({"name": "thread_name", "ph": "M", "pid": DEVICES_PID, "tid": i, "args": {"name": device.name}}),
        )?;
    }
    for (i, link) in trace.links.iter().enumerate() {
        let name = format!("{} -> {}", link.from, link.to);
        event(
            json!({"name": "thread_name", "ph": "M", "pid": LINKS_PID, "tid": i, "args": {"name": name}}),
        )?;
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
                match kind {
                    OpKind::Forward => "forward",
                    OpKind::InputGrad => "input_gradient",
                    OpKind::WeightGrad => "weight_gradient",
                    _ => "backward",
                },
            ),
            SpanKind::Transfer(payload) => {
                (format!("{} {}", payload.name(), span.chunk), payload.name())
            }
        };
        let mut value = json!({
            "name": name, "cat": category, "ph": "X", "pid": pid, "tid": tid,
            "ts": micros(span.start_ns), "dur": micros(span.duration_ns()),
            "args": {"chunk": span.chunk, "stage": span.stage},
        });
        if let SpanKind::Transfer(_) = span.kind {
            value["args"]["bytes"] = json!(span.bytes);
            value["args"]["hop"] = json!(span.hop);
        }
        event(value)?;
    }
    let mut current = vec![[0i64; MemoryCategory::ALL.len()]; trace.devices.len()];
    // Counters in time order (a sink may record events in another; stable, so ties keep theirs).
    let mut events: Vec<&MemoryEvent> = trace.memory.iter().collect();
    events.sort_by_key(|e| e.time_ns);
    for (i, &memory) in events.iter().enumerate() {
        let device = memory.device as usize;
        current[device][memory.category.index()] += memory.delta_bytes;
        // One counter sample per device and instant, after every event of that instant.
        let later_same_instant = events[i + 1..]
            .iter()
            .take_while(|e| e.time_ns == memory.time_ns)
            .any(|e| e.device == memory.device);
        if later_same_instant {
            continue;
        }
        let series: serde_json::Map<String, Value> = MemoryCategory::ALL
            .iter()
            .map(|c| (c.name().to_string(), json!(current[device][c.index()])))
            .collect();
        event(json!({
            "name": format!("memory {}", trace.devices[device].name), "ph": "C",
            "pid": DEVICES_PID, "tid": device, "ts": micros(memory.time_ns), "args": series,
        }))?;
    }
    out.write_all(b"]}")
}
