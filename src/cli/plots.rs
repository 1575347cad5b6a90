//! `pipegnn plot`, `pipegnn gallery` and the `--plot DIR` of simulate, run and compare: builds
//! [`Figure`]s from results and writes them as SVG (and PNG) files.

use std::path::{Path, PathBuf};

use super::output::Outputs;
use super::run::{in_scenario, load_scenario, own_candidate, read, CliError, ExitStatus, Result};
use super::{GalleryArgs, PlotArgs, ScenarioArgs};
use crate::exec::RunResult;
use crate::plan::{self, Prediction};
use crate::report::plot::{self, Figure, Format, Series, SweepPoint};
use crate::report::{self, Metrics};
use crate::trace::Trace;

/// Renders each figure as `DIR/NAME.svg`, and `DIR/NAME.png` too when `png` is set, to be
/// written (with `DIR` created) when the command commits its outputs.
fn render_figures(dir: &Path, figures: &[(String, Figure)], png: bool) -> Result<Outputs<'static>> {
    let formats: &[Format] = if png {
        &[Format::Svg, Format::Png]
    } else {
        &[Format::Svg]
    };
    let mut outputs = Outputs::new();
    outputs.folder(dir);
    for (name, figure) in figures {
        for &format in formats {
            let bytes = figure
                .render(format)
                .map_err(|e| CliError::new(ExitStatus::Internal, format!("{name}: {e}")))?;
            let path = dir.join(format!("{}.{}", file_name(name), format.extension()));
            outputs.file(&path, bytes);
        }
    }
    Ok(outputs)
}

/// A figure name as a file name: schedule labels may hold `:` or `/` (`file:NAME`).
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `pipegnn plot FILE... [--out DIR] [--png]`.
pub(super) fn plot_command(args: &PlotArgs) -> Result<()> {
    let mut texts = Vec::new();
    for path in &args.files {
        texts.push((path.display().to_string(), read(path)?));
    }
    let docs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let figures = plot::figures_from_documents(&docs)
        .map_err(|e| CliError::new(ExitStatus::InvalidInput, e))?;
    render_figures(&args.out, &figures, args.png)?.commit()?;
    super::run::print(&format!(
        "wrote {} figures to {}\n",
        figures.len(),
        args.out.display()
    ))
}

/// `sweep --plot DIR`: the figures of the sweep's JSON document.
pub(super) fn sweep_figures(dir: &Path, sweep_json: &str) -> Result<Outputs<'static>> {
    let figures = plot::figures_from_documents(&[("sweep", sweep_json)])
        .map_err(|e| CliError::new(ExitStatus::InvalidInput, e))?;
    render_figures(dir, &figures, false)
}

/// `simulate --plot DIR`: each schedule's timeline and memory bars.
pub(super) fn simulate_figures(
    dir: &Path,
    scenario: &str,
    predictions: &[Prediction],
    metrics: &[Metrics],
) -> Result<Outputs<'static>> {
    let mut figures = Vec::new();
    for (p, m) in predictions.iter().zip(metrics) {
        let title = format!("{scenario}: {} (predicted)", p.label);
        figures.push((
            format!("{}-timeline", p.label),
            Figure::Timeline(vec![plot::timeline_data(&title, &p.trace)]),
        ));
        figures.push((
            format!("{}-memory", p.label),
            Figure::Memory(plot::memory_data(&title, m)),
        ));
    }
    render_figures(dir, &figures, false)
}

/// `run --plot DIR`: the median epoch's measured timeline, its memory bars, the accuracy curve.
pub(super) fn run_figures(
    dir: &Path,
    scenario: &str,
    label: &str,
    result: &RunResult,
    median: usize,
    metrics: &Metrics,
) -> Result<Outputs<'static>> {
    let title = format!("{scenario}: {label} (measured, median epoch)");
    let points = result
        .epochs
        .iter()
        .map(|e| (e.epoch as f64, 100.0 * e.val_accuracy))
        .collect();
    let figures = vec![
        (
            format!("{label}-timeline"),
            Figure::Timeline(vec![plot::timeline_data(&title, &result.traces[median])]),
        ),
        (
            format!("{label}-memory"),
            Figure::Memory(plot::memory_data(&title, metrics)),
        ),
        (
            "accuracy".to_string(),
            Figure::Lines(plot::accuracy_chart(vec![Series {
                label: label.to_string(),
                points,
            }])),
        ),
    ];
    render_figures(dir, &figures, false)
}

/// `compare --plot DIR`: predicted against measured, and the two timelines side by side.
/// `rows` are `(metric, device, predicted, measured)`.
pub(super) fn compare_figures(
    dir: &Path,
    scenario: &str,
    rows: Vec<(String, Option<String>, f64, Option<f64>)>,
    [predicted, measured]: [&Trace; 2],
) -> Result<Outputs<'static>> {
    let figures = vec![
        (
            "compare".to_string(),
            Figure::Compare(plot::compare_data(scenario, rows)),
        ),
        (
            "timelines".to_string(),
            Figure::Timeline(vec![
                plot::timeline_data(&format!("{scenario}: predicted"), predicted),
                plot::timeline_data(&format!("{scenario}: measured (median epoch)"), measured),
            ]),
        ),
    ];
    render_figures(dir, &figures, false)
}

/// `fidelity --plot DIR`: every configuration's predicted against measured figures, with the
/// y = x line.
pub(super) fn fidelity_figures(
    dir: &Path,
    rows: Vec<(String, Option<String>, f64, Option<f64>)>,
) -> Result<Outputs<'static>> {
    let figures = vec![(
        "fidelity".to_string(),
        Figure::Compare(plot::compare_data("fidelity matrix", rows)),
    )];
    render_figures(dir, &figures, false)
}

/// Loads `file` with `overrides` and predicts the named schedules (the scenario's own for
/// `"scenario"`).
fn predict(file: &Path, overrides: &[String], schedules: &[&str]) -> Result<Vec<Prediction>> {
    let args = ScenarioArgs {
        scenario: file.to_path_buf(),
        overrides: overrides.to_vec(),
    };
    let loaded = load_scenario(&args)?;
    let mut out = Vec::new();
    for name in schedules {
        let candidate = if *name == "scenario" {
            own_candidate(&loaded.scenario)?
        } else {
            plan::named_candidate(name, &loaded.scenario).ok_or_else(|| {
                CliError::new(
                    ExitStatus::Internal,
                    format!("built-in schedule `{name}` does not resolve"),
                )
            })?
        };
        out.push(
            plan::predict(&loaded.scenario, loaded.graph.as_ref(), &candidate)
                .map_err(in_scenario(&args))?,
        );
    }
    Ok(out)
}

/// `pipegnn gallery [--out DIR]`: the README's figures, from the simulator only.
pub(super) fn gallery(args: &GalleryArgs) -> Result<()> {
    let scenarios = PathBuf::from("scenarios");
    let quickstart = scenarios.join("quickstart.yaml");
    let mut figures = Vec::new();

    let own = predict(&quickstart, &[], &["scenario"])?;
    let p = &own[0];
    let title = format!("quickstart: {} (predicted)", p.label);
    figures.push((
        "timeline".to_string(),
        Figure::Timeline(vec![plot::timeline_data(&title, &p.trace)]),
    ));
    figures.push((
        "memory".to_string(),
        Figure::Memory(plot::memory_data(&title, &report::compute(&p.trace))),
    ));

    let mut points = Vec::new();
    for chunks in [1, 2, 4, 8, 16] {
        let set = [format!("schedule.chunks={chunks}")];
        for p in predict(&quickstart, &set, &["gpipe", "1f1b", "gnnpipe"])? {
            let m = report::compute(&p.trace);
            points.push(SweepPoint {
                schedule: p.label.clone(),
                chunks: p.schedule.n_chunks(),
                devices: m.devices.len() as u32,
                epoch_time_s: m.epoch_time_ns as f64 / 1e9,
                bubble_fraction: m.bubble_fraction,
            });
        }
    }
    figures.push((
        "bubble-vs-chunks".to_string(),
        Figure::Lines(plot::bubble_vs_chunks(
            "quickstart: bubble against chunks (predicted)",
            &points,
        )),
    ));

    let deep = scenarios.join("gnnpipe-vs-graph-parallel.yaml");
    let mut traffic = Vec::new();
    for depth in 2..=8u32 {
        let set = [format!("model.depth={depth}")];
        for p in predict(&deep, &set, &["gnnpipe", "graph_parallel"])? {
            let m = report::compute(&p.trace);
            traffic.push((p.label.clone(), depth, m.communication_bytes));
        }
    }
    figures.push((
        "communication-vs-depth".to_string(),
        Figure::Lines(plot::communication_vs_depth(
            "Reddit-sized GCN on 8 A100s (a DGX A100): communication against depth (predicted)",
            &traffic,
        )),
    ));
    render_figures(&args.out, &figures, args.png)?.commit()?;
    super::run::print(&format!(
        "wrote {} figures to {}\n",
        figures.len(),
        args.out.display()
    ))
}
