//! The generators against PyTorch's own schedule classes: `tests/reference/torch_orders.json`
//! holds every device's order as `torch.distributed.pipelining` computed it (torch 2.15, written
//! by `tests/reference/torch_orders.py`), for each schedule class on 1 to 8 devices, 1 to 4
//! stages per device and 1 to 16 chunks, with the shapes torch refuses.

use pipegnn::schedule::{BackwardOrder, Generator, OpKind, Schedule};
use serde_json::Value;

use crate::support::root;

fn generator(kind: &str) -> Generator {
    match kind {
        "gpipe" => Generator::GPipe(BackwardOrder::Forward),
        "1f1b" => Generator::OneFOneB,
        "interleaved_1f1b" => Generator::Interleaved1F1B,
        "looped_bfs" => Generator::LoopedBfs,
        "interleaved_zb" => Generator::InterleavedZeroBubble,
        "zbv" => Generator::Zbv,
        "dualpipev" => Generator::DualPipeV,
        other => panic!("no generator for torch's `{other}`"),
    }
}

/// A device's compute ops in torch's cells (`3F1`: stage 3's forward of chunk 1), optimizer
/// steps left out (torch lists none).
fn cells(schedule: &Schedule, device: usize) -> String {
    schedule.orders()[device]
        .iter()
        .filter(|op| op.kind != OpKind::Optimizer)
        .map(|op| format!("{}{}{}", op.stage, op.kind.code(), op.chunk))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sFc` becomes `sF(c-1)`.
fn shift_forwards_down(cells: &str) -> String {
    cells
        .split(' ')
        .map(|cell| match cell.split_once('F') {
            Some((stage, chunk)) => {
                let chunk: u32 = chunk.parse().expect("a chunk index");
                format!("{stage}F{}", chunk - 1)
            }
            None => cell.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_generator_issues_torchs_orders_and_refuses_what_torch_refuses() {
    let path = root().join("tests/reference/torch_orders.json");
    let text = std::fs::read_to_string(&path).expect("the torch reference is in the repository");
    let reference: Value = serde_json::from_str(&text).expect("the torch reference is JSON");
    let cases = reference["cases"].as_array().expect("cases");
    let (mut compared, mut refused) = (0, 0);
    let mut problems = Vec::new();
    for case in cases {
        let kind = case["kind"].as_str().expect("kind");
        let number = |field: &str| case[field].as_u64().expect(field) as u32;
        let (devices, stages, per_device, chunks) = (
            number("devices"),
            number("stages"),
            number("stages_per_device"),
            number("chunks"),
        );
        let shape = format!("{kind}: {devices} devices x {per_device} stages, {chunks} chunks");
        let ours = generator(kind).generate_on(stages, per_device, chunks);
        match (&case["orders"], ours) {
            (Value::Object(orders), Ok(schedule)) => {
                assert_eq!(schedule.n_devices(), devices as usize, "{shape}");
                for (device, expected) in orders {
                    let device: usize = device.parse().expect("device keys are numbers");
                    let got = cells(&schedule, device);
                    let mut expected = expected.as_str().expect("orders are strings").to_string();
                    if kind == "1f1b" && device + 1 == devices as usize {
                        // torch's `Schedule1F1B._get_pipeline_order` numbers the last rank's
                        // forwards from 1 (it increments its counter before the first forward
                        // when there is no warm-up); its runtime runs F0 first, as we do.
                        expected = shift_forwards_down(&expected);
                    }
                    if got != expected {
                        problems.push(format!(
                            "{shape}, device {device}:\n  torch: {expected}\n  ours:  {got}"
                        ));
                    }
                }
                pipegnn::schedule::check(&schedule)
                    .unwrap_or_else(|err| panic!("{shape}: torch's order fails the check: {err}"));
                compared += 1;
            }
            (Value::Object(_), Err(err)) => {
                problems.push(format!("{shape}: torch runs it, we refuse: {err}"))
            }
            // GPipe and 1F1B run any shape here; torch's single-stage 1F1B refuses fewer chunks
            // than stages, which pipegnn runs (warm-up shortened to the chunks).
            (_, Ok(_)) if kind == "1f1b" => {}
            (_, Ok(_)) => problems.push(format!("{shape}: torch refuses it, we run it")),
            (_, Err(_)) => refused += 1,
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        compared > 600 && refused > 30,
        "{compared} compared, {refused} refused"
    );
}
