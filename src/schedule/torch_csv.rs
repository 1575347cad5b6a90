//! PyTorch pipelining's compute-only CSV: one row per rank, one cell per step, each cell an
//! action such as `0F0` (stage 0's forward of micro-batch 0), `3I2`, `1W0` or `2B1`, empty for
//! an idle step, or an overlapped pair `(0F7;7B3)OVERLAP_F_B`, which runs its actions in the
//! order listed. It is what `PipelineScheduleMulti._dump_csv` writes and `_load_csv` reads.
//!
//! As torch does, the stage-to-rank map is inferred from the rows (a stage's actions must all be
//! in one row), the stage count is the largest stage plus one, and the micro-batch count the
//! largest micro-batch plus one. Each stage's optimizer step is implied at the end of its row.

use super::file::Listing;
use super::ir::{Op, OpKind, Schedule, ScheduleKind};
use super::{MAX_CHUNKS, MAX_DEVICES, MAX_STAGES, MAX_STAGE_CHUNKS};
use crate::diag::{Diagnostic, Diagnostics, FieldPath, Origin, MAX_DOCUMENT_BYTES};

/// Reads a compute-only CSV; `file` names it in diagnostics.
///
/// # Errors
/// Every malformed cell (located by row and column), communication actions (a compute-only
/// file has none), and the shape problems [`Schedule::from_orders`] finds (missing, repeated,
/// or a stage on two ranks).
pub fn parse(file: &str, text: &str) -> Result<Schedule, Diagnostics> {
    let listing = read_listing(file, text)?;
    let (n_stages, n_chunks) = (listing.n_stages, listing.n_chunks);
    listing
        .into_schedule(n_stages, n_chunks)
        .map_err(|err| Diagnostics(vec![whole_file(file, err.to_string())]))
}

fn whole_file(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        origin: Origin::Line { line: 1, column: 1 },
        path: FieldPath::root(),
        message,
    }
}

/// Reads a compute-only CSV into its [`Listing`] (the stage and chunk counts implied by the
/// largest indices), without checking that the rows make a whole schedule.
///
/// # Errors
/// Malformed cells, communication actions, no actions at all, a shape past the limits.
pub fn read_listing(file: &str, text: &str) -> Result<Listing, Diagnostics> {
    let at = |line: usize, column: usize, message: String| Diagnostic {
        file: file.to_string(),
        origin: Origin::Line { line, column },
        path: FieldPath::root(),
        message,
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Diagnostics(vec![crate::diag::too_large(file)]));
    }
    let mut problems = Vec::new();
    let mut orders: Vec<Vec<Op>> = Vec::new();
    let rows: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    for (index, row) in rows.iter().enumerate() {
        let line = index + 1;
        if orders.len() == MAX_DEVICES {
            problems.push(at(
                line,
                1,
                format!("rank {index} is past the {MAX_DEVICES} devices a network holds"),
            ));
            break;
        }
        let row = row.strip_suffix('\r').unwrap_or(row);
        let mut order = Vec::new();
        let mut column = 1;
        for raw in row.split(',') {
            let cell = unquote(raw.trim());
            if !cell.is_empty() {
                match actions(&cell) {
                    Ok(ops) => order.extend(ops),
                    Err(why) => problems.push(at(line, column, why)),
                }
            }
            column += raw.chars().count() + 1;
        }
        orders.push(order);
    }
    if orders.iter().all(Vec::is_empty) && problems.is_empty() {
        problems.push(at(1, 1, "no actions: every rank's row is empty".into()));
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let ops = orders.iter().flatten();
    let n_stages = ops.clone().map(|op| op.stage).max().unwrap_or(0) + 1;
    let n_chunks = ops.map(|op| op.chunk).max().unwrap_or(0) + 1;
    let whole = |message: String| Diagnostics(vec![at(1, 1, message)]);
    if n_stages > MAX_STAGES {
        return Err(whole(format!(
            "stage {} is past the {MAX_STAGES} stages a schedule may have",
            n_stages - 1
        )));
    }
    if n_chunks > MAX_CHUNKS {
        return Err(whole(format!(
            "micro-batch {} is past the {MAX_CHUNKS} chunks a schedule may have",
            n_chunks - 1
        )));
    }
    if u64::from(n_stages) * u64::from(n_chunks) > MAX_STAGE_CHUNKS {
        return Err(whole(format!(
            "{n_stages} stages x {n_chunks} micro-batches is more than {MAX_STAGE_CHUNKS} stage-chunk pairs"
        )));
    }
    Ok(Listing {
        kind: ScheduleKind::Custom,
        n_stages,
        n_chunks,
        orders,
    })
}

/// A cell without the quotes a CSV writer may put around it.
fn unquote(cell: &str) -> String {
    match cell
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => cell.to_string(),
    }
}

/// The ops of one cell: one action, or an overlapped pair in its listed order.
fn actions(cell: &str) -> Result<Vec<Op>, String> {
    if let Some(rest) = cell.strip_prefix('(') {
        let Some((inner, kind)) = rest.split_once(')') else {
            return Err(format!(
                "`{cell}`: an overlapped cell closes its list with `)`"
            ));
        };
        if kind != "OVERLAP_F_B" {
            return Err(format!(
                "`{cell}`: a list of actions must be an `OVERLAP_F_B`, not `{kind}`"
            ));
        }
        return inner.split(';').map(|part| action(part.trim())).collect();
    }
    action(cell).map(|op| vec![op])
}

/// One action `<stage><F|B|I|W><micro-batch>`.
fn action(text: &str) -> Result<Op, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (stage, rest) = text.split_at(digits);
    let letters = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() || *b == b'_')
        .count();
    let (code, chunk) = rest.split_at(letters);
    let number = |what: &str, digits: &str| {
        digits
            .parse::<u32>()
            .map_err(|_| format!("`{text}`: the {what} must be a number below 2^32"))
    };
    if stage.is_empty() || code.is_empty() {
        return Err(format!(
            "`{text}` is not an action: write <stage><F|B|I|W><micro-batch>, e.g. 0F1"
        ));
    }
    let kind = match code {
        "SEND_F" | "RECV_F" | "SEND_B" | "RECV_B" | "WAIT_SEND_F" | "WAIT_SEND_B" | "UNSHARD"
        | "RESHARD" | "REDUCE_GRAD" | "WAIT_REDUCE_GRAD" => {
            return Err(format!(
                "`{text}` is a communication action: pipegnn reads torch's compute-only CSV and derives the transfers itself"
            ))
        }
        other => match OpKind::from_code(other) {
            Some(kind) if kind != OpKind::Optimizer => kind,
            _ => {
                return Err(format!(
                    "`{text}`: unknown action `{other}` (expected F, B, I or W)"
                ))
            }
        },
    };
    if chunk.is_empty() {
        return Err(format!("`{text}` names no micro-batch"));
    }
    Ok(Op {
        kind,
        chunk: number("micro-batch", chunk)?,
        stage: number("stage", stage)?,
    })
}

/// `schedule` as torch's compute-only CSV: one row per device, its ops as actions, optimizer
/// steps left out (torch's schedules list none). Pipelines only: graph parallelism has no
/// torch form.
pub fn write(schedule: &Schedule) -> String {
    let mut out = String::new();
    for order in schedule.orders() {
        let cells: Vec<String> = order
            .iter()
            .filter(|op| op.kind != OpKind::Optimizer)
            .map(|op| format!("{}{}{}", op.stage, op.kind.code(), op.chunk))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_writes_it_reads_back_for_every_generator() {
        for entry in crate::schedule::catalog::CATALOG {
            let Some(generator) = entry.generator else {
                continue;
            };
            let v = generator.default_stages_per_device();
            let schedule = generator.generate_on(4 * v, v, 8).expect("a valid shape");
            let back = parse("x.csv", &write(&schedule)).expect("its own CSV reads back");
            assert_eq!(back.orders(), schedule.orders(), "{}", entry.name);
        }
    }

    #[test]
    fn torch_cells_idle_steps_and_overlapped_pairs_are_read() {
        // Idle cells, quoted cells and CRLF rows as Python's csv module writes them; stage 1
        // runs B for micro-batch 1 and I then W for 0 and 2.
        let text = "0F0,0F1,,0F2,,0B0,0B1,0B2\r\n,1F0,1I0,\"1F1\",1W0,1B1,1F2,1I2,1W2\r\n";
        let schedule = parse("t.csv", text).expect("a valid schedule");
        assert_eq!(schedule.orders()[1][4], Op::backward(1, 1));
        let text = "0F0,0F1,0B0,0B1\n1F0,1I0,1F1,1W0,1I1,1W1\n";
        let schedule = parse("t.csv", text).expect("a valid schedule");
        assert_eq!((schedule.n_stages(), schedule.n_chunks()), (2, 2));
        assert!(schedule.has_split_backward());
        assert_eq!(schedule.orders()[1][1], Op::input_grad(0, 1));
        let pair = parse("t.csv", "(0F0;1B0)OVERLAP_F_B\n")
            .unwrap_err()
            .to_string();
        assert!(pair.contains("is missing"), "{pair}");
    }

    #[test]
    fn problems_are_located_by_row_and_column() {
        let err = parse("t.csv", "0F0,0B0\n1F0,1X0,1SEND_F0\n").unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "t.csv:2:5: `1X0`: unknown action `X` (expected F, B, I or W)",
                "t.csv:2:9: `1SEND_F0` is a communication action: pipegnn reads torch's compute-only CSV and derives the transfers itself",
            ]
        );
        let err = parse("t.csv", "0F0,0F99999999999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("below 2^32"), "{err}");
        let err = parse("t.csv", "0F0\n0B0\n").unwrap_err().to_string();
        assert!(err.contains("lives on one device"), "{err}");
        assert!(parse("t.csv", "\n,,\n").is_err());
    }
}
