//! From a validated scenario to predictions: pick the schedules, check them, simulate them.
//!
//! This is the glue the command line and the tests share. It reads no files: a schedule file's
//! text is passed in by the caller.

use thiserror::Error;

use crate::cost::{CostModel, ExplicitCost};
use crate::diag::Diagnostics;
use crate::scenario::{Scenario, ScheduleChoice, Workload};
use crate::schedule::{
    self, BackwardOrder, CheckReport, Generator, GnnPipeBackward, GnnPipeOrder, Schedule,
    ScheduleError, UpdateMode,
};
use crate::sim::{self, SimError, SimInput};
use crate::trace::{Trace, TraceDevice};

/// Why a prediction could not be made.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The schedule file is malformed.
    #[error("{0}")]
    File(Diagnostics),
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
    /// A generator.
    Generated(Generator),
    /// A schedule file's parsed content, with a label for tables.
    File {
        /// Shown in tables and JSON as the schedule's name.
        label: String,
        /// The file's path as the user named it, for error messages.
        file: String,
        /// The parsed schedule.
        schedule: Schedule,
    },
}

impl Candidate {
    /// The name shown in tables and JSON.
    pub fn label(&self) -> String {
        match self {
            Candidate::Generated(generator) => generator_label(*generator),
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
    }
}

/// The schedules `--schedule all` compares: the scenario's own first, then every other built-in
/// schedule that applies to its workload (GPipe and 1F1B for an explicit workload).
pub fn all_candidates(own: Candidate, scenario: &Scenario) -> Vec<Candidate> {
    let applicable = match scenario.workload {
        Workload::Explicit(_) => [
            Generator::GPipe(BackwardOrder::Forward),
            Generator::OneFOneB,
        ],
    };
    let mut candidates = vec![own];
    for generator in applicable {
        let candidate = Candidate::Generated(generator);
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
    match (&scenario.schedule.choice, file_text) {
        (ScheduleChoice::Generated(generator), _) => Ok(Candidate::Generated(*generator)),
        (ScheduleChoice::File(path), Some((file, text))) => {
            let schedule = schedule::file::parse(file, text).map_err(PlanError::File)?;
            let stem = path
                .file_stem()
                .map_or("custom".into(), |s| s.to_string_lossy());
            Ok(Candidate::File {
                label: format!("file:{stem}"),
                file: file.to_string(),
                schedule,
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
}

/// The cost model of a scenario's workload for `n_chunks` chunks.
pub fn cost_model(scenario: &Scenario, n_chunks: u32) -> Box<dyn CostModel> {
    match &scenario.workload {
        Workload::Explicit(workload) => {
            Box::new(ExplicitCost::new(workload, n_chunks, scenario.optimizer))
        }
    }
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

/// Builds, checks and simulates one candidate schedule on the scenario. Problems with a
/// schedule file name the file.
pub fn predict(scenario: &Scenario, candidate: &Candidate) -> Result<Prediction, PlanError> {
    predict_unlabelled(scenario, candidate).map_err(|err| match (candidate, err) {
        (Candidate::File { file, .. }, PlanError::Schedule(err)) => {
            PlanError::Mismatch(format!("schedule file {file}: {err}"))
        }
        (Candidate::File { file, .. }, PlanError::Mismatch(message)) => {
            PlanError::Mismatch(format!("schedule file {file}: {message}"))
        }
        (_, err) => err,
    })
}

fn predict_unlabelled(scenario: &Scenario, candidate: &Candidate) -> Result<Prediction, PlanError> {
    let n_stages = scenario.n_stages();
    let schedule = match candidate {
        Candidate::Generated(generator) => {
            generator.generate(n_stages, scenario.schedule.n_chunks)?
        }
        Candidate::File { schedule, .. } => schedule.clone(),
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
    let placement = scenario
        .schedule
        .placement_for(schedule.n_devices(), scenario.devices.len())
        .map_err(PlanError::Mismatch)?;
    let check = schedule::check(&schedule)?;
    let cost = cost_model(scenario, schedule.n_chunks());
    let input = SimInput {
        schedule: &schedule,
        placement: &placement,
        cost: cost.as_ref(),
        network: &scenario.network,
    };
    let trace = sim::simulate(&input, trace_devices(scenario))?;
    Ok(Prediction {
        label: candidate.label(),
        schedule,
        check,
        trace,
    })
}
