//! From a validated scenario to predictions: pick the schedules, check them, simulate them.
//!
//! This is the glue the command line and the tests share. It reads no files: a schedule file's
//! text and a dataset are passed in by the caller.

mod cagnet;
pub mod fit;
mod gnn;
pub mod search;

use thiserror::Error;

pub use gnn::{prepare_graph, GraphData};

use crate::cost::{CostModel, DeviceProfile, ExplicitCost, Profile, ProfiledCost};
use crate::diag::{Diagnostic, Diagnostics, FieldPath};
use crate::gnn::{GraphMetrics, Halo};
use crate::scenario::{Backend, DeviceMap, Scenario, ScheduleChoice, StageSplit, Workload};
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::{
    self, BackwardOrder, CheckReport, Generator, GnnPipeBackward, GnnPipeKnobs, GnnPipeOrder,
    Schedule, ScheduleError, StagePlacement, UpdateMode,
};
use crate::sim::{self, SimError, SimInput};
use crate::trace::{Trace, TraceDevice};

/// Why a prediction could not be made.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The schedule file is malformed.
    #[error("{0}")]
    File(Diagnostics),
    /// A scenario field is wrong in a way only the graph shows (more chunks than vertices, a
    /// last layer that does not output the class count).
    #[error("{0}")]
    Invalid(Diagnostic),
    /// The schedule cannot run (malformed or deadlocked).
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    /// The schedule does not fit the scenario.
    #[error("{0}")]
    Mismatch(String),
    /// The simulation failed.
    #[error("{0}")]
    Sim(#[from] SimError),
}

/// Which schedule to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// A pipeline generator, with the halo rule its GNN chunks follow.
    Generated {
        /// The generator and its knobs.
        generator: Generator,
        /// Drop or exact for GPipe and 1F1B, stale for GNNPipe.
        halo: Halo,
        /// Stages each device holds ([`ScheduleSpec::stages_per_device`]).
        ///
        /// [`ScheduleSpec::stages_per_device`]: crate::scenario::ScheduleSpec::stages_per_device
        stages_per_device: u32,
        /// GNNPipe's graph partitions per stage (its hybrid with graph parallelism when above
        /// one); 1 for every other generator.
        partitions: u32,
    },
    /// Graph parallelism: CAGNET's 1D with a halo exchange or a broadcast, or its 1.5D, 2D and
    /// 3D algorithms.
    GraphParallel {
        /// [`Halo::Exchange`] or [`Halo::Broadcast`] (1D; the others move whole blocks).
        exchange: Halo,
        /// Which algorithm multiplies the adjacency by the embeddings.
        algorithm: GraphAlgorithm,
    },
    /// A schedule file's parsed content.
    File {
        /// Shown in tables and JSON as the schedule's name.
        label: String,
        /// The file's path as the user named it, for error messages.
        file: String,
        /// The parsed schedule.
        schedule: Schedule,
        /// The halo rule its chunks follow (GNN workloads).
        halo: Halo,
    },
}

impl Candidate {
    /// The name shown in tables and JSON: the generator with its non-default knobs, and for GNN
    /// pipelines other than GNNPipe the halo rule (`gpipe-drop`, `1f1b-exact`).
    pub fn label(&self, scenario: &Scenario) -> String {
        let gnn = matches!(scenario.workload, Workload::Gnn(_));
        match self {
            Candidate::Generated {
                generator,
                halo,
                stages_per_device,
                partitions,
            } => {
                let mut label = generator_label(*generator);
                if generator.placement() == StagePlacement::RoundRobin {
                    label.push_str(&format!("-v{stages_per_device}"));
                }
                if *partitions > 1 {
                    label.push_str(&format!("-p{partitions}"));
                }
                match generator {
                    Generator::GnnPipe(_) => label,
                    _ if gnn => format!("{label}-{}", halo.name()),
                    _ => label,
                }
            }
            Candidate::GraphParallel {
                exchange: Halo::Broadcast,
                algorithm: GraphAlgorithm::OneD,
            } => "graph_parallel-broadcast".into(),
            Candidate::GraphParallel { algorithm, .. } => {
                format!("graph_parallel{}", algorithm.label_suffix())
            }
            Candidate::File { label, .. } => label.clone(),
        }
    }
}

/// The name of a generator with its non-default knobs: `gpipe`, `gpipe-reverse`, `1f1b`,
/// `gnnpipe`, `gnnpipe-1f1b`, `gnnpipe-exact-per-chunk`, ...
pub fn generator_label(generator: Generator) -> String {
    match generator {
        Generator::GPipe(BackwardOrder::Forward) => "gpipe".into(),
        Generator::GPipe(BackwardOrder::Reverse) => "gpipe-reverse".into(),
        Generator::OneFOneB => "1f1b".into(),
        Generator::GnnPipe(knobs) => {
            let mut label = String::from("gnnpipe");
            if knobs.order == GnnPipeOrder::OneFOneB {
                label.push_str("-1f1b");
            }
            match knobs.backward {
                GnnPipeBackward::Drop => {}
                GnnPipeBackward::Deferred => label.push_str("-deferred"),
                GnnPipeBackward::Exact => label.push_str("-exact"),
            }
            if knobs.update == UpdateMode::PerChunk {
                label.push_str("-per-chunk");
            }
            label
        }
        Generator::Interleaved1F1B
        | Generator::LoopedBfs
        | Generator::InterleavedZeroBubble
        | Generator::Zbv
        | Generator::DualPipeV => generator.kind().name().into(),
    }
}

/// A built-in schedule by name, as `--schedule` takes it: `gpipe`, `gpipe-reverse`, `1f1b`,
/// `gnnpipe`, `gnnpipe-1f1b`, `graph_parallel`, `graph_parallel-broadcast`,
/// `graph_parallel-1.5d-cC`, `graph_parallel-2d`, `graph_parallel-3d`, and the catalog's
/// other pipeline kinds (`interleaved_1f1b`, `looped_bfs`, `interleaved_zb`, `zbv`,
/// `dualpipev`). The round-robin kinds take `-vN` for N stages per device (else the
/// scenario's `schedule.stages_per_device`, or one). Pipelines other than GNNPipe use the
/// scenario's halo rule (or `drop`) unless suffixed `-drop` or `-exact`.
pub fn named_candidate(name: &str, scenario: &Scenario) -> Option<Candidate> {
    let default_halo = match scenario.schedule.halo {
        halo @ (Halo::Drop | Halo::Exact) => halo,
        _ => Halo::Drop,
    };
    if let Some(algorithm) = name
        .strip_prefix("graph_parallel-")
        .and_then(GraphAlgorithm::from_suffix)
        .filter(|a| *a != GraphAlgorithm::OneD)
    {
        return Some(Candidate::GraphParallel {
            exchange: Halo::Broadcast,
            algorithm,
        });
    }
    let (base, halo) = match name.rsplit_once('-') {
        Some((base, "drop")) => (base, Halo::Drop),
        Some((base, "exact")) if !base.starts_with("gnnpipe") => (base, Halo::Exact),
        _ => (name, default_halo),
    };
    let suffixed = base != name;
    let gnnpipe = |order| {
        Generator::GnnPipe(GnnPipeKnobs {
            order,
            ..GnnPipeKnobs::default()
        })
    };
    let generated = |generator, halo| {
        Some(Candidate::Generated {
            generator,
            halo,
            stages_per_device: scenario.schedule.stages_per_device(generator),
            partitions: 1,
        })
    };
    // GNNPipe's hybrid: `gnnpipe-pG`, `gnnpipe-1f1b-pG`.
    if let Some((base, g)) = name.rsplit_once("-p") {
        if g.starts_with('0') {
            return None;
        }
        let partitions = g
            .parse::<u32>()
            .ok()
            .filter(|g| (1..=schedule::MAX_DEVICES as u32).contains(g))?;
        let order = match base {
            "gnnpipe" => GnnPipeOrder::GPipe,
            "gnnpipe-1f1b" => GnnPipeOrder::OneFOneB,
            _ => return None,
        };
        return Some(Candidate::Generated {
            generator: gnnpipe(order),
            halo: Halo::Stale,
            stages_per_device: 1,
            partitions,
        });
    }
    match base {
        "gpipe" => generated(Generator::GPipe(BackwardOrder::Forward), halo),
        "gpipe-reverse" => generated(Generator::GPipe(BackwardOrder::Reverse), halo),
        "1f1b" => generated(Generator::OneFOneB, halo),
        "gnnpipe" if !suffixed => generated(gnnpipe(GnnPipeOrder::GPipe), Halo::Stale),
        "gnnpipe-1f1b" if !suffixed => generated(gnnpipe(GnnPipeOrder::OneFOneB), Halo::Stale),
        "graph_parallel" if !suffixed => Some(Candidate::GraphParallel {
            exchange: Halo::Exchange,
            algorithm: GraphAlgorithm::OneD,
        }),
        "graph_parallel-broadcast" if !suffixed => Some(Candidate::GraphParallel {
            exchange: Halo::Broadcast,
            algorithm: GraphAlgorithm::OneD,
        }),
        _ => {
            // The catalog's other pipeline kinds, the round-robin ones with `-vN`.
            let (kind, v) = match base.rsplit_once("-v") {
                Some((kind, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => (
                    kind,
                    Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|v| (1..=schedule::MAX_STAGES_PER_DEVICE).contains(v))?,
                    ),
                ),
                _ => (base, None),
            };
            let generator = schedule::catalog::find(kind)?.generator?;
            match (generator.placement(), v) {
                (StagePlacement::RoundRobin, Some(v)) => Some(Candidate::Generated {
                    generator,
                    halo,
                    stages_per_device: v,
                    partitions: 1,
                }),
                (StagePlacement::RoundRobin | StagePlacement::V, None) => {
                    generated(generator, halo)
                }
                _ => None,
            }
        }
    }
}

/// The schedules `--schedule all` compares: the scenario's own first, then every other built-in
/// schedule that applies to its workload: GPipe and 1F1B for an explicit workload; GPipe and
/// 1F1B (with the scenario's halo rule, or drop), GNNPipe and graph parallelism for a GNN.
pub fn all_candidates(own: Candidate, scenario: &Scenario) -> Vec<Candidate> {
    let names: &[&str] = match scenario.workload {
        Workload::Explicit(_) => &["gpipe", "1f1b"],
        Workload::Gnn(_) => &["gpipe", "1f1b", "gnnpipe", "graph_parallel"],
    };
    let mut candidates = vec![own];
    for name in names {
        let candidate = named_candidate(name, scenario).expect("built-in names resolve");
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    candidates
}

/// The scenario's own schedule. `file_text` is the schedule file's content when the scenario
/// names one (read by the caller), with the name to report it under.
pub fn own_candidate(
    scenario: &Scenario,
    file_text: Option<(&str, &str)>,
) -> Result<Candidate, PlanError> {
    let halo = scenario.schedule.halo;
    match (&scenario.schedule.choice, file_text) {
        (ScheduleChoice::Generated(generator), _) => Ok(Candidate::Generated {
            generator: *generator,
            halo,
            stages_per_device: scenario.schedule.stages_per_device(*generator),
            partitions: scenario.schedule.partitions,
        }),
        (ScheduleChoice::GraphParallel, _) => Ok(Candidate::GraphParallel {
            exchange: match scenario.schedule.algorithm {
                GraphAlgorithm::OneD => halo,
                _ => Halo::Broadcast,
            },
            algorithm: scenario.schedule.algorithm,
        }),
        (ScheduleChoice::File(path), Some((file, text))) => {
            let schedule = schedule::file::parse_any(file, text).map_err(PlanError::File)?;
            let stem = path
                .file_stem()
                .map_or("custom".into(), |s| s.to_string_lossy());
            Ok(Candidate::File {
                label: format!("file:{stem}"),
                file: file.to_string(),
                schedule,
                halo,
            })
        }
        (ScheduleChoice::File(path), None) => Err(PlanError::Mismatch(format!(
            "schedule file {} was not read",
            path.display()
        ))),
    }
}

/// One schedule's prediction.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The schedule's name.
    pub label: String,
    /// The schedule that ran.
    pub schedule: Schedule,
    /// What the checker found.
    pub check: CheckReport,
    /// The predicted trace.
    pub trace: Trace,
    /// Figures about the graph's chunks (GNN workloads).
    pub graph: Option<GraphMetrics>,
    /// For each schedule device, the scenario device that ran it.
    pub placement: Vec<usize>,
    /// How the GNN was laid out (GNN workloads).
    pub layout: Option<GnnLayout>,
    /// Which cost tier predicted its op times and memory.
    pub cost_tier: String,
    /// Kernels the device profile was evaluated for past its calibrated range.
    pub extrapolated: Vec<String>,
}

/// Where a prediction's op times and memory come from.
#[derive(Debug, Clone, Copy, Default)]
pub enum Tier<'a> {
    /// The roofline over the scenario's device rates.
    #[default]
    Analytic,
    /// A replay of one run's measured op times (`compare --replay`): not a prediction.
    Replay(&'a Profile),
    /// Device profiles' fitted kernel costs at the scenario's shapes: one per scenario device.
    Device(&'a [&'a DeviceProfile]),
}

impl<'a> Tier<'a> {
    /// The device-profile tier over `profiles` (one per scenario device), or the analytic tier
    /// when there are none.
    pub fn of_profiles(profiles: &'a [&'a DeviceProfile]) -> Self {
        if profiles.is_empty() {
            Tier::Analytic
        } else {
            Tier::Device(profiles)
        }
    }

    /// How the tier is named in outputs.
    pub fn describe(&self) -> String {
        match self {
            Tier::Analytic => "analytic (roofline over the scenario's device rates)".into(),
            Tier::Replay(p) => format!(
                "replay of measured op times ({} under {})",
                p.scenario, p.schedule
            ),
            Tier::Device(profiles) => {
                let mut names: Vec<String> = profiles
                    .iter()
                    .map(|p| format!("{}, measured on {}", p.device, p.machine))
                    .collect();
                names.dedup();
                format!("device profile ({})", names.join("; "))
            }
        }
    }
}

/// How a GNN workload was laid out for a prediction: what the executor needs to run the same
/// schedule for real.
#[derive(Debug, Clone, PartialEq)]
pub struct GnnLayout {
    /// The model with resolved widths.
    pub model: crate::gnn::GnnModel,
    /// Layers of each stage.
    pub stage_layers: Vec<std::ops::Range<usize>>,
    /// Each vertex's chunk (graphs with edges; `None` for counts-only graphs).
    pub part: Option<Vec<u32>>,
}

/// The trace's device list for a scenario.
pub fn trace_devices(scenario: &Scenario) -> Vec<TraceDevice> {
    scenario
        .devices
        .iter()
        .map(|d| TraceDevice {
            name: d.name.clone(),
            capacity_bytes: Some(d.memory_bytes),
        })
        .collect()
}

/// Builds, checks and simulates one candidate schedule on the scenario. `graph` is the
/// prepared graph of a GNN workload ([`prepare_graph`]). Problems with a schedule file name the
/// file.
pub fn predict(
    scenario: &Scenario,
    graph: Option<&GraphData>,
    candidate: &Candidate,
) -> Result<Prediction, PlanError> {
    predict_profiled(scenario, graph, candidate, Tier::Analytic)
}

/// As [`predict`], with op times and memory from `tier`: the roofline, a device profile
/// (`pipegnn calibrate`) or a replay of one run.
pub fn predict_profiled(
    scenario: &Scenario,
    graph: Option<&GraphData>,
    candidate: &Candidate,
    tier: Tier<'_>,
) -> Result<Prediction, PlanError> {
    let result = match (&scenario.workload, graph) {
        (Workload::Explicit(_), _) => predict_explicit(scenario, candidate, tier),
        (Workload::Gnn(spec), Some(graph)) => gnn::predict(scenario, spec, graph, candidate, tier),
        (Workload::Gnn(_), None) => Err(PlanError::Mismatch("the graph was not prepared".into())),
    };
    result.map_err(|err| match (candidate, err) {
        (Candidate::File { file, .. }, PlanError::Schedule(err)) => {
            PlanError::Mismatch(format!("schedule file {file}: {err}"))
        }
        (Candidate::File { file, .. }, PlanError::Mismatch(message)) => {
            PlanError::Mismatch(format!("schedule file {file}: {message}"))
        }
        (_, err) => err,
    })
}

/// How many ops the schedule's `devices` run at a time when they share a processor: one on a
/// shared GPU; on the CPU, when the workers' threads outnumber `executor.cores`, the cores over
/// the threads per device (at least one). `None` when every device computes on its own.
pub fn compute_slots(scenario: &Scenario, devices: usize) -> Option<u32> {
    let executor = &scenario.executor;
    if executor.device_map == DeviceMap::Shared {
        return Some(1);
    }
    let cores = executor
        .cores
        .filter(|_| executor.backend == Backend::Cpu)?;
    // As the executor splits a machine when no thread count is given.
    let threads = executor
        .threads_per_device
        .unwrap_or_else(|| (cores / devices.max(1) as u32).max(1));
    (u64::from(threads) * devices as u64 > u64::from(cores)).then(|| (cores / threads).max(1))
}

/// How the devices' ops slow each other down while they run at once: where the CPU workers
/// share one machine's cores (`executor.cores`) and the profile measured its co-run slowdown
/// (`calibrate`). `None` elsewhere: devices of their own, a GPU, the analytic tier.
pub fn contention<'a>(scenario: &Scenario, tier: Tier<'a>) -> Option<sim::Contention<'a>> {
    let executor = &scenario.executor;
    if executor.backend != Backend::Cpu || executor.cores.is_none() {
        return None;
    }
    match tier {
        Tier::Device(profiles) => profiles
            .first()
            .filter(|p| !p.corun_slowdown.is_empty())
            .map(|p| sim::Contention {
                slowdown: &p.corun_slowdown,
            }),
        Tier::Analytic | Tier::Replay(_) => None,
    }
}

/// The longest epoch a prediction may report: 2^62 ns (146 years), far inside `u64`.
pub const MAX_EPOCH_NS: u64 = 1 << 62;

/// Checks a schedule against the scenario's shape and simulates it with `cost`.
#[allow(clippy::too_many_arguments)]
fn run(
    scenario: &Scenario,
    schedule: Schedule,
    placement: Vec<usize>,
    cost: &dyn CostModel,
    tier: Tier<'_>,
    label: String,
    graph: Option<GraphMetrics>,
    layout: Option<GnnLayout>,
) -> Result<Prediction, PlanError> {
    let lowered = schedule::lower::Lowered::new(&schedule);
    let check = schedule::check_lowered(&schedule, &lowered)?;
    let profiled = match tier {
        Tier::Replay(profile) => Some(ProfiledCost {
            profile,
            fallback: cost,
        }),
        _ => None,
    };
    let cost: &dyn CostModel = match &profiled {
        Some(profiled) => profiled,
        None => cost,
    };
    let measured_network = match tier {
        Tier::Replay(p) => p
            .handoff_ns
            .map(|ns| scenario.network.with_handoff(ns, 0.0)),
        // A hand-off costs the receiver's wake-up on the machine profiled (its copy is its
        // forward's), or what a message between processes was measured to cost.
        Tier::Device(profiles) => profiles.first().map(|p| {
            let handoff = p.handoff();
            match handoff.alongside_links {
                true => scenario
                    .network
                    .with_overlapping_handoff(handoff.fixed_ns, handoff.ns_per_byte),
                false => scenario
                    .network
                    .with_handoff(handoff.fixed_ns, handoff.ns_per_byte),
            }
        }),
        Tier::Analytic => None,
    };
    let input = SimInput {
        schedule: &schedule,
        placement: &placement,
        cost,
        network: measured_network.as_ref().unwrap_or(&scenario.network),
        compute_slots: compute_slots(scenario, schedule.n_devices()),
        lowered: Some(&lowered),
        contention: contention(scenario, tier),
    };
    let trace = sim::simulate(&input, trace_devices(scenario))?;
    // The simulator saturates times rather than wrapping: an epoch this long is a cost past
    // what nanoseconds in a u64 hold (a rate far too slow for the work), not a prediction.
    let end_ns = trace.spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    if end_ns >= MAX_EPOCH_NS {
        let message = format!(
            "the predicted epoch is longer than {MAX_EPOCH_NS} ns (2^62, 146 years), more than \
             the simulator counts in: check the devices' peak_flops and memory_bandwidth and the \
             links' bandwidth and latency against the work"
        );
        return Err(PlanError::Invalid(
            scenario.source.diagnostic(FieldPath::root(), message),
        ));
    }
    let cost_tier = match input.contention {
        Some(c) if c.slowdown.len() > 1 => format!(
            "{}; ops running at once on the shared cores slow each other down ({:.2}x for two, measured by the profile's co-run benchmark)",
            tier.describe(),
            c.at(2)
        ),
        _ => tier.describe(),
    };
    Ok(Prediction {
        label,
        schedule,
        check,
        trace,
        graph,
        placement,
        layout,
        cost_tier,
        extrapolated: Vec::new(),
    })
}

/// The stages a pipeline candidate runs: the workload's split, or for an `auto` split as many
/// as the candidate's stages per device fill on the scenario's devices.
fn candidate_stages(scenario: &Scenario, candidate: &Candidate) -> Result<u32, PlanError> {
    let auto = matches!(&scenario.workload, Workload::Gnn(gnn) if gnn.stages == StageSplit::Auto);
    match candidate {
        Candidate::Generated { partitions, .. } if auto && *partitions > 1 => {
            match (scenario.n_pipeline_devices() / *partitions as usize).min(scenario.n_layers()) {
                0 => Err(PlanError::Mismatch(format!(
                    "gnnpipe with {partitions} partitions per stage needs at least {partitions} devices, the scenario places {}",
                    scenario.n_pipeline_devices()
                ))),
                n => Ok(n as u32),
            }
        }
        Candidate::Generated {
            generator,
            stages_per_device: v,
            ..
        } if auto => match scenario.auto_stages(*v as usize) {
            0 => Err(PlanError::Mismatch(format!(
                "{} places {v} stages per device, more than the model's {} layers",
                generator.kind().name(),
                scenario.n_layers()
            ))),
            n => Ok(n),
        },
        _ => Ok(scenario.n_stages()),
    }
}

/// The schedule a pipeline candidate runs for `n_stages` stages.
fn pipeline_schedule(
    scenario: &Scenario,
    candidate: &Candidate,
    n_stages: u32,
) -> Result<Schedule, PlanError> {
    let schedule = match candidate {
        Candidate::Generated {
            generator,
            stages_per_device,
            ..
        } => {
            let n_chunks = scenario.schedule.n_chunks;
            if u64::from(n_stages) * u64::from(n_chunks) > schedule::MAX_STAGE_CHUNKS {
                let path = FieldPath::root().key("schedule").key("chunks");
                return Err(PlanError::Invalid(scenario.source.diagnostic(
                    path,
                    format!(
                        "{n_chunks} chunks on {n_stages} stages is more than the {} stage-chunk \
                         pairs a schedule may have",
                        schedule::MAX_STAGE_CHUNKS
                    ),
                )));
            }
            generator.generate_on(n_stages, *stages_per_device, n_chunks)?
        }
        Candidate::File { schedule, .. } => schedule.clone(),
        Candidate::GraphParallel { .. } => {
            return Err(PlanError::Mismatch(
                "graph parallelism needs a GNN workload (`graph` and `model`)".into(),
            ))
        }
    };
    if schedule.n_stages() != n_stages {
        return Err(PlanError::Mismatch(format!(
            "the schedule has {} stages but the workload has {n_stages}",
            schedule.n_stages()
        )));
    }
    if schedule.n_chunks() != scenario.schedule.n_chunks {
        return Err(PlanError::Mismatch(format!(
            "the schedule has {} chunks but schedule.chunks is {}",
            schedule.n_chunks(),
            scenario.schedule.n_chunks
        )));
    }
    Ok(schedule)
}

fn predict_explicit(
    scenario: &Scenario,
    candidate: &Candidate,
    tier: Tier<'_>,
) -> Result<Prediction, PlanError> {
    let Workload::Explicit(workload) = &scenario.workload else {
        unreachable!("called for explicit workloads only")
    };
    // Every byte the simulator holds is a stage's parameters with their gradients and optimizer
    // state, or a chunk's stash or activations: bound them all within the byte counts.
    let k = f64::from(scenario.schedule.n_chunks);
    let bound: f64 = workload
        .stages
        .iter()
        .map(|s| {
            8.0 * s.parameter_bytes as f64
                + k * (s.stash_bytes as f64 + 4.0 * s.activation_bytes as f64)
        })
        .sum();
    if bound > gnn::MAX_MODEL_BYTES {
        let path = FieldPath::root().key("workload").key("stages");
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            path,
            format!(
                "the stages' parameters, optimizer state, stash and activations over {k} chunks \
                 may reach {bound:.3e} bytes, beyond the {:.3e} (2^60) the prediction counts in",
                gnn::MAX_MODEL_BYTES
            ),
        )));
    }
    let schedule = pipeline_schedule(scenario, candidate, candidate_stages(scenario, candidate)?)?;
    let placement = scenario
        .schedule
        .placement_for(schedule.n_devices(), scenario.devices.len())
        .map_err(PlanError::Mismatch)?;
    let cost = ExplicitCost::new(workload, schedule.n_chunks(), scenario.optimizer);
    run(
        scenario,
        schedule,
        placement,
        &cost,
        // A device profile prices GNN kernels; an explicit workload states its own times.
        match tier {
            Tier::Device(_) => Tier::Analytic,
            tier => tier,
        },
        candidate.label(scenario),
        None,
        None,
    )
}
