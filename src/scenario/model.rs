//! The validated scenario: every quantity parsed, every name resolved, every route computed.

use std::path::PathBuf;

use crate::diag::{Diagnostic, FieldPath, Locator};
use crate::gnn::Halo;
use crate::graph::Chunking;
use crate::network::Network;
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::{Generator, StagePlacement};

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name.
    pub name: String,
    /// What the scenario asks, if it says.
    pub description: Option<String>,
    /// Devices after `count` expansion, in declaration order.
    pub devices: Vec<Device>,
    /// Links and routes between the devices (free when the scenario has one device).
    pub network: Network,
    /// What each stage computes.
    pub workload: Workload,
    /// The optimizer, which sets the size of the optimizer state.
    pub optimizer: Optimizer,
    /// Hyper-parameters of a real run (`pipegnn run`).
    pub training: Training,
    /// Which schedule to run and where.
    pub schedule: ScheduleSpec,
    /// How `pipegnn run` executes it.
    pub executor: ExecutorSpec,
    /// Where the scenario came from, so that problems found later (a device whose memory is
    /// too small, a failed run) can point at the line that caused them.
    pub source: Source,
}

/// The scenario file's name and the positions of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as the user named it.
    pub file: String,
    /// Field path -> line and column (or the `--set` that wrote it).
    pub locator: Locator,
}

impl Source {
    /// A diagnostic about the field at `path`.
    pub fn diagnostic(&self, path: FieldPath, message: impl Into<String>) -> Diagnostic {
        self.locator.diagnostic(&self.file, path, message)
    }
}

impl Scenario {
    /// Number of pipeline stages (layers, for graph parallelism).
    pub fn n_stages(&self) -> u32 {
        match &self.workload {
            Workload::Explicit(w) => w.stages.len() as u32,
            Workload::Gnn(_) if self.schedule.choice == ScheduleChoice::GraphParallel => {
                self.n_layers() as u32
            }
            Workload::Gnn(gnn) => match &gnn.stages {
                StageSplit::Layers(counts) => counts.len() as u32,
                StageSplit::Auto if self.schedule.partitions > 1 => {
                    (self.n_pipeline_devices() / self.schedule.partitions as usize)
                        .min(self.n_layers()) as u32
                }
                StageSplit::Auto => {
                    let v = match &self.schedule.choice {
                        ScheduleChoice::Generated(generator) => {
                            self.schedule.stages_per_device(*generator) as usize
                        }
                        _ => 1,
                    };
                    self.auto_stages(v)
                }
            },
        }
    }

    /// The stages an `auto` split makes with `v` stages per device: `v` per device on as many
    /// devices as the layers fill (none when the model has fewer than `v` layers).
    pub fn auto_stages(&self, v: usize) -> u32 {
        let v = v.max(1);
        (v * (self.n_layers() / v).min(self.n_pipeline_devices())) as u32
    }

    /// Number of GNN layers (0 for an explicit workload).
    pub fn n_layers(&self) -> usize {
        match &self.workload {
            Workload::Explicit(_) => 0,
            Workload::Gnn(gnn) => gnn.layers.len(),
        }
    }

    /// Devices available to the schedule: the placement's, or all.
    pub fn n_pipeline_devices(&self) -> usize {
        self.schedule
            .placement
            .as_ref()
            .map_or(self.devices.len(), Vec::len)
    }

    /// The path of the `devices:` entry a device was expanded from, extended by `field`.
    pub fn device_field(&self, device: usize, field: &str) -> FieldPath {
        FieldPath::root()
            .key("devices")
            .index(self.devices[device].entry)
            .key(field)
    }
}

/// One device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Unique name (`gpu0`, ...).
    pub name: String,
    /// The preset it was built from, if any.
    pub preset: Option<String>,
    /// Memory capacity.
    pub memory_bytes: u64,
    /// Peak compute rate, if known.
    pub peak_flops: Option<f64>,
    /// Memory bandwidth, if known.
    pub memory_bandwidth_bytes_per_s: Option<f64>,
    /// Fixed cost of one kernel, if known.
    pub op_overhead_ns: Option<u64>,
    /// A device profile (`pipegnn calibrate`) that predicts its op times, relative to the
    /// scenario's folder.
    pub profile: Option<std::path::PathBuf>,
    /// Index of the `devices:` entry it was expanded from.
    pub entry: usize,
}

/// The work of each stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Times and sizes written directly in the scenario.
    Explicit(ExplicitWorkload),
    /// A GNN on a graph: every op's work derived from them.
    Gnn(GnnSpec),
}

/// `graph:` and `model:`.
#[derive(Debug, Clone, PartialEq)]
pub struct GnnSpec {
    /// Where the graph comes from.
    pub graph: GraphSource,
    /// Layers as written (input and output widths are resolved against the graph).
    pub layers: Vec<LayerSpec>,
    /// Bytes per element (`dtype`).
    pub element_bytes: u64,
    /// How layers split into stages.
    pub stages: StageSplit,
    /// The non-linearity after every layer but the last.
    pub activation: Activation,
}

/// A non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `max(x, 0)`, as the GCN and GraphSAGE papers use.
    #[default]
    Relu,
    /// `x` for positive x, `exp(x) - 1` otherwise, as the GAT paper uses.
    Elu,
}

/// The executor's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// candle's CPU device.
    #[default]
    Cpu,
    /// candle's CUDA devices (needs a build with `--features cuda`).
    Cuda,
}

/// How the stages map onto the backend's devices (`executor.device_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceMap {
    /// One device per stage when there are enough, else every stage on one (resolved by
    /// `pipegnn run`; the simulator reads it as `per_stage`).
    #[default]
    Auto,
    /// Each stage (schedule device) on a device of its own.
    PerStage,
    /// Every stage on one GPU, each with its own stream: the simulator runs their ops one at
    /// a time on one shared processor.
    Shared,
}

/// `executor:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutorSpec {
    /// Where the stages run.
    pub backend: Backend,
    /// How stages map onto devices.
    pub device_map: DeviceMap,
    /// Pace every transfer to the link's latency and bandwidth (default false: transfers are
    /// as fast as a channel between threads).
    pub emulate_links: bool,
    /// Threads each stage worker computes with; `None` splits the machine's cores evenly.
    pub threads_per_device: Option<u32>,
    /// CPU cores the stage workers share (`executor.cores`): when their threads outnumber them,
    /// ops take turns on them, first come first served. `None`: every device has cores of its
    /// own. `run` and `compare` on the CPU set it to this machine's cores when it is not given.
    pub cores: Option<u32>,
}

/// One layer as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Its kind.
    pub kind: LayerKindSpec,
    /// Output width (per head for GAT).
    pub out: u64,
}

/// A layer kind as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKindSpec {
    /// GCN.
    Gcn,
    /// GraphSAGE (mean).
    Sage,
    /// GAT with `heads` heads; `concat` defaults to true except on the last layer.
    Gat {
        /// Heads.
        heads: u64,
        /// Concatenate (true) or average (false) head outputs.
        concat: Option<bool>,
    },
}

/// Where the graph comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphSource {
    /// A graph-csv v1 folder, resolved relative to the scenario file.
    Dataset {
        /// The folder.
        path: PathBuf,
        /// Density of synthesized features where the dataset has none (PubMed).
        feature_density: Option<f64>,
    },
    /// An OGB node-property dataset folder as downloaded (`raw/`, `split/`), resolved relative
    /// to the scenario file.
    Ogb {
        /// The folder.
        path: PathBuf,
        /// Add every edge's reverse (the default), or require the list to hold both directions.
        undirected: bool,
        /// The folder under `split/`; `None` takes the only one.
        split: Option<String>,
    },
    /// A seeded stochastic block model.
    Sbm(crate::graph::synth::SbmSpec),
    /// A seeded R-MAT power-law graph.
    Rmat(crate::graph::synth::RmatSpec),
    /// Counts only.
    Stats(GraphStats),
}

/// A graph known only by its counts: chunk and halo statistics come from a stated model
/// (edges placed uniformly at random; see `gnn::stats_model`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphStats {
    /// Vertices.
    pub nodes: u64,
    /// Undirected edges.
    pub undirected_edges: u64,
    /// Feature width.
    pub features: u64,
    /// Classes.
    pub classes: u64,
    /// Fraction of non-zero features (dense when absent).
    pub feature_density: Option<f64>,
    /// Fraction of edges a locality partitioner cuts (needed for `chunking: locality`).
    pub cut_fraction: Option<f64>,
}

/// How layers split into stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSplit {
    /// As many stages as layers or devices, whichever is fewer, balancing predicted time.
    Auto,
    /// Layers per stage, in order.
    Layers(Vec<usize>),
}

/// `workload: {kind: explicit}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitWorkload {
    /// Whether times and activation sizes are per chunk or per whole batch.
    pub per: WorkUnit,
    /// One entry per stage.
    pub stages: Vec<StageWork>,
}

/// What an explicit stage's times and activation sizes describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkUnit {
    /// One chunk: op times are as written whatever the chunk count.
    Chunk,
    /// The whole batch: each chunk gets 1/K of it.
    Batch,
}

/// One stage of an explicit workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageWork {
    /// Forward time.
    pub forward_ns: u64,
    /// Backward time.
    pub backward_ns: u64,
    /// Optimizer step time (once per epoch).
    pub optimizer_ns: u64,
    /// Bytes of the stage's output activation (and of the gradient coming back).
    pub activation_bytes: u64,
    /// Bytes stashed per in-flight chunk.
    pub stash_bytes: u64,
    /// Bytes of the stage's parameters.
    pub parameter_bytes: u64,
}

/// The most epochs `training.epochs` (and `pipegnn run --epochs`) may ask for.
pub const MAX_EPOCHS: u32 = 1_000_000;

/// The most compute threads `executor.threads_per_device` (and `pipegnn calibrate --threads`)
/// may ask for: 1,024, more cores than any one device offers; `pipegnn run` starts this many
/// threads for each stage.
pub const MAX_THREADS_PER_DEVICE: u32 = 1024;

/// `training:` hyper-parameters for `pipegnn run`; defaults are the GCN paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Training {
    /// Epochs (default 200).
    pub epochs: u32,
    /// Learning rate (default 0.01).
    pub lr: f64,
    /// L2 weight decay (default 5e-4).
    pub weight_decay: f64,
    /// Dropout probability (default 0.5).
    pub dropout: f64,
    /// Dropout on GAT's attention coefficients (default 0).
    pub attention_dropout: f64,
    /// Seed of the initial weights and dropout masks (default 0).
    pub seed: u64,
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimizer {
    /// Plain SGD: no state.
    Sgd,
    /// SGD with momentum: one copy of the parameters.
    Momentum,
    /// Adam: two copies (first and second moments).
    Adam,
}

impl Optimizer {
    /// How many parameter-sized buffers of state it keeps.
    pub fn state_copies(self) -> u64 {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Momentum => 1,
            Optimizer::Adam => 2,
        }
    }
}

/// Where the schedule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleChoice {
    /// A built-in generator.
    Generated(Generator),
    /// CAGNET-style 1D graph parallelism over every placed device.
    GraphParallel,
    /// A schedule file, resolved relative to the scenario file.
    File(PathBuf),
}

/// `schedule:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Generator or file.
    pub choice: ScheduleChoice,
    /// Number of chunks per epoch.
    pub n_chunks: u32,
    /// For each pipeline device of the schedule (stage s for generated schedules, device index
    /// for files), the scenario device (index into [`Scenario::devices`]) that runs it; `None`
    /// places pipeline device i on scenario device i.
    pub placement: Option<Vec<usize>>,
    /// How vertices split into chunks (GNN workloads).
    pub chunking: Chunking,
    /// The rule for edges between chunks (GNN workloads): drop or exact for GPipe and 1F1B,
    /// stale for GNNPipe, halo exchange or broadcast for graph parallelism.
    pub halo: Halo,
    /// `stages_per_device` as given (interleaved and looped kinds only).
    pub stages_per_device: Option<u32>,
    /// Graph parallelism's algorithm (1D for every other kind).
    pub algorithm: GraphAlgorithm,
    /// GNNPipe's graph partitions per stage: above one, its hybrid with graph parallelism on
    /// stages times partitions devices; 1 for every other kind.
    pub partitions: u32,
}

/// How many stages each device of `generator`'s schedule holds, `given` the scenario's
/// `stages_per_device`: the round-robin kinds take it (one when not given); the others hold
/// their own (one, or two for the V shapes).
pub fn stages_per_device(generator: Generator, given: Option<u32>) -> u32 {
    match generator.placement() {
        StagePlacement::RoundRobin => given.unwrap_or(1),
        _ => generator.default_stages_per_device(),
    }
}

impl ScheduleSpec {
    /// How many stages each device of `generator`'s schedule holds: one for GPipe, 1F1B and
    /// GNNPipe, two for the V shapes, and for the round-robin kinds `schedule.stages_per_device`
    /// (one when not given).
    pub fn stages_per_device(&self, generator: Generator) -> u32 {
        stages_per_device(generator, self.stages_per_device)
    }

    /// The placement for a schedule with `n_pipeline_devices` lists on `n_devices` devices.
    pub fn placement_for(
        &self,
        n_pipeline_devices: usize,
        n_devices: usize,
    ) -> Result<Vec<usize>, String> {
        match &self.placement {
            Some(list) if list.len() == n_pipeline_devices => Ok(list.clone()),
            Some(list) => Err(format!(
                "schedule.placement names {} devices but the schedule runs on {n_pipeline_devices}",
                list.len()
            )),
            None if n_pipeline_devices <= n_devices => Ok((0..n_pipeline_devices).collect()),
            None => Err(format!(
                "the schedule runs on {n_pipeline_devices} devices but the scenario has {n_devices}"
            )),
        }
    }
}
