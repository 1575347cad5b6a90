//! The planner's search space and ranking: which configurations `pipegnn plan` tries, and how
//! their predictions rank.
//!
//! Pure: the caller evaluates each [`PlanPoint`] (by applying [`PlanPoint::overrides`] to the
//! scenario and predicting) and hands the [`Evaluation`]s back to [`rank`].

use super::fit::{self, Overflow};
use super::Prediction;
use crate::report::Metrics;
use crate::scenario::Scenario;
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::{catalog, StagePlacement};

/// Models with at most this many layers get every contiguous stage split tried, not only `auto`.
pub const MAX_LAYERS_FOR_SPLITS: usize = 8;

/// How a point splits the layers into stages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    /// An explicit workload: its stages are the workload's, left as they are.
    Workload,
    /// Graph parallelism: every layer on every device (`schedule.stages` cleared).
    None,
    /// `schedule.stages: auto`.
    Auto,
    /// Layers per stage.
    Layers(Vec<usize>),
}

impl Split {
    /// `auto`, `1+2+1`, or `-` for workloads and graph parallelism.
    pub fn label(&self) -> String {
        match self {
            Split::Workload | Split::None => "-".into(),
            Split::Auto => "auto".into(),
            Split::Layers(counts) => counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("+"),
        }
    }
}

/// One configuration the planner tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPoint {
    /// A `schedule.kind` of the catalog.
    pub schedule: String,
    /// Chunks per epoch; `None` for graph parallelism (one partition per device).
    pub chunks: Option<u32>,
    /// The count of the scenario's first device entry.
    pub devices: u32,
    /// The stage split.
    pub split: Split,
    /// Graph parallelism's algorithm (`None` for pipelines).
    pub algorithm: Option<GraphAlgorithm>,
}

/// The stages per device the planner gives a kind: two for the interleaved, looped and V
/// shapes (interleaving only pays with more than one), one for the rest.
pub fn planned_stages_per_device(kind: &str) -> u32 {
    match catalog::find(kind)
        .and_then(|e| e.generator)
        .map(|g| g.placement())
    {
        Some(StagePlacement::RoundRobin | StagePlacement::V) => 2,
        _ => 1,
    }
}

impl PlanPoint {
    /// Stages each device holds at this point ([`planned_stages_per_device`]).
    pub fn stages_per_device(&self) -> u32 {
        planned_stages_per_device(&self.schedule)
    }

    /// The `--set` overrides that turn the scenario into this configuration. Schedule knobs that
    /// do not apply to the point's kind are cleared, as are a schedule file and a placement.
    pub fn overrides(&self) -> Vec<String> {
        let kind = self.schedule.as_str();
        let mut sets = vec![
            format!("schedule.kind={kind}"),
            "schedule.file=null".to_string(),
            "schedule.placement=null".to_string(),
            format!("devices.0.count={}", self.devices),
            match self.chunks {
                Some(chunks) => format!("schedule.chunks={chunks}"),
                None => "schedule.chunks=null".to_string(),
            },
        ];
        let entry = catalog::find(kind);
        for knob in catalog::all_knobs() {
            let applies = entry.is_some_and(|e| e.knobs.contains(&knob));
            if applies && knob == "stages_per_device" {
                sets.push(format!("schedule.{knob}={}", self.stages_per_device()));
            } else if !applies {
                sets.push(format!("schedule.{knob}=null"));
            }
        }
        match self.algorithm {
            Some(GraphAlgorithm::OneD) => {
                sets.push("schedule.algorithm=null".into());
                sets.push("schedule.replication=null".into());
            }
            Some(algorithm) => {
                sets.push("schedule.exchange=null".into());
                sets.push(format!("schedule.algorithm={}", algorithm.name()));
                sets.push(match algorithm {
                    GraphAlgorithm::OneHalfD { replication } => {
                        format!("schedule.replication={replication}")
                    }
                    _ => "schedule.replication=null".into(),
                });
            }
            None => {
                for knob in ["exchange", "algorithm", "replication"] {
                    sets.push(format!("schedule.{knob}=null"));
                }
            }
        }
        let pipeline = entry.is_some_and(|e| {
            e.generator
                .is_some_and(|g| !matches!(g, crate::schedule::Generator::GnnPipe(_)))
        });
        if self.split != Split::Workload && !pipeline {
            // GNNPipe's halo is always stale, graph parallelism's is its exchange.
            sets.push("schedule.halo=null".into());
        }
        match &self.split {
            Split::Workload => {}
            Split::None => sets.push("schedule.stages=null".into()),
            Split::Auto => sets.push("schedule.stages=auto".into()),
            Split::Layers(counts) => sets.push(format!(
                "schedule.stages=[{}]",
                counts
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        }
        sets
    }
}

/// Every way to split `layers` layers into `parts` non-empty contiguous stages, in
/// lexicographic order.
pub fn contiguous_splits(layers: usize, parts: usize) -> Vec<Vec<usize>> {
    fn go(left: usize, parts: usize, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if parts == 1 {
            prefix.push(left);
            out.push(prefix.clone());
            prefix.pop();
            return;
        }
        for first in 1..=left.saturating_sub(parts - 1) {
            prefix.push(first);
            go(left - first, parts - 1, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    if parts >= 1 && layers >= parts {
        go(layers, parts, &mut Vec::new(), &mut out);
    }
    out
}

/// The configurations to try: `schedules` x `chunks` x device counts `1..=max_devices` x stage
/// splits (into the devices times [`planned_stages_per_device`]). `n_layers` is the GNN's depth (`None` for an explicit workload, whose stages are
/// fixed). Pipelines on a GNN get the `auto` split and, when the model has at most
/// [`MAX_LAYERS_FOR_SPLITS`] layers, every contiguous split into the device count; graph
/// parallelism gets one point per device count and algorithm that applies to it (1D; 1.5D for
/// each replication dividing the count; 2D on a square; 3D on a cube:
/// [`GraphAlgorithm::applicable`]).
pub fn search_space(
    schedules: &[String],
    chunks: &[u32],
    max_devices: u32,
    n_layers: Option<usize>,
) -> Vec<PlanPoint> {
    let mut points = Vec::new();
    for schedule in schedules {
        let graph_parallel = schedule == "graph_parallel";
        let chunk_choices: Vec<Option<u32>> = if graph_parallel {
            vec![None]
        } else {
            chunks.iter().map(|&c| Some(c)).collect()
        };
        for &chunks in &chunk_choices {
            for devices in 1..=max_devices {
                let splits = match n_layers {
                    None => vec![Split::Workload],
                    Some(_) if graph_parallel => vec![Split::None],
                    Some(layers) => {
                        let mut splits = vec![Split::Auto];
                        if layers <= MAX_LAYERS_FOR_SPLITS {
                            let v = planned_stages_per_device(schedule) as usize;
                            splits.extend(
                                contiguous_splits(layers, v * devices as usize)
                                    .into_iter()
                                    .map(Split::Layers),
                            );
                        }
                        splits
                    }
                };
                let algorithms: Vec<Option<GraphAlgorithm>> = if graph_parallel {
                    GraphAlgorithm::applicable(devices)
                        .into_iter()
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                for split in splits {
                    for &algorithm in &algorithms {
                        points.push(PlanPoint {
                            schedule: schedule.clone(),
                            chunks,
                            devices,
                            split: split.clone(),
                            algorithm,
                        });
                    }
                }
            }
        }
    }
    points
}

/// The figures of one predicted configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The schedule's label (`gpipe-drop`, `1f1b`, ...).
    pub label: String,
    /// Pipeline stages (layers, for graph parallelism).
    pub stages: u32,
    /// Chunks per epoch.
    pub chunks: u32,
    /// Devices in the scenario.
    pub devices: u32,
    /// Predicted epoch time.
    pub epoch_time_ns: u64,
    /// Mean bubble fraction.
    pub bubble_fraction: f64,
    /// Bytes moved between devices.
    pub communication_bytes: u64,
    /// The largest peak over the devices.
    pub peak_memory_bytes: u64,
    /// What does not fit (empty when the configuration fits): devices alone, then a GPU that
    /// stages share.
    pub over: Vec<Overflow>,
}

impl Figures {
    /// The figures of a prediction of `scenario` and its metrics, with what does not fit
    /// ([`fit::overflows`]).
    pub fn new(scenario: &Scenario, prediction: &Prediction, metrics: &Metrics) -> Self {
        Figures {
            label: prediction.label.clone(),
            stages: prediction.schedule.n_stages(),
            chunks: prediction.schedule.n_chunks(),
            devices: scenario.devices.len() as u32,
            epoch_time_ns: metrics.epoch_time_ns,
            bubble_fraction: metrics.bubble_fraction,
            communication_bytes: metrics.communication_bytes,
            peak_memory_bytes: metrics
                .devices
                .iter()
                .map(|d| d.peak_memory_bytes)
                .max()
                .unwrap_or(0),
            over: fit::overflows(scenario, metrics),
        }
    }

    /// Whether everything fits.
    pub fn fits(&self) -> bool {
        self.over.is_empty()
    }
}

/// A point with its prediction, or the one-line reason it could not be predicted.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The configuration.
    pub point: PlanPoint,
    /// Its figures, or why the scenario rejected it.
    pub result: Result<Figures, String>,
}

/// How the evaluations rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Indices of the best fitting configurations, the choice first.
    pub shown: Vec<usize>,
    /// Fitting configurations not shown that are more than 1% slower than the fastest.
    pub slower: usize,
    /// Fitting configurations not shown within 1% of the fastest that use more devices than the
    /// choice.
    pub more_devices: usize,
    /// Fitting configurations not shown within 1% of the fastest on as few devices as the choice.
    pub close: usize,
    /// Indices of configurations that do not fit, in evaluation order.
    pub does_not_fit: Vec<usize>,
    /// Indices of configurations the scenario rejects, in evaluation order.
    pub invalid: Vec<usize>,
}

impl Ranking {
    /// The chosen configuration, if any fits.
    pub fn choice(&self) -> Option<usize> {
        self.shown.first().copied()
    }
}

/// Whether `time` is within 1% of `best`.
fn within_one_percent(time: u64, best: u64) -> bool {
    u128::from(time) * 100 <= u128::from(best) * 101
}

/// Ranks fitting configurations by (epoch time, devices, chunks, schedule, split) and picks the
/// fastest, preferring fewer devices among those within 1% of the fastest time; keeps the best
/// `top` (the choice first) and counts why the others lost.
pub fn rank(evaluations: &[Evaluation], top: usize) -> Ranking {
    let mut ranking = Ranking::default();
    let mut fitting: Vec<(usize, &Figures)> = Vec::new();
    for (i, e) in evaluations.iter().enumerate() {
        match &e.result {
            Ok(f) if f.fits() => fitting.push((i, f)),
            Ok(_) => ranking.does_not_fit.push(i),
            Err(_) => ranking.invalid.push(i),
        }
    }
    let key = |&(i, f): &(usize, &Figures)| {
        let p = &evaluations[i].point;
        (
            f.epoch_time_ns,
            p.devices,
            f.chunks,
            p.schedule.clone(),
            p.split.clone(),
        )
    };
    fitting.sort_by(|a, b| key(a).cmp(&key(b)).then(a.0.cmp(&b.0)));
    let Some(&(_, fastest)) = fitting.first() else {
        return ranking;
    };
    let best = fastest.epoch_time_ns;
    let choice_pos = fitting
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| within_one_percent(f.epoch_time_ns, best))
        .min_by(|(a, (ia, _)), (b, (ib, _))| {
            evaluations[*ia]
                .point
                .devices
                .cmp(&evaluations[*ib].point.devices)
                .then(a.cmp(b))
        })
        .map_or(0, |(pos, _)| pos);
    let choice = fitting.remove(choice_pos);
    let choice_devices = evaluations[choice.0].point.devices;
    ranking.shown.push(choice.0);
    for (n, (i, f)) in fitting.iter().enumerate() {
        if n + 1 < top.max(1) {
            ranking.shown.push(*i);
        } else if !within_one_percent(f.epoch_time_ns, best) {
            ranking.slower += 1;
        } else if evaluations[*i].point.devices > choice_devices {
            ranking.more_devices += 1;
        } else {
            ranking.close += 1;
        }
    }
    ranking
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_compositions() {
        assert_eq!(
            contiguous_splits(4, 2),
            vec![vec![1, 3], vec![2, 2], vec![3, 1]]
        );
        assert_eq!(contiguous_splits(3, 3), vec![vec![1, 1, 1]]);
        assert!(contiguous_splits(2, 3).is_empty());
        assert_eq!(contiguous_splits(5, 1), vec![vec![5]]);
    }

    fn eval(schedule: &str, devices: u32, time: u64, fits: bool) -> Evaluation {
        Evaluation {
            point: PlanPoint {
                schedule: schedule.into(),
                chunks: Some(4),
                devices,
                split: Split::Auto,
                algorithm: None,
            },
            result: Ok(Figures {
                label: schedule.into(),
                stages: devices,
                chunks: 4,
                devices,
                epoch_time_ns: time,
                bubble_fraction: 0.0,
                communication_bytes: 0,
                peak_memory_bytes: 0,
                over: if fits {
                    Vec::new()
                } else {
                    vec![Overflow {
                        device: "gpu0".into(),
                        index: 0,
                        peak_bytes: 2,
                        capacity_bytes: 1,
                        shared_by: None,
                    }]
                },
            }),
        }
    }

    #[test]
    fn fewer_devices_win_within_one_percent() {
        let evals = vec![
            eval("gpipe", 4, 1000, true),
            eval("1f1b", 2, 1009, true),
            eval("gpipe", 1, 500, false),
            eval("1f1b", 3, 1005, true),
            eval("gpipe", 2, 2000, true),
            Evaluation {
                result: Err("bad".into()),
                ..eval("gpipe", 3, 1, true)
            },
        ];
        let ranking = rank(&evals, 2);
        assert_eq!(ranking.shown, vec![1, 0]);
        assert_eq!(ranking.more_devices, 1);
        assert_eq!(ranking.slower, 1);
        assert_eq!(ranking.does_not_fit, vec![2]);
        assert_eq!(ranking.invalid, vec![5]);
        assert_eq!(
            PlanPoint::overrides(&evals[0].point)[0],
            "schedule.kind=gpipe"
        );
    }
}
