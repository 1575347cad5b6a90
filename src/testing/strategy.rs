//! Strategies: random pipeline shapes and op-time tables, and the cost model the tables are.

use std::fmt;
use std::ops::RangeInclusive;

use proptest::prelude::*;

use crate::cost::CostModel;
use crate::schedule::lower::Handoff;
use crate::schedule::{Op, OpKind};
use crate::trace::MemoryCategory;

/// The shape a schedule is asked for: stages in all, chunks, and stages per device (the
/// devices are `stages / stages_per_device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// Stages in all (S).
    pub stages: u32,
    /// Chunks per epoch (K).
    pub chunks: u32,
    /// Stages per device (v).
    pub stages_per_device: u32,
}

impl Shape {
    /// The devices the shape places its stages on: `stages / stages_per_device`, rounded up
    /// (a schedule file may place its stages unevenly).
    pub fn devices(&self) -> u32 {
        self.stages.div_ceil(self.stages_per_device.max(1))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: u32, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "{}, {}, {} per device",
            count(self.stages, "stage"),
            count(self.chunks, "chunk"),
            count(self.stages_per_device, "stage")
        )
    }
}

/// Inclusive ranges of shapes to draw from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeRanges {
    /// Stages in all; a drawn count is moved to a multiple of the stages per device.
    pub stages: RangeInclusive<u32>,
    /// Chunks per epoch.
    pub chunks: RangeInclusive<u32>,
    /// Stages per device.
    pub stages_per_device: RangeInclusive<u32>,
}

impl ShapeRanges {
    /// Ranges of stages, chunks and stages per device.
    pub fn new(
        stages: RangeInclusive<u32>,
        chunks: RangeInclusive<u32>,
        stages_per_device: RangeInclusive<u32>,
    ) -> Self {
        ShapeRanges {
            stages,
            chunks,
            stages_per_device,
        }
    }

    /// The one shape, fixed.
    pub fn fixed(shape: Shape) -> Self {
        ShapeRanges::new(
            shape.stages..=shape.stages,
            shape.chunks..=shape.chunks,
            shape.stages_per_device..=shape.stages_per_device,
        )
    }

    /// Why no shape can be drawn, if none can: an empty range, a zero, or no stage count in
    /// range that is a multiple of a stages-per-device count in range.
    pub fn problem(&self) -> Option<String> {
        for (name, range) in [
            ("stages", &self.stages),
            ("chunks", &self.chunks),
            ("stages per device", &self.stages_per_device),
        ] {
            if range.is_empty() || *range.start() == 0 {
                return Some(format!(
                    "{name}: {}..{} holds no count of at least 1",
                    range.start(),
                    range.end()
                ));
            }
        }
        let any = self
            .stages_per_device
            .clone()
            .any(|v| stages_for(&self.stages, v, *self.stages.start()).is_some());
        (!any).then(|| {
            format!(
                "no stage count in {}..{} is a multiple of a stages-per-device count in {}..{}",
                self.stages.start(),
                self.stages.end(),
                self.stages_per_device.start(),
                self.stages_per_device.end()
            )
        })
    }
}

/// The stage count used for a drawn `stages` at `v` stages per device: the largest multiple of
/// `v` in range at most `stages`, else the smallest in range above it.
fn stages_for(range: &RangeInclusive<u32>, v: u32, stages: u32) -> Option<u32> {
    let low = (*range.start()).max(v);
    let down = stages - stages % v;
    if down >= low && down <= *range.end() {
        return Some(down);
    }
    let up = low.div_ceil(v).checked_mul(v)?;
    (up <= *range.end()).then_some(up)
}

/// Shapes drawn from `ranges`: stages per device, stages and chunks each uniform in range, the
/// stages then moved to a multiple of the stages per device. Shrinks toward the smallest of
/// each.
pub fn shapes(ranges: &ShapeRanges) -> BoxedStrategy<Shape> {
    let stage_range = ranges.stages.clone();
    (
        ranges.stages.clone(),
        ranges.chunks.clone(),
        ranges.stages_per_device.clone(),
    )
        .prop_filter_map(
            "no multiple of the stages per device in the stages' range",
            move |(stages, chunks, v)| {
                stages_for(&stage_range, v, stages).map(|stages| Shape {
                    stages,
                    chunks,
                    stages_per_device: v,
                })
            },
        )
        .boxed()
}

/// One stage's op times: a forward, and a backward made of its input-gradient half (`I`) and
/// its weight-gradient half (`W`); a whole backward (`B`) takes both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTimes {
    /// `F`.
    pub forward_ns: u64,
    /// `I`: what the previous stage waits for.
    pub input_ns: u64,
    /// `W`: what only the optimizer waits for.
    pub weight_ns: u64,
}

impl StageTimes {
    /// A whole backward: `I + W`.
    pub fn backward_ns(&self) -> u64 {
        self.input_ns + self.weight_ns
    }

    /// The unit table: every half one nanosecond, a whole backward two.
    pub const UNIT: StageTimes = StageTimes {
        forward_ns: 1,
        input_ns: 1,
        weight_ns: 1,
    };
}

impl fmt::Display for StageTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "F {} I {} W {}",
            self.forward_ns, self.input_ns, self.weight_ns
        )
    }
}

/// How long each op takes: one table for every stage, or one per stage (skewed stages).
/// Optimizer steps take no time; nothing is moved or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpTimes {
    /// Every stage's ops take the same times.
    Uniform(StageTimes),
    /// Stage s's ops take entry `s` (entries repeat when there are fewer than stages).
    PerStage(Vec<StageTimes>),
}

impl OpTimes {
    /// Stage `stage`'s times.
    pub fn of_stage(&self, stage: u32) -> StageTimes {
        match self {
            OpTimes::Uniform(times) => *times,
            OpTimes::PerStage(per_stage) if per_stage.is_empty() => StageTimes::UNIT,
            OpTimes::PerStage(per_stage) => per_stage[stage as usize % per_stage.len()],
        }
    }

    /// The same table for `n_stages` stages only.
    pub fn for_stages(self, n_stages: u32) -> Self {
        match self {
            OpTimes::PerStage(mut per_stage) => {
                per_stage.truncate(n_stages as usize);
                OpTimes::PerStage(per_stage)
            }
            uniform => uniform,
        }
    }
}

impl fmt::Display for OpTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpTimes::Uniform(times) => write!(f, "uniform: {times} ns"),
            OpTimes::PerStage(per_stage) => {
                f.write_str("per stage:")?;
                for (stage, times) in per_stage.iter().enumerate() {
                    let sep = if stage == 0 { " " } else { "; " };
                    write!(f, "{sep}{stage}: {times}")?;
                }
                f.write_str(" ns")
            }
        }
    }
}

impl CostModel for OpTimes {
    fn op_ns(&self, op: Op) -> u64 {
        let times = self.of_stage(op.stage);
        match op.kind {
            OpKind::Forward => times.forward_ns,
            OpKind::Backward => times.backward_ns(),
            OpKind::InputGrad => times.input_ns,
            OpKind::WeightGrad => times.weight_ns,
            OpKind::Optimizer => 0,
        }
    }

    fn handoff_bytes(&self, _handoff: &Handoff) -> u64 {
        0
    }

    fn stash(&self, _forward: Op) -> (u64, u64) {
        (0, 0)
    }

    fn resident_bytes(&self, _order: &[Op]) -> Vec<(MemoryCategory, u64)> {
        Vec::new()
    }
}

/// The longest op half drawn, in nanoseconds.
pub const MAX_OP_NS: u64 = 1000;

/// One stage's times, each half 1 to [`MAX_OP_NS`] ns; shrinks toward [`StageTimes::UNIT`].
pub fn stage_times() -> impl Strategy<Value = StageTimes> {
    (1..=MAX_OP_NS, 1..=MAX_OP_NS, 1..=MAX_OP_NS).prop_map(|(forward_ns, input_ns, weight_ns)| {
        StageTimes {
            forward_ns,
            input_ns,
            weight_ns,
        }
    })
}

/// Op-time tables for up to `n_stages` stages: uniform across ops, or one draw per stage
/// (stages skewed against each other). Shrinks toward the uniform unit table.
pub fn op_times(n_stages: u32) -> BoxedStrategy<OpTimes> {
    prop_oneof![
        stage_times().prop_map(OpTimes::Uniform),
        proptest::collection::vec(stage_times(), n_stages.max(1) as usize)
            .prop_map(OpTimes::PerStage),
    ]
    .boxed()
}

/// One property-test case: a shape and the op times to simulate it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The shape asked for.
    pub shape: Shape,
    /// Op times (per stage: exactly `shape.stages` entries).
    pub times: OpTimes,
}

/// Cases: a shape from `ranges` and an op-time table for it ([`shapes`], [`op_times`]). The
/// two shrink independently, toward the smallest shape and the uniform unit table.
pub fn cases(ranges: &ShapeRanges) -> BoxedStrategy<Case> {
    (shapes(ranges), op_times(*ranges.stages.end()))
        .prop_map(|(shape, times)| Case {
            shape,
            times: times.for_stages(shape.stages),
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn stage_counts_move_to_multiples_of_the_stages_per_device() {
        let range = 2..=8;
        assert_eq!(stages_for(&range, 1, 5), Some(5));
        assert_eq!(stages_for(&range, 2, 5), Some(4));
        assert_eq!(stages_for(&range, 3, 2), Some(3));
        assert_eq!(stages_for(&range, 3, 8), Some(6));
        assert_eq!(stages_for(&range, 9, 8), None);
        assert_eq!(stages_for(&(5..=5), 2, 5), None);
        let none = ShapeRanges::new(5..=5, 1..=4, 2..=2);
        assert!(none.problem().unwrap().contains("no stage count in 5..5"));
        assert!(ShapeRanges::new(0..=4, 1..=4, 1..=1)
            .problem()
            .unwrap()
            .starts_with("stages: 0..4"));
        assert_eq!(ShapeRanges::new(2..=8, 1..=4, 1..=3).problem(), None);
    }

    #[test]
    fn drawn_cases_stay_in_range_and_shrink_to_the_smallest() {
        let ranges = ShapeRanges::new(2..=8, 3..=32, 1..=2);
        let mut runner = TestRunner::deterministic();
        for _ in 0..64 {
            let mut tree = cases(&ranges).new_tree(&mut runner).unwrap();
            let case = tree.current();
            let Shape {
                stages,
                chunks,
                stages_per_device: v,
            } = case.shape;
            assert!((2..=8).contains(&stages) && stages % v == 0, "{case:?}");
            assert!((3..=32).contains(&chunks) && (1..=2).contains(&v));
            if let OpTimes::PerStage(per_stage) = &case.times {
                assert_eq!(per_stage.len(), stages as usize);
            }
            // Simplifying as far as it goes reaches the smallest shape and the unit table.
            while tree.simplify() {}
            let simplest = tree.current();
            assert_eq!(simplest.times, OpTimes::Uniform(StageTimes::UNIT));
            assert_eq!(simplest.shape.chunks, 3);
            assert_eq!(simplest.shape.stages_per_device, 1);
            assert_eq!(simplest.shape.stages, 2);
        }
    }
}
