//! Reports computed from traces: metrics, tables, JSON, Chrome/Perfetto traces, ASCII timelines,
//! plots (SVG and PNG).
//!
//! **Architecture Invariant:** reports read [`crate::trace::Trace`] values (and the schedule that
//! produced them) and plain values, never the simulator, the executor or the planner, so
//! predicted and measured traces are reported by the same code.

pub mod chrome_trace;
pub mod json;
pub mod metrics;
pub mod order;
pub mod plot;
pub mod table;
pub mod timeline;

pub use metrics::{compute, DeviceMetrics, LinkMetrics, Metrics};
