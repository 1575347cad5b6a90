//! pipegnn predicts and measures pipeline-parallel training of graph neural networks.
//!
//! A tour, in the order data flows:
//! - [`scenario`]: a YAML scenario (devices, links, workload, schedule) parsed and validated,
//!   every problem reported with file, line, column and field path ([`diag`], [`units`]).
//! - [`graph`]: graphs as arrays: datasets (graph-csv v1), seeded synthetic graphs, chunking
//!   and per-chunk statistics; also the petgraph adapter behind [`network`]'s routes.
//! - [`gnn`]: GNN layers and parameters, stage splitting, the rows a layer touches per chunk.
//! - [`network`]: directed links and the routes between devices.
//! - [`schedule`]: schedules as data: GPipe, 1F1B and GNNPipe generators, schedule files, the
//!   checker that rejects deadlocks, and the transfers derived from stage placement.
//! - [`cost`]: how long ops take and what they move and hold (a roofline for GNN layers).
//! - [`sim`]: the discrete-event simulator, which interprets a schedule into a [`trace::Trace`].
//! - [`report`]: metrics, tables, JSON, Chrome traces and ASCII timelines, all from traces.
//! - [`exec`]: the real executor on candle: trains the GNN on the same schedule, measured into a
//!   [`trace::Trace`].
//! - [`plan`]: the glue from a scenario to checked, simulated schedules.
//! - [`launch`]: from a scenario's prediction to a real run on the executor, held to its
//!   schedule.
//! - [`testing`]: proptest strategies and invariant checks for property tests of schedules,
//!   yours or pipegnn's (`pipegnn proptest`).
//! - [`cli`]: the command line.
//!
//! ```
//! use pipegnn::schedule::{check, Generator};
//! let schedule = Generator::OneFOneB.generate(4, 8).unwrap();
//! assert_eq!(check(&schedule).unwrap().peak_in_flight, vec![4, 3, 2, 1]);
//! ```

pub mod cli;
pub mod cost;
pub mod diag;
pub mod exec;
pub mod gnn;
pub mod graph;
pub mod launch;
pub mod network;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod sim;
pub mod testing;
pub mod trace;
pub mod units;
