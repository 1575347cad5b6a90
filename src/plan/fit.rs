//! Whether a prediction fits the devices' memory: every device alone, and the stages that share
//! one GPU (`executor.device_map: shared`) together.
//!
//! This is the one definition of "fits": `simulate`, `validate` and `run` exit 6 on its
//! overflows, and the JSON and table `fits` fields, `sweep`'s rows and `plan`'s ranking all read
//! it, so none of them can say "fits" where another refuses.

use crate::diag::Diagnostic;
use crate::report::Metrics;
use crate::scenario::{DeviceMap, Scenario};
use crate::units::format_bytes;

/// A device, or the GPU that stages share, whose predicted memory exceeds its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// Device name (for a shared GPU, the first device's, whose memory they share).
    pub device: String,
    /// Index of the device in the scenario.
    pub index: usize,
    /// Predicted peak; for a shared GPU, the sum of its stages' peaks.
    pub peak_bytes: u64,
    /// Capacity.
    pub capacity_bytes: u64,
    /// How many stages share the device and had their peaks summed; `None` for a device alone.
    pub shared_by: Option<usize>,
}

impl Overflow {
    /// One line saying what does not fit under the schedule `label`.
    pub fn message(&self, label: &str) -> String {
        match self.shared_by {
            None => format!(
                "{} needs {} at its peak under {label} but has {}",
                self.device,
                format_bytes(self.peak_bytes),
                format_bytes(self.capacity_bytes),
            ),
            Some(stages) => format!(
                "the {stages} stages sharing {} (executor.device_map: shared) need up to {} \
                 together under {label} (the sum of their peaks) but it has {}",
                self.device,
                format_bytes(self.peak_bytes),
                format_bytes(self.capacity_bytes),
            ),
        }
    }

    /// [`Overflow::message`] pointing at the device's `memory` in the scenario.
    pub fn diagnostic(&self, scenario: &Scenario, label: &str) -> Diagnostic {
        let path = scenario.device_field(self.index, "memory");
        scenario.source.diagnostic(path, self.message(label))
    }
}

/// Everything in `metrics` (a trace of `scenario`) that does not fit: each device whose peak
/// exceeds its capacity, in device order, then, when stages share one GPU, that GPU if the sum
/// of their peaks exceeds the first device's capacity. The sum is an upper bound: the stages'
/// peaks need not coincide.
pub fn overflows(scenario: &Scenario, metrics: &Metrics) -> Vec<Overflow> {
    let mut over: Vec<Overflow> = metrics
        .devices
        .iter()
        .filter(|d| !d.fits())
        .map(|d| Overflow {
            device: d.name.clone(),
            index: d.device,
            peak_bytes: d.peak_memory_bytes,
            capacity_bytes: d.capacity_bytes.unwrap_or(0),
            shared_by: None,
        })
        .collect();
    if scenario.executor.device_map == DeviceMap::Shared && metrics.devices.len() > 1 {
        let together: u64 = metrics.devices.iter().map(|d| d.peak_memory_bytes).sum();
        let first = &metrics.devices[0];
        if let Some(capacity) = first.capacity_bytes.filter(|&c| together > c) {
            over.push(Overflow {
                device: first.name.clone(),
                index: first.device,
                peak_bytes: together,
                capacity_bytes: capacity,
                shared_by: Some(metrics.devices.len()),
            });
        }
    }
    over
}

/// Whether everything in `metrics` fits ([`overflows`] is empty).
pub fn fits(scenario: &Scenario, metrics: &Metrics) -> bool {
    overflows(scenario, metrics).is_empty()
}
