//! `pipegnn plan`: searches schedules x chunk counts x device counts x stage splits for the
//! fastest configuration that fits every device's memory (`plan::search` ranks them).
//!
//! The graph is loaded once; configurations that cannot be valid or cannot fit are pruned
//! (`plan::search::prune`) and counted; each of the others re-validates the scenario with its
//! overrides and predicts on that graph, in parallel; the output order does not depend on the
//! threads. On a cluster topology the device counts are whole nodes.

use rayon::prelude::*;

use super::run::{
    load_scenario, naming_file, own_candidate, print, read_document, to_json, CliError, ExitStatus,
    Loaded, Result,
};
use super::sweep::one_line;
use super::{PlanArgs, ReportFormat};
use crate::plan::search::{self, Evaluation, Figures, MemoryFloor, PlanPoint, PruneCounts};
use crate::plan::{self, GraphData};
use crate::report::{self, json};
use crate::scenario::{self, Workload};
use crate::schedule::catalog;
use crate::units;

/// The schedule kinds the planner knows.
const KINDS: [&str; 4] = ["gpipe", "1f1b", "gnnpipe", "graph_parallel"];

/// How many does-not-fit examples the table lists.
const MAX_EXAMPLES: usize = 10;

fn invalid(message: String) -> CliError {
    CliError::new(ExitStatus::InvalidInput, message)
}

fn parse_chunks(text: &str) -> Result<Vec<u32>> {
    let mut chunks = Vec::new();
    for part in text.split(',') {
        match part.trim().parse::<u32>() {
            Ok(c) if c >= 1 => {
                if !chunks.contains(&c) {
                    chunks.push(c);
                }
            }
            _ => {
                return Err(invalid(format!(
                    "--chunks: `{}` is not a chunk count (write e.g. 1,2,4,8)",
                    part.trim()
                )))
            }
        }
    }
    Ok(chunks)
}

fn parse_schedules(text: &str) -> Result<Vec<String>> {
    let mut schedules = Vec::new();
    for part in text.split(',').map(str::trim) {
        if catalog::find(part).is_none() {
            let names: Vec<&str> = catalog::CATALOG.iter().map(|e| e.name).collect();
            return Err(invalid(format!(
                "--schedules: unknown schedule `{part}` (expected {})",
                names.join(", ")
            )));
        }
        if !schedules.iter().any(|s| s == part) {
            schedules.push(part.to_string());
        }
    }
    Ok(schedules)
}

/// Validates the scenario with the point's overrides and predicts it on the shared graph.
fn evaluate(
    file: &str,
    text: &str,
    base_dir: &std::path::Path,
    user: &[String],
    graph: Option<&GraphData>,
    point: &PlanPoint,
    profile: Option<&std::path::Path>,
) -> std::result::Result<Figures, String> {
    let mut sets = user.to_vec();
    sets.extend(point.overrides());
    let scenario = scenario::parse_scenario(file, text, &sets, base_dir)
        .map_err(|d| one_line(&d.to_string()))?;
    let candidate = own_candidate(&scenario).map_err(|e| one_line(&e.message))?;
    let profiles =
        super::fidelity::device_profiles(std::path::Path::new(file), &scenario, profile, None)
            .map_err(|e| one_line(&e.message))?;
    let refs: Vec<&crate::cost::DeviceProfile> = profiles.iter().flatten().collect();
    let tier = plan::Tier::of_profiles(&refs);
    let prediction = plan::predict_profiled(&scenario, graph, &candidate, tier)
        .map_err(|e| one_line(&naming_file(file, &e)))?;
    let metrics = report::compute(&prediction.trace);
    Ok(Figures::new(&scenario, &prediction, &metrics))
}

/// One configuration of the plan's JSON.
fn entry_doc(split: String, f: &Figures) -> json::PlanEntryDoc {
    json::PlanEntryDoc {
        schedule: f.label.clone(),
        split,
        stages: f.stages,
        chunks: f.chunks,
        devices: f.devices,
        epoch_time_s: json::seconds(f.epoch_time_ns),
        bubble_fraction: f.bubble_fraction,
        communication_bytes: f.communication_bytes,
        peak_memory_bytes: f.peak_memory_bytes,
    }
}

/// The table's line of configurations not simulated: `pruned before simulating: 30 would not
/// fit (memory lower bound 106.33GiB > 80.00GiB capacity, the closest of them), 594 need more
/// stages than layers, 57 grids do not apply (2D needs a square device count, 3D a cube)`.
fn pruned_line(pruned: &PruneCounts) -> String {
    let mut parts = Vec::new();
    if let Some((bound, capacity)) = pruned.lowest_bound {
        parts.push(format!(
            "{} would not fit (memory lower bound {} > {} capacity, the closest of them)",
            pruned.would_not_fit,
            units::format_bytes(bound),
            units::format_bytes(capacity)
        ));
    }
    if pruned.more_stages_than_layers > 0 {
        parts.push(format!(
            "{} need more stages than layers",
            pruned.more_stages_than_layers
        ));
    }
    if pruned.no_grid > 0 {
        parts.push(format!(
            "{} grids do not apply (2D needs a square device count, 3D a cube)",
            pruned.no_grid
        ));
    }
    if pruned.over_budget > 0 {
        parts.push(format!(
            "{} GNNPipe hybrids past the search's budget (layers x chunks x partitions^2 > {} halo hand-offs; `simulate` runs one alone)",
            pruned.over_budget,
            search::MAX_HYBRID_HANDOFFS
        ));
    }
    format!("pruned before simulating: {}", parts.join(", "))
}

/// `pipegnn plan`.
pub(super) fn run(args: &PlanArgs) -> Result<()> {
    let Loaded { scenario, graph } = load_scenario(&args.scenario)?;
    let chunks = parse_chunks(&args.chunks)?;
    let n_layers = match &scenario.workload {
        Workload::Gnn(spec) => Some(spec.layers.len()),
        Workload::Explicit(_) => None,
    };
    let schedules = match &args.schedules {
        Some(text) => parse_schedules(text)?,
        None if n_layers.is_some() => KINDS.iter().map(|s| s.to_string()).collect(),
        None => vec!["gpipe".into(), "1f1b".into()],
    };
    if n_layers.is_none() {
        let gnn_only = schedules
            .iter()
            .find(|s| catalog::find(s).is_some_and(|e| e.workloads == catalog::Workloads::Gnn));
        if let Some(name) = gnn_only {
            return Err(invalid(format!(
                "--schedules: {name} needs a GNN workload (`graph` and `model`)"
            )));
        }
    }
    let max_devices = args
        .max_devices
        .unwrap_or(scenario.devices.len() as u32)
        .max(1);
    let gpus_per_node = scenario
        .network
        .cluster_shape()
        .map(|shape| shape.gpus_per_node as u32);
    let counts = search::device_counts(max_devices, gpus_per_node);
    let all_points = search::search_space(&schedules, &chunks, &counts, n_layers);
    let floor = MemoryFloor::new(&scenario, graph.as_ref());
    let mut pruned = Vec::new();
    let mut points = Vec::new();
    for point in all_points {
        match search::prune(&point, n_layers, floor.as_ref()) {
            Some(why) => pruned.push(why),
            None => points.push(point),
        }
    }
    let pruned = PruneCounts::of(&pruned);
    let path = &args.scenario.scenario;
    let text = read_document(path)?;
    let file = path.display().to_string();
    let base_dir = path.parent().unwrap_or(std::path::Path::new("."));
    let evaluations: Vec<Evaluation> = points
        .par_iter()
        .map(|point| Evaluation {
            point: point.clone(),
            result: evaluate(
                &file,
                &text,
                base_dir,
                &args.scenario.overrides,
                graph.as_ref(),
                point,
                args.profile.as_deref(),
            ),
        })
        .collect();
    let ranking = search::rank(&evaluations, args.top);
    let figures = |i: usize| {
        evaluations[i]
            .result
            .as_ref()
            .expect("ranked configurations were predicted")
    };
    let split_of = |i: usize| evaluations[i].point.split.label();
    match args.format {
        ReportFormat::Json => {
            let doc = json::PlanDoc {
                scenario: scenario.name.clone(),
                configurations: evaluations.len() + pruned.total(),
                device_counts: counts.clone(),
                simulated: evaluations.len(),
                pruned: json::PrunedDoc {
                    would_not_fit: pruned.would_not_fit,
                    lowest_bound_bytes: pruned.lowest_bound.map(|(b, _)| b),
                    capacity_bytes: pruned.lowest_bound.map(|(_, c)| c),
                    more_stages_than_layers: pruned.more_stages_than_layers,
                    grid_does_not_apply: pruned.no_grid,
                    over_budget: pruned.over_budget,
                },
                best: ranking
                    .shown
                    .iter()
                    .map(|&i| entry_doc(split_of(i), figures(i)))
                    .collect(),
                rejected: json::RejectedDoc {
                    does_not_fit: ranking.does_not_fit.len(),
                    slower: ranking.slower,
                    more_devices: ranking.more_devices,
                    close: ranking.close,
                    invalid: ranking.invalid.len(),
                },
                does_not_fit: ranking
                    .does_not_fit
                    .iter()
                    .map(|&i| {
                        let f = figures(i);
                        let over = &f.over[0];
                        json::PlanOverflowDoc {
                            schedule: f.label.clone(),
                            split: split_of(i),
                            chunks: f.chunks,
                            devices: f.devices,
                            device: over.device.clone(),
                            peak_memory_bytes: over.peak_bytes,
                            capacity_bytes: over.capacity_bytes,
                            stages_sharing: over.shared_by,
                        }
                    })
                    .collect(),
            };
            print(&to_json(&doc)?)?;
        }
        ReportFormat::Table => {
            let mut out = format!(
                "plan for {}: {} configurations ({} x chunks {} x devices {} x stage splits), {} simulated, {} pruned\n\n",
                scenario.name,
                evaluations.len() + pruned.total(),
                schedules.join("/"),
                chunks
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                search::describe_counts(&counts, gpus_per_node),
                evaluations.len(),
                pruned.total(),
            );
            if !ranking.shown.is_empty() {
                // Labels such as `graph_parallel-1.5d-c16` are wider than the usual 20.
                let width = ranking
                    .shown
                    .iter()
                    .map(|&i| figures(i).label.len())
                    .fold(20, usize::max);
                out.push_str(&format!(
                    "{:>4}  {:<width$} {:>7} {:>6} {:>7} {:>10} {:>7} {:>13} {:>11}\n",
                    "rank",
                    "schedule",
                    "split",
                    "chunks",
                    "devices",
                    "epoch time",
                    "bubble",
                    "communication",
                    "peak memory"
                ));
                for (n, &i) in ranking.shown.iter().enumerate() {
                    let f = figures(i);
                    out.push_str(&format!(
                        "{:>4}  {:<width$} {:>7} {:>6} {:>7} {:>10} {:>6.1}% {:>13} {:>11}\n",
                        n + 1,
                        f.label,
                        split_of(i),
                        f.chunks,
                        f.devices,
                        units::format_duration_ns(f.epoch_time_ns),
                        f.bubble_fraction * 100.0,
                        units::format_bytes(f.communication_bytes),
                        units::format_bytes(f.peak_memory_bytes),
                    ));
                }
                out.push('\n');
            }
            out.push_str(&format!(
                "rejected: {} do not fit, {} slower (more than 1% behind the fastest), {} need more devices for the same time (within 1%), {} close behind, {} invalid for the scenario\n",
                ranking.does_not_fit.len(),
                ranking.slower,
                ranking.more_devices,
                ranking.close,
                ranking.invalid.len(),
            ));
            if pruned.total() > 0 {
                out.push_str(&format!("{}\n", pruned_line(&pruned)));
            }
            for &i in ranking.does_not_fit.iter().take(MAX_EXAMPLES) {
                let f = figures(i);
                let over = &f.over[0];
                let who = match over.shared_by {
                    None => over.device.clone(),
                    Some(stages) => format!("{} (shared by {stages} stages)", over.device),
                };
                out.push_str(&format!(
                    "does not fit: {} split {} chunks {} devices {}: {who} needs {} ({} B) but has {} ({} B)\n",
                    f.label,
                    split_of(i),
                    f.chunks,
                    f.devices,
                    units::format_bytes(over.peak_bytes),
                    over.peak_bytes,
                    units::format_bytes(over.capacity_bytes),
                    over.capacity_bytes,
                ));
            }
            if ranking.does_not_fit.len() > MAX_EXAMPLES {
                out.push_str(&format!(
                    "does not fit: ... and {} more\n",
                    ranking.does_not_fit.len() - MAX_EXAMPLES
                ));
            }
            if let Some(&i) = ranking.invalid.first() {
                if let Err(why) = &evaluations[i].result {
                    out.push_str(&format!("invalid, e.g.: {why}\n"));
                }
            }
            print(&out)?;
        }
    }
    if ranking.choice().is_some() {
        return Ok(());
    }
    if ranking.does_not_fit.is_empty() && pruned.would_not_fit == 0 {
        let why = ranking
            .invalid
            .first()
            .and_then(|&i| evaluations[i].result.as_ref().err().cloned())
            .unwrap_or_else(|| match pruned.total() {
                0 => "no configurations to try".into(),
                _ => pruned_line(&pruned),
            });
        return Err(invalid(format!(
            "{file}: no configuration is valid for the scenario, e.g.: {why}"
        )));
    }
    Err(CliError::new(
        ExitStatus::DoesNotFit,
        format!(
            "{file}: no configuration fits the devices' memory ({} do not fit, {} pruned as too large, {} invalid; try more devices with --max-devices, more chunks, or larger devices)",
            ranking.does_not_fit.len(),
            pruned.would_not_fit,
            ranking.invalid.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        assert_eq!(parse_chunks("1, 2,4,2").unwrap(), vec![1, 2, 4]);
        assert!(parse_chunks("1,x").is_err());
        assert!(parse_chunks("0").is_err());
        assert!(parse_schedules("gpipe,bogus").is_err());
    }
}
