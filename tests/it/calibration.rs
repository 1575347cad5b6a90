//! Device profiles end to end: `calibrate` writes one, `simulate`, `sweep` and `compare` predict
//! with it, a profile of another device is refused, shapes past the calibrated range are
//! flagged, and `fidelity` runs a two-configuration matrix. Accuracy is the `fidelity`
//! benchmark's business, not these tests'.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::gnn::data_dir;
use crate::support::{pipegnn, scratch, stderr, stdout, write};

/// One quick calibration (1 thread) shared by the tests of this module.
fn profile() -> PathBuf {
    static PROFILE: OnceLock<PathBuf> = OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let path = scratch("device-profile").join("cpu1.json");
            let samples = path.with_file_name("samples.json");
            let out = pipegnn(&[
                "calibrate",
                "--quick",
                "--threads",
                "1",
                "--out",
                path.to_str().unwrap(),
                "--samples",
                samples.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                stdout(&out).contains("fitted functions"),
                "{}",
                stdout(&out)
            );
            path
        })
        .clone()
}

fn simulate_json(args: &[&str]) -> (Value, String) {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = pipegnn(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    (doc["results"][0].clone(), stderr(&out))
}

/// The functions a profile's list names.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|k| k["kernel"].as_str().unwrap())
        .collect()
}

#[test]
fn a_device_profile_names_its_device_and_fits_every_kernel() {
    let text = std::fs::read_to_string(profile()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["format"], "pipegnn-device-profile v10");
    // The machine's state while it was calibrated.
    assert!(doc["probe"]["memory_ns"].as_u64().unwrap() > 0);
    assert!(doc["probe"]["compute_ns"].as_u64().unwrap() > 0);
    // A quick grid makes one pass: no two passes of a sample to compare.
    assert!(doc["passes_apart"].is_null(), "{}", doc["passes_apart"]);
    // The co-run benchmark: one worker per core at one thread each, 1 for one alone, never a
    // speed-up; none on a one-core machine.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let corun: Vec<f64> = doc["corun_slowdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(
        corun.len(),
        if cores >= 2 { cores.min(8) } else { 0 },
        "{corun:?}"
    );
    assert!(corun.first().is_none_or(|&x| x == 1.0), "{corun:?}");
    assert!(corun.iter().all(|&x| x >= 1.0), "{corun:?}");
    // The time functions again, timed warm (no memory function among them), and the reuse
    // curve: bytes increasing, warmth between 0 and 1 and never greater after more data,
    // ending cold at a whole flush (24 MiB).
    let warm = names(&doc["warm_kernels"]);
    for want in [
        "dense_forward",
        "aggregate",
        "loss",
        "gcn_forward",
        "gat_backward",
    ] {
        assert!(warm.contains(&want), "{want} missing from {warm:?}");
    }
    assert!(!warm.iter().any(|k| k.ends_with("_bytes")), "{warm:?}");
    let reuse: Vec<(f64, f64)> = doc["reuse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["bytes"].as_f64().unwrap(), p["warmth"].as_f64().unwrap()))
        .collect();
    assert_eq!(reuse.last(), Some(&(25165824.0, 0.0)), "{reuse:?}");
    for pair in reuse.windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 >= pair[1].1, "{reuse:?}");
    }
    assert!(reuse.iter().all(|&(_, h)| (0.0..=1.0).contains(&h)));
    let samples = std::fs::read_to_string(profile().with_file_name("samples.json")).unwrap();
    let samples: Value = serde_json::from_str(&samples).unwrap();
    let functions = samples["functions"].as_array().unwrap();
    assert!(functions.iter().any(|f| f["warm"] == true));
    assert!(functions.iter().any(|f| f["warm"] == false));
    assert_eq!(doc["backend"], "cpu");
    assert_eq!(doc["threads"], 1);
    assert_eq!(doc["dtype"], "f32");
    assert!(!doc["machine"].as_str().unwrap().is_empty());
    let kernels = names(&doc["kernels"]);
    for want in [
        "dense_forward",
        "dense_grad_input",
        "dense_grad_weight",
        "aggregate",
        "aggregate_transpose",
        "attention_forward",
        "attention_backward",
        "dropout_dense",
        "relu_forward",
        "loss",
        "objective",
        "adam",
        "handoff_copy",
        "gcn_forward",
        "gat_backward",
    ] {
        assert!(kernels.contains(&want), "{want} missing from {kernels:?}");
    }
    for k in doc["kernels"].as_array().unwrap() {
        let error = k["median_error"].as_f64().unwrap();
        assert!(error.is_finite() && error >= 0.0, "{k}");
    }
}

/// The quickstart runs four stages, so on a machine of at most four cores each gets one thread:
/// the quick profile's. Its op times then come from the profile, not the A100 preset.
#[test]
fn simulate_predicts_with_a_device_profile() {
    let profile = profile();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > 7 {
        eprintln!("skipping: {threads} cores give the quickstart's stages more than one thread");
        return;
    }
    let (analytic, _) = simulate_json(&["scenarios/quickstart.yaml"]);
    let (profiled, warnings) = simulate_json(&[
        "scenarios/quickstart.yaml",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert!(
        analytic["cost_tier"]
            .as_str()
            .unwrap()
            .starts_with("analytic"),
        "{analytic}"
    );
    let tier = profiled["cost_tier"].as_str().unwrap();
    assert!(tier.starts_with("device profile (cpu: 1 thread"), "{tier}");
    assert!(tier.contains("from cache-cold to warm"), "{tier}");
    // Without its warm functions the same profile prices every op cold: never faster.
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    doc.as_object_mut().unwrap().remove("warm_kernels");
    doc.as_object_mut().unwrap().remove("reuse");
    let cold_profile = write(profile.parent().unwrap(), "cold.json", &doc.to_string());
    let (cold, _) = simulate_json(&[
        "scenarios/quickstart.yaml",
        "--profile",
        cold_profile.to_str().unwrap(),
    ]);
    let cold_tier = cold["cost_tier"].as_str().unwrap();
    assert!(!cold_tier.contains("cache-cold"), "{cold_tier}");
    // A CPU core is far slower than an A100's roofline.
    let epoch = |r: &Value| r["epoch_time_s"].as_f64().unwrap();
    assert!(epoch(&profiled) > 10.0 * epoch(&analytic));
    assert!(epoch(&cold) >= epoch(&profiled));
    // Bytes do not depend on the cost tier.
    assert_eq!(
        profiled["communication_bytes"],
        analytic["communication_bytes"]
    );
    // The quick grid stops far below a 50,000-vertex graph's chunks: it says so.
    let flagged = profiled["extrapolated"].as_array().unwrap();
    assert!(!flagged.is_empty());
    assert!(warnings.contains("extrapolated:"), "{warnings}");
    // The same profile and scenario give byte-identical output.
    let (again, _) = simulate_json(&[
        "scenarios/quickstart.yaml",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(again, profiled);
    // The stages as CPU workers sharing a machine's cores: ops that run at once slow each
    // other down by the profile's co-run slowdown (measured where the machine has two cores),
    // never speed up, and the output is as deterministic.
    let shared = || {
        simulate_json(&[
            "scenarios/quickstart.yaml",
            "--profile",
            profile.to_str().unwrap(),
            "--set",
            "executor.cores=64",
        ])
        .0
    };
    let contended = shared();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let measured = doc["corun_slowdown"].as_array().unwrap().len() > 1;
    let tier = contended["cost_tier"].as_str().unwrap();
    assert_eq!(tier.contains("slow each other down"), measured, "{tier}");
    assert!(epoch(&contended) >= epoch(&profiled));
    assert_eq!(shared(), contended);
}

#[test]
fn a_profile_of_another_thread_count_is_refused() {
    let profile = profile();
    let out = pipegnn(&[
        "simulate",
        "scenarios/quickstart.yaml",
        "--set",
        "executor.threads_per_device=2",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 thread (the device runs 2)"),
        "{}",
        stderr(&out)
    );
    let out = pipegnn(&[
        "simulate",
        "scenarios/quickstart.yaml",
        "--set",
        "executor.threads_per_device=1",
        "--profile",
        "Cargo.toml",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Cargo.toml: not JSON"),
        "{}",
        stderr(&out)
    );
}

/// `calibrate --samples` writes what each function was fitted on, cold and warm; its own
/// errors, computed here from the measured and fitted values, are the ones the profile
/// records.
#[test]
fn the_samples_are_what_the_profile_was_fitted_on() {
    let path = profile();
    let profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let samples: Value = serde_json::from_str(
        &std::fs::read_to_string(path.with_file_name("samples.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(samples["format"], "pipegnn-calibration-samples v1");
    let functions = samples["functions"].as_array().unwrap();
    for (list, warm) in [("kernels", false), ("warm_kernels", true)] {
        let functions: Vec<&Value> = functions.iter().filter(|f| f["warm"] == warm).collect();
        let fits = profile[list].as_array().unwrap();
        assert_eq!(
            functions.len(),
            fits.len(),
            "one sample set per fitted function of {list}"
        );
        for fit in fits {
            let name = fit["kernel"].as_str().unwrap();
            let f = functions.iter().find(|f| f["kernel"] == name).unwrap();
            let points = f["samples"].as_array().unwrap();
            assert_eq!(
                points.len() as u64,
                fit["samples"].as_u64().unwrap(),
                "{list}: {name}"
            );
            let n_terms = f["terms"].as_array().unwrap().len();
            let mut errors: Vec<f64> = points
                .iter()
                .map(|p| {
                    assert_eq!(p["terms"].as_array().unwrap().len(), n_terms, "{name}");
                    let measured = p["measured"].as_f64().unwrap();
                    let fitted = p["fitted"].as_f64().unwrap();
                    assert!(measured > 0.0, "{list}: {name}: {p}");
                    ((fitted - measured) / measured).abs()
                })
                .collect();
            errors.sort_by(f64::total_cmp);
            let max = *errors.last().unwrap();
            let recorded = fit["max_error"].as_f64().unwrap();
            assert!(
                (max - recorded).abs() <= 1e-9 * (1.0 + recorded),
                "{list}: {name}: {max} vs {recorded}"
            );
        }
    }
}

#[test]
fn a_device_entry_may_name_its_profile() {
    let profile = profile();
    let set = format!("devices.0.profile={}", profile.display());
    let (named, _) = simulate_json(&[
        "scenarios/quickstart.yaml",
        "--set",
        "executor.threads_per_device=1",
        "--set",
        &set,
    ]);
    let (flag, _) = simulate_json(&[
        "scenarios/quickstart.yaml",
        "--set",
        "executor.threads_per_device=1",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(named, flag);
}

#[test]
fn sweep_predicts_every_point_with_the_profile() {
    let profile = profile();
    let out = pipegnn(&[
        "sweep",
        "scenarios/quickstart.yaml",
        "--set",
        "executor.threads_per_device=1",
        "--set",
        "schedule.chunks=4,8",
        "--profile",
        profile.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = doc["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    // Milliseconds on a CPU core, not the A100 roofline's microseconds.
    for p in points {
        assert!(p["epoch_time_s"].as_f64().unwrap() > 1e-3, "{p}");
    }
}

#[test]
fn fidelity_runs_a_two_configuration_matrix() {
    let Some(data) = data_dir() else {
        return;
    };
    let profile = profile();
    let matrix = [
        "fidelity",
        "--profile",
        profile.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--only",
        "cora-gcn2-gpipe-drop-s2-k8,cora-gcn2-graph-parallel-p2",
    ];
    let out = pipegnn(
        &[
            &matrix[..],
            &[
                "--epochs",
                "2",
                "--seconds",
                "0",
                "--rounds",
                "2",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let configs = doc["configurations"].as_array().unwrap();
    for c in configs {
        // No time to fill: the epochs asked for. Each round's median epoch is reported, and
        // the shortest stands.
        assert_eq!(c["epochs"], 2, "{c}");
        let rounds: Vec<f64> = c["round_epoch_times_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 2, "{c}");
        let epoch = c["metrics"][0]["measured"].as_f64().unwrap();
        assert_eq!(
            epoch,
            rounds.iter().copied().fold(f64::INFINITY, f64::min),
            "{c}"
        );
        // The machine probed before the run, against the probe at calibration.
        for workload in ["memory", "compute"] {
            let slowdown = c["machine_slowdown"][workload].as_f64().unwrap();
            assert!(slowdown.is_finite() && slowdown > 0.0, "{c}");
        }
    }
    let names: Vec<&str> = configs
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cora-gcn2-gpipe-drop-s2-k8",
            "cora-gcn2-graph-parallel-p2",
            "cora-gcn2-gpipe-drop-s2-k8-slow-link"
        ]
    );
    let summary = doc["summary"].as_array().unwrap();
    let metric = |name: &str| {
        summary
            .iter()
            .find(|s| s["metric"] == name)
            .unwrap()
            .clone()
    };
    assert!(metric("epoch_time_s")["count"].as_u64().unwrap() == 3);
    // How much slower the machine was at each run than at calibration, over the matrix.
    for probe in ["machine_memory_slowdown", "machine_compute_slowdown"] {
        assert_eq!(metric(probe)["count"], 3, "{doc}");
        assert!(metric(probe)["median"].as_f64().unwrap() > 0.0, "{doc}");
    }
    // Bytes per link are exact: the device tier takes them from the same plans as the executor.
    assert_eq!(metric("link_bytes")["max"].as_f64().unwrap(), 0.0, "{doc}");
    rescores_against_earlier_runs(&matrix, &doc);
    let out = pipegnn(&[
        "fidelity",
        "--profile",
        profile.to_str().unwrap(),
        "--only",
        "nothing-like-this",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The matrix on a GPU takes a GPU's profile: this CPU one is refused before anything runs.
    let out = pipegnn(&[
        "fidelity",
        "--device",
        "cuda",
        "--profile",
        profile.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--only",
        "cora-gcn2-1stage",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("backend cpu (the device: cuda)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `fidelity --against` runs nothing: the profile's predictions, scored against the median
/// of the files' measurements. `doc` is a run's JSON; its copies with every measured value
/// doubled and tripled make three runs whose median is the doubled one.
/// `matrix` is the run's command up to its own knobs.
fn rescores_against_earlier_runs(matrix: &[&str], doc: &Value) {
    let dir = scratch("fidelity-against");
    let scaled = |factor: f64| {
        let mut copy = doc.clone();
        for c in copy["configurations"].as_array_mut().unwrap() {
            for m in c["metrics"].as_array_mut().unwrap() {
                if let Some(v) = m["measured"].as_f64() {
                    m["measured"] = serde_json::json!(v * factor);
                }
            }
        }
        let path = write(&dir, &format!("x{factor}.json"), &copy.to_string());
        path.to_str().unwrap().to_string()
    };
    let files = [scaled(1.0), scaled(3.0), scaled(2.0)];
    let mut args = [matrix, &["--format", "json"]].concat();
    for f in &files {
        args.extend(["--against", f.as_str()]);
    }
    let out = pipegnn(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["rounds"], Value::Null, "{again}");
    assert_eq!(again["against"].as_array().unwrap().len(), 3);
    let (before, after) = (
        doc["configurations"].as_array().unwrap(),
        again["configurations"].as_array().unwrap(),
    );
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b["name"], a["name"]);
        // One epoch time a file, in the order given.
        let epoch = b["metrics"][0]["measured"].as_f64().unwrap();
        let rounds: Vec<f64> = a["round_epoch_times_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 3, "{a}");
        for (got, want) in rounds.iter().zip([1.0, 3.0, 2.0]) {
            assert!(
                (got - epoch * want).abs() <= 1e-9 * epoch * want,
                "{rounds:?}"
            );
        }
        let (rows_b, rows_a) = (
            b["metrics"].as_array().unwrap(),
            a["metrics"].as_array().unwrap(),
        );
        assert_eq!(rows_b.len(), rows_a.len(), "{a}");
        for (rb, ra) in rows_b.iter().zip(rows_a) {
            assert_eq!((&rb["name"], &rb["device"]), (&ra["name"], &ra["device"]));
            // The same code and profile predict the same.
            assert_eq!(rb["predicted"], ra["predicted"], "{ra}");
            match rb["measured"].as_f64() {
                Some(m) => {
                    let got = ra["measured"].as_f64().unwrap();
                    assert!((got - 2.0 * m).abs() <= 1e-9 * (2.0 * m).abs(), "{rb} {ra}");
                }
                None => assert!(ra["measured"].is_null(), "{ra}"),
            }
        }
    }
    // A configuration no file measured is named, with the way out; a file that is not a
    // fidelity run's JSON is named; one line each, exit 4.
    let mut missing = args.clone();
    missing[6] = "cora-gcn2-1stage";
    let out = pipegnn(&missing);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no file measured `cora-gcn2-1stage`"), "{err}");
    assert!(err.contains("--only"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let not_ours = write(&dir, "other.json", "{\"epochs\": 3}");
    let mut bad = args[..9].to_vec();
    bad.extend(["--against", not_ours.to_str().unwrap()]);
    let out = pipegnn(&bad);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("other.json") && err.contains("configurations"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Nothing runs, so the run's own knobs make no sense beside it.
    let mut knob = args.clone();
    knob.extend(["--rounds", "2"]);
    assert_eq!(pipegnn(&knob).status.code(), Some(2));
}

/// `--seconds` raises the epochs of a configuration whose predicted epoch is short, from the
/// prediction (so the same profile always runs the same epochs), up to 1,000.
#[test]
fn fidelity_fills_its_time_budget_from_the_prediction() {
    let Some(data) = data_dir() else {
        return;
    };
    let profile = profile();
    let out = pipegnn(&[
        "fidelity",
        "--profile",
        profile.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--only",
        "cora-gcn2-1stage",
        "--epochs",
        "2",
        "--seconds",
        "0.05",
        "--rounds",
        "1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &doc["configurations"][0];
    let predicted = c["metrics"][0]["predicted"].as_f64().unwrap();
    let want = ((0.05 / predicted).ceil() as u64).clamp(2, 1000);
    assert_eq!(c["epochs"].as_u64().unwrap(), want, "{c}");
}

#[test]
fn compare_predicts_with_the_profile_then_runs() {
    let Some(_) = data_dir() else {
        return;
    };
    let profile = profile();
    let dir = scratch("compare-profile");
    let base = crate::support::root().join("scenarios/cora-gpipe-drop.yaml");
    let text = std::fs::read_to_string(&base).unwrap().replace(
        "../../shared/data/cora",
        data_dir().unwrap().join("cora").to_str().unwrap(),
    );
    let scenario = write(&dir, "cora.yaml", &text);
    let out = pipegnn(&[
        "compare",
        scenario.to_str().unwrap(),
        "--set",
        "executor.threads_per_device=1",
        "--profile",
        profile.to_str().unwrap(),
        "--epochs",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["cost_tier"]
        .as_str()
        .unwrap()
        .starts_with("device profile"));
    let metrics = doc["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["name"] == "epoch_time_s"));
    for m in metrics.iter().filter(|m| m["name"] == "link_bytes") {
        assert_eq!(m["predicted"], m["measured"], "{m}");
    }
    // Op by op: every stage's forwards, backwards and optimizer step, predicted and measured.
    let ops: Vec<&str> = metrics
        .iter()
        .filter(|m| m["name"] == "op_time_s")
        .map(|m| {
            assert!(m["predicted"].as_f64().unwrap() > 0.0, "{m}");
            assert!(m["measured"].as_f64().unwrap() > 0.0, "{m}");
            m["device"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        ops,
        [
            "stage 0 F",
            "stage 0 B",
            "stage 0 U",
            "stage 1 F",
            "stage 1 B",
            "stage 1 U"
        ]
    );
}

/// GNNPipe's hybrid with a device profile: each lane (a layer of a partition) priced at its
/// piece's shapes, then run; every link carries the bytes predicted.
#[test]
fn compare_prices_gnnpipe_s_hybrid_with_the_profile() {
    let profile = profile();
    let text = "# test\nname: hybrid\ngraph:\n  synthetic: {kind: sbm, nodes: 600, avg_degree: 6, classes: 3, features: 32, seed: 3}\nmodel:\n  layers: [{kind: gcn, out: 16}, {kind: sage, out: 16}, {kind: gcn, out: 3}]\ntraining: {epochs: 3, dropout: 0.5, seed: 5}\ndevices:\n  - {name: cpu, count: 4, preset: cpu-core}\nlinks:\n  topology: {kind: full, bandwidth: 10GB/s, latency: 1us}\nexecutor: {threads_per_device: 1}\nschedule: {kind: gnnpipe, chunks: 2, partitions: 2, backward: deferred}\n";
    let scenario = write(&scratch("compare-hybrid"), "hybrid.yaml", text);
    let out = pipegnn(&[
        "compare",
        scenario.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
        "--epochs",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["cost_tier"]
        .as_str()
        .unwrap()
        .starts_with("device profile"));
    let metrics = doc["metrics"].as_array().unwrap();
    let epoch = metrics
        .iter()
        .find(|m| m["name"] == "epoch_time_s")
        .unwrap();
    assert!(epoch["predicted"].as_f64().unwrap() > 0.0, "{epoch}");
    let links: Vec<&Value> = metrics
        .iter()
        .filter(|m| m["name"] == "link_bytes")
        .collect();
    assert!(!links.is_empty());
    for m in links {
        assert_eq!(m["predicted"], m["measured"], "{m}");
    }
}

/// The CPU's matrix library keeps a packing buffer (about a core's L2 cache) for the life of
/// each thread that multiplies past its small-matrix paths, which turns on the layers' widths:
/// a first stage with sparse features and a last stage of 7 outputs took none. The executor
/// makes every worker's first product before its first epoch, so each holds the buffer from
/// the start, as the profile measured it and predicts.
#[test]
fn every_worker_holds_the_matrix_buffer_the_profile_measured() {
    let text = std::fs::read_to_string(profile()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let buffer = doc["matrix_buffer_bytes"].as_u64().unwrap();
    assert!(
        buffer > 0,
        "the counting allocator sees the buffer: {buffer}"
    );
    let dir = scratch("matrix-buffer");
    let scenario = write(
        &dir,
        "narrow.yaml",
        "name: narrow\ngraph:\n  synthetic: {kind: sbm, nodes: 3000, avg_degree: 6, classes: 7, features: 200, homophily: 0.8, feature_density: 0.05, seed: 3}\nmodel:\n  layers: [{kind: gcn, out: 12}, {kind: gcn, out: 7}]\ntraining: {epochs: 2, seed: 1}\ndevices:\n  - {name: cpu, count: 2, preset: cpu-core}\nlinks:\n  topology: {kind: full, bandwidth: 10GB/s, latency: 1us}\nexecutor: {backend: cpu, threads_per_device: 1}\nschedule: {kind: gpipe, chunks: 2, halo: drop}\n",
    );
    let trace = dir.join("trace.json");
    let out = pipegnn(&[
        "run",
        scenario.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let at_start: Vec<u64> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "C" && e["ts"].as_f64() == Some(0.0))
        .map(|e| e["args"]["workspace"].as_u64().unwrap())
        .collect();
    assert_eq!(at_start.len(), 2, "{doc}");
    for workspace in at_start {
        assert!(workspace >= buffer, "{workspace} < {buffer}");
    }
    // And the prediction counts it on both devices.
    let (result, _) = simulate_json(&[
        scenario.to_str().unwrap(),
        "--profile",
        profile().to_str().unwrap(),
    ]);
    for device in result["devices"].as_array().unwrap() {
        let workspace = device["memory_bytes"]["workspace"].as_u64().unwrap();
        assert!(workspace >= buffer, "{device}");
    }
}
