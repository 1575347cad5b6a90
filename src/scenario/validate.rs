//! Raw scenario -> validated model, collecting every problem before returning.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{
    Activation, Backend, Device, DeviceMap, ExecutorSpec, ExplicitWorkload, GnnSpec, GraphSource,
    GraphStats, LayerKindSpec, LayerSpec, Optimizer, Scenario, ScheduleChoice, ScheduleSpec,
    Source, StageSplit, StageWork, Training, WorkUnit, Workload, MAX_EPOCHS,
    MAX_THREADS_PER_DEVICE,
};
use super::raw::{
    self, Quantity, RawGraph, RawLinkChoice, RawLinks, RawModel, RawPresets, RawScenario,
    RawSchedule, RawSynthetic, RawTopology, RawWorkload,
};
use crate::diag::{Diagnostic, Diagnostics, FieldPath, Locator};
use crate::gnn::Halo;
use crate::graph::synth::{RmatSpec, SbmSpec};
use crate::graph::Chunking;
use crate::network::{ClusterShape, Link, LinkSpec, Network, MAX_CLUSTER_DEVICES};
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::MAX_DEVICES;
use crate::schedule::{
    catalog::{self, Workloads},
    BackwardOrder, Generator, GnnPipeBackward, GnnPipeKnobs, GnnPipeOrder, ScheduleKind,
    UpdateMode,
};
use crate::units::{self, UnitError};

/// The most stages one device may hold (`schedule.stages_per_device`).
const MAX_STAGES_PER_DEVICE: i64 = crate::schedule::MAX_STAGES_PER_DEVICE as i64;
/// The largest chunk count (`schedule::MAX_CHUNKS`).
const MAX_CHUNKS: i64 = crate::schedule::MAX_CHUNKS as i64;
/// The deepest model: 4,096 layers, as many as a schedule may have stages
/// (`schedule::MAX_STAGES`).
const MAX_LAYERS: i64 = crate::schedule::MAX_STAGES as i64;
/// Synthetic graphs are generated in memory: at most 2^25 vertices, 2^26 undirected edges
/// (drawn: `nodes * avg_degree / 2` for SBM) and 2^27 feature non-zeros. Measured on a 2-core
/// machine (`validate`, release): 2^25 vertices with 2^26 edges take 50 s and 2.1 GB, an R-MAT
/// graph of 2^26 edges 22 s and 1.6 GB, 2^27 non-zeros 4 s and 1.1 GB. Graphs beyond them are
/// given by their counts (`stats`).
const MAX_SYNTHETIC_NODES: i64 = 1 << 25;
const MAX_SYNTHETIC_EDGES: i64 = 1 << 26;
const MAX_SYNTHETIC_NONZEROS: i64 = 1 << 27;
const LARGER_GRAPHS: &str =
    "a synthetic graph is generated in memory; give larger graphs as `stats`";
/// The widest layer (`out`, or the shorthand's `hidden`): 2^20 values per vertex (per head).
const MAX_WIDTH: i64 = 1 << 20;
/// The most GPUs a cluster node holds.
const MAX_GPUS_PER_NODE: i64 = 1024;

/// Parses and validates a scenario.
///
/// # Arguments
/// `file` names the scenario in diagnostics; `text` is its content; `overrides` are `--set
/// key=value` strings applied before validation; `base_dir` is the scenario's folder, against
/// which a schedule file path is resolved (nothing is read here).
///
/// # Returns
/// The scenario, or every problem found, each with file, line, column and field path.
pub fn parse_scenario(
    file: &str,
    text: &str,
    overrides: &[String],
    base_dir: &Path,
) -> Result<Scenario, Diagnostics> {
    let (raw, locator) = raw::parse(file, text, overrides)?;
    let mut ctx = Ctx {
        file,
        locator: &locator,
        presets: raw::presets(),
        problems: Vec::new(),
    };
    let scenario = ctx.scenario(&raw, base_dir);
    match scenario {
        Some(scenario) if ctx.problems.is_empty() => Ok(scenario),
        _ => Err(Diagnostics(ctx.problems)),
    }
}

struct Ctx<'a> {
    file: &'a str,
    locator: &'a Locator,
    presets: RawPresets,
    problems: Vec<Diagnostic>,
}

fn root() -> FieldPath {
    FieldPath::root()
}

impl Ctx<'_> {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        let diag = self.locator.diagnostic(self.file, path, message);
        self.problems.push(diag);
    }

    fn quantity<T>(
        &mut self,
        path: FieldPath,
        quantity: &Quantity,
        parse: fn(&str) -> Result<T, UnitError>,
    ) -> Option<T> {
        match parse(&quantity.0) {
            Ok(value) => Some(value),
            Err(err) => {
                self.error(path, err.to_string());
                None
            }
        }
    }

    fn optional<T>(
        &mut self,
        path: FieldPath,
        quantity: Option<&Quantity>,
        parse: fn(&str) -> Result<T, UnitError>,
    ) -> Option<Option<T>> {
        match quantity {
            None => Some(None),
            Some(q) => self.quantity(path, q, parse).map(Some),
        }
    }

    fn scenario(&mut self, raw: &RawScenario, base_dir: &Path) -> Option<Scenario> {
        if raw.name.trim().is_empty() {
            self.error(root().key("name"), "must not be empty");
        }
        let devices = self.devices(raw, base_dir);
        let network = devices
            .as_ref()
            .and_then(|devices| self.network(raw.links.as_ref(), devices));
        let workload = match (&raw.workload, &raw.graph, &raw.model) {
            (Some(w), None, None) => self.explicit(w),
            (None, Some(graph), Some(model)) => self.gnn(graph, model, &raw.schedule, base_dir),
            (None, None, None) => {
                self.error(
                    root(),
                    "give either `graph` and `model` (a GNN) or an explicit `workload`",
                );
                None
            }
            (Some(_), _, _) => {
                self.error(
                    root().key("workload"),
                    "give either `graph` and `model` or `workload`, not both",
                );
                None
            }
            (None, Some(_), None) => {
                self.error(root().key("graph"), "a graph needs a `model` to train");
                None
            }
            (None, None, Some(_)) => {
                self.error(root().key("model"), "a model needs a `graph` to train on");
                None
            }
        };
        let optimizer = self.optimizer(raw);
        let training = self.training(raw);
        let executor = self.executor(raw);
        let schedule = self.schedule(
            &raw.schedule,
            devices.as_deref(),
            workload.as_ref(),
            raw.graph.is_some() && raw.model.is_some(),
            base_dir,
        );
        if let (Some(Workload::Gnn(_)), Some(devices)) = (&workload, &devices) {
            self.devices_have_rates(devices);
        }
        Some(Scenario {
            name: raw.name.clone(),
            description: raw.description.clone(),
            devices: devices?,
            network: network?,
            workload: workload?,
            optimizer: optimizer?,
            training: training?,
            schedule: schedule?,
            executor: executor?,
            source: Source {
                file: self.file.to_string(),
                locator: self.locator.clone(),
            },
        })
    }

    fn devices(&mut self, raw: &RawScenario, base_dir: &Path) -> Option<Vec<Device>> {
        let path = root().key("devices");
        if raw.devices.is_empty() {
            self.error(path, "list at least one device");
            return None;
        }
        let mut devices = Vec::new();
        let mut seen: BTreeMap<String, FieldPath> = BTreeMap::new();
        let mut ok = true;
        let mut total = 0;
        // A cluster derives its routes from its structure; other networks store one per pair.
        let (max_devices, holder) = match raw.links.as_ref().and_then(|l| l.topology.as_ref()) {
            Some(topology) if topology.kind == "cluster" => {
                (MAX_CLUSTER_DEVICES, "a cluster holds")
            }
            _ => (
                MAX_DEVICES,
                "a network of stored routes holds (a `cluster` topology holds more)",
            ),
        };
        for (i, entry) in raw.devices.iter().enumerate() {
            let at = path.index(i);
            let count = entry.count.unwrap_or(1);
            if !(1..=max_devices as i64).contains(&count) {
                let more = match max_devices {
                    MAX_DEVICES => " (a `cluster` topology holds more)",
                    _ => "",
                };
                self.error(
                    at.key("count"),
                    format!("must be between 1 and {max_devices}, got {count}{more}"),
                );
                ok = false;
                continue;
            }
            total += count as usize;
            if total > max_devices {
                self.error(
                    at.key("count"),
                    format!("brings the scenario to {total} devices, more than the {max_devices} {holder}"),
                );
                ok = false;
                continue;
            }
            if entry.name.trim().is_empty() {
                self.error(at.key("name"), "must not be empty");
                ok = false;
                continue;
            }
            let preset = match entry.preset.as_deref() {
                None => None,
                Some(name) => match self.presets.devices.get(name) {
                    Some(preset) => Some((
                        preset.memory.clone(),
                        preset.peak_flops.clone(),
                        preset.memory_bandwidth.clone(),
                        preset.op_overhead.clone(),
                    )),
                    None => {
                        let known = self
                            .presets
                            .devices
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ");
                        self.error(
                            at.key("preset"),
                            format!("unknown device preset `{name}` (known: {known})"),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            let memory = entry.memory.as_ref().or(preset.as_ref().map(|p| &p.0));
            let Some(memory) = memory else {
                self.error(
                    at.clone(),
                    "give the device a `preset` or a `memory` capacity",
                );
                ok = false;
                continue;
            };
            let memory_bytes = self.quantity(at.key("memory"), memory, units::parse_bytes);
            if memory_bytes == Some(0) {
                self.error(at.key("memory"), "must be positive");
            }
            let flops = entry.peak_flops.as_ref().or(preset.as_ref().map(|p| &p.1));
            let peak_flops = self.optional(at.key("peak_flops"), flops, units::parse_flops);
            let bandwidth = entry
                .memory_bandwidth
                .as_ref()
                .or(preset.as_ref().map(|p| &p.2));
            let memory_bandwidth = self.optional(
                at.key("memory_bandwidth"),
                bandwidth,
                units::parse_bandwidth,
            );
            let overhead = entry.op_overhead.as_ref().or(preset.as_ref().map(|p| &p.3));
            let op_overhead =
                self.optional(at.key("op_overhead"), overhead, units::parse_duration_ns);
            let (Some(memory_bytes), Some(peak_flops), Some(memory_bandwidth), Some(op_overhead)) =
                (memory_bytes, peak_flops, memory_bandwidth, op_overhead)
            else {
                ok = false;
                continue;
            };
            for j in 0..count {
                let name = if entry.count.is_none() {
                    entry.name.clone()
                } else {
                    format!("{}{j}", entry.name)
                };
                if let Some(first) = seen.get(&name) {
                    self.error(
                        at.key("name"),
                        format!("device name `{name}` is already used by {first}"),
                    );
                    ok = false;
                }
                seen.insert(name.clone(), at.clone());
                devices.push(Device {
                    name,
                    preset: entry.preset.clone(),
                    memory_bytes,
                    peak_flops,
                    memory_bandwidth_bytes_per_s: memory_bandwidth,
                    op_overhead_ns: op_overhead,
                    profile: entry.profile.as_ref().map(|p| base_dir.join(p)),
                    entry: i,
                });
            }
        }
        ok.then_some(devices)
    }

    /// Bandwidth and latency from a link preset, overridden field by field.
    fn link_params(
        &mut self,
        at: &FieldPath,
        preset: Option<&str>,
        bandwidth: Option<&Quantity>,
        latency: Option<&Quantity>,
    ) -> Option<(f64, u64)> {
        let preset = match preset {
            None => None,
            Some(name) => match self.presets.links.get(name) {
                Some(p) => Some((p.bandwidth.clone(), p.latency.clone())),
                None => {
                    let known = self
                        .presets
                        .links
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.error(
                        at.key("preset"),
                        format!("unknown link preset `{name}` (known: {known})"),
                    );
                    return None;
                }
            },
        };
        let bandwidth = bandwidth.or(preset.as_ref().map(|p| &p.0));
        let latency = latency.or(preset.as_ref().map(|p| &p.1));
        let (Some(bandwidth), Some(latency)) = (bandwidth, latency) else {
            self.error(
                at.clone(),
                "give a link `preset` or both `bandwidth` and `latency`",
            );
            return None;
        };
        let bandwidth = self.quantity(at.key("bandwidth"), bandwidth, units::parse_bandwidth);
        let latency = self.quantity(at.key("latency"), latency, units::parse_duration_ns);
        Some((bandwidth?, latency?))
    }

    fn network(&mut self, links: Option<&RawLinks>, devices: &[Device]) -> Option<Network> {
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        let n = devices.len();
        let path = root().key("links");
        let Some(raw) = links else {
            if n > 1 {
                self.error(
                    path,
                    "required when there is more than one device (a topology or pairs)",
                );
                return None;
            }
            return Some(Network::free(names));
        };
        let mut all_links = Vec::new();
        let mut switches = Vec::new();
        let mut ok = true;
        let duplex = |all: &mut Vec<Link>, a: usize, b: usize, (bw, lat): (f64, u64)| {
            for (from, to) in [(a, b), (b, a)] {
                all.push(Link {
                    from,
                    to,
                    bandwidth_bytes_per_s: bw,
                    latency_ns: lat,
                });
            }
        };
        if let Some(topology) = raw.topology.as_ref().filter(|t| t.kind == "cluster") {
            if !raw.pairs.is_empty() {
                self.error(
                    path.key("pairs"),
                    "a cluster's routes follow its structure; it takes no explicit `pairs`",
                );
                return None;
            }
            let shape = self.cluster(topology, path.key("topology"))?;
            return Some(Network::cluster(names, shape));
        }
        if let Some(topology) = &raw.topology {
            let at = path.key("topology");
            self.no_cluster_fields(topology, &at);
            let params = self.link_params(
                &at,
                topology.preset.as_deref(),
                topology.bandwidth.as_ref(),
                topology.latency.as_ref(),
            );
            match (topology.kind.as_str(), params) {
                (_, None) => ok = false,
                ("full", Some(p)) => {
                    for a in 0..n {
                        for b in a + 1..n {
                            duplex(&mut all_links, a, b, p);
                        }
                    }
                }
                ("ring", Some(p)) => {
                    for a in 0..n {
                        let b = (a + 1) % n;
                        // Two devices form a ring of one link, not two parallel ones.
                        if a < b || (n > 2 && b == 0) {
                            duplex(&mut all_links, a, b, p);
                        }
                    }
                }
                ("switch", Some(p)) => {
                    switches.push("switch".to_string());
                    for a in 0..n {
                        duplex(&mut all_links, a, n, p);
                    }
                }
                (other, Some(_)) => {
                    self.error(
                        at.key("kind"),
                        format!(
                            "unknown topology `{other}` (expected full, ring, switch or cluster)"
                        ),
                    );
                    ok = false;
                }
            }
        }
        for (i, pair) in raw.pairs.iter().enumerate() {
            let at = path.key("pairs").index(i);
            let params = self.link_params(
                &at,
                pair.preset.as_deref(),
                pair.bandwidth.as_ref(),
                pair.latency.as_ref(),
            );
            if pair.between.len() != 2 {
                self.error(
                    at.key("between"),
                    format!("name exactly two devices, got {}", pair.between.len()),
                );
                ok = false;
                continue;
            }
            let mut ends = Vec::new();
            for (j, name) in pair.between.iter().enumerate() {
                match names.iter().position(|n| n == name) {
                    Some(d) => ends.push(d),
                    None => {
                        self.error(
                            at.key("between").index(j),
                            format!("unknown device `{name}` (devices: {})", abbreviate(&names)),
                        );
                        ok = false;
                    }
                }
            }
            if let ([a, b], Some(p)) = (ends.as_slice(), params) {
                if a == b {
                    self.error(at.key("between"), "a link joins two different devices");
                    ok = false;
                } else {
                    duplex(&mut all_links, *a, *b, p);
                }
            } else {
                ok = false;
            }
        }
        if raw.topology.is_none() && raw.pairs.is_empty() {
            self.error(path, "give a `topology` or `pairs`");
            return None;
        }
        if !ok {
            return None;
        }
        match Network::build(names.clone(), switches, all_links) {
            Ok(network) => Some(network),
            Err(unreachable) => {
                let first = &unreachable[0];
                let more = match unreachable.len() - 1 {
                    0 => String::new(),
                    k => format!(" (and {k} more unreachable pairs)"),
                };
                self.error(
                    path,
                    format!(
                        "no route from {} to {}{more}",
                        names[first.from], names[first.to]
                    ),
                );
                None
            }
        }
    }

    /// Flags the cluster-only fields on a topology of another kind.
    fn no_cluster_fields(&mut self, topology: &RawTopology, at: &FieldPath) {
        let given = [
            ("node", topology.node.is_some()),
            ("gpus_per_node", topology.gpus_per_node.is_some()),
            ("nics_per_node", topology.nics_per_node.is_some()),
            ("intra", topology.intra.is_some()),
            ("inter", topology.inter.is_some()),
            ("nodes_per_leaf", topology.nodes_per_leaf.is_some()),
            ("oversubscription", topology.oversubscription.is_some()),
        ];
        for (field, _) in given.iter().filter(|(_, given)| *given) {
            self.error(
                at.key(field),
                format!("only a `kind: cluster` topology takes `{field}`"),
            );
        }
    }

    /// A cluster topology's shape: a node preset, overridden field by field, and its checks.
    fn cluster(&mut self, topology: &RawTopology, at: FieldPath) -> Option<ClusterShape> {
        for (field, given) in [
            ("preset", topology.preset.is_some()),
            ("bandwidth", topology.bandwidth.is_some()),
            ("latency", topology.latency.is_some()),
        ] {
            if given {
                self.error(
                    at.key(field),
                    format!("a cluster takes its links as `intra` and `inter`, not `{field}`"),
                );
                return None;
            }
        }
        let node = match topology.node.as_deref() {
            None => None,
            Some(name) => match self.presets.nodes.get(name) {
                Some(p) => Some((
                    p.gpus_per_node,
                    p.nics_per_node,
                    RawLinkChoice::Preset(p.intra.clone()),
                    RawLinkChoice::Preset(p.inter.clone()),
                )),
                None => {
                    let known = self.presets.nodes.keys().cloned().collect::<Vec<_>>();
                    self.error(
                        at.key("node"),
                        format!("unknown node preset `{name}` (known: {})", known.join(", ")),
                    );
                    return None;
                }
            },
        };
        let mut ok = true;
        let gpus = topology.gpus_per_node.or(node.as_ref().map(|n| n.0));
        let gpus = match gpus {
            None => {
                self.error(
                    at.key("gpus_per_node"),
                    "give `gpus_per_node` or a `node` preset",
                );
                return None;
            }
            Some(g) if !(1..=MAX_GPUS_PER_NODE).contains(&g) => {
                self.error(
                    at.key("gpus_per_node"),
                    format!("must be between 1 and {MAX_GPUS_PER_NODE}, got {g}"),
                );
                return None;
            }
            Some(g) => g as usize,
        };
        // Rail-optimised by default: a NIC per GPU.
        let nics = topology
            .nics_per_node
            .or(node.as_ref().map(|n| n.1))
            .unwrap_or(gpus as i64);
        if !(1..=gpus as i64).contains(&nics) || gpus % nics as usize != 0 {
            self.error(
                at.key("nics_per_node"),
                format!(
                    "must divide gpus_per_node ({gpus}) so that each NIC serves as many GPUs, got {nics}"
                ),
            );
            ok = false;
        }
        let per_leaf = match topology.nodes_per_leaf {
            None => None,
            Some(l) if l >= 1 && l <= MAX_CLUSTER_DEVICES as i64 => Some(l as usize),
            Some(l) => {
                self.error(
                    at.key("nodes_per_leaf"),
                    format!("must be between 1 and {MAX_CLUSTER_DEVICES}, got {l}"),
                );
                ok = false;
                None
            }
        };
        let oversubscription = topology.oversubscription.unwrap_or(1.0);
        if !(1.0..=1e6).contains(&oversubscription) {
            self.error(
                at.key("oversubscription"),
                format!("must be between 1 (non-blocking) and 1000000, got {oversubscription}"),
            );
            ok = false;
        } else if oversubscription != 1.0 && topology.nodes_per_leaf.is_none() {
            self.error(
                at.key("oversubscription"),
                "applies to a leaf's uplinks to the spine: give `nodes_per_leaf` (two switch tiers)",
            );
            ok = false;
        }
        let intra = self.cluster_link(
            topology.intra.as_ref().or(node.as_ref().map(|n| &n.2)),
            at.key("intra"),
        );
        let inter = self.cluster_link(
            topology.inter.as_ref().or(node.as_ref().map(|n| &n.3)),
            at.key("inter"),
        );
        Some(ClusterShape {
            gpus_per_node: gpus,
            nics_per_node: nics as usize,
            nodes_per_leaf: per_leaf,
            intra: intra?,
            inter: inter?,
            oversubscription,
        })
        .filter(|_| ok)
    }

    /// One of a cluster's links: a preset's name, or `{preset, bandwidth, latency}`.
    fn cluster_link(&mut self, choice: Option<&RawLinkChoice>, at: FieldPath) -> Option<LinkSpec> {
        let (bandwidth, latency) = match choice {
            None => {
                self.error(
                    at,
                    "give a link preset (e.g. nvlink4, net400g) or {bandwidth, latency}, or a `node` preset",
                );
                return None;
            }
            Some(RawLinkChoice::Preset(name)) => match self.presets.links.get(name) {
                Some(p) => (p.bandwidth.clone(), p.latency.clone()),
                None => {
                    let known = self.presets.links.keys().cloned().collect::<Vec<_>>();
                    self.error(
                        at,
                        format!("unknown link preset `{name}` (known: {})", known.join(", ")),
                    );
                    return None;
                }
            },
            Some(RawLinkChoice::Spec(spec)) => {
                let (bandwidth, latency) = self.link_params(
                    &at,
                    spec.preset.as_deref(),
                    spec.bandwidth.as_ref(),
                    spec.latency.as_ref(),
                )?;
                return Some(LinkSpec {
                    bandwidth_bytes_per_s: bandwidth,
                    latency_ns: latency,
                });
            }
        };
        let bandwidth = self.quantity(at.clone(), &bandwidth, units::parse_bandwidth)?;
        let latency = self.quantity(at, &latency, units::parse_duration_ns)?;
        Some(LinkSpec {
            bandwidth_bytes_per_s: bandwidth,
            latency_ns: latency,
        })
    }

    fn explicit(&mut self, w: &RawWorkload) -> Option<Workload> {
        let path = root().key("workload");
        if w.kind != "explicit" {
            self.error(
                path.key("kind"),
                format!("unknown workload kind `{}` (expected explicit)", w.kind),
            );
            return None;
        }
        let per = match w.per.as_deref() {
            None | Some("chunk") => Some(WorkUnit::Chunk),
            Some("batch") => Some(WorkUnit::Batch),
            Some(other) => {
                self.error(
                    path.key("per"),
                    format!("unknown value `{other}` (expected chunk or batch)"),
                );
                None
            }
        };
        if w.stages.is_empty() {
            self.error(path.key("stages"), "list at least one stage");
            return None;
        }
        let mut stages = Vec::new();
        for (i, stage) in w.stages.iter().enumerate() {
            let at = path.key("stages").index(i);
            let forward =
                self.quantity(at.key("forward"), &stage.forward, units::parse_duration_ns);
            let backward = self.quantity(
                at.key("backward"),
                &stage.backward,
                units::parse_duration_ns,
            );
            let optimizer = self.optional(
                at.key("optimizer"),
                stage.optimizer.as_ref(),
                units::parse_duration_ns,
            );
            let activation = self.optional(
                at.key("activation"),
                stage.activation.as_ref(),
                units::parse_bytes,
            );
            let stash = self.optional(at.key("stash"), stage.stash.as_ref(), units::parse_bytes);
            let parameters = self.optional(
                at.key("parameters"),
                stage.parameters.as_ref(),
                units::parse_bytes,
            );
            if let (Some(f), Some(b), Some(o), Some(a), Some(s), Some(p)) =
                (forward, backward, optimizer, activation, stash, parameters)
            {
                let activation_bytes = a.unwrap_or(0);
                stages.push(StageWork {
                    forward_ns: f,
                    backward_ns: b,
                    optimizer_ns: o.unwrap_or(0),
                    activation_bytes,
                    stash_bytes: s.unwrap_or(activation_bytes),
                    parameter_bytes: p.unwrap_or(0),
                });
            }
        }
        (stages.len() == w.stages.len())
            .then_some(Workload::Explicit(ExplicitWorkload { per: per?, stages }))
    }

    fn training(&mut self, raw: &RawScenario) -> Option<Training> {
        let path = root().key("training");
        let t = raw.training.as_ref();
        let epochs = match t.and_then(|t| t.epochs) {
            None => Some(200),
            Some(e) => self
                .count(path.key("epochs"), e, "epochs", i64::from(MAX_EPOCHS))
                .map(|e| e as u32),
        };
        let mut number =
            |field: &str, value: Option<f64>, default: f64, ok: fn(f64) -> bool, rule: &str| {
                match value {
                    None => Some(default),
                    Some(v) if v.is_finite() && ok(v) => Some(v),
                    Some(v) => {
                        self.error(path.key(field), format!("must be {rule}, got {v}"));
                        None
                    }
                }
            };
        let lr = number("lr", t.and_then(|t| t.lr), 0.01, |v| v > 0.0, "positive");
        let weight_decay = number(
            "weight_decay",
            t.and_then(|t| t.weight_decay),
            5e-4,
            |v| v >= 0.0,
            "zero or positive",
        );
        let dropout = number(
            "dropout",
            t.and_then(|t| t.dropout),
            0.5,
            |v| (0.0..1.0).contains(&v),
            "in [0, 1)",
        );
        let attention_dropout = number(
            "attention_dropout",
            t.and_then(|t| t.attention_dropout),
            0.0,
            |v| (0.0..1.0).contains(&v),
            "in [0, 1)",
        );
        Some(Training {
            epochs: epochs?,
            lr: lr?,
            weight_decay: weight_decay?,
            dropout: dropout?,
            attention_dropout: attention_dropout?,
            seed: t.and_then(|t| t.seed).unwrap_or(0),
        })
    }

    fn executor(&mut self, raw: &RawScenario) -> Option<ExecutorSpec> {
        let path = root().key("executor");
        let Some(e) = raw.executor.as_ref() else {
            return Some(ExecutorSpec::default());
        };
        let backend = match e.backend.as_deref() {
            None | Some("cpu") => Some(Backend::Cpu),
            Some("cuda") => Some(Backend::Cuda),
            Some(other) => {
                self.error(
                    path.key("backend"),
                    format!("unknown backend `{other}` (expected cpu or cuda)"),
                );
                None
            }
        };
        let device_map = match e.device_map.as_deref() {
            None | Some("auto") => Some(DeviceMap::Auto),
            Some("per_stage") => Some(DeviceMap::PerStage),
            Some("shared") => Some(DeviceMap::Shared),
            Some(other) => {
                self.error(
                    path.key("device_map"),
                    format!("unknown device map `{other}` (expected auto, per_stage or shared)"),
                );
                None
            }
        };
        let threads = match e.threads_per_device {
            None => Some(None),
            Some(n) => self
                .count(
                    path.key("threads_per_device"),
                    n,
                    "threads",
                    i64::from(MAX_THREADS_PER_DEVICE),
                )
                .map(|n| Some(n as u32)),
        };
        let cores = match e.cores {
            None => Some(None),
            Some(n) => self
                .count(
                    path.key("cores"),
                    n,
                    "cores",
                    i64::from(MAX_THREADS_PER_DEVICE),
                )
                .map(|n| Some(n as u32)),
        };
        Some(ExecutorSpec {
            backend: backend?,
            device_map: device_map?,
            emulate_links: e.emulate_links.unwrap_or(false),
            threads_per_device: threads?,
            cores: cores?,
        })
    }

    fn optimizer(&mut self, raw: &RawScenario) -> Option<Optimizer> {
        let name = raw.training.as_ref().and_then(|t| t.optimizer.as_deref());
        match name {
            None | Some("adam") => Some(Optimizer::Adam),
            Some("sgd") => Some(Optimizer::Sgd),
            Some("momentum") => Some(Optimizer::Momentum),
            Some(other) => {
                self.error(
                    root().key("training").key("optimizer"),
                    format!("unknown optimizer `{other}` (expected adam, sgd or momentum)"),
                );
                None
            }
        }
    }

    fn schedule(
        &mut self,
        raw: &RawSchedule,
        devices: Option<&[Device]>,
        workload: Option<&Workload>,
        gnn_declared: bool,
        base_dir: &Path,
    ) -> Option<ScheduleSpec> {
        let path = root().key("schedule");
        let mut ok = true;
        let kind = raw.kind.as_deref();
        let entry = kind.and_then(catalog::find);
        let of = entry.map(|e| e.kind);
        // A GNN workload that failed validation is still a GNN workload for these checks, so
        // one bad layer does not also make every GNN field "not apply".
        let gnn = workload.map_or(gnn_declared, |w| matches!(w, Workload::Gnn(_)));
        let mut only = |ctx: &mut Self, field: &str, set: bool, allowed: bool, rule: &str| {
            if set && !allowed {
                ctx.error(path.key(field), format!("only applies to {rule}"));
                ok = false;
            }
        };
        // A kind's own knobs come from the catalog: a knob set for a kind that does not list it
        // is named with the kinds that do.
        for (field, set) in [
            ("backward_order", raw.backward_order.is_some()),
            ("stages_per_device", raw.stages_per_device.is_some()),
            ("order", raw.order.is_some()),
            ("backward", raw.backward.is_some()),
            ("update", raw.update.is_some()),
            ("exchange", raw.exchange.is_some()),
            ("algorithm", raw.algorithm.is_some()),
            ("replication", raw.replication.is_some()),
            ("partitions", raw.partitions.is_some()),
        ] {
            // An unknown kind is reported once, below.
            if kind.is_some() && entry.is_none() {
                continue;
            }
            let owners: Vec<String> = catalog::CATALOG
                .iter()
                .filter(|e| e.knobs.contains(&field))
                .map(|e| format!("`kind: {}`", e.name))
                .collect();
            let allowed = entry.is_some_and(|e| e.knobs.contains(&field));
            only(self, field, set, allowed, &owners.join(", "));
        }
        for (field, set) in [
            ("chunking", raw.chunking.is_some()),
            ("halo", raw.halo.is_some()),
            ("seed", raw.seed.is_some()),
        ] {
            only(self, field, set, gnn, "GNN workloads (`graph` and `model`)");
        }
        only(
            self,
            "stages",
            raw.stages.is_some(),
            gnn,
            "GNN workloads (explicit workloads list their stages)",
        );
        // Graph parallelism runs every layer on every device: a stage split means nothing there.
        let split_given = raw
            .stages
            .as_ref()
            .is_some_and(|v| v.as_str() != Some("auto"));
        only(
            self,
            "stages",
            split_given && gnn,
            of != Some(ScheduleKind::GraphParallel),
            "pipelines (graph parallelism runs every layer on every device)",
        );
        let n_chunks = match (raw.chunks, of) {
            (Some(k), _) if (1..=MAX_CHUNKS).contains(&k) => k as u32,
            (Some(k), _) => {
                self.error(
                    path.key("chunks"),
                    format!("must be between 1 and {MAX_CHUNKS}, got {k}"),
                );
                ok = false;
                1
            }
            (None, Some(ScheduleKind::GraphParallel)) => 1,
            (None, _) => {
                self.error(path.clone(), "give the number of `chunks` per epoch");
                ok = false;
                1
            }
        };
        let backward_order = self.choose(
            &path.key("backward_order"),
            raw.backward_order.as_deref(),
            &[
                ("forward", BackwardOrder::Forward),
                ("reverse", BackwardOrder::Reverse),
            ],
        );
        let order = self.choose(
            &path.key("order"),
            raw.order.as_deref(),
            &[
                ("gpipe", GnnPipeOrder::GPipe),
                ("1f1b", GnnPipeOrder::OneFOneB),
            ],
        );
        let backward = self.choose(
            &path.key("backward"),
            raw.backward.as_deref(),
            &[
                ("drop", GnnPipeBackward::Drop),
                ("deferred", GnnPipeBackward::Deferred),
                ("exact", GnnPipeBackward::Exact),
            ],
        );
        let update = self.choose(
            &path.key("update"),
            raw.update.as_deref(),
            &[
                ("per_epoch", UpdateMode::PerEpoch),
                ("per_chunk", UpdateMode::PerChunk),
            ],
        );
        let chunking = match raw.chunking.as_deref() {
            None | Some("contiguous") => Some(Chunking::Contiguous),
            Some("random") => Some(Chunking::Random {
                seed: raw.seed.unwrap_or(0),
            }),
            Some("locality") => Some(Chunking::Locality),
            Some(other) => {
                self.error(
                    path.key("chunking"),
                    format!("unknown value `{other}` (expected contiguous, random or locality)"),
                );
                None
            }
        };
        let halo = match (of, raw.halo.as_deref(), raw.exchange.as_deref()) {
            (Some(ScheduleKind::GraphParallel), Some(halo), _) => {
                self.error(
                    path.key("halo"),
                    format!("graph parallelism exchanges neighbour rows at every layer: `halo: {halo}` does not apply (choose `exchange: halo` or `exchange: broadcast`)"),
                );
                None
            }
            (Some(ScheduleKind::GraphParallel), None, exchange) => self.choose(
                &path.key("exchange"),
                exchange,
                &[("halo", Halo::Exchange), ("broadcast", Halo::Broadcast)],
            ),
            (Some(ScheduleKind::GnnPipe), None | Some("stale"), _) => Some(Halo::Stale),
            (Some(ScheduleKind::GnnPipe), Some(other), _) => {
                self.error(
                    path.key("halo"),
                    format!(
                        "gnnpipe reads neighbours from its history: halo is `stale`, not `{other}`"
                    ),
                );
                None
            }
            (_, halo, _) => self.choose(
                &path.key("halo"),
                halo,
                &[("drop", Halo::Drop), ("exact", Halo::Exact)],
            ),
        };
        let algorithm = if of == Some(ScheduleKind::GraphParallel) {
            self.graph_algorithm(raw, &path)
        } else {
            Some(GraphAlgorithm::OneD)
        };
        if algorithm.is_some_and(|a| a != GraphAlgorithm::OneD) && raw.exchange.is_some() {
            self.error(
                path.key("exchange"),
                "only applies to `algorithm: 1d` (1.5d, 2d and 3d move whole blocks)",
            );
            ok = false;
        }
        if of == Some(ScheduleKind::GnnPipe)
            && order == Some(GnnPipeOrder::OneFOneB)
            && backward == Some(GnnPipeBackward::Exact)
        {
            self.error(path.key("backward"), "exact backward waits for every chunk's gradient, so it needs `order: gpipe` (1F1B's interleaving would deadlock)");
            ok = false;
        }
        let choice = match (kind, &raw.file) {
            (Some(_), Some(_)) => {
                self.error(path.key("file"), "give either `kind` or `file`, not both");
                None
            }
            (None, None) => {
                self.error(
                    path.clone(),
                    format!(
                        "give a schedule `kind` ({}) or a `file`",
                        catalog::CATALOG
                            .iter()
                            .map(|e| e.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
            (None, Some(file)) => Some(ScheduleChoice::File(base_dir.join(file))),
            (Some(name), None) => match entry.map(|e| (e, e.generator)) {
                None => {
                    let names: Vec<&str> = catalog::CATALOG.iter().map(|e| e.name).collect();
                    self.error(
                        path.key("kind"),
                        format!(
                            "unknown schedule kind `{name}` (expected {})",
                            names.join(", ")
                        ),
                    );
                    None
                }
                Some((e, _)) if e.workloads == Workloads::Gnn && !gnn && workload.is_some() => {
                    let what = match e.generator {
                        None => "graph parallelism".to_string(),
                        Some(_) => format!("`kind: {name}`"),
                    };
                    self.error(
                        path.key("kind"),
                        format!("{what} needs a GNN workload (`graph` and `model`)"),
                    );
                    None
                }
                Some((_, None)) => Some(ScheduleChoice::GraphParallel),
                Some((_, Some(Generator::GPipe(_)))) => {
                    backward_order.map(|o| ScheduleChoice::Generated(Generator::GPipe(o)))
                }
                Some((_, Some(Generator::GnnPipe(_)))) => match (order, backward, update) {
                    (Some(order), Some(backward), Some(update)) => Some(ScheduleChoice::Generated(
                        Generator::GnnPipe(GnnPipeKnobs {
                            order,
                            backward,
                            update,
                        }),
                    )),
                    _ => None,
                },
                Some((_, Some(generator))) => Some(ScheduleChoice::Generated(generator)),
            },
        };
        // Placement needs the devices and the workload; without them only the checks above can
        // run (what is wrong with those is reported where they are validated).
        let (Some(devices), Some(workload)) = (devices, workload) else {
            return None;
        };
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        let placement = match &raw.placement {
            Some(list) => {
                // Indexed, so that a cluster's thousands of devices place in linear time.
                let index: BTreeMap<&str, usize> = names
                    .iter()
                    .enumerate()
                    .map(|(d, n)| (n.as_str(), d))
                    .collect();
                let mut placed = vec![false; names.len()];
                let mut placement = Vec::new();
                for (i, name) in list.iter().enumerate() {
                    match index.get(name.as_str()).copied() {
                        Some(d) if std::mem::replace(&mut placed[d], true) => {
                            self.error(
                                path.key("placement").index(i),
                                format!("device `{name}` is placed twice"),
                            );
                            ok = false;
                        }
                        Some(d) => placement.push(d),
                        None => {
                            self.error(
                                path.key("placement").index(i),
                                format!(
                                    "unknown device `{name}` (devices: {})",
                                    abbreviate(&names)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                placement
            }
            None => Vec::new(),
        };
        let available = if raw.placement.is_some() {
            placement.len()
        } else {
            devices.len()
        };
        let n_stages = match workload {
            Workload::Explicit(w) => Some((w.stages.len(), root().key("workload").key("stages"))),
            Workload::Gnn(gnn) => match &gnn.stages {
                StageSplit::Layers(counts) => Some((counts.len(), path.key("stages"))),
                StageSplit::Auto => None,
            },
        };
        // Stages per device: the round-robin kinds' knob, two for the V shapes, else one.
        let given_v = match raw.stages_per_device {
            None => None,
            Some(v) if (1..=MAX_STAGES_PER_DEVICE).contains(&v) => Some(v as u32),
            Some(v) => {
                self.error(
                    path.key("stages_per_device"),
                    format!("must be between 1 and {MAX_STAGES_PER_DEVICE}, got {v}"),
                );
                ok = false;
                None
            }
        };
        let v = match &choice {
            Some(ScheduleChoice::Generated(generator)) => {
                super::model::stages_per_device(*generator, given_v) as usize
            }
            _ => 1,
        };
        // GNNPipe's hybrid: each stage a group of `partitions` devices.
        let partitions = match raw.partitions {
            None => 1,
            Some(g) if (1..=MAX_DEVICES as i64).contains(&g) => g as u32,
            Some(g) => {
                self.error(
                    path.key("partitions"),
                    format!("must be between 1 and {MAX_DEVICES}, got {g}"),
                );
                ok = false;
                1
            }
        };
        if partitions > 1 {
            if backward == Some(GnnPipeBackward::Exact) {
                self.error(path.key("backward"), "gnnpipe with partitions runs backward drop or deferred: exact's barrier across a group is not modelled");
                ok = false;
            }
            if update == Some(UpdateMode::PerChunk) {
                self.error(path.key("update"), "gnnpipe with partitions steps once per epoch: a per-chunk all-reduce in every group is not modelled");
                ok = false;
            }
            if let Workload::Gnn(gnn) = workload {
                if gnn.stages == StageSplit::Auto && available < partitions as usize {
                    self.error(
                        path.key("partitions"),
                        format!("{partitions} partitions per stage need at least {partitions} devices, {available} are placed"),
                    );
                    ok = false;
                }
            }
        }
        let g = partitions as usize;
        let per_device = |n: usize| match v {
            1 => format!("{n} stages"),
            v => format!("{n} stages at {v} per device"),
        };
        if let (Some(ScheduleChoice::Generated(_)), Some((n_stages, at))) = (&choice, n_stages) {
            if n_stages % v != 0 {
                self.error(
                    at,
                    format!("{n_stages} stages do not fill devices at {v} stages per device"),
                );
                ok = false;
            } else if n_stages / v * g > devices.len() {
                self.error(
                    at,
                    format!(
                        "{}{} need {} devices but the scenario has {}",
                        per_device(n_stages),
                        match g {
                            1 => String::new(),
                            g => format!(" of {g} partitions each"),
                        },
                        n_stages / v * g,
                        devices.len()
                    ),
                );
                ok = false;
            } else if raw.placement.is_some() && placement.len() != n_stages / v * g {
                let what = match (v, g) {
                    (1, 1) => format!("each of the {n_stages} stages"),
                    (1, g) => format!("each of the {n_stages} stages' {g} partitions"),
                    (v, _) => format!("the {n_stages} stages, {v} per device,"),
                };
                self.error(
                    path.key("placement"),
                    format!("place {what} on a device, got {} names", placement.len()),
                );
                ok = false;
            }
        }
        if let (Some(ScheduleChoice::Generated(_)), Workload::Gnn(gnn)) = (&choice, workload) {
            let layers = gnn.layers.len();
            if gnn.stages == StageSplit::Auto && layers < v {
                let at = match given_v {
                    Some(_) => path.key("stages_per_device"),
                    None => path.key("kind"),
                };
                self.error(
                    at,
                    format!(
                        "{v} stages per device need at least {v} layers, the model has {layers}"
                    ),
                );
                ok = false;
            } else if gnn.stages == StageSplit::Auto
                && raw.placement.is_some()
                && available > layers / v * g
            {
                self.error(
                    path.key("placement"),
                    format!(
                        "{available} devices are placed but {layers} layers make at most {} stages{}",
                        layers - layers % v,
                        match v {
                            1 => String::new(),
                            v => format!(" at {v} per device, on {} devices", layers / v),
                        }
                    ),
                );
                ok = false;
            }
        }
        if let (Some(ScheduleChoice::GraphParallel), Some(algorithm)) = (&choice, algorithm) {
            if let Err(message) = algorithm.grid_side(available as u32) {
                let field = match algorithm {
                    GraphAlgorithm::OneHalfD { .. } if raw.replication.is_some() => "replication",
                    _ => "algorithm",
                };
                self.error(path.key(field), message);
                ok = false;
            }
        }
        ok.then_some(ScheduleSpec {
            algorithm: algorithm?,
            choice: choice?,
            n_chunks,
            placement: raw.placement.is_some().then_some(placement),
            chunking: chunking?,
            halo: halo?,
            stages_per_device: given_v,
            partitions,
        })
    }

    /// `schedule.algorithm` and `schedule.replication`: 1D unless stated; `replication` only
    /// with `1.5d`, which needs it.
    fn graph_algorithm(&mut self, raw: &RawSchedule, path: &FieldPath) -> Option<GraphAlgorithm> {
        let name = raw.algorithm.as_deref();
        let replication = match raw.replication {
            Some(c) if !(1..=i64::from(MAX_DEVICES as u32)).contains(&c) => {
                self.error(
                    path.key("replication"),
                    format!("must be between 1 and {MAX_DEVICES}, got {c}"),
                );
                return None;
            }
            c => c.map(|c| c as u32),
        };
        match (name, replication) {
            (Some("1.5d"), Some(replication)) => Some(GraphAlgorithm::OneHalfD { replication }),
            (Some("1.5d"), None) => {
                self.error(
                    path.key("algorithm"),
                    "1.5d needs `replication: c`, the copies of each block row",
                );
                None
            }
            (other, Some(_)) => {
                self.error(
                    path.key("replication"),
                    format!(
                        "only applies to `algorithm: 1.5d`, not `{}`",
                        other.unwrap_or("1d")
                    ),
                );
                None
            }
            (None | Some("1d"), None) => Some(GraphAlgorithm::OneD),
            (Some("2d"), None) => Some(GraphAlgorithm::TwoD),
            (Some("3d"), None) => Some(GraphAlgorithm::ThreeD),
            (Some(other), None) => {
                self.error(
                    path.key("algorithm"),
                    format!("unknown value `{other}` (expected 1d, 1.5d, 2d or 3d)"),
                );
                None
            }
        }
    }

    /// Picks the value named `text` from `options`, or the first option when absent.
    fn choose<T: Copy>(
        &mut self,
        path: &FieldPath,
        text: Option<&str>,
        options: &[(&str, T)],
    ) -> Option<T> {
        match text {
            None => Some(options[0].1),
            Some(text) => match options.iter().find(|(name, _)| *name == text) {
                Some(&(_, value)) => Some(value),
                None => {
                    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                    self.error(
                        path.clone(),
                        format!("unknown value `{text}` (expected {})", names.join(", ")),
                    );
                    None
                }
            },
        }
    }

    /// A GNN workload needs each device's peak rate and memory bandwidth for its roofline.
    fn devices_have_rates(&mut self, devices: &[Device]) {
        let mut reported = Vec::new();
        for device in devices {
            if reported.contains(&device.entry) {
                continue;
            }
            let missing: Vec<&str> = [
                ("peak_flops", device.peak_flops.is_none()),
                (
                    "memory_bandwidth",
                    device.memory_bandwidth_bytes_per_s.is_none(),
                ),
            ]
            .iter()
            .filter(|(_, missing)| *missing)
            .map(|(name, _)| *name)
            .collect();
            if !missing.is_empty() {
                reported.push(device.entry);
                self.error(
                    root().key("devices").index(device.entry),
                    format!(
                        "a GNN workload needs the device's {} (or a preset)",
                        missing.join(" and ")
                    ),
                );
            }
        }
    }

    fn gnn(
        &mut self,
        graph: &RawGraph,
        model: &RawModel,
        schedule: &RawSchedule,
        base_dir: &Path,
    ) -> Option<Workload> {
        let source = self.graph_source(graph, base_dir);
        let path = root().key("model");
        let element_bytes = match model.dtype.as_deref() {
            None | Some("f32") => Some(4),
            Some("bf16") | Some("f16") => Some(2),
            Some("f64") => Some(8),
            Some(other) => {
                self.error(
                    path.key("dtype"),
                    format!("unknown dtype `{other}` (expected f32, bf16, f16 or f64)"),
                );
                None
            }
        };
        let layers = self.layers(model);
        let activation = match model.activation.as_deref() {
            None | Some("relu") => Some(Activation::Relu),
            Some("elu") => Some(Activation::Elu),
            Some(other) => {
                self.error(
                    path.key("activation"),
                    format!("unknown activation `{other}` (expected relu or elu)"),
                );
                None
            }
        };
        let stages = match (&schedule.stages, &layers) {
            (None, _) => Some(StageSplit::Auto),
            (Some(serde_yaml_value), Some(layers)) => {
                self.stage_split(serde_yaml_value, layers.len())
            }
            (Some(_), None) => None,
        };
        Some(Workload::Gnn(GnnSpec {
            graph: source?,
            layers: layers?,
            element_bytes: element_bytes?,
            stages: stages?,
            activation: activation?,
        }))
    }

    fn stage_split(&mut self, value: &raw::Value, n_layers: usize) -> Option<StageSplit> {
        let path = root().key("schedule").key("stages");
        match raw::stages_value(value) {
            Ok(None) => Some(StageSplit::Auto),
            Ok(Some(counts)) => {
                if counts.contains(&0) {
                    self.error(path, "every stage needs at least one layer");
                    return None;
                }
                if let Some(&count) = counts.iter().find(|&&c| c > n_layers) {
                    self.error(
                        path,
                        format!("a stage cannot hold {count} layers: the model has {n_layers}"),
                    );
                    return None;
                }
                // Each count is at most the model's layers, so the sum cannot overflow.
                let total: usize = counts.iter().sum();
                if total != n_layers {
                    self.error(
                        path,
                        format!("the stages hold {total} layers but the model has {n_layers}"),
                    );
                    return None;
                }
                Some(StageSplit::Layers(counts))
            }
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    fn count(&mut self, path: FieldPath, value: i64, what: &str, max: i64) -> Option<u64> {
        if (1..=max).contains(&value) {
            Some(value as u64)
        } else {
            self.error(
                path,
                format!("{what} must be between 1 and {max}, got {value}"),
            );
            None
        }
    }

    fn fraction(
        &mut self,
        path: FieldPath,
        value: Option<f64>,
        low_open: bool,
    ) -> Option<Option<f64>> {
        match value {
            None => Some(None),
            Some(v) if v.is_finite() && v <= 1.0 && (v > 0.0 || (!low_open && v >= 0.0)) => {
                Some(Some(v))
            }
            Some(v) => {
                let range = if low_open { "in (0, 1]" } else { "in [0, 1]" };
                self.error(path, format!("must be {range}, got {v}"));
                None
            }
        }
    }

    fn graph_source(&mut self, graph: &RawGraph, base_dir: &Path) -> Option<GraphSource> {
        let path = root().key("graph");
        match (&graph.dataset, &graph.synthetic, &graph.stats, &graph.ogb) {
            (None, None, None, Some(ogb)) => {
                if let Some(split) = &ogb.split {
                    let plain = !split.is_empty()
                        && split != "."
                        && split != ".."
                        && !split.contains(['/', '\\']);
                    if !plain {
                        self.error(
                            path.key("ogb").key("split"),
                            format!("must name one folder under split/, got `{split}`"),
                        );
                        return None;
                    }
                }
                Some(GraphSource::Ogb {
                    path: base_dir.join(&ogb.path),
                    undirected: ogb.undirected.unwrap_or(true),
                    split: ogb.split.clone(),
                })
            }
            (Some(dataset), None, None, None) => {
                let density = self.fraction(
                    path.key("dataset").key("feature_density"),
                    dataset.feature_density,
                    true,
                )?;
                Some(GraphSource::Dataset {
                    path: base_dir.join(&dataset.path),
                    feature_density: density,
                })
            }
            (None, Some(synthetic), None, None) => self.synthetic(synthetic),
            (None, None, Some(stats), None) => {
                let at = path.key("stats");
                let nodes = self.count(at.key("nodes"), stats.nodes, "nodes", 1 << 40);
                let edges = self.count(at.key("edges"), stats.edges, "edges", 1 << 44);
                let features = self.count(at.key("features"), stats.features, "features", 1 << 24);
                let classes = self.count(at.key("classes"), stats.classes, "classes", 1 << 24);
                let density = self.fraction(at.key("feature_density"), stats.feature_density, true);
                let cut = self.fraction(at.key("cut_fraction"), stats.cut_fraction, false);
                Some(GraphSource::Stats(GraphStats {
                    nodes: nodes?,
                    undirected_edges: edges?,
                    features: features?,
                    classes: classes?,
                    feature_density: density?,
                    cut_fraction: cut?,
                }))
            }
            _ => {
                self.error(
                    path,
                    "give exactly one of `dataset`, `ogb`, `synthetic` or `stats`",
                );
                None
            }
        }
    }

    fn synthetic(&mut self, raw: &RawSynthetic) -> Option<GraphSource> {
        let at = root().key("graph").key("synthetic");
        let nodes = if raw.nodes > MAX_SYNTHETIC_NODES {
            self.error(
                at.key("nodes"),
                format!(
                    "nodes must be at most {MAX_SYNTHETIC_NODES} (2^25), got {}: {LARGER_GRAPHS}",
                    raw.nodes
                ),
            );
            None
        } else {
            self.count(at.key("nodes"), raw.nodes, "nodes", MAX_SYNTHETIC_NODES)
        };
        let classes = self.count(at.key("classes"), raw.classes, "classes", 1 << 16);
        let features = self.count(at.key("features"), raw.features, "features", 1 << 24);
        let density = self.fraction(at.key("feature_density"), raw.feature_density, true);
        if let (Some(n), Some(f), Some(d)) = (nodes, features, density) {
            // As the generators draw them: `clamp(round(density * features), 1, features)` ids
            // per vertex.
            let per_node = ((d.unwrap_or(0.01) * f as f64).round() as u64).clamp(1, f);
            let nonzeros = n.saturating_mul(per_node);
            if nonzeros > MAX_SYNTHETIC_NONZEROS as u64 {
                let field = if d.is_some() {
                    "feature_density"
                } else {
                    "features"
                };
                self.error(
                    at.key(field),
                    format!(
                        "{n} vertices with {per_node} feature ids each make {nonzeros} feature \
                         non-zeros, more than {MAX_SYNTHETIC_NONZEROS} (2^27): {LARGER_GRAPHS}"
                    ),
                );
            }
        }
        let seed = raw.seed.unwrap_or(0);
        match raw.kind.as_str() {
            "sbm" => {
                let homophily = self.fraction(at.key("homophily"), raw.homophily, false);
                // A simple graph gives each vertex at most every other vertex as a neighbour;
                // more would be drawn and silently dropped as repeats.
                let most = nodes.map(|n| n.saturating_sub(1) as f64);
                let avg_degree = match raw.avg_degree {
                    Some(d) if d.is_finite() && d > 0.0 && most.is_some_and(|m| d > m) => {
                        let (n, m) = (nodes.unwrap_or(0), most.unwrap_or(0.0));
                        self.error(
                            at.key("avg_degree"),
                            format!("must be at most {m} (nodes - 1: a simple graph on {n} vertices), got {d}"),
                        );
                        None
                    }
                    Some(d)
                        if d.is_finite()
                            && d > 0.0
                            && nodes.is_some_and(|n| {
                                (n as f64 * d / 2.0).round() > MAX_SYNTHETIC_EDGES as f64
                            }) =>
                    {
                        let n = nodes.unwrap_or(0);
                        let drawn = (n as f64 * d / 2.0).round();
                        self.error(
                            at.key("avg_degree"),
                            format!(
                                "{n} vertices at average degree {d} draw {drawn} edges, more than \
                                 {MAX_SYNTHETIC_EDGES} (2^26): {LARGER_GRAPHS}"
                            ),
                        );
                        None
                    }
                    Some(d) if d.is_finite() && d > 0.0 => Some(d),
                    Some(d) => {
                        self.error(at.key("avg_degree"), format!("must be positive, got {d}"));
                        None
                    }
                    None => {
                        self.error(at.clone(), "an sbm graph needs `avg_degree`");
                        None
                    }
                };
                for (field, set) in [
                    ("edges", raw.edges.is_some()),
                    ("a", raw.a.is_some()),
                    ("b", raw.b.is_some()),
                    ("c", raw.c.is_some()),
                ] {
                    if set {
                        self.error(at.key(field), "only applies to `kind: rmat`");
                    }
                }
                Some(GraphSource::Sbm(SbmSpec {
                    nodes: nodes? as u32,
                    avg_degree: avg_degree?,
                    classes: classes? as u32,
                    features: features? as u32,
                    homophily: homophily?.unwrap_or(0.8),
                    feature_density: density?.unwrap_or(0.01),
                    seed,
                }))
            }
            "rmat" => {
                // At most every pair of distinct vertices once (more would be dropped as repeats).
                let pairs = nodes.map_or(MAX_SYNTHETIC_EDGES, |n| {
                    (n * n.saturating_sub(1) / 2) as i64
                });
                let edges = match raw.edges {
                    Some(e) if nodes.is_some() && e > pairs && e <= MAX_SYNTHETIC_EDGES => {
                        let n = nodes.unwrap_or(0);
                        self.error(
                            at.key("edges"),
                            format!("must be at most {pairs} (every pair of the {n} vertices once), got {e}"),
                        );
                        None
                    }
                    Some(e) if e > MAX_SYNTHETIC_EDGES => {
                        self.error(
                            at.key("edges"),
                            format!(
                                "edges must be at most {MAX_SYNTHETIC_EDGES} (2^26), got {e}: \
                                 {LARGER_GRAPHS}"
                            ),
                        );
                        None
                    }
                    Some(e) => self.count(at.key("edges"), e, "edges", MAX_SYNTHETIC_EDGES),
                    None => {
                        self.error(at.clone(), "an rmat graph needs `edges`");
                        None
                    }
                };
                for (field, set) in [
                    ("avg_degree", raw.avg_degree.is_some()),
                    ("homophily", raw.homophily.is_some()),
                ] {
                    if set {
                        self.error(at.key(field), "only applies to `kind: sbm`");
                    }
                }
                let (a, b, c) = (
                    raw.a.unwrap_or(0.57),
                    raw.b.unwrap_or(0.19),
                    raw.c.unwrap_or(0.19),
                );
                if !(a > 0.0 && b >= 0.0 && c >= 0.0 && a + b + c < 1.0) {
                    self.error(at.clone(), format!("R-MAT quadrant probabilities a={a}, b={b}, c={c} must be non-negative with a > 0 and a + b + c < 1"));
                    return None;
                }
                Some(GraphSource::Rmat(RmatSpec {
                    nodes: nodes? as u32,
                    edges: edges?,
                    classes: classes? as u32,
                    features: features? as u32,
                    feature_density: density?.unwrap_or(0.01),
                    a,
                    b,
                    c,
                    seed,
                }))
            }
            other => {
                self.error(
                    at.key("kind"),
                    format!("unknown synthetic graph `{other}` (expected sbm or rmat)"),
                );
                None
            }
        }
    }

    fn layers(&mut self, model: &RawModel) -> Option<Vec<LayerSpec>> {
        let path = root().key("model");
        let kind_of = |ctx: &mut Self,
                       at: FieldPath,
                       kind: &str,
                       heads: Option<i64>,
                       concat: Option<bool>|
         -> Option<LayerKindSpec> {
            match kind {
                "gcn" | "sage" if heads.is_some() || concat.is_some() => {
                    ctx.error(
                        at,
                        format!("`heads` and `concat` only apply to gat layers, not {kind}"),
                    );
                    None
                }
                "gcn" => Some(LayerKindSpec::Gcn),
                "sage" => Some(LayerKindSpec::Sage),
                "gat" => match heads {
                    Some(h) => ctx
                        .count(at.key("heads"), h, "heads", 1024)
                        .map(|heads| LayerKindSpec::Gat { heads, concat }),
                    None => {
                        ctx.error(at, "a gat layer needs `heads`");
                        None
                    }
                },
                other => {
                    ctx.error(
                        at.key("kind"),
                        format!("unknown layer kind `{other}` (expected gcn, sage or gat)"),
                    );
                    None
                }
            }
        };
        match (&model.layers, &model.kind) {
            (Some(layers), None) => {
                if model.depth.is_some() || model.hidden.is_some() || model.heads.is_some() {
                    self.error(
                        path,
                        "give either `layers` or the shorthand `kind`, `depth`, `hidden`, not both",
                    );
                    return None;
                }
                if layers.is_empty() {
                    self.error(path.key("layers"), "list at least one layer");
                    return None;
                }
                if layers.len() as i64 > MAX_LAYERS {
                    self.error(
                        path.key("layers"),
                        format!(
                            "a model has at most {MAX_LAYERS} layers, got {}",
                            layers.len()
                        ),
                    );
                    return None;
                }
                let mut out = Vec::new();
                for (i, layer) in layers.iter().enumerate() {
                    let at = path.key("layers").index(i);
                    let kind = kind_of(self, at.clone(), &layer.kind, layer.heads, layer.concat);
                    let width = if layer.out < 1 {
                        self.error(
                            at.key("out"),
                            format!("a layer's width must be at least 1, got {}", layer.out),
                        );
                        None
                    } else if layer.out > MAX_WIDTH {
                        self.error(
                            at.key("out"),
                            format!(
                                "a layer's width must be at most {MAX_WIDTH} (2^20), got {}",
                                layer.out
                            ),
                        );
                        None
                    } else {
                        Some(layer.out as u64)
                    };
                    if let (Some(kind), Some(width)) = (kind, width) {
                        out.push(LayerSpec { kind, out: width });
                    }
                }
                (out.len() == layers.len()).then_some(out)
            }
            (None, Some(kind)) => {
                let depth = match model.depth {
                    Some(d) => self.count(path.key("depth"), d, "depth", MAX_LAYERS),
                    None => {
                        self.error(path.clone(), "the shorthand needs `depth`");
                        None
                    }
                };
                let hidden = match model.hidden {
                    Some(h) => self.count(path.key("hidden"), h, "hidden width", MAX_WIDTH),
                    None => {
                        self.error(path.clone(), "the shorthand needs `hidden`");
                        None
                    }
                };
                let kind = kind_of(self, path.clone(), kind, model.heads, None)?;
                let (depth, hidden) = (depth?, hidden?);
                // Hidden layers of `hidden` channels (per head for GAT); the last layer's width
                // is resolved to the class count once the graph is known (`out: 0` marks it).
                let mut layers = vec![LayerSpec { kind, out: hidden }; depth as usize - 1];
                layers.push(LayerSpec { kind, out: 0 });
                Some(layers)
            }
            _ => {
                self.error(
                    path,
                    "give `layers` or the shorthand `kind`, `depth`, `hidden`",
                );
                None
            }
        }
    }
}

/// Lists names, eliding the middle of long lists.
fn abbreviate(names: &[String]) -> String {
    if names.len() <= 8 {
        names.join(", ")
    } else {
        format!(
            "{}, ..., {}",
            names[..4].join(", "),
            names[names.len() - 2..].join(", ")
        )
    }
}
