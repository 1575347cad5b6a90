//! Trace -> ASCII timeline: a row per device, each op drawn over the columns it covers.
//!
//! ```text
//! dev0 |F0-F1-F2-F3-B0=B1=B2=B3=......
//! dev1 |...F0-F1-F2-F3-B0=B1=B2=B3=...
//! ```
//!
//! Forwards are filled with `-`, backwards with `=`, optimizer steps with `*`; idle time is `.`.

use crate::schedule::OpKind;
use crate::trace::{Lane, SpanKind, Trace};
use crate::units::format_duration_ns;

/// The widest timeline drawn, in columns.
const MAX_COLUMNS: u64 = 160;

/// An op's label: `F3` (`U2` for stage 2's step), or torch's `1F3` (stage first) when a device
/// runs several stages.
fn label(kind: OpKind, chunk: u32, stage: u32, with_stage: bool) -> String {
    match (kind, with_stage) {
        (OpKind::Optimizer, _) => format!("U{stage}"),
        (_, true) => format!("{stage}{}{chunk}", kind.code()),
        (_, false) => format!("{}{chunk}", kind.code()),
    }
}

fn greatest_common_divisor(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What the axis under the rows shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// The epoch time with its unit.
    Time,
    /// Abstract slots (for drawing an op order with unit op times).
    Slots,
}

/// Draws the device rows of a trace. When every op time is a multiple of a common unit that
/// fits, each unit gets exactly enough columns for a label, so the grid is exact; otherwise the
/// epoch is scaled to the maximum width.
pub fn render(trace: &Trace, axis: Axis) -> String {
    let compute: Vec<_> = trace
        .spans
        .iter()
        .filter_map(|s| match (s.lane(), s.kind) {
            (Lane::Device(d), SpanKind::Compute(kind)) if s.duration_ns() > 0 => Some((d, kind, s)),
            _ => None,
        })
        .collect();
    let epoch_ns = compute.iter().map(|(_, _, s)| s.end_ns).max().unwrap_or(0);
    if epoch_ns == 0 {
        return "(no timed ops)\n".to_string();
    }
    // Whether some device runs ops of more than one stage (optimizer steps aside).
    let with_stage = {
        let mut stage_of: std::collections::BTreeMap<u32, u32> = Default::default();
        compute
            .iter()
            .filter(|(_, kind, _)| *kind != OpKind::Optimizer)
            .any(|(d, _, s)| *stage_of.entry(*d).or_insert(s.stage) != s.stage)
    };
    let stage_width = if with_stage {
        (trace.n_stages.max(1) - 1).to_string().len() as u64
    } else {
        0
    };
    let label_width = 1 + stage_width + (trace.n_chunks.max(1) - 1).to_string().len() as u64;
    let unit = compute.iter().fold(0, |g, (_, _, s)| {
        greatest_common_divisor(greatest_common_divisor(g, s.start_ns), s.end_ns)
    });
    let exact_columns = epoch_ns / unit * (label_width + 1);
    let columns = if exact_columns <= MAX_COLUMNS {
        exact_columns
    } else {
        MAX_COLUMNS
    };
    let column_of = |ns: u64| {
        ((ns as u128 * columns as u128 + epoch_ns as u128 / 2) / epoch_ns as u128) as usize
    };

    let devices: Vec<u32> = {
        let mut d: Vec<u32> = compute.iter().map(|(d, _, _)| *d).collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    let name_width = devices
        .iter()
        .map(|&d| trace.devices[d as usize].name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for &device in &devices {
        let mut row = vec!['.'; columns as usize];
        for (_, kind, span) in compute.iter().filter(|(d, _, _)| *d == device) {
            let start = column_of(span.start_ns);
            let end = column_of(span.end_ns).max(start + 1).min(row.len());
            let fill = match kind {
                OpKind::Forward => '-',
                OpKind::Backward => '=',
                OpKind::InputGrad => '~',
                OpKind::WeightGrad => '+',
                OpKind::Optimizer => '*',
            };
            let text: Vec<char> = label(*kind, span.chunk, span.stage, with_stage)
                .chars()
                .collect();
            for (offset, cell) in row[start.min(end)..end].iter_mut().enumerate() {
                *cell = *text.get(offset).unwrap_or(&fill);
            }
        }
        let name = &trace.devices[device as usize].name;
        out.push_str(&format!(
            "{name:>name_width$} |{}|\n",
            row.iter().collect::<String>()
        ));
    }
    out.push_str(&format!(
        "{:>name_width$}  0{:>width$}\n",
        "",
        match axis {
            Axis::Time => format_duration_ns(epoch_ns),
            Axis::Slots => format!("{epoch_ns} slots"),
        },
        width = columns as usize - 1
    ));
    out
}
