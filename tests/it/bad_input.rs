//! Bad input: each a clear one-line error with file, location and field, a documented exit code,
//! never a panic.

use std::path::Path;

use crate::support::{pipegnn, root, scratch, stderr, write};

const INVALID_INPUT: i32 = 4;
const IO: i32 = 3;
const SCHEDULE_REJECTED: i32 = 5;
const DOES_NOT_FIT: i32 = 6;

fn explicit() -> String {
    std::fs::read_to_string(root().join("scenarios/explicit-pipeline.yaml")).unwrap()
}

/// Runs `validate` on `text` and returns stderr after checking the exit code and that every
/// line is a complete `error:` line.
fn rejected(name: &str, text: &str, code: i32) -> String {
    let dir = scratch(name);
    let path = write(&dir, "scenario.yaml", text);
    rejected_path(&path, &[], code)
}

fn rejected_path(path: &Path, extra: &[&str], code: i32) -> String {
    let mut args = vec!["validate", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = pipegnn(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(line.starts_with("error: "), "{line}");
        assert!(
            line.contains("scenario.yaml") || line.contains(".yaml"),
            "names the file: {line}"
        );
    }
    err
}

fn assert_one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn missing_file() {
    let out = pipegnn(&["validate", "scenarios/does-not-exist.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(IO));
    assert_one_line(&err);
    assert!(
        err.contains("scenarios/does-not-exist.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error() {
    let err = rejected(
        "syntax",
        "name: x\ndevices:\n  - {name: gpu, count: 2\nlinks: {}\n",
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(err.contains("scenario.yaml:4:"), "line of the error: {err}");
}

#[test]
fn unknown_field() {
    let text = explicit().replace("  per: batch", "  per: batch\n  colour: red");
    let err = rejected("unknown-field", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(":15:3: workload.colour: unknown field `colour`"),
        "{err}"
    );
}

#[test]
fn unknown_unit() {
    let text = explicit().replacen("forward: 24ms", "forward: 24parsecs", 1);
    let err = rejected("unknown-unit", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("workload.stages[0].forward: unknown unit `parsecs`"),
        "{err}"
    );
    assert!(err.contains(":17:"), "{err}");
}

#[test]
fn zero_and_negative_bandwidth() {
    for (bandwidth, what) in [
        ("0GB/s", "must be positive"),
        ("-5GB/s", "must be positive"),
    ] {
        let text = explicit().replace(
            "preset: nvlink3}",
            &format!("preset: nvlink3, bandwidth: {bandwidth}}}"),
        );
        let err = rejected("bandwidth", &text, INVALID_INPUT);
        assert_one_line(&err);
        assert!(err.contains("links.topology.bandwidth"), "{err}");
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn zero_chunks() {
    let err = rejected(
        "zero-chunks",
        &explicit().replace("chunks: 8", "chunks: 0"),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(err.contains("schedule.chunks: must be between 1"), "{err}");
}

#[test]
fn more_stages_than_devices() {
    let err = rejected(
        "stages",
        &explicit().replace("count: 4", "count: 3"),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("workload.stages: 4 stages need 4 devices but the scenario has 3"),
        "{err}"
    );
}

#[test]
fn link_naming_an_unknown_device() {
    let text = explicit().replace(
        "  topology: {kind: ring, preset: nvlink3}",
        "  pairs:\n    - {between: [gpu0, gpu9], preset: nvlink3}",
    );
    let err = rejected("unknown-device", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("links.pairs[0].between[1]: unknown device `gpu9`"),
        "{err}"
    );
}

#[test]
fn unreachable_pair_of_devices() {
    let text = explicit().replace(
        "  topology: {kind: ring, preset: nvlink3}",
        "  pairs:\n    - {between: [gpu0, gpu1], preset: nvlink3}\n    - {between: [gpu2, gpu3], preset: nvlink3}",
    );
    let err = rejected("unreachable", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(err.contains("links: no route from gpu0 to gpu2"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = explicit()
        .replace("chunks: 8", "chunks: -2")
        .replacen("backward: 48ms", "backward: 48", 1)
        .replace("preset: a100-40gb", "preset: a100-400gb");
    let err = rejected("many", &text, INVALID_INPUT);
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn bad_overrides() {
    let path = root().join("scenarios/explicit-pipeline.yaml");
    let err = rejected_path(&path, &["--set", "schedule.chunks"], INVALID_INPUT);
    assert!(err.contains("expected key=value"), "{err}");
    let err = rejected_path(&path, &["--set", "devices.7.count=2"], INVALID_INPUT);
    assert!(err.contains("index 7 is out of range"), "{err}");
    let err = rejected_path(&path, &["--set", "schedule.chunkz=2"], INVALID_INPUT);
    assert!(
        err.contains("(--set schedule.chunkz=2): schedule.chunkz: unknown field"),
        "{err}"
    );
    let err = rejected_path(
        &path,
        &["--set", "links.topology.latency=fast"],
        INVALID_INPUT,
    );
    assert!(
        err.contains("links.topology.latency: `fast` is not a number"),
        "{err}"
    );
}

#[test]
fn deadlocking_custom_schedule_is_rejected() {
    let out = pipegnn(&["schedule", "--file", "tests/fixtures/deadlock-s2-k2.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(SCHEDULE_REJECTED), "{err}");
    assert_one_line(&err);
    assert!(err.contains("schedule deadlocks: "), "{err}");
    assert!(err.contains("F(1,1) on device 1 waits for F(1,0)"), "{err}");

    // The same file referenced from a scenario.
    let dir = scratch("deadlock-scenario");
    let fixture = root().join("tests/fixtures/deadlock-s2-k2.yaml");
    let text = std::fs::read_to_string(root().join("scenarios/custom-schedule.yaml"))
        .unwrap()
        .replace(
            "../schedules/eager-1f1b-s2-k4.yaml",
            fixture.to_str().unwrap(),
        )
        .replace("chunks: 4", "chunks: 2");
    let path = write(&dir, "scenario.yaml", &text);
    let err = rejected_path(&path, &[], SCHEDULE_REJECTED);
    assert!(err.contains("schedule deadlocks"), "{err}");
}

#[test]
fn scenario_that_does_not_fit_in_memory() {
    let text = explicit().replace("preset: a100-40gb}", "preset: a100-40gb, memory: 7GiB}");
    let dir = scratch("does-not-fit");
    let path = write(&dir, "scenario.yaml", &text);
    let err = rejected_path(&path, &[], DOES_NOT_FIT);
    assert_one_line(&err);
    assert!(
        err.contains("scenario.yaml:9:54: devices[0].memory: gpu0 needs 7.25GiB at its peak under 1f1b but has 7.00GiB"),
        "{err}"
    );
    // simulate still prints the prediction that says so.
    let out = pipegnn(&["simulate", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(DOES_NOT_FIT));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["results"][0]["fits"], false);
    assert_eq!(doc["results"][0]["devices"][0]["fits"], false);
    assert_eq!(doc["results"][0]["devices"][3]["fits"], true);
}

#[test]
fn absurd_schedule_shapes_are_refused() {
    let out = pipegnn(&[
        "schedule", "--kind", "gpipe", "--stages", "256", "--chunks", "1048576",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(SCHEDULE_REJECTED), "{err}");
    assert_one_line(&err);
    assert!(err.contains("stage-chunk pairs"), "{err}");
    usage_error(
        &[
            "schedule", "--kind", "gpipe", "--stages", "0", "--chunks", "4",
        ],
        "--stages",
    );
}

fn gnn_scenario(graph: &str, layers: &str, chunks: u32) -> String {
    format!(
        "name: bad\ngraph:\n{graph}\nmodel:\n  layers: {layers}\ndevices:\n  - {{name: gpu, count: 2, preset: a100-40gb}}\nlinks:\n  topology: {{kind: full, preset: nvlink3}}\nschedule: {{kind: gnnpipe, chunks: {chunks}}}\n"
    )
}

const SBM: &str =
    "  synthetic: {kind: sbm, nodes: 10, avg_degree: 2, classes: 2, features: 8, seed: 1}";

#[test]
fn dataset_with_a_malformed_line_or_an_out_of_range_edge() {
    let Some(data) = crate::gnn::data_dir() else {
        return;
    };
    for (name, bad_line, expected) in [
        ("malformed", "0,six", "edges.csv:3:"),
        ("out-of-range", "0,99999", "99999"),
    ] {
        let dir = scratch(name);
        let folder = dir.join("cora");
        std::fs::create_dir_all(&folder).unwrap();
        for entry in std::fs::read_dir(data.join("cora")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        let edges = std::fs::read_to_string(folder.join("edges.csv")).unwrap();
        let mut lines: Vec<&str> = edges.lines().collect();
        lines[2] = bad_line;
        std::fs::write(folder.join("edges.csv"), lines.join("\n") + "\n").unwrap();
        let text = gnn_scenario(
            &format!("  dataset: {{path: {}}}", folder.display()),
            "[{kind: gcn, out: 16}, {kind: gcn, out: 7}]",
            4,
        );
        let err = rejected(&format!("{name}-scenario"), &text, INVALID_INPUT);
        assert_one_line(&err);
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn missing_dataset_folder() {
    let text = gnn_scenario(
        "  dataset: {path: no/such/folder}",
        "[{kind: gcn, out: 2}]",
        2,
    );
    let err = rejected("no-dataset", &text, IO);
    assert_one_line(&err);
    assert!(err.contains("graph.dataset.path: "), "{err}");
    assert!(err.contains("is not a dataset folder"), "{err}");
}

#[test]
fn layer_with_zero_width() {
    let err = rejected(
        "zero-width",
        &gnn_scenario(SBM, "[{kind: gcn, out: 0}, {kind: gcn, out: 2}]", 2),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(err.contains(":5:"), "{err}");
    assert!(
        err.contains("model.layers[0].out: a layer's width must be at least 1, got 0"),
        "{err}"
    );
}

#[test]
fn gat_layer_without_heads() {
    let err = rejected(
        "gat-heads",
        &gnn_scenario(
            SBM,
            "[{kind: gat, out: 8}, {kind: gat, out: 2, heads: 1}]",
            2,
        ),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("model.layers[0]: a gat layer needs `heads`"),
        "{err}"
    );
}

#[test]
fn more_chunks_than_vertices() {
    let err = rejected(
        "chunks",
        &gnn_scenario(SBM, "[{kind: gcn, out: 4}, {kind: gcn, out: 2}]", 20),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("schedule.chunks: 20 chunks for a graph of 10 vertices"),
        "{err}"
    );
}

#[test]
fn last_layer_must_output_the_classes() {
    let err = rejected(
        "classes",
        &gnn_scenario(SBM, "[{kind: gcn, out: 4}, {kind: gcn, out: 3}]", 2),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(err.contains("model.layers[1].out: the last layer outputs 3 values per vertex but the graph has 2 classes"), "{err}");
}

#[test]
fn locality_chunking_of_a_stats_graph_needs_a_cut_fraction() {
    let text = gnn_scenario(
        "  stats: {nodes: 1000, edges: 5000, features: 16, classes: 4}",
        "[{kind: gcn, out: 4}]",
        4,
    )
    .replace("chunks: 4}", "chunks: 4, chunking: locality}");
    let err = rejected("cut-fraction", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("graph.stats: a stats graph needs `cut_fraction`"),
        "{err}"
    );
}

#[test]
fn stage_split_with_graph_parallelism() {
    let path = root().join("scenarios/quickstart.yaml");
    let err = rejected_path(
        &path,
        &[
            "--set",
            "schedule.kind=graph_parallel",
            "--set",
            "schedule.stages=[2,2]",
        ],
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("schedule.stages: only applies to pipelines"),
        "{err}"
    );
}

#[test]
fn executor_and_model_fields_are_checked() {
    let base = std::fs::read_to_string(root().join("scenarios/quickstart.yaml")).unwrap();
    let err = rejected(
        "backend",
        &format!("{base}\nexecutor: {{backend: tpu}}\n"),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("executor.backend: unknown backend `tpu` (expected cpu or cuda)"),
        "{err}"
    );
    let err = rejected(
        "executor-field",
        &format!("{base}\nexecutor: {{emulate: true}}\n"),
        INVALID_INPUT,
    );
    assert!(err.contains("emulate"), "{err}");
    let err = rejected(
        "activation",
        &base.replace("dtype: f32", "dtype: f32\n  activation: tanh"),
        INVALID_INPUT,
    );
    assert!(
        err.contains("model.activation: unknown activation `tanh`"),
        "{err}"
    );
    let err = rejected(
        "attention-dropout",
        &base.replace(
            "{optimizer: adam}",
            "{optimizer: adam, attention_dropout: 1.5}",
        ),
        INVALID_INPUT,
    );
    assert!(
        err.contains("training.attention_dropout: must be in [0, 1), got 1.5"),
        "{err}"
    );
}

/// `scenarios/cora-gpipe-drop.yaml` with a seeded synthetic graph of Cora's shape in place of
/// the dataset, in a scratch folder: its schedule and model fields, without `../shared`.
fn cora_scenario_without_data(name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("scenarios/cora-gpipe-drop.yaml")).unwrap();
    let graph =
        "synthetic: {kind: sbm, nodes: 2708, avg_degree: 4, classes: 7, features: 1433, seed: 1}";
    assert!(text.contains("dataset: {path: ../../shared/data/cora}"));
    let text = text.replace("dataset: {path: ../../shared/data/cora}", graph);
    write(&scratch(name), "scenario.yaml", &text)
}

#[test]
fn graph_parallelism_refuses_a_halo_rule() {
    let path = cora_scenario_without_data("gp-halo");
    let err = rejected_path(
        &path,
        &["--set", "schedule.kind=graph_parallel"],
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("schedule.halo: graph parallelism exchanges neighbour rows at every layer"),
        "{err}"
    );
}

#[test]
fn a_bad_layer_does_not_make_gnn_fields_look_misplaced() {
    // cora-gpipe-drop.yaml sets `schedule.halo`, which only GNN workloads take: a bad layer
    // must be the one error, not also "halo only applies to GNN workloads".
    let path = cora_scenario_without_data("bad-layer");
    let err = rejected_path(&path, &["--set", "model.layers.0.out=0"], INVALID_INPUT);
    assert_one_line(&err);
    assert!(err.contains("model.layers[0].out"), "{err}");
}

/// Runs `args` and returns stderr after checking that the command line was refused (exit 2)
/// with an `error:` first line naming `flag`, without a panic.
fn usage_error(args: &[&str], flag: &str) -> String {
    let out = pipegnn(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(flag),
        "{args:?}: {err}"
    );
    err
}

/// Issue 12: `run --epochs 0` panicked (index out of bounds); counts that would run nothing, or
/// more epochs than a scenario may ask for, are refused as usage errors.
#[test]
fn zero_and_out_of_range_counts_on_the_command_line() {
    let q = "scenarios/quickstart.yaml";
    for (args, flag) in [
        (vec!["run", q, "--epochs", "0"], "--epochs"),
        (vec!["run", q, "--epochs", "2000000"], "--epochs"),
        (
            vec!["calibrate", "--out", "x.json", "--threads", "0"],
            "--threads",
        ),
        (
            vec!["calibrate", "--out", "x.json", "--threads", "5000"],
            "--threads",
        ),
        (vec!["fidelity", "--epochs", "1"], "--epochs"),
        (vec!["fidelity", "--rounds", "0"], "--rounds"),
        (
            vec!["calibrate", "--out", "x.json", "--passes", "0"],
            "--passes",
        ),
        (
            vec!["calibrate", "--out", "x.json", "--passes", "11"],
            "--passes",
        ),
        (vec!["fidelity", "--seconds=-1"], "--seconds"),
        (vec!["fidelity", "--seconds", "NaN"], "--seconds"),
        (vec!["fidelity", "--seconds", "61"], "--seconds"),
        (vec!["compare", q, "--epochs", "0"], "--epochs"),
        (vec!["compare", q, "--epochs", "1"], "--epochs"),
        (vec!["compare", q, "--epochs", "500000"], "--epochs"),
        (vec!["bench", "--stages", "0"], "--stages"),
        (vec!["bench", "--chunks", "0"], "--chunks"),
        (vec!["bench", "--repeat", "0"], "--repeat"),
        (vec!["plan", q, "--max-devices", "0"], "--max-devices"),
    ] {
        usage_error(&args, flag);
    }
    let err = usage_error(&["run", q, "--epochs", "2000000"], "--epochs");
    assert!(err.contains("1..=1000000"), "states the limit: {err}");
}

/// Issue 12: a stage split whose sum overflows panicked with a capacity overflow.
#[test]
fn stage_split_that_overflows_is_refused() {
    let dir = scratch("stage-overflow");
    let text = gnn_scenario(SBM, "[{kind: gcn, out: 4}, {kind: gcn, out: 2}]", 2)
        .replace("kind: gnnpipe", "kind: gpipe");
    let path = write(&dir, "scenario.yaml", &text);
    let err = rejected_path(
        &path,
        &["--set", "schedule.stages=[18446744073709551615, 5]"],
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains(
            "schedule.stages: a stage cannot hold 18446744073709551615 layers: the model has 2"
        ),
        "{err}"
    );
}

/// Issue 12: an `avg_degree` no simple graph of that size has was silently clamped.
#[test]
fn average_degree_beyond_the_graph_is_refused() {
    let graph = SBM.replace("avg_degree: 2", "avg_degree: 12");
    let text = gnn_scenario(&graph, "[{kind: gcn, out: 2}]", 2);
    let err = rejected("avg-degree", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(":3:") && err.contains("graph.synthetic.avg_degree: must be at most 9"),
        "{err}"
    );
    let rmat = "  synthetic: {kind: rmat, nodes: 10, edges: 46, classes: 2, features: 8, seed: 1}";
    let err = rejected(
        "rmat-edges",
        &gnn_scenario(rmat, "[{kind: gcn, out: 2}]", 2),
        INVALID_INPUT,
    );
    assert!(
        err.contains("graph.synthetic.edges: must be at most 45"),
        "{err}"
    );
}

/// Issue 12: a graph whose training split is empty trained on nothing and reported loss 0.
#[test]
fn an_empty_training_split_is_refused() {
    // 10% of 9 vertices is none.
    let graph = SBM.replace("nodes: 10", "nodes: 9");
    let text = gnn_scenario(&graph, "[{kind: gcn, out: 2}]", 1);
    let path = write(&scratch("empty-train"), "scenario.yaml", &text);
    let out = pipegnn(&["run", path.to_str().unwrap(), "--epochs", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("scenario.yaml:3:")
            && err.contains("graph.synthetic: the training split is empty (9 vertices)"),
        "{err}"
    );
}

/// Issue 12: a scenario that is not UTF-8 is invalid input (it was exit 3), located at its first
/// bad byte.
#[test]
fn a_scenario_that_is_not_utf8() {
    let dir = scratch("not-utf8");
    let path = dir.join("scenario.yaml");
    std::fs::write(&path, b"name: x\ndescription: caf\xe9\n").unwrap();
    let err = rejected_path(&path, &[], INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("scenario.yaml:2:17: not UTF-8 text (byte 0xe9)"),
        "{err}"
    );
}

/// Issue 12: an empty file and a file of two YAML documents had no line and column.
#[test]
fn empty_and_multi_document_files_are_located() {
    let err = rejected("empty", "", INVALID_INPUT);
    assert_one_line(&err);
    assert!(err.contains("scenario.yaml:1:1: no scenario"), "{err}");
    let err = rejected("comments-only", "# nothing here\n", INVALID_INPUT);
    assert!(err.contains("scenario.yaml:1:1: no scenario"), "{err}");

    let text = explicit();
    let second = text.lines().count() + 1;
    let err = rejected(
        "two-documents",
        &format!("{text}---\nname: again\n"),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains(&format!("scenario.yaml:{second}:1: "))
            && err.contains("more than one document"),
        "{err}"
    );

    let dir = scratch("two-document-schedule");
    let schedule = write(
        &dir,
        "schedule.yaml",
        "stages: 1\nchunks: 1\norders: {0: [[F,0,0],[B,0,0]]}\n---\nstages: 2\n",
    );
    let out = pipegnn(&["schedule", "--file", schedule.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("schedule.yaml:4:1: "), "{err}");
}

/// Issue 12: a dataset file that cannot be read said "cannot read: cannot read:" and exited 4;
/// it is exit 3, said once.
#[test]
fn an_unreadable_dataset_file() {
    let dir = scratch("unreadable-dataset");
    let folder = dir.join("data");
    // A folder where a file belongs cannot be read, whoever runs the test.
    std::fs::create_dir_all(folder.join("meta.json")).unwrap();
    let text = gnn_scenario(
        &format!("  dataset: {{path: {}}}", folder.display()),
        "[{kind: gcn, out: 2}]",
        2,
    );
    let err = rejected("unreadable-dataset-scenario", &text, IO);
    assert_one_line(&err);
    assert_eq!(err.matches("cannot read").count(), 1, "{err}");
    assert!(err.contains("meta.json: cannot read: "), "{err}");
}

/// Issue 12: exponents with a sign were rejected.
#[test]
fn quantities_with_signed_exponents() {
    let out = pipegnn(&[
        "validate",
        "scenarios/explicit-pipeline.yaml",
        "--set",
        "links.topology.bandwidth=1e+2GB/s",
        "--set",
        "links.topology.latency=1e-6s",
        "--set",
        "workload.stages.0.forward=2.4e-2s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 12: arithmetic that wrapped or saturated into a wrong answer with exit 0 (a width of
/// 2^58 giving peak memory 0 B, a bandwidth of 1e-6 B/s giving a faster epoch, a compute rate
/// of 1e-30 GFLOP/s giving an epoch of 2^64 ns). The inputs are bounded, each with its limit,
/// and what the bounds let through is refused where it is counted.
#[test]
fn quantities_past_what_the_model_counts_are_refused() {
    let refused = |path: &str, sets: &[&str], expected: &str| {
        let mut extra = Vec::new();
        for set in sets {
            extra.extend(["--set", *set]);
        }
        let mut args = vec!["simulate", path];
        args.extend(&extra);
        let out = pipegnn(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(INVALID_INPUT), "{sets:?}: {err}");
        assert_one_line(&err);
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{sets:?}: {err}"
        );
    };
    let quickstart = "scenarios/quickstart.yaml";
    let explicit = "scenarios/explicit-pipeline.yaml";
    refused(
        quickstart,
        &["model.layers.0.out=288230376151711744"],
        "model.layers[0].out: a layer's width must be at most 1048576 (2^20)",
    );
    refused(
        explicit,
        &["links.topology.bandwidth=0.000001B/s"],
        "links.topology.bandwidth: `0.000001B/s` must be at least 1B/s",
    );
    refused(
        quickstart,
        &["devices.0.peak_flops=1e-30GFLOP/s"],
        "devices[0].peak_flops: `1e-30GFLOP/s` must be at least 1FLOP/s",
    );
    // Within every bound, but together too long or too large to count.
    refused(
        explicit,
        &[
            "workload.stages.0.forward=4000000000s",
            "workload.per=chunk",
        ],
        "the predicted epoch is longer than 4611686018427387904 ns (2^62, 146 years)",
    );
    refused(
        explicit,
        &["workload.stages.0.stash=1000000TB", "workload.per=chunk"],
        "workload.stages: the stages' parameters, optimizer state, stash and activations over 8 chunks may reach 8.000e18 bytes, beyond the 1.153e18 (2^60)",
    );
    refused(
        "scenarios/papers100m-planning.yaml",
        &[
            "model.layers.0.kind=gat",
            "model.layers.0.heads=1024",
            "model.layers.0.out=1048576",
        ],
        "model.layers: the model is too large to count on this graph",
    );
    let out = pipegnn(&[
        "schedule",
        "--kind",
        "gpipe",
        "--stages",
        "4",
        "--chunks",
        "64",
        "--simulate",
        "--forward",
        "4000000000s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("longer than 2^62 ns"), "{err}");
}

/// Runs `schedule --file` on `text` and returns stderr after checking for exit 4 and one
/// `error:` line naming the file.
fn schedule_file_rejected(name: &str, text: &str) -> String {
    let path = write(&scratch(name), "schedule.yaml", text);
    let out = pipegnn(&["schedule", "--file", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert_one_line(&err);
    assert!(
        err.starts_with("error: ") && err.contains("schedule.yaml"),
        "{err}"
    );
    err
}

/// Issue 12: 20,000 nested `- ` or 100,000 nested brackets took gigabytes and tens of seconds
/// before serde's recursion limit refused them: the field locator indexed the whole document
/// first. Nesting past 32 levels is refused where it passes the limit, before either YAML
/// parser reads further.
#[test]
fn nesting_past_the_limit_is_refused_where_it_passes_it() {
    let limit = "nested deeper than 32 levels of mappings and sequences";
    // Block sequences on one line: the 33rd `- ` is at column 65.
    let err = rejected("dashes", &"- ".repeat(20_000), INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(&format!("scenario.yaml:1:65: [0]: {limit}")),
        "{err}"
    );
    // One more level a line.
    let lines: String = (0..2_000)
        .map(|i| format!("{}- \n", "  ".repeat(i)))
        .collect();
    let err = rejected("indented-dashes", &lines, INVALID_INPUT);
    assert!(
        err.contains(&format!("scenario.yaml:33:65: [0]: {limit}")),
        "{err}"
    );
    // Flow brackets, unclosed, under a field: the 33rd opens at column 8 + 31.
    let text = format!("name: x\ngraph: {}\n", "[".repeat(100_000));
    let err = rejected("brackets", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(&format!("scenario.yaml:2:39: graph: {limit}")),
        "{err}"
    );
    let text = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let err = rejected("balanced-brackets", &text, INVALID_INPUT);
    assert!(
        err.contains(&format!("scenario.yaml:1:33: [0]: {limit}")),
        "{err}"
    );
    // Brackets in comments, quotes, block scalars and plain scalars are text.
    let brackets = "[".repeat(100);
    let original =
        "description: four-stage pipeline on four A100s, per-batch costs split over the chunks";
    for (i, (name, description)) in [
        (
            format!("a{brackets}"),
            format!("description: |\n  {brackets}\n  {brackets}"),
        ),
        (
            format!("'{brackets}' # {brackets}"),
            format!("description: \"\\\" {brackets}\""),
        ),
    ]
    .iter()
    .enumerate()
    {
        let text = explicit()
            .replace("name: explicit-pipeline", &format!("name: {name}"))
            .replace(original, description);
        assert!(text.contains(&brackets));
        let path = write(
            &scratch(&format!("brackets-in-text-{i}")),
            "scenario.yaml",
            &text,
        );
        let out = pipegnn(&["validate", path.to_str().unwrap()]);
        assert!(out.status.success(), "{text}\n{}", stderr(&out));
    }
    // A schedule file too.
    let text = format!("stages: 1\nchunks: 1\norders: {}\n", "{0: ".repeat(50_000));
    let err = schedule_file_rejected("deep-schedule", &text);
    assert!(
        err.contains(&format!("schedule.yaml:3:133: orders: {limit}")),
        "{err}"
    );
}

/// Issue 12: a scenario or schedule file is refused past 4 MiB, before it is read whole.
#[test]
fn files_past_the_size_limit_are_refused() {
    let dir = scratch("too-large");
    let line = format!("# {}\n", "x".repeat(1021));
    let path = write(&dir, "scenario.yaml", &line.repeat(5 * 1024));
    let err = rejected_path(&path, &[], INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("scenario.yaml: the file is larger than 4 MiB (4194304 bytes), the most a scenario or schedule file may hold"),
        "{err}"
    );
    let out = pipegnn(&["schedule", "--file", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("larger than 4 MiB"), "{err}");
}

/// Issue 12: 2,000 devices took 21 GB and two minutes (a route is stored per device pair), and
/// `plan --max-devices 100000` did not finish: a scenario has at most 256 devices, and every
/// count that makes devices says so.
#[test]
fn device_counts_past_the_network_limit_are_refused() {
    let path = root().join("scenarios/quickstart.yaml");
    let err = rejected_path(&path, &["--set", "devices.0.count=2000"], INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("devices[0].count: must be between 1 and 256, got 2000"),
        "{err}"
    );
    let text = explicit().replace(
        "  - {name: gpu, count: 4, preset: a100-40gb}",
        "  - {name: gpu, count: 200, preset: a100-40gb}\n  - {name: cpu, count: 100, preset: cpu-core}",
    );
    assert_ne!(text, explicit());
    let err = rejected("devices-total", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(":10:")
            && err.contains("devices[1].count: brings the scenario to 300 devices, more than the 256 a network of stored routes holds (a `cluster` topology holds more)"),
        "{err}"
    );
    let q = "scenarios/quickstart.yaml";
    for (args, flag) in [
        (vec!["plan", q, "--max-devices", "100000"], "--max-devices"),
        (vec!["bench", "--stages", "300"], "--stages"),
    ] {
        let err = usage_error(&args, flag);
        assert!(err.contains("1..=256"), "states the limit: {err}");
    }
    // `schedule --stages` counts stages (up to 4,096); their devices are bounded.
    let out = pipegnn(&[
        "schedule", "--kind", "1f1b", "--stages", "2000", "--chunks", "4",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("--stages: 2000 stages at 1 per device need 2000 devices")
            && err.contains("1..=256"),
        "{err}"
    );
    // A schedule file's devices are bounded the same way.
    let err = schedule_file_rejected(
        "schedule-devices",
        "stages: 1\nchunks: 1\norders: {300: [[F,0,0],[B,0,0]]}\n",
    );
    assert!(
        err.contains(
            "schedule.yaml:3:15: orders.300: device 300 is past the 256 devices a network holds"
        ),
        "{err}"
    );
}

/// Issue 12: schedule files with `stages: 2147483647` or `chunks: 4294967295` took 12-15 GB:
/// stages, chunks and their product are bounded before anything is allocated, in files, in
/// scenarios and on the command line.
#[test]
fn schedule_shapes_past_the_limits_are_refused() {
    let ops = "orders: {0: [[F,0,0],[B,0,0]]}\n";
    let err = schedule_file_rejected(
        "file-stages",
        &format!("stages: 2147483647\nchunks: 1\n{ops}"),
    );
    assert!(
        err.contains("schedule.yaml:1:9: stages: must be between 1 and 4096, got 2147483647"),
        "{err}"
    );
    let err = schedule_file_rejected(
        "file-chunks",
        &format!("stages: 1\nchunks: 4294967295\n{ops}"),
    );
    assert!(
        err.contains("schedule.yaml:2:9: chunks: must be between 1 and 1048576, got 4294967295"),
        "{err}"
    );
    let err = schedule_file_rejected(
        "file-pairs",
        &format!("stages: 4096\nchunks: 1048576\n{ops}"),
    );
    assert!(
        err.contains("chunks: 4096 stages x 1048576 chunks is more than 4194304 stage-chunk pairs"),
        "{err}"
    );

    // A scenario: 8 stages of 2^20 chunks each.
    let text = gnn_scenario(
        "  stats: {nodes: 100000000, edges: 1000000000, features: 16, classes: 4}",
        "[{kind: gcn, out: 8}]",
        1_048_576,
    )
    .replace(
        "  layers: [{kind: gcn, out: 8}]",
        "  {kind: gcn, depth: 8, hidden: 16}",
    )
    .replace("model:\n  {", "model: {")
    .replace("count: 2", "count: 8")
    .replace("kind: gnnpipe", "kind: gpipe");
    let err = rejected("scenario-pairs", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("schedule.chunks: 1048576 chunks on 8 stages is more than the 4194304 stage-chunk pairs a schedule may have"),
        "{err}"
    );
    let err = rejected(
        "scenario-chunks",
        &gnn_scenario(SBM, "[{kind: gcn, out: 2}]", 1 << 21),
        INVALID_INPUT,
    );
    assert!(
        err.contains("schedule.chunks: must be between 1 and 1048576, got 2097152"),
        "{err}"
    );

    // The command line.
    let err = usage_error(
        &[
            "schedule",
            "--kind",
            "gpipe",
            "--stages",
            "4",
            "--chunks",
            "4294967295",
        ],
        "--chunks",
    );
    assert!(err.contains("1..=1048576"), "{err}");
    usage_error(&["bench", "--chunks", "2000000"], "--chunks");
}

/// Issue 12: `threads_per_device: 4096` was accepted; like `calibrate --threads` it is 1 to
/// 1,024.
#[test]
fn threads_per_device_past_its_limit_is_refused() {
    let path = root().join("scenarios/quickstart.yaml");
    let err = rejected_path(
        &path,
        &["--set", "executor.threads_per_device=4096"],
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("executor.threads_per_device: threads must be between 1 and 1024, got 4096"),
        "{err}"
    );
}

/// A model is at most 4,096 layers (a schedule's stages), as the shorthand's `depth` was.
#[test]
fn a_model_past_its_layer_limit_is_refused() {
    let layers = format!("[{}]", vec!["{kind: gcn, out: 2}"; 5000].join(", "));
    let err = rejected("layers", &gnn_scenario(SBM, &layers, 2), INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains("model.layers: a model has at most 4096 layers, got 5000"),
        "{err}"
    );
}

/// Issue 12: synthetic graphs of 10^9 vertices or 2^36 edges aborted on allocation: they are
/// generated in memory, so vertices, edges and feature non-zeros are bounded, each with its
/// limit and a pointer to `stats`.
#[test]
fn synthetic_graphs_past_the_memory_limits_are_refused() {
    let stats = "give larger graphs as `stats`";
    for (graph, expected) in [
        (
            "kind: sbm, nodes: 1000000000, avg_degree: 4, features: 8",
            "graph.synthetic.nodes: nodes must be at most 33554432 (2^25), got 1000000000",
        ),
        (
            "kind: sbm, nodes: 33554432, avg_degree: 8, features: 8",
            "graph.synthetic.avg_degree: 33554432 vertices at average degree 8 draw 134217728 edges, more than 67108864 (2^26)",
        ),
        (
            "kind: rmat, nodes: 1000000, edges: 68719476736, features: 8",
            "graph.synthetic.edges: edges must be at most 67108864 (2^26), got 68719476736",
        ),
        (
            "kind: sbm, nodes: 1048576, avg_degree: 2, features: 1024, feature_density: 0.5",
            "graph.synthetic.feature_density: 1048576 vertices with 512 feature ids each make 536870912 feature non-zeros, more than 134217728 (2^27)",
        ),
    ] {
        let graph = format!("  synthetic: {{{graph}, classes: 2, seed: 1}}");
        let err = rejected(
            "synthetic-limits",
            &gnn_scenario(&graph, "[{kind: gcn, out: 2}]", 2),
            INVALID_INPUT,
        );
        assert_one_line(&err);
        assert!(
            err.contains(":3:") && err.contains(expected) && err.contains(stats),
            "{err}"
        );
    }
    // The degree a graph allows is checked before its edge count.
    let err = rejected(
        "degree-on-100",
        &gnn_scenario(
            &SBM.replace("nodes: 10, avg_degree: 2", "nodes: 100, avg_degree: 400000"),
            "[{kind: gcn, out: 2}]",
            2,
        ),
        INVALID_INPUT,
    );
    assert_one_line(&err);
    assert!(
        err.contains("graph.synthetic.avg_degree: must be at most 99"),
        "{err}"
    );
}

/// Issue 12, item 6: errors found once the graph is known printed the file twice
/// (`scenario.yaml: scenario.yaml:10:35: ...`), in every command that reports them.
#[test]
fn errors_that_need_the_graph_name_the_file_once() {
    let text = gnn_scenario(SBM, "[{kind: gcn, out: 4}, {kind: gcn, out: 2}]", 20);
    let path = write(&scratch("file-once"), "scenario.yaml", &text);
    let file = path.to_str().unwrap();
    let located = "scenario.yaml:10:35: schedule.chunks: 20 chunks for a graph of 10 vertices";
    for command in ["validate", "simulate", "run"] {
        let out = pipegnn(&[command, file]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(INVALID_INPUT), "{command}: {err}");
        assert_one_line(&err);
        assert_eq!(err.matches("scenario.yaml").count(), 1, "{command}: {err}");
        assert!(err.contains(located), "{command}: {err}");
    }
    let out = pipegnn(&["sweep", file, "--set", "schedule.chunks=20,30"]);
    let csv = crate::support::stdout(&out);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for row in rows {
        assert_eq!(row.matches("scenario.yaml").count(), 1, "{row}");
    }
}

/// Issue 12 item 8, found by `cargo fuzz run schedule_file` (minimized input inline): a quoted
/// key holding a line break was quoted as is, and the error took three lines. Line breaks in
/// what a problem quotes are escaped, in schedule files and scenarios alike.
#[test]
fn a_key_with_a_line_break_stays_on_one_line() {
    let dir = scratch("line-break-key");
    let schedule = write(&dir, "schedule.yaml", "{\"\n\n\"");
    let out = pipegnn(&["schedule", "--file", schedule.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("schedule.yaml:1:2: unknown field `\\n`, expected one of `kind`"),
        "{err}"
    );

    // `\n` in a double-quoted YAML string is a line break.
    let text = explicit().replace("  per: batch", "  per: batch\n  \"colour\\n\": red");
    let err = rejected("line-break-key-scenario", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(":15:3: workload.colour\\n: unknown field `colour\\n`"),
        "{err}"
    );
}

/// Issue 12 item 8, found by replaying the `scenario` fuzz corpus (inputs minimized by hand):
/// YAML that serde_yaml reads but the locator's parser (yaml-rust2) does not gave problems no
/// line (a tab after `:`, which yaml-rust2 refuses) or the wrong one (a comment glued to a
/// block scalar's `|` cut the index short, and `colour` was placed at line 1).
#[test]
fn yaml_the_locator_cannot_read_is_located_or_refused() {
    let err = rejected("tab-after-colon", "name:\tx\ncolour: red\n", INVALID_INPUT);
    assert!(
        err.contains("scenario.yaml:2:1: colour: unknown field `colour`"),
        "{err}"
    );

    let text = "name: x\ndescription: |#c\n  t\ncolour: red\n";
    let err = rejected("comment-after-bar", text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(
            "scenario.yaml:2:15: comments must be separated from other tokens by whitespace"
        ),
        "{err}"
    );

    let dir = scratch("glued-comment-schedule");
    let schedule = write(
        &dir,
        "schedule.yaml",
        "stages: 1\nchunks: 1\norders: {0: [[F,0,0],[B,0,0]]}# note\n",
    );
    let out = pipegnn(&["schedule", "--file", schedule.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("schedule.yaml:3:31: comments must be separated"),
        "{err}"
    );
}

/// Issue 12 item 8, found while checking the fuzz targets' rule that every problem is placed: a
/// `<<` merge key whose value cannot be merged gave neither line nor field.
#[test]
fn an_unmergeable_merge_key_is_located() {
    let text = explicit().replace(
        "training: {optimizer: adam}",
        "training: {optimizer: adam, <<: [{seed: 1}, 3]}",
    );
    let err = rejected("bad-merge", &text, INVALID_INPUT);
    assert_one_line(&err);
    assert!(
        err.contains(":20:29: training.<<: expected a mapping for merging, but found scalar"),
        "{err}"
    );
}

#[test]
fn stages_per_device_is_checked_against_the_kind_the_layers_and_the_devices() {
    let path = root().join("scenarios/zero-bubble.yaml");
    for (sets, expected) in [
        (
            vec!["schedule.kind=1f1b"],
            "schedule.stages_per_device: only applies to `kind: interleaved_1f1b`, `kind: looped_bfs`, `kind: interleaved_zb`",
        ),
        (
            vec!["schedule.stages_per_device=0"],
            "schedule.stages_per_device: must be between 1 and 64, got 0",
        ),
        (
            vec!["schedule.stages_per_device=16"],
            "schedule.stages_per_device: 16 stages per device need at least 16 layers, the model has 8",
        ),
        (
            vec!["schedule.stages=[2,2,2,1,1]"],
            "schedule.stages: 5 stages do not fill devices at 2 stages per device",
        ),
        (
            vec!["schedule.stages=[1,1,1,1,1,1,1,1]"],
            "schedule.stages: 8 stages at 2 per device need 4 devices but the scenario has 2",
        ),
        (
            vec!["schedule.kind=pipedream"],
            "schedule.kind: unknown schedule kind `pipedream` (expected gpipe, 1f1b, interleaved_1f1b, looped_bfs, interleaved_zb, zbv, dualpipev, gnnpipe, graph_parallel)",
        ),
    ] {
        let mut extra = Vec::new();
        for set in &sets {
            extra.extend(["--set", set]);
        }
        let err = rejected_path(&path, &extra, INVALID_INPUT);
        assert_one_line(&err);
        assert!(err.contains(expected), "{sets:?}: {err}");
    }
}
