//! DualPipeV: DeepSeek's DualPipe folded onto P devices as a V (device d runs stages d and
//! 2P - 1 - d). In its steady state a forward of one stage overlaps a whole backward of the
//! other; pipegnn runs each such pair one after the other, forward first, as torch lists them.
//! Near the end, backwards are split into `I` and `W` so that the `W`s fill the drain.
//!
//! The per-device orders are exactly those of PyTorch's `ScheduleDualPipeV` (torch 2.15, idle
//! slots dropped, overlapped pairs in their listed order), checked by
//! `tests/it/torch_orders.rs`.

use std::collections::VecDeque;

use super::ir::{DataFlow, Op, Schedule, ScheduleKind};
use super::ScheduleError;

/// Generates DualPipeV on `devices` devices (two stages each) with `n_chunks` chunks.
///
/// Device d, with `a = d` and `b = 2P - 1 - d`, issues in eight phases: `2(P - d - 1)` forwards
/// of `a`; `d + 1` pairs `F(a) F(b)`; `P - d - 1` times `I(b)`, the oldest pending `W`, `F(b)`;
/// `K - 2P + d + 1` times the pair `F(a) B(b)` (on the last device the first is `F(a)` then a
/// plain `B(b)`) followed by the pair `F(b) B(a)`; `P - d - 1` times `B(b)` then the pair
/// `F(b) B(a)`; `d + 1` times a backward of `b` then one of `a`, whole until half way through
/// (the switch to split ones comes before `b`'s on odd devices, before `a`'s on even ones) and
/// split after; `P - d - 1` times the oldest pending `W` then a backward of `a`; and the last
/// `d + 1` pending `W`s. Each stage takes its chunks in order; the two optimizer steps close the
/// list.
///
/// # Errors
/// Fewer chunks than stages (`K < 2P`), which PyTorch refuses too.
///
/// # Complexity
/// O(P·K) time and memory.
///
/// # Reference
/// DeepSeek-AI, "DeepSeek-V3 Technical Report", 2024 (DualPipe); PyTorch's
/// `torch.distributed.pipelining.ScheduleDualPipeV`.
pub(crate) fn generate(devices: u32, n_chunks: u32) -> Result<Schedule, ScheduleError> {
    let n_stages = 2 * devices;
    if n_chunks < n_stages {
        return Err(ScheduleError::Shape(format!(
            "dualpipev needs at least as many chunks as stages: {n_chunks} chunks for {n_stages} stages (PyTorch refuses this shape too)"
        )));
    }
    let orders = (0..devices)
        .map(|device| device_order(devices, n_chunks, device))
        .collect();
    Schedule::from_orders(
        ScheduleKind::DualPipeV,
        DataFlow::PIPELINE,
        n_stages,
        n_chunks,
        orders,
    )
}

/// What a backward is: whole, or its input half (its weight half is queued).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Back {
    Whole,
    Input,
}

/// One device's list as it is built: per local stage the next forward and backward chunk, and
/// the weight halves still to run, oldest first.
struct Lists {
    stages: [u32; 2],
    next_forward: [u32; 2],
    next_backward: [u32; 2],
    pending_weights: VecDeque<(u32, u32)>,
    order: Vec<Op>,
}

impl Lists {
    fn forward(&mut self, local: usize) {
        let chunk = self.next_forward[local];
        self.next_forward[local] += 1;
        self.order.push(Op::forward(chunk, self.stages[local]));
    }

    fn backward(&mut self, local: usize, back: Back) {
        let (chunk, stage) = (self.next_backward[local], self.stages[local]);
        self.next_backward[local] += 1;
        self.order.push(match back {
            Back::Whole => Op::backward(chunk, stage),
            Back::Input => {
                self.pending_weights.push_back((chunk, stage));
                Op::input_grad(chunk, stage)
            }
        });
    }

    fn oldest_weight(&mut self) {
        if let Some((chunk, stage)) = self.pending_weights.pop_front() {
            self.order.push(Op::weight_grad(chunk, stage));
        }
    }
}

fn device_order(devices: u32, n_chunks: u32, device: u32) -> Vec<Op> {
    let (a, b) = (0, 1);
    let mut lists = Lists {
        stages: [device, 2 * devices - 1 - device],
        next_forward: [0; 2],
        next_backward: [0; 2],
        pending_weights: VecDeque::new(),
        order: Vec::with_capacity(6 * n_chunks as usize + 2),
    };
    let after = devices - device - 1;
    for _ in 0..2 * after {
        lists.forward(a);
    }
    for _ in 0..=device {
        lists.forward(a);
        lists.forward(b);
    }
    for _ in 0..after {
        lists.backward(b, Back::Input);
        lists.oldest_weight();
        lists.forward(b);
    }
    for _ in 0..n_chunks + device + 1 - 2 * devices {
        // The overlapped pairs, each forward first.
        lists.forward(a);
        lists.backward(b, Back::Whole);
        lists.forward(b);
        lists.backward(a, Back::Whole);
    }
    for _ in 0..after {
        lists.backward(b, Back::Whole);
        lists.forward(b);
        lists.backward(a, Back::Whole);
    }
    let half = device.div_ceil(2);
    let mut split = false;
    for i in 0..=device {
        if i == half && device % 2 == 1 {
            split = true;
        }
        lists.backward(b, if split { Back::Input } else { Back::Whole });
        if i == half && device % 2 == 0 {
            split = true;
        }
        lists.backward(a, if split { Back::Input } else { Back::Whole });
    }
    for _ in 0..after {
        lists.oldest_weight();
        lists.backward(a, if split { Back::Input } else { Back::Whole });
    }
    for _ in 0..=device {
        lists.oldest_weight();
    }
    let mut order = lists.order;
    order.extend(lists.stages.map(|stage| Op::optimizer(0, stage)));
    order
}
