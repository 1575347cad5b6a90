//! A whole property test of one schedule source on proptest's runner: seeded cases, the
//! properties of [`super::check_case`], and a failure shrunk to the smallest shape and simplest
//! times that still fail.

use std::cell::RefCell;
use std::collections::BTreeSet;

use proptest::test_runner::{
    noop_result_cache, Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRng, TestRunner,
};

use super::checks::{check_case, from_listing, CaseReport, Properties, Violation};
use super::strategy::{cases, Case, Shape, ShapeRanges};
use crate::schedule::file::Listing;
use crate::schedule::{Op, Schedule};

/// How many cases to run, and the seed they are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Cases that must hold for the test to pass (refused shapes are not counted).
    pub cases: u32,
    /// The seed: the same seed, ranges and source give the same cases, failure and shrink.
    pub seed: u64,
}

/// What a schedule source gives for a shape.
#[derive(Debug, Clone)]
pub enum Produced {
    /// A schedule (a built-in generator's, or one already read).
    Schedule(Schedule),
    /// Per-device lists read from a text, held to the asked shape by [`from_listing`].
    Listing(Listing),
    /// No schedule: the source's ops do not make one (a property, shrunk like the others).
    Invalid(Violation),
    /// The source does not make this shape (a built-in kind refuses it, saying why); the case
    /// is skipped and another drawn.
    Refused(String),
}

/// A case that broke a property, shrunk.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The first failing case drawn.
    pub original: Case,
    /// The smallest shape and simplest times that still fail.
    pub shrunk: Case,
    /// What the shrunk case breaks.
    pub violation: Violation,
    /// The shrunk case's per-device lists, as the source gave them.
    pub orders: Vec<Vec<Op>>,
    /// The shrunk case's schedule, where its lists make one.
    pub schedule: Option<Schedule>,
}

/// What a property test found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Cases that held before the first failure (all of them when none failed).
    pub passed: u32,
    /// Cases skipped because the source refused their shape, before the first failure.
    pub refused: u32,
    /// The distinct shapes of the cases that held.
    pub shapes: BTreeSet<Shape>,
    /// Cases on which the closed form applied and held.
    pub closed_form_checked: u32,
    /// The shrunk failure, if a case failed.
    pub failure: Option<Failure>,
}

/// Why a property test could not run to a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError<E> {
    /// The source failed for a shape (the error is the source's own).
    Source {
        /// The shape asked for.
        shape: Shape,
        /// What went wrong.
        error: E,
    },
    /// The source refused too many shapes for the cases asked.
    Refused {
        /// Cases that held before the runner gave up.
        passed: u32,
        /// Shapes refused.
        refused: u32,
        /// Why the last one was refused.
        reason: String,
    },
    /// The shrunk case failed while shrinking and held when run again: the source is not a
    /// function of the shape.
    Flaky {
        /// The shape.
        shape: Shape,
        /// What it failed with the first time.
        reason: String,
    },
}

/// How one case came out.
enum Evaluated {
    Refused(String),
    Held(CaseReport),
    Broke {
        violation: Violation,
        orders: Vec<Vec<Op>>,
        schedule: Option<Schedule>,
    },
}

fn evaluate<E>(
    source: &mut impl FnMut(&Shape) -> Result<Produced, E>,
    case: &Case,
    properties: &Properties,
) -> Result<Evaluated, E> {
    let (schedule, orders) = match source(&case.shape)? {
        Produced::Refused(why) => return Ok(Evaluated::Refused(why)),
        Produced::Invalid(violation) => {
            return Ok(Evaluated::Broke {
                violation,
                orders: Vec::new(),
                schedule: None,
            })
        }
        Produced::Schedule(schedule) => {
            let orders = schedule.orders().to_vec();
            (schedule, orders)
        }
        Produced::Listing(listing) => {
            let orders = listing.orders.clone();
            match from_listing(&case.shape, listing) {
                Ok(schedule) => (schedule, orders),
                Err(violation) => {
                    return Ok(Evaluated::Broke {
                        violation,
                        orders,
                        schedule: None,
                    })
                }
            }
        }
    };
    Ok(match check_case(&schedule, case, properties) {
        Ok(report) => Evaluated::Held(report),
        Err(violation) => Evaluated::Broke {
            violation,
            orders,
            schedule: Some(schedule),
        },
    })
}

/// The runner's configuration: `settings.cases`, everything else fixed here rather than read
/// from `PROPTEST_*` variables, so a seed always gives the same run; no failure files.
fn config(settings: &Settings) -> Config {
    Config {
        cases: settings.cases,
        max_local_rejects: 65_536,
        max_global_rejects: settings.cases.saturating_mul(16).max(1024),
        max_flat_map_regens: 1_000_000,
        failure_persistence: None,
        source_file: None,
        test_name: None,
        max_shrink_time: 0,
        max_shrink_iters: 10_000,
        result_cache: noop_result_cache,
        verbose: 0,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(settings.seed),
        ..Config::default()
    }
}

/// Runs `settings.cases` cases drawn from `ranges` ([`cases`]) against the schedules `source`
/// makes for their shapes, checking `properties` ([`check_case`]); on a failure, shrinks it
/// with proptest's shrinking to the smallest shape and simplest op times that still fail.
///
/// `source` is called once per case (shrinking calls it again); it may refuse a shape
/// ([`Produced::Refused`]), and an error from it ends the run at once.
///
/// # Errors
/// [`RunError::Source`] when `source` fails, [`RunError::Refused`] when it refuses more than
/// 16 shapes per case asked (at least 1,024), [`RunError::Flaky`] when the shrunk case fails
/// and then holds.
pub fn run<E>(
    settings: &Settings,
    ranges: &ShapeRanges,
    properties: &Properties,
    source: impl FnMut(&Shape) -> Result<Produced, E>,
) -> Result<Outcome, RunError<E>> {
    struct State<F, E> {
        source: F,
        outcome: Outcome,
        first_failure: Option<Case>,
        fatal: Option<(Shape, E)>,
        last_refusal: String,
    }
    let state = RefCell::new(State {
        source,
        outcome: Outcome {
            passed: 0,
            refused: 0,
            shapes: BTreeSet::new(),
            closed_form_checked: 0,
            failure: None,
        },
        first_failure: None,
        fatal: None,
        last_refusal: String::new(),
    });
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&settings.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config(settings),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let result = runner.run(&cases(ranges), |case| {
        let mut guard = state.borrow_mut();
        let st = &mut *guard;
        // After a source error every case passes, so shrinking stops at once.
        if st.fatal.is_some() {
            return Ok(());
        }
        let counting = st.first_failure.is_none();
        match evaluate(&mut st.source, &case, properties) {
            // While shrinking a failure, a smaller shape the source cannot produce is not a
            // smaller failure: the failure found stands.
            Err(_) if !counting => Ok(()),
            Err(error) => {
                st.fatal = Some((case.shape, error));
                Err(TestCaseError::fail("the source failed"))
            }
            Ok(Evaluated::Refused(why)) => {
                if counting {
                    st.outcome.refused += 1;
                }
                st.last_refusal.clone_from(&why);
                Err(TestCaseError::reject(why))
            }
            Ok(Evaluated::Held(report)) => {
                if counting {
                    st.outcome.passed += 1;
                    st.outcome.shapes.insert(case.shape);
                    st.outcome.closed_form_checked += u32::from(report.closed_form_checked);
                }
                Ok(())
            }
            Ok(Evaluated::Broke { violation, .. }) => {
                if counting {
                    st.first_failure = Some(case.clone());
                }
                Err(TestCaseError::fail(violation.to_string()))
            }
        }
    });
    let State {
        mut source,
        mut outcome,
        first_failure,
        fatal,
        last_refusal,
    } = state.into_inner();
    if let Some((shape, error)) = fatal {
        return Err(RunError::Source { shape, error });
    }
    match result {
        Ok(()) => Ok(outcome),
        Err(TestError::Abort(_)) => Err(RunError::Refused {
            passed: outcome.passed,
            refused: outcome.refused,
            reason: last_refusal,
        }),
        Err(TestError::Fail(reason, shrunk)) => {
            // Run the shrunk case once more for its violation and lists.
            let again =
                evaluate(&mut source, &shrunk, properties).map_err(|error| RunError::Source {
                    shape: shrunk.shape,
                    error,
                })?;
            let Evaluated::Broke {
                violation,
                orders,
                schedule,
            } = again
            else {
                return Err(RunError::Flaky {
                    shape: shrunk.shape,
                    reason: reason.message().to_string(),
                });
            };
            outcome.failure = Some(Failure {
                original: first_failure.unwrap_or_else(|| shrunk.clone()),
                shrunk,
                violation,
                orders,
                schedule,
            });
            Ok(outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schedule::bound::Bound;
    use crate::schedule::{BackwardOrder, Generator, ScheduleError};
    use crate::testing::{OpTimes, StageTimes};

    fn generated(generator: Generator) -> impl FnMut(&Shape) -> Result<Produced, String> {
        move |shape| {
            Ok(
                match generator.generate_on(shape.stages, shape.stages_per_device, shape.chunks) {
                    Ok(schedule) => Produced::Schedule(schedule),
                    Err(ScheduleError::Shape(why)) => Produced::Refused(why),
                    Err(err) => return Err(err.to_string()),
                },
            )
        }
    }

    #[test]
    fn a_sound_kind_passes_and_the_same_seed_draws_the_same_shapes() {
        let settings = Settings { cases: 40, seed: 3 };
        let ranges = ShapeRanges::new(1..=6, 1..=12, 1..=1);
        let properties = Properties {
            max_in_flight: Some(Bound::parse("min(devices - device, chunks)").unwrap()),
            closed_form: Some(crate::testing::ClosedForm::OneFOneB),
        };
        let first = run(
            &settings,
            &ranges,
            &properties,
            generated(Generator::OneFOneB),
        )
        .unwrap();
        assert!(first.failure.is_none());
        assert_eq!((first.passed, first.closed_form_checked), (40, 40));
        let again = run(
            &settings,
            &ranges,
            &properties,
            generated(Generator::OneFOneB),
        )
        .unwrap();
        assert_eq!(first.shapes, again.shapes);
        assert!(first.shapes.len() > 10, "{:?}", first.shapes);
    }

    #[test]
    fn gpipe_under_1f1b_s_bound_shrinks_to_one_stage_and_two_chunks() {
        let settings = Settings { cases: 64, seed: 1 };
        let ranges = ShapeRanges::new(1..=8, 1..=32, 1..=1);
        let properties = Properties {
            max_in_flight: Some(Bound::parse("min(devices - device, chunks)").unwrap()),
            closed_form: None,
        };
        let outcome = run(
            &settings,
            &ranges,
            &properties,
            generated(Generator::GPipe(BackwardOrder::Forward)),
        )
        .unwrap();
        let failure = outcome.failure.unwrap();
        // GPipe holds every chunk on the last stage, where 1F1B's bound is one: the smallest
        // failing shape is one stage and two chunks, with the unit times.
        assert_eq!(
            failure.shrunk.shape,
            Shape {
                stages: 1,
                chunks: 2,
                stages_per_device: 1
            }
        );
        assert_eq!(failure.shrunk.times, OpTimes::Uniform(StageTimes::UNIT));
        assert_eq!(failure.violation.property(), "stash_bound");
        assert!(failure.schedule.is_some());
    }

    #[test]
    fn a_source_that_fails_on_smaller_shapes_keeps_the_failure_it_gave() {
        let settings = Settings { cases: 64, seed: 1 };
        let ranges = ShapeRanges::new(1..=8, 1..=32, 1..=1);
        let properties = Properties {
            max_in_flight: Some(Bound::parse("min(devices - device, chunks)").unwrap()),
            closed_form: None,
        };
        // GPipe breaks 1F1B's bound from two chunks on; once it has, this source cannot make
        // fewer than three stages (a generator that times out on the shapes shrinking tries).
        // Each shape's answer is decided once, as the command caches a generator's output.
        let mut gpipe = generated(Generator::GPipe(BackwardOrder::Forward));
        let mut failed = false;
        let mut answered: BTreeMap<Shape, bool> = BTreeMap::new();
        let outcome = run(&settings, &ranges, &properties, |shape: &Shape| {
            let makes = *answered
                .entry(*shape)
                .or_insert(!(failed && shape.stages < 3));
            if !makes {
                return Err("too few stages".to_string());
            }
            failed |= shape.chunks >= 2;
            gpipe(shape)
        })
        .unwrap();
        let failure = outcome.failure.expect("the failure found is reported");
        let first = failure.original.shape.stages;
        assert_eq!(failure.shrunk.shape.chunks, 2);
        assert_eq!(failure.shrunk.shape.stages, first.min(3));
    }

    #[test]
    fn a_source_error_ends_the_run_and_a_kind_that_refuses_everything_gives_up() {
        let settings = Settings { cases: 10, seed: 0 };
        let ranges = ShapeRanges::new(1..=4, 1..=4, 1..=1);
        let err = run(
            &settings,
            &ranges,
            &Properties::default(),
            |_shape: &Shape| Err::<Produced, _>("boom"),
        )
        .unwrap_err();
        assert!(
            matches!(err, RunError::Source { error: "boom", .. }),
            "{err:?}"
        );
        let err = run(
            &settings,
            &ranges,
            &Properties::default(),
            |_shape: &Shape| Ok::<_, String>(Produced::Refused("never".into())),
        )
        .unwrap_err();
        assert_eq!(
            err,
            RunError::Refused {
                passed: 0,
                refused: 1025,
                reason: "never".into()
            }
        );
    }
}
