//! Human-readable tables for the terminal.

use std::fmt::Write as _;

use super::metrics::Metrics;
use crate::gnn::GraphMetrics;
use crate::trace::MemoryCategory;
use crate::units::{format_bytes, format_duration_ns};

/// Left-aligns the first column and right-aligns the rest.
fn render_rows(rows: &[Vec<String>]) -> String {
    let n_cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n_cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                write!(line, "{cell:<w$}", w = widths[c]).expect("writing to a String cannot fail");
            } else {
                write!(line, "  {cell:>w$}", w = widths[c])
                    .expect("writing to a String cannot fail");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// How a schedule treated the graph's edges, for the summary's last column.
fn edges_note(graph: Option<&GraphMetrics>) -> String {
    let Some(graph) = graph else {
        return String::new();
    };
    let mut notes = Vec::new();
    if let Some(f) = graph.dropped_edge_fraction {
        notes.push(format!("{} dropped", percent(f)));
    }
    if let Some(f) = graph.stale_read_fraction {
        notes.push(format!("{} stale", percent(f)));
    }
    if let Some(f) = graph.redundant_compute_factor {
        notes.push(format!("{f:.2}x compute"));
    }
    notes.join(", ")
}

/// One schedule's line of [`summary`].
pub struct SummaryRow<'a> {
    /// The schedule's name.
    pub label: String,
    /// Chunks per epoch.
    pub chunks: u32,
    /// Its metrics.
    pub metrics: &'a Metrics,
    /// Figures about the graph's chunks (GNN workloads).
    pub graph: Option<&'a GraphMetrics>,
    /// Whether it fits (the caller's verdict: the rule needs the scenario).
    pub fits: bool,
}

/// One line per schedule: the comparison `--schedule all` prints first.
pub fn summary(results: &[SummaryRow<'_>]) -> String {
    let mut rows = vec![vec![
        "schedule".to_string(),
        "chunks".into(),
        "epoch time".into(),
        "bubble".into(),
        "communication".into(),
        "peak memory".into(),
        "fits".into(),
        "edges".into(),
    ]];
    for row in results {
        let m = row.metrics;
        let peak = m
            .devices
            .iter()
            .map(|d| d.peak_memory_bytes)
            .max()
            .unwrap_or(0);
        rows.push(vec![
            row.label.clone(),
            row.chunks.to_string(),
            format_duration_ns(m.epoch_time_ns),
            percent(m.bubble_fraction),
            format_bytes(m.communication_bytes),
            format_bytes(peak),
            if row.fits { "yes" } else { "NO" }.into(),
            edges_note(row.graph),
        ]);
    }
    render_rows(&rows)
}

/// Per-device and per-link detail of one schedule.
pub fn detail(metrics: &Metrics) -> String {
    let mut rows = vec![vec![
        "device".to_string(),
        "busy".into(),
        "idle".into(),
        "fill/drain".into(),
        "comm wait".into(),
        "bubble".into(),
        "in flight".into(),
        "peak memory".into(),
        "largest part".into(),
        "capacity".into(),
        "fits".into(),
    ]];
    for d in &metrics.devices {
        let largest = MemoryCategory::ALL
            .iter()
            .max_by_key(|c| (d.memory_at_peak[c.index()], std::cmp::Reverse(c.index())))
            .filter(|c| d.memory_at_peak[c.index()] > 0)
            .map_or("-".to_string(), |c| c.name().to_string());
        rows.push(vec![
            d.name.clone(),
            format_duration_ns(d.busy_ns),
            format_duration_ns(d.idle_ns),
            format_duration_ns(d.fill_drain_ns),
            format_duration_ns(d.communication_wait_ns),
            percent(d.bubble_fraction),
            d.peak_in_flight.to_string(),
            format_bytes(d.peak_memory_bytes),
            largest,
            d.capacity_bytes.map_or("-".to_string(), format_bytes),
            if d.fits() { "yes" } else { "NO" }.into(),
        ]);
    }
    let mut out = render_rows(&rows);
    if !metrics.links.is_empty() {
        let mut rows = vec![vec![
            "link".to_string(),
            "bytes".into(),
            "busy".into(),
            "utilisation".into(),
        ]];
        for l in &metrics.links {
            let utilisation = if metrics.epoch_time_ns == 0 {
                0.0
            } else {
                l.busy_ns as f64 / metrics.epoch_time_ns as f64
            };
            rows.push(vec![
                format!("{} -> {}", l.from, l.to),
                format_bytes(l.bytes),
                format_duration_ns(l.busy_ns),
                percent(utilisation),
            ]);
        }
        out.push('\n');
        out.push_str(&render_rows(&rows));
    }
    out
}
