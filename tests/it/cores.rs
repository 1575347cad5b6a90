//! CPU workers sharing a machine's cores (`executor.cores`): when the devices' threads
//! outnumber the cores, ops take turns on them in the simulator, and in a real run each op
//! holds a turn from its start to its end; when they do not, nothing changes.

use serde_json::Value;

use crate::support::{invalid_scenario, pipegnn, scratch, stderr, write};

/// Four CPU devices, one thread each, on a small synthetic graph: no dataset needed.
fn four_cpu_devices(name: &str, executor: &str) -> String {
    let text = format!(
        "name: cores\ngraph:\n  synthetic: {{kind: sbm, nodes: 2000, avg_degree: 6, classes: 4, features: 64, seed: 3}}\nmodel:\n  layers: [{{kind: gcn, out: 32}}, {{kind: gcn, out: 32}}, {{kind: gcn, out: 32}}, {{kind: gcn, out: 4}}]\ntraining: {{epochs: 2}}\ndevices:\n  - {{name: cpu, count: 4, preset: cpu-core}}\nlinks:\n  topology: {{kind: full, bandwidth: 10GB/s, latency: 1us}}\nexecutor: {executor}\nschedule: {{kind: 1f1b, chunks: 8}}\n"
    );
    write(&scratch(name), "scenario.yaml", &text)
        .display()
        .to_string()
}

/// The simulation's result and the most compute spans that overlap in its trace.
fn simulate(scenario: &str, name: &str) -> (Value, usize) {
    let trace = scratch(&format!("{name}-trace")).join("trace.json");
    let out = pipegnn(&[
        "simulate",
        scenario,
        "--trace",
        trace.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0].clone();
    (result, most_at_once(&trace))
}

/// The most compute spans that overlap in a Chrome trace file.
fn most_at_once(trace: &std::path::Path) -> usize {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(trace).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    // Compute spans are process 1's; +1 at a start, -1 at an end, ends first at a tie.
    let mut edges: Vec<(i64, i32)> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"] == 1)
        .flat_map(|e| {
            // Microseconds with three decimals: whole nanoseconds, so that an op starting as
            // another ends does not overlap it by a rounding error.
            let ns = |us: f64| (us * 1e3).round() as i64;
            let start = ns(e["ts"].as_f64().unwrap());
            let end = start + ns(e["dur"].as_f64().unwrap());
            [(start, 1), (end, -1)]
        })
        .collect();
    assert!(!edges.is_empty());
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

fn epoch(result: &Value) -> f64 {
    result["epoch_time_s"].as_f64().unwrap()
}

fn busy(result: &Value) -> f64 {
    result["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["busy_s"].as_f64().unwrap())
        .sum()
}

#[test]
fn cpu_workers_that_outnumber_the_cores_take_turns_on_them() {
    let (own, own_most) = simulate(
        &four_cpu_devices("cores-own", "{backend: cpu}"),
        "cores-own",
    );
    assert!(
        own_most > 2,
        "devices of their own overlap more than two ops: {own_most}"
    );
    // As many cores as threads, or more: nothing to share.
    for cores in [4, 64] {
        let name = format!("cores-{cores}");
        let executor = format!("{{backend: cpu, threads_per_device: 1, cores: {cores}}}");
        let (result, _) = simulate(&four_cpu_devices(&name, &executor), &name);
        assert_eq!(result, own, "{cores} cores");
    }
    // Two cores: at most two ops at a time, the same work done.
    let executor = "{backend: cpu, threads_per_device: 1, cores: 2}";
    let (two, two_most) = simulate(&four_cpu_devices("cores-2", executor), "cores-2");
    assert_eq!(two_most, 2);
    assert!(
        epoch(&two) > epoch(&own),
        "{} vs {}",
        epoch(&two),
        epoch(&own)
    );
    assert!(epoch(&two) >= busy(&two) / 2.0 * (1.0 - 1e-9));
    assert!((busy(&two) - busy(&own)).abs() <= 1e-9 * busy(&own));
    assert_eq!(two["communication_bytes"], own["communication_bytes"]);
    // Two threads a device on four cores: two devices at a time.
    let executor = "{backend: cpu, threads_per_device: 2, cores: 4}";
    let (_, most) = simulate(&four_cpu_devices("cores-4x2", executor), "cores-4x2");
    assert_eq!(most, 2);
    // One core: one op at a time, exactly as stages taking turns on one shared GPU.
    let executor = "{backend: cpu, threads_per_device: 1, cores: 1}";
    let (one, one_most) = simulate(&four_cpu_devices("cores-1", executor), "cores-1");
    assert_eq!(one_most, 1);
    assert!(epoch(&one) >= busy(&one) * (1.0 - 1e-9));
    let executor = "{backend: cpu, threads_per_device: 1, device_map: shared}";
    let (shared, _) = simulate(&four_cpu_devices("cores-shared", executor), "cores-shared");
    assert_eq!(epoch(&one), epoch(&shared));
}

/// A real run holds its ops to the turns the simulator gives them: four workers on one core
/// never compute at once (on a machine of two cores or more, the system's scheduler alone would
/// run two), on two cores at most two do.
#[test]
fn a_real_run_s_ops_take_turns_on_the_cores() {
    for (cores, turns) in [(1, 1), (2, 2)] {
        let name = format!("cores-run-{cores}");
        let executor = format!("{{backend: cpu, threads_per_device: 1, cores: {cores}}}");
        let scenario = four_cpu_devices(&name, &executor);
        let trace = scratch(&format!("{name}-trace")).join("trace.json");
        let out = pipegnn(&[
            "run",
            &scenario,
            "--epochs",
            "3",
            "--trace",
            trace.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let most = most_at_once(&trace);
        assert!(
            (1..=turns).contains(&most),
            "{cores} core(s): {most} ops at once"
        );
    }
}

#[test]
fn a_bad_core_count_names_the_field() {
    for (value, want) in [
        ("0", "executor.cores"),
        ("5000", "executor.cores"),
        ("two", "executor.cores"),
    ] {
        let text = std::fs::read_to_string(four_cpu_devices(
            "cores-bad",
            &format!("{{backend: cpu, cores: {value}}}"),
        ))
        .unwrap();
        let err = invalid_scenario("cores-bad", &text);
        assert!(err.contains(want), "{value}: {err}");
    }
}

/// GPipe over two stages and two chunks on two devices joined by free links.
fn gpipe_two_by_two() -> pipegnn::schedule::Schedule {
    let text = "stages: 2\nchunks: 2\norders:\n  0: [[F,0,0],[F,1,0],[B,1,0],[B,0,0]]\n  1: [[F,0,1],[F,1,1],[B,1,1],[B,0,1]]\n";
    pipegnn::schedule::file::parse("gpipe.yaml", text).unwrap()
}

/// The epoch `contention` predicts for [`gpipe_two_by_two`] with forwards of 1 and 3 us by
/// stage and backwards of 2 us.
fn contended_epoch(contention: Option<pipegnn::sim::Contention<'_>>) -> u64 {
    use pipegnn::sim::{simulate, takes_one_pass, SimInput};
    let schedule = gpipe_two_by_two();
    let mut costs = crate::support::StageCosts::uniform(2, 1_000, 2_000);
    costs.forward_ns = vec![1_000, 3_000];
    let network = pipegnn::network::Network::free(vec!["a".into(), "b".into()]);
    let input = SimInput {
        schedule: &schedule,
        placement: &[0, 1],
        cost: &costs,
        network: &network,
        compute_slots: None,
        lowered: None,
        contention,
    };
    assert_eq!(takes_one_pass(&input), contention.is_none());
    let devices = ["a", "b"]
        .map(|name| pipegnn::trace::TraceDevice {
            name: name.into(),
            capacity_bytes: None,
        })
        .to_vec();
    let trace = simulate(&input, devices).unwrap();
    trace.spans.iter().map(|s| s.end_ns).max().unwrap()
}

#[test]
fn ops_running_at_once_share_the_machine_as_processor_sharing() {
    // Alone: F0 of stage 0 [0, 1000]; F1 of stage 0 [1000, 2000] beside F0 of stage 1
    // [1000, 4000]; F1 and B1 of stage 1 to 9000; the two B's at once to 11000; B0 of stage 0
    // to 13000.
    assert_eq!(contended_epoch(None), 13_000);
    // Two at once take 1.5x as long: stage 0's F1 ends at 2500, when stage 1's F0 has done a
    // third of its work and runs the rest alone (to 4500); F1 and B1 of stage 1 to 9500; the
    // two B's at once, 3000 each, to 12500; B0 of stage 0 to 14500.
    let slowdown = [1.0, 1.5];
    let contention = pipegnn::sim::Contention {
        slowdown: &slowdown,
    };
    assert_eq!(contended_epoch(Some(contention)), 14_500);
    // Past the measured counts the last slowdown stands; one op alone runs at full speed.
    assert_eq!(contention.at(3), 1.5);
    assert_eq!(contention.at(1), 1.0);
    // No slowdown measured past one: the same epoch as without.
    let none = [1.0];
    assert_eq!(
        contended_epoch(Some(pipegnn::sim::Contention { slowdown: &none })),
        13_000
    );
}
