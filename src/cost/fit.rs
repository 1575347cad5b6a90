//! Fitting cost functions to measurements: non-negative least squares on relative error.
//!
//! A cost function is `y = sum_i c_i * t_i` over a kernel's terms `t` (the first term is 1, the
//! fixed cost of a call), with every `c_i >= 0`, so that no shape can be predicted to take
//! negative time. The fit minimises the squared *relative* error, so small and large shapes
//! count alike, and is then scaled so that half the samples lie above it (least squares on
//! relative error alone sits below its samples: a sample measured high weighs less than one
//! measured low). With at most ten terms the exact non-negative optimum is found by solving the
//! unconstrained problem on every subset of the terms and keeping the best feasible one; with
//! more (a gather's spill curve), by Lawson and Hanson's active-set method, which reaches the
//! same optimum.
//!
//! Time functions may also have a **knee**: an extra term `max(0, t_j - knee)` on one of their
//! terms `t_j`, so that shapes past a cache or allocator regime cost more per unit than those
//! below it (piecewise linear and continuous). The term and the knee are chosen among every
//! term and the samples' own values of it, where they cut the fit's error most, and only if by
//! at least a fifth.
//!
//! Gathers (the sparse products) may also **spill**: extra terms
//! `t_j * max(0, 1 - cache / t_k)` on their gathered rows or cache lines `t_j`, where `t_k` is
//! the size of the table they gather from. Random reads from a table that fits in a cache hit
//! it; past the cache, the share of reads that miss grows as `1 - cache / table`, and each miss
//! costs more. A machine has several caches and shares the last with its neighbours, so rather
//! than one cache size picked from the samples (which different calibrations of one machine
//! picked differently, moving large gathers' prices by up to 1.5x), the spill is a curve: one
//! term per gathered term at each of a fixed ladder of sizes, a factor of two apart from
//! 128 Ki elements up to the largest table sampled, each with its own non-negative
//! coefficient, so the cost per gather rises monotonically with the table wherever the
//! samples say it does. The curve, alone or beside a knee, is kept only if it cuts the error
//! by a fifth against the knee alone.

/// A fitted cost function with its error on its own samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// One coefficient per term.
    pub coefficients: Vec<f64>,
    /// Samples it was fitted on.
    pub samples: usize,
    /// Median |relative error| on its own samples.
    pub median_error: f64,
    /// 90th percentile of |relative error| on its own samples.
    pub p90_error: f64,
    /// Largest |relative error| on its own samples.
    pub max_error: f64,
    /// The smallest and largest value of each term over the samples: the calibrated range.
    pub range: Vec<(f64, f64)>,
    /// The knee, if any; its coefficient follows the terms'.
    pub knee: Option<Knee>,
    /// The spill curve's terms, if any; their coefficients follow the knee's.
    pub spills: Vec<Spill>,
}

/// Where a gather's reads start to miss the cache: the share of `term`'s units past a table
/// of `cache` elements (term `table`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spill {
    /// The gathered term: the rows gathered, or their elements.
    pub term: usize,
    /// The term that is the size of the table they are gathered from, in elements.
    pub table: usize,
    /// The cache's size, in elements.
    pub cache: f64,
}

impl Spill {
    /// The spill term: the gathered rows or elements times the share of the table past the
    /// cache.
    pub fn spilled(&self, terms: &[f64]) -> f64 {
        match (terms.get(self.term), terms.get(self.table)) {
            (Some(&gathered), Some(&table)) if table > self.cache => {
                gathered * (1.0 - self.cache / table)
            }
            _ => 0.0,
        }
    }
}

/// Where a fit's cost per unit of one term rises: past `at` on term `term`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// The term's index, the constant `calls` being 0.
    pub term: usize,
    /// The term's value where the second slope starts.
    pub at: f64,
}

impl Knee {
    /// The hinge term: how far `terms` lie past the knee.
    pub fn hinge(&self, terms: &[f64]) -> f64 {
        terms.get(self.term).map_or(0.0, |t| (t - self.at).max(0.0))
    }
}

impl Fit {
    /// The function's value at `terms`.
    pub fn eval(&self, terms: &[f64]) -> f64 {
        let mut extra = terms.len();
        let mut value = dot(&self.coefficients, terms);
        if let (Some(knee), Some(c)) = (self.knee, self.coefficients.get(extra)) {
            value += c * knee.hinge(terms);
            extra += 1;
        }
        for (spill, c) in self.spills.iter().zip(self.coefficients.iter().skip(extra)) {
            value += c * spill.spilled(terms);
        }
        value
    }

    /// How far `terms` lie beyond the calibrated range: the largest ratio of a term to its
    /// calibrated maximum, with its index, when some term exceeds it by more than 10%.
    pub fn beyond_range(&self, terms: &[f64]) -> Option<(usize, f64)> {
        self.range
            .iter()
            .zip(terms)
            .enumerate()
            .filter(|(_, ((_, hi), t))| *hi > 0.0 && **t > hi * 1.1)
            .map(|(i, ((_, hi), t))| (i, t / hi))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// The cache sizes a gather's spill curve bends at, in elements: a factor of two apart from
/// 128 Ki up to the largest table among the samples (term `table`).
pub fn spill_ladder(rows: &[Vec<f64>], table: usize) -> Vec<f64> {
    let largest = rows.iter().map(|t| t[table]).fold(0.0f64, f64::max);
    (0..24)
        .map(|i| 2f64.powi(17 + i))
        .take_while(|&cache| cache < largest)
        .collect()
}

/// Fits a gather's `y ~ terms` as [`fit_with_knee`] does, and also with a spill curve on each
/// of `terms` (its gathered rows, their cache lines) against the table `table`, at every size
/// of [`spill_ladder`]: alone and beside each knee candidate; keeps the best curve if it cuts
/// the squared relative error by at least a fifth. Spill terms whose coefficient comes out
/// zero are dropped.
pub fn fit_with_spill(rows: &[Vec<f64>], y: &[f64], terms: &[usize], table: usize) -> Option<Fit> {
    let knee = fit_with_knee(rows, y)?;
    let ladder = spill_ladder(rows, table);
    let spills: Vec<Spill> = terms
        .iter()
        .flat_map(|&term| {
            ladder
                .iter()
                .map(move |&cache| Spill { term, table, cache })
        })
        .collect();
    if spills.is_empty() {
        return Some(knee);
    }
    let p = rows[0].len();
    let spilled: Vec<Vec<f64>> = rows
        .iter()
        .map(|t| spills.iter().map(|s| s.spilled(t)).collect())
        .collect();
    let with = |knee: Option<Knee>| {
        let extended: Vec<Vec<f64>> = rows
            .iter()
            .zip(&spilled)
            .map(|(t, spilled)| {
                let mut extended = t.clone();
                extended.extend(knee.map(|k| k.hinge(t)));
                extended.extend(spilled);
                extended
            })
            .collect();
        let mut f = fit(&extended, y)?;
        f.range.truncate(p);
        // Keep the spill terms that carry a cost.
        let first = p + usize::from(knee.is_some());
        let tail = f.coefficients.split_off(first);
        for (s, c) in spills.iter().zip(tail) {
            if c > 0.0 {
                f.spills.push(*s);
                f.coefficients.push(c);
            }
        }
        f.knee = knee;
        Some((relative_loss(&f, rows, y), f))
    };
    // The curve alone and beside every knee (among them the one the fit without it chose).
    let mut best: Option<(f64, Fit)> = None;
    let candidates = std::iter::once(None).chain(
        knee_candidates(rows)
            .into_iter()
            .map(|(term, at)| Some(Knee { term, at })),
    );
    for candidate in candidates {
        if let Some((l, f)) = with(candidate) {
            if best.as_ref().is_none_or(|(b, _)| l < *b) {
                best = Some((l, f));
            }
        }
    }
    match best {
        Some((l, f)) if !f.spills.is_empty() && l < relative_loss(&knee, rows, y) * 0.8 => Some(f),
        _ => Some(knee),
    }
}

/// Where a knee may sit: on each term but the constant, at each of the samples' values of it
/// with samples on both sides.
fn knee_candidates(rows: &[Vec<f64>]) -> Vec<(usize, f64)> {
    let p = rows.first().map_or(0, Vec::len);
    let mut out = Vec::new();
    for term in 1..p {
        let mut values: Vec<f64> = rows.iter().map(|t| t[term]).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let n = values.len().saturating_sub(3);
        out.extend(values.into_iter().skip(1).take(n).map(|at| (term, at)));
    }
    out
}

/// Each row with one more term, `extra` of its terms, last.
fn extended(rows: &[Vec<f64>], extra: impl Fn(&[f64]) -> f64) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|t| {
            let mut t = t.clone();
            t.push(extra(&t));
            t
        })
        .collect()
}

/// Fits `y ~ terms` with one more term, `extra` of each sample's terms, whose coefficient
/// comes last; the calibrated range is the other terms' (the extra one follows from them).
fn fit_with_extra(rows: &[Vec<f64>], y: &[f64], extra: impl Fn(&[f64]) -> f64) -> Option<Fit> {
    let mut f = fit(&extended(rows, extra), y)?;
    f.range.pop();
    Some(f)
}

/// The sum of squared relative errors of `f` on the samples.
fn relative_loss(f: &Fit, rows: &[Vec<f64>], y: &[f64]) -> f64 {
    rows.iter()
        .zip(y)
        .map(|(t, &v)| ((f.eval(t) - v) / v).powi(2))
        .sum()
}

/// Fits `y ~ terms` as [`fit`] does, and also with a knee on each term but the constant at
/// each of the samples' values of it; keeps the knee that fits best if it cuts the squared
/// relative error by at least a fifth.
pub fn fit_with_knee(rows: &[Vec<f64>], y: &[f64]) -> Option<Fit> {
    let plain = fit(rows, y)?;
    let loss = |f: &Fit| relative_loss(f, rows, y);
    let mut best = (loss(&plain), plain);
    let threshold = best.0 * 0.8;
    for (term, at) in knee_candidates(rows) {
        let knee = Knee { term, at };
        let Some(mut f) = fit_with_extra(rows, y, |t| knee.hinge(t)) else {
            continue;
        };
        f.knee = Some(knee);
        let l = loss(&f);
        if l < threshold && l < best.0 {
            best = (l, f);
        }
    }
    Some(best.1)
}

/// Fits `y ~ terms` (rows of equal length, `y > 0`) with non-negative coefficients.
///
/// Returns `None` when there are fewer samples than terms or a target is not positive.
pub fn fit(rows: &[Vec<f64>], y: &[f64]) -> Option<Fit> {
    let p = rows.first()?.len();
    if rows.len() < p || rows.len() != y.len() || y.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        return None;
    }
    let mut coefficients = if p <= EXHAUSTIVE_TERMS {
        every_subset(rows, y)?
    } else {
        active_set(rows, y)?
    };
    // Least squares on relative error sits below its samples: a sample measured high weighs
    // less than one measured low (for a constant under noise of +-30%, 6% below). Scaled so
    // that half the samples lie above the fit and half below.
    let level = median_ratio(&coefficients, rows, y);
    if (level - 1.0).abs() > 1e-9 {
        for c in &mut coefficients {
            *c *= level;
        }
    }
    let mut errors: Vec<f64> = rows
        .iter()
        .zip(y)
        .map(|(t, &v)| ((dot(&coefficients, t) - v) / v).abs())
        .collect();
    errors.sort_by(f64::total_cmp);
    let range = (0..p)
        .map(|i| {
            rows.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), t| {
                (lo.min(t[i]), hi.max(t[i]))
            })
        })
        .collect();
    Some(Fit {
        coefficients,
        samples: rows.len(),
        median_error: quantile(&errors, 0.5),
        p90_error: quantile(&errors, 0.9),
        max_error: errors.last().copied().unwrap_or(0.0),
        range,
        knee: None,
        spills: Vec::new(),
    })
}

/// The median of the samples' measured over fitted values (1 where nothing is fitted above
/// zero).
fn median_ratio(coefficients: &[f64], rows: &[Vec<f64>], y: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = rows
        .iter()
        .zip(y)
        .map(|(t, &v)| (v, dot(coefficients, t)))
        .filter(|&(_, f)| f > 0.0)
        .map(|(v, f)| v / f)
        .collect();
    if ratios.is_empty() {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    median(&ratios)
}

/// The median of sorted, non-empty `values`: the middle two's mean for an even count.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0
}

/// Up to this many terms, [`fit`] solves every subset of them; beyond, the active-set method.
const EXHAUSTIVE_TERMS: usize = 10;

/// `coefficients` applied to one sample's terms.
fn dot(coefficients: &[f64], terms: &[f64]) -> f64 {
    coefficients.iter().zip(terms).map(|(c, t)| c * t).sum()
}

/// The sum of squared relative errors of `coefficients` on the samples.
fn loss_of(coefficients: &[f64], rows: &[Vec<f64>], y: &[f64]) -> f64 {
    rows.iter()
        .zip(y)
        .map(|(t, &v)| ((dot(coefficients, t) - v) / v).powi(2))
        .sum()
}

/// The non-negative optimum by solving the unconstrained problem on every subset of the
/// terms and keeping the best feasible one.
fn every_subset(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = rows[0].len();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for subset in 1u32..(1 << p) {
        let chosen: Vec<usize> = (0..p).filter(|i| subset & (1 << i) != 0).collect();
        let Some(solution) = weighted_least_squares(rows, y, &chosen) else {
            continue;
        };
        if solution.iter().any(|&c| c < 0.0) {
            continue;
        }
        let mut coefficients = vec![0.0; p];
        for (&i, &c) in chosen.iter().zip(&solution) {
            coefficients[i] = c;
        }
        let loss = loss_of(&coefficients, rows, y);
        if best.as_ref().is_none_or(|(b, _)| loss < *b) {
            best = Some((loss, coefficients));
        }
    }
    best.map(|(_, c)| c)
}

/// The non-negative optimum by Lawson and Hanson's active-set method: add the term whose
/// (scaled) gradient most wants to grow, solve on the active terms, and step back to the
/// boundary when a coefficient would turn negative, dropping the terms it reaches.
fn active_set(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = rows[0].len();
    // Each column's magnitude in relative units, so that terms of any scale compete alike.
    let scale: Vec<f64> = (0..p)
        .map(|i| {
            rows.iter()
                .zip(y)
                .map(|(t, v)| (t[i] / v).abs())
                .fold(0.0f64, f64::max)
        })
        .collect();
    let mut x = vec![0.0; p];
    let mut active: Vec<usize> = Vec::new();
    for _ in 0..3 * p {
        // The gradient of the relative loss's descent, per scaled term.
        let residual: Vec<f64> = rows
            .iter()
            .zip(y)
            .map(|(t, &v)| 1.0 - dot(&x, t) / v)
            .collect();
        let gain = |j: usize| -> f64 {
            rows.iter()
                .zip(y)
                .zip(&residual)
                .map(|((t, v), r)| t[j] / v * r)
                .sum::<f64>()
                / scale[j]
        };
        let candidate = (0..p)
            .filter(|j| !active.contains(j) && scale[*j] > 0.0)
            .map(|j| (j, gain(j)))
            .filter(|(_, g)| *g > 1e-9)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((j, _)) = candidate else {
            break;
        };
        active.push(j);
        active.sort_unstable();
        loop {
            let Some(z) = weighted_least_squares(rows, y, &active) else {
                // A term dependent on the active ones: leave it out.
                active.retain(|&i| i != j);
                break;
            };
            if z.iter().all(|&c| c > 0.0) {
                for (&i, &c) in active.iter().zip(&z) {
                    x[i] = c;
                }
                break;
            }
            // Step from x towards z until the first coefficient reaches zero.
            let step = active
                .iter()
                .zip(&z)
                .filter(|(_, &c)| c <= 0.0)
                .map(|(&i, &c)| x[i] / (x[i] - c))
                .fold(1.0f64, f64::min);
            for (&i, &c) in active.iter().zip(&z) {
                x[i] += step * (c - x[i]);
            }
            active.retain(|&i| x[i] * scale[i] > 1e-12);
            for (i, c) in x.iter_mut().enumerate() {
                if !active.contains(&i) {
                    *c = 0.0;
                }
            }
            if active.is_empty() {
                break;
            }
        }
    }
    (!active.is_empty()).then_some(x)
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Least squares of `y ~ terms[chosen]` weighted by `1 / y` (relative error), by the normal
/// equations with partial pivoting; `None` when they are singular.
fn weighted_least_squares(rows: &[Vec<f64>], y: &[f64], chosen: &[usize]) -> Option<Vec<f64>> {
    let k = chosen.len();
    // Scale each column to unit magnitude so flops (1e9) and calls (1) solve alike.
    let scale: Vec<f64> = chosen
        .iter()
        .map(|&i| {
            rows.iter()
                .zip(y)
                .map(|(t, v)| (t[i] / v).abs())
                .fold(0.0f64, f64::max)
        })
        .collect();
    if scale.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return None;
    }
    let mut a = vec![vec![0.0; k + 1]; k];
    for (t, &v) in rows.iter().zip(y) {
        let x: Vec<f64> = chosen
            .iter()
            .zip(&scale)
            .map(|(&i, s)| t[i] / v / s)
            .collect();
        for r in 0..k {
            for c in 0..k {
                a[r][c] += x[r] * x[c];
            }
            a[r][k] += x[r];
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|r| a[r][k] / a[r][r] / scale[r]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::rng::Rng;

    #[test]
    fn recovers_known_coefficients() {
        // y = 2000 + 0.5 * flops + 0.01 * bytes, with 1% noise.
        let mut rng = Rng::new(3);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        // Sizes spread over five decades, so that each coefficient dominates somewhere.
        for _ in 0..60 {
            let flops = 10f64.powf(2.0 + 5.0 * rng.unit_f64());
            let bytes = 10f64.powf(3.0 + 6.0 * rng.unit_f64());
            rows.push(vec![1.0, flops, bytes]);
            let noise = 1.0 + (rng.unit_f64() - 0.5) * 0.02;
            y.push((2000.0 + 0.5 * flops + 0.01 * bytes) * noise);
        }
        let f = fit(&rows, &y).unwrap();
        let want = [2000.0, 0.5, 0.01];
        for (c, w) in f.coefficients.iter().zip(want) {
            assert!((c - w).abs() / w < 0.05, "{:?} vs {want:?}", f.coefficients);
        }
        assert!(f.max_error < 0.02, "{f:?}");
        assert_eq!(f.samples, 60);
    }

    #[test]
    fn sits_among_its_samples_under_heavy_noise() {
        // y = 2000 + 0.5 * flops, each sample off by up to 30% either way. Least squares on
        // relative error alone comes out 5-7% low here; the fit is scaled so that the
        // samples' own noise, not the weighting, sets its level.
        let mut rng = Rng::new(7);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for _ in 0..1000 {
            let flops = 10f64.powf(2.0 + 5.0 * rng.unit_f64());
            rows.push(vec![1.0, flops]);
            y.push((2000.0 + 0.5 * flops) * (0.7 + 0.6 * rng.unit_f64()));
        }
        let f = fit(&rows, &y).unwrap();
        let mut level: Vec<f64> = rows
            .iter()
            .map(|t| f.eval(t) / (2000.0 + 0.5 * t[1]))
            .collect();
        level.sort_by(f64::total_cmp);
        let median = level[level.len() / 2];
        assert!((median - 1.0).abs() < 0.04, "{median} {:?}", f.coefficients);
        // Half the samples above the fit, half below.
        let above = rows.iter().zip(&y).filter(|(t, &v)| v > f.eval(t)).count();
        assert!((499..=501).contains(&above), "{above}");
    }

    #[test]
    fn finds_a_knee() {
        // 10 ns a call and 1 ns an element up to 1e5 elements, 4 ns an element beyond.
        let rows: Vec<Vec<f64>> = (0..16)
            .map(|i| vec![1.0, 1000.0 * 1.6f64.powi(i)])
            .collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|t| 10.0 + t[1] + 3.0 * (t[1] - 1e5).max(0.0))
            .collect();
        let f = fit_with_knee(&rows, &y).unwrap();
        let knee = f.knee.expect("a knee");
        assert_eq!(knee.term, 1);
        assert!((5e4..=2e5).contains(&knee.at), "{knee:?}");
        // Knees are tried at the samples' own sizes, so the one sample past the true knee
        // errs most; far from it the fit is close.
        assert!(f.median_error < 0.05 && f.max_error < 0.25, "{f:?}");
        assert!((f.eval(&[1.0, 1e6]) - y_of(1e6)).abs() / y_of(1e6) < 0.05);
        // Without one, a straight line cannot fit both ends.
        assert!(fit(&rows, &y).unwrap().max_error > 0.2);
    }

    #[test]
    fn finds_a_knee_on_any_term() {
        // Two terms; the cost per unit of the first, not the last, rises past 1e5.
        let mut rng = Rng::new(5);
        let rows: Vec<Vec<f64>> = (0..40)
            .map(|_| {
                vec![
                    1.0,
                    10f64.powf(3.0 + 3.0 * rng.unit_f64()),
                    10f64.powf(3.0 + 3.0 * rng.unit_f64()),
                ]
            })
            .collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|t| 100.0 + t[1] + 0.5 * t[2] + 3.0 * (t[1] - 1e5).max(0.0))
            .collect();
        let f = fit_with_knee(&rows, &y).unwrap();
        let knee = f.knee.expect("a knee");
        assert_eq!(knee.term, 1, "{f:?}");
        assert!((3e4..=3e5).contains(&knee.at), "{knee:?}");
        assert!(f.median_error < 0.05, "{f:?}");
    }

    #[test]
    fn follows_a_gather_past_the_cache_it_spills_from() {
        // 500 ns a call, 0.3 ns a gathered element and 0.1 ns a table element while the table
        // fits in 2^20 elements (between two sizes of the ladder); past that, the share of
        // gathers that miss costs 1.2 ns more.
        let mut rng = Rng::new(9);
        let cache = 2f64.powi(20);
        let truth = |t: &[f64]| {
            500.0 + 0.3 * t[1] + 0.1 * t[2] + 1.2 * t[1] * (1.0 - cache / t[2]).max(0.0)
        };
        let mut rows = Vec::new();
        // Tables from 2^14 to 2^24 elements, each gathered from 1 to 30 times over.
        for _ in 0..80 {
            let table = 2f64.powf(14.0 + 10.0 * rng.unit_f64());
            let gathered = table * (1.0 + 29.0 * rng.unit_f64());
            rows.push(vec![1.0, gathered, table]);
        }
        let y: Vec<f64> = rows
            .iter()
            .map(|t| truth(t) * (1.0 + (rng.unit_f64() - 0.5) * 0.02))
            .collect();
        assert_eq!(
            spill_ladder(&rows, 2),
            (17..=23).map(|e| 2f64.powi(e)).collect::<Vec<_>>()
        );
        let f = fit_with_spill(&rows, &y, &[1], 2).unwrap();
        assert!(!f.spills.is_empty(), "{f:?}");
        assert!(f.spills.iter().all(|s| (s.term, s.table) == (1, 2)));
        assert_eq!(
            f.coefficients.len(),
            3 + usize::from(f.knee.is_some()) + f.spills.len()
        );
        assert!(f.median_error < 0.03 && f.p90_error < 0.06, "{f:?}");
        // Far past the samples' gathers the fit still follows the truth.
        let far = [1.0, 3e8, 2f64.powi(25)];
        assert!(
            (f.eval(&far) - truth(&far)).abs() / truth(&far) < 0.05,
            "{f:?}"
        );
        // Without the spill, neither a line nor a knee fits small and large tables alike.
        assert!(fit_with_knee(&rows, &y).unwrap().p90_error > 0.1);
        // And a gather whose cost does not depend on its table is left without one.
        let flat: Vec<f64> = rows
            .iter()
            .map(|t| 500.0 + 0.3 * t[1] + 0.1 * t[2])
            .collect();
        assert!(fit_with_spill(&rows, &flat, &[1], 2)
            .unwrap()
            .spills
            .is_empty());
    }

    #[test]
    fn the_active_set_finds_every_subset_s_optimum() {
        // Random problems of 8 terms, some of which want negative coefficients: the active-set
        // method and the search over every subset reach the same non-negative optimum.
        let mut rng = Rng::new(21);
        for _ in 0..20 {
            let rows: Vec<Vec<f64>> = (0..40)
                .map(|_| {
                    let mut t = vec![1.0];
                    t.extend((0..7).map(|_| 10f64.powf(4.0 * rng.unit_f64())));
                    t
                })
                .collect();
            let truth: Vec<f64> = (0..8).map(|_| 2.0 * rng.unit_f64() - 0.5).collect();
            let y: Vec<f64> = rows
                .iter()
                .map(|t| {
                    let v: f64 = truth.iter().zip(t).map(|(c, x)| c * x).sum();
                    v.abs() + 50.0 * (1.0 + rng.unit_f64())
                })
                .collect();
            let exact = every_subset(&rows, &y).unwrap();
            let fast = active_set(&rows, &y).unwrap();
            assert!(fast.iter().all(|&c| c >= 0.0), "{fast:?}");
            let (a, b) = (loss_of(&exact, &rows, &y), loss_of(&fast, &rows, &y));
            assert!((a - b).abs() <= 1e-9 * a.max(1e-12), "{a} against {b}");
        }
    }

    /// `n` gathers' terms `[1, rows, elements, table]` at widths 4 to 128 from tables of 2^14
    /// to 2^24 elements, each reading `low + spread * u` times its table's rows (`u` uniform),
    /// and `truth` of each within 1%.
    fn gathers(
        rng: &mut Rng,
        n: usize,
        (low, spread): (f64, f64),
        truth: impl Fn(&[f64]) -> f64,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rows = Vec::new();
        for i in 0..n {
            let width = [4.0, 16.0, 64.0, 128.0][i % 4];
            let table = 2f64.powf(14.0 + 10.0 * rng.unit_f64());
            let gathered = table / width * (low + spread * rng.unit_f64());
            rows.push(vec![1.0, gathered, gathered * width, table]);
        }
        let y = rows
            .iter()
            .map(|t| truth(t) * (1.0 + (rng.unit_f64() - 0.5) * 0.02))
            .collect();
        (rows, y)
    }

    #[test]
    fn a_spill_falls_on_the_term_whose_misses_cost() {
        // Rows gathered at widths 4 to 128 from tables of 2^14 to 2^24 elements: a row that
        // misses costs 80 ns whatever its width, so the spill is on the rows, not the elements.
        let mut rng = Rng::new(12);
        let cache = 2f64.powi(21);
        let truth = |t: &[f64]| {
            800.0
                + 2.0 * t[1]
                + 0.2 * t[2]
                + 0.05 * t[3]
                + 80.0 * t[1] * (1.0 - cache / t[3]).max(0.0)
        };
        let (rows, y) = gathers(&mut rng, 120, (1.0, 9.0), truth);
        let f = fit_with_spill(&rows, &y, &[1, 2], 3).unwrap();
        // The curve carries the misses on the rows.
        let on_rows = |f: &Fit| {
            let first = 4 + usize::from(f.knee.is_some());
            f.spills
                .iter()
                .zip(&f.coefficients[first..])
                .filter(|(s, _)| s.term == 1)
                .map(|(_, c)| c)
                .sum::<f64>()
        };
        assert!(on_rows(&f) > 40.0, "{f:?}");
        assert!(f.median_error < 0.02, "{f:?}");
        // Offered only the elements, the fit cannot follow every width.
        let elements = fit_with_spill(&rows, &y, &[2], 3).unwrap();
        assert!(
            elements.p90_error > 2.0 * f.p90_error,
            "{elements:?} against {f:?}"
        );
    }

    #[test]
    fn a_spill_and_a_knee_fit_together() {
        // A gather whose elements cost more past 2^18 of them (the output no longer in cache)
        // and whose rows miss past a table of 2^21 elements: neither alone follows both.
        let mut rng = Rng::new(13);
        let (cache, at) = (2f64.powi(21), 2f64.powi(18));
        let truth = |t: &[f64]| {
            800.0
                + 2.0 * t[1]
                + 0.2 * t[2]
                + 0.3 * (t[2] - at).max(0.0)
                + 80.0 * t[1] * (1.0 - cache / t[3]).max(0.0)
        };
        let (rows, y) = gathers(&mut rng, 160, (0.5, 4.0), truth);
        let f = fit_with_spill(&rows, &y, &[1, 2], 3).unwrap();
        assert!(f.spills.iter().any(|s| s.term == 1), "{f:?}");
        assert_eq!(f.knee.map(|k| k.term), Some(2), "{f:?}");
        assert!(f.p90_error < 0.05, "{f:?}");
        let knee_only = fit_with_knee(&rows, &y).unwrap();
        assert!(
            knee_only.p90_error > 2.0 * f.p90_error,
            "{knee_only:?} against {f:?}"
        );
    }

    fn y_of(n: f64) -> f64 {
        10.0 + n + 3.0 * (n - 1e5).max(0.0)
    }

    #[test]
    fn coefficients_stay_non_negative() {
        // A target that falls with the term: the best non-negative fit is a constant.
        let rows: Vec<Vec<f64>> = (1..=10).map(|i| vec![1.0, f64::from(i)]).collect();
        let y: Vec<f64> = (1..=10).map(|i| 100.0 - f64::from(i)).collect();
        let f = fit(&rows, &y).unwrap();
        assert!(f.coefficients.iter().all(|&c| c >= 0.0), "{f:?}");
        assert_eq!(f.coefficients[1], 0.0);
    }

    #[test]
    fn flags_terms_past_the_calibrated_range() {
        let rows: Vec<Vec<f64>> = (1..=10).map(|i| vec![1.0, f64::from(i) * 100.0]).collect();
        let y: Vec<f64> = rows.iter().map(|t| 5.0 + t[1]).collect();
        let f = fit(&rows, &y).unwrap();
        assert_eq!(f.beyond_range(&[1.0, 900.0]), None);
        let (term, ratio) = f.beyond_range(&[1.0, 3000.0]).unwrap();
        assert_eq!(term, 1);
        assert!((ratio - 3.0).abs() < 1e-9);
        assert!(fit(&rows[..1], &y[..1]).is_none());
    }
}
