//! Runs a parsed command: reads files, calls the library, writes output, maps errors to exit
//! codes.
//!
//! Exit codes (also in the README):
//! 0 success; 1 internal error; 2 command-line usage error (clap); 3 a file could not be read or
//! written; 4 invalid input (scenario or schedule file: syntax, unknown field, bad value);
//! 5 the schedule cannot run (deadlock, or it does not match the scenario); 6 a device's
//! predicted peak memory exceeds its capacity (the prediction is still printed); 7 a real run
//! failed (a non-finite loss, or a feature the executor does not have yet); 8 the device cannot
//! be used; 9 the MPI transport cannot start; 10 `proptest` found a failing case; 11
//! `proptest`'s generator command failed.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use super::output::Outputs;
use super::progress::Progress;
use super::{
    bench, BackwardOrderArg, Cli, Command, CompareArgs, DeviceArg, GnnPipeOrderArg, ReportFormat,
    RunArgs, ScenarioArgs, ScheduleArgs, ScheduleFormat, SimulateArgs, TransportArg,
};
use crate::cost::{Profile, UniformCost};
use crate::diag::{self, FieldPath, MAX_DOCUMENT_BYTES};
use crate::exec::{self, ExecError};
use crate::graph::{self, dataset::Dataset};
use crate::launch::{self, LaunchError};
use crate::plan::GraphData;
use crate::plan::{self, Candidate, PlanError};
use crate::report::{self, chrome_trace, json, table, timeline};
use crate::scenario::{self, Backend, GraphSource, Scenario, ScheduleChoice, Workload};
use crate::schedule::{
    self, BackwardOrder, Generator, GnnPipeKnobs, GnnPipeOrder, OpKind, Schedule, ScheduleError,
};
use crate::sim;
use crate::trace::SpanKind;
use crate::units;

/// A documented exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 1: a bug; please report it.
    Internal = 1,
    /// 2: a command-line usage error.
    Usage = 2,
    /// 3: a file could not be read or written.
    Io = 3,
    /// 4: the input is invalid.
    InvalidInput = 4,
    /// 5: the schedule cannot run.
    ScheduleRejected = 5,
    /// 6: the schedule does not fit the devices' memory.
    DoesNotFit = 6,
    /// 7: a real run failed (a non-finite loss, or something the executor cannot run yet).
    RunFailed = 7,
    /// 8: the device asked for cannot be used: a build without CUDA, no GPU or driver, or
    /// fewer GPUs than `device_map: per_stage` needs.
    NoDevice = 8,
    /// 9: the MPI or NCCL transport cannot start: a build without it, a process not started by
    /// `mpirun`, a rank count other than the schedule's devices, ranks that read different
    /// inputs, MPI asked to run on GPUs or NCCL on the CPU or on one shared GPU.
    Transport = 9,
    /// 10: `proptest` found a case that breaks a property (the shrunk case is printed).
    PropertyFails = 10,
    /// 11: `proptest --generator`'s command could not be started, exited with a failure, ran
    /// past `--timeout`, or printed more than 4 MiB.
    GeneratorFailed = 11,
}

/// An error with the exit status it maps to. Its message may span several lines, one per
/// problem.
#[derive(Debug)]
pub struct CliError {
    /// The exit status.
    pub status: ExitStatus,
    /// One or more lines, each a complete message.
    pub message: String,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl CliError {
    pub(super) fn new(status: ExitStatus, message: impl fmt::Display) -> Self {
        CliError {
            status,
            message: message.to_string(),
        }
    }
}

impl From<PlanError> for CliError {
    fn from(err: PlanError) -> Self {
        let status = match err {
            PlanError::File(_) | PlanError::Invalid(_) => ExitStatus::InvalidInput,
            PlanError::Schedule(_) | PlanError::Mismatch(_) => ExitStatus::ScheduleRejected,
            PlanError::Sim(_) => ExitStatus::Internal,
        };
        CliError::new(status, err)
    }
}

pub(super) type Result<T> = std::result::Result<T, CliError>;

/// Runs a command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Schedule(args) => schedule_command(&args),
        Command::Simulate(args) => simulate(&args),
        Command::Run(args) => train(&args),
        Command::Calibrate(args) => super::fidelity::calibrate(&args),
        Command::Fidelity(args) => super::fidelity::fidelity(&args),
        Command::Compare(args) => compare(&args),
        Command::Sweep(args) => super::sweep::run(&args),
        Command::Plan(args) => super::plan::run(&args),
        Command::Plot(args) => super::plots::plot_command(&args),
        Command::Gallery(args) => super::plots::gallery(&args),
        Command::Proptest(args) => super::proptest::run(&args),
        Command::Bench(args) => match (&args.scenario, &args.ogb, &args.write_ogb) {
            (Some(path), _, _) => bench_scenario(path, args.repeat),
            (_, Some(dir), _) => super::ogb::bench_load(dir),
            (_, _, Some(dir)) => super::ogb::bench_write(dir, &args),
            _ => bench::run(&args, &mut |text| print(text)),
        },
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends output quietly.
pub(super) fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(
            ExitStatus::Io,
            format!("cannot write to stdout: {err}"),
        )),
        _ => Ok(()),
    }
}

/// Reads a text file: exit 3 when it cannot be read, 4 (with the line and column of the first
/// bad byte) when it is not UTF-8.
pub(super) fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|err| cannot_read(path, err))?;
    utf8(path, bytes)
}

/// Reads a scenario or schedule file as [`read`] does, refusing (exit 4) one larger than
/// [`MAX_DOCUMENT_BYTES`] after reading no more than that.
pub(super) fn read_document(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|err| cannot_read(path, err))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        let diag = diag::too_large(&path.display().to_string());
        return Err(CliError::new(ExitStatus::InvalidInput, diag));
    }
    utf8(path, bytes)
}

fn cannot_read(path: &Path, err: std::io::Error) -> CliError {
    CliError::new(
        ExitStatus::Io,
        format!("{}: cannot read: {err}", path.display()),
    )
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|err| {
        let good = err.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(&err.as_bytes()[..good]);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        CliError::new(
            ExitStatus::InvalidInput,
            format!(
                "{}:{line}:{column}: not UTF-8 text (byte 0x{:02x})",
                path.display(),
                err.as_bytes()[good]
            ),
        )
    })
}

/// Writes one file atomically (see [`Outputs`]).
pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    let mut outputs = Outputs::new();
    outputs.file(path, text);
    outputs.commit()
}

/// A validated scenario with its graph loaded or generated.
pub(super) struct Loaded {
    pub(super) scenario: Scenario,
    pub(super) graph: Option<GraphData>,
}

pub(super) fn load_scenario(args: &ScenarioArgs) -> Result<Loaded> {
    let text = read_document(&args.scenario)?;
    load_text(&args.scenario, &text, &args.overrides)
}

/// A scenario from its text; `file` names it and its folder resolves relative paths.
pub(super) fn load_text(file: &Path, text: &str, overrides: &[String]) -> Result<Loaded> {
    let base = file.parent().unwrap_or(Path::new("."));
    let scenario = scenario::parse_scenario(&file.display().to_string(), text, overrides, base)
        .map_err(|diags| CliError::new(ExitStatus::InvalidInput, diags))?;
    let graph = match &scenario.workload {
        Workload::Explicit(_) => None,
        Workload::Gnn(spec) => {
            let dataset = match &spec.graph {
                GraphSource::Dataset { path, .. } => Some(load_dataset(&scenario, path)?),
                GraphSource::Ogb {
                    path,
                    undirected,
                    split,
                } => Some(super::ogb::load_for(
                    &scenario,
                    path,
                    *undirected,
                    split.as_deref(),
                )?),
                _ => None,
            };
            Some(plan::prepare_graph(spec, dataset).map_err(in_file(file))?)
        }
    };
    Ok(Loaded { scenario, graph })
}

/// Reads a graph-csv v1 folder; a problem names the data file, its line and the scenario.
fn load_dataset(scenario: &Scenario, dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        let at = FieldPath::root().key("graph").key("dataset").key("path");
        let diag = scenario.source.diagnostic(
            at,
            format!("{} is not a dataset folder (graph-csv v1)", dir.display()),
        );
        return Err(CliError::new(ExitStatus::Io, diag));
    }
    // A file that exists but cannot be read is exit 3; text that is not UTF-8 is bad input.
    let mut unreadable = false;
    let mut reader = |name: &str| -> std::result::Result<Option<String>, String> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => Err(err.to_string()),
            Err(err) => {
                unreadable = true;
                Err(err.to_string())
            }
        }
    };
    let loaded = graph::dataset::load(&mut reader);
    loaded.map_err(|mut err| {
        err.file = dir.join(&err.file).display().to_string();
        let context = format!("(graph.dataset of {})", scenario.source.file);
        let status = if unreadable {
            ExitStatus::Io
        } else {
            ExitStatus::InvalidInput
        };
        CliError::new(status, format!("{err} {context}"))
    })
}

/// The scenario's own schedule, reading its schedule file if it names one.
pub(super) fn own_candidate(scenario: &Scenario) -> Result<Candidate> {
    let text = match &scenario.schedule.choice {
        ScheduleChoice::File(path) => Some((path.display().to_string(), read_document(path)?)),
        ScheduleChoice::Generated(_) | ScheduleChoice::GraphParallel => None,
    };
    Ok(plan::own_candidate(
        scenario,
        text.as_ref()
            .map(|(file, text)| (file.as_str(), text.as_str())),
    )?)
}

/// Names the scenario file in front of a planning error.
pub(super) fn in_scenario(args: &ScenarioArgs) -> impl Fn(PlanError) -> CliError + '_ {
    in_file(&args.scenario)
}

/// Names a scenario file in front of a planning error (see [`naming_file`]).
pub(super) fn in_file(file: &Path) -> impl Fn(PlanError) -> CliError + '_ {
    move |err| {
        let message = naming_file(&file.display().to_string(), &err);
        let mut cli = CliError::from(err);
        cli.message = message;
        cli
    }
}

/// A planning error's message with the scenario file in front, unless it is a diagnostic,
/// which names its file (the scenario's or the schedule file's) and place itself.
pub(super) fn naming_file(file: &str, err: &PlanError) -> String {
    match err {
        PlanError::File(_) | PlanError::Invalid(_) => err.to_string(),
        PlanError::Schedule(_) | PlanError::Mismatch(_) | PlanError::Sim(_) => {
            format!("{file}: {err}")
        }
    }
}

fn validate(args: &ScenarioArgs) -> Result<()> {
    let Loaded { scenario, graph } = load_scenario(args)?;
    let candidate = own_candidate(&scenario)?;
    let prediction =
        plan::predict(&scenario, graph.as_ref(), &candidate).map_err(in_scenario(args))?;
    let metrics = report::compute(&prediction.trace);
    check_fits(&scenario, &[(prediction.label.as_str(), &metrics)])?;
    let peak = metrics
        .devices
        .iter()
        .map(|d| d.peak_memory_bytes)
        .max()
        .unwrap_or(0);
    let shape = if scenario.schedule.choice == ScheduleChoice::GraphParallel {
        format!(
            "{} layers on each of {} partitions",
            prediction.schedule.n_stages(),
            prediction.schedule.n_chunks()
        )
    } else {
        format!(
            "{} stages, {} chunks",
            prediction.schedule.n_stages(),
            prediction.schedule.n_chunks()
        )
    };
    let mut out = format!(
        "ok: {}: {} devices, {} directed links, {shape}, schedule {} (peak in-flight per stage {:?}, peak memory {})\n",
        scenario.name,
        scenario.devices.len(),
        scenario.network.links().len(),
        prediction.label,
        prediction.check.peak_in_flight,
        units::format_bytes(peak),
    );
    if let Some(graph) = &prediction.graph {
        let chunks = &graph.chunks;
        let vertices: u64 = chunks.iter().map(|c| c.vertices).sum();
        let edges: u64 = chunks.iter().map(|c| c.in_edges).sum::<u64>() / 2;
        let cut: u64 = chunks
            .iter()
            .map(|c| c.in_edges - c.internal_edges)
            .sum::<u64>()
            / 2;
        let smallest = chunks.iter().map(|c| c.vertices).min().unwrap_or(0);
        let largest = chunks.iter().map(|c| c.vertices).max().unwrap_or(0);
        out.push_str(&format!(
            "graph: {vertices} vertices, {edges} edges; {} chunks of {smallest}..{largest} vertices cut {cut} edges ({:.1}%)\n",
            chunks.len(),
            100.0 * cut as f64 / edges.max(1) as f64,
        ));
    }
    print(&out)
}

/// Fails with [`ExitStatus::DoesNotFit`] naming everything that does not fit
/// ([`plan::fit::overflows`]: a device alone, or the stages sharing a GPU together), one line
/// each, pointing at the device's entry in the scenario.
pub(super) fn check_fits(scenario: &Scenario, results: &[(&str, &report::Metrics)]) -> Result<()> {
    let lines: Vec<String> = results
        .iter()
        .flat_map(|(label, metrics)| {
            plan::fit::overflows(scenario, metrics)
                .into_iter()
                .map(|over| over.diagnostic(scenario, label).to_string())
        })
        .collect();
    if lines.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(ExitStatus::DoesNotFit, lines.join("\n")))
    }
}

/// The catalog's generator for `kind` with the command line's knobs.
fn generator(kind: &str, backward: BackwardOrderArg, order: GnnPipeOrderArg) -> Generator {
    let entry = schedule::catalog::find(kind).expect("clap takes only catalog kinds");
    match entry.generator.expect("clap takes only generated kinds") {
        Generator::GPipe(_) => Generator::GPipe(match backward {
            BackwardOrderArg::Forward => BackwardOrder::Forward,
            BackwardOrderArg::Reverse => BackwardOrder::Reverse,
        }),
        Generator::GnnPipe(knobs) => Generator::GnnPipe(GnnPipeKnobs {
            order: match order {
                GnnPipeOrderArg::Gpipe => GnnPipeOrder::GPipe,
                GnnPipeOrderArg::OneFOneB => GnnPipeOrder::OneFOneB,
            },
            ..knobs
        }),
        other => other,
    }
}

fn schedule_error(err: ScheduleError) -> CliError {
    let status = match err {
        ScheduleError::Shape(_) | ScheduleError::Deadlock(_) => ExitStatus::ScheduleRejected,
    };
    CliError::new(status, err)
}

fn schedule_command(args: &ScheduleArgs) -> Result<()> {
    if args.simulate && args.format == ScheduleFormat::TorchCsv {
        return Err(CliError::new(
            ExitStatus::InvalidInput,
            "--simulate prints metrics, which torch's CSV has no place for: use --format json or text",
        ));
    }
    let schedule = match (&args.file, args.kind.as_deref()) {
        (Some(path), _) => {
            let text = read_document(path)?;
            schedule::file::parse_any(&path.display().to_string(), &text)
                .map_err(|d| CliError::new(ExitStatus::InvalidInput, d))?
        }
        (None, Some(kind)) => {
            let (stages, chunks) = (args.stages.unwrap_or(0), args.chunks.unwrap_or(0));
            if stages == 0 || chunks == 0 {
                return Err(CliError::new(
                    ExitStatus::InvalidInput,
                    "--stages and --chunks must be at least 1",
                ));
            }
            let generator = generator(kind, args.backward_order, args.order);
            let per_device = args
                .stages_per_device
                .unwrap_or_else(|| generator.default_stages_per_device());
            let devices = stages.div_ceil(per_device);
            if devices as usize > schedule::MAX_DEVICES {
                return Err(CliError::new(
                    ExitStatus::InvalidInput,
                    format!("--stages: {stages} stages at {per_device} per device need {devices} devices; a network holds 1..={}", schedule::MAX_DEVICES),
                ));
            }
            generator
                .generate_on(stages, per_device, chunks)
                .map_err(schedule_error)?
        }
        (None, None) => unreachable!("clap requires --kind or --file"),
    };
    let lowered = schedule::lower::Lowered::new(&schedule);
    let check = schedule::check_lowered(&schedule, &lowered).map_err(|err| {
        let mut cli = schedule_error(err);
        if let Some(path) = &args.file {
            cli.message = format!("{}: {}", path.display(), cli.message);
        }
        cli
    })?;
    let (forward_ns, backward_ns, weight_ns) = if args.simulate {
        let parse = |flag: &str, text: &str| {
            units::parse_duration_ns(text)
                .map_err(|err| CliError::new(ExitStatus::InvalidInput, format!("--{flag}: {err}")))
        };
        let backward_ns = parse("backward", &args.backward)?;
        let weight_ns = match &args.weight {
            Some(text) => parse("weight", text)?,
            None => backward_ns / 2,
        };
        if weight_ns > backward_ns {
            return Err(CliError::new(
                ExitStatus::InvalidInput,
                format!(
                    "--weight: {} is longer than the whole backward ({}); W is part of B",
                    args.weight.as_deref().unwrap_or_default(),
                    args.backward
                ),
            ));
        }
        (parse("forward", &args.forward)?, backward_ns, weight_ns)
    } else {
        // Unit op times draw the order itself (a split backward's halves one unit each).
        if schedule.has_split_backward() {
            (1, 2, 1)
        } else {
            (1, 1, 0)
        }
    };
    let cost = UniformCost {
        forward_ns,
        backward_ns,
        weight_ns,
    };
    let trace = sim::simulate_free(&schedule, &cost, Some(&lowered))
        .map_err(|e| CliError::new(ExitStatus::Internal, e))?;
    if trace.spans.iter().any(|s| s.end_ns >= plan::MAX_EPOCH_NS) {
        return Err(CliError::new(
            ExitStatus::InvalidInput,
            "--forward, --backward: the schedule takes longer than 2^62 ns (146 years), more than the simulator counts in",
        ));
    }
    let metrics = report::compute(&trace);
    match args.format {
        ScheduleFormat::Json => {
            let doc = json::ScheduleDoc::new(&schedule, args.simulate.then_some(&metrics));
            print(&to_json(&doc)?)
        }
        ScheduleFormat::TorchCsv => print(&schedule::torch_csv::write(&schedule)),
        ScheduleFormat::Text => {
            let per_device = if schedule.n_devices() < schedule.n_stages() as usize {
                format!(" on {} devices", schedule.n_devices())
            } else {
                String::new()
            };
            let mut out = format!(
                "{} schedule, {} stages{per_device}, {} chunks, peak in-flight per stage {:?}\n",
                schedule.kind().name(),
                schedule.n_stages(),
                schedule.n_chunks(),
                check.peak_in_flight
            );
            let axis = if args.simulate {
                timeline::Axis::Time
            } else {
                timeline::Axis::Slots
            };
            out.push_str(&timeline::render(&trace, axis));
            if args.simulate {
                out.push('\n');
                out.push_str(&format!(
                    "makespan {}, mean bubble {:.1}%\n\n",
                    units::format_duration_ns(metrics.epoch_time_ns),
                    metrics.bubble_fraction * 100.0
                ));
                out.push_str(&table::detail(&metrics));
            }
            print(&out)
        }
    }
}

pub(super) fn to_json(doc: &impl serde::Serialize) -> Result<String> {
    crate::report::json::to_pretty_string(doc)
        .map_err(|e| CliError::new(ExitStatus::Internal, format!("cannot encode JSON: {e}")))
}

fn simulate(args: &SimulateArgs) -> Result<()> {
    let Loaded { scenario, graph } = load_scenario(&args.scenario)?;
    let profiles = super::fidelity::device_profiles(
        &args.scenario.scenario,
        &scenario,
        args.profile.as_deref(),
        None,
    )?;
    let refs: Vec<&crate::cost::DeviceProfile> = profiles.iter().flatten().collect();
    let tier = plan::Tier::of_profiles(&refs);
    let mut candidates = Vec::new();
    for name in args.schedule.split(',').map(str::trim) {
        let named = match name {
            "scenario" => vec![own_candidate(&scenario)?],
            "all" => plan::all_candidates(own_candidate(&scenario)?, &scenario),
            name => match plan::named_candidate(name, &scenario) {
                Some(candidate) => vec![candidate],
                None => {
                    return Err(CliError::new(
                        ExitStatus::InvalidInput,
                        format!("--schedule: unknown schedule `{name}` (expected scenario, all, gpipe, gpipe-reverse, 1f1b, interleaved_1f1b-vN, looped_bfs-vN, interleaved_zb-vN, zbv, dualpipev (each optionally -drop or -exact), gnnpipe, gnnpipe-1f1b, graph_parallel, graph_parallel-broadcast, graph_parallel-1.5d-cC, graph_parallel-2d or graph_parallel-3d, or several joined by commas)"),
                    ))
                }
            },
        };
        for candidate in named {
            if !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
    }
    let mut predictions = Vec::new();
    for candidate in &candidates {
        predictions.push(
            plan::predict_profiled(&scenario, graph.as_ref(), candidate, tier)
                .map_err(in_scenario(&args.scenario))?,
        );
    }
    for note in predictions.iter().flat_map(|p| &p.extrapolated) {
        eprintln!("warning: {}: {note}", args.scenario.scenario.display());
    }
    let metrics: Vec<report::Metrics> = predictions
        .iter()
        .map(|p| report::compute(&p.trace))
        .collect();
    let mut outputs = Outputs::new();
    if let Some(path) = &args.trace {
        let trace = &predictions[0].trace;
        outputs.stream(path, move |out| chrome_trace::write(trace, out));
    }
    if let Some(dir) = &args.plot {
        outputs.extend(super::plots::simulate_figures(
            dir,
            &scenario.name,
            &predictions,
            &metrics,
        )?);
    }
    outputs.commit()?;
    match args.format {
        ReportFormat::Json => {
            let doc = json::SimulateDoc {
                scenario: scenario.name.clone(),
                results: predictions
                    .iter()
                    .zip(&metrics)
                    .map(|(p, m)| {
                        let mut doc = json::ResultDoc::new(
                            &p.label,
                            p.schedule.n_stages(),
                            p.schedule.n_chunks(),
                            m,
                            p.graph.as_ref(),
                            plan::fit::fits(&scenario, m),
                        );
                        doc.cost_tier = Some(p.cost_tier.clone());
                        doc.extrapolated = p.extrapolated.clone();
                        doc
                    })
                    .collect(),
            };
            print(&to_json(&doc)?)?;
        }
        ReportFormat::Table => {
            let mut out = format!(
                "scenario {}: {} devices, {} stages, {} chunks; costs: {}\n\n",
                scenario.name,
                scenario.devices.len(),
                scenario.n_stages(),
                scenario.schedule.n_chunks,
                tier.describe()
            );
            let rows: Vec<table::SummaryRow> = predictions
                .iter()
                .zip(&metrics)
                .map(|(p, m)| table::SummaryRow {
                    label: p.label.clone(),
                    chunks: p.schedule.n_chunks(),
                    metrics: m,
                    graph: p.graph.as_ref(),
                    fits: plan::fit::fits(&scenario, m),
                })
                .collect();
            out.push_str(&table::summary(&rows));
            for (prediction, m) in predictions.iter().zip(&metrics) {
                out.push_str(&format!("\n{}\n", prediction.label));
                out.push_str(&table::detail(m));
                if args.timeline {
                    out.push('\n');
                    out.push_str(&timeline::render(&prediction.trace, timeline::Axis::Time));
                }
            }
            print(&out)?;
        }
    }
    let results: Vec<(&str, &report::Metrics)> = predictions
        .iter()
        .zip(&metrics)
        .map(|(p, m)| (p.label.as_str(), m))
        .collect();
    check_fits(&scenario, &results)
}

/// `pipegnn bench --scenario`: median time to load and predict the scenario's own schedule, and
/// the process's peak resident memory.
fn bench_scenario(path: &Path, repeat: u32) -> Result<()> {
    let args = ScenarioArgs {
        scenario: path.to_path_buf(),
        overrides: Vec::new(),
    };
    let mut samples = Vec::new();
    let mut summary = String::new();
    for _ in 0..repeat.max(1) {
        let start = std::time::Instant::now();
        let Loaded { scenario, graph } = load_scenario(&args)?;
        let candidate = own_candidate(&scenario)?;
        let prediction =
            plan::predict(&scenario, graph.as_ref(), &candidate).map_err(in_scenario(&args))?;
        samples.push(start.elapsed().as_nanos());
        summary = format!(
            "{}: {} ops, {} spans",
            prediction.label,
            prediction.schedule.n_ops(),
            prediction.trace.spans.len()
        );
    }
    samples.sort_unstable();
    let peak = peak_resident();
    print(&format!(
        "{} ({summary}): load and predict median {:.2} ms over {} runs; peak resident memory {peak}\n",
        path.display(),
        samples[samples.len() / 2] as f64 / 1e6,
        samples.len()
    ))
}

/// The process's peak resident memory as Linux reports it (`VmHWM`), or `n/a`.
pub(super) fn peak_resident() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "n/a".into())
}

// A real run with the prediction it was planned from.
pub(super) use crate::launch::Executed;

/// Plans the scenario's own schedule (with `tier`'s costs) and runs it ([`launch`]), with a
/// progress bar on a terminal; `file` names the scenario in errors.
pub(super) fn execute(
    file: &Path,
    loaded: Loaded,
    epochs: Option<u32>,
    force: bool,
    tier: plan::Tier<'_>,
    device: Option<DeviceArg>,
) -> Result<Executed> {
    let Loaded { scenario, graph } = loaded;
    let candidate = own_candidate(&scenario)?;
    let options = launch::Options {
        epochs,
        force,
        tier,
        backend: device.map(|device| match device {
            DeviceArg::Cpu => Backend::Cpu,
            DeviceArg::Cuda => Backend::Cuda,
        }),
        // The workers are threads of this process: on the CPU they share its cores.
        host_cores: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get().min(u32::MAX as usize) as u32),
        compute: None,
    };
    let prepared = launch::prepare(scenario, graph.as_ref(), &candidate, &options)
        .map_err(launch_error(file))?;
    let label = format!("{} ({})", prepared.scenario.name, prepared.prediction.label);
    let bar = Progress::with_message(u64::from(prepared.epochs()));
    let show = |stats: &exec::EpochStats, total: u32| {
        bar.set_message(format!(
            "{label}: epoch {}/{total}, loss {:.4}, val {:.3}",
            stats.epoch, stats.loss, stats.val_accuracy
        ));
        bar.set(u64::from(stats.epoch), u64::from(total));
    };
    // Progress on a terminal, nothing in pipes.
    let progress: Option<&exec::Progress<'_>> = bar.is_visible().then_some(&show);
    let executed = launch::execute(prepared, progress);
    drop(bar);
    executed.map_err(launch_error(file))
}

/// The exit status and message of a launch error; `file` names the scenario.
pub(super) fn launch_error(file: &Path) -> impl Fn(LaunchError) -> CliError + '_ {
    move |err| match err {
        LaunchError::Plan(err) => in_file(file)(err),
        LaunchError::Devices(err) => {
            let status = match err {
                ExecError::Unsupported(_) => ExitStatus::RunFailed,
                _ => ExitStatus::NoDevice,
            };
            CliError::new(status, format!("{}: {err}", file.display()))
        }
        LaunchError::DoesNotFit(over) => CliError::new(
            ExitStatus::DoesNotFit,
            format!(
                "{over}\nrefusing to run a schedule predicted not to fit (use --force to run \
                 anyway)"
            ),
        ),
        LaunchError::NothingToTrain(diag) => CliError::new(ExitStatus::InvalidInput, diag),
        LaunchError::Run(err) => {
            CliError::new(ExitStatus::RunFailed, format!("{}: {err}", file.display()))
        }
        err @ LaunchError::Order { .. } => {
            CliError::new(ExitStatus::Internal, format!("{}: {err}", file.display()))
        }
    }
}

fn train(args: &RunArgs) -> Result<()> {
    let executed = match args.transport {
        TransportArg::Threads => execute(
            &args.scenario.scenario,
            load_scenario(&args.scenario)?,
            args.epochs,
            args.force,
            plan::Tier::Analytic,
            args.device,
        )?,
        // The other ranks have handed their part to rank 0, which reports the run.
        TransportArg::Mpi | TransportArg::Nccl => match super::mpi::execute(super::mpi::RankRun {
            scenario: &args.scenario,
            epochs: args.epochs,
            force: args.force,
            device: args.device,
            profile: None,
            nccl: args.transport == TransportArg::Nccl,
        })? {
            Some(executed) => executed,
            None => return Ok(()),
        },
    };
    let Executed {
        scenario,
        prediction,
        result,
        metrics_of,
        median,
        executor,
    } = executed;
    let metrics = &metrics_of[median];
    let mut outputs = Outputs::new();
    if let Some(path) = &args.trace {
        let trace = &result.traces[median];
        outputs.stream(path, move |out| chrome_trace::write(trace, out));
    }
    if let Some(dir) = &args.plot {
        let label = &prediction.label;
        outputs.extend(super::plots::run_figures(
            dir,
            &scenario.name,
            label,
            &result,
            median,
            metrics,
        )?);
    }
    outputs.commit()?;
    let last = result.epochs.last().expect("at least one epoch ran");
    match args.format {
        ReportFormat::Json => {
            let mut doc = json::ResultDoc::new(
                &prediction.label,
                prediction.schedule.n_stages(),
                prediction.schedule.n_chunks(),
                metrics,
                prediction.graph.as_ref(),
                plan::fit::fits(&scenario, metrics),
            );
            doc.epochs = Some(
                result
                    .epochs
                    .iter()
                    .map(|e| json::EpochDoc {
                        epoch: e.epoch,
                        loss: e.loss,
                        train_accuracy: e.train_accuracy,
                        val_accuracy: e.val_accuracy,
                        test_accuracy: e.test_accuracy,
                    })
                    .collect(),
            );
            doc.test_accuracy = Some(result.test_at_best_val());
            doc.executor = Some(executor);
            let doc = json::SimulateDoc {
                scenario: scenario.name.clone(),
                results: vec![doc],
            };
            print(&to_json(&doc)?)
        }
        ReportFormat::Table => {
            let mut out = format!(
                "ran {} ({}) for {} epochs on {executor}: median epoch {}; final loss {:.4}, accuracy train {:.3} val {:.3} test {:.3}; test at best validation {:.3}\n\n",
                scenario.name,
                prediction.label,
                result.epochs.len(),
                units::format_duration_ns(metrics.epoch_time_ns),
                last.loss,
                last.train_accuracy,
                last.val_accuracy,
                last.test_accuracy,
                result.test_at_best_val(),
            );
            out.push_str(&table::detail(metrics));
            print(&out)
        }
    }
}

/// Without a profile, one run serves both: after a warm-up epoch, the even epochs make the
/// profile and the odd ones are measured (their median epoch), so the prediction never sees
/// the epochs it is held against, and both halves share the machine's state.
fn self_calibrated(
    args: &ScenarioArgs,
    epochs: u32,
    device: Option<DeviceArg>,
) -> Result<(Executed, report::Metrics)> {
    let mut run = execute(
        &args.scenario,
        load_scenario(args)?,
        Some(2 * epochs.max(1) + 1),
        false,
        plan::Tier::Analytic,
        device,
    )?;
    let (profiled, measured): (Vec<usize>, Vec<usize>) =
        (1..run.result.traces.len()).partition(|i| i % 2 == 1);
    let traces: Vec<crate::trace::Trace> = profiled
        .iter()
        .map(|&i| run.result.traces[i].clone())
        .collect();
    let profile = Profile::from_traces(&run.scenario.name, &run.prediction.label, &traces);
    let Loaded { scenario, graph } = load_scenario(args)?;
    let candidate = own_candidate(&scenario)?;
    run.prediction = plan::predict_profiled(
        &scenario,
        graph.as_ref(),
        &candidate,
        plan::Tier::Replay(&profile),
    )
    .map_err(in_scenario(args))?;
    let mut order = measured;
    order.sort_by_key(|&i| run.metrics_of[i].epoch_time_ns);
    run.median = order[order.len() / 2];
    let metrics = run.metrics_of[run.median].clone();
    Ok((run, metrics))
}

/// One predicted-against-measured figure.
pub(super) type CompareRow = json::CompareMetricDoc;

fn row(
    name: &'static str,
    device: Option<String>,
    predicted: f64,
    measured: Option<f64>,
) -> CompareRow {
    let relative_error = measured.filter(|m| *m != 0.0).map(|m| (predicted - m) / m);
    CompareRow {
        name,
        device,
        predicted,
        measured,
        relative_error,
    }
}

/// Predicted against measured for one run: epoch time; busy time, bubble and peak memory per
/// device; bytes per link.
pub(super) fn compare_rows(run: &Executed, measured: &report::Metrics) -> Vec<CompareRow> {
    let measured_ops = op_medians(run.result.timed_traces());
    let memory_measured = run.result.memory_measured;
    predicted_rows(&run.prediction.trace, |name, of, _| {
        let device = |d: usize| measured.devices.iter().find(|m| m.device == d);
        match (name, of) {
            ("epoch_time_s", _) => Some(measured.epoch_time_ns as f64 / 1e9),
            ("busy_s", RowOf::Device(d)) => device(d).map(|m| m.busy_ns as f64 / 1e9),
            ("bubble_fraction", RowOf::Device(d)) => device(d).map(|m| m.bubble_fraction),
            // Measured by the counting allocator, when the binary has it.
            ("peak_memory_bytes", RowOf::Device(d)) => device(d)
                .filter(|_| memory_measured)
                .map(|m| m.peak_memory_bytes as f64),
            ("op_time_s", RowOf::Op(stage, kind)) => measured_ops.get(&(stage, kind)).copied(),
            // A link the run never used carried nothing.
            (_, RowOf::Link(link)) => Some(
                measured
                    .links
                    .iter()
                    .find(|m| m.link == link)
                    .map_or(0.0, |m| m.bytes as f64),
            ),
            _ => None,
        }
    })
}

/// What a row of [`predicted_rows`] is of.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowOf {
    /// The epoch.
    Epoch,
    /// A device, by its index in the trace.
    Device(usize),
    /// A stage's ops of one kind.
    Op(u32, OpKind),
    /// A link, by its index in the trace.
    Link(usize),
}

/// The rows [`compare_rows`] compares, predicted from `trace`, each with the value
/// `measured(name, of, device)` gives it (`device` as the row names it: `cpu1`, `stage 1 B`,
/// `cpu0 -> cpu1`): epoch time; busy time, bubble and peak memory per device; each stage's
/// median op of each kind (where a prediction goes wrong, op by op); bytes per link.
pub(super) fn predicted_rows(
    trace: &crate::trace::Trace,
    measured: impl Fn(&'static str, RowOf, Option<&str>) -> Option<f64>,
) -> Vec<CompareRow> {
    let predicted = report::compute(trace);
    let mut rows = Vec::new();
    let mut push = |name: &'static str, of: RowOf, device: Option<String>, value: f64| {
        let m = measured(name, of, device.as_deref());
        rows.push(row(name, device, value, m));
    };
    push(
        "epoch_time_s",
        RowOf::Epoch,
        None,
        predicted.epoch_time_ns as f64 / 1e9,
    );
    for p in &predicted.devices {
        let (of, name) = (RowOf::Device(p.device), Some(p.name.clone()));
        push("busy_s", of, name.clone(), p.busy_ns as f64 / 1e9);
        push("bubble_fraction", of, name.clone(), p.bubble_fraction);
        push("peak_memory_bytes", of, name, p.peak_memory_bytes as f64);
    }
    for ((stage, kind), p) in op_medians(std::slice::from_ref(trace)) {
        let label = format!("stage {stage} {}", kind.code());
        push("op_time_s", RowOf::Op(stage, kind), Some(label), p);
    }
    for p in &predicted.links {
        let label = format!("{} -> {}", p.from, p.to);
        push(
            "link_bytes",
            RowOf::Link(p.link),
            Some(label),
            p.bytes as f64,
        );
    }
    rows
}

/// The median duration in seconds of each stage's ops of each kind over `traces`.
fn op_medians(traces: &[crate::trace::Trace]) -> BTreeMap<(u32, OpKind), f64> {
    let mut durations: BTreeMap<(u32, OpKind), Vec<u64>> = BTreeMap::new();
    for span in traces.iter().flat_map(|t| &t.spans) {
        if let SpanKind::Compute(kind) = span.kind {
            durations
                .entry((span.stage, kind))
                .or_default()
                .push(span.end_ns - span.start_ns);
        }
    }
    durations
        .into_iter()
        .map(|(key, mut ns)| {
            ns.sort_unstable();
            (key, ns[ns.len() / 2] as f64 / 1e9)
        })
        .collect()
}

fn compare(args: &CompareArgs) -> Result<()> {
    // How much slower the machine is than when the profile was calibrated (its probe), for
    // the in-process comparison with a profile that has one.
    let mut slowdown = None;
    let (run, measured) = if args.replay {
        self_calibrated(&args.scenario, args.epochs, args.device)?
    } else if args.transport != TransportArg::Threads {
        let Some(profile) = args.profile.as_deref() else {
            return Err(CliError::new(
                ExitStatus::Usage,
                "compare --transport mpi|nccl: give --profile FILE (calibrate once with `pipegnn \
                 calibrate`; every rank reads the profile rather than calibrating alongside the \
                 others)",
            ));
        };
        let run = super::mpi::execute(super::mpi::RankRun {
            scenario: &args.scenario,
            epochs: Some(args.epochs),
            force: false,
            device: args.device,
            profile: Some(profile),
            nccl: args.transport == TransportArg::Nccl,
        })?;
        // The other ranks have handed their part to rank 0, which reports the comparison.
        let Some(run) = run else { return Ok(()) };
        let measured = run.metrics_of[run.median].clone();
        (run, measured)
    } else {
        let loaded = load_scenario(&args.scenario)?;
        let file = &args.scenario.scenario;
        let profiles = match super::fidelity::device_profiles(
            file,
            &loaded.scenario,
            args.profile.as_deref(),
            args.device,
        )? {
            Some(profiles) => profiles,
            None => {
                // Calibrate the device first: microbenchmarks, never this scenario's run.
                let threads = super::fidelity::threads_of(&loaded.scenario);
                let device = args
                    .device
                    .unwrap_or(match loaded.scenario.executor.backend {
                        Backend::Cpu => DeviceArg::Cpu,
                        Backend::Cuda => DeviceArg::Cuda,
                    });
                let profile = super::fidelity::calibrate_device(device, Some(threads), false)?;
                vec![profile; loaded.scenario.devices.len()]
            }
        };
        let refs: Vec<&crate::cost::DeviceProfile> = profiles.iter().collect();
        slowdown = profiles
            .iter()
            .find_map(|p| p.probe)
            .map(|then| exec::calibrate::probe().slowdown(&then));
        let run = execute(
            file,
            loaded,
            Some(args.epochs),
            false,
            plan::Tier::Device(&refs),
            args.device,
        )?;
        let measured = run.metrics_of[run.median].clone();
        (run, measured)
    };
    let rows = compare_rows(&run, &measured);
    if let Some(dir) = &args.plot {
        let point = |r: &CompareRow| (r.name.into(), r.device.clone(), r.predicted, r.measured);
        let traces = [&run.prediction.trace, &run.result.traces[run.median]];
        let points = rows.iter().map(point).collect();
        super::plots::compare_figures(dir, &run.scenario.name, points, traces)?.commit()?;
    }
    match args.format {
        ReportFormat::Json => print(&to_json(
            &serde_json::json!({"scenario": run.scenario.name, "schedule": run.prediction.label, "cost_tier": run.prediction.cost_tier, "extrapolated": run.prediction.extrapolated, "machine_slowdown": slowdown.map(|(memory, compute)| serde_json::json!({"memory": memory, "compute": compute})), "metrics": rows}),
        )?),
        ReportFormat::Table => {
            let mut out = format!(
                "{} ({}): predicted by the {} against a real run of {} epochs\n",
                run.scenario.name,
                run.prediction.label,
                run.prediction.cost_tier,
                run.result.epochs.len()
            );
            for note in &run.prediction.extrapolated {
                out.push_str(&format!("warning: {note}\n"));
            }
            if let Some(note) = slowdown.and_then(machine_drift) {
                out.push_str(&format!("warning: {note}\n"));
            }
            out.push('\n');
            out.push_str(&format!(
                "{:<18} {:<14} {:>14} {:>14} {:>9}\n",
                "metric", "device", "predicted", "measured", "error"
            ));
            for r in &rows {
                let fmt = |v: f64| {
                    if v.abs() >= 1e4 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.6}")
                    }
                };
                out.push_str(&format!(
                    "{:<18} {:<14} {:>14} {:>14} {:>9}\n",
                    r.name,
                    r.device.as_deref().unwrap_or("-"),
                    fmt(r.predicted),
                    r.measured.map_or("not measured".into(), fmt),
                    r.relative_error
                        .map_or("-".into(), |e| format!("{:+.1}%", e * 100.0)),
                ));
            }
            print(&out)
        }
    }
}

/// A warning when the machine probe finds the machine more than 15% slower or faster than
/// when the profile was calibrated (memory, compute: now over then): the run then measures
/// another machine than the one the profile describes.
pub(super) fn machine_drift((memory, compute): (f64, f64)) -> Option<String> {
    let off = |ratio: f64| !(1.0 / 1.15..=1.15).contains(&ratio);
    let say = |ratio: f64| {
        if ratio >= 1.0 {
            format!("{ratio:.2}x slower")
        } else {
            format!("{:.2}x faster", 1.0 / ratio)
        }
    };
    (off(memory) || off(compute)).then(|| {
        format!(
            "this machine's memory is {} and its core {} than when the profile was calibrated \
             (a fixed probe of each): its neighbours' load has changed, and the measurement \
             shifts with it; calibrate again for a comparison that tests the model",
            say(memory),
            say(compute)
        )
    })
}

/// Keeps the exit-status mapping of schedule errors in one place for the bench too.
pub(super) fn generate(generator: Generator, stages: u32, chunks: u32) -> Result<Schedule> {
    generator.generate(stages, chunks).map_err(schedule_error)
}

#[cfg(test)]
mod tests {
    use super::machine_drift;

    #[test]
    fn a_machine_within_fifteen_percent_of_its_calibration_draws_no_warning() {
        assert_eq!(machine_drift((1.0, 1.0)), None);
        assert_eq!(machine_drift((1.14, 0.88)), None);
    }

    #[test]
    fn a_machine_that_drifted_is_named_slower_or_faster_per_probe() {
        let note = machine_drift((1.32, 0.5)).expect("a warning");
        assert!(note.contains("memory is 1.32x slower"), "{note}");
        assert!(note.contains("core 2.00x faster"), "{note}");
        assert!(machine_drift((1.0, 1.2)).is_some());
        assert!(machine_drift((0.8, 1.0)).is_some());
    }
}
