//! `pipegnn proptest`: property tests of a built-in kind, a generator command or a schedule
//! file on `testing::run`. This file runs the command (under `sh -c`, with a timeout, in a
//! process group of its own that is killed whole), reads what it prints, and reports.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::run::{print, read_document, to_json, CliError, ExitStatus, Result};
use super::{ClosedFormArg, ProptestArgs, ReportFormat};
use crate::diag::MAX_DOCUMENT_BYTES;
use crate::report::{json, timeline};
use crate::schedule::{self, catalog, Generator, Op, OpKind, ScheduleError};
use crate::testing::{
    self, Bound, ClosedForm, Failure, OpTimes, Outcome, Produced, Properties, RunError, Settings,
    Shape, ShapeRanges, StageTimes, Violation,
};
use crate::units;

/// Where the schedules come from.
enum Source {
    Kind {
        name: String,
        generator: Generator,
    },
    Command {
        template: Template,
        timeout: Duration,
        timeout_text: String,
    },
    File {
        path: String,
        schedule: schedule::Schedule,
    },
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Kind { name, .. } => format!("kind {name}"),
            Source::Command { template, .. } => format!("generator `{}`", template.text),
            Source::File { path, .. } => format!("file {path}"),
        }
    }
}

pub(super) fn run(args: &ProptestArgs) -> Result<()> {
    let source = source(args)?;
    let ranges = ranges(args, &source)?;
    let max_in_flight = match (&args.max_in_flight, &source) {
        (Some(text), _) => Some(
            Bound::parse(text)
                .map_err(|err| usage(format!("--max-in-flight: `{}`: {err}", text.trim())))?,
        ),
        (None, Source::Kind { generator, .. }) => Some(kind_bound(*generator)),
        (None, Source::File { schedule, .. }) => catalog::of(schedule.kind())
            .and_then(|entry| entry.generator)
            .map(kind_bound),
        (None, Source::Command { .. }) => None,
    };
    let properties = Properties {
        max_in_flight,
        closed_form: args.closed_form.map(|form| match form {
            ClosedFormArg::Gpipe => ClosedForm::GPipe,
            ClosedFormArg::OneFOneB => ClosedForm::OneFOneB,
            ClosedFormArg::Interleaved => ClosedForm::Interleaved,
            ClosedFormArg::ZbH1 => ClosedForm::ZbH1,
        }),
    };
    let settings = Settings {
        cases: args.cases,
        seed: args.seed,
    };
    let result = match &source {
        Source::Kind { generator, .. } => {
            testing::run(&settings, &ranges, &properties, kind_source(*generator))
        }
        Source::Command {
            template,
            timeout,
            timeout_text,
        } => testing::run(
            &settings,
            &ranges,
            &properties,
            command_source(template, *timeout, timeout_text),
        ),
        Source::File { schedule, .. } => testing::run(&settings, &ranges, &properties, |_| {
            Ok::<_, CliError>(Produced::Schedule(schedule.clone()))
        }),
    };
    let outcome = result.map_err(|err| match err {
        RunError::Source { error, .. } => error,
        RunError::Refused {
            passed,
            refused,
            reason,
        } => usage(format!(
            "--stages, --chunks, --stages-per-device: {} refused {refused} of the shapes drawn ({passed} held): narrow the ranges; the last refusal: {reason}",
            source.label()
        )),
        RunError::Flaky { shape, reason } => CliError::new(
            ExitStatus::GeneratorFailed,
            format!(
                "{}: {shape} failed ({reason}) and then held: the source is not a function of the shape",
                source.label()
            ),
        ),
    })?;
    if let Some(failure) = &outcome.failure {
        if let Violation::Bound { .. } = failure.violation {
            return Err(usage(format!(
                "--max-in-flight: {} (at {})",
                failure.violation, failure.shrunk.shape
            )));
        }
    }
    let reproduce = outcome
        .failure
        .as_ref()
        .map(|failure| reproduce(args, &failure.shrunk.shape));
    let text = match args.format {
        ReportFormat::Table => text_report(
            &source,
            &ranges,
            &properties,
            args,
            &outcome,
            reproduce.as_deref(),
        ),
        ReportFormat::Json => to_json(&json_report(
            &source,
            &ranges,
            &properties,
            args,
            &outcome,
            reproduce.as_deref(),
        ))?,
    };
    print(&text)?;
    match &outcome.failure {
        None => Ok(()),
        Some(failure) => Err(CliError::new(
            ExitStatus::PropertyFails,
            format!(
                "{}: the {} property fails at {} (shrunk; the case and the command that reproduces it are printed above)",
                source.label(),
                failure.violation.property(),
                failure.shrunk.shape
            ),
        )),
    }
}

fn usage(message: impl std::fmt::Display) -> CliError {
    CliError::new(ExitStatus::Usage, message)
}

fn kind_bound(generator: Generator) -> Bound {
    Bound::parse(catalog::stash_bound(generator))
        .expect("every catalog bound parses (schedule::catalog's test)")
}

fn source(args: &ProptestArgs) -> Result<Source> {
    if let Some(name) = &args.kind {
        let generator = catalog::find(name)
            .and_then(|entry| entry.generator)
            .expect("clap takes only generated kinds");
        return Ok(Source::Kind {
            name: name.clone(),
            generator,
        });
    }
    if let Some(text) = &args.generator {
        let template = Template::parse(text).map_err(|why| usage(format!("--generator: {why}")))?;
        let timeout_ns = units::parse_duration_ns(&args.timeout)
            .map_err(|err| usage(format!("--timeout: {err}")))?;
        if timeout_ns == 0 || timeout_ns > 3_600_000_000_000 {
            return Err(usage(format!(
                "--timeout: {} is not between 1ns and 1h",
                args.timeout
            )));
        }
        return Ok(Source::Command {
            template,
            timeout: Duration::from_nanos(timeout_ns),
            timeout_text: args.timeout.trim().to_string(),
        });
    }
    let path = args.file.as_ref().expect("clap requires a source");
    let text = read_document(path)?;
    let name = path.display().to_string();
    let schedule = schedule::file::parse_any(&name, &text)
        .map_err(|d| CliError::new(ExitStatus::InvalidInput, d))?;
    Ok(Source::File {
        path: name,
        schedule,
    })
}

/// `2..8` (both ends), `2..=8`, or `4`.
fn parse_range(flag: &str, text: &str) -> Result<RangeInclusive<u32>> {
    let bad = || {
        usage(format!(
            "--{flag}: `{text}` is not a count or a range like 2..8 (both ends included)"
        ))
    };
    let number = |part: &str| part.trim().parse::<u32>().map_err(|_| bad());
    let range = match text.split_once("..") {
        Some((low, high)) => number(low)?..=number(high.strip_prefix('=').unwrap_or(high))?,
        None => number(text).map(|n| n..=n)?,
    };
    if range.is_empty() || *range.start() == 0 {
        return Err(usage(format!(
            "--{flag}: `{text}` holds no count of at least 1"
        )));
    }
    Ok(range)
}

fn ranges(args: &ProptestArgs, source: &Source) -> Result<ShapeRanges> {
    if let Source::File { schedule, .. } = source {
        let devices = schedule.n_devices().max(1) as u32;
        return Ok(ShapeRanges::fixed(Shape {
            stages: schedule.n_stages(),
            chunks: schedule.n_chunks(),
            stages_per_device: schedule.n_stages().div_ceil(devices),
        }));
    }
    let given = |flag: &str, value: &Option<String>, default: RangeInclusive<u32>| match value {
        Some(text) => parse_range(flag, text),
        None => Ok(default),
    };
    let stages = given("stages", &args.stages, 1..=8)?;
    let chunks = given("chunks", &args.chunks, 1..=32)?;
    let stages_per_device = match source {
        Source::Kind { name, generator } => {
            let default = match generator.placement() {
                schedule::StagePlacement::RoundRobin => 1..=4,
                _ => {
                    let own = generator.default_stages_per_device();
                    own..=own
                }
            };
            let range = given(
                "stages-per-device",
                &args.stages_per_device,
                default.clone(),
            )?;
            if default.start() == default.end() {
                if !range.contains(default.start()) {
                    return Err(usage(format!(
                        "--stages-per-device: {name} places {} per device, outside {}",
                        if *default.start() == 1 {
                            "1 stage".to_string()
                        } else {
                            format!("{} stages", default.start())
                        },
                        show_range(&range)
                    )));
                }
                default
            } else {
                range
            }
        }
        _ => given("stages-per-device", &args.stages_per_device, 1..=1)?,
    };
    let ranges = ShapeRanges::new(stages, chunks, stages_per_device);
    if let Some(problem) = ranges.problem() {
        return Err(usage(format!("--stages, --stages-per-device: {problem}")));
    }
    let (most_stages, most_chunks) = (*ranges.stages.end(), *ranges.chunks.end());
    let limits = [
        (most_stages > schedule::MAX_STAGES, format!("--stages: at most {}", schedule::MAX_STAGES)),
        (most_chunks > schedule::MAX_CHUNKS, format!("--chunks: at most {}", schedule::MAX_CHUNKS)),
        (
            u64::from(most_stages) * u64::from(most_chunks) > schedule::MAX_STAGE_CHUNKS,
            format!(
                "--stages, --chunks: {most_stages} stages x {most_chunks} chunks is more than {} stage-chunk pairs",
                schedule::MAX_STAGE_CHUNKS
            ),
        ),
        (
            most_stages / ranges.stages_per_device.start() > schedule::MAX_DEVICES as u32,
            format!(
                "--stages, --stages-per-device: {most_stages} stages at {} per device need more than the {} devices a network holds",
                ranges.stages_per_device.start(),
                schedule::MAX_DEVICES
            ),
        ),
    ];
    if let Some((_, message)) = limits.into_iter().find(|(over, _)| *over) {
        return Err(usage(message));
    }
    if let Source::Command { template, .. } = source {
        template.check_placeholders(&ranges)?;
    }
    Ok(ranges)
}

fn show_range(range: &RangeInclusive<u32>) -> String {
    if range.start() == range.end() {
        range.start().to_string()
    } else {
        format!("{}..{}", range.start(), range.end())
    }
}

/// A built-in kind: its schedule for the shape, or the shape refused where PyTorch refuses it
/// too; any other refusal would be a bug in the generator, so it is a failing case.
fn kind_source(generator: Generator) -> impl FnMut(&Shape) -> Result<Produced> {
    move |shape| {
        Ok(
            match generator.generate_on(shape.stages, shape.stages_per_device, shape.chunks) {
                Ok(schedule) => Produced::Schedule(schedule),
                Err(ScheduleError::Shape(why)) if why.contains("PyTorch refuses") => {
                    Produced::Refused(why)
                }
                Err(ScheduleError::Shape(why)) => Produced::Invalid(Violation::Ops(why)),
                Err(ScheduleError::Deadlock(deadlock)) => {
                    Produced::Invalid(Violation::Deadlock(deadlock))
                }
            },
        )
    }
}

/// The generator command: run once per shape (its listing is kept), its output read as a
/// schedule file or torch's CSV by what it looks like.
fn command_source<'a>(
    template: &'a Template,
    timeout: Duration,
    timeout_text: &'a str,
) -> impl FnMut(&Shape) -> Result<Produced> + 'a {
    let mut seen: BTreeMap<Shape, schedule::file::Listing> = BTreeMap::new();
    move |shape| {
        if let Some(listing) = seen.get(shape) {
            return Ok(Produced::Listing(listing.clone()));
        }
        let command = template.render(shape);
        let failed = |why: String| {
            CliError::new(
                ExitStatus::GeneratorFailed,
                format!("--generator: `{command}` {why} (asked for {shape})"),
            )
        };
        let stdout = run_command(&command, timeout, timeout_text).map_err(failed)?;
        let text = String::from_utf8(stdout).map_err(|err| {
            CliError::new(
                ExitStatus::InvalidInput,
                format!(
                    "--generator: `{command}` printed no schedule for {shape}: byte {} is not UTF-8",
                    err.utf8_error().valid_up_to()
                ),
            )
        })?;
        let listing = schedule::file::read_listing_detected("stdout", &text).map_err(|d| {
            let more = match d.0.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            };
            let first = d.0.first().map(ToString::to_string).unwrap_or_default();
            CliError::new(
                ExitStatus::InvalidInput,
                format!("--generator: `{command}` printed no schedule for {shape}: {first}{more}"),
            )
        })?;
        seen.insert(*shape, listing.clone());
        Ok(Produced::Listing(listing))
    }
}

/// The most a generator's stderr is kept, for its last line in an error.
const MAX_STDERR_BYTES: usize = 64 << 10;

/// Runs `command` under `sh -c` in a process group of its own, with stdin closed, and returns
/// what it printed on stdout; the whole group is killed when it runs past `timeout` or prints
/// more than [`MAX_DOCUMENT_BYTES`].
fn run_command(
    command: &str,
    timeout: Duration,
    timeout_text: &str,
) -> std::result::Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        sh.process_group(0);
    }
    let mut child = sh
        .spawn()
        .map_err(|err| format!("could not be started with sh -c: {err}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (sender, receiver) = mpsc::channel();
    let out_sender = sender.clone();
    // Readers on threads of their own, so neither pipe fills while the other is read.
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let read = (&mut stdout)
            .take(MAX_DOCUMENT_BYTES as u64 + 1)
            .read_to_end(&mut kept);
        let _ = out_sender.send((true, read.map(|_| kept)));
    });
    std::thread::spawn(move || {
        let (mut kept, mut chunk) = (Vec::new(), [0u8; 8192]);
        let read = loop {
            match stderr.read(&mut chunk) {
                Ok(0) => break Ok(kept),
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > MAX_STDERR_BYTES {
                        kept.drain(..kept.len() - MAX_STDERR_BYTES);
                    }
                }
                Err(err) => break Err(err),
            }
        };
        let _ = sender.send((false, read));
    });
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((true, read)) => out = Some(read),
            Ok((false, read)) => err = Some(read),
            Err(_) => {
                kill_group(&mut child);
                return Err(format!("ran past --timeout {timeout_text} and was killed"));
            }
        }
        if let Some(Ok(bytes)) = &out {
            if bytes.len() > MAX_DOCUMENT_BYTES {
                kill_group(&mut child);
                return Err(format!(
                    "printed more than {} MiB and was killed",
                    MAX_DOCUMENT_BYTES >> 20
                ));
            }
        }
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                kill_group(&mut child);
                return Err(format!("ran past --timeout {timeout_text} and was killed"));
            }
            Err(err) => return Err(format!("could not be waited for: {err}")),
        }
    };
    let stdout = out
        .expect("the loop ends with both read")
        .map_err(|err| format!("could not be read from: {err}"))?;
    if !status.success() {
        let stderr = err.and_then(|read| read.ok()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        let said = last.map_or(String::new(), |line| format!(": {}", line.trim()));
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(format!("{how}{said}"));
    }
    Ok(stdout)
}

/// Kills the child's whole process group (what `sh -c` started too), then the child, and
/// reaps it.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -s KILL -- -{}", child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A generator command template: text with `{stages}`, `{chunks}`, `{v}` and `{devices}`.
struct Template {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Stages,
    Chunks,
    StagesPerDevice,
    Devices,
}

impl Template {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the command is empty".into());
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "the `{{` at column {} is not closed (write `{{{{` for a brace)",
                            at + 1
                        ));
                    };
                    let name = &rest[..end];
                    let piece = match name {
                        "stages" => Piece::Stages,
                        "chunks" => Piece::Chunks,
                        "v" => Piece::StagesPerDevice,
                        "devices" => Piece::Devices,
                        _ => {
                            return Err(format!(
                                "unknown placeholder `{{{name}}}` (expected {{stages}}, {{chunks}}, {{v}} or {{devices}}; `{{{{` for a brace)"
                            ))
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "the `}}` at column {} closes nothing (write `}}}}` for a brace)",
                        at + 1
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    /// The template must pass the shape it is asked for: `{stages}` and `{chunks}` always,
    /// `{v}` or `{devices}` when the stages per device vary or are not 1.
    fn check_placeholders(&self, ranges: &ShapeRanges) -> Result<()> {
        let has = |piece: Piece| self.pieces.contains(&piece);
        for (piece, name) in [(Piece::Stages, "{stages}"), (Piece::Chunks, "{chunks}")] {
            if !has(piece) {
                return Err(usage(format!(
                    "--generator: the command never names {name}, so it cannot be asked for a shape"
                )));
            }
        }
        let per_device = &ranges.stages_per_device;
        if (per_device.start(), per_device.end()) != (&1, &1)
            && !has(Piece::StagesPerDevice)
            && !has(Piece::Devices)
        {
            return Err(usage(format!(
                "--generator: --stages-per-device {} but the command names neither {{v}} nor {{devices}}",
                show_range(per_device)
            )));
        }
        Ok(())
    }

    /// The command for `shape`: only integers are put in.
    fn render(&self, shape: &Shape) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.clone(),
                Piece::Stages => shape.stages.to_string(),
                Piece::Chunks => shape.chunks.to_string(),
                Piece::StagesPerDevice => shape.stages_per_device.to_string(),
                Piece::Devices => shape.devices().to_string(),
            })
            .collect()
    }
}

/// A word as `sh` reads it back unchanged: as it is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The command that runs the shrunk shape again: the same source, properties, seed and cases,
/// the shape fixed.
fn reproduce(args: &ProptestArgs, shape: &Shape) -> String {
    let mut words: Vec<String> = vec!["pipegnn".into(), "proptest".into()];
    let mut flag = |name: &str, value: String| {
        words.push(format!("--{name}"));
        words.push(shell_word(&value));
    };
    if let Some(kind) = &args.kind {
        flag("kind", kind.clone());
    }
    if let Some(template) = &args.generator {
        flag("generator", template.clone());
        if args.timeout != "10s" {
            flag("timeout", args.timeout.clone());
        }
    }
    match &args.file {
        Some(path) => flag("file", path.display().to_string()),
        None => {
            flag("stages", shape.stages.to_string());
            flag("chunks", shape.chunks.to_string());
            flag("stages-per-device", shape.stages_per_device.to_string());
        }
    }
    if let Some(bound) = &args.max_in_flight {
        flag("max-in-flight", bound.trim().to_string());
    }
    if let Some(form) = &args.closed_form {
        flag("closed-form", closed_form_name(*form).to_string());
    }
    flag("seed", args.seed.to_string());
    flag("cases", args.cases.to_string());
    words.join(" ")
}

fn closed_form_name(form: ClosedFormArg) -> &'static str {
    match form {
        ClosedFormArg::Gpipe => "gpipe",
        ClosedFormArg::OneFOneB => "1f1b",
        ClosedFormArg::Interleaved => "interleaved",
        ClosedFormArg::ZbH1 => "zb-h1",
    }
}

/// Per device, its ops in file form, an optimizer step at the end of a list left implied (as
/// schedule files and `schedule::file::orders` write them).
fn file_orders(orders: &[Vec<Op>]) -> Vec<(String, Vec<schedule::file::FileOp>)> {
    orders
        .iter()
        .enumerate()
        .map(|(device, order)| {
            let tail = order
                .iter()
                .rev()
                .take_while(|op| op.kind == OpKind::Optimizer)
                .count();
            let ops = order[..order.len() - tail]
                .iter()
                .map(|op| (op.kind.code(), op.chunk, op.stage))
                .collect();
            (device.to_string(), ops)
        })
        .collect()
}

/// The failing order: the ASCII timeline at unit op times where the schedule runs, else each
/// device's action list.
fn order_text(failure: &Failure) -> String {
    if let Some(schedule) = &failure.schedule {
        if let Ok(trace) = testing::simulate(schedule, &OpTimes::Uniform(StageTimes::UNIT)) {
            return format!(
                "order (unit op times: F 1, I 1, W 1, B 2):\n{}",
                timeline::render(&trace, timeline::Axis::Slots)
            );
        }
    }
    let mut out = String::from("order (per device, [op, chunk, stage] in issue order):\n");
    for (device, ops) in file_orders(&failure.orders) {
        let cells: Vec<String> = ops
            .iter()
            .map(|(code, chunk, stage)| format!("[{code},{chunk},{stage}]"))
            .collect();
        out.push_str(&format!("  {device}: [{}]\n", cells.join(",")));
    }
    out
}

fn checked_list(properties: &Properties, source: &Source) -> String {
    let mut checked = vec![
        "every op once at the asked shape".to_string(),
        "no deadlock".to_string(),
        "the simulated run completes as written under uniform and per-stage op times".to_string(),
    ];
    match &properties.max_in_flight {
        Some(bound) => checked.push(format!("each device's stash within `{bound}`")),
        None if matches!(source, Source::Command { .. } | Source::File { .. }) => {
            checked.push("no stash bound (give one with --max-in-flight)".into())
        }
        None => {}
    }
    if let Some(form) = properties.closed_form {
        checked.push(format!("the {form} closed form"));
    }
    checked.join(", ")
}

fn text_report(
    source: &Source,
    ranges: &ShapeRanges,
    properties: &Properties,
    args: &ProptestArgs,
    outcome: &Outcome,
    reproduce: Option<&str>,
) -> String {
    let shapes = format!(
        "stages {}, chunks {}, stages per device {}",
        show_range(&ranges.stages),
        show_range(&ranges.chunks),
        show_range(&ranges.stages_per_device)
    );
    let mut out = String::new();
    let Some(failure) = &outcome.failure else {
        out.push_str(&format!(
            "ok: {}: {} cases held (seed {}), {} shape{} in {shapes}\n",
            source.label(),
            outcome.passed,
            args.seed,
            outcome.shapes.len(),
            if outcome.shapes.len() == 1 { "" } else { "s" }
        ));
        out.push_str(&format!("checked: {}\n", checked_list(properties, source)));
        if let Some(form) = properties.closed_form {
            let checked = outcome.closed_form_checked;
            out.push_str(&if checked == outcome.passed {
                format!("closed form {form}: held on all {checked} cases\n")
            } else {
                format!(
                    "closed form {form}: held on {checked} of the {} cases (it does not cover the others' shapes)\n",
                    outcome.passed
                )
            });
        }
        if outcome.refused > 0 {
            out.push_str(&format!(
                "refused: {} shapes the kind does not make (PyTorch refuses them too), skipped\n",
                outcome.refused
            ));
        }
        return out;
    };
    out.push_str(&format!(
        "FAILED: {}: {}: {}\n",
        source.label(),
        failure.violation.property(),
        failure.violation
    ));
    out.push_str(&format!(
        "shrunk to: {}; op times {}\n",
        failure.shrunk.shape, failure.shrunk.times
    ));
    out.push_str(&format!(
        "first failing case: {} ({} cases held before it; seed {}, {shapes})\n",
        failure.original.shape, outcome.passed, args.seed
    ));
    out.push_str(&order_text(failure));
    if let Some(command) = reproduce {
        out.push_str(&format!("reproduce: {command}\n"));
    }
    out
}

fn json_report(
    source: &Source,
    ranges: &ShapeRanges,
    properties: &Properties,
    args: &ProptestArgs,
    outcome: &Outcome,
    reproduce: Option<&str>,
) -> json::ProptestDoc {
    let pair = |range: &RangeInclusive<u32>| [*range.start(), *range.end()];
    let shape_doc = |shape: &Shape| json::ShapeDoc {
        stages: shape.stages,
        chunks: shape.chunks,
        stages_per_device: shape.stages_per_device,
    };
    let (kind, name) = match source {
        Source::Kind { name, .. } => ("kind", name.clone()),
        Source::Command { template, .. } => ("generator", template.text.clone()),
        Source::File { path, .. } => ("file", path.clone()),
    };
    let times_doc = |times: StageTimes| json::StageTimesDoc {
        forward_ns: times.forward_ns,
        input_ns: times.input_ns,
        weight_ns: times.weight_ns,
    };
    json::ProptestDoc {
        source: kind,
        name,
        seed: args.seed,
        cases: args.cases,
        passed: outcome.failure.is_none(),
        cases_passed: outcome.passed,
        refused: outcome.refused,
        shapes: outcome.shapes.len(),
        ranges: json::ProptestRangesDoc {
            stages: pair(&ranges.stages),
            chunks: pair(&ranges.chunks),
            stages_per_device: pair(&ranges.stages_per_device),
        },
        max_in_flight: properties
            .max_in_flight
            .as_ref()
            .map(|bound| bound.text().to_string()),
        closed_form: properties.closed_form.map(ClosedForm::name),
        closed_form_cases: outcome.closed_form_checked,
        failure: outcome.failure.as_ref().map(|failure| {
            let (uniform_times, times) = match &failure.shrunk.times {
                OpTimes::Uniform(times) => (true, vec![times_doc(*times)]),
                OpTimes::PerStage(per_stage) => {
                    (false, per_stage.iter().copied().map(times_doc).collect())
                }
            };
            json::ProptestFailureDoc {
                property: failure.violation.property(),
                message: failure.violation.to_string(),
                shape: shape_doc(&failure.shrunk.shape),
                original_shape: shape_doc(&failure.original.shape),
                uniform_times,
                times,
                orders: json::OrderedMap(file_orders(&failure.orders)),
                reproduce: reproduce.unwrap_or_default().to_string(),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(stages: u32, chunks: u32, stages_per_device: u32) -> Shape {
        Shape {
            stages,
            chunks,
            stages_per_device,
        }
    }

    #[test]
    fn templates_put_in_integers_and_refuse_what_they_cannot_read() {
        let template = Template::parse("gen --s {stages} -k={chunks} {v}/{devices} {{x}}").unwrap();
        assert_eq!(template.render(&shape(8, 3, 2)), "gen --s 8 -k=3 2/4 {x}");
        let err = |text: &str| Template::parse(text).err().unwrap();
        assert!(err("gen {stage}").starts_with("unknown placeholder `{stage}`"));
        assert!(err("gen {stages").contains("`{` at column 5 is not closed"));
        assert!(err("gen }").contains("`}` at column 5 closes nothing"));
        assert_eq!(err("  "), "the command is empty");
    }

    #[test]
    fn ranges_are_counts_or_inclusive_ranges() {
        assert_eq!(parse_range("stages", "2..8").unwrap(), 2..=8);
        assert_eq!(parse_range("stages", "2..=8").unwrap(), 2..=8);
        assert_eq!(parse_range("stages", " 4 ").unwrap(), 4..=4);
        for bad in ["", "x", "2..", "..3", "1.5", "2...8", "-1..3"] {
            let err = parse_range("stages", bad).unwrap_err().message;
            assert!(
                err.contains("is not a count or a range like 2..8"),
                "{bad}: {err}"
            );
        }
        assert!(parse_range("chunks", "5..2")
            .unwrap_err()
            .message
            .contains("holds no count"));
        assert!(parse_range("chunks", "0")
            .unwrap_err()
            .message
            .contains("holds no count"));
    }

    #[test]
    fn shell_words_survive_sh() {
        assert_eq!(
            shell_word("min(devices - device, chunks)"),
            "'min(devices - device, chunks)'"
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("schedules/a.yaml"), "schedules/a.yaml");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_command_that_hangs_is_killed_with_its_children_at_the_timeout() {
        let started = Instant::now();
        let err =
            run_command("sleep 100 & sleep 100", Duration::from_millis(300), "300ms").unwrap_err();
        assert_eq!(err, "ran past --timeout 300ms and was killed");
        assert!(started.elapsed() < Duration::from_secs(20));
        let err = run_command(
            "echo partial; echo oops >&2; exit 3",
            Duration::from_secs(10),
            "10s",
        )
        .unwrap_err();
        assert_eq!(err, "exited with status 3: oops");
        assert_eq!(
            run_command("printf 'a\\nb'", Duration::from_secs(10), "10s").unwrap(),
            b"a\nb".to_vec()
        );
    }
}
