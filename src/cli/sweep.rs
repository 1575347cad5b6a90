//! `pipegnn sweep`: predicts every point of a cross product of `--set` values, in parallel, and
//! prints one row per point in cross-product order (first axis slowest).
//!
//! A `--set key=v1,v2,...` is an axis unless its value is a YAML list or map (`[...]`, `{...}`);
//! every other `--set` applies to every point. Each point loads, validates and predicts the
//! scenario's own schedule exactly as `simulate` does; a point that fails or does not fit is a
//! row with its error, not a failed sweep. A key or value that does not parse fails up front.

use rayon::prelude::*;

use super::output::Outputs;
use super::progress::Progress;
use super::run::{
    check_fits, in_scenario, load_scenario, own_candidate, print, read_document, to_json, CliError,
    ExitStatus, Loaded, Result,
};
use super::{ScenarioArgs, SweepArgs, SweepFormat};
use crate::plan::{self, search::Figures};
use crate::report::{self, json};

/// The metric columns after the axis keys, as in the JSON points.
const COLUMNS: [&str; 10] = [
    "schedule",
    "stages",
    "chunks",
    "devices",
    "epoch_time_s",
    "bubble_fraction",
    "communication_bytes",
    "peak_memory_bytes",
    "fits",
    "error",
];

/// One swept `--set`.
struct Axis {
    /// Position among the `--set` arguments.
    position: usize,
    key: String,
    values: Vec<String>,
}

/// A point's outcome: its figures (if predicted) and its one-line error.
struct Outcome {
    name: Option<String>,
    figures: Option<Figures>,
    error: Option<String>,
}

/// Several lines joined into one.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Finds the axes among the `--set` arguments.
fn axes(overrides: &[String]) -> Result<Vec<Axis>> {
    let mut axes = Vec::new();
    for (position, text) in overrides.iter().enumerate() {
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        let trimmed = value.trim();
        if !trimmed.contains(',') || trimmed.starts_with('[') || trimmed.starts_with('{') {
            continue;
        }
        let values: Vec<String> = trimmed.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err(CliError::new(
                ExitStatus::InvalidInput,
                format!("--set {text}: an axis value is empty (write e.g. schedule.chunks=1,2,4)"),
            ));
        }
        axes.push(Axis {
            position,
            key: key.trim().to_string(),
            values,
        });
    }
    Ok(axes)
}

/// The `--set` list of one point: the plain overrides, and each axis at its chosen value.
fn point_overrides(overrides: &[String], axes: &[Axis], choice: &[usize]) -> Vec<String> {
    let mut sets = overrides.to_vec();
    for (axis, &i) in axes.iter().zip(choice) {
        sets[axis.position] = format!("{}={}", axis.key, axis.values[i]);
    }
    sets
}

/// Every combination of axis indices, first axis slowest.
fn cross_product(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut points = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|prefix| {
                (0..axis.values.len()).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    points
}

/// Loads, validates and predicts one point, as `simulate` does for the scenario's own schedule.
fn evaluate(args: &ScenarioArgs, profile: Option<&std::path::Path>) -> Outcome {
    let predicted = (|| {
        let Loaded { scenario, graph } = load_scenario(args)?;
        let candidate = own_candidate(&scenario)?;
        let profiles = super::fidelity::device_profiles(&args.scenario, &scenario, profile, None)?;
        let refs: Vec<&crate::cost::DeviceProfile> = profiles.iter().flatten().collect();
        let tier = plan::Tier::of_profiles(&refs);
        let prediction = plan::predict_profiled(&scenario, graph.as_ref(), &candidate, tier)
            .map_err(in_scenario(args))?;
        let metrics = report::compute(&prediction.trace);
        let fits = check_fits(&scenario, &[(prediction.label.as_str(), &metrics)]);
        let figures = Figures::new(&scenario, &prediction, &metrics);
        Ok::<_, CliError>((scenario.name, figures, fits.err()))
    })();
    match predicted {
        Ok((name, figures, misfit)) => Outcome {
            name: Some(name),
            figures: Some(figures),
            error: misfit.map(|e| one_line(&e.message)),
        },
        Err(err) => Outcome {
            name: None,
            figures: None,
            error: Some(one_line(&err.message)),
        },
    }
}

/// A point's JSON: its figures (null where it could not be predicted) and its error.
fn point_doc(
    set: Vec<(String, serde_json::Value)>,
    figures: Option<&Figures>,
    error: Option<String>,
) -> json::SweepPointDoc {
    json::SweepPointDoc {
        set: json::OrderedMap(set),
        schedule: figures.map(|f| f.label.clone()),
        stages: figures.map(|f| f.stages),
        chunks: figures.map(|f| f.chunks),
        devices: figures.map(|f| f.devices),
        epoch_time_s: figures.map(|f| json::seconds(f.epoch_time_ns)),
        bubble_fraction: figures.map(|f| f.bubble_fraction),
        communication_bytes: figures.map(|f| f.communication_bytes),
        peak_memory_bytes: figures.map(|f| f.peak_memory_bytes),
        fits: figures.is_some_and(|f| f.fits()),
        error,
    }
}

/// Quotes a CSV field when it needs it.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `pipegnn sweep`.
pub(super) fn run(args: &SweepArgs) -> Result<()> {
    let overrides = &args.scenario.overrides;
    let axes = axes(overrides)?;
    let path = &args.scenario.scenario;
    let text = read_document(path)?;
    let file = path.display().to_string();
    // A key that does not resolve, or a value that does not parse, fails the sweep up front.
    for axis in &axes {
        for (i, value) in axis.values.iter().enumerate() {
            let mut sets: Vec<String> = overrides
                .iter()
                .enumerate()
                .filter(|(p, _)| axes.iter().all(|a| a.position != *p))
                .map(|(_, s)| s.clone())
                .collect();
            sets.push(format!("{}={value}", axis.key));
            if let Err(diags) = crate::scenario::raw::parse(&file, &text, &sets) {
                return Err(CliError::new(
                    ExitStatus::InvalidInput,
                    format!(
                        "--set {}: value {} (`{value}`): {}",
                        overrides[axis.position],
                        i + 1,
                        one_line(&diags.to_string())
                    ),
                ));
            }
        }
    }
    let combos = cross_product(&axes);
    let progress = Progress::counted("sweep", combos.len() as u64, "points");
    let outcomes: Vec<Outcome> = combos
        .par_iter()
        .map(|choice| {
            let point = ScenarioArgs {
                scenario: path.clone(),
                overrides: point_overrides(overrides, &axes, choice),
            };
            let outcome = evaluate(&point, args.profile.as_deref());
            progress.step();
            outcome
        })
        .collect();
    drop(progress);
    let name = outcomes
        .iter()
        .find_map(|o| o.name.clone())
        .or_else(|| {
            crate::scenario::raw::parse(&file, &text, &[])
                .ok()
                .map(|(raw, _)| raw.name)
        })
        .unwrap_or_else(|| file.clone());
    let doc = json::SweepDoc {
        scenario: name,
        axes: axes
            .iter()
            .map(|a| json::AxisDoc {
                key: a.key.clone(),
                values: a.values.iter().map(|v| json::set_value(v)).collect(),
            })
            .collect(),
        points: combos
            .iter()
            .zip(&outcomes)
            .map(|(choice, o)| {
                let set = axes
                    .iter()
                    .zip(choice)
                    .map(|(a, &i)| (a.key.clone(), json::set_value(&a.values[i])))
                    .collect();
                point_doc(set, o.figures.as_ref(), o.error.clone())
            })
            .collect(),
    };
    let json_text = to_json(&doc)?;
    let mut outputs = match &args.plot {
        Some(dir) => super::plots::sweep_figures(dir, &json_text)?,
        None => Outputs::new(),
    };
    let rendered = match args.format {
        SweepFormat::Json => json_text,
        SweepFormat::Csv => {
            let mut out = String::new();
            let header: Vec<String> = axes
                .iter()
                .map(|a| csv_field(&a.key))
                .chain(COLUMNS.iter().map(|c| c.to_string()))
                .collect();
            out.push_str(&header.join(","));
            out.push('\n');
            for (choice, o) in combos.iter().zip(&outcomes) {
                let mut row: Vec<String> = axes
                    .iter()
                    .zip(choice)
                    .map(|(a, &i)| csv_field(&a.values[i]))
                    .collect();
                match &o.figures {
                    Some(f) => row.extend([
                        csv_field(&f.label),
                        f.stages.to_string(),
                        f.chunks.to_string(),
                        f.devices.to_string(),
                        json::seconds(f.epoch_time_ns).to_string(),
                        f.bubble_fraction.to_string(),
                        f.communication_bytes.to_string(),
                        f.peak_memory_bytes.to_string(),
                        f.fits().to_string(),
                    ]),
                    None => {
                        row.extend(std::iter::repeat_n(String::new(), 8));
                        row.push("false".into());
                    }
                }
                row.push(o.error.as_deref().map(csv_field).unwrap_or_default());
                out.push_str(&row.join(","));
                out.push('\n');
            }
            out
        }
    };
    match &args.out {
        Some(out) => {
            outputs.file(out, rendered);
            outputs.commit()
        }
        None => {
            outputs.commit()?;
            print(&rendered)
        }
    }
}
