//! The JSON documents the command line prints, with stable field names.
//!
//! These are output-only types: they derive `Serialize`, the model types do not. Times are
//! seconds as floating point (`*_s`), sizes are integer bytes (`*_bytes`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::Metrics;
use crate::gnn::GraphMetrics;
use crate::schedule::file;
use crate::schedule::Schedule;
use crate::trace::MemoryCategory;

/// Nanoseconds as the seconds JSON documents hold.
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `pipegnn simulate --format json`.
#[derive(Debug, Serialize)]
pub struct SimulateDoc {
    /// The scenario's name.
    pub scenario: String,
    /// One entry per schedule.
    pub results: Vec<ResultDoc>,
}

/// One schedule's prediction.
#[derive(Debug, Serialize)]
pub struct ResultDoc {
    /// Schedule name (`gpipe`, `1f1b`, `file:NAME`, ...).
    pub schedule: String,
    /// Number of stages.
    pub stages: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Epoch time.
    pub epoch_time_s: f64,
    /// Mean bubble fraction over the devices that ran ops.
    pub bubble_fraction: f64,
    /// Bytes handed between devices in the epoch.
    pub communication_bytes: u64,
    /// Whether the prediction fits the devices' memory: every device alone, and stages sharing a
    /// GPU together (`plan::fit`, the rule behind exit 6).
    pub fits: bool,
    /// Per device.
    pub devices: Vec<DeviceDoc>,
    /// Per directed link that carried traffic.
    pub links: Vec<LinkDoc>,
    /// Halo `drop`: undirected edges between chunks (ignored) over all undirected edges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_edge_fraction: Option<f64>,
    /// GNNPipe: neighbour reads served from history over all reads, at layers after the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_read_fraction: Option<f64>,
    /// Halo `exact`: vertex-layer outputs computed over a full-graph pass's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redundant_compute_factor: Option<f64>,
    /// GNN workloads: each chunk (graph parallelism: partition).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chunk_stats: Vec<ChunkDoc>,
    /// `pipegnn run`: loss and accuracies per epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<Vec<EpochDoc>>,
    /// `pipegnn run`: test accuracy at the epoch with the best validation accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// `pipegnn run`: where it ran (`cpu`, or the GPUs with their memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Which cost tier predicted the op times and memory (predictions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_tier: Option<String>,
    /// Kernels a device profile was evaluated for past its calibrated range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extrapolated: Vec<String>,
}

/// One trained epoch.
#[derive(Debug, Serialize)]
pub struct EpochDoc {
    /// From 1.
    pub epoch: u32,
    /// Training loss.
    pub loss: f64,
    /// Accuracy on the training split.
    pub train_accuracy: f64,
    /// Accuracy on the validation split.
    pub val_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
}

/// One chunk of the graph.
#[derive(Debug, Serialize)]
pub struct ChunkDoc {
    /// Vertices in the chunk.
    pub vertices: u64,
    /// Directed edges with both ends in the chunk.
    pub internal_edges: u64,
    /// Directed edges into the chunk from other chunks.
    pub cut_edges: u64,
    /// Distinct outside vertices adjacent to the chunk.
    pub boundary_vertices: u64,
    /// Vertices at 1, 2, ... hops outside the chunk (halo `exact` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub halo_vertices: Vec<u64>,
}

/// One device of a result.
#[derive(Debug, Serialize)]
pub struct DeviceDoc {
    /// Device name.
    pub name: String,
    /// Time in compute ops.
    pub busy_s: f64,
    /// Epoch time minus busy time.
    pub idle_s: f64,
    /// Idle time waiting on other stages (pipeline fill and drain).
    pub fill_drain_s: f64,
    /// Idle time waiting for data on a link.
    pub communication_wait_s: f64,
    /// `idle / epoch time`.
    pub bubble_fraction: f64,
    /// Largest number of chunks in flight.
    pub peak_in_flight: u32,
    /// Peak memory.
    pub peak_memory_bytes: u64,
    /// Memory by category at the peak.
    pub memory_bytes: BTreeMap<&'static str, u64>,
    /// Capacity, where known.
    pub capacity_bytes: Option<u64>,
    /// Whether the peak fits the capacity.
    pub fits: bool,
}

/// One link of a result.
#[derive(Debug, Serialize)]
pub struct LinkDoc {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Bytes carried.
    pub bytes: u64,
    /// Time occupied.
    pub busy_s: f64,
}

impl ResultDoc {
    /// The JSON form of one schedule's metrics, with the graph figures of a GNN workload and
    /// whether it fits (the caller's verdict: the rule needs the scenario, which reports do not
    /// read).
    pub fn new(
        schedule: &str,
        n_stages: u32,
        n_chunks: u32,
        metrics: &Metrics,
        graph: Option<&GraphMetrics>,
        fits: bool,
    ) -> Self {
        ResultDoc {
            schedule: schedule.to_string(),
            stages: n_stages,
            chunks: n_chunks,
            epoch_time_s: seconds(metrics.epoch_time_ns),
            bubble_fraction: metrics.bubble_fraction,
            communication_bytes: metrics.communication_bytes,
            fits,
            devices: metrics
                .devices
                .iter()
                .map(|d| DeviceDoc {
                    name: d.name.clone(),
                    busy_s: seconds(d.busy_ns),
                    idle_s: seconds(d.idle_ns),
                    fill_drain_s: seconds(d.fill_drain_ns),
                    communication_wait_s: seconds(d.communication_wait_ns),
                    bubble_fraction: d.bubble_fraction,
                    peak_in_flight: d.peak_in_flight,
                    peak_memory_bytes: d.peak_memory_bytes,
                    memory_bytes: MemoryCategory::ALL
                        .iter()
                        .map(|c| (c.name(), d.memory_at_peak[c.index()]))
                        .collect(),
                    capacity_bytes: d.capacity_bytes,
                    fits: d.fits(),
                })
                .collect(),
            links: metrics
                .links
                .iter()
                .map(|l| LinkDoc {
                    from: l.from.clone(),
                    to: l.to.clone(),
                    bytes: l.bytes,
                    busy_s: seconds(l.busy_ns),
                })
                .collect(),
            dropped_edge_fraction: graph.and_then(|g| g.dropped_edge_fraction),
            stale_read_fraction: graph.and_then(|g| g.stale_read_fraction),
            redundant_compute_factor: graph.and_then(|g| g.redundant_compute_factor),
            epochs: None,
            test_accuracy: None,
            executor: None,
            cost_tier: None,
            extrapolated: Vec::new(),
            chunk_stats: graph.map_or_else(Vec::new, |g| {
                g.chunks
                    .iter()
                    .map(|c| ChunkDoc {
                        vertices: c.vertices,
                        internal_edges: c.internal_edges,
                        cut_edges: c.in_edges - c.internal_edges,
                        boundary_vertices: c.boundary,
                        halo_vertices: c.halo.iter().map(|r| r.vertices).collect(),
                    })
                    .collect()
            }),
        }
    }
}

/// `pipegnn schedule --format json`, with the simulation fields when `--simulate` is given.
#[derive(Serialize)]
pub struct ScheduleDoc {
    /// Generator name.
    pub kind: &'static str,
    /// Number of stages.
    pub stages: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Per device, `[op, chunk, stage]` in issue order (`schedule::file::orders`).
    pub orders: OrderedMap<Vec<file::FileOp>>,
    /// Epoch time of the uniform-cost simulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub makespan_s: Option<f64>,
    /// Mean bubble fraction over devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bubble_fraction: Option<f64>,
    /// Per device figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<ScheduleDeviceDoc>>,
}

/// One device of a simulated schedule.
#[derive(Debug, Serialize)]
pub struct ScheduleDeviceDoc {
    /// Pipeline device index.
    pub device: usize,
    /// Time in compute ops.
    pub busy_s: f64,
    /// Epoch time minus busy time.
    pub idle_s: f64,
    /// `idle / epoch time`.
    pub bubble_fraction: f64,
    /// Largest number of chunks in flight.
    pub peak_in_flight: u32,
}

impl ScheduleDoc {
    /// The schedule alone, or with its simulated metrics.
    pub fn new(schedule: &Schedule, metrics: Option<&Metrics>) -> Self {
        ScheduleDoc {
            kind: schedule.kind().name(),
            stages: schedule.n_stages(),
            chunks: schedule.n_chunks(),
            orders: OrderedMap(file::orders(schedule)),
            makespan_s: metrics.map(|m| seconds(m.epoch_time_ns)),
            bubble_fraction: metrics.map(|m| m.bubble_fraction),
            devices: metrics.map(|m| {
                m.devices
                    .iter()
                    .map(|d| ScheduleDeviceDoc {
                        device: d.device,
                        busy_s: seconds(d.busy_ns),
                        idle_s: seconds(d.idle_ns),
                        bubble_fraction: d.bubble_fraction,
                        peak_in_flight: d.peak_in_flight,
                    })
                    .collect()
            }),
        }
    }
}

/// A `--set` value as JSON: an integer, a float, `true`/`false`, `null`, or the text itself.
pub fn set_value(text: &str) -> serde_json::Value {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return n.into();
    }
    if let Some(n) = text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        return serde_json::Value::Number(n);
    }
    match text {
        "true" => true.into(),
        "false" => false.into(),
        "null" | "~" => serde_json::Value::Null,
        _ => text.into(),
    }
}

/// `pipegnn sweep --format json`.
#[derive(Debug, Serialize)]
pub struct SweepDoc {
    /// The scenario's name.
    pub scenario: String,
    /// The swept `--set` keys with their values, first axis slowest.
    pub axes: Vec<AxisDoc>,
    /// One entry per point of the cross product, in order.
    pub points: Vec<SweepPointDoc>,
}

/// One swept key.
#[derive(Debug, Serialize)]
pub struct AxisDoc {
    /// The `--set` key, e.g. `schedule.chunks`.
    pub key: String,
    /// Its values in the order given.
    pub values: Vec<serde_json::Value>,
}

/// A JSON object whose keys keep the order given (device order, axis order).
#[derive(Debug)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One point of a sweep: its figures (null where it could not be predicted) and its error.
#[derive(Debug, Serialize)]
pub struct SweepPointDoc {
    /// The axis values, in axis order.
    pub set: OrderedMap<serde_json::Value>,
    /// Schedule name.
    pub schedule: Option<String>,
    /// Number of stages.
    pub stages: Option<u32>,
    /// Number of chunks.
    pub chunks: Option<u32>,
    /// Number of devices in the scenario.
    pub devices: Option<u32>,
    /// Epoch time.
    pub epoch_time_s: Option<f64>,
    /// Mean bubble fraction.
    pub bubble_fraction: Option<f64>,
    /// Bytes handed between devices.
    pub communication_bytes: Option<u64>,
    /// The largest peak over the devices.
    pub peak_memory_bytes: Option<u64>,
    /// Whether the point fits (`plan::fit`; false when the point failed).
    pub fits: bool,
    /// Why the point failed or does not fit, on one line.
    pub error: Option<String>,
}

/// `pipegnn plan --format json`.
#[derive(Debug, Serialize)]
pub struct PlanDoc {
    /// The scenario's name.
    pub scenario: String,
    /// Configurations considered: simulated and pruned.
    pub configurations: usize,
    /// The device counts tried (whole nodes on a cluster).
    pub device_counts: Vec<u32>,
    /// Configurations simulated.
    pub simulated: usize,
    /// Configurations not simulated, by reason.
    pub pruned: PrunedDoc,
    /// The best fitting configurations, the choice first.
    pub best: Vec<PlanEntryDoc>,
    /// Why the others lost.
    pub rejected: RejectedDoc,
    /// Each configuration that does not fit, with its first device over capacity.
    pub does_not_fit: Vec<PlanOverflowDoc>,
}

/// One configuration of a plan.
#[derive(Debug, Serialize)]
pub struct PlanEntryDoc {
    /// Schedule name.
    pub schedule: String,
    /// Stage split (`auto`, `1+2`, `-`).
    pub split: String,
    /// Number of stages.
    pub stages: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Number of devices.
    pub devices: u32,
    /// Epoch time.
    pub epoch_time_s: f64,
    /// Mean bubble fraction.
    pub bubble_fraction: f64,
    /// Bytes handed between devices.
    pub communication_bytes: u64,
    /// The largest peak over the devices.
    pub peak_memory_bytes: u64,
}

/// Counts of configurations pruned before simulating, by reason.
#[derive(Debug, Serialize)]
pub struct PrunedDoc {
    /// The per-device memory lower bound exceeds every device's capacity.
    pub would_not_fit: usize,
    /// The smallest such bound, with the capacity it exceeds (absent when none was pruned so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lowest_bound_bytes: Option<u64>,
    /// The capacity the smallest bound exceeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Pipelines over more stages than the model has layers.
    pub more_stages_than_layers: usize,
    /// 2D on a device count that is not a square, 3D on one that is not a cube.
    pub grid_does_not_apply: usize,
    /// GNNPipe's hybrids past the search's simulation budget (`plan::search::MAX_HYBRID_HANDOFFS`).
    pub over_budget: usize,
}

/// Counts of rejected configurations by reason.
#[derive(Debug, Serialize)]
pub struct RejectedDoc {
    /// A device's peak exceeds its capacity.
    pub does_not_fit: usize,
    /// More than 1% slower than the fastest.
    pub slower: usize,
    /// Within 1% of the fastest but on more devices than the choice.
    pub more_devices: usize,
    /// Within 1% of the fastest on as few devices, below the shown ones.
    pub close: usize,
    /// The scenario rejects the configuration.
    pub invalid: usize,
}

/// A configuration that does not fit.
#[derive(Debug, Serialize)]
pub struct PlanOverflowDoc {
    /// Schedule name.
    pub schedule: String,
    /// Stage split.
    pub split: String,
    /// Number of chunks.
    pub chunks: u32,
    /// Number of devices.
    pub devices: u32,
    /// The device over capacity.
    pub device: String,
    /// Its predicted peak (the sum of the stages' peaks when they share it).
    pub peak_memory_bytes: u64,
    /// Its capacity.
    pub capacity_bytes: u64,
    /// How many stages share the device (`executor.device_map: shared`); absent for a device
    /// alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_sharing: Option<usize>,
}

/// One predicted-against-measured figure (`pipegnn compare` and `fidelity`).
#[derive(Debug, Serialize)]
pub struct CompareMetricDoc {
    /// `epoch_time_s`, `busy_s`, `bubble_fraction`, `peak_memory_bytes` or `link_bytes`.
    pub name: &'static str,
    /// The device or link (`a -> b`) it is about; none for the epoch.
    pub device: Option<String>,
    /// The prediction.
    pub predicted: f64,
    /// The measurement, where there is one.
    pub measured: Option<f64>,
    /// `(predicted - measured) / measured`, where measured is non-zero.
    pub relative_error: Option<f64>,
}

/// Writes `doc` as indented JSON, one field or element per line, except that an array inside
/// an array is written on one line (`["F", 3, 0]` in a schedule's orders, a row of a table):
/// a million-op schedule stays a third of the size and readable.
pub fn to_pretty_string(doc: &impl Serialize) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(4096);
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        NestedArraysInline {
            pretty: serde_json::ser::PrettyFormatter::new(),
            arrays: Vec::new(),
            inline_from: None,
        },
    );
    doc.serialize(&mut serializer)?;
    out.push(b'\n');
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// serde_json's pretty formatter, switched to compact output inside an array nested in an array.
struct NestedArraysInline {
    pretty: serde_json::ser::PrettyFormatter<'static>,
    /// Per open container, whether it is an array.
    arrays: Vec<bool>,
    /// The depth of the outermost container written inline, while one is open.
    inline_from: Option<usize>,
}

impl NestedArraysInline {
    fn open(&mut self, array: bool) -> bool {
        if self.inline_from.is_none() && array && self.arrays.last() == Some(&true) {
            self.inline_from = Some(self.arrays.len());
        }
        self.arrays.push(array);
        self.inline_from.is_some()
    }

    fn close(&mut self) -> bool {
        self.arrays.pop();
        let inline = self.inline_from.is_some();
        if self.inline_from == Some(self.arrays.len()) {
            self.inline_from = None;
        }
        inline
    }

    fn inline(&self) -> bool {
        self.inline_from.is_some()
    }
}

impl serde_json::ser::Formatter for NestedArraysInline {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.open(true) {
            w.write_all(b"[")
        } else {
            self.pretty.begin_array(w)
        }
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.close() {
            w.write_all(b"]")
        } else {
            self.pretty.end_array(w)
        }
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if self.inline() {
            w.write_all(if first { b"" } else { b", " })
        } else {
            self.pretty.begin_array_value(w, first)
        }
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.inline() {
            Ok(())
        } else {
            self.pretty.end_array_value(w)
        }
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.open(false) {
            w.write_all(b"{")
        } else {
            self.pretty.begin_object(w)
        }
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.close() {
            w.write_all(b"}")
        } else {
            self.pretty.end_object(w)
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if self.inline() {
            w.write_all(if first { b"" } else { b", " })
        } else {
            self.pretty.begin_object_key(w, first)
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.inline() {
            w.write_all(b": ")
        } else {
            self.pretty.begin_object_value(w)
        }
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.inline() {
            Ok(())
        } else {
            self.pretty.end_object_value(w)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_inside_arrays_are_written_on_one_line() {
        let doc = serde_json::json!({
            "orders": {"0": [["F", 0, 0], ["B", 0, 0]]},
            "rows": [{"a": [1, 2]}, [[1, {"b": 2}], 3]],
            "empty": [],
        });
        let text = to_pretty_string(&doc).unwrap();
        let expected = r#"{
  "empty": [],
  "orders": {
    "0": [
      ["F", 0, 0],
      ["B", 0, 0]
    ]
  },
  "rows": [
    {
      "a": [
        1,
        2
      ]
    },
    [[1, {"b": 2}], 3]
  ]
}
"#;
        assert_eq!(text, expected);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }
}

/// `pipegnn proptest --format json`: what was tested, and the shrunk failure if one was found.
#[derive(Debug, Serialize)]
pub struct ProptestDoc {
    /// `kind`, `generator` or `file`.
    pub source: &'static str,
    /// The kind's name, the command template, or the file's path.
    pub name: String,
    /// The seed the cases were drawn from.
    pub seed: u64,
    /// Cases asked for.
    pub cases: u32,
    /// Whether every case held.
    pub passed: bool,
    /// Cases that held (before the failure, when one failed).
    pub cases_passed: u32,
    /// Shapes the kind does not make, skipped.
    pub refused: u32,
    /// Distinct shapes among the cases that held.
    pub shapes: usize,
    /// The ranges drawn from, each `[first, last]`, both included.
    pub ranges: ProptestRangesDoc,
    /// The stash bound held to, if any.
    pub max_in_flight: Option<String>,
    /// The closed form held to, if any.
    pub closed_form: Option<&'static str>,
    /// Cases on which the closed form applied.
    pub closed_form_cases: u32,
    /// The shrunk failure.
    pub failure: Option<ProptestFailureDoc>,
}

/// The shape ranges of a property test.
#[derive(Debug, Serialize)]
pub struct ProptestRangesDoc {
    /// Stages in all.
    pub stages: [u32; 2],
    /// Chunks.
    pub chunks: [u32; 2],
    /// Stages per device.
    pub stages_per_device: [u32; 2],
}

/// A shape.
#[derive(Debug, Serialize)]
pub struct ShapeDoc {
    /// Stages in all.
    pub stages: u32,
    /// Chunks.
    pub chunks: u32,
    /// Stages per device.
    pub stages_per_device: u32,
}

/// One stage's op times.
#[derive(Debug, Serialize)]
pub struct StageTimesDoc {
    /// `F`.
    pub forward_ns: u64,
    /// `I`, the input-gradient half of a backward.
    pub input_ns: u64,
    /// `W`, the weight-gradient half (`B` is `I + W`).
    pub weight_ns: u64,
}

/// A property test's shrunk failure.
#[derive(Debug, Serialize)]
pub struct ProptestFailureDoc {
    /// `ops`, `deadlock`, `simulation`, `stash_bound` or `closed_form`.
    pub property: &'static str,
    /// What is wrong, one line.
    pub message: String,
    /// The smallest failing shape.
    pub shape: ShapeDoc,
    /// The first failing shape drawn.
    pub original_shape: ShapeDoc,
    /// Whether the shrunk op times are the same on every stage.
    pub uniform_times: bool,
    /// The shrunk op times, per stage (one entry when uniform).
    pub times: Vec<StageTimesDoc>,
    /// Per device, its `[op, chunk, stage]` list as the source gave it.
    pub orders: OrderedMap<Vec<file::FileOp>>,
    /// The command that runs the failing shape again.
    pub reproduce: String,
}
