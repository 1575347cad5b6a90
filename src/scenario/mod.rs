//! Scenarios: YAML in, validated model out.
//!
//! Parsing happens in three steps: [`raw`] deserializes the text (after `--set` overrides) into
//! types that mirror the file, `validate` turns them into the [`Scenario`] model while collecting
//! every problem with its file, line, column and field path, and only then does anything run.

mod model;
pub(crate) mod raw;
mod validate;

pub use model::{
    Activation, Backend, Device, DeviceMap, ExecutorSpec, ExplicitWorkload, GnnSpec, GraphSource,
    GraphStats, LayerKindSpec, LayerSpec, Optimizer, Scenario, ScheduleChoice, ScheduleSpec,
    Source, StageSplit, StageWork, WorkUnit, Workload, MAX_EPOCHS, MAX_THREADS_PER_DEVICE,
};
pub use validate::parse_scenario;
