//! The schedule catalog: every kind of schedule pipegnn knows, in one table that the scenario
//! validator, the CLI, the planner, labels and the docs read.
//!
//! Adding a kind is one generator file and one row here (plus its [`Generator`] and
//! [`ScheduleKind`] variants, which the compiler then asks for wherever a kind is matched).

use super::ir::ScheduleKind;
use super::{BackwardOrder, Generator, GnnPipeKnobs};

/// Which workloads a kind applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workloads {
    /// Explicit stage costs and GNNs alike.
    Any,
    /// GNN workloads only (`graph` and `model`).
    Gnn,
}

/// One kind of schedule.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The kind.
    pub kind: ScheduleKind,
    /// Its name in scenarios (`schedule.kind`), on the command line (`--kind`, `--schedule`)
    /// and in JSON.
    pub name: &'static str,
    /// One line for help texts and docs.
    pub summary: &'static str,
    /// The generator with its knobs at their defaults; `None` for graph parallelism, which is
    /// generated from the graph's partitions.
    pub generator: Option<Generator>,
    /// Which workloads it applies to.
    pub workloads: Workloads,
    /// The `schedule` fields of a scenario that only this kind reads.
    pub knobs: &'static [&'static str],
    /// Where the order comes from.
    pub reference: &'static str,
}

/// Every kind, in the order docs and `--schedule all` list them.
pub const CATALOG: [Entry; 9] = [
    Entry {
        kind: ScheduleKind::GPipe,
        name: "gpipe",
        summary: "every forward, then every backward",
        generator: Some(Generator::GPipe(BackwardOrder::Forward)),
        workloads: Workloads::Any,
        knobs: &["backward_order"],
        reference: "Huang et al., NeurIPS 2019; torch's ScheduleGPipe",
    },
    Entry {
        kind: ScheduleKind::OneFOneB,
        name: "1f1b",
        summary: "warm-up forwards, then one forward and one backward",
        generator: Some(Generator::OneFOneB),
        workloads: Workloads::Any,
        knobs: &[],
        reference: "Narayanan et al., ICML 2021 (PipeDream-Flush); torch's Schedule1F1B",
    },
    Entry {
        kind: ScheduleKind::Interleaved1F1B,
        name: "interleaved_1f1b",
        summary: "several stages per device, round-robin, 1F1B depth first",
        generator: Some(Generator::Interleaved1F1B),
        workloads: Workloads::Any,
        knobs: &["stages_per_device"],
        reference: "Narayanan et al., SC 2021 (Megatron-LM); torch's ScheduleInterleaved1F1B",
    },
    Entry {
        kind: ScheduleKind::LoopedBfs,
        name: "looped_bfs",
        summary: "several stages per device, round-robin, breadth first",
        generator: Some(Generator::LoopedBfs),
        workloads: Workloads::Any,
        knobs: &["stages_per_device"],
        reference: "Lamy-Poirier, MLSys 2023; torch's ScheduleLoopedBFS",
    },
    Entry {
        kind: ScheduleKind::InterleavedZeroBubble,
        name: "interleaved_zb",
        summary: "interleaved 1F1B with split backwards, weight gradients deferred (ZB-H1 at one stage per device)",
        generator: Some(Generator::InterleavedZeroBubble),
        workloads: Workloads::Any,
        knobs: &["stages_per_device"],
        reference: "Qi et al., ICLR 2024; torch's ScheduleInterleavedZeroBubble",
    },
    Entry {
        kind: ScheduleKind::Zbv,
        name: "zbv",
        summary: "two stages per device as a V, split backwards",
        generator: Some(Generator::Zbv),
        workloads: Workloads::Any,
        knobs: &[],
        reference: "Qi et al., NeurIPS 2024; torch's ScheduleZBVZeroBubble",
    },
    Entry {
        kind: ScheduleKind::DualPipeV,
        name: "dualpipev",
        summary: "two stages per device as a V, forward-backward pairs, split backwards at the end",
        generator: Some(Generator::DualPipeV),
        workloads: Workloads::Any,
        knobs: &[],
        reference: "DeepSeek-V3 report, 2024; torch's ScheduleDualPipeV",
    },
    Entry {
        kind: ScheduleKind::GnnPipe,
        name: "gnnpipe",
        summary: "GNNPipe: whole-graph chunks through layer stages, stale neighbour embeddings",
        generator: Some(Generator::GnnPipe(GnnPipeKnobs {
            order: super::GnnPipeOrder::GPipe,
            backward: super::GnnPipeBackward::Drop,
            update: super::UpdateMode::PerEpoch,
        })),
        workloads: Workloads::Gnn,
        knobs: &["order", "backward", "update", "partitions"],
        reference: "Chen, Chen, Qian, GNNPipe, 2023",
    },
    Entry {
        kind: ScheduleKind::GraphParallel,
        name: "graph_parallel",
        summary: "CAGNET graph parallelism (1D, 1.5D, 2D, 3D): every device runs every layer on its share of the graph",
        generator: None,
        workloads: Workloads::Gnn,
        knobs: &["exchange", "algorithm", "replication"],
        reference: "Tripathy, Yelick, Buluç, SC 2020 (CAGNET)",
    },
];

/// Every `schedule` knob some kind reads, each once, in catalog order.
pub fn all_knobs() -> Vec<&'static str> {
    let mut knobs: Vec<&'static str> = Vec::new();
    for entry in &CATALOG {
        for &knob in entry.knobs {
            if !knobs.contains(&knob) {
                knobs.push(knob);
            }
        }
    }
    knobs
}

/// The entry named `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    CATALOG.iter().find(|entry| entry.name == name)
}

/// The entry of `kind`, if the catalog lists it (schedule files are not a kind of the catalog).
pub fn of(kind: ScheduleKind) -> Option<&'static Entry> {
    CATALOG.iter().find(|entry| entry.kind == kind)
}

/// The most chunks each device of `generator`'s schedules holds in flight (forwarded, and not
/// yet through their last backward op, `B` or `W`, summed over the device's stages), as a
/// [`Bound`](super::bound::Bound) expression in `stages`, `chunks`, `devices`, `v` and
/// `device`. Every bound is reached exactly on some device for every shape the generator
/// accepts (`tests/it/schedules.rs`), and `pipegnn proptest --kind` holds schedules to it.
///
/// - GPipe (and GNNPipe in GPipe order): every chunk, `chunks`.
/// - 1F1B (and GNNPipe in 1F1B order): `min(devices - device, chunks)`, the warm-up plus one.
/// - Looped BFS: every chunk on every stage of the device, `v * chunks`.
/// - Interleaved 1F1B, with rounds of `r = chunks / max(1, chunks / devices)` chunks:
///   `min(v K, (v - 1) r + 2 (P - 1 - d) + 1)`.
/// - Interleaved zero bubble: `min(v K, (v - 1) r + P)` on every device (one warm-up forward
///   fewer, but device d defers its weight halves by d steps).
/// - ZBV: `min(2 K, 2 P, K + 1 + d)`.
/// - DualPipeV: `2 P + 1`.
pub fn stash_bound(generator: Generator) -> &'static str {
    match generator {
        Generator::GPipe(_) => "chunks",
        Generator::GnnPipe(knobs) if knobs.order == super::GnnPipeOrder::GPipe => "chunks",
        Generator::OneFOneB | Generator::GnnPipe(_) => "min(devices - device, chunks)",
        Generator::LoopedBfs => "v * chunks",
        Generator::Interleaved1F1B => {
            "min(v * chunks, (v - 1) * (chunks / max(1, chunks / devices)) + 2 * (devices - 1 - device) + 1)"
        }
        Generator::InterleavedZeroBubble => {
            "min(v * chunks, (v - 1) * (chunks / max(1, chunks / devices)) + devices)"
        }
        Generator::Zbv => "min(2 * chunks, 2 * devices, chunks + 1 + device)",
        Generator::DualPipeV => "2 * devices + 1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_agrees_with_its_kind_and_generator() {
        let mut seen = std::collections::BTreeSet::new();
        for entry in &CATALOG {
            assert!(seen.insert(entry.name), "{} listed twice", entry.name);
            assert_eq!(entry.kind.name(), entry.name);
            if let Some(generator) = entry.generator {
                assert_eq!(generator.kind(), entry.kind, "{}", entry.name);
                // The default shape of every generator runs.
                let per_device = generator.default_stages_per_device();
                generator
                    .generate_on(4 * per_device, per_device, 8)
                    .unwrap_or_else(|err| panic!("{}: {err}", entry.name));
                // Its stash bound is an expression the parser reads.
                crate::schedule::bound::Bound::parse(stash_bound(generator))
                    .unwrap_or_else(|err| panic!("{}: {err}", entry.name));
            }
        }
    }
}
