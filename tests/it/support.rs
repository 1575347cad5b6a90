//! Helpers shared by the integration tests: running the binary, simulating with test costs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipegnn::cost::CostModel;
use pipegnn::network::Network;
use pipegnn::schedule::lower::Handoff;
use pipegnn::schedule::{Op, OpKind, Schedule};
use pipegnn::sim::{simulate, SimInput};
use pipegnn::trace::{MemoryCategory, Trace, TraceDevice};

/// The repository root: where the tests were built, or `PIPEGNN_ROOT` (a test binary carried to
/// another machine, as `tests/gpu/check.sh` does).
/// The `"loss"` of every epoch of one result of `pipegnn run --format json`.
pub fn losses(result: &serde_json::Value) -> Vec<f64> {
    result["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

pub fn root() -> PathBuf {
    std::env::var_os("PIPEGNN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Runs `pipegnn` (the one built with the tests, or `PIPEGNN_BIN`) with `args` in the
/// repository root.
pub fn pipegnn(args: &[&str]) -> Output {
    let binary = std::env::var_os("PIPEGNN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pipegnn")));
    Command::new(binary)
        .args(args)
        .current_dir(root())
        .output()
        .expect("the test binary can be started")
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipegnn-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp folder is writable");
    dir
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the scratch folder is writable");
    path
}

/// Per-stage forward and backward times, optional per-chunk stash and parameters; nothing is
/// moved (free network tests) unless `activation_bytes` is set.
#[derive(Debug, Clone)]
pub struct StageCosts {
    pub forward_ns: Vec<u64>,
    pub backward_ns: Vec<u64>,
    /// The weight-gradient half of each stage's backward, for split backwards (`I` takes the
    /// rest).
    pub weight_ns: Vec<u64>,
    pub stash_bytes: u64,
    /// What a split backward keeps of the stash from `I` to `W` (`None`: all of it).
    pub weight_stash_bytes: Option<u64>,
    pub parameter_bytes: u64,
    pub activation_bytes: u64,
}

impl StageCosts {
    pub fn uniform(n_stages: usize, forward_ns: u64, backward_ns: u64) -> Self {
        StageCosts {
            forward_ns: vec![forward_ns; n_stages],
            backward_ns: vec![backward_ns; n_stages],
            weight_ns: vec![backward_ns / 2; n_stages],
            stash_bytes: 0,
            weight_stash_bytes: None,
            parameter_bytes: 0,
            activation_bytes: 0,
        }
    }
}

impl CostModel for StageCosts {
    fn op_ns(&self, op: Op) -> u64 {
        match op.kind {
            OpKind::Forward => self.forward_ns[op.stage as usize],
            OpKind::Backward => self.backward_ns[op.stage as usize],
            OpKind::InputGrad => {
                self.backward_ns[op.stage as usize] - self.weight_ns[op.stage as usize]
            }
            OpKind::WeightGrad => self.weight_ns[op.stage as usize],
            OpKind::Optimizer => 0,
        }
    }

    fn handoff_bytes(&self, _handoff: &Handoff) -> u64 {
        self.activation_bytes
    }

    fn stash(&self, _forward: Op) -> (u64, u64) {
        (self.stash_bytes, 0)
    }

    fn weight_stash(&self, _forward: Op) -> u64 {
        self.weight_stash_bytes.unwrap_or(self.stash_bytes)
    }

    fn resident_bytes(&self, _order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        vec![(MemoryCategory::Parameters, self.parameter_bytes)]
    }
}

/// Simulates `schedule` with stage s on device s over `network` (free when `None`).
pub fn simulate_with(
    schedule: &Schedule,
    cost: &dyn CostModel,
    network: Option<&Network>,
) -> Trace {
    simulate_on(schedule, cost, network, false)
}

/// [`simulate_with`], the devices sharing one processor when `shared_compute`.
pub fn simulate_on(
    schedule: &Schedule,
    cost: &dyn CostModel,
    network: Option<&Network>,
    shared_compute: bool,
) -> Trace {
    let names: Vec<String> = (0..schedule.n_devices())
        .map(|d| format!("dev{d}"))
        .collect();
    let free = Network::free(names.clone());
    let placement: Vec<usize> = (0..schedule.n_devices()).collect();
    let input = SimInput {
        schedule,
        placement: &placement,
        cost,
        network: network.unwrap_or(&free),
        lowered: None,
        compute_slots: shared_compute.then_some(1),
        contention: None,
    };
    let devices = names
        .into_iter()
        .map(|name| TraceDevice {
            name,
            capacity_bytes: None,
        })
        .collect();
    simulate(&input, devices).expect("checked schedules simulate to the end")
}

/// Runs `validate` on `text` written to a scratch folder `name` and returns its one error line,
/// after checking exit 4.
pub fn invalid_scenario(name: &str, text: &str) -> String {
    let path = write(&scratch(name), "scenario.yaml", text);
    let out = pipegnn(&["validate", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}
