//! `pipegnn proptest` as a user runs it: built-in kinds pass, broken schedules and bounds are
//! caught and shrunk with a command that reproduces them, bad input and failing generators get
//! one line and their exit code, the same seed gives the same bytes; the Python generators in
//! `schedules/` when `python3` is there.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{pipegnn, root, scratch, stderr, stdout, write};

/// The 1F1B bound, which GPipe and the eager variants break.
const ONE_F_ONE_B_BOUND: &str = "min(devices - device, chunks)";

fn code(out: &Output) -> i32 {
    out.status.code().expect("pipegnn exits with a code")
}

/// Asserts exit `expected` and a single `error:` line on stderr containing `needle`.
fn fails_with(out: &Output, expected: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(
        code(out),
        expected,
        "stdout:\n{}\nstderr:\n{err}",
        stdout(out)
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "`{needle}` missing from: {err}");
}

/// The `reproduce:` line's command, run in the repository root with this build's binary.
fn run_reproduce(text: &str) -> Output {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("reproduce: "))
        .unwrap_or_else(|| panic!("no reproduce line in:\n{text}"));
    let command = line
        .strip_prefix("pipegnn ")
        .expect("the command starts with pipegnn");
    let binary = env!("CARGO_BIN_EXE_pipegnn");
    Command::new("sh")
        .arg("-c")
        .arg(format!("'{binary}' {command}"))
        .current_dir(root())
        .output()
        .expect("sh runs")
}

fn shrunk_line(text: &str) -> &str {
    text.lines()
        .find(|line| line.starts_with("shrunk to: "))
        .unwrap_or_else(|| panic!("no shrunk line in:\n{text}"))
}

#[test]
fn proptest_passes_every_built_in_kind_with_its_documented_bound() {
    for (kind, per_device) in [
        ("gpipe", "1"),
        ("1f1b", "1"),
        ("interleaved_1f1b", "1..3"),
        ("looped_bfs", "1..3"),
        ("interleaved_zb", "1..3"),
        ("zbv", "2"),
        ("dualpipev", "2"),
    ] {
        let out = pipegnn(&[
            "proptest",
            "--kind",
            kind,
            "--stages",
            "1..8",
            "--chunks",
            "1..16",
            "--stages-per-device",
            per_device,
            "--cases",
            "24",
        ]);
        assert!(
            out.status.success(),
            "{kind}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("ok: kind {kind}: 24 cases held (seed 0), ")),
            "{text}"
        );
        assert!(text.contains("each device's stash within `"), "{text}");
    }
}

#[test]
fn proptest_checks_closed_forms_on_the_shapes_they_cover() {
    let out = pipegnn(&[
        "proptest",
        "--kind",
        "interleaved_1f1b",
        "--stages",
        "2..8",
        "--chunks",
        "2..8",
        "--stages-per-device",
        "2",
        "--closed-form",
        "interleaved",
        "--cases",
        "32",
        "--seed",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("the interleaved closed form"), "{text}");
    assert!(text.contains("closed form interleaved: held on "), "{text}");
    // 1F1B is not ZB-H1: its makespan is (K + P - 1)(F + B), not less.
    let out = pipegnn(&[
        "proptest",
        "--kind",
        "1f1b",
        "--stages",
        "2..4",
        "--chunks",
        "2..8",
        "--closed-form",
        "zb-h1",
        "--cases",
        "16",
    ]);
    fails_with(&out, 10, "the closed_form property fails");
    let text = stdout(&out);
    assert!(text.contains("zb-h1 predicts a makespan of"), "{text}");
}

#[test]
fn a_bound_a_kind_breaks_is_shrunk_to_the_smallest_shape_and_reproduced() {
    let args = [
        "proptest",
        "--kind",
        "gpipe",
        "--max-in-flight",
        ONE_F_ONE_B_BOUND,
        "--seed",
        "3",
    ];
    let out = pipegnn(&args);
    fails_with(
        &out,
        10,
        "kind gpipe: the stash_bound property fails at 1 stage, 2 chunks, 1 stage per device",
    );
    let text = stdout(&out);
    assert!(text.starts_with("FAILED: kind gpipe: stash_bound: device 0 holds 2 chunks in flight, more than the bound `min(devices - device, chunks)` = 1\n"), "{text}");
    assert_eq!(
        shrunk_line(&text),
        "shrunk to: 1 stage, 2 chunks, 1 stage per device; op times uniform: F 1 I 1 W 1 ns"
    );
    // The order, drawn at unit op times.
    assert!(text.contains("dev0 |F0-F1-B0====B1====|"), "{text}");
    assert!(text.contains(
        "reproduce: pipegnn proptest --kind gpipe --stages 1 --chunks 2 --stages-per-device 1 --max-in-flight 'min(devices - device, chunks)' --seed 3 --cases 256\n"
    ), "{text}");
    // The command fails again the same way, at the same shrunk case.
    let again = run_reproduce(&text);
    assert_eq!(code(&again), 10, "{}", stderr(&again));
    assert_eq!(shrunk_line(&stdout(&again)), shrunk_line(&text));
}

#[test]
fn a_schedule_file_over_its_bound_is_caught_with_its_order() {
    let out = pipegnn(&[
        "proptest",
        "--file",
        "schedules/eager-1f1b-s2-k4.yaml",
        "--max-in-flight",
        ONE_F_ONE_B_BOUND,
        "--cases",
        "16",
    ]);
    fails_with(&out, 10, "file schedules/eager-1f1b-s2-k4.yaml: the stash_bound property fails at 2 stages, 4 chunks, 1 stage per device");
    let text = stdout(&out);
    assert!(
        text.contains("device 0 holds 3 chunks in flight, more than the bound `min(devices - device, chunks)` = 2"),
        "{text}"
    );
    // Its shape is the file's; the times shrink to the unit table.
    assert_eq!(
        shrunk_line(&text),
        "shrunk to: 2 stages, 4 chunks, 1 stage per device; op times uniform: F 1 I 1 W 1 ns"
    );
    assert!(text.contains(
        "reproduce: pipegnn proptest --file schedules/eager-1f1b-s2-k4.yaml --max-in-flight 'min(devices - device, chunks)' --seed 0 --cases 16\n"
    ), "{text}");
    assert_eq!(code(&run_reproduce(&text)), 10);
    // The same file within a bound it keeps passes.
    let out = pipegnn(&[
        "proptest",
        "--file",
        "schedules/eager-1f1b-s2-k4.yaml",
        "--max-in-flight",
        "min(devices - device + 1, chunks)",
        "--cases",
        "16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(
        "ok: file schedules/eager-1f1b-s2-k4.yaml: 16 cases held (seed 0), 1 shape in stages 2, chunks 4, stages per device 1\n"
    ), "{}", stdout(&out));
}

#[test]
fn a_deadlocking_schedule_file_names_the_ops_that_wait_and_prints_its_lists() {
    let dir = scratch("proptest-deadlock");
    let path = write(
        &dir,
        "deadlock.yaml",
        "stages: 2\nchunks: 2\norders:\n  0: [[F,0,0],[B,0,0],[F,1,0],[B,1,0]]\n  1: [[F,1,1],[F,0,1],[B,0,1],[B,1,1]]\n",
    );
    let out = pipegnn(&["proptest", "--file", path.to_str().unwrap(), "--cases", "8"]);
    fails_with(
        &out,
        10,
        "the deadlock property fails at 2 stages, 2 chunks",
    );
    let text = stdout(&out);
    assert!(text.contains(": deadlock: it deadlocks: "), "{text}");
    assert!(text.contains("F(1,1) on device 1 waits for"), "{text}");
    assert!(text.contains("order (per device, [op, chunk, stage] in issue order):\n  0: [[F,0,0],[B,0,0],[F,1,0],[B,1,0]]\n  1: [[F,1,1],[F,0,1],[B,0,1],[B,1,1]]\n"), "{text}");
}

#[test]
fn bad_max_in_flight_expressions_get_one_line_and_exit_2() {
    for (expression, needle) in [
        ("min(stages,", "--max-in-flight: `min(stages,`: column 12: expected a number, a name or `(`, found the end"),
        ("stgaes + 1", "column 1: unknown name `stgaes` (expected stages, chunks, devices, v, device or stage)"),
        ("avg(chunks, 2)", "column 1: unknown function `avg` (expected min or max)"),
        ("chunks ^ 2", "column 8: unexpected `^` after a complete expression"),
        ("(chunks", "column 8: expected `)`, found the end"),
        ("", "column 1: expected a number, a name or `(`, found the end"),
        // Defined everywhere but on one device: named with the shape where it is not.
        ("chunks + chunks / (devices - 1)", "--max-in-flight: the bound `chunks + chunks / (devices - 1)` cannot be evaluated on device 0: 1 / 0 divides by zero (at 1 stage, 1 chunk, 1 stage per device)"),
    ] {
        let out = pipegnn(&["proptest", "--kind", "1f1b", "--max-in-flight", expression, "--cases", "16"]);
        fails_with(&out, 2, needle);
        assert!(stdout(&out).is_empty(), "{expression}");
    }
}

#[test]
fn bad_shapes_and_templates_are_usage_errors() {
    for (args, needle) in [
        (
            vec!["--kind", "1f1b", "--stages", "8..2"],
            "--stages: `8..2` holds no count of at least 1",
        ),
        (
            vec!["--kind", "1f1b", "--chunks", "x"],
            "--chunks: `x` is not a count or a range like 2..8",
        ),
        (
            vec!["--kind", "gpipe", "--stages-per-device", "2"],
            "--stages-per-device: gpipe places 1 stage per device, outside 2",
        ),
        (
            vec![
                "--kind",
                "looped_bfs",
                "--stages",
                "5",
                "--stages-per-device",
                "2",
            ],
            "no stage count in 5..5 is a multiple",
        ),
        (
            vec!["--kind", "1f1b", "--stages", "1..5000"],
            "--stages: at most 4096",
        ),
        (
            vec!["--generator", "gen {stage} {chunks}"],
            "--generator: unknown placeholder `{stage}`",
        ),
        (
            vec!["--generator", "gen {chunks}"],
            "--generator: the command never names {stages}",
        ),
        (
            vec![
                "--generator",
                "gen {stages} {chunks}",
                "--stages-per-device",
                "1..2",
            ],
            "--stages-per-device 1..2 but the command names neither {v} nor {devices}",
        ),
        (
            vec!["--generator", "gen {stages} {chunks}", "--timeout", "soon"],
            "--timeout: ",
        ),
    ] {
        let mut all = vec!["proptest"];
        all.extend(args.iter());
        let out = pipegnn(&all);
        fails_with(&out, 2, needle);
    }
    // Two sources, or none, are clap's usage errors.
    assert_eq!(code(&pipegnn(&["proptest"])), 2);
    assert_eq!(
        code(&pipegnn(&[
            "proptest", "--kind", "1f1b", "--file", "x.yaml"
        ])),
        2
    );
    // A missing file is exit 3, as for every command.
    let out = pipegnn(&["proptest", "--file", "no/such/schedule.yaml"]);
    fails_with(&out, 3, "no/such/schedule.yaml: cannot read");
}

#[test]
fn failing_generators_get_one_line_naming_the_command_and_the_shape() {
    // Exits non-zero: its last stderr line is shown.
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "echo boom >&2; exit 3 # {stages} {chunks}",
        "--stages",
        "2",
        "--chunks",
        "3",
    ]);
    fails_with(&out, 11, "--generator: `echo boom >&2; exit 3 # 2 3` exited with status 3: boom (asked for 2 stages, 3 chunks, 1 stage per device)");
    // Not found.
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "no-such-generator-x {stages} {chunks}",
        "--stages",
        "2",
        "--chunks",
        "3",
    ]);
    fails_with(&out, 11, "exited with status 127");
    // Prints garbage: invalid input, as a bad schedule file is.
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "echo hello {stages} {chunks}",
        "--stages",
        "2",
        "--chunks",
        "3",
    ]);
    fails_with(&out, 4, "--generator: `echo hello 2 3` printed no schedule for 2 stages, 3 chunks, 1 stage per device: stdout:1:1: `hello 2 3` is not an action");
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "echo '{{\"stages\": {stages}, \"orders\": 7}}' # {chunks}",
        "--stages",
        "2",
        "--chunks",
        "3",
    ]);
    fails_with(&out, 4, "printed no schedule for 2 stages, 3 chunks");
    // Hangs, with a child of its own: killed at the timeout, with its whole process group.
    let started = std::time::Instant::now();
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "sh -c 'sleep 100' # {stages} {chunks}",
        "--timeout",
        "300ms",
        "--stages",
        "2",
        "--chunks",
        "3",
    ]);
    fails_with(&out, 11, "--generator: `sh -c 'sleep 100' # 2 3` ran past --timeout 300ms and was killed (asked for 2 stages, 3 chunks, 1 stage per device)");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_generator_that_leaves_out_ops_is_shrunk_to_the_first_shape_it_misses() {
    // Always one stage and one chunk, whatever it is asked.
    let out = pipegnn(&[
        "proptest",
        "--generator",
        "printf '0F0,0B0\\n' # {stages} {chunks}",
        "--cases",
        "16",
    ]);
    fails_with(
        &out,
        10,
        "the ops property fails at 1 stage, 2 chunks, 1 stage per device",
    );
    let text = stdout(&out);
    assert!(text.contains(": ops: F(1,0) is missing"), "{text}");
    assert!(text.contains("  0: [[F,0,0],[B,0,0]]\n"), "{text}");
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    for extra in [
        &["--kind", "zbv"][..],
        &["--kind", "gpipe", "--max-in-flight", ONE_F_ONE_B_BOUND],
    ] {
        for format in ["table", "json"] {
            let mut args = vec![
                "proptest", "--seed", "11", "--cases", "40", "--format", format,
            ];
            args.extend(extra);
            let first = pipegnn(&args);
            let second = pipegnn(&args);
            assert!(!first.stdout.is_empty());
            assert_eq!(first.stdout, second.stdout, "{args:?}");
            assert_eq!(first.stderr, second.stderr, "{args:?}");
        }
    }
    // Another seed draws other cases.
    let seeded = |seed: &str| {
        stdout(&pipegnn(&[
            "proptest",
            "--kind",
            "gpipe",
            "--max-in-flight",
            ONE_F_ONE_B_BOUND,
            "--seed",
            seed,
        ]))
    };
    let lines = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("first failing case"))
            .unwrap()
            .to_string()
    };
    assert_ne!(lines(&seeded("1")), lines(&seeded("2")));
}

#[test]
fn proptest_json_has_the_documented_shape() {
    let out = pipegnn(&[
        "proptest",
        "--kind",
        "gpipe",
        "--stages",
        "2..4",
        "--chunks",
        "2..6",
        "--max-in-flight",
        ONE_F_ONE_B_BOUND,
        "--seed",
        "4",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 10);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "kind");
    assert_eq!(doc["name"], "gpipe");
    assert_eq!(doc["passed"], false);
    assert_eq!(doc["ranges"]["stages"], serde_json::json!([2, 4]));
    assert_eq!(doc["max_in_flight"], ONE_F_ONE_B_BOUND);
    let failure = &doc["failure"];
    assert_eq!(failure["property"], "stash_bound");
    assert_eq!(
        failure["shape"],
        serde_json::json!({"stages": 2, "chunks": 2, "stages_per_device": 1})
    );
    assert_eq!(failure["uniform_times"], true);
    assert_eq!(
        failure["times"],
        serde_json::json!([{"forward_ns": 1, "input_ns": 1, "weight_ns": 1}])
    );
    assert_eq!(
        failure["orders"]["1"],
        serde_json::json!([["F", 0, 1], ["F", 1, 1], ["B", 0, 1], ["B", 1, 1]])
    );
    assert!(failure["reproduce"]
        .as_str()
        .unwrap()
        .starts_with("pipegnn proptest --kind gpipe --stages 2 --chunks 2"));
    let out = pipegnn(&[
        "proptest", "--kind", "1f1b", "--cases", "8", "--format", "json",
    ]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["passed"].clone(), doc["cases_passed"].clone()),
        (Value::Bool(true), Value::from(8))
    );
    assert_eq!(doc["failure"], Value::Null);
}

/// Whether `python3` runs here; the tests that need it say so and pass when it does not.
fn python3() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("skipping: python3 is not on PATH");
    }
    found
}

#[test]
fn the_python_1f1b_generator_passes_in_both_formats() {
    if !python3() {
        return;
    }
    for format in ["json", "csv"] {
        let template = format!(
            "python3 schedules/gen_1f1b.py --stages {{stages}} --chunks {{chunks}} --format {format}"
        );
        let out = pipegnn(&[
            "proptest",
            "--generator",
            &template,
            "--stages",
            "1..5",
            "--chunks",
            "1..8",
            "--max-in-flight",
            ONE_F_ONE_B_BOUND,
            "--closed-form",
            "1f1b",
            "--cases",
            "24",
        ]);
        assert!(
            out.status.success(),
            "{format}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("ok: generator `{template}`: 24 cases held")),
            "{text}"
        );
        assert!(
            text.contains("closed form 1f1b: held on all 24 cases"),
            "{text}"
        );
    }
}

#[test]
fn the_python_eager_variant_is_caught_and_shrunk() {
    if !python3() {
        return;
    }
    let template = "python3 schedules/gen_1f1b_eager.py --stages {stages} --chunks {chunks}";
    let out = pipegnn(&[
        "proptest",
        "--generator",
        template,
        "--stages",
        "1..5",
        "--chunks",
        "1..8",
        "--max-in-flight",
        ONE_F_ONE_B_BOUND,
        "--cases",
        "24",
    ]);
    fails_with(
        &out,
        10,
        "the stash_bound property fails at 1 stage, 2 chunks, 1 stage per device",
    );
    let text = stdout(&out);
    assert!(
        text.contains("device 0 holds 2 chunks in flight, more than the bound"),
        "{text}"
    );
    assert!(text.contains(
        "reproduce: pipegnn proptest --generator 'python3 schedules/gen_1f1b_eager.py --stages {stages} --chunks {chunks}' --stages 1 --chunks 2 --stages-per-device 1 --max-in-flight 'min(devices - device, chunks)' --seed 0 --cases 24\n"
    ), "{text}");
    assert!(
        !root().join("schedules/__pycache__").exists(),
        "the scripts leave no bytecode"
    );
}

/// The README's `proptest` examples, each a command (`$ pipegnn ...`, `\` continuing it) and
/// what it prints: stdout, then the `error:` line stderr gets.
fn readme_examples() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut examples = Vec::new();
    for block in readme.split("```text\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let Some(first) = block.strip_prefix("$ pipegnn proptest ") else {
            continue;
        };
        let mut lines = first.lines();
        let mut command = String::from("proptest ");
        for line in lines.by_ref() {
            match line.strip_suffix('\\') {
                Some(part) => command.push_str(part.trim_start()),
                None => {
                    command.push_str(line.trim_start());
                    break;
                }
            }
        }
        let output: Vec<&str> = lines.collect();
        examples.push((command, output.join("\n") + "\n"));
    }
    examples
}

#[test]
fn the_readme_s_proptest_examples_print_what_it_shows() {
    if !python3() {
        return;
    }
    let examples = readme_examples();
    assert_eq!(examples.len(), 2, "{examples:?}");
    for (command, shown) in examples {
        let binary = env!("CARGO_BIN_EXE_pipegnn");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("'{binary}' {command}"))
            .current_dir(root())
            .output()
            .unwrap();
        let printed = stdout(&out) + &stderr(&out);
        assert_eq!(printed, shown, "{command}");
    }
}
