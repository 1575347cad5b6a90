//! Scenarios through the library: every shipped scenario validates and simulates, overrides
//! change what they name, and output is deterministic.

use std::path::Path;

use pipegnn::graph::dataset;
use pipegnn::plan::{self, Candidate, GraphData, Prediction};
use pipegnn::report::{self, json};
use pipegnn::scenario::{parse_scenario, GraphSource, Scenario, ScheduleChoice, Workload};

use crate::support::root;

/// A scenario with its graph, loaded as the command line does.
pub struct Loaded {
    pub scenario: Scenario,
    pub graph: Option<GraphData>,
}

pub fn load(path: &Path, overrides: &[&str]) -> Loaded {
    let text = std::fs::read_to_string(path).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let scenario = parse_scenario(
        &path.display().to_string(),
        &text,
        &overrides,
        path.parent().unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let graph = match &scenario.workload {
        Workload::Explicit(_) => None,
        Workload::Gnn(spec) => {
            let dataset = match &spec.graph {
                GraphSource::Dataset { path, .. } => {
                    let mut read = |name: &str| Ok(std::fs::read_to_string(path.join(name)).ok());
                    Some(dataset::load(&mut read).unwrap())
                }
                _ => None,
            };
            Some(plan::prepare_graph(spec, dataset).unwrap())
        }
    };
    Loaded { scenario, graph }
}

pub fn own(scenario: &Scenario) -> Candidate {
    let text = match &scenario.schedule.choice {
        ScheduleChoice::File(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path).unwrap(),
        )),
        _ => None,
    };
    plan::own_candidate(
        scenario,
        text.as_ref().map(|(f, t)| (f.as_str(), t.as_str())),
    )
    .unwrap()
}

pub fn predict(loaded: &Loaded, candidate: &Candidate) -> Prediction {
    plan::predict(&loaded.scenario, loaded.graph.as_ref(), candidate)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn simulate_json(loaded: &Loaded) -> String {
    let scenario = &loaded.scenario;
    // Past a schedule's 256 devices (a cluster) graph parallelism is refused: the scenario's own
    // schedule only.
    let candidates = match scenario.devices.len() > pipegnn::schedule::MAX_DEVICES {
        true => vec![own(scenario)],
        false => plan::all_candidates(own(scenario), scenario),
    };
    let results = candidates
        .iter()
        .map(|c| {
            let p = predict(loaded, c);
            let metrics = report::compute(&p.trace);
            json::ResultDoc::new(
                &p.label,
                p.schedule.n_stages(),
                p.schedule.n_chunks(),
                &metrics,
                p.graph.as_ref(),
                plan::fit::fits(scenario, &metrics),
            )
        })
        .collect();
    serde_json::to_string(&json::SimulateDoc {
        scenario: scenario.name.clone(),
        results,
    })
    .unwrap()
}

#[test]
fn every_shipped_scenario_validates_and_simulates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            // A scenario on a shared dataset reads it where the skip looked for it.
            let dataset = text.split("shared/data/").nth(1).map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                crate::gnn::dataset_set(&name)[1].clone()
            });
            if dataset.is_some() && crate::gnn::data_dir().is_none() {
                continue;
            }
            assert!(
                text.starts_with('#'),
                "{} opens with a comment saying what it asks",
                path.display()
            );
            let overrides: Vec<&str> = dataset.iter().map(String::as_str).collect();
            let loaded = load(&path, &overrides);
            assert!(!simulate_json(&loaded).is_empty());
            seen += 1;
        }
    }
    assert!(seen >= 3);
}

#[test]
fn same_scenario_gives_byte_identical_json() {
    for name in ["explicit-pipeline", "cluster-graph-parallel"] {
        let path = root().join(format!("scenarios/{name}.yaml"));
        let first = simulate_json(&load(&path, &[]));
        let second = simulate_json(&load(&path, &[]));
        assert_eq!(first, second, "{name}");
    }
}

#[test]
fn graph_parallelism_past_256_partitions_is_refused_in_one_line() {
    // The scale scenario without its placement: a partition on each of 4,096 GPUs.
    let text = std::fs::read_to_string(root().join("scenarios/cluster-4096-scale.yaml")).unwrap();
    let text = &text[..text.find("  placement:").unwrap()];
    let dir = crate::support::scratch("graph-parallel-4096");
    let path = crate::support::write(&dir, "scenario.yaml", text);
    let loaded = load(&path, &[]);
    let candidate = plan::named_candidate("graph_parallel", &loaded.scenario).unwrap();
    let err = match plan::predict(&loaded.scenario, loaded.graph.as_ref(), &candidate) {
        Ok(_) => panic!("graph parallelism over 4,096 partitions was predicted"),
        Err(err) => err.to_string(),
    };
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("graph parallelism over 4096 partitions: at most 256"),
        "{err}"
    );
}

#[test]
fn overrides_change_the_named_field() {
    let path = root().join("scenarios/explicit-pipeline.yaml");
    let base = load(&path, &[]);
    let more = load(
        &path,
        &[
            "schedule.chunks=32",
            "devices.0.count=6",
            "links.topology.kind=full",
        ],
    );
    assert_eq!(more.scenario.schedule.n_chunks, 32);
    assert_eq!(more.scenario.devices.len(), 6);
    assert_eq!(more.scenario.network.links().len(), 6 * 5);
    let bubble = |l: &Loaded| report::compute(&predict(l, &own(&l.scenario)).trace).bubble_fraction;
    assert!(bubble(&more) < bubble(&base), "more chunks, smaller bubble");
}

#[test]
fn memory_that_does_not_fit_is_reported() {
    let path = root().join("scenarios/explicit-pipeline.yaml");
    let small = load(&path, &["devices.0.memory=4GiB"]);
    let metrics = report::compute(&predict(&small, &own(&small.scenario)).trace);
    assert!(metrics.devices.iter().all(|d| !d.fits()));
    let over = plan::fit::overflows(&small.scenario, &metrics);
    assert_eq!(over.len(), metrics.devices.len());
    assert!(over.iter().all(|o| o.shared_by.is_none()));
    let doc = json::ResultDoc::new("1f1b", 4, 8, &metrics, None, over.is_empty());
    assert!(!doc.fits);
}

#[test]
fn several_stages_per_device_are_placed_as_the_kind_says_and_held_in_memory_together() {
    use pipegnn::schedule::Op;
    use pipegnn::trace::MemoryCategory;
    let path = root().join("scenarios/zero-bubble.yaml");
    for (sets, label, device_of_stage) in [
        (
            vec![],
            "interleaved_1f1b-v2-drop",
            // Round-robin: stage k on device k mod 2.
            vec![0, 1, 0, 1],
        ),
        (
            vec!["schedule.kind=looped_bfs"],
            "looped_bfs-v2-drop",
            vec![0, 1, 0, 1],
        ),
        (
            vec!["schedule.kind=zbv", "schedule.stages_per_device=null"],
            "zbv-drop",
            // A V: device d holds stages d and 3 - d.
            vec![0, 1, 1, 0],
        ),
        (
            vec!["schedule.stages_per_device=4"],
            "interleaved_1f1b-v4-drop",
            vec![0, 1, 0, 1, 0, 1, 0, 1],
        ),
    ] {
        let loaded = load(&path, &sets);
        let p = predict(&loaded, &own(&loaded.scenario));
        assert_eq!(p.label, label);
        let stages = device_of_stage.len();
        assert_eq!(p.schedule.n_stages() as usize, stages, "{label}");
        assert_eq!(p.schedule.n_devices(), 2, "{label}");
        for (s, &d) in device_of_stage.iter().enumerate() {
            assert_eq!(p.schedule.device_of(Op::forward(0, s as u32)), d, "{label}");
        }
        // The auto split covers the 8 layers in order.
        let layout = p.layout.as_ref().unwrap();
        assert_eq!(layout.stage_layers.len(), stages);
        assert_eq!(layout.stage_layers[0].start, 0);
        assert_eq!(layout.stage_layers[stages - 1].end, 8);
        // Each device holds every one of its stages' parameters (f32).
        let metrics = report::compute(&p.trace);
        for (d, device) in metrics.devices.iter().enumerate() {
            let held: u64 = (0..stages)
                .filter(|&s| device_of_stage[s] == d)
                .map(|s| 4 * layout.model.parameters(layout.stage_layers[s].clone()))
                .sum();
            let at = MemoryCategory::ALL
                .iter()
                .position(|&c| c == MemoryCategory::Parameters)
                .unwrap();
            assert_eq!(device.memory_at_peak[at], held, "{label} device {d}");
        }
    }
}

#[test]
fn explicit_workloads_keep_their_stages_and_fill_devices_v_at_a_time() {
    let path = root().join("scenarios/explicit-pipeline.yaml");
    let loaded = load(&path, &[]);
    // Four explicit stages: two per device as a V on two of the four GPUs.
    let zbv = plan::named_candidate("zbv", &loaded.scenario).unwrap();
    let p = predict(&loaded, &zbv);
    assert_eq!((p.schedule.n_stages(), p.schedule.n_devices()), (4, 2));
    assert_eq!(p.label, "zbv");
    // Three stages do not fill devices two at a time.
    let three = load(&path, &["workload.stages=[{forward: 1ms, backward: 2ms}, {forward: 1ms, backward: 2ms}, {forward: 1ms, backward: 2ms}]"]);
    let zbv = plan::named_candidate("zbv", &three.scenario).unwrap();
    let err = plan::predict(&three.scenario, None, &zbv)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 stages") || err.contains("stages"), "{err}");
    // `-vN` names the stages per device of a round-robin kind; the V kinds take none.
    let v4 = plan::named_candidate("interleaved_1f1b-v4", &loaded.scenario).unwrap();
    assert_eq!(v4.label(&loaded.scenario), "interleaved_1f1b-v4");
    assert!(plan::named_candidate("zbv-v2", &loaded.scenario).is_none());
    assert!(plan::named_candidate("interleaved_1f1b-v0", &loaded.scenario).is_none());
}
