//! Plots with `plotters`, as SVG text or PNG bytes: timelines, sweeps, memory, predicted vs measured.
//!
//! Pure: every figure is built from data (a [`Trace`], [`Metrics`], or a saved JSON document) into
//! a [`Figure`] whose fields are exactly the numbers it draws, so tests can hold the picture's
//! data to its source; [`Figure::render`] turns it into bytes and the CLI writes them. Text is
//! drawn with the bundled DejaVu Sans (`fonts/`, its licence beside it), so PNGs never depend on
//! the system's fonts.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::metrics::Metrics;
use crate::schedule::OpKind;
use crate::trace::{Lane, MemoryCategory, SpanKind, Trace};

const FONT_BYTES: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

/// A failure to draw (a backend error, or the bundled font not loading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError(pub String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot draw the plot: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(err: DrawingAreaErrorKind<E>) -> Self {
        PlotError(err.to_string())
    }
}

/// The image format of a rendered figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SVG text (UTF-8).
    Svg,
    /// A PNG image.
    Png,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// What a timeline bar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// A forward op.
    Forward,
    /// A backward op.
    Backward,
    /// The input-gradient half of a split backward.
    InputGrad,
    /// The weight-gradient half of a split backward.
    WeightGrad,
    /// An optimizer step.
    Optimizer,
    /// A transfer on a link.
    Transfer,
}

impl BarKind {
    fn color(self) -> RGBColor {
        match self {
            BarKind::Forward => RGBColor(66, 133, 244),
            BarKind::Backward => RGBColor(234, 134, 30),
            BarKind::InputGrad => RGBColor(219, 68, 55),
            BarKind::WeightGrad => RGBColor(244, 180, 0),
            BarKind::Optimizer => RGBColor(52, 168, 83),
            BarKind::Transfer => RGBColor(128, 128, 128),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BarKind::Forward => "forward",
            BarKind::Backward => "backward",
            BarKind::InputGrad => "input gradient",
            BarKind::WeightGrad => "weight gradient",
            BarKind::Optimizer => "optimizer",
            BarKind::Transfer => "transfer",
        }
    }
}

/// One bar of a timeline: a span of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineBar {
    /// Index into [`TimelineData::lanes`].
    pub lane: usize,
    /// What ran.
    pub kind: BarKind,
    /// The span's chunk.
    pub chunk: u32,
    /// Start, nanoseconds from the epoch's start.
    pub start_ns: u64,
    /// End, nanoseconds from the epoch's start.
    pub end_ns: u64,
}

/// A pipeline timeline: a row per device, then a row per link that carried traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineData {
    /// Panel title.
    pub title: String,
    /// Row names, top to bottom: devices, then links as `from -> to`.
    pub lanes: Vec<String>,
    /// One bar per span, in the trace's span order.
    pub bars: Vec<TimelineBar>,
    /// The time axis ends here.
    pub epoch_ns: u64,
}

/// The timeline of a trace: every span becomes a bar on its device's or link's row.
pub fn timeline_data(title: &str, trace: &Trace) -> TimelineData {
    let mut lanes: Vec<String> = trace.devices.iter().map(|d| d.name.clone()).collect();
    let mut link_lane: BTreeMap<u32, usize> = BTreeMap::new();
    for span in &trace.spans {
        if let Lane::Link(l) = span.lane() {
            link_lane.entry(l).or_insert(0);
        }
    }
    for (l, lane) in link_lane.iter_mut() {
        *lane = lanes.len();
        let link = &trace.links[*l as usize];
        lanes.push(format!("{} -> {}", link.from, link.to));
    }
    let bars = trace
        .spans
        .iter()
        .map(|span| {
            let (lane, kind) = match span.kind {
                SpanKind::Compute(op) => (
                    span.lane_index as usize,
                    match op {
                        OpKind::Forward => BarKind::Forward,
                        OpKind::Backward => BarKind::Backward,
                        OpKind::InputGrad => BarKind::InputGrad,
                        OpKind::WeightGrad => BarKind::WeightGrad,
                        OpKind::Optimizer => BarKind::Optimizer,
                    },
                ),
                SpanKind::Transfer(_) => (link_lane[&span.lane_index], BarKind::Transfer),
            };
            TimelineBar {
                lane,
                kind,
                chunk: span.chunk,
                start_ns: span.start_ns,
                end_ns: span.end_ns,
            }
        })
        .collect();
    TimelineData {
        title: title.to_string(),
        lanes,
        bars,
        epoch_ns: trace.spans.iter().map(|s| s.end_ns).max().unwrap_or(0),
    }
}

/// A named line of points, in the units of its chart's axis labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points, sorted by x.
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// One device's stacked memory bar.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBar {
    /// Device name.
    pub device: String,
    /// Bytes by category at the peak, in [`MemoryCategory::ALL`] order.
    pub bytes: [u64; MemoryCategory::ALL.len()],
    /// Capacity, where known.
    pub capacity_bytes: Option<u64>,
}

/// Peak memory per device, stacked by category.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryData {
    /// Title.
    pub title: String,
    /// A bar per device.
    pub devices: Vec<MemoryBar>,
}

/// The memory bars of a result: each device's `memory_at_peak` and capacity.
pub fn memory_data(title: &str, metrics: &Metrics) -> MemoryData {
    MemoryData {
        title: title.to_string(),
        devices: metrics
            .devices
            .iter()
            .map(|d| MemoryBar {
                device: d.name.clone(),
                bytes: d.memory_at_peak,
                capacity_bytes: d.capacity_bytes,
            })
            .collect(),
    }
}

/// One predicted-against-measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparePoint {
    /// Metric name (`epoch_time_s`, `busy_s`, ...).
    pub name: String,
    /// Device or link, where the metric has one.
    pub device: Option<String>,
    /// Predicted value.
    pub predicted: f64,
    /// Measured value.
    pub measured: f64,
}

/// Predicted against measured, on log axes (points with a value that is not positive are not
/// drawn, as a log axis cannot show them, and are not in `points`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompareData {
    /// Title.
    pub title: String,
    /// The points drawn.
    pub points: Vec<ComparePoint>,
}

/// A figure ready to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// One timeline, or predicted and measured side by side.
    Timeline(Vec<TimelineData>),
    /// A line chart.
    Lines(LineChart),
    /// Stacked memory bars.
    Memory(MemoryData),
    /// Predicted against measured.
    Compare(CompareData),
}

/// One result of a sweep, or of an in-process simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Schedule name.
    pub schedule: String,
    /// Chunks per epoch.
    pub chunks: u32,
    /// Devices used.
    pub devices: u32,
    /// Epoch time in seconds.
    pub epoch_time_s: f64,
    /// Mean bubble fraction (0..1).
    pub bubble_fraction: f64,
}

/// Bubble fraction (in %) against chunks, a line per schedule (and device count, when the points
/// have several).
pub fn bubble_vs_chunks(title: &str, points: &[SweepPoint]) -> LineChart {
    let several = distinct(points.iter().map(|p| p.devices)) > 1;
    let series = group(points, |p| {
        let key = if several {
            format!("{}, {} devices", p.schedule, p.devices)
        } else {
            p.schedule.clone()
        };
        (key, p.chunks as f64, 100.0 * p.bubble_fraction)
    });
    LineChart {
        title: title.to_string(),
        x_label: "chunks per epoch".into(),
        y_label: "bubble (% of epoch, mean over devices)".into(),
        series,
    }
}

/// Epoch time (in ms) against devices, a line per schedule (and chunk count, when the points
/// have several).
pub fn epoch_time_vs_devices(title: &str, points: &[SweepPoint]) -> LineChart {
    let several = distinct(points.iter().map(|p| p.chunks)) > 1;
    let series = group(points, |p| {
        let key = if several {
            format!("{}, {} chunks", p.schedule, p.chunks)
        } else {
            p.schedule.clone()
        };
        (key, p.devices as f64, 1e3 * p.epoch_time_s)
    });
    LineChart {
        title: title.to_string(),
        x_label: "devices".into(),
        y_label: "epoch time (ms)".into(),
        series,
    }
}

/// Communication per epoch (in MiB) against the number of layers: `(schedule, layers, bytes)`.
pub fn communication_vs_depth(title: &str, points: &[(String, u32, u64)]) -> LineChart {
    LineChart {
        title: title.to_string(),
        x_label: "layers".into(),
        y_label: "communication per epoch (MiB)".into(),
        series: group(points, |(s, d, b)| (s.clone(), *d as f64, *b as f64 / MIB)),
    }
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn distinct(values: impl Iterator<Item = u32>) -> usize {
    let mut v: Vec<u32> = values.collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Groups points into series by key, in first-seen order, each sorted by x.
fn group<T>(items: &[T], f: impl Fn(&T) -> (String, f64, f64)) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for item in items {
        let (key, x, y) = f(item);
        match series.iter_mut().find(|s| s.label == key) {
            Some(s) => s.points.push((x, y)),
            None => series.push(Series {
                label: key,
                points: vec![(x, y)],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

// ---------------------------------------------------------------------------------------------
// Saved JSON documents.

/// Turns saved JSON documents (`simulate`/`run` results, `compare` results, Chrome traces from
/// `--trace`, sweeps) into named figures. `docs` are `(file name, text)`; a figure's name starts
/// with its file's stem, except the accuracy curves of every run result, which overlay in one
/// `accuracy` figure. An unknown or malformed document is an error naming its file.
pub fn figures_from_documents(docs: &[(&str, &str)]) -> Result<Vec<(String, Figure)>, String> {
    let mut figures = Vec::new();
    let mut accuracy: Vec<Series> = Vec::new();
    for (file, text) in docs {
        let stem = stem(file);
        let fail = |why: String| format!("{file}: {why}");
        let doc: Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
        if let Some(events) = doc.get("traceEvents") {
            let data = timeline_from_chrome(&stem, events).map_err(fail)?;
            figures.push((format!("{stem}-timeline"), Figure::Timeline(vec![data])));
        } else if let Some(metrics) = doc.get("metrics") {
            let data = compare_from_json(&stem, metrics).map_err(fail)?;
            figures.push((format!("{stem}-compare"), Figure::Compare(data)));
        } else if let (Some(_), Some(points)) = (doc.get("axes"), doc.get("points")) {
            let points = sweep_from_json(points).map_err(fail)?;
            let before = figures.len();
            let name = doc.get("scenario").and_then(Value::as_str).unwrap_or(&stem);
            if distinct(points.iter().map(|p| p.chunks)) > 1 {
                let chart = bubble_vs_chunks(&format!("{name}: bubble against chunks"), &points);
                figures.push((format!("{stem}-bubble-vs-chunks"), Figure::Lines(chart)));
            }
            if distinct(points.iter().map(|p| p.devices)) > 1 {
                let chart =
                    epoch_time_vs_devices(&format!("{name}: epoch time against devices"), &points);
                figures.push((format!("{stem}-epoch-vs-devices"), Figure::Lines(chart)));
            }
            if figures.len() == before {
                return Err(fail(
                    "a sweep over neither chunks nor devices has nothing to plot".into(),
                ));
            }
        } else if let Some(results) = doc.get("results") {
            let name = doc.get("scenario").and_then(Value::as_str).unwrap_or(&stem);
            let results = results
                .as_array()
                .ok_or_else(|| fail("`results` is not a list".into()))?;
            for (i, result) in results.iter().enumerate() {
                let schedule = str_field(result, "schedule")
                    .map_err(|e| fail(format!("results[{i}]: {e}")))?;
                let memory = memory_from_json(&format!("{name} ({schedule})"), result)
                    .map_err(|e| fail(format!("results[{i}]: {e}")))?;
                figures.push((format!("{stem}-{schedule}-memory"), Figure::Memory(memory)));
                if let Some(epochs) = result.get("epochs") {
                    let points = accuracy_from_json(epochs)
                        .map_err(|e| fail(format!("results[{i}].epochs: {e}")))?;
                    let label = if docs.len() > 1 {
                        format!("{schedule} ({name})")
                    } else {
                        schedule.to_string()
                    };
                    accuracy.push(Series { label, points });
                }
            }
        } else {
            return Err(fail(
                "not a pipegnn result: expected `results` (simulate/run), `metrics` (compare), `traceEvents` (--trace) or `axes` and `points` (sweep)"
                    .into(),
            ));
        }
    }
    if !accuracy.is_empty() {
        figures.push(("accuracy".into(), Figure::Lines(accuracy_chart(accuracy))));
    }
    Ok(figures)
}

/// Validation accuracy (in %) against epoch, one line per run.
pub fn accuracy_chart(series: Vec<Series>) -> LineChart {
    LineChart {
        title: "validation accuracy against epoch".into(),
        x_label: "epoch".into(),
        y_label: "validation accuracy (%)".into(),
        series,
    }
}

fn stem(file: &str) -> String {
    let name = std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned());
    let name = name.strip_suffix(".json").unwrap_or(&name);
    name.strip_suffix(".trace").unwrap_or(name).to_string()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` is missing or not a string"))
}

fn num_field(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("`{key}` is missing or not a number"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("`{key}` is missing or not a whole number"))
}

/// Reads back the spans of a Chrome trace written by `--trace` (see `chrome_trace`): process 1
/// rows are devices, process 2 rows links; `X` events are spans (µs, rounded to ns).
pub fn timeline_from_chrome(title: &str, events: &Value) -> Result<TimelineData, String> {
    let events = events
        .as_array()
        .ok_or_else(|| "`traceEvents` is not a list".to_string())?;
    let mut devices: BTreeMap<u64, String> = BTreeMap::new();
    let mut links: BTreeMap<u64, String> = BTreeMap::new();
    for e in events {
        if e.get("ph").and_then(Value::as_str) == Some("M")
            && e.get("name").and_then(Value::as_str) == Some("thread_name")
        {
            let tid = u64_field(e, "tid")?;
            let name = e
                .get("args")
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .ok_or("a thread_name event has no args.name")?
                .to_string();
            match u64_field(e, "pid")? {
                1 => devices.insert(tid, name),
                2 => links.insert(tid, name),
                _ => None,
            };
        }
    }
    let mut lanes: Vec<String> = Vec::new();
    let mut device_lane = BTreeMap::new();
    for (tid, name) in &devices {
        device_lane.insert(*tid, lanes.len());
        lanes.push(name.clone());
    }
    // Only links that carried something get a row, as for a trace in memory.
    let mut used: Vec<u64> = events
        .iter()
        .filter(|e| e.get("ph").and_then(Value::as_str) == Some("X"))
        .filter(|e| e.get("pid").and_then(Value::as_u64) == Some(2))
        .filter_map(|e| e.get("tid").and_then(Value::as_u64))
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut link_lane = BTreeMap::new();
    for tid in used {
        link_lane.insert(tid, lanes.len());
        lanes.push(
            links
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| format!("link {tid}")),
        );
    }
    let mut bars = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e.get("ph").and_then(Value::as_str) != Some("X") {
            continue;
        }
        let at = |why: String| format!("traceEvents[{i}]: {why}");
        let (pid, tid) = (
            u64_field(e, "pid").map_err(at)?,
            u64_field(e, "tid").map_err(at)?,
        );
        let kind = match (pid, e.get("cat").and_then(Value::as_str)) {
            (1, Some("forward")) => BarKind::Forward,
            (1, Some("backward")) => BarKind::Backward,
            (1, Some("input_gradient")) => BarKind::InputGrad,
            (1, Some("weight_gradient")) => BarKind::WeightGrad,
            (1, Some("optimizer")) => BarKind::Optimizer,
            (2, _) => BarKind::Transfer,
            _ => {
                return Err(at(
                    "a span that is neither a device op nor a transfer".into()
                ))
            }
        };
        let lane = match pid {
            1 => device_lane.get(&tid),
            _ => link_lane.get(&tid),
        }
        .copied()
        .ok_or_else(|| at(format!("row {tid} has no thread_name")))?;
        let ts = num_field(e, "ts").map_err(at)?;
        let dur = num_field(e, "dur").map_err(at)?;
        if !(ts >= 0.0 && dur >= 0.0 && ts.is_finite() && dur.is_finite()) {
            return Err(at("`ts` and `dur` must be non-negative".into()));
        }
        let start_ns = (ts * 1e3).round() as u64;
        let chunk = e
            .get("args")
            .and_then(|a| a.get("chunk"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        bars.push(TimelineBar {
            lane,
            kind,
            chunk,
            start_ns,
            end_ns: start_ns.saturating_add((dur * 1e3).round() as u64),
        });
    }
    if lanes.is_empty() {
        return Err("a trace with no devices".into());
    }
    Ok(TimelineData {
        title: title.to_string(),
        lanes,
        epoch_ns: bars.iter().map(|b| b.end_ns).max().unwrap_or(0),
        bars,
    })
}

/// Predicted against measured from `(metric, device, predicted, measured)` rows: the rows with
/// a measurement where both values are positive (a log axis shows nothing else).
pub fn compare_data(
    title: &str,
    rows: impl IntoIterator<Item = (String, Option<String>, f64, Option<f64>)>,
) -> CompareData {
    CompareData {
        title: format!("{title}: predicted against measured"),
        points: rows
            .into_iter()
            .filter_map(|(name, device, predicted, measured)| {
                let measured = measured?;
                (predicted > 0.0 && measured > 0.0).then_some(ComparePoint {
                    name,
                    device,
                    predicted,
                    measured,
                })
            })
            .collect(),
    }
}

/// The points of `compare --format json`'s `metrics`, as [`compare_data`] keeps them.
pub fn compare_from_json(title: &str, metrics: &Value) -> Result<CompareData, String> {
    let list = metrics
        .as_array()
        .ok_or_else(|| "`metrics` is not a list".to_string())?;
    let mut rows = Vec::new();
    for (i, row) in list.iter().enumerate() {
        let at = |why: String| format!("metrics[{i}]: {why}");
        let measured = match row.get("measured") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| at("`measured` is not a number".into()))?,
            ),
        };
        rows.push((
            str_field(row, "name").map_err(at)?.to_string(),
            row.get("device").and_then(Value::as_str).map(String::from),
            num_field(row, "predicted").map_err(at)?,
            measured,
        ));
    }
    Ok(compare_data(title, rows))
}

fn sweep_from_json(points: &Value) -> Result<Vec<SweepPoint>, String> {
    let list = points
        .as_array()
        .ok_or_else(|| "`points` is not a list".to_string())?;
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        if p.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        let at = |why: String| format!("points[{i}]: {why}");
        out.push(SweepPoint {
            schedule: str_field(p, "schedule").map_err(at)?.to_string(),
            chunks: u64_field(p, "chunks").map_err(at)? as u32,
            devices: u64_field(p, "devices").map_err(at)? as u32,
            epoch_time_s: num_field(p, "epoch_time_s").map_err(at)?,
            bubble_fraction: num_field(p, "bubble_fraction").map_err(at)?,
        });
    }
    Ok(out)
}

fn memory_from_json(title: &str, result: &Value) -> Result<MemoryData, String> {
    let devices = result
        .get("devices")
        .and_then(Value::as_array)
        .ok_or("`devices` is missing or not a list")?;
    let mut bars = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let at = |why: String| format!("devices[{i}]: {why}");
        let memory = d
            .get("memory_bytes")
            .ok_or_else(|| at("no `memory_bytes`".into()))?;
        let mut bytes = [0u64; MemoryCategory::ALL.len()];
        for c in MemoryCategory::ALL {
            bytes[c.index()] = memory.get(c.name()).and_then(Value::as_u64).unwrap_or(0);
        }
        bars.push(MemoryBar {
            device: str_field(d, "name").map_err(at)?.to_string(),
            bytes,
            capacity_bytes: d.get("capacity_bytes").and_then(Value::as_u64),
        });
    }
    Ok(MemoryData {
        title: title.to_string(),
        devices: bars,
    })
}

fn accuracy_from_json(epochs: &Value) -> Result<Vec<(f64, f64)>, String> {
    let list = epochs.as_array().ok_or("not a list")?;
    list.iter()
        .map(|e| {
            Ok((
                num_field(e, "epoch")?,
                100.0 * num_field(e, "val_accuracy")?,
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Drawing.

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError("the bundled font does not load".into()))
    }
}

impl Figure {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Figure::Timeline(panels) => {
                let lanes = panels.iter().map(|p| p.lanes.len()).max().unwrap_or(1) as u32;
                (900 * panels.len().max(1) as u32, 130 + 34 * lanes)
            }
            Figure::Lines(_) | Figure::Compare(_) => (900, 600),
            Figure::Memory(m) => ((260 + 110 * m.devices.len() as u32).max(700), 600),
        }
    }

    /// Renders the figure as SVG text (UTF-8 bytes) or a PNG image.
    pub fn render(&self, format: Format) -> Result<Vec<u8>, PlotError> {
        register_font()?;
        let (w, h) = self.size();
        match format {
            Format::Svg => {
                let mut text = String::new();
                {
                    let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
                    self.draw(&root)?;
                    root.present()?;
                }
                Ok(text.into_bytes())
            }
            Format::Png => {
                let mut pixels = vec![0u8; w as usize * h as usize * 3];
                {
                    let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
                    self.draw(&root)?;
                    root.present()?;
                }
                let mut out = Vec::new();
                let mut encoder = png::Encoder::new(&mut out, w, h);
                encoder.set_color(png::ColorType::Rgb);
                encoder.set_depth(png::BitDepth::Eight);
                let mut writer = encoder
                    .write_header()
                    .map_err(|e| PlotError(e.to_string()))?;
                writer
                    .write_image_data(&pixels)
                    .map_err(|e| PlotError(e.to_string()))?;
                writer.finish().map_err(|e| PlotError(e.to_string()))?;
                Ok(out)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        match self {
            Figure::Timeline(panels) => {
                let areas = root.split_evenly((1, panels.len().max(1)));
                for (panel, area) in panels.iter().zip(&areas) {
                    draw_timeline(area, panel)?;
                }
                Ok(())
            }
            Figure::Lines(chart) => draw_lines(root, chart),
            Figure::Memory(data) => draw_memory(root, data),
            Figure::Compare(data) => draw_compare(root, data),
        }
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

const MEMORY_COLORS: [RGBColor; MemoryCategory::ALL.len()] = [
    RGBColor(31, 119, 180),
    RGBColor(174, 199, 232),
    RGBColor(255, 127, 14),
    RGBColor(255, 187, 120),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(148, 103, 189),
    RGBColor(197, 176, 213),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &TimelineData,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let n = data.lanes.len().max(1);
    let end_ms = (data.epoch_ns.max(1) as f64) / 1e6;
    let lanes = data.lanes.clone();
    let mut chart = ChartBuilder::on(area)
        .caption(&data.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(120)
        .build_cartesian_2d(0.0..end_ms, (0..n - 1).into_segmented())?;
    // Lane i (from the top) is segment n - 1 - i (from the bottom).
    let label_of = move |y: &SegmentValue<usize>| match y {
        SegmentValue::CenterOf(r) if *r < n => lanes[n - 1 - r].clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .x_desc("time (ms)")
        .x_label_formatter(&|x| format!("{x:.3}"))
        .y_label_formatter(&label_of)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    let row = |lane: usize| n - 1 - lane;
    let bar = |x0: f64, x1: f64, lane: usize, style: ShapeStyle| {
        let r = row(lane);
        let mut rect = Rectangle::new(
            [
                (x0, SegmentValue::Exact(r)),
                (x1, SegmentValue::Exact(r + 1)),
            ],
            style,
        );
        rect.set_margin(4, 4, 0, 0);
        rect
    };
    // Lane backgrounds: idle time shows as the light grey between bars.
    chart
        .draw_series((0..n).map(|lane| bar(0.0, end_ms, lane, RGBColor(238, 238, 238).filled())))?;
    for kind in [
        BarKind::Forward,
        BarKind::Backward,
        BarKind::InputGrad,
        BarKind::WeightGrad,
        BarKind::Optimizer,
        BarKind::Transfer,
    ] {
        let c = kind.color();
        let bars = data.bars.iter().filter(|b| b.kind == kind).map(|b| {
            bar(
                b.start_ns as f64 / 1e6,
                b.end_ns as f64 / 1e6,
                b.lane,
                c.filled(),
            )
        });
        if data.bars.iter().any(|b| b.kind == kind) {
            chart
                .draw_series(bars)?
                .label(kind.name())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
    }
    // Chunk numbers on compute bars wide enough to hold them.
    let plot_px = chart.plotting_area().dim_in_pixel().0.max(1) as f64;
    let px_per_ms = plot_px / end_ms;
    let style = TextStyle::from((FONT, 11).into_font())
        .color(&WHITE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart.draw_series(
        data.bars
            .iter()
            .filter(|b| matches!(b.kind, BarKind::Forward | BarKind::Backward))
            .filter(|b| {
                let digits = b.chunk.to_string().len() as f64;
                (b.end_ns - b.start_ns) as f64 / 1e6 * px_per_ms >= 7.0 * digits + 4.0
            })
            .map(|b| {
                let mid = (b.start_ns + b.end_ns) as f64 / 2e6;
                Text::new(
                    b.chunk.to_string(),
                    (mid, SegmentValue::CenterOf(row(b.lane))),
                    style.clone(),
                )
            }),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

fn nice_range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.06;
    (lo - pad, hi + pad)
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &LineChart,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let all = data.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let (x0, x1) = nice_range(x0, x1);
    // Headroom above the highest point for the legend.
    let (_, y1) = nice_range(0.0, 1.15 * y1.max(0.0));
    let mut chart = ChartBuilder::on(root)
        .caption(&data.title, (FONT, 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..y1)?;
    chart
        .configure_mesh()
        .x_desc(&data.x_label)
        .y_desc(&data.y_label)
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, s) in data.series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

fn format_tick(v: f64) -> String {
    if v == v.round() || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn draw_memory<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &MemoryData,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let peak = data
        .devices
        .iter()
        .map(|d| d.bytes.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let cap_max = data
        .devices
        .iter()
        .filter_map(|d| d.capacity_bytes)
        .max()
        .unwrap_or(0) as f64;
    // Capacities far above the peaks would flatten the bars: they are then marked at the top.
    let capacity_on_scale = cap_max <= 10.0 * peak;
    let top = if capacity_on_scale {
        peak.max(cap_max) * 1.6
    } else {
        peak * 1.75
    };
    let (unit, scale) = if top >= GIB {
        ("GiB", GIB)
    } else {
        ("MiB", MIB)
    };
    let n = data.devices.len().max(1);
    let names: Vec<String> = data.devices.iter().map(|d| d.device.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(&data.title, (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top / scale)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("device")
        .y_desc(format!("memory at the peak ({unit})"))
        .x_labels(n + 1)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| format_tick(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for c in MemoryCategory::ALL {
        if data.devices.iter().all(|d| d.bytes[c.index()] == 0) {
            continue;
        }
        let col = MEMORY_COLORS[c.index()];
        let rects = data.devices.iter().enumerate().map(|(i, d)| {
            let below: u64 = d.bytes[..c.index()].iter().sum();
            let y0 = below as f64 / scale;
            let y1 = (below + d.bytes[c.index()]) as f64 / scale;
            let mut rect = Rectangle::new(
                [
                    (SegmentValue::Exact(i), y0),
                    (SegmentValue::Exact(i + 1), y1),
                ],
                col.filled(),
            );
            rect.set_margin(0, 0, 18, 18);
            rect
        });
        chart
            .draw_series(rects)?
            .label(c.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.filled()));
    }
    let red = RGBColor(200, 0, 0);
    let mut labelled = false;
    for (i, d) in data.devices.iter().enumerate() {
        let Some(cap) = d.capacity_bytes else {
            continue;
        };
        if capacity_on_scale {
            let y = cap as f64 / scale;
            let series = chart.draw_series(std::iter::once(PathElement::new(
                vec![(SegmentValue::Exact(i), y), (SegmentValue::Exact(i + 1), y)],
                red.stroke_width(3),
            )))?;
            if !labelled {
                series.label("capacity").legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], red.stroke_width(3))
                });
                labelled = true;
            }
        } else {
            // Just above the bar: the capacity is off the scale.
            let y = d.bytes.iter().sum::<u64>() as f64 / scale + top / scale * 0.02;
            chart.draw_series(std::iter::once(Text::new(
                format!("capacity {:.1} GiB (off scale)", cap as f64 / GIB),
                (SegmentValue::CenterOf(i), y),
                TextStyle::from((FONT, 11).into_font())
                    .color(&red)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

fn draw_compare<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &CompareData,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let values = data.points.iter().flat_map(|p| [p.predicted, p.measured]);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (1e-3, 1.0);
    }
    let (lo, hi) = (lo / 2.0, hi * 2.0);
    let mut chart = ChartBuilder::on(root)
        .caption(&data.title, (FONT, 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("measured (s, bytes or fraction, by metric; log)")
        .y_desc("predicted (same unit; log)")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 15))
        .draw()?;
    let steps = 60;
    let xs: Vec<f64> = (0..=steps)
        .map(|i| lo * (hi / lo).powf(i as f64 / steps as f64))
        .collect();
    let band: Vec<(f64, f64)> = xs
        .iter()
        .map(|&x| (x, x * 1.1))
        .chain(xs.iter().rev().map(|&x| (x, x * 0.9)))
        .collect();
    let band_color = RGBColor(90, 110, 220);
    chart
        .draw_series(std::iter::once(Polygon::new(
            band,
            band_color.mix(0.35).filled(),
        )))?
        .label("±10%")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 14, y + 6)], band_color.mix(0.35).filled())
        });
    chart
        .draw_series(LineSeries::new(
            xs.iter().map(|&x| (x, x)),
            BLACK.stroke_width(1),
        ))?
        .label("predicted = measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let mut names: Vec<&str> = Vec::new();
    for p in &data.points {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(
                data.points
                    .iter()
                    .filter(|p| p.name == *name)
                    .map(|p| Circle::new((p.measured, p.predicted), 5, c.filled())),
            )?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 7, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}
