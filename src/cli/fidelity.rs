//! `pipegnn calibrate` (a device profile from microbenchmarks) and `pipegnn fidelity` (a fixed
//! matrix of configurations the calibration never saw, predicted with the profile and run for
//! real, with the distribution of errors per metric).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::progress::Progress;
use super::run::{
    compare_rows, execute, in_file, load_text, own_candidate, print, read, to_json, write,
    CliError, CompareRow, Executed, ExitStatus, Loaded, Result,
};
use super::{CalibrateArgs, DeviceArg, FidelityArgs, ReportFormat};
use crate::cost::fit::quantile;
use crate::cost::{DeviceProfile, Profile, ProfileTarget};
use crate::exec::calibrate::{self, Effort, ProfileSamples};
use crate::plan::{self, Tier};
use crate::scenario::{Backend, Scenario, ScheduleChoice, Workload};
use crate::trace::MemoryCategory;

/// Reads a device profile; a malformed one is invalid input naming the file.
pub(super) fn read_profile(path: &Path) -> Result<DeviceProfile> {
    DeviceProfile::parse(&read(path)?)
        .map_err(|e| CliError::new(ExitStatus::InvalidInput, format!("{}: {e}", path.display())))
}

/// The device profile of each scenario device: its own `profile:` entry, or `cli`'s
/// (`--profile`) for every device; `None` when neither names one. Each is checked against the
/// device it is applied to.
pub(super) fn device_profiles(
    file: &Path,
    scenario: &Scenario,
    cli: Option<&Path>,
    device: Option<DeviceArg>,
) -> Result<Option<Vec<DeviceProfile>>> {
    let named = scenario.devices.iter().any(|d| d.profile.is_some());
    if !named && cli.is_none() {
        return Ok(None);
    }
    let fallback = cli.map(read_profile).transpose()?;
    let mut read_ones: Vec<(PathBuf, DeviceProfile)> = Vec::new();
    let mut out = Vec::new();
    for d in &scenario.devices {
        let profile = match (&d.profile, &fallback) {
            (Some(path), _) => match read_ones.iter().find(|(p, _)| p == path) {
                Some((_, profile)) => profile.clone(),
                None => {
                    let profile = read_profile(path)?;
                    read_ones.push((path.clone(), profile.clone()));
                    profile
                }
            },
            (None, Some(profile)) => profile.clone(),
            (None, None) => {
                return Err(CliError::new(
                    ExitStatus::InvalidInput,
                    format!(
                        "{}: devices[{}].profile: device {} has no profile while others do (name one for every device entry, or pass --profile)",
                        file.display(),
                        d.entry,
                        d.name
                    ),
                ))
            }
        };
        check_profile(file, scenario, &profile, device)?;
        out.push(profile);
    }
    Ok(Some(out))
}

/// Compute threads each device of `scenario` gets when it runs: `threads_per_device`, or the
/// machine's cores split over its devices.
pub(super) fn threads_of(scenario: &Scenario) -> u32 {
    let devices = match scenario.schedule.choice {
        ScheduleChoice::GraphParallel => scenario.devices.len(),
        ScheduleChoice::Generated(generator) => {
            (scenario.n_stages() / scenario.schedule.stages_per_device(generator)) as usize
        }
        ScheduleChoice::File(_) => scenario.n_stages() as usize,
    };
    scenario.executor.threads_per_device.unwrap_or_else(|| {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / devices.max(1)).max(1) as u32
    })
}

/// Refuses a profile measured on another backend, thread count or dtype than the scenario's
/// devices run with.
pub(super) fn check_profile(
    file: &Path,
    scenario: &Scenario,
    profile: &DeviceProfile,
    device: Option<DeviceArg>,
) -> Result<()> {
    let backend = match device {
        Some(DeviceArg::Cuda) => Backend::Cuda,
        Some(DeviceArg::Cpu) => Backend::Cpu,
        None => scenario.executor.backend,
    };
    let dtype = match &scenario.workload {
        Workload::Gnn(spec) if spec.element_bytes != 4 => "a dtype other than f32",
        _ => "f32",
    };
    let want = ProfileTarget {
        backend: match backend {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
        .into(),
        threads: threads_of(scenario),
        dtype: dtype.into(),
    };
    profile.check_target(&want).map_err(|e| {
        CliError::new(
            ExitStatus::InvalidInput,
            format!("{}: --profile: {e}", file.display()),
        )
    })
}

/// What this machine is: its CPU model and core count.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores")
}

/// The built-in pipeline whose real run measures a worker's wake-up and its gap between ops:
/// not any user's configuration.
const CALIBRATION_PIPELINE: &str = "
name: calibration-pipeline
graph:
  synthetic: {kind: sbm, nodes: 3000, avg_degree: 6, classes: 4, features: 200, homophily: 0.8, feature_density: 0.05, seed: 3}
model:
  layers: [{kind: gcn, out: 16}, {kind: sage, out: 4}]
training: {optimizer: adam, dropout: 0.5, epochs: 12, seed: 1}
devices:
  - {name: cpu, count: 2, preset: cpu-core}
links:
  topology: {kind: full, bandwidth: 10GB/s, latency: 1us}
schedule: {kind: 1f1b, chunks: 8, halo: drop}
";

/// A second built-in pipeline, larger and of other layer kinds, beside the first for the
/// memory scales: the two pipelines' four devices each give a ratio, and the median stands.
const MEMORY_PIPELINE: &str = "
name: calibration-pipeline-memory
graph:
  synthetic: {kind: sbm, nodes: 20000, avg_degree: 10, classes: 6, features: 300, homophily: 0.8, feature_density: 0.05, seed: 5}
model:
  layers: [{kind: gat, out: 16, heads: 4}, {kind: gcn, out: 6}]
training: {optimizer: adam, dropout: 0.5, epochs: 4, seed: 1}
devices:
  - {name: cpu, count: 2, preset: cpu-core}
links:
  topology: {kind: full, bandwidth: 10GB/s, latency: 1us}
schedule: {kind: gpipe, chunks: 4, halo: exact}
";

/// Per device of a run, measured over predicted bytes of one memory category at the peak, less
/// `fixed` bytes of it on both sides (what the scale is not for; devices predicted to hold
/// nothing more are left out).
fn peak_ratios(
    predicted: &crate::report::Metrics,
    measured: &crate::report::Metrics,
    category: MemoryCategory,
    fixed: u64,
) -> Vec<f64> {
    let i = MemoryCategory::ALL
        .iter()
        .position(|&c| c == category)
        .expect("every category is in ALL");
    measured
        .devices
        .iter()
        .zip(&predicted.devices)
        .filter(|(_, p)| p.memory_at_peak[i] > fixed)
        .map(|(m, p)| {
            m.memory_at_peak[i].saturating_sub(fixed) as f64 / (p.memory_at_peak[i] - fixed) as f64
        })
        .collect()
}

/// The smallest wake-up and gap between ops of several runs of the built-in pipeline (a run
/// whose receivers never sat waiting for a hand-off measured no wake-up; none at all: 0).
fn quietest(runs: &[Profile]) -> (u64, u64) {
    (
        runs.iter().filter_map(|r| r.handoff_ns).min().unwrap_or(0),
        runs.iter().map(|r| r.gap_ns).min().unwrap_or(0),
    )
}

/// Microbenchmarks `device` with `threads` compute threads (default 1) into a profile, the
/// default number of passes over the grid.
pub(super) fn calibrate_device(
    device: DeviceArg,
    threads: Option<u32>,
    quick: bool,
) -> Result<DeviceProfile> {
    Ok(calibrate_with_samples(device, threads, quick, DEFAULT_PASSES)?.0)
}

/// Passes over the calibration grid unless `calibrate --passes` says otherwise.
pub(super) const DEFAULT_PASSES: usize = 2;

/// As [`calibrate_device`], with `passes` passes over the grid, and the samples each function
/// was fitted on.
fn calibrate_with_samples(
    device: DeviceArg,
    threads: Option<u32>,
    quick: bool,
    passes: usize,
) -> Result<(DeviceProfile, ProfileSamples)> {
    let threads = threads.unwrap_or(1).max(1);
    let backend = match device {
        DeviceArg::Cpu => Backend::Cpu,
        DeviceArg::Cuda => Backend::Cuda,
    };
    let compute = crate::exec::device::open(backend, crate::scenario::DeviceMap::PerStage, 1)
        .map_err(|err| CliError::new(ExitStatus::NoDevice, format!("calibrate: {err}")))?;
    let dev = compute.device(0).clone();
    let spinner = Progress::spinner();
    let progress = |what: &str| spinner.set_message(format!("calibrating: {what}"));
    let effort = if quick { Effort::Quick } else { Effort::Full };
    // A quick grid is for trying the command: one pass.
    let passes = if quick { 1 } else { passes };
    let overrides = [format!("executor.threads_per_device={threads}")];
    let file = Path::new("(built-in calibration pipeline)");
    let epochs = if quick { 4 } else { 12 };
    // The wake-up and the gap are measured by four runs, minutes apart: this one, before the
    // grid, and three after it; the smallest of each stands, as a shared machine's contention
    // only slows a run down (one run at a busy moment measured a wake-up of 578 us where runs
    // measure 2-3 us, and every hand-off of every prediction carried it; on one VM, runs
    // measured 2-6 us or 120-160 us, the slow spells lasting minutes).
    let pipeline = |tier| {
        let loaded = load_text(file, CALIBRATION_PIPELINE, &overrides)?;
        execute(file, loaded, Some(epochs), true, tier, Some(device))
    };
    progress("the built-in pipeline: wake-up, gap between ops");
    let early = pipeline(Tier::Analytic)?;
    let devices = early.scenario.devices.len();
    let early = Profile::from_traces("calibration", "1f1b", early.result.timed_traces());
    let (mut profile, samples) =
        calibrate::calibrate(&dev, threads as usize, effort, passes, machine(), &progress)
            .map_err(|err| CliError::new(ExitStatus::RunFailed, format!("calibrate: {err}")))?;
    progress("the built-in pipeline: wake-up, gap between ops, memory in a pipeline");
    // Predicted with the fitted functions alone (no gap, no memory scale), then run.
    let draft = vec![&profile; devices];
    let run = pipeline(Tier::Device(&draft))?;
    let mut measured = vec![
        early,
        Profile::from_traces("calibration", "1f1b", run.result.timed_traces()),
    ];
    for _ in 0..2 {
        let again = pipeline(Tier::Device(&draft))?;
        measured.push(Profile::from_traces(
            "calibration",
            "1f1b",
            again.result.timed_traces(),
        ));
    }
    // In-flight chunks and temporaries at each device's peak, measured over predicted with
    // the fitted functions alone, in both pipelines (the second only on a full grid).
    let mut stash = Vec::new();
    let mut workspace = Vec::new();
    let mut measured_memory = run.result.memory_measured;
    let matrix_buffer_bytes = profile.matrix_buffer_bytes;
    let mut gather = |run: &Executed| {
        let predicted = crate::report::compute(&run.prediction.trace);
        let measured = &run.metrics_of[run.median];
        stash.extend(peak_ratios(
            &predicted,
            measured,
            MemoryCategory::Activations,
            0,
        ));
        // The workers' matrix-product buffers are predicted as measured, not scaled.
        workspace.extend(peak_ratios(
            &predicted,
            measured,
            MemoryCategory::Workspace,
            matrix_buffer_bytes,
        ));
    };
    gather(&run);
    if !quick {
        let file = Path::new("(built-in memory pipeline)");
        let loaded = load_text(file, MEMORY_PIPELINE, &overrides)?;
        let second = execute(file, loaded, None, true, Tier::Device(&draft), Some(device))?;
        measured_memory &= second.result.memory_measured;
        gather(&second);
    }
    let median = |mut ratios: Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        if measured_memory && !ratios.is_empty() {
            quantile(&ratios, 0.5).clamp(0.5, 4.0)
        } else {
            1.0
        }
    };
    (profile.wakeup_ns, profile.gap_ns) = quietest(&measured);
    profile.stash_scale = median(stash);
    profile.workspace_scale = median(workspace);
    Ok((profile, samples))
}

/// `pipegnn calibrate`.
pub(super) fn calibrate(args: &CalibrateArgs) -> Result<()> {
    let (profile, samples) = calibrate_with_samples(
        args.device,
        Some(args.threads),
        args.quick,
        args.passes as usize,
    )?;
    write(&args.out, &profile.to_json())?;
    if let Some(path) = &args.samples {
        write(path, &calibrate::samples_json(&profile, &samples))?;
    }
    let apart = match profile.passes_apart {
        Some(apart) => format!(
            "; a timed sample's passes lay a median {:.1}% apart",
            apart * 100.0
        ),
        None => String::new(),
    };
    let corun = match profile.corun_slowdown.get(1..) {
        Some(more) if !more.is_empty() => format!(
            "; ops running at once: {}",
            more.iter()
                .enumerate()
                .map(|(i, x)| format!("{} take {x:.2}x as long", i + 2))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    let reuse = if profile.reuse.is_empty() {
        String::new()
    } else {
        let at = [256 << 10, 1 << 20, 4 << 20, 16 << 20];
        format!(
            "; of an op's warm saving, it keeps {} after 256 KiB/1/4/16 MiB of other data",
            at.iter()
                .map(|&b| format!("{:.2}", profile.warmth(b as f64)))
                .collect::<Vec<_>>()
                .join("/")
        )
    };
    let mut out = format!(
        "wrote {} ({}, {} fitted functions; wake-up {} ns, gap between ops {} ns; in a pipeline, chunks hold {:.2}x and temporaries {:.2}x what the functions predict{apart}{corun}{reuse})\n\n{:<30} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        args.out.display(),
        profile.device,
        profile.kernels.len() + profile.warm_kernels.len(),
        profile.wakeup_ns,
        profile.gap_ns,
        profile.stash_scale,
        profile.workspace_scale,
        "function",
        "samples",
        "median",
        "p90",
        "max",
        "apart"
    );
    let cold = profile.kernels.iter().map(|f| (f, &samples.cold, ""));
    let warm = profile
        .warm_kernels
        .iter()
        .map(|f| (f, &samples.warm, " (warm)"));
    for ((kernel, fit), samples, warm) in cold.chain(warm) {
        let apart = match samples
            .get(kernel)
            .and_then(|s| calibrate::median_apart([s]))
        {
            Some(apart) => format!("{:.1}%", apart * 100.0),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<30} {:>8} {:>8.1}% {:>8.1}% {:>8.1}% {:>9}\n",
            format!("{}{warm}", kernel.name()),
            fit.samples,
            fit.median_error * 100.0,
            fit.p90_error * 100.0,
            fit.max_error * 100.0,
            apart
        ));
    }
    print(&out)
}

/// One configuration of the fidelity matrix.
struct Config {
    name: &'static str,
    /// `cora`, `citeseer`, `facebook`, `pubmed` or `synthetic` (100,000 vertices).
    graph: &'static str,
    layers: &'static str,
    stages: u32,
    schedule: &'static str,
    chunks: u32,
    halo: &'static str,
    /// Extra schedule fields.
    knobs: &'static str,
    /// Emulate a slow link (bandwidth) between the stages.
    slow_link: Option<&'static str>,
}

const fn config(
    name: &'static str,
    graph: &'static str,
    layers: &'static str,
    stages: u32,
    schedule: &'static str,
    chunks: u32,
    halo: &'static str,
) -> Config {
    Config {
        name,
        graph,
        layers,
        stages,
        schedule,
        chunks,
        halo,
        knobs: "",
        slow_link: None,
    }
}

const GCN2: &str = "[{kind: gcn, out: 16}, {kind: gcn, out: CLASSES}]";
const GCN3: &str = "[{kind: gcn, out: 32}, {kind: gcn, out: 32}, {kind: gcn, out: CLASSES}]";
const GCN4: &str =
    "[{kind: gcn, out: 32}, {kind: gcn, out: 32}, {kind: gcn, out: 32}, {kind: gcn, out: CLASSES}]";
const SAGE2: &str = "[{kind: sage, out: 32}, {kind: sage, out: CLASSES}]";
const SAGE3: &str = "[{kind: sage, out: 32}, {kind: sage, out: 32}, {kind: sage, out: CLASSES}]";
const GAT2: &str = "[{kind: gat, out: 8, heads: 8}, {kind: gat, out: CLASSES, heads: 1}]";

/// The matrix: none of these is the calibration's microbenchmarks or its built-in pipeline.
fn matrix() -> Vec<Config> {
    vec![
        config("cora-gcn2-1stage", "cora", GCN2, 1, "gpipe", 1, "drop"),
        config(
            "cora-gcn2-gpipe-drop-s2-k8",
            "cora",
            GCN2,
            2,
            "gpipe",
            8,
            "drop",
        ),
        config(
            "cora-gcn2-1f1b-drop-s2-k4",
            "cora",
            GCN2,
            2,
            "1f1b",
            4,
            "drop",
        ),
        config(
            "cora-gcn2-gpipe-exact-s2-k4",
            "cora",
            GCN2,
            2,
            "gpipe",
            4,
            "exact",
        ),
        config(
            "cora-sage2-gpipe-drop-s2-k2",
            "cora",
            SAGE2,
            2,
            "gpipe",
            2,
            "drop",
        ),
        config(
            "cora-gat2-gpipe-drop-s2-k4",
            "cora",
            GAT2,
            2,
            "gpipe",
            4,
            "drop",
        ),
        Config {
            knobs: "backward: exact",
            ..config(
                "cora-gcn2-gnnpipe-exact-s2-k4",
                "cora",
                GCN2,
                2,
                "gnnpipe",
                4,
                "stale",
            )
        },
        config(
            "cora-gcn2-graph-parallel-p2",
            "cora",
            GCN2,
            2,
            "graph_parallel",
            1,
            "drop",
        ),
        config(
            "cora-gcn4-1f1b-drop-s4-k8",
            "cora",
            GCN4,
            4,
            "1f1b",
            8,
            "drop",
        ),
        Config {
            slow_link: Some("20MB/s"),
            ..config(
                "cora-gcn2-gpipe-drop-s2-k8-slow-link",
                "cora",
                GCN2,
                2,
                "gpipe",
                8,
                "drop",
            )
        },
        config(
            "citeseer-gcn2-gpipe-drop-s2-k16",
            "citeseer",
            GCN2,
            2,
            "gpipe",
            16,
            "drop",
        ),
        config(
            "citeseer-sage3-1f1b-exact-s2-k4",
            "citeseer",
            SAGE3,
            2,
            "1f1b",
            4,
            "exact",
        ),
        config(
            "citeseer-gat2-1stage",
            "citeseer",
            GAT2,
            1,
            "gpipe",
            1,
            "drop",
        ),
        config(
            "facebook-gcn2-gpipe-drop-s2-k8",
            "facebook",
            GCN2,
            2,
            "gpipe",
            8,
            "drop",
        ),
        config(
            "facebook-gcn3-1f1b-drop-s2-k32",
            "facebook",
            GCN3,
            2,
            "1f1b",
            32,
            "drop",
        ),
        Config {
            knobs: "backward: drop",
            ..config(
                "facebook-sage2-gnnpipe-drop-s2-k4",
                "facebook",
                SAGE2,
                2,
                "gnnpipe",
                4,
                "stale",
            )
        },
        config(
            "facebook-gat2-gpipe-drop-s2-k4",
            "facebook",
            GAT2,
            2,
            "gpipe",
            4,
            "drop",
        ),
        config(
            "facebook-gcn2-graph-parallel-p2",
            "facebook",
            GCN2,
            2,
            "graph_parallel",
            1,
            "drop",
        ),
        Config {
            knobs: "backward: drop",
            slow_link: Some("200MB/s"),
            ..config(
                "facebook-gcn2-gnnpipe-drop-s2-k4-slow-link",
                "facebook",
                GCN2,
                2,
                "gnnpipe",
                4,
                "stale",
            )
        },
        config(
            "pubmed-gcn2-gpipe-drop-s2-k4",
            "pubmed",
            GCN2,
            2,
            "gpipe",
            4,
            "drop",
        ),
        config(
            "pubmed-gat2-1f1b-drop-s2-k8",
            "pubmed",
            GAT2,
            2,
            "1f1b",
            8,
            "drop",
        ),
        Config {
            knobs: "backward: deferred",
            ..config(
                "pubmed-gcn4-gnnpipe-deferred-s4-k8",
                "pubmed",
                GCN4,
                4,
                "gnnpipe",
                8,
                "stale",
            )
        },
        config(
            "synthetic-gcn2-gpipe-drop-s2-k8",
            "synthetic",
            GCN2,
            2,
            "gpipe",
            8,
            "drop",
        ),
        config(
            "synthetic-sage2-1stage",
            "synthetic",
            SAGE2,
            1,
            "gpipe",
            1,
            "drop",
        ),
        Config {
            knobs: "backward: drop",
            ..config(
                "synthetic-gcn3-gnnpipe-drop-s2-k16",
                "synthetic",
                GCN3,
                2,
                "gnnpipe",
                16,
                "stale",
            )
        },
        config(
            "synthetic-gcn2-1f1b-exact-s2-k2",
            "synthetic",
            GCN2,
            2,
            "1f1b",
            2,
            "exact",
        ),
    ]
}

/// The scenario text of one configuration, with datasets under `data`.
fn scenario_text(c: &Config, data: &Path) -> String {
    let (graph, classes) = match c.graph {
        "synthetic" => (
            "synthetic: {kind: sbm, nodes: 100000, avg_degree: 8, classes: 8, features: 256, homophily: 0.8, feature_density: 0.03, seed: 11}".to_string(),
            8,
        ),
        name => {
            let classes = match name {
                "cora" => 7,
                "citeseer" => 6,
                "facebook" => 4,
                _ => 3,
            };
            let density = if name == "pubmed" { ", feature_density: 0.1" } else { "" };
            (
                format!("dataset: {{path: \"{}\"{density}}}", data.join(name).display()),
                classes,
            )
        }
    };
    let layers = c.layers.replace("CLASSES", &classes.to_string());
    let model = format!("model:\n  layers: {layers}\n");
    let schedule = if c.schedule == "graph_parallel" {
        "schedule: {kind: graph_parallel}".to_string()
    } else if c.schedule == "gnnpipe" {
        format!(
            "schedule: {{kind: gnnpipe, chunks: {}, {}}}",
            c.chunks, c.knobs
        )
    } else {
        format!(
            "schedule: {{kind: {}, chunks: {}, halo: {}}}",
            c.schedule, c.chunks, c.halo
        )
    };
    let (bandwidth, emulate) = match c.slow_link {
        Some(b) => (b, true),
        None => ("10GB/s", false),
    };
    format!(
        "name: {}\ngraph:\n  {graph}\n{model}training: {{optimizer: adam, lr: 0.01, weight_decay: 5.0e-4, dropout: 0.5, epochs: 200, seed: 1}}\ndevices:\n  - {{name: cpu, count: {}, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: {bandwidth}, latency: 1us}}\nexecutor: {{backend: cpu, threads_per_device: 1, emulate_links: {emulate}}}\n{schedule}\n",
        c.name, c.stages
    )
}

/// One configuration predicted: by the device profile and, for the record, by the analytic
/// tier (its epoch, in ns).
struct Predicted {
    file: PathBuf,
    loaded: Loaded,
    profiled: plan::Prediction,
    analytic_ns: u64,
}

/// Predicts one configuration with `profile`, for this machine's cores.
fn predict_config(c: &Config, args: &FidelityArgs, profile: &DeviceProfile) -> Result<Predicted> {
    let file = PathBuf::from(format!("(fidelity) {}", c.name));
    let mut loaded = load_text(&file, &scenario_text(c, &args.data), &[])?;
    check_profile(&file, &loaded.scenario, profile, Some(args.device))?;
    // The workers will be threads of this process: every prediction below shares its cores,
    // as the run's own does.
    loaded.scenario.executor.cores = std::thread::available_parallelism()
        .ok()
        .map(|n| n.get().min(u32::MAX as usize) as u32);
    let profiles = vec![profile; loaded.scenario.devices.len()];
    // The analytic tier on the same configuration, for the record.
    let candidate = own_candidate(&loaded.scenario)?;
    let analytic = plan::predict(&loaded.scenario, loaded.graph.as_ref(), &candidate)
        .map_err(in_file(&file))?;
    let analytic_ns = crate::report::compute(&analytic.trace).epoch_time_ns;
    let predicted = plan::predict_profiled(
        &loaded.scenario,
        loaded.graph.as_ref(),
        &candidate,
        Tier::Device(&profiles),
    )
    .map_err(in_file(&file))?;
    Ok(Predicted {
        file,
        loaded,
        profiled: predicted,
        analytic_ns,
    })
}

/// Predicts and runs one configuration once.
fn measure(c: &Config, args: &FidelityArgs, profile: &DeviceProfile) -> Result<Outcome> {
    let Predicted {
        file,
        loaded,
        profiled: predicted,
        analytic_ns,
    } = predict_config(c, args, profile)?;
    let profiles = vec![profile; loaded.scenario.devices.len()];
    let epochs = measured_epochs(args, crate::report::compute(&predicted.trace).epoch_time_ns);
    let slowdown = profile.probe.map(|then| calibrate::probe().slowdown(&then));
    let run = execute(
        &file,
        loaded,
        Some(epochs + 1),
        true,
        Tier::Device(&profiles),
        Some(args.device),
    )?;
    let measured = run.metrics_of[run.median].clone();
    let analytic_error = (measured.epoch_time_ns > 0).then(|| {
        (analytic_ns as f64 - measured.epoch_time_ns as f64) / measured.epoch_time_ns as f64
    });
    Ok(Outcome {
        name: c.name,
        epochs,
        rounds: Vec::new(),
        slowdown,
        analytic_error,
        rows: compare_rows(&run, &measured),
        extrapolated: run.prediction.extrapolated.clone(),
    })
}

/// The measurements of earlier `fidelity --format json` runs (`--against`), per
/// configuration.
#[derive(Default)]
struct Earlier {
    /// Each row's measured values, one per run that has it, by metric and device.
    values: BTreeMap<(String, Option<String>), Vec<f64>>,
    /// Each run's measured epochs.
    epochs: Vec<u32>,
}

/// Reads `--against` files: the JSON `fidelity --format json` prints.
fn read_earlier(paths: &[PathBuf]) -> Result<BTreeMap<String, Earlier>> {
    let mut out: BTreeMap<String, Earlier> = BTreeMap::new();
    for path in paths {
        let text = read(path)?;
        let bad = |what: String| {
            CliError::new(
                ExitStatus::InvalidInput,
                format!("--against {}: {what}", path.display()),
            )
        };
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let configs = doc["configurations"].as_array().ok_or_else(|| {
            bad(
                "not what `pipegnn fidelity --format json` prints (no `configurations` list)"
                    .into(),
            )
        })?;
        for (i, c) in configs.iter().enumerate() {
            let at = format!("configurations[{i}]");
            let name = c["name"]
                .as_str()
                .ok_or_else(|| bad(format!("{at}.name is not text")))?;
            let metrics = c["metrics"]
                .as_array()
                .ok_or_else(|| bad(format!("{at}.metrics is not a list")))?;
            let earlier = out.entry(name.to_string()).or_default();
            if let Some(epochs) = c["epochs"].as_u64() {
                earlier.epochs.push(epochs.min(u64::from(u32::MAX)) as u32);
            }
            for (j, m) in metrics.iter().enumerate() {
                let at = format!("{at}.metrics[{j}]");
                let metric = m["name"]
                    .as_str()
                    .ok_or_else(|| bad(format!("{at}.name is not text")))?;
                let device = match &m["device"] {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(d) => Some(d.clone()),
                    _ => return Err(bad(format!("{at}.device is not text"))),
                };
                let value = match &m["measured"] {
                    serde_json::Value::Null => continue,
                    v => v
                        .as_f64()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| bad(format!("{at}.measured is not a number")))?,
                };
                earlier
                    .values
                    .entry((metric.to_string(), device))
                    .or_default()
                    .push(value);
            }
        }
    }
    Ok(out)
}

/// The median of `values` (of an even count, the lower of the middle two, as the summary's
/// quantiles take it); `None` for none.
fn median_of(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (!sorted.is_empty()).then(|| quantile(&sorted, 0.5))
}

/// One configuration predicted with `profile` and scored against the median of earlier runs'
/// measurements of it: nothing runs.
fn rescore(
    c: &Config,
    args: &FidelityArgs,
    profile: &DeviceProfile,
    earlier: &Earlier,
) -> Result<Outcome> {
    let predicted = predict_config(c, args, profile)?;
    let rows = super::run::predicted_rows(&predicted.profiled.trace, |name, _, device| {
        let key = (name.to_string(), device.map(str::to_string));
        earlier.values.get(&key).and_then(|v| median_of(v))
    });
    let measured_epoch = rows[0].measured.filter(|&m| m > 0.0);
    Ok(Outcome {
        name: c.name,
        epochs: earlier.epochs.iter().copied().min().unwrap_or(0),
        // Each run's epoch time, in the order given.
        rounds: earlier
            .values
            .get(&("epoch_time_s".to_string(), None))
            .cloned()
            .unwrap_or_default(),
        slowdown: None,
        analytic_error: measured_epoch.map(|m| (predicted.analytic_ns as f64 / 1e9 - m) / m),
        rows,
        extrapolated: predicted.profiled.extrapolated.clone(),
    })
}

/// The slowest round's epoch over the fastest's, e.g. `x1.08`.
fn spread(rounds: &[f64]) -> String {
    round_ratio(rounds).map_or("-".into(), |r| format!("x{r:.2}"))
}

/// The slowest round's epoch over the fastest's; none without a positive round.
fn round_ratio(rounds: &[f64]) -> Option<f64> {
    let lo = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rounds.iter().copied().fold(0.0, f64::max);
    (lo > 0.0 && lo.is_finite()).then(|| hi / lo)
}

/// How many epochs to measure a configuration for: `--epochs`, or more where the predicted
/// epoch is short, to fill `--seconds` (at most 1,000). Decided from the prediction, not from
/// a measurement, so the same profile runs the same epochs every time.
fn measured_epochs(args: &FidelityArgs, predicted_epoch_ns: u64) -> u32 {
    let filling = (args.seconds * 1e9 / predicted_epoch_ns.max(1) as f64).ceil();
    (filling.min(1000.0) as u32).max(args.epochs)
}

/// One configuration's outcome.
struct Outcome {
    name: &'static str,
    /// Epochs measured (the warm-up left out).
    epochs: u32,
    /// The median epoch of each round, in seconds; the shortest round's figures stand.
    rounds: Vec<f64>,
    /// How much slower the machine was, just before the standing round, than when the
    /// profile was calibrated: memory and compute (`None` for a profile without a probe).
    slowdown: Option<(f64, f64)>,
    /// The analytic tier's relative error on the epoch time.
    analytic_error: Option<f64>,
    rows: Vec<CompareRow>,
    extrapolated: Vec<String>,
}

/// `pipegnn fidelity`.
pub(super) fn fidelity(args: &FidelityArgs) -> Result<()> {
    let configs: Vec<Config> = matrix()
        .into_iter()
        .filter(|c| {
            args.only
                .as_ref()
                .is_none_or(|o| o.split(',').any(|name| c.name.contains(name.trim())))
        })
        .collect();
    if configs.is_empty() {
        return Err(CliError::new(
            ExitStatus::Usage,
            "--only: no configuration of the matrix matches",
        ));
    }
    let profile = match &args.profile {
        Some(path) => read_profile(path)?,
        None => calibrate_device(args.device, Some(1), false)?,
    };
    for c in &configs {
        if c.graph != "synthetic" && !args.data.join(c.graph).is_dir() {
            return Err(CliError::new(
                ExitStatus::Io,
                format!(
                    "--data: {} has no `{}` dataset folder (graph-csv v1)",
                    args.data.display(),
                    c.graph
                ),
            ));
        }
    }
    let outcomes = if args.against.is_empty() {
        run_matrix(&configs, args, &profile)?
    } else {
        let earlier = read_earlier(&args.against)?;
        configs
            .iter()
            .map(|c| match earlier.get(c.name) {
                Some(e) => rescore(c, args, &profile, e),
                None => Err(CliError::new(
                    ExitStatus::InvalidInput,
                    format!(
                        "--against: no file measured `{}` (leave it out with --only)",
                        c.name
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?
    };
    let summary = summarise(&outcomes);
    if let Some(dir) = &args.plot {
        let points = outcomes
            .iter()
            .flat_map(|o| {
                o.rows.iter().map(move |r| {
                    (
                        r.name.to_string(),
                        Some(format!(
                            "{}: {}",
                            o.name,
                            r.device.clone().unwrap_or_default()
                        )),
                        r.predicted,
                        r.measured,
                    )
                })
            })
            .collect();
        super::plots::fidelity_figures(dir, points)?.commit()?;
    }
    match args.format {
        ReportFormat::Json => {
            let configs: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|o| serde_json::json!({"name": o.name, "epochs": o.epochs, "round_epoch_times_s": o.rounds, "machine_slowdown": o.slowdown.map(|(memory, compute)| serde_json::json!({"memory": memory, "compute": compute})), "metrics": o.rows, "extrapolated": o.extrapolated, "analytic_epoch_time_relative_error": o.analytic_error}))
                .collect();
            let summary: Vec<serde_json::Value> = summary
                .iter()
                .map(|s| serde_json::json!({"metric": s.metric, "count": s.count, "median": s.median, "p90": s.p90, "max": s.max, "absolute": s.absolute}))
                .collect();
            print(&to_json(&serde_json::json!({
                "profile": profile.device,
                "profile_passes_apart": profile.passes_apart,
                "profile_corun_slowdown": profile.corun_slowdown,
                "machine": profile.machine,
                "epochs": args.against.is_empty().then_some(args.epochs),
                "seconds": args.against.is_empty().then_some(args.seconds),
                "rounds": args.against.is_empty().then_some(args.rounds),
                "against": &args.against,
                "configurations": configs,
                "summary": summary,
            }))?)
        }
        ReportFormat::Table => {
            // The calibration's own noise, beside the measurement's.
            let mut apart = profile.passes_apart.map_or(String::new(), |apart| {
                format!(", its samples' passes a median {:.1}% apart", apart * 100.0)
            });
            if profile.corun_slowdown.len() > 1 {
                apart.push_str(&format!(
                    ", two ops at once {:.2}x as long",
                    profile.corun_slowdown[1]
                ));
            }
            let measured = if args.against.is_empty() {
                format!(
                    "at least {} measured epochs and {} s each, the shortest of {} rounds",
                    args.epochs, args.seconds, args.rounds
                )
            } else {
                format!(
                    "the median of {} earlier runs' measurements (--against; nothing ran)",
                    args.against.len()
                )
            };
            let mut out = format!(
                "fidelity: {} configurations predicted with the device profile ({}, measured on {}{apart}) against {measured}\n\n{:<44} {:>7} {:>11} {:>11} {:>7} {:>11} {:>8} {:>8} {:>8} {:>9}\n",
                outcomes.len(),
                profile.device,
                profile.machine,
                "configuration",
                "epochs",
                "predicted",
                "measured",
                "spread",
                "machine",
                "epoch",
                "busy",
                "memory",
                "analytic"
            );
            for o in &outcomes {
                let epoch = &o.rows[0];
                let worst = |name: &str| {
                    o.rows
                        .iter()
                        .filter(|r| r.name == name)
                        .filter_map(|r| r.relative_error)
                        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                        .map_or("-".into(), |e| format!("{:+.1}%", e * 100.0))
                };
                out.push_str(&format!(
                    "{:<44} {:>7} {:>11} {:>11} {:>7} {:>11} {:>8} {:>8} {:>8} {:>9}{}\n",
                    o.name,
                    o.epochs,
                    crate::units::format_duration_ns((epoch.predicted * 1e9) as u64),
                    epoch
                        .measured
                        .map_or("-".into(), |m| crate::units::format_duration_ns(
                            (m * 1e9) as u64
                        )),
                    spread(&o.rounds),
                    o.slowdown.map_or("-".into(), |(memory, compute)| format!(
                        "x{memory:.2}/x{compute:.2}"
                    )),
                    epoch
                        .relative_error
                        .map_or("-".into(), |e| format!("{:+.1}%", e * 100.0)),
                    worst("busy_s"),
                    worst("peak_memory_bytes"),
                    o.analytic_error
                        .map_or("-".into(), |e| format!("{:+.0}%", e * 100.0)),
                    if o.extrapolated.is_empty() {
                        ""
                    } else {
                        "  (extrapolated)"
                    }
                ));
            }
            out.push_str(&format!(
                "\n{:<22} {:>6} {:>9} {:>9} {:>9}\n",
                "metric", "count", "median", "p90", "max"
            ));
            for s in &summary {
                let fmt = |v: f64| {
                    if s.absolute {
                        format!("{v:.3}")
                    } else {
                        format!("{:.1}%", v * 100.0)
                    }
                };
                out.push_str(&format!(
                    "{:<22} {:>6} {:>9} {:>9} {:>9}\n",
                    s.metric,
                    s.count,
                    fmt(s.median),
                    fmt(s.p90),
                    fmt(s.max)
                ));
            }
            out.push_str("(spread: the slowest round's median epoch over the shortest's, and epoch_round_spread its distribution, the measurement's own noise; machine and its summary rows: how much slower this machine's memory and core were just before that round than at calibration, a fixed probe each, 1 as calibrated; epoch, busy, memory: |relative error|; bubble: |predicted - measured| fraction; bytes: |relative error|, 0 is exact; analytic: the analytic tier's epoch-time error with the cpu-core preset)\n");
            print(&out)
        }
    }
}

/// Runs the matrix round by round, so that a spell of contention on a shared machine falls on
/// different configurations in different rounds; each configuration's shortest round stands.
fn run_matrix(
    configs: &[Config],
    args: &FidelityArgs,
    profile: &DeviceProfile,
) -> Result<Vec<Outcome>> {
    let rounds = args.rounds as usize;
    let progress = Progress::counted(
        "fidelity",
        (configs.len() * rounds) as u64,
        "configuration runs",
    );
    let mut best: Vec<Option<Outcome>> = configs.iter().map(|_| None).collect();
    let mut epochs_s: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (i, c) in configs.iter().enumerate() {
            progress.set_message(format!("{} (round {} of {rounds})", c.name, round + 1));
            let outcome = measure(c, args, profile)?;
            let epoch = outcome.rows[0].measured.unwrap_or(f64::INFINITY);
            epochs_s[i].push(epoch);
            let shorter = best[i]
                .as_ref()
                .is_none_or(|b| epoch < b.rows[0].measured.unwrap_or(f64::INFINITY));
            if shorter {
                best[i] = Some(outcome);
            }
            progress.step();
        }
    }
    let outcomes: Vec<Outcome> = best
        .into_iter()
        .zip(epochs_s)
        .map(|(o, rounds)| Outcome {
            rounds,
            ..o.expect("every configuration ran at least once")
        })
        .collect();
    drop(progress);
    Ok(outcomes)
}

/// The distribution of one metric's errors over the matrix.
struct Summary {
    metric: &'static str,
    count: usize,
    median: f64,
    p90: f64,
    max: f64,
    /// Absolute differences (bubble fractions) rather than relative errors.
    absolute: bool,
}

impl Summary {
    /// The distribution of `values`.
    fn of(metric: &'static str, mut values: Vec<f64>, absolute: bool) -> Summary {
        values.sort_by(f64::total_cmp);
        Summary {
            metric,
            count: values.len(),
            median: quantile(&values, 0.5),
            p90: quantile(&values, 0.9),
            max: values.last().copied().unwrap_or(0.0),
            absolute,
        }
    }
}

fn summarise(outcomes: &[Outcome]) -> Vec<Summary> {
    let analytic = Summary::of(
        "analytic_epoch_time_s",
        outcomes
            .iter()
            .filter_map(|o| o.analytic_error.map(f64::abs))
            .collect(),
        false,
    );
    let metrics = [
        ("epoch_time_s", false),
        ("busy_s", false),
        ("bubble_fraction", true),
        ("peak_memory_bytes", false),
        ("link_bytes", false),
        ("op_time_s", false),
    ];
    metrics
        .iter()
        .map(|&(metric, absolute)| {
            let errors = outcomes
                .iter()
                .flat_map(|o| &o.rows)
                .filter(|r| r.name == metric)
                .filter_map(|r| {
                    if absolute {
                        r.measured.map(|m| (r.predicted - m).abs())
                    } else {
                        r.relative_error.map(f64::abs)
                    }
                })
                .collect();
            Summary::of(metric, errors, absolute)
        })
        .chain(std::iter::once(analytic))
        .chain(round_spread(outcomes))
        .chain(slowdowns(outcomes))
        .collect()
}

/// How far the measurement itself moves: over the configurations, the slowest round's median
/// epoch over the shortest's, less 1 (a relative spread, as the epoch's error is); none with a
/// single round. An error below this is below what measuring again would change.
fn round_spread(outcomes: &[Outcome]) -> Option<Summary> {
    let spreads: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.rounds.len() > 1)
        .filter_map(|o| round_ratio(&o.rounds).map(|r| r - 1.0))
        .collect();
    (!spreads.is_empty()).then(|| Summary::of("epoch_round_spread", spreads, false))
}

/// The distribution of the machine probe's slowdown over the configurations (a ratio, not an
/// error: 1 is the machine as calibrated), memory then compute; none without a probe.
fn slowdowns(outcomes: &[Outcome]) -> Vec<Summary> {
    [
        ("machine_memory_slowdown", 0),
        ("machine_compute_slowdown", 1),
    ]
    .into_iter()
    .filter_map(|(metric, which)| {
        let ratios: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.slowdown.map(|s| if which == 0 { s.0 } else { s.1 }))
            .collect();
        (!ratios.is_empty()).then(|| Summary::of(metric, ratios, true))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::{quietest, round_spread, Outcome, Profile};

    fn measured(rounds: &[f64]) -> Outcome {
        Outcome {
            name: "c",
            epochs: 10,
            rounds: rounds.to_vec(),
            slowdown: None,
            analytic_error: None,
            rows: Vec::new(),
            extrapolated: Vec::new(),
        }
    }

    #[test]
    fn the_round_spread_is_the_slowest_round_over_the_fastest() {
        // Spreads 0.25, 0.0 and 0.5; a single round says nothing about noise.
        let outcomes = [
            measured(&[0.010, 0.0125, 0.011]),
            measured(&[0.020, 0.020]),
            measured(&[0.004, 0.006]),
            measured(&[0.5]),
        ];
        let s = round_spread(&outcomes).unwrap();
        assert_eq!((s.metric, s.count), ("epoch_round_spread", 3));
        assert!((s.median - 0.25).abs() < 1e-9, "{}", s.median);
        assert!((s.max - 0.5).abs() < 1e-9);
        assert!(round_spread(&[measured(&[0.5])]).is_none());
    }

    fn run(handoff_ns: Option<u64>, gap_ns: u64) -> Profile {
        Profile {
            scenario: "calibration".into(),
            schedule: "1f1b".into(),
            ops: Default::default(),
            handoff_ns,
            gap_ns,
            stash: Default::default(),
            workspace: Default::default(),
        }
    }

    #[test]
    fn the_smallest_measurement_stands_and_a_missing_one_does_not_count() {
        let runs = [
            run(Some(578_426), 900),
            run(Some(2_112), 450),
            run(None, 210),
            run(Some(146_194), 380),
        ];
        assert_eq!(quietest(&runs), (2_112, 210));
        assert_eq!(quietest(&runs[..1]), (578_426, 900));
        assert_eq!(quietest(&[run(None, 300)]), (0, 300));
        assert_eq!(quietest(&[]), (0, 0));
    }
}
