//! Schedule files: per-device `[op, chunk, stage]` lists, read from YAML or JSON; [`orders`] gives
//! a schedule's lists in file form, which `report::json` writes as the shape `pipegnn schedule
//! --format json` prints, so its output is a valid file.
//!
//! ```yaml
//! stages: 2
//! chunks: 4
//! orders:        # device index -> ops in issue order; transfers are derived
//!   0: [[F,0,0],[F,1,0],[B,0,0],[F,2,0],[B,1,0],[F,3,0],[B,2,0],[B,3,0]]
//!   1: [[F,0,1],[B,0,1],[F,1,1],[B,1,1],[F,2,1],[B,2,1],[F,3,1],[B,3,1]]
//! ```
//!
//! Ops are `F` (forward), `B` (backward), `I` and `W` (the input- and weight-gradient halves of
//! a split backward) and `U` (optimizer step). PyTorch's compute-only CSV is read by
//! [`super::torch_csv`]; [`parse_any`] picks the reader by the file's extension. A stage whose list has no `U`
//! gets one after the last op of its device's list, and an optimizer step at the end of a list is
//! not written out, so files read like PyTorch's pipelining action lists.
//!
//! **Architecture Invariant:** with `scenario::raw`, the only serde_yaml user.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::ir::{DataFlow, Op, OpKind, Schedule, ScheduleKind};
use super::{MAX_CHUNKS, MAX_DEVICES, MAX_STAGES, MAX_STAGE_CHUNKS};
use crate::diag::{Diagnostic, Diagnostics, FieldPath, Locator, Origin};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduleFile {
    #[serde(default)]
    kind: Option<String>,
    stages: u32,
    chunks: u32,
    orders: BTreeMap<String, Vec<(String, u32, u32)>>,
}

/// A schedule text read into per-device op lists, before they are checked to make a whole
/// schedule: what `pipegnn proptest` holds to the shape it asked a generator for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The kind the text names (`kind:` of a file written by pipegnn), else `Custom`.
    pub kind: ScheduleKind,
    /// The stages the text declares (a schedule file) or implies (torch's CSV: the largest stage
    /// plus one).
    pub n_stages: u32,
    /// The chunks, likewise.
    pub n_chunks: u32,
    /// Per device, its ops in issue order, optimizer steps as written (implied ones not added).
    pub orders: Vec<Vec<Op>>,
}

impl Listing {
    /// The schedule of `n_stages` stages and `n_chunks` chunks these lists make, each stage
    /// without an optimizer step getting one at the end of its device's list.
    ///
    /// # Errors
    /// [`super::ScheduleError::Shape`] naming the first op out of range, repeated or missing,
    /// or a stage with ops on two devices.
    pub fn into_schedule(
        mut self,
        n_stages: u32,
        n_chunks: u32,
    ) -> Result<Schedule, super::ScheduleError> {
        append_implied_optimizer_steps(&mut self.orders, n_stages);
        Schedule::from_orders(
            self.kind,
            DataFlow::PIPELINE,
            n_stages,
            n_chunks,
            self.orders,
        )
    }
}

/// Parses a schedule file's text. `file` names it in diagnostics.
///
/// The result is well-formed (every op once, each stage on one device) but not yet checked for
/// deadlock: call [`super::check`].
pub fn parse(file: &str, text: &str) -> Result<Schedule, Diagnostics> {
    let (listing, locator) = read(file, text)?;
    let (n_stages, n_chunks) = (listing.n_stages, listing.n_chunks);
    listing.into_schedule(n_stages, n_chunks).map_err(|err| {
        Diagnostics(vec![locator.diagnostic(
            file,
            FieldPath::root().key("orders"),
            err.to_string(),
        )])
    })
}

/// Reads a schedule file's text into its [`Listing`], without checking that the lists make a
/// whole schedule; `file` names it in diagnostics.
///
/// # Errors
/// Syntax, unknown fields, unknown ops, a shape past the limits, device keys that are not
/// `0..n` without gaps.
pub fn read_listing(file: &str, text: &str) -> Result<Listing, Diagnostics> {
    read(file, text).map(|(listing, _)| listing)
}

fn read(file: &str, text: &str) -> Result<(Listing, Locator), Diagnostics> {
    let locator = Locator::new(file, text).map_err(|diag| Diagnostics(vec![diag]))?;
    let raw: RawScheduleFile = serde_yaml::from_str(text).map_err(|err| {
        let origin = err.location().map_or_else(
            || locator.unplaced_origin(),
            |at| Origin::Line {
                line: at.line(),
                column: at.column(),
            },
        );
        Diagnostics(vec![Diagnostic {
            file: file.to_string(),
            origin,
            path: FieldPath::root(),
            message: strip_location(&err.to_string()),
        }])
    })?;
    if let Some(diag) = locator.unreadable(file) {
        return Err(Diagnostics(vec![diag]));
    }
    let orders_path = FieldPath::root().key("orders");
    // Bound the shape before anything is allocated for it.
    let mut problems = Vec::new();
    let bounds = [
        ("stages", raw.stages, MAX_STAGES),
        ("chunks", raw.chunks, MAX_CHUNKS),
    ];
    for (field, value, most) in bounds {
        if !(1..=most).contains(&value) {
            problems.push(locator.diagnostic(
                file,
                FieldPath::root().key(field),
                format!("must be between 1 and {most}, got {value}"),
            ));
        }
    }
    let pairs = u64::from(raw.stages) * u64::from(raw.chunks);
    if problems.is_empty() && pairs > MAX_STAGE_CHUNKS {
        problems.push(locator.diagnostic(
            file,
            FieldPath::root().key("chunks"),
            format!(
                "{} stages x {} chunks is more than {MAX_STAGE_CHUNKS} stage-chunk pairs",
                raw.stages, raw.chunks
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let mut by_device: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
    for (device_text, ops) in &raw.orders {
        let device_path = orders_path.key(device_text);
        let Ok(device) = device_text.parse::<usize>() else {
            problems.push(locator.diagnostic(
                file,
                device_path,
                "device keys are indices 0, 1, 2, ...",
            ));
            continue;
        };
        if device >= MAX_DEVICES {
            problems.push(locator.diagnostic(
                file,
                device_path,
                format!("device {device} is past the {MAX_DEVICES} devices a network holds"),
            ));
            continue;
        }
        let list = by_device.entry(device).or_default();
        for (i, (code, chunk, stage)) in ops.iter().enumerate() {
            let Some(kind) = OpKind::from_code(code) else {
                problems.push(locator.diagnostic(
                    file,
                    device_path.index(i),
                    format!("unknown op `{code}` (expected F, B, I, W or U)"),
                ));
                continue;
            };
            list.push(Op {
                kind,
                chunk: *chunk,
                stage: *stage,
            });
        }
    }
    if let Some((&last, _)) = by_device.last_key_value() {
        if last + 1 != by_device.len() {
            problems.push(locator.diagnostic(
                file,
                orders_path.clone(),
                format!(
                    "device indices must run 0..{} without gaps",
                    by_device.len()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    // A file may say which generator wrote it; graph parallelism has no file form.
    let kind = raw
        .kind
        .as_deref()
        .and_then(super::catalog::find)
        .filter(|entry| entry.generator.is_some())
        .map_or(ScheduleKind::Custom, |entry| entry.kind);
    let listing = Listing {
        kind,
        n_stages: raw.stages,
        n_chunks: raw.chunks,
        orders: by_device.into_values().collect(),
    };
    Ok((listing, locator))
}

/// Reads a schedule file by its extension: `.csv` as PyTorch's compute-only CSV, anything else
/// as YAML or JSON.
pub fn parse_any(file: &str, text: &str) -> Result<Schedule, Diagnostics> {
    if file.to_ascii_lowercase().ends_with(".csv") {
        super::torch_csv::parse(file, text)
    } else {
        parse(file, text)
    }
}

/// Reads a schedule text into its [`Listing`] by what it looks like, for text without a file
/// name (a generator's output): PyTorch's compute-only CSV when no line is a `key:` of a
/// schedule file (`stages`, `chunks`, `orders`, `kind`) and the text does not open with `{`;
/// otherwise a YAML or JSON schedule file.
pub fn read_listing_detected(file: &str, text: &str) -> Result<Listing, Diagnostics> {
    let keyed = text.lines().any(|line| {
        let line = line.trim_start().trim_start_matches(['"', '\'']);
        ["stages", "chunks", "orders", "kind"].iter().any(|key| {
            line.strip_prefix(key).is_some_and(|rest| {
                rest.trim_start_matches(['"', '\''])
                    .trim_start()
                    .starts_with(':')
            })
        })
    });
    if keyed || text.trim_start().starts_with('{') {
        read_listing(file, text)
    } else {
        super::torch_csv::read_listing(file, text)
    }
}

/// serde_yaml appends " at line L column C" to its messages; the diagnostic prints the location
/// in front instead.
pub(crate) fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

pub(super) fn append_implied_optimizer_steps(orders: &mut [Vec<Op>], n_stages: u32) {
    // One pass: which stages step already, and the first device (in index order) with an op
    // of each stage. Ops past the stages are left for `Schedule::from_orders` to refuse.
    let mut steps = vec![false; n_stages as usize];
    let mut home: Vec<Option<usize>> = vec![None; n_stages as usize];
    for (device, order) in orders.iter().enumerate() {
        for op in order.iter().filter(|op| op.stage < n_stages) {
            let stage = op.stage as usize;
            steps[stage] |= op.kind == OpKind::Optimizer;
            home[stage].get_or_insert(device);
        }
    }
    for stage in 0..n_stages {
        if let (false, Some(device)) = (steps[stage as usize], home[stage as usize]) {
            orders[device].push(Op::optimizer(0, stage));
        }
    }
}

/// One op in file form: `(op, chunk, stage)`, e.g. `("F", 0, 1)`.
pub type FileOp = (&'static str, u32, u32);

/// A schedule's per-device orders in file form: per device, in device order, its key (`"0"`,
/// `"1"`, ...) and its `[op, chunk, stage]` list, optimizer steps at the end of a pipeline's
/// list left implied. `report::json` writes them as `{"0": [["F",0,0], ...], "1": [...]}`.
pub fn orders(schedule: &Schedule) -> Vec<(String, Vec<FileOp>)> {
    schedule
        .orders()
        .iter()
        .enumerate()
        .map(|(device, order)| {
            let implied_tail = if *schedule.flow() == DataFlow::PIPELINE {
                order
                    .iter()
                    .rev()
                    .take_while(|op| op.kind == OpKind::Optimizer)
                    .count()
            } else {
                0
            };
            let ops = order[..order.len() - implied_tail]
                .iter()
                .map(|op| (op.kind.code(), op.chunk, op.stage))
                .collect();
            (device.to_string(), ops)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_output_is_read_by_what_it_looks_like() {
        let json = r#"{"stages": 1, "chunks": 2, "orders": {"0": [["F",0,0],["F",1,0],["B",0,0],["B",1,0]]}}"#;
        let yaml =
            "# a comment\nstages: 1\nchunks: 2\norders:\n  0: [[F,0,0],[F,1,0],[B,0,0],[B,1,0]]\n";
        let csv = "0F0,0F1,0B0,0B1\n";
        let listings: Vec<Listing> = [json, yaml, csv]
            .iter()
            .map(|text| read_listing_detected("stdout", text).unwrap())
            .collect();
        for listing in &listings {
            assert_eq!((listing.n_stages, listing.n_chunks), (1, 2));
            assert_eq!(listing.orders, listings[0].orders);
        }
        // A listing is held to the shape asked, which its text need not declare.
        let err = listings[2].clone().into_schedule(1, 3).unwrap_err();
        assert!(err.to_string().contains("F(2,0) is missing"), "{err}");
        let schedule = listings[2].clone().into_schedule(1, 2).unwrap();
        assert_eq!(schedule.orders()[0].last(), Some(&Op::optimizer(0, 0)));
        // Text that is neither: read as CSV, whose error names the cell.
        let err = read_listing_detected("stdout", "hello\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stdout:1:1: `hello` is not an action"),
            "{err}"
        );
        // A YAML file with a mistake is read as YAML, whose error names the field.
        let err =
            read_listing_detected("stdout", "stages: 1\nchunks: x\norders: {}\n").unwrap_err();
        assert!(err.to_string().starts_with("stdout:2:"), "{err}");
    }
}
