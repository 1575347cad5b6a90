//! The command line: clap definitions, and [`run`] which does the work.
//!
//! **Architecture Invariant:** only `cli` touches the filesystem, stdout, stderr and exit codes.

mod bench;
mod fidelity;
mod mpi;
mod ogb;
mod output;
mod plan;
mod plots;
mod progress;
mod proptest;
mod run;
mod sweep;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use run::{run, CliError, ExitStatus};

/// The most epochs a run may train: `training.epochs`'s limit, which `--epochs` keeps too.
const MAX_EPOCHS: i64 = crate::scenario::MAX_EPOCHS as i64;
/// The most devices (`schedule::MAX_DEVICES`): `--stages` (a device each) and `--max-devices`.
const MAX_DEVICES: i64 = crate::schedule::MAX_DEVICES as i64;
/// The most chunks (`schedule::MAX_CHUNKS`), as in a scenario.
const MAX_CHUNKS: i64 = crate::schedule::MAX_CHUNKS as i64;
/// The most vertices and edges of an OGB-layout folder (`graph::ogb`), for `bench --write-ogb`.
const MAX_OGB_NODES: i64 = crate::graph::ogb::MAX_NODES as i64;
const MAX_OGB_EDGES: u64 = crate::graph::ogb::MAX_EDGES;
/// The most compute threads per device (`scenario::MAX_THREADS_PER_DEVICE`).
const MAX_THREADS: i64 = crate::scenario::MAX_THREADS_PER_DEVICE as i64;

/// Predict and measure pipeline-parallel training of graph neural networks.
#[derive(Debug, Parser)]
#[command(name = "pipegnn", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a scenario file and summarise it.
    Validate(ScenarioArgs),
    /// Generate (or read) a schedule, check it, and print it; optionally simulate it with uniform
    /// op times and free communication.
    Schedule(ScheduleArgs),
    /// Predict epoch time, bubbles, memory and communication of a scenario's schedules.
    Simulate(SimulateArgs),
    /// Train the scenario's GNN for real on the CPU with its schedule, measuring every op.
    Run(RunArgs),
    /// Microbenchmark every kernel the executor runs on a device, fit a cost function to each,
    /// and write the device profile that `simulate`, `compare` and `fidelity` predict with.
    Calibrate(CalibrateArgs),
    /// Predict with a device profile, run for real, and print predicted against measured.
    Compare(CompareArgs),
    /// Predict and run a fixed matrix of configurations the calibration never saw, and report
    /// the errors per metric.
    Fidelity(FidelityArgs),
    /// Measure the simulator's speed (simulated ops per second) on a large 1F1B schedule, the
    /// time and memory of planning one scenario, or of loading an OGB-layout folder.
    Bench(BenchArgs),
    /// Predict every point of a cross product of `--set` values (`--set key=v1,v2,...`).
    Sweep(SweepArgs),
    /// Search schedules, chunk counts, device counts and stage splits for the fastest
    /// configuration that fits every device's memory.
    Plan(PlanArgs),
    /// Draw SVG (and PNG) plots from saved JSON: simulate/run results, compare results, Chrome
    /// traces from `--trace`, sweeps.
    Plot(PlotArgs),
    /// Regenerate the README's figures into `plots/` from the scenarios, with the simulator.
    Gallery(GalleryArgs),
    /// Property-test a schedule source (a built-in kind, your generator command, or a schedule
    /// file) over random shapes and op times; a failure is shrunk and printed with the command
    /// that reproduces it.
    Proptest(ProptestArgs),
}

/// A scenario file and its overrides.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario YAML file.
    pub scenario: PathBuf,
    /// Override a field before validation, e.g. `--set schedule.chunks=16` or
    /// `--set devices.0.count=8`. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Output format for schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleFormat {
    /// An ASCII timeline of each device's order.
    Text,
    /// `{"kind", "stages", "chunks", "orders"}` (plus metrics with `--simulate`).
    Json,
    /// PyTorch pipelining's compute-only CSV (`_load_csv` reads it): a row per device.
    #[value(name = "torch-csv")]
    TorchCsv,
}

/// Output format for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Tables for people.
    Table,
    /// Stable JSON for programs.
    Json,
}

/// `fidelity --seconds`: a finite number of seconds from 0 to 60.
fn seconds_budget(text: &str) -> std::result::Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=60.0).contains(&seconds) {
        return Err(format!("{text} is outside 0 to 60 seconds"));
    }
    Ok(seconds)
}

/// The kinds `--kind` takes: the catalog's generated kinds, each with its summary.
fn generated_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::schedule::catalog::CATALOG
            .iter()
            .filter(|entry| entry.generator.is_some())
            .map(|entry| clap::builder::PossibleValue::new(entry.name).help(entry.summary)),
    )
}

/// GPipe's backward order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackwardOrderArg {
    /// `B(0..K)`.
    Forward,
    /// `B(K-1..0)`.
    Reverse,
}

/// GNNPipe's per-epoch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GnnPipeOrderArg {
    /// All forwards then all backwards.
    Gpipe,
    /// One forward, one backward.
    #[value(name = "1f1b")]
    OneFOneB,
}

/// `pipegnn schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Which generator (the schedule catalog's kinds).
    #[arg(long, required_unless_present = "file", conflicts_with = "file", value_parser = generated_kinds())]
    pub kind: Option<String>,
    /// Read a schedule file (YAML or JSON) instead of generating one.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Number of stages in all, 1 to 4,096 (on at most 256 devices).
    #[arg(long, required_unless_present = "file", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::schedule::MAX_STAGES)))]
    pub stages: Option<u32>,
    /// Stages per device: several for interleaved_1f1b, looped_bfs and interleaved_zb (placed
    /// round-robin), two for zbv and dualpipev (placed as a V), one for the rest. Defaults to
    /// the kind's own.
    #[arg(long, conflicts_with = "file", value_parser = clap::value_parser!(u32).range(1..=crate::schedule::MAX_STAGES_PER_DEVICE as i64))]
    pub stages_per_device: Option<u32>,
    /// Number of chunks per epoch, 1 to 1,048,576 (and at most 4,194,304 stage-chunk pairs).
    #[arg(long, required_unless_present = "file", value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNKS))]
    pub chunks: Option<u32>,
    /// GPipe's backward order.
    #[arg(long, value_enum, default_value = "forward")]
    pub backward_order: BackwardOrderArg,
    /// GNNPipe's per-epoch order.
    #[arg(long, value_enum, default_value = "gpipe")]
    pub order: GnnPipeOrderArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ScheduleFormat,
    /// Simulate with uniform op times and free communication, and print the metrics.
    #[arg(long)]
    pub simulate: bool,
    /// Forward op time for `--simulate`, e.g. `1ms`.
    #[arg(long, default_value = "1ms", requires = "simulate")]
    pub forward: String,
    /// Backward op time for `--simulate`, e.g. `2ms`: a whole backward (`B`), or an input
    /// gradient (`I`) and a weight gradient (`W`) together.
    #[arg(long, default_value = "2ms", requires = "simulate")]
    pub backward: String,
    /// The weight-gradient half (`W`) of `--backward` for split backwards; `I` takes the rest.
    /// Defaults to half of `--backward`.
    #[arg(long, requires = "simulate")]
    pub weight: Option<String>,
}

/// `pipegnn simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario and overrides.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// `scenario` (the scenario's own), `all` (GPipe, 1F1B, GNNPipe, graph parallelism), or
    /// named schedules joined by commas: gpipe, gpipe-reverse, 1f1b, interleaved_1f1b-vN,
    /// looped_bfs-vN, interleaved_zb-vN, zbv, dualpipev (each optionally -drop or -exact),
    /// gnnpipe, gnnpipe-1f1b, graph_parallel, graph_parallel-broadcast.
    #[arg(long, default_value = "scenario")]
    pub schedule: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Write the (first) schedule's trace as Chrome/Perfetto JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Draw each schedule's timeline under its table.
    #[arg(long)]
    pub timeline: bool,
    /// Write each schedule's timeline and memory bars as SVG into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Predict op times and memory with this device profile (`pipegnn calibrate`) instead of
    /// the analytic tier.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

/// `pipegnn run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario and overrides.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Override `training.epochs` (1 to 1,000,000, the scenario's own limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_EPOCHS))]
    pub epochs: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Run even when the prediction says a device's memory is too small.
    #[arg(long)]
    pub force: bool,
    /// Write the median epoch's measured trace as Chrome/Perfetto JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Where the stages run; overrides `executor.backend`.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Write the median epoch's timeline, memory bars and accuracy curve as SVG into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// How the workers reach each other: `threads` of this process; `mpi`, one process per
    /// schedule device started by `mpirun -np N` (a build with `--features mpi`); or `nccl`,
    /// the same with each rank on a GPU of its own and tensors between GPUs over NCCL (a build
    /// with `--features nccl`).
    #[arg(long, value_enum, default_value = "threads")]
    pub transport: TransportArg,
}

/// The executor's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// A thread per schedule device in this process.
    Threads,
    /// A process per schedule device under mpirun, over MPI.
    Mpi,
    /// A process per schedule device under mpirun, each on a GPU of its own, tensors over NCCL.
    Nccl,
}

/// The executor's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// candle's CPU device.
    Cpu,
    /// candle's CUDA devices (a build with `--features cuda`).
    Cuda,
}

/// `pipegnn calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The device to profile.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Compute threads per device, as `executor.threads_per_device`, 1 to 1,024.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS))]
    pub threads: u32,
    /// A small grid, in seconds: to try the command, not for predictions.
    #[arg(long)]
    pub quick: bool,
    /// Passes over the grid, 1 to 10: each sample keeps its fastest pass, so that a spell of
    /// load from the machine's neighbours does not decide it (`--quick` makes one).
    #[arg(long, default_value_t = fidelity::DEFAULT_PASSES as u32, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub passes: u32,
    /// Where to write the profile (JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write every sample the functions were fitted on (JSON: per function its terms,
    /// and per sample the terms' values, the measured value and the fitted one).
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
}

/// `pipegnn compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Scenario and overrides.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Where the stages run; overrides `executor.backend`.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// A device profile from `pipegnn calibrate`; without one, the device is calibrated first
    /// (microbenchmarks, not this scenario's run).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Not a prediction: replay op times measured on even epochs of this very run against its
    /// odd epochs.
    #[arg(long, conflicts_with_all = ["profile", "transport"])]
    pub replay: bool,
    /// Epochs of the measured run (the median epoch stands for it), 2 to 499,999 (with
    /// `--replay` the run is twice as long and one epoch more).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(2..=(MAX_EPOCHS - 1) / 2))]
    pub epochs: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Write predicted against measured and the two timelines side by side as SVG into this
    /// folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// How the workers reach each other: `threads` of this process, or `mpi` or `nccl` under
    /// `mpirun` (needs `--profile`: every rank reads it; the hand-off between processes is
    /// measured before the run and priced into the prediction).
    #[arg(long, value_enum, default_value = "threads")]
    pub transport: TransportArg,
}

/// `pipegnn fidelity`.
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// A device profile (`pipegnn calibrate --threads 1`, of the same `--device`); without one,
    /// the device is calibrated first.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Where the configurations' stages run: `cuda` puts every stage on this machine's GPUs,
    /// stages sharing one where there are fewer GPUs than stages (`executor.device_map: auto`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Only the configurations whose name contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Measured epochs per configuration, at least (the median epoch stands for it), 2 to
    /// 1,000.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub epochs: u32,
    /// Measured time per configuration, at least, in seconds (0 to 60): a configuration whose
    /// predicted epoch is short runs more epochs than `--epochs` to fill it (up to 1,000), so
    /// that the machine's noise does not decide a millisecond-scale figure.
    #[arg(long, default_value_t = 1.5, value_parser = seconds_budget)]
    pub seconds: f64,
    /// Rounds through the whole matrix, 1 to 20: each configuration runs once a round, and
    /// the round with the shortest median epoch stands for it (a shared machine's contention
    /// only ever slows a run down); every round's epoch is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Where the shared datasets are (Cora, CiteSeer, Facebook, PubMed).
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    pub data: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Draw predicted against measured (with the y = x line) into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Run nothing: score the profile's predictions against the measurements of earlier
    /// `fidelity --format json` runs instead, each value the median of the files' (repeat the
    /// flag for several). The same code and profile predict the same, so a change to either
    /// is scored against the same measurements, and several runs' median takes out much of a
    /// shared machine's noise. The predictions use this machine's cores.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["epochs", "seconds", "rounds"])]
    pub against: Vec<PathBuf>,
}

/// `pipegnn bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of stages (one device each), 1 to 256.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_DEVICES))]
    pub stages: u32,
    /// Number of chunks, 1 to 1,048,576 (and at most 4,194,304 stage-chunk pairs).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNKS))]
    pub chunks: u32,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Instead, time loading and predicting this scenario's own schedule (graph generation,
    /// chunking, simulation), and report the process's peak memory.
    #[arg(long, value_name = "SCENARIO", conflicts_with_all = ["ogb", "write_ogb"])]
    pub scenario: Option<PathBuf>,
    /// Instead, load this OGB-layout folder once and report the time, the process's peak
    /// memory and the size of the arrays loaded.
    #[arg(long, value_name = "DIR", conflicts_with = "write_ogb")]
    pub ogb: Option<PathBuf>,
    /// Instead, write a seeded OGB-layout folder (gzip) of `--nodes` vertices, `--edges`
    /// random edges, `--features` values per vertex and 47 classes, for `--ogb`.
    #[arg(long, value_name = "DIR")]
    pub write_ogb: Option<PathBuf>,
    /// `--write-ogb`: vertices, 2 to 33,554,432 (2^25).
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u32).range(2..=MAX_OGB_NODES))]
    pub nodes: u32,
    /// `--write-ogb`: edges (lines of raw/edge), 0 to 67,108,864 (2^26).
    #[arg(long, default_value_t = 60_000_000, value_parser = clap::value_parser!(u64).range(0..=MAX_OGB_EDGES))]
    pub edges: u64,
    /// `--write-ogb`: feature values per vertex, 1 to 1,024 (and at most 2^28 in all).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub features: u32,
    /// `--write-ogb`: the seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Output format for sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepFormat {
    /// A header row with the axis keys and the metrics, one row per point.
    Csv,
    /// `{"scenario", "axes", "points"}`.
    Json,
}

/// `pipegnn sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Scenario and overrides; a `--set` whose value has commas (and is not a `[...]` or
    /// `{...}` YAML value) is an axis, e.g. `--set schedule.chunks=1,2,4`.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: SweepFormat,
    /// Write the output to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also draw the sweep's figures (bubble against chunks, epoch time against devices) as SVG
    /// into this folder.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Predict op times and memory with this device profile (`pipegnn calibrate`).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

/// `pipegnn plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Scenario and overrides.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Predict op times and memory with this device profile (`pipegnn calibrate`).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Largest count of the scenario's first device entry to try, 1 to 256, the most devices a
    /// scenario may have (default: the scenario's device count).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_DEVICES))]
    pub max_devices: Option<u32>,
    /// Chunk counts to try, comma-separated.
    #[arg(long, default_value = "1,2,4,8,16,32")]
    pub chunks: String,
    /// Schedules to try, comma-separated (default: gpipe,1f1b,gnnpipe,graph_parallel for a GNN,
    /// gpipe,1f1b for an explicit workload).
    #[arg(long)]
    pub schedules: Option<String>,
    /// How many of the best configurations to show.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}

/// `pipegnn plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// JSON files written by pipegnn (`--format json` results, `--trace` files, sweeps).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The folder to write the figures into.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// Write a PNG beside each SVG.
    #[arg(long)]
    pub png: bool,
}

/// `pipegnn gallery`.
#[derive(Debug, Args)]
pub struct GalleryArgs {
    /// The folder to write the figures into.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// Write a PNG beside each SVG.
    #[arg(long)]
    pub png: bool,
}

/// A closed form for `proptest --closed-form`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClosedFormArg {
    /// `(K + P - 1)(F + B)`, bubble `(P - 1) / (K + P - 1)`; one stage per device.
    Gpipe,
    /// The same as gpipe.
    #[value(name = "1f1b")]
    OneFOneB,
    /// `(v K + P - 1)(F + B)`, bubble `(P - 1) / (v K + P - 1)`, on shapes with K a multiple
    /// of P.
    Interleaved,
    /// `K (F + B) + (P - 1)(F + B - 2W)`, W cut to at most F and I; one stage per device, K >= P.
    #[value(name = "zb-h1")]
    ZbH1,
}

/// `pipegnn proptest`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["kind", "generator", "file"])))]
pub struct ProptestArgs {
    /// A built-in kind (the schedule catalog's), held to its documented stash bound unless
    /// `--max-in-flight` says otherwise.
    #[arg(long, value_parser = generated_kinds())]
    pub kind: Option<String>,
    /// Your generator: a command run by `sh -c` for each shape, with `{stages}`, `{chunks}`,
    /// `{v}` (stages per device) and `{devices}` replaced by integers (`{{` and `}}` for
    /// braces), printing a schedule as a JSON or YAML schedule file or torch's compute-only
    /// CSV, e.g. `python3 gen.py --stages {stages} --chunks {chunks}`.
    #[arg(long, value_name = "TEMPLATE")]
    pub generator: Option<String>,
    /// A schedule file (YAML, JSON, or torch's CSV by its `.csv`): its own shape, random op
    /// times.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stages", "chunks", "stages_per_device"])]
    pub file: Option<PathBuf>,
    /// Stages in all: a range such as `2..8` (both ends included) or one count [default: 1..8].
    #[arg(long, value_name = "RANGE")]
    pub stages: Option<String>,
    /// Chunks per epoch: a range such as `1..32` (both ends included) or one count
    /// [default: 1..32].
    #[arg(long, value_name = "RANGE")]
    pub chunks: Option<String>,
    /// Stages per device: a range or one count [default: the kind's own (1..4 for
    /// interleaved_1f1b, looped_bfs and interleaved_zb), 1 for a generator].
    #[arg(long, value_name = "RANGE")]
    pub stages_per_device: Option<String>,
    /// Cases that must hold, 1 to 100,000.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub cases: u32,
    /// The seed the cases are drawn from: the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The most chunks each device may hold in flight, an expression in `stages`, `chunks`,
    /// `devices`, `v`, `device` (or `stage`) with + - * / (rounding down), min, max and
    /// parentheses, e.g. `min(devices - device, chunks)`.
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    pub max_in_flight: Option<String>,
    /// Also check that the makespan and bubble with uniform op times equal this closed form.
    #[arg(long, value_enum)]
    pub closed_form: Option<ClosedFormArg>,
    /// How long one run of the generator may take, e.g. `10s` or `500ms`.
    #[arg(long, default_value = "10s", requires = "generator")]
    pub timeout: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}
