//! Property tests of schedules: proptest strategies for pipeline shapes and op-time tables, and
//! the invariants a schedule is held to, for your own generator's tests and for `pipegnn
//! proptest`.
//!
//! - [`cases`] draws a [`Case`]: a [`Shape`] (stages, chunks, stages per device) from
//!   [`ShapeRanges`] and an [`OpTimes`] table, uniform across ops or one per stage; both
//!   shrink toward the smallest shape and the unit times.
//! - [`check_case`] holds a schedule to a case: its stages and chunks, no deadlock
//!   ([`crate::schedule::check`]), a simulated run under the case's times that completes as
//!   written, and the optional [`Properties`]: a stash [`Bound`] per device (the catalog's
//!   bound of each kind is [`crate::schedule::catalog::stash_bound`]) and a [`ClosedForm`] for
//!   the uniform-time makespan and bubble. Each check is also a function of its own
//!   ([`from_orders`], [`check_deadlock`], [`simulate`], [`check_stash`],
//!   [`check_closed_form`]). A [`Violation`] is a `std::error::Error`, so `?` fails a
//!   proptest case with it.
//! - [`run`] is a whole test on proptest's runner, seeded, shrinking a failure; `pipegnn
//!   proptest` is built on it.
//!
//! A hand-written 1F1B generator, tested in a few lines:
//!
//! ```
//! use pipegnn::schedule::{Op, Schedule};
//! use pipegnn::testing::{self, Bound, ClosedForm, Properties, Shape, ShapeRanges, Violation};
//! use proptest::prelude::*;
//!
//! /// Each stage warms up with `S - s - 1` forwards, then alternates forward and backward.
//! fn my_1f1b(shape: &Shape) -> Result<Schedule, Violation> {
//!     let (s, k) = (shape.stages, shape.chunks);
//!     let orders = (0..s)
//!         .map(|stage| {
//!             let warm_up = (s - stage - 1).min(k);
//!             let mut order: Vec<Op> = (0..warm_up).map(|c| Op::forward(c, stage)).collect();
//!             for c in 0..k {
//!                 if c + warm_up < k {
//!                     order.push(Op::forward(c + warm_up, stage));
//!                 }
//!                 order.push(Op::backward(c, stage));
//!             }
//!             order
//!         })
//!         .collect();
//!     testing::from_orders(shape, orders)
//! }
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     // Add #[test] in your own tests.
//!     fn my_1f1b_is_sound(case in testing::cases(&ShapeRanges::new(1..=8, 1..=32, 1..=1))) {
//!         let properties = Properties {
//!             max_in_flight: Some(Bound::parse("min(devices - device, chunks)")?),
//!             closed_form: Some(ClosedForm::OneFOneB),
//!         };
//!         testing::check_case(&my_1f1b(&case.shape)?, &case, &properties)?;
//!     }
//! }
//! my_1f1b_is_sound();
//! ```
//!
//! **Architecture Invariant:** `testing` is pure, as `schedule` is: no I/O, clocks, threads or
//! environment; its randomness is proptest's, seeded by the caller's runner. Running a user's
//! generator command is `cli`'s job.

mod checks;
mod run;
mod strategy;

pub use crate::schedule::bound::{Bound, BoundError, BoundVars};
pub use checks::{
    bound_vars, check_case, check_closed_form, check_deadlock, check_stash, device_peaks,
    from_listing, from_orders, simulate, CaseReport, ClosedForm, Properties, Violation,
};
pub use run::{run, Failure, Outcome, Produced, RunError, Settings};
pub use strategy::{
    cases, op_times, shapes, stage_times, Case, OpTimes, Shape, ShapeRanges, StageTimes, MAX_OP_NS,
};
