//! The invariants a schedule is held to: every op once at the asked shape, no deadlock, a
//! simulated run that completes as written, a stash bound per device, and closed forms.

use std::fmt;

use thiserror::Error;

use super::strategy::{Case, OpTimes, Shape, StageTimes};
use crate::report;
use crate::schedule::bound::{Bound, BoundVars};
use crate::schedule::file::Listing;
use crate::schedule::{self, CheckReport, Deadlock, Op, OpKind, Schedule, ScheduleError};
use crate::sim;
use crate::trace::Trace;

/// A property a schedule breaks.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Violation {
    /// The ops are not a whole schedule of the asked shape: an op missing, repeated or out of
    /// range, a stage on two devices, or another device count.
    #[error("{0}")]
    Ops(String),
    /// The dependencies cannot be met in the devices' orders.
    #[error("it deadlocks: {0}")]
    Deadlock(Deadlock),
    /// The simulated run did not complete, or did not run the schedule as written.
    #[error("the simulated run {0}")]
    Simulation(String),
    /// A device holds more chunks in flight than the bound allows.
    #[error("device {device} holds {peak} chunk{} in flight, more than the bound `{bound}` = {limit}", if *peak == 1 { "" } else { "s" })]
    StashBound {
        /// The device.
        device: u32,
        /// Its peak in-flight chunks.
        peak: u32,
        /// The bound's text.
        bound: String,
        /// Its value on this device.
        limit: i64,
    },
    /// The bound cannot be evaluated at this shape (a division by zero).
    #[error("the bound `{bound}` cannot be evaluated on device {device}: {message}")]
    Bound {
        /// The bound's text.
        bound: String,
        /// The device.
        device: u32,
        /// Why.
        message: String,
    },
    /// The uniform-time makespan or bubble differs from the closed form.
    #[error(
        "with uniform times ({times} ns) {form} predicts a makespan of {expected_makespan_ns} ns and a bubble of {expected_bubble:.6}, the simulation gives {makespan_ns} ns and {bubble:.6}"
    )]
    ClosedForm {
        /// The closed form.
        form: ClosedForm,
        /// The uniform times simulated.
        times: StageTimes,
        /// What the closed form predicts.
        expected_makespan_ns: u64,
        /// The simulated makespan.
        makespan_ns: u64,
        /// The closed form's mean bubble fraction.
        expected_bubble: f64,
        /// The simulated mean bubble fraction.
        bubble: f64,
    },
}

impl Violation {
    /// The property's short name, as `pipegnn proptest --format json` prints it: `ops`,
    /// `deadlock`, `simulation`, `stash_bound`, `bound` or `closed_form`.
    pub fn property(&self) -> &'static str {
        match self {
            Violation::Ops(_) => "ops",
            Violation::Deadlock(_) => "deadlock",
            Violation::Simulation(_) => "simulation",
            Violation::StashBound { .. } => "stash_bound",
            Violation::Bound { .. } => "bound",
            Violation::ClosedForm { .. } => "closed_form",
        }
    }
}

/// A closed form for the makespan and bubble of a schedule run with uniform op times and free
/// communication, on P devices with v stages each and K chunks (F, B = I + W the op times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedForm {
    /// GPipe: `(K + P - 1)(F + B)`, bubble `(P - 1) / (K + P - 1)`; one stage per device.
    GPipe,
    /// 1F1B: the same as GPipe.
    OneFOneB,
    /// Interleaved 1F1B: `(v K + P - 1)(F + B)`, bubble `(P - 1) / (v K + P - 1)`, when K is a
    /// multiple of P (Narayanan et al. 2021).
    Interleaved,
    /// ZB-H1: `K (F + B) + (P - 1)(F + B - 2W)`, with `W` taken no longer than `F` or `I`; one
    /// stage per device and at least as many chunks as devices (Qi et al. 2024).
    ZbH1,
}

impl ClosedForm {
    /// Every closed form, in the order of their names.
    pub const ALL: [ClosedForm; 4] = [
        ClosedForm::GPipe,
        ClosedForm::OneFOneB,
        ClosedForm::Interleaved,
        ClosedForm::ZbH1,
    ];

    /// Its name: `gpipe`, `1f1b`, `interleaved`, `zb-h1`.
    pub fn name(self) -> &'static str {
        match self {
            ClosedForm::GPipe => "gpipe",
            ClosedForm::OneFOneB => "1f1b",
            ClosedForm::Interleaved => "interleaved",
            ClosedForm::ZbH1 => "zb-h1",
        }
    }

    /// The closed form named `name`.
    pub fn find(name: &str) -> Option<Self> {
        ClosedForm::ALL.into_iter().find(|form| form.name() == name)
    }

    /// The uniform times the form is checked with, from `times`: as they are, except for ZB-H1,
    /// whose `W` is cut to at most `F` and `I` (where its closed form holds).
    pub fn times(self, times: StageTimes) -> StageTimes {
        match self {
            ClosedForm::ZbH1 => StageTimes {
                weight_ns: times.weight_ns.min(times.forward_ns).min(times.input_ns),
                ..times
            },
            _ => times,
        }
    }

    /// The makespan and mean bubble fraction the form predicts on `devices` devices with
    /// `stages_per_device` stages each and `chunks` chunks, or `None` where it does not apply
    /// to the shape.
    pub fn predict(
        self,
        devices: u32,
        stages_per_device: u32,
        chunks: u32,
        times: StageTimes,
    ) -> Option<(u64, f64)> {
        let (p, v, k) = (
            u64::from(devices),
            u64::from(stages_per_device),
            u64::from(chunks),
        );
        let times = self.times(times);
        let op = times.forward_ns + times.backward_ns();
        let (makespan, idle) = match self {
            ClosedForm::GPipe | ClosedForm::OneFOneB if v == 1 => ((k + p - 1) * op, (p - 1) * op),
            ClosedForm::Interleaved if k % p == 0 => ((v * k + p - 1) * op, (p - 1) * op),
            ClosedForm::ZbH1 if v == 1 && k >= p => {
                let idle = (p - 1) * (op - 2 * times.weight_ns);
                (k * op + idle, idle)
            }
            _ => return None,
        };
        Some((makespan, idle as f64 / makespan as f64))
    }
}

impl fmt::Display for ClosedForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which optional properties to check besides the ones every schedule must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// The most chunks each device may hold in flight (see [`Bound`]); `None` checks none.
    pub max_in_flight: Option<Bound>,
    /// A closed form the uniform-time makespan and bubble must equal.
    pub closed_form: Option<ClosedForm>,
}

/// What a case that holds found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    /// Peak chunks in flight per device.
    pub device_peaks: Vec<u32>,
    /// Whether the closed form applied to the shape (and held).
    pub closed_form_checked: bool,
}

/// The schedule `ops` make at `shape` (each stage without an optimizer step gets one at the end
/// of its device's list), or why they make none: an op missing, repeated or out of range, a
/// stage on two devices, or a device count other than `shape.devices()`.
///
/// # Errors
/// [`Violation::Ops`].
pub fn from_orders(shape: &Shape, orders: Vec<Vec<Op>>) -> Result<Schedule, Violation> {
    let listing = Listing {
        kind: schedule::ScheduleKind::Custom,
        n_stages: shape.stages,
        n_chunks: shape.chunks,
        orders,
    };
    from_listing(shape, listing)
}

/// [`from_orders`] of a schedule text read into a [`Listing`] (`schedule::file`,
/// `schedule::torch_csv`), held to the asked `shape` whatever the text declares.
///
/// # Errors
/// [`Violation::Ops`].
pub fn from_listing(shape: &Shape, listing: Listing) -> Result<Schedule, Violation> {
    let devices = listing.orders.len();
    if devices != shape.devices() as usize {
        return Err(Violation::Ops(format!(
            "asked for {shape} ({} devices), it has {devices} devices",
            shape.devices()
        )));
    }
    let declared = (listing.n_stages, listing.n_chunks);
    let schedule = listing
        .into_schedule(shape.stages, shape.chunks)
        .map_err(|err| match err {
            ScheduleError::Shape(why) => Violation::Ops(why),
            ScheduleError::Deadlock(deadlock) => Violation::Deadlock(deadlock),
        })?;
    if declared != (shape.stages, shape.chunks) {
        return Err(Violation::Ops(format!(
            "asked for {shape}, it declares {} stages and {} chunks",
            declared.0, declared.1
        )));
    }
    Ok(schedule)
}

/// Checks that the schedule's dependencies can be met in its devices' orders
/// ([`schedule::check`]).
///
/// # Errors
/// [`Violation::Deadlock`] with the ops that wait on each other.
pub fn check_deadlock(schedule: &Schedule) -> Result<CheckReport, Violation> {
    schedule::check(schedule).map_err(|err| match err {
        ScheduleError::Deadlock(deadlock) => Violation::Deadlock(deadlock),
        ScheduleError::Shape(why) => Violation::Ops(why),
    })
}

/// Simulates the schedule with `times` and free communication, one device per schedule device,
/// and checks that the run completes and ran the schedule as written (every op once, each
/// device's order, no op before its data: `report::order`).
///
/// # Errors
/// [`Violation::Simulation`].
pub fn simulate(schedule: &Schedule, times: &OpTimes) -> Result<Trace, Violation> {
    let trace = sim::simulate_free(schedule, times, None)
        .map_err(|err| Violation::Simulation(format!("does not complete: {err}")))?;
    let placement: Vec<usize> = (0..schedule.n_devices()).collect();
    let problems = report::order::violations(schedule, &placement, &trace);
    if let Some(first) = problems.first() {
        return Err(Violation::Simulation(format!(
            "departs from the schedule: {first}"
        )));
    }
    Ok(trace)
}

/// Per device, the most chunks it holds in flight: forwarded, and not yet through their last
/// backward op (`B`, or `W` of a split backward), over all its stages, walking its list in
/// order (the same at any op times, since a device runs its list in order).
pub fn device_peaks(schedule: &Schedule) -> Vec<u32> {
    schedule
        .orders()
        .iter()
        .map(|order| {
            let (mut now, mut peak) = (0u32, 0u32);
            for op in order {
                match op.kind {
                    OpKind::Forward => {
                        now += 1;
                        peak = peak.max(now);
                    }
                    OpKind::Backward | OpKind::WeightGrad => now = now.saturating_sub(1),
                    OpKind::InputGrad | OpKind::Optimizer => {}
                }
            }
            peak
        })
        .collect()
}

/// The values `bound` is evaluated at on `device` of `schedule`, its stages `stages_per_device`
/// per device.
pub fn bound_vars(schedule: &Schedule, stages_per_device: u32, device: u32) -> BoundVars {
    BoundVars {
        stages: schedule.n_stages(),
        chunks: schedule.n_chunks(),
        devices: schedule.n_devices() as u32,
        stages_per_device,
        device,
    }
}

/// Checks every device's peak in-flight chunks ([`device_peaks`]) against `bound`.
///
/// # Errors
/// [`Violation::StashBound`] for the first device over its bound, [`Violation::Bound`] where
/// the bound cannot be evaluated.
pub fn check_stash(
    schedule: &Schedule,
    bound: &Bound,
    stages_per_device: u32,
) -> Result<Vec<u32>, Violation> {
    let peaks = device_peaks(schedule);
    for (device, &peak) in peaks.iter().enumerate() {
        let device = device as u32;
        let limit = bound
            .eval(bound_vars(schedule, stages_per_device, device))
            .map_err(|err| Violation::Bound {
                bound: bound.text().to_string(),
                device,
                message: err.to_string(),
            })?;
        if i64::from(peak) > limit {
            return Err(Violation::StashBound {
                device,
                peak,
                bound: bound.text().to_string(),
                limit,
            });
        }
    }
    Ok(peaks)
}

/// Simulates the schedule with uniform `times` (cut as [`ClosedForm::times`] says) and checks
/// its makespan and mean bubble against `form`; `Ok(false)` when the form does not apply to
/// the shape.
///
/// # Errors
/// [`Violation::ClosedForm`], or [`Violation::Simulation`] if the run does not complete.
pub fn check_closed_form(
    schedule: &Schedule,
    form: ClosedForm,
    stages_per_device: u32,
    times: StageTimes,
) -> Result<bool, Violation> {
    let times = form.times(times);
    let Some((expected_makespan_ns, expected_bubble)) = form.predict(
        schedule.n_devices() as u32,
        stages_per_device,
        schedule.n_chunks(),
        times,
    ) else {
        return Ok(false);
    };
    let metrics = report::compute(&simulate(schedule, &OpTimes::Uniform(times))?);
    let (makespan_ns, bubble) = (metrics.epoch_time_ns, metrics.bubble_fraction);
    if makespan_ns != expected_makespan_ns || (bubble - expected_bubble).abs() > 1e-9 {
        return Err(Violation::ClosedForm {
            form,
            times,
            expected_makespan_ns,
            makespan_ns,
            expected_bubble,
            bubble,
        });
    }
    Ok(true)
}

/// Checks one case: the schedule has the case's stages and chunks, runs without deadlock,
/// simulates to the end under the case's op times as written, keeps `properties`'s stash bound
/// on every device, and matches its closed form (with the case's times made uniform: stage
/// 0's where they differ per stage).
///
/// # Errors
/// The first [`Violation`] found, in that order.
pub fn check_case(
    schedule: &Schedule,
    case: &Case,
    properties: &Properties,
) -> Result<CaseReport, Violation> {
    let shape = case.shape;
    if (schedule.n_stages(), schedule.n_chunks()) != (shape.stages, shape.chunks) {
        return Err(Violation::Ops(format!(
            "asked for {shape}, it has {} stages and {} chunks",
            schedule.n_stages(),
            schedule.n_chunks()
        )));
    }
    check_deadlock(schedule)?;
    simulate(schedule, &case.times)?;
    let device_peaks = match &properties.max_in_flight {
        Some(bound) => check_stash(schedule, bound, shape.stages_per_device)?,
        None => device_peaks(schedule),
    };
    let closed_form_checked = match properties.closed_form {
        Some(form) => check_closed_form(
            schedule,
            form,
            shape.stages_per_device,
            case.times.of_stage(0),
        )?,
        None => false,
    };
    Ok(CaseReport {
        device_peaks,
        closed_form_checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BackwardOrder, Generator};

    fn shape(stages: u32, chunks: u32, stages_per_device: u32) -> Shape {
        Shape {
            stages,
            chunks,
            stages_per_device,
        }
    }

    #[test]
    fn built_in_kinds_hold_their_bounds_and_closed_forms() {
        let times = StageTimes {
            forward_ns: 3,
            input_ns: 4,
            weight_ns: 2,
        };
        for (generator, s, v, k, form) in [
            (
                Generator::GPipe(BackwardOrder::Forward),
                4,
                1,
                6,
                ClosedForm::GPipe,
            ),
            (Generator::OneFOneB, 4, 1, 6, ClosedForm::OneFOneB),
            (Generator::Interleaved1F1B, 8, 2, 8, ClosedForm::Interleaved),
            (Generator::InterleavedZeroBubble, 4, 1, 6, ClosedForm::ZbH1),
        ] {
            let schedule = generator.generate_on(s, v, k).unwrap();
            let properties = Properties {
                max_in_flight: Some(
                    Bound::parse(crate::schedule::catalog::stash_bound(generator)).unwrap(),
                ),
                closed_form: Some(form),
            };
            let case = Case {
                shape: shape(s, k, v),
                times: OpTimes::Uniform(times),
            };
            let report = check_case(&schedule, &case, &properties).unwrap();
            assert!(report.closed_form_checked, "{generator:?}");
        }
    }

    #[test]
    fn a_tighter_bound_and_a_wrong_closed_form_are_violations() {
        let schedule = Generator::GPipe(BackwardOrder::Forward)
            .generate(2, 3)
            .unwrap();
        let bound = Bound::parse("min(devices - device, chunks)").unwrap();
        let err = check_stash(&schedule, &bound, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "device 0 holds 3 chunks in flight, more than the bound `min(devices - device, chunks)` = 2"
        );
        let undefined = Bound::parse("chunks / (devices - 2)").unwrap();
        let err = check_stash(&schedule, &undefined, 1).unwrap_err();
        assert_eq!(err.property(), "bound");
        // GPipe is not interleaved with two stages per device: the form does not apply.
        assert_eq!(
            check_closed_form(&schedule, ClosedForm::Interleaved, 2, StageTimes::UNIT),
            Ok(false)
        );
        let split = Generator::InterleavedZeroBubble
            .generate_on(2, 1, 4)
            .unwrap();
        let err = check_closed_form(&split, ClosedForm::OneFOneB, 1, StageTimes::UNIT).unwrap_err();
        assert_eq!(err.property(), "closed_form");
    }

    #[test]
    fn lists_that_are_not_the_asked_shape_are_named() {
        let one = |kind, chunk, stage| Op { kind, chunk, stage };
        let f = OpKind::Forward;
        let b = OpKind::Backward;
        let orders = vec![vec![one(f, 0, 0), one(b, 0, 0)]];
        let err = from_orders(&shape(1, 2, 1), orders.clone()).unwrap_err();
        assert!(err.to_string().starts_with("F(1,0) is missing"), "{err}");
        let err = from_orders(&shape(2, 1, 1), orders.clone()).unwrap_err();
        assert!(err.to_string().contains("it has 1 devices"), "{err}");
        assert!(from_orders(&shape(1, 1, 1), orders.clone()).is_ok());
        // Whole at the asked shape, but declaring another.
        let listing = Listing {
            kind: schedule::ScheduleKind::Custom,
            n_stages: 3,
            n_chunks: 1,
            orders,
        };
        let err = from_listing(&shape(1, 1, 1), listing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "asked for 1 stage, 1 chunk, 1 stage per device, it declares 3 stages and 1 chunks"
        );
    }
}
