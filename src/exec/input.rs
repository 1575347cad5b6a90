//! What a run reads: the schedule and its placement, the model, the graph and its data, the
//! hyper-parameters and the devices ([`ExecInput`]), and what it reports per epoch
//! ([`EpochStats`]).

use std::ops::Range;

use candle_core::Device;

use super::data::{ChunkPlan, Needs, NodeData, PlanShape};
use super::device::Compute;
use super::layers::{ExecLayer, StageModel};
use super::transport::wire::Fingerprint;
use crate::gnn::{GnnModel, Halo};
use crate::graph::rng::Rng;
use crate::graph::Csr;
use crate::network::Network;
use crate::scenario::Activation;
use crate::schedule::Schedule;
use crate::trace::{TraceDevice, TraceLink};

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Epochs to run.
    pub epochs: u32,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Dropout probability.
    pub dropout: f64,
    /// Dropout on GAT's attention coefficients.
    pub attention_dropout: f64,
    /// The non-linearity between layers.
    pub activation: Activation,
    /// Seed of the initial weights and the dropout masks.
    pub seed: u64,
}

/// What happens to gradients that cross chunks (GNNPipe's `backward` knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrossChunk {
    /// Neighbour rows are constants.
    #[default]
    Drop,
    /// Applied one epoch late (PipeGCN).
    Deferred,
    /// Applied in the same epoch.
    Exact,
}

/// One epoch's loss and accuracies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Training loss (mean over training vertices).
    pub loss: f64,
    /// Accuracy on the training split.
    pub train_accuracy: f64,
    /// Accuracy on the validation split.
    pub val_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
}

/// A progress callback: an epoch's figures and the number of epochs.
pub type Progress<'a> = dyn Fn(&EpochStats, u32) + Sync + 'a;

/// Everything one run reads.
pub struct ExecInput<'a> {
    /// The schedule.
    pub schedule: &'a Schedule,
    /// Schedule device -> network device.
    pub placement: &'a [usize],
    /// Names and capacities of the network's devices, for the trace.
    pub devices: Vec<TraceDevice>,
    /// Links, for transfer spans and link emulation.
    pub network: &'a Network,
    /// The model with resolved widths.
    pub model: &'a GnnModel,
    /// Layers of each stage (pipelines).
    pub stage_layers: &'a [Range<usize>],
    /// The graph.
    pub graph: &'a Csr,
    /// Each vertex's chunk (or partition).
    pub part: &'a [u32],
    /// The halo rule: drop, exact, stale (GNNPipe), or a graph-parallel exchange.
    pub halo: Halo,
    /// GNNPipe's cross-chunk gradients.
    pub cross_chunk: CrossChunk,
    /// Graph parallelism's 1.5D: the replication c (each of P/c block rows held by c
    /// devices); `None` for 1D and pipelines.
    pub replication: Option<u32>,
    /// Features, labels, splits.
    pub data: &'a NodeData,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// The candle device of each worker (schedule device).
    pub compute: &'a Compute,
    /// Threads each stage worker computes with (1 emulates one CPU core per device).
    pub threads_per_device: usize,
    /// Pace transfers to the links' latency and bandwidth.
    pub emulate_links: bool,
    /// Ops at a time where CPU workers' threads outnumber the cores they share
    /// (`plan::compute_slots`): each op takes a turn on them, first come first served, as the
    /// simulator models it. `None`: every worker computes when it is ready.
    pub compute_slots: Option<u32>,
    /// Called after every epoch with its figures and the number of epochs (progress display).
    pub progress: Option<&'a Progress<'a>>,
}

impl ExecInput<'_> {
    /// Each chunk's vertices, ascending.
    pub(super) fn members(&self) -> Vec<Vec<u32>> {
        let mut members = vec![Vec::new(); self.schedule.n_chunks() as usize];
        for (v, &c) in self.part.iter().enumerate() {
            members[c as usize].push(v as u32);
        }
        members
    }

    /// The plan of `chunk` for `layers` under the run's halo rule.
    pub(super) fn plan(&self, vertices: Vec<u32>, layers: Range<usize>) -> ChunkPlan {
        let shape = PlanShape {
            layers,
            n_layers: self.model.layers.len(),
            needs: Needs::of(self.model),
        };
        match self.halo {
            Halo::Drop => ChunkPlan::induced(self.graph, vertices, &shape),
            Halo::Exact => ChunkPlan::receptive_field(self.graph, vertices, &shape),
            Halo::Stale | Halo::Exchange | Halo::Broadcast => ChunkPlan::neighbours(
                self.graph,
                vertices,
                |u| u64::from(self.part[u as usize]),
                &shape,
            ),
        }
    }

    /// Every stage's layers, initialised from one seeded stream layer by layer, so the initial
    /// weights do not depend on the split.
    pub(super) fn build_model(&self, device: &Device) -> candle_core::Result<Vec<ExecLayer>> {
        let mut rng = Rng::new(self.config.seed);
        self.model
            .layers
            .iter()
            .map(|layer| ExecLayer::new(layer, &mut rng, device))
            .collect()
    }

    pub(super) fn stage_model(&self, layers: Vec<ExecLayer>, range: &Range<usize>) -> StageModel {
        StageModel {
            layers,
            first_layer: range.start,
            is_last: range.end == self.model.layers.len(),
            dropout: self.config.dropout,
            attention_dropout: self.config.attention_dropout,
            activation: self.config.activation,
        }
    }

    /// A fingerprint of everything the run computes from: the schedule and its placement, the
    /// network, the model and its split, the graph, its partition and data, the
    /// hyper-parameters and the halo rules. Ranks in different processes compare theirs before
    /// training, so that they cannot train on different inputs unnoticed.
    pub fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default();
        let described = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.schedule,
            self.placement,
            self.network,
            self.model,
            self.stage_layers,
            self.halo,
            self.cross_chunk,
            self.replication,
            self.config,
            self.emulate_links
        );
        f.bytes(described.as_bytes());
        f.u64s(self.graph.offsets().iter().copied());
        f.u64s(self.graph.targets().iter().map(|&t| u64::from(t)));
        f.u64s(self.part.iter().map(|&p| u64::from(p)));
        self.data.fingerprint(&mut f);
        f.finish()
    }

    pub(super) fn trace_links(&self) -> Vec<TraceLink> {
        self.network
            .links()
            .iter()
            .map(|l| TraceLink {
                from: self.network.node_name(l.from).to_string(),
                to: self.network.node_name(l.to).to_string(),
            })
            .collect()
    }
}
