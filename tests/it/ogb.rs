//! OGB-layout folders (`graph: {ogb: {path: DIR}}`) built in the test, gzip and plain: a
//! scenario on one validates, simulates and runs; each broken file is one located error with
//! its documented exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::support::{pipegnn, scratch, stderr, stdout, write};

const IO: i32 = 3;
const INVALID_INPUT: i32 = 4;

/// Forty vertices on a ring with chords every fifth vertex, listed one way (as ogbn-arxiv's
/// citations are); four features; three classes; 20/10/10 split under `split/time`.
fn files() -> Vec<(String, String)> {
    let n = 40;
    let mut edges = String::new();
    let mut count = 0;
    for v in 0..n {
        edges += &format!("{v},{}\n", (v + 1) % n);
        count += 1;
        if v % 5 == 0 {
            edges += &format!("{v},{}\n", (v + 7) % n);
            count += 1;
        }
    }
    let labels: String = (0..n).map(|v| format!("{}\n", v % 3)).collect();
    let features: String = (0..n)
        .map(|v| {
            format!(
                "{},{},0,{}\n",
                v % 3,
                0.5 * (v % 2) as f64,
                1.0 - 0.1 * (v % 4) as f64
            )
        })
        .collect();
    let ids = |r: std::ops::Range<u32>| -> String { r.map(|v| format!("{v}\n")).collect() };
    vec![
        ("raw/num-node-list".into(), format!("{n}\n")),
        ("raw/num-edge-list".into(), format!("{count}\n")),
        ("raw/edge".into(), edges),
        ("raw/node-label".into(), labels),
        ("raw/node-feat".into(), features),
        ("split/time/train".into(), ids(0..20)),
        ("split/time/valid".into(), ids(20..30)),
        ("split/time/test".into(), ids(30..40)),
    ]
}

/// Writes `files` under `dir/name`, each `STEM.csv.gz` or `STEM.csv`.
fn folder(dir: &Path, name: &str, files: &[(String, String)], gzipped: bool) -> PathBuf {
    let root = dir.join(name);
    for (stem, text) in files {
        let path = root.join(if gzipped {
            format!("{stem}.csv.gz")
        } else {
            format!("{stem}.csv")
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes = if gzipped {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap()
        } else {
            text.as_bytes().to_vec()
        };
        std::fs::write(path, bytes).unwrap();
    }
    root
}

/// A two-stage GPipe scenario on the folder, with `options` added to `graph.ogb`.
fn scenario(dir: &Path, folder: &Path, options: &str) -> PathBuf {
    let text = format!(
        "name: ogb-tiny\n\
         graph:\n  ogb: {{path: {}{options}}}\n\
         model:\n  layers: [{{kind: gcn, out: 8}}, {{kind: gcn, out: 3}}]\n\
         training: {{optimizer: adam, lr: 0.01, epochs: 3, seed: 1}}\n\
         devices:\n  - {{name: cpu, count: 2, preset: cpu-core}}\n\
         links:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\n\
         executor: {{threads_per_device: 1}}\n\
         schedule: {{kind: gpipe, chunks: 2, halo: drop}}\n",
        folder.display()
    );
    write(dir, "scenario.yaml", &text)
}

fn ok(args: &[&str]) -> String {
    let out = pipegnn(args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

/// Runs `validate` and returns its one-line stderr after checking the exit code.
fn refused(scenario: &Path, code: i32) -> String {
    let out = pipegnn(&["validate", scenario.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_scenario_on_an_ogb_folder_validates_simulates_and_runs() {
    let dir = scratch("ogb-runs");
    let folder = folder(&dir, "ogbn-tiny", &files(), true);
    let scenario = scenario(&dir, &folder, "");
    let path = scenario.to_str().unwrap();
    let validated = ok(&["validate", path]);
    assert!(validated.starts_with("ok: "), "{validated}");
    let simulated = ok(&["simulate", path, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&simulated).unwrap();
    let result = &json["results"][0];
    assert_eq!(result["schedule"], "gpipe-drop");
    let chunks = result["chunk_stats"].as_array().unwrap();
    let vertices: u64 = chunks.iter().map(|c| c["vertices"].as_u64().unwrap()).sum();
    assert_eq!(vertices, 40);
    // 48 one-way edges made undirected: 96 directed edges over the chunks.
    let directed: u64 = chunks
        .iter()
        .map(|c| c["internal_edges"].as_u64().unwrap() + c["cut_edges"].as_u64().unwrap())
        .sum();
    assert_eq!(directed, 96);
    let ran = ok(&["run", path, "--format", "json"]);
    let run: serde_json::Value = serde_json::from_str(&ran).unwrap();
    assert_eq!(run["results"][0]["epochs"].as_array().unwrap().len(), 3);
}

#[test]
fn gzip_and_plain_folders_predict_the_same() {
    let dir = scratch("ogb-plain");
    let gz = folder(&dir, "gz", &files(), true);
    let plain = folder(&dir, "plain", &files(), false);
    let a = scenario(&dir, &gz, "");
    let a = ok(&["simulate", a.to_str().unwrap(), "--format", "json"]);
    let b = scenario(&dir, &plain, "");
    let b = ok(&["simulate", b.to_str().unwrap(), "--format", "json"]);
    assert_eq!(a, b);
}

#[test]
fn kept_edges_must_be_symmetric() {
    let dir = scratch("ogb-kept");
    let folder = folder(&dir, "one-way", &files(), true);
    let scenario = scenario(&dir, &folder, ", undirected: false");
    let err = refused(&scenario, INVALID_INPUT);
    assert!(
        err.contains("one-way/raw/edge.csv.gz:1: edge 0,1 has no reverse 1,0"),
        "{err}"
    );
    let context = format!("(graph.ogb of {})", scenario.display());
    assert!(err.trim_end().ends_with(&context), "{err}");
}

#[test]
fn several_splits_need_a_name() {
    let dir = scratch("ogb-splits");
    let mut both = files();
    both.push(("split/random/train".into(), "1\n2\n".into()));
    both.push(("split/random/valid".into(), "3\n".into()));
    both.push(("split/random/test".into(), "4\n".into()));
    let folder = folder(&dir, "two-splits", &both, true);
    let unnamed = scenario(&dir, &folder, "");
    let err = refused(&unnamed, INVALID_INPUT);
    assert!(
        err.contains(
            "two-splits/split: there are several splits (random, time): name one with `split:`"
        ),
        "{err}"
    );
    let named = scenario(&dir, &folder, ", split: random");
    ok(&["validate", named.to_str().unwrap()]);
    let escaping = scenario(&dir, &folder, ", split: ../raw");
    let err = refused(&escaping, INVALID_INPUT);
    assert!(
        err.contains("scenario.yaml:3:") && err.contains("graph.ogb.split: must name one folder"),
        "{err}"
    );
}

#[test]
fn each_broken_file_is_one_located_error() {
    let dir = scratch("ogb-broken");
    let cases: [(&str, &str, &str); 5] = [
        (
            "raw/edge",
            "0,1\n1,x\n",
            "raw/edge.csv.gz:2: dst `x` is not an unsigned integer",
        ),
        (
            "raw/edge",
            "0,1\n1,99\n",
            "raw/edge.csv.gz:2: dst 99 is out of range",
        ),
        (
            "raw/num-edge-list",
            "3\n",
            "raw/edge.csv.gz:4: more lines than the 3 edges",
        ),
        (
            "raw/node-feat",
            "1,2\n",
            "raw/node-feat.csv.gz:2: expected 4 values (as on line 1), found 2",
        ),
        (
            "split/time/valid",
            "20\n0\n",
            "split/time/valid.csv.gz:2: vertex 0 is also in the training split",
        ),
    ];
    for (i, (stem, text, expected)) in cases.into_iter().enumerate() {
        let mut broken = files();
        let entry = broken.iter_mut().find(|(s, _)| s == stem).unwrap();
        entry.1 = if stem == "raw/node-feat" {
            // Line 1 keeps four values; line 2 has two.
            let mut rows = entry.1.lines();
            format!("{}\n{text}", rows.next().unwrap())
        } else {
            text.to_owned()
        };
        let folder = folder(&dir, &format!("case{i}"), &broken, true);
        let case = dir.join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let scenario = scenario(&case, &folder, "");
        let err = refused(&scenario, INVALID_INPUT);
        assert!(err.contains(&format!("case{i}/{expected}")), "{err}");
    }
}

#[test]
fn missing_and_unreadable_files_are_exit_3_or_4() {
    let dir = scratch("ogb-missing");
    let absent = scenario(&dir, &dir.join("no-such-folder"), "");
    let err = refused(&absent, IO);
    assert!(err.contains("graph.ogb.path: "), "{err}");
    assert!(
        err.contains("is not a dataset folder (OGB layout)"),
        "{err}"
    );

    let without: Vec<_> = files()
        .into_iter()
        .filter(|(stem, _)| stem != "raw/node-label")
        .collect();
    let folder_path = folder(&dir, "no-labels", &without, true);
    let missing = scenario(&dir, &folder_path, "");
    let err = refused(&missing, INVALID_INPUT);
    assert!(
        err.contains("no-labels/raw/node-label.csv.gz: required file is missing"),
        "{err}"
    );

    // A folder where a file belongs cannot be read, whoever runs the test.
    let unreadable = folder(&dir, "unreadable", &without, true);
    std::fs::create_dir_all(unreadable.join("raw/node-label.csv.gz")).unwrap();
    let scenario = scenario(&dir, &unreadable, "");
    let err = refused(&scenario, IO);
    assert!(
        err.contains("unreadable/raw/node-label.csv.gz:1: cannot read"),
        "{err}"
    );
}

#[test]
fn unknown_fields_of_graph_ogb_are_located() {
    let dir = scratch("ogb-unknown");
    let folder = folder(&dir, "tiny", &files(), true);
    let scenario = scenario(&dir, &folder, ", directed: true");
    let err = refused(&scenario, INVALID_INPUT);
    assert!(err.contains("scenario.yaml:3:"), "{err}");
    assert!(err.contains("unknown field `directed`"), "{err}");
}

#[test]
fn bench_writes_and_loads_an_ogb_folder() {
    let dir = scratch("ogb-bench");
    let out = dir.join("generated");
    let written = ok(&[
        "bench",
        "--write-ogb",
        out.to_str().unwrap(),
        "--nodes",
        "500",
        "--edges",
        "2000",
        "--features",
        "6",
    ]);
    assert!(
        written.contains("500 vertices, 2000 edges, 6 features"),
        "{written}"
    );
    let loaded = ok(&["bench", "--ogb", out.to_str().unwrap()]);
    assert!(loaded.contains(": 500 vertices, "), "{loaded}");
    assert!(loaded.contains("peak resident"), "{loaded}");
    assert!(loaded.contains("arrays"), "{loaded}");
    let usage = pipegnn(&[
        "bench",
        "--write-ogb",
        out.to_str().unwrap(),
        "--nodes",
        "33554432",
        "--features",
        "9",
    ]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(stderr(&usage).contains("2^28"));
}
