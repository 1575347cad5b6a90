//! ZBV: the V-shaped zero-bubble schedule. Each of P devices holds two stages placed as a V
//! (device d runs stages d and 2P - 1 - d), so the first and last stage share device 0, and
//! backwards are split into `I` and `W` to fill the pipeline's bubbles.
//!
//! The per-device orders are exactly those of PyTorch's `ScheduleZBVZeroBubble` (torch 2.15,
//! idle slots dropped), checked by `tests/it/torch_orders.rs`.

use super::ir::{DataFlow, Op, Schedule, ScheduleKind};
use super::ScheduleError;

/// Generates ZBV on `devices` devices (two stages each) with `n_chunks` chunks.
///
/// Device d, with `a = d` and `b = 2P - 1 - d`, and `n = max(2P - 1, K)`:
/// `2(P - d) - 1` forwards of `a`; d pairs `F(b) F(a)`; `P - d` triples `F(b) I(b) W(b)`; then,
/// while `a` has forwards left (of `n`) or `b` lags behind `a`, `F(a)` (if any left)
/// `I(a) W(a) F(b) I(b) W(b)`; then d pairs `I(a) I(b)`, `P - d` pairs `I(a) W(a)`, and the
/// remaining `W(b)` then `W(a)` in chunk order. Ops of chunks past K (when `K < 2P - 1`) are
/// dropped, as torch does. Each stage takes its chunks in order; the two optimizer steps close
/// the list. Peak stash on device d (over both stages): `min(2K, 2P, K + 1 + d)`.
///
/// # Complexity
/// O(P·K) time and memory.
///
/// # Reference
/// Qi et al., "Pipeline Parallelism with Controllable Memory", NeurIPS 2024 (the V schedule);
/// PyTorch's `torch.distributed.pipelining.ScheduleZBVZeroBubble`.
pub(crate) fn generate(devices: u32, n_chunks: u32) -> Result<Schedule, ScheduleError> {
    let orders = (0..devices)
        .map(|device| device_order(devices, n_chunks, device))
        .collect();
    Schedule::from_orders(
        ScheduleKind::Zbv,
        DataFlow::PIPELINE,
        2 * devices,
        n_chunks,
        orders,
    )
}

/// One device's two stages and, for each, the next chunk of each kind of op.
struct Lists {
    stages: [u32; 2],
    /// Per local stage (0: `a`, 1: `b`), the next chunk of `[F, I, W]`.
    next: [[u32; 3]; 2],
    order: Vec<Op>,
}

const F: usize = 0;
const I: usize = 1;
const W: usize = 2;

impl Lists {
    /// Appends the next op of kind `kind` on local stage `local`.
    fn push(&mut self, local: usize, kind: usize) {
        let (stage, chunk) = (self.stages[local], self.next[local][kind]);
        self.next[local][kind] += 1;
        self.order.push(match kind {
            F => Op::forward(chunk, stage),
            I => Op::input_grad(chunk, stage),
            _ => Op::weight_grad(chunk, stage),
        });
    }
}

fn device_order(devices: u32, n_chunks: u32, device: u32) -> Vec<Op> {
    let (a, b) = (0, 1);
    let planned = (2 * devices - 1).max(n_chunks);
    let mut lists = Lists {
        stages: [device, 2 * devices - 1 - device],
        next: [[0; 3]; 2],
        order: Vec::new(),
    };
    for _ in 0..2 * (devices - device) - 1 {
        lists.push(a, F);
    }
    for _ in 0..device {
        lists.push(b, F);
        lists.push(a, F);
    }
    for _ in 0..devices - device {
        for kind in [F, I, W] {
            lists.push(b, kind);
        }
    }
    while lists.next[b][F] < lists.next[a][F] || lists.next[a][F] < planned {
        if lists.next[a][F] < planned {
            lists.push(a, F);
        }
        lists.push(a, I);
        lists.push(a, W);
        for kind in [F, I, W] {
            lists.push(b, kind);
        }
    }
    for _ in 0..device {
        lists.push(a, I);
        lists.push(b, I);
    }
    for _ in 0..devices - device {
        lists.push(a, I);
        lists.push(a, W);
    }
    for local in [b, a] {
        while lists.next[local][W] < lists.next[local][I] {
            lists.push(local, W);
        }
    }
    let mut order = lists.order;
    order.retain(|op| op.chunk < n_chunks);
    order.extend(lists.stages.map(|stage| Op::optimizer(0, stage)));
    order
}
