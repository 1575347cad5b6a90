//! Raw scenario -> validated model, collecting every problem before returning.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{
    Device, ExplicitWorkload, Optimizer, Scenario, ScheduleChoice, ScheduleSpec, Source, StageWork,
    WorkUnit, Workload,
};
use super::raw::{self, Quantity, RawLinks, RawPresets, RawScenario, RawSchedule};
use crate::diag::{Diagnostic, Diagnostics, FieldPath, Locator};
use crate::network::{Link, Network};
use crate::schedule::{BackwardOrder, Generator, GnnPipeKnobs, GnnPipeOrder};
use crate::units::{self, UnitError};

/// The largest `count` one device entry may expand to, and the largest chunk count: far beyond
/// any real cluster or schedule, small enough that a typo cannot exhaust memory.
const MAX_COUNT: i64 = 1 << 16;
const MAX_CHUNKS: i64 = 1 << 20;

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
        let devices = self.devices(raw);
        let network = devices
            .as_ref()
            .and_then(|devices| self.network(raw.links.as_ref(), devices));
        let workload = self.workload(raw);
        let optimizer = self.optimizer(raw);
        let n_stages = workload
            .as_ref()
            .map(|Workload::Explicit(w)| w.stages.len());
        let schedule = self.schedule(&raw.schedule, devices.as_deref(), n_stages, base_dir);
        Some(Scenario {
            name: raw.name.clone(),
            description: raw.description.clone(),
            devices: devices?,
            network: network?,
            workload: workload?,
            optimizer: optimizer?,
            schedule: schedule?,
            source: Source {
                file: self.file.to_string(),
                locator: self.locator.clone(),
            },
        })
    }

    fn devices(&mut self, raw: &RawScenario) -> Option<Vec<Device>> {
        let path = root().key("devices");
        if raw.devices.is_empty() {
            self.error(path, "list at least one device");
            return None;
        }
        let mut devices = Vec::new();
        let mut seen: BTreeMap<String, FieldPath> = BTreeMap::new();
        let mut ok = true;
        for (i, entry) in raw.devices.iter().enumerate() {
            let at = path.index(i);
            let count = entry.count.unwrap_or(1);
            if !(1..=MAX_COUNT).contains(&count) {
                self.error(
                    at.key("count"),
                    format!("must be between 1 and {MAX_COUNT}, got {count}"),
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
            let (Some(memory_bytes), Some(peak_flops), Some(memory_bandwidth)) =
                (memory_bytes, peak_flops, memory_bandwidth)
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
        if let Some(topology) = &raw.topology {
            let at = path.key("topology");
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
                        format!("unknown topology `{other}` (expected full, ring or switch)"),
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

    fn workload(&mut self, raw: &RawScenario) -> Option<Workload> {
        let path = root().key("workload");
        let w = &raw.workload;
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
        n_stages: Option<usize>,
        base_dir: &Path,
    ) -> Option<ScheduleSpec> {
        let path = root().key("schedule");
        let mut ok = true;
        let n_chunks = if (1..=MAX_CHUNKS).contains(&raw.chunks) {
            raw.chunks as u32
        } else {
            self.error(
                path.key("chunks"),
                format!("must be between 1 and {MAX_CHUNKS}, got {}", raw.chunks),
            );
            ok = false;
            1
        };
        let kind = raw.kind.as_deref();
        let backward_order = match raw.backward_order.as_deref() {
            None | Some("forward") => BackwardOrder::Forward,
            Some("reverse") => BackwardOrder::Reverse,
            Some(other) => {
                self.error(
                    path.key("backward_order"),
                    format!("unknown value `{other}` (expected forward or reverse)"),
                );
                ok = false;
                BackwardOrder::Forward
            }
        };
        if raw.backward_order.is_some() && kind != Some("gpipe") {
            self.error(path.key("backward_order"), "only applies to `kind: gpipe`");
            ok = false;
        }
        let gnnpipe_order = match raw.order.as_deref() {
            None | Some("gpipe") => GnnPipeOrder::GPipe,
            Some("1f1b") => GnnPipeOrder::OneFOneB,
            Some(other) => {
                self.error(
                    path.key("order"),
                    format!("unknown value `{other}` (expected gpipe or 1f1b)"),
                );
                ok = false;
                GnnPipeOrder::GPipe
            }
        };
        if raw.order.is_some() && kind != Some("gnnpipe") {
            self.error(path.key("order"), "only applies to `kind: gnnpipe`");
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
                    "give a schedule `kind` (gpipe, 1f1b, gnnpipe) or a `file`",
                );
                None
            }
            (None, Some(file)) => Some(ScheduleChoice::File(base_dir.join(file))),
            (Some("gpipe"), None) => {
                Some(ScheduleChoice::Generated(Generator::GPipe(backward_order)))
            }
            (Some("1f1b"), None) => Some(ScheduleChoice::Generated(Generator::OneFOneB)),
            (Some("gnnpipe"), None) => Some(ScheduleChoice::Generated(Generator::GnnPipe(
                GnnPipeKnobs {
                    order: gnnpipe_order,
                    ..GnnPipeKnobs::default()
                },
            ))),
            (Some(other), None) => {
                self.error(
                    path.key("kind"),
                    format!("unknown schedule kind `{other}` (expected gpipe, 1f1b or gnnpipe)"),
                );
                None
            }
        };
        // Placement needs the devices and the stage count; without them only the checks above
        // can run (what is wrong with those is reported where they are validated).
        let (Some(devices), Some(n_stages)) = (devices, n_stages) else {
            return None;
        };
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        let placement = match &raw.placement {
            Some(list) => {
                let mut placement = Vec::new();
                for (i, name) in list.iter().enumerate() {
                    match names.iter().position(|n| n == name) {
                        Some(d) if placement.contains(&d) => {
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
        if matches!(choice, Some(ScheduleChoice::Generated(_))) {
            if n_stages > devices.len() {
                self.error(
                    root().key("workload").key("stages"),
                    format!(
                        "{n_stages} stages need {n_stages} devices but the scenario has {}",
                        devices.len()
                    ),
                );
                ok = false;
            } else if raw.placement.is_some() && placement.len() != n_stages {
                self.error(
                    path.key("placement"),
                    format!(
                        "place each of the {n_stages} stages on a device, got {} names",
                        placement.len()
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(ScheduleSpec {
            choice: choice?,
            n_chunks,
            placement: raw.placement.is_some().then_some(placement),
        })
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
