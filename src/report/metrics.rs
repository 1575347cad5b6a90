//! Metrics computed from a trace, the same for predicted and measured traces.

use crate::schedule::OpKind;
use crate::trace::{Lane, MemoryCategory, SpanKind, Trace};

/// One device's figures over the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceMetrics {
    /// Device index in the trace.
    pub device: usize,
    /// Device name.
    pub name: String,
    /// Time spent in compute ops.
    pub busy_ns: u64,
    /// `epoch time - busy`.
    pub idle_ns: u64,
    /// The part of idle time spent waiting for data that was on a link.
    pub communication_wait_ns: u64,
    /// The rest of idle time: pipeline fill and drain, waiting on other stages' compute.
    pub fill_drain_ns: u64,
    /// `idle / epoch time`.
    pub bubble_fraction: f64,
    /// Peak memory over the epoch.
    pub peak_memory_bytes: u64,
    /// Memory by category at the moment of the peak.
    pub memory_at_peak: [u64; MemoryCategory::ALL.len()],
    /// Capacity, where known.
    pub capacity_bytes: Option<u64>,
    /// Largest number of chunks with forward started and backward not finished.
    pub peak_in_flight: u32,
}

impl DeviceMetrics {
    /// Whether the peak fits the capacity (true when the capacity is unknown).
    pub fn fits(&self) -> bool {
        self.capacity_bytes
            .is_none_or(|c| self.peak_memory_bytes <= c)
    }
}

/// One directed link's traffic over the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkMetrics {
    /// Link index in the trace.
    pub link: usize,
    /// Sender's name.
    pub from: String,
    /// Receiver's name.
    pub to: String,
    /// Bytes carried.
    pub bytes: u64,
    /// Time the link was occupied.
    pub busy_ns: u64,
}

/// Everything reported about one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// From the first span's start (time 0) to the last span's end.
    pub epoch_time_ns: u64,
    /// Mean bubble fraction over the devices that ran ops.
    pub bubble_fraction: f64,
    /// Bytes handed between devices (each transfer once, however many hops).
    pub communication_bytes: u64,
    /// Devices that ran at least one op, in device order.
    pub devices: Vec<DeviceMetrics>,
    /// Links that carried traffic, in link order.
    pub links: Vec<LinkMetrics>,
}

/// Computes the metrics of a trace.
///
/// A device's idle time is split by what it overlapped: idle time while data addressed to the
/// device was on a link (from the moment the sender had it ready, queueing included, to its
/// arrival) is communication wait; the rest is pipeline fill, drain and waiting on other stages.
///
/// # Complexity
/// O(n log n) in the number of spans.
pub fn compute(trace: &Trace) -> Metrics {
    let epoch_time_ns = trace.spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let n_devices = trace.devices.len();
    let mut compute_spans: Vec<Vec<usize>> = vec![Vec::new(); n_devices];
    let mut incoming: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n_devices];
    let mut links: Vec<LinkMetrics> = trace
        .links
        .iter()
        .enumerate()
        .map(|(link, l)| LinkMetrics {
            link,
            from: l.from.clone(),
            to: l.to.clone(),
            bytes: 0,
            busy_ns: 0,
        })
        .collect();
    let mut communication_bytes = 0;
    for (i, span) in trace.spans.iter().enumerate() {
        match (span.lane(), span.kind) {
            (Lane::Device(d), SpanKind::Compute(_)) => compute_spans[d as usize].push(i),
            (Lane::Link(l), SpanKind::Transfer(_)) => {
                let link = &mut links[l as usize];
                link.bytes += span.bytes;
                link.busy_ns += span.duration_ns();
                if span.hop == 0 {
                    communication_bytes += span.bytes;
                    incoming[span.device as usize].push((span.requested_ns, span.end_ns));
                }
            }
            _ => {}
        }
    }

    let peaks = memory_peaks(trace);
    let mut devices = Vec::new();
    for (device, spans) in compute_spans.iter_mut().enumerate() {
        if spans.is_empty() {
            continue;
        }
        spans.sort_by_key(|&i| (trace.spans[i].start_ns, trace.spans[i].end_ns));
        let (mut busy_ns, mut cursor) = (0, 0);
        let (mut in_flight, mut peak_in_flight) = (0u32, 0u32);
        let (mut last_forward, mut last_free) = (None, None);
        let mut idle: Vec<(u64, u64)> = Vec::new();
        for &i in spans.iter() {
            let span = &trace.spans[i];
            busy_ns += span.duration_ns();
            if span.start_ns > cursor {
                idle.push((cursor, span.start_ns));
            }
            cursor = cursor.max(span.end_ns);
            // An op run in pieces (a graph-parallel product phase by phase) is one op: a
            // span continuing the op of the previous span of its kind does not count again.
            let key = (span.kind, span.chunk, span.stage);
            match span.kind {
                SpanKind::Compute(OpKind::Forward) if last_forward != Some(key) => {
                    last_forward = Some(key);
                    in_flight += 1;
                    peak_in_flight = peak_in_flight.max(in_flight);
                }
                SpanKind::Compute(kind) if kind.frees_stash() && last_free != Some(key) => {
                    last_free = Some(key);
                    in_flight = in_flight.saturating_sub(1)
                }
                _ => {}
            }
        }
        if epoch_time_ns > cursor {
            idle.push((cursor, epoch_time_ns));
        }
        let communication_wait_ns = overlap(&idle, &union(&mut incoming[device]));
        let idle_ns = epoch_time_ns - busy_ns.min(epoch_time_ns);
        let (peak_memory_bytes, memory_at_peak) = peaks[device];
        devices.push(DeviceMetrics {
            device,
            name: trace.devices[device].name.clone(),
            busy_ns,
            idle_ns,
            communication_wait_ns,
            fill_drain_ns: idle_ns - communication_wait_ns.min(idle_ns),
            bubble_fraction: if epoch_time_ns == 0 {
                0.0
            } else {
                idle_ns as f64 / epoch_time_ns as f64
            },
            peak_memory_bytes,
            memory_at_peak,
            capacity_bytes: trace.devices[device].capacity_bytes,
            peak_in_flight,
        });
    }
    let bubble_fraction = if devices.is_empty() {
        0.0
    } else {
        devices.iter().map(|d| d.bubble_fraction).sum::<f64>() / devices.len() as f64
    };
    links.retain(|l| l.bytes > 0 || l.busy_ns > 0);
    Metrics {
        epoch_time_ns,
        bubble_fraction,
        communication_bytes,
        devices,
        links,
    }
}

/// Merges intervals into a sorted list of disjoint ones.
fn union(intervals: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    intervals.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in intervals.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Total length of the intersection of two sorted lists of disjoint intervals.
fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        total += end.saturating_sub(start);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// Per device, the peak total memory and the breakdown at that moment. Events at the same
/// instant are applied together, so a free and an allocation at one time do not count twice.
/// Devices are independent: each one's events are taken in time order on their own (recorded
/// in any order; a stable sort of what is mostly sorted already).
fn memory_peaks(trace: &Trace) -> Vec<(u64, [u64; MemoryCategory::ALL.len()])> {
    let n = trace.devices.len();
    let mut peaks = vec![(0u64, [0u64; MemoryCategory::ALL.len()]); n];
    let mut by_device: Vec<Vec<&crate::trace::MemoryEvent>> = vec![Vec::new(); n];
    for event in &trace.memory {
        by_device[event.device as usize].push(event);
    }
    for (events, peak) in by_device.iter_mut().zip(&mut peaks) {
        events.sort_by_key(|e| e.time_ns);
        let mut current = [0i64; MemoryCategory::ALL.len()];
        let mut i = 0;
        while i < events.len() {
            let time = events[i].time_ns;
            while i < events.len() && events[i].time_ns == time {
                current[events[i].category.index()] += events[i].delta_bytes;
                i += 1;
            }
            let total = current.iter().sum::<i64>().max(0) as u64;
            if total > peak.0 {
                *peak = (total, current.map(|b| b.max(0) as u64));
            }
        }
    }
    peaks
}
