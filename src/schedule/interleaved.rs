//! Interleaved schedules: each device runs several stages, placed round-robin (stage k on
//! device k mod P), and alternates forwards and backwards across them depth first. With split
//! backwards and the weight gradients deferred this is the interleaved zero-bubble schedule.
//!
//! The per-device orders are exactly those of PyTorch's `ScheduleInterleaved1F1B` and
//! `ScheduleInterleavedZeroBubble` (torch 2.15, idle slots dropped), which
//! `tests/it/torch_orders.rs` checks against orders torch itself produced.

use super::ir::{DataFlow, Op, Schedule, ScheduleKind};
use super::ScheduleError;

/// Which of the two interleaved schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backward {
    /// Whole backwards (`B`): interleaved 1F1B (Megatron-LM's interleaved order).
    Whole,
    /// Split backwards (`I` in the 1F1B slot, `W` deferred): interleaved zero bubble; with one
    /// stage per device, ZB-H1.
    ZeroBubble,
}

/// Generates an interleaved schedule on `devices` devices with `per_device` stages each and
/// `n_chunks` chunks.
///
/// Chunks go in rounds of `r = K / max(1, K / P)` (K must divide into whole rounds, as torch
/// requires). Device d warms up with `min((v - 1) r + m (P - 1 - d), v K)` forwards (`m` is 2
/// for 1F1B, 1 for zero bubble), then alternates a forward and a backward, then drains the
/// backwards. The forward at step i runs on local stage `(i / r) mod v`, the backward at step i
/// (counted from the end of warm-up) on local stage `v - 1 - ((i / r) mod v)`; each stage takes
/// its chunks in order. Zero bubble runs `I` where 1F1B runs `B`, and from the d-th steady
/// step on follows each `I` with the oldest pending `W`; the rest end the list. One optimizer
/// step per stage closes the device's list.
///
/// Peak stash on device d (chunks forwarded and not yet through `B` or `W`, over its stages):
/// `min(v K, (v - 1) r + 2 (P - 1 - d) + 1)` for 1F1B, `min(v K, (v - 1) r + P)` on every
/// device for zero bubble (one warm-up forward fewer, but device d defers its `W`s d steps).
///
/// # Errors
/// A chunk count that is not a multiple of the number of rounds, or a zero shape.
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
/// Megatron-LM", SC 2021 (interleaved 1F1B); Qi et al., "Zero Bubble Pipeline Parallelism",
/// ICLR 2024.
pub(crate) fn generate(
    devices: u32,
    per_device: u32,
    n_chunks: u32,
    backward: Backward,
) -> Result<Schedule, ScheduleError> {
    let (kind, what) = match backward {
        Backward::Whole => (ScheduleKind::Interleaved1F1B, "interleaved 1F1B"),
        Backward::ZeroBubble => (
            ScheduleKind::InterleavedZeroBubble,
            "interleaved zero bubble",
        ),
    };
    let rounds = (n_chunks / devices.max(1)).max(1);
    if n_chunks % rounds != 0 {
        return Err(ScheduleError::Shape(format!(
            "{what} needs the chunks to fill whole rounds of about one chunk per device: {n_chunks} chunks on {devices} devices make {rounds} rounds, and {n_chunks} is not a multiple of {rounds} (PyTorch refuses this shape too)"
        )));
    }
    let per_round = n_chunks / rounds;
    let orders = (0..devices)
        .map(|device| device_order(devices, per_device, n_chunks, per_round, device, backward))
        .collect();
    Schedule::from_orders(
        kind,
        DataFlow::PIPELINE,
        devices * per_device,
        n_chunks,
        orders,
    )
}

fn device_order(
    devices: u32,
    per_device: u32,
    n_chunks: u32,
    per_round: u32,
    device: u32,
    backward: Backward,
) -> Vec<Op> {
    let zero_bubble = backward == Backward::ZeroBubble;
    let total = per_device * n_chunks;
    let lead = if zero_bubble { 1 } else { 2 };
    let warmup = ((per_device - 1) * per_round + lead * (devices - 1 - device)).min(total);
    let forward_stage = |step: u32| ((step / per_round) % per_device) * devices + device;
    let backward_stage = |step: u32| {
        (per_device - 1 - ((step - warmup) / per_round) % per_device) * devices + device
    };
    // Per local stage, the next chunk each kind of op takes.
    let local = |stage: u32| (stage / devices) as usize;
    let (mut next_forward, mut next_backward, mut next_weight) = (
        vec![0u32; per_device as usize],
        vec![0u32; per_device as usize],
        vec![0u32; per_device as usize],
    );
    // Stages of the backwards issued so far, in order, and how many of them have had their W.
    let mut backward_stages: Vec<u32> = Vec::with_capacity(total as usize);
    let mut weights_done = 0usize;
    let mut order = Vec::with_capacity(3 * total as usize + per_device as usize);
    let take = |counter: &mut Vec<u32>, stage: u32| {
        let chunk = counter[local(stage)];
        counter[local(stage)] += 1;
        chunk
    };
    for step in 0..total + warmup {
        if step < total {
            let stage = forward_stage(step);
            order.push(Op::forward(take(&mut next_forward, stage), stage));
        }
        if step < warmup {
            continue;
        }
        let stage = backward_stage(step);
        let chunk = take(&mut next_backward, stage);
        order.push(if zero_bubble {
            Op::input_grad(chunk, stage)
        } else {
            Op::backward(chunk, stage)
        });
        backward_stages.push(stage);
        if zero_bubble && step - warmup >= device {
            let stage = backward_stages[weights_done];
            weights_done += 1;
            order.push(Op::weight_grad(take(&mut next_weight, stage), stage));
        }
    }
    if zero_bubble {
        for &stage in &backward_stages[weights_done..] {
            order.push(Op::weight_grad(take(&mut next_weight, stage), stage));
        }
    }
    order.extend((0..per_device).map(|i| Op::optimizer(0, i * devices + device)));
    order
}
