//! Microbenchmarks for a device profile (`pipegnn calibrate --device cpu`): every kernel the
//! executor runs, over a grid of shapes, timed on a rayon pool of the profile's thread count,
//! then whole layers as the executor runs them (for the glue and the memory functions).
//!
//! Each sample is the median of several runs after a warm-up, cold (24 MiB written between
//! runs), counting only the runs whose flush found the machine's memory quiet (`FlushMeter`).
//! Kernels are called exactly as the executor calls them: `X W` and candle's backward of it
//! (`dY W^T`, `X^T dY`), the CSR product and its transpose ([`super::sparse`]), GAT's
//! attention ([`super::attention`]), dropout keyed by vertex, ReLU/ELU and their gradients,
//! the loss, Adam, and the receiver's copy of a hand-off. Layers run
//! [`StageModel::layer_forward`] on chunks of seeded synthetic graphs and back-propagate the
//! executor's surrogate `(out * g).sum()`; the surrogate's own backward (two element-wise
//! passes, at their fitted cost) is taken off the layer's, since an op prices the surrogate, or
//! the loss, beside its layers. On a CPU every time function is then timed again warm
//! (nothing written between runs), and `measure_reuse` measures how much of a layer's warm
//! saving it keeps after other data passed through the caches. Last, [`measure_corun`] times
//! the same layers on a worker per core, alone and at once: how much ops that run at once
//! slow each other down.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::activation::{activate, activation_backward};
use super::attention::{gat_attention, EdgePattern};
use super::data::{ChunkPlan, Needs, PlanShape};
use super::device::take_matrix_buffer;
use super::layers::{cross_entropy, ExecLayer, StageInput, StageModel, Training};
use super::memory;
use super::optim::{Adam, AdamConfig};
use super::rows::Rows;
use super::sparse::SparseMatrix;
use crate::cost::device::{DeviceProfile, Kernel, MachineProbe, ProfileTarget};
use crate::cost::fit::{fit, fit_with_knee, fit_with_spill, median, Fit};
use crate::cost::kernels::{dense_terms, glue_terms, row_lines, LayerShape, TrainingShape};
use crate::gnn::{Layer, LayerKind};
use crate::graph::rng::Rng;
use crate::graph::synth::{sbm, SbmSpec};
use crate::scenario::Activation;

/// How hard to calibrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// The full grid (about a minute or two on a small CPU).
    Full,
    /// A small grid: for tests, not for predictions.
    Quick,
}

/// Samples of one function: terms (constant first) and measured values.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Each sample's terms, the constant 1 first.
    pub rows: Vec<Vec<f64>>,
    /// Each sample's measured value (ns, or bytes for memory functions).
    pub y: Vec<f64>,
    /// Each sample's slowest pass over its fastest, less 1 (empty after one pass): how much
    /// the machine moved the sample between passes.
    pub apart: Vec<f64>,
}

impl Samples {
    fn push(&mut self, terms: &[f64], value: f64) {
        let mut row = vec![1.0];
        row.extend_from_slice(terms);
        self.rows.push(row);
        self.y.push(value.max(1.0));
    }
}

/// Bytes written between timed calls to evict the caches: an op of the executor finds its
/// chunk's data cold (other chunks and stages ran since), so kernels are timed cold too.
const FLUSH_BYTES: usize = 24 << 20;

/// Bytes written between two timed calls: [`FLUSH_BYTES`] (cold, the default), none (warm),
/// or between (the reuse curve, [`measure_reuse`]); set by [`with_flush`].
static BETWEEN_CALLS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(FLUSH_BYTES);

/// Runs `f` with `bytes` written between its timed calls rather than [`FLUSH_BYTES`].
fn with_flush<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::Ordering;
    let before = BETWEEN_CALLS.swap(bytes.min(FLUSH_BYTES), Ordering::Relaxed);
    let out = f();
    BETWEEN_CALLS.store(before, Ordering::Relaxed);
    out
}

/// Writes `bytes` of the flush buffer and returns how long that took, in nanoseconds: a whole
/// flush is also a probe of the machine's memory at that moment ([`FlushMeter`]).
fn flush_caches(bytes: usize) -> f64 {
    use std::sync::Mutex;
    static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let mut buffer = BUFFER
        .lock()
        .expect("no thread panics holding the flush buffer");
    if buffer.len() < FLUSH_BYTES {
        buffer.resize(FLUSH_BYTES, 0);
    }
    let t = Instant::now();
    for (i, byte) in buffer[..bytes.min(FLUSH_BYTES)]
        .iter_mut()
        .enumerate()
        .step_by(64)
    {
        *byte = byte.wrapping_add(i as u8);
    }
    std::hint::black_box(&*buffer);
    let ns = t.elapsed().as_nanos() as f64;
    if bytes >= FLUSH_BYTES {
        FLUSH_METER
            .lock()
            .expect("no thread panics holding the flush meter")
            .record(ns);
    }
    ns
}

/// Every flush's time so far, as a histogram of 1%-wide buckets from 10 us up.
///
/// A shared machine's memory slows down in spells of seconds: here a 24 MiB flush took 0.81 ms
/// at its 10th percentile and 1.49 ms at its 90th within a minute, and an element-wise kernel
/// timed right after the fastest third of the flushes took 350 us at the median against 500 us
/// after the slowest third (correlation 0.70; a small matrix product 0.48; a program on glibc's
/// allocator, whose page faults were part of the kernels' times). So a sample is
/// timed on the calls whose flush found the machine quiet: within [`QUIET`] of the 5th
/// percentile of all flushes so far.
struct FlushMeter {
    buckets: [u32; METER_BUCKETS],
    count: u64,
}

/// A flush at most this much slower than the quiet reference counts as quiet.
const QUIET: f64 = 1.2;
/// Flushes the meter needs before it tells quiet from loaded (the calibration starts with them).
const METER_WARM_UP: u64 = 32;
const METER_FLOOR_NS: f64 = 1e4;
const METER_STEP: f64 = 1.01;
const METER_BUCKETS: usize = 1400;

static FLUSH_METER: std::sync::Mutex<FlushMeter> = std::sync::Mutex::new(FlushMeter::new());

impl FlushMeter {
    const fn new() -> Self {
        FlushMeter {
            buckets: [0; METER_BUCKETS],
            count: 0,
        }
    }

    fn bucket(ns: f64) -> usize {
        let i = ((ns.max(METER_FLOOR_NS) / METER_FLOOR_NS).ln() / METER_STEP.ln()) as usize;
        i.min(METER_BUCKETS - 1)
    }

    fn record(&mut self, ns: f64) {
        self.buckets[Self::bucket(ns)] += 1;
        self.count += 1;
    }

    /// The slowest flush that still counts as quiet; infinite until the meter has warmed up.
    fn quiet_limit(&self) -> f64 {
        if self.count < METER_WARM_UP {
            return f64::INFINITY;
        }
        let wanted = self.count.div_ceil(20);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= wanted {
                // The bucket's upper edge.
                return METER_FLOOR_NS * METER_STEP.powi(i as i32 + 1) * QUIET;
            }
        }
        f64::INFINITY
    }
}

/// Flushes until the meter can tell a quiet machine from a loaded one.
fn warm_up_meter() {
    for _ in 0..METER_WARM_UP {
        flush_caches(FLUSH_BYTES);
    }
}

/// The time of a sample from its calls, `(flush ns, call ns)`: the median call of those whose
/// flush was at most `quiet_limit`; with fewer than three such, the median of the third of
/// the calls with the fastest flushes.
fn quiet_median(calls: &[(f64, f64)], quiet_limit: f64) -> f64 {
    let mut quiet: Vec<f64> = calls
        .iter()
        .filter(|(flush, _)| *flush <= quiet_limit)
        .map(|&(_, ns)| ns)
        .collect();
    if quiet.len() < 3 {
        let mut by_flush = calls.to_vec();
        by_flush.sort_by(|a, b| a.0.total_cmp(&b.0));
        quiet = by_flush[..calls.len().div_ceil(3)]
            .iter()
            .map(|&(_, ns)| ns)
            .collect();
    }
    quiet.sort_by(f64::total_cmp);
    quiet[quiet.len() / 2]
}

/// The time of `f` in nanoseconds with cold caches, on a quiet machine: one warm-up call, then
/// calls until at least 3 of them found the machine quiet and 10 ms of them ran (or 9 were
/// quiet), at most 27 calls or 0.3 s; the median of the quiet ones ([`quiet_median`]).
/// Off the CPU the host's memory does not time the kernels, and every call counts; nor where
/// less than a whole flush runs between calls ([`with_flush`]), which says nothing of the
/// machine.
fn time<T>(device: &Device, f: impl FnMut() -> candle_core::Result<T>) -> candle_core::Result<f64> {
    time_warm(device, &[], f)
}

/// As [`time`], but with `warm` read after each flush: operands that in a layer the kernel
/// before has just written.
fn time_warm<T>(
    device: &Device,
    warm: &[&Tensor],
    mut f: impl FnMut() -> candle_core::Result<T>,
) -> candle_core::Result<f64> {
    drop(f()?);
    super::device::synchronize(device)?;
    let between = BETWEEN_CALLS.load(std::sync::atomic::Ordering::Relaxed);
    let limit = || {
        if device.is_cpu() && between >= FLUSH_BYTES {
            FLUSH_METER
                .lock()
                .expect("no thread panics holding the flush meter")
                .quiet_limit()
        } else {
            f64::INFINITY
        }
    };
    let mut calls = Vec::new();
    let mut spent = 0.0;
    loop {
        let flush = if between > 0 {
            flush_caches(between)
        } else {
            0.0
        };
        for tensor in warm {
            drop(tensor.sum_all()?);
        }
        super::device::synchronize(device)?;
        let t = Instant::now();
        let out = f()?;
        // On a GPU the kernels are asynchronous: the time is theirs only once they are done.
        super::device::synchronize(device)?;
        let elapsed = t.elapsed().as_nanos() as f64;
        calls.push((flush, elapsed));
        spent += elapsed;
        drop(out);
        let limit = limit();
        let quiet = calls.iter().filter(|(flush, _)| *flush <= limit).count();
        let enough = quiet >= 3 && (spent >= 1e7 || quiet >= 9);
        let spent_all = calls.len() >= 27 || (calls.len() >= 3 && spent >= 3e8);
        if enough || spent_all {
            return Ok(quiet_median(&calls, limit));
        }
    }
}

/// [`time`] of a dropout of `input` (rows `rows`) at 0.5, with a new mask each call as
/// training draws one each epoch: the same mask every call lets the core's branch predictor
/// learn which entries are kept, and a sparse dropout over a few thousand non-zeros then runs
/// twice as fast as in a run.
fn time_dropout(device: &Device, input: &StageInput, rows: &[u32]) -> candle_core::Result<f64> {
    let mut key = 0;
    time(device, || {
        key += 1;
        input.dropout(0.5, key, rows)
    })
}

fn random(rng: &mut Rng, shape: (usize, usize), device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.unit_f64() as f32 - 0.5)
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// A random `rows x cols` CSR matrix with about `per_row` entries a row.
fn random_sparse(rng: &mut Rng, rows: usize, cols: usize, per_row: usize) -> SparseMatrix {
    let mut offsets = vec![0];
    let mut indices = Vec::new();
    for _ in 0..rows {
        let mut row: Vec<u32> = (0..per_row.min(cols))
            .map(|_| rng.below(cols as u64) as u32)
            .collect();
        row.sort_unstable();
        row.dedup();
        indices.extend(row);
        offsets.push(indices.len());
    }
    let values = vec![1.0 / per_row.max(1) as f32; indices.len()];
    SparseMatrix::new(rows, cols, offsets, indices, values)
}

/// What a fresh worker of `threads` compute threads keeps after its first matrix product on
/// `device` ([`take_matrix_buffer`], made as the executor makes it): 0 where the allocator is
/// not counted or on a GPU.
fn matrix_buffer_bytes(device: &Device, threads: usize) -> candle_core::Result<u64> {
    if !memory::available() || !device.is_cpu() {
        return Ok(0);
    }
    let slot = memory::take_slot();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |_| memory::enter(slot))
        .build()
        .map_err(|e| candle_core::Error::Msg(format!("cannot build a thread pool: {e}")))?;
    let before = memory::current(slot);
    pool.install(|| take_matrix_buffer(device))?;
    Ok((memory::current(slot) - before).max(0) as u64)
}

/// Runs the microbenchmarks on `device` with `threads` compute threads and fits the profile.
/// The whole grid runs `passes` times and each sample keeps its fastest pass: on a shared
/// machine a spell of its neighbours' load then slows different samples in different passes,
/// and only the machine as it is unloaded is fitted (as `fidelity` keeps a configuration's
/// fastest round). `progress` is told each kernel as it starts. Returns the profile and the
/// samples each function was fitted on.
pub fn calibrate(
    device: &Device,
    threads: usize,
    effort: Effort,
    passes: usize,
    machine: String,
    progress: &(dyn Fn(&str) + Sync),
) -> candle_core::Result<(DeviceProfile, ProfileSamples)> {
    let matrix_buffer_bytes = matrix_buffer_bytes(device, threads)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| candle_core::Error::Msg(format!("cannot build a thread pool: {e}")))?;
    let slot = memory::take_slot();
    pool.broadcast(|_| memory::enter(slot));
    memory::enter(slot);
    warm_up_meter();
    let before = probe();
    let samples = fastest(passes, progress, |progress| {
        pool.install(|| measure_kernels(device, effort, progress))
    })?;
    let mut kernels: BTreeMap<Kernel, Fit> = BTreeMap::new();
    fit_into(&mut kernels, &samples);
    let draft = DeviceProfile {
        device: format!(
            "{}: {threads} thread{}",
            backend_name(device),
            if threads == 1 { "" } else { "s" }
        ),
        target: ProfileTarget {
            backend: backend_name(device).into(),
            threads: threads as u32,
            dtype: "f32".into(),
        },
        machine,
        kernels,
        wakeup_ns: 0,
        gap_ns: 0,
        stash_scale: 1.0,
        workspace_scale: 1.0,
        matrix_buffer_bytes,
        between_processes: None,
        // The machine as the samples kept it: the faster of a probe before and after.
        probe: Some(before.fastest(&probe())),
        passes_apart: None,
        corun_slowdown: Vec::new(),
        warm_kernels: BTreeMap::new(),
        reuse: Vec::new(),
    };
    let layers = fastest(passes, progress, |progress| {
        pool.install(|| measure_layers(device, effort, &draft, slot, true, progress))
    })?;
    let mut profile = draft;
    fit_into(&mut profile.kernels, &layers);
    let mut samples = ProfileSamples {
        cold: samples,
        warm: BTreeMap::new(),
    };
    samples.cold.extend(layers);
    // The time functions again, warm, and how warm data stays: on a CPU, whose caches the
    // flush empties (a GPU's are not the host's).
    if device.is_cpu() {
        let warm_progress = |what: &str| progress(&format!("{what}, warm"));
        let kernels = with_flush(0, || {
            fastest(passes, &warm_progress, |progress| {
                pool.install(|| measure_kernels(device, effort, progress))
            })
        })?;
        let mut warm = BTreeMap::new();
        fit_into(&mut warm, &kernels);
        // The layers' glue is fitted on their kernels' warm prices.
        let mut warm_draft = profile.clone();
        warm_draft.kernels.extend(warm.clone());
        let layers = with_flush(0, || {
            fastest(passes, &warm_progress, |progress| {
                pool.install(|| measure_layers(device, effort, &warm_draft, slot, false, progress))
            })
        })?;
        fit_into(&mut warm, &layers);
        samples.warm = kernels;
        samples.warm.extend(layers);
        profile.warm_kernels = warm;
        profile.reuse = pool.install(|| measure_reuse(device, effort, progress))?;
    }
    profile.corun_slowdown = measure_corun(device, threads, effort, progress)?;
    profile.passes_apart = median_apart(
        samples
            .cold
            .iter()
            .filter(|(kernel, _)| !kernel.is_memory())
            .map(|(_, s)| s),
    );
    Ok((profile, samples))
}

/// The samples a profile's functions were fitted on.
#[derive(Debug, Default)]
pub struct ProfileSamples {
    /// Timed cold, and the memory functions.
    pub cold: BTreeMap<Kernel, Samples>,
    /// The time functions timed warm (empty on a GPU).
    pub warm: BTreeMap<Kernel, Samples>,
}

/// Fits each function of `samples` into `fits`: a gather along its spill curve, a time with a
/// knee, a memory function linear.
fn fit_into(fits: &mut BTreeMap<Kernel, Fit>, samples: &BTreeMap<Kernel, Samples>) {
    for (kernel, s) in samples {
        let fitted = match kernel.gathers() {
            Some((terms, table)) => fit_with_spill(&s.rows, &s.y, terms, table),
            None if kernel.is_memory() => fit(&s.rows, &s.y),
            None => fit_with_knee(&s.rows, &s.y),
        };
        if let Some(f) = fitted {
            fits.insert(*kernel, f);
        }
    }
}

/// The samples as JSON text: per function its terms and, per sample, the terms' values, the
/// measured value and the fitted function's value (`calibrate --samples`); the warm ones
/// marked `"warm": true`.
pub fn samples_json(profile: &DeviceProfile, samples: &ProfileSamples) -> String {
    let cold = samples.cold.iter().map(|s| (false, s));
    let warm = samples.warm.iter().map(|s| (true, s));
    let functions: Vec<serde_json::Value> = cold
        .chain(warm)
        .map(|(warm, (kernel, s))| {
            let fits = if warm {
                &profile.warm_kernels
            } else {
                &profile.kernels
            };
            let points: Vec<serde_json::Value> = s
                .rows
                .iter()
                .zip(&s.y)
                .enumerate()
                .map(|(i, (row, &y))| {
                    let fitted = fits.get(kernel).map(|f| f.eval(row));
                    serde_json::json!({
                        "terms": &row[1..],
                        "measured": y,
                        "fitted": fitted,
                        "passes_apart": s.apart.get(i),
                    })
                })
                .collect();
            serde_json::json!({
                "kernel": kernel.name(),
                "warm": warm,
                "terms": kernel.terms(),
                "unit": if kernel.is_memory() { "bytes" } else { "ns" },
                "samples": points,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "format": "pipegnn-calibration-samples v1",
        "device": profile.device,
        "machine": profile.machine,
        "functions": functions,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialise");
    text.push('\n');
    text
}

/// Runs `measure` `passes` times (at least once) over the same grid and keeps each sample's
/// smallest value, and how far its passes lay apart.
fn fastest(
    passes: usize,
    progress: &(dyn Fn(&str) + Sync),
    mut measure: impl FnMut(&(dyn Fn(&str) + Sync)) -> candle_core::Result<BTreeMap<Kernel, Samples>>,
) -> candle_core::Result<BTreeMap<Kernel, Samples>> {
    let passes = passes.max(1);
    let mut best: Option<BTreeMap<Kernel, Samples>> = None;
    // Each sample's slowest pass, beside `best`'s fastest.
    let mut slowest: BTreeMap<Kernel, Vec<f64>> = BTreeMap::new();
    for pass in 0..passes {
        let told = |what: &str| {
            if passes > 1 {
                progress(&format!("{what} (pass {} of {passes})", pass + 1));
            } else {
                progress(what);
            }
        };
        let samples = measure(&told)?;
        match &mut best {
            None => {
                for (kernel, s) in &samples {
                    slowest.insert(*kernel, s.y.clone());
                }
                best = Some(samples);
            }
            Some(best) => {
                for (kernel, s) in samples {
                    let kept = best
                        .get_mut(&kernel)
                        .expect("every pass measures the same grid");
                    debug_assert_eq!(kept.rows, s.rows, "every pass measures the same grid");
                    let slow = slowest.get_mut(&kernel).expect("as `best`");
                    for ((k, m), y) in kept.y.iter_mut().zip(slow.iter_mut()).zip(s.y) {
                        *k = k.min(y);
                        *m = m.max(y);
                    }
                }
            }
        }
    }
    let mut best = best.expect("at least one pass");
    if passes > 1 {
        for (kernel, s) in &mut best {
            s.apart =
                s.y.iter()
                    .zip(&slowest[kernel])
                    .map(|(&fast, &slow)| slow / fast - 1.0)
                    .collect();
        }
    }
    Ok(best)
}

/// The median of the samples' [`Samples::apart`] over `functions` (`None` without two passes).
pub fn median_apart<'a>(functions: impl IntoIterator<Item = &'a Samples>) -> Option<f64> {
    let mut apart: Vec<f64> = functions
        .into_iter()
        .flat_map(|s| s.apart.iter().copied())
        .collect();
    if apart.is_empty() {
        return None;
    }
    apart.sort_by(f64::total_cmp);
    Some(apart[apart.len() / 2])
}

/// Times [`MachineProbe`]'s two workloads on the calling thread, the median of five runs of
/// each (about a tenth of a second).
pub fn probe() -> MachineProbe {
    use std::hint::black_box;
    use std::sync::OnceLock;
    const WORDS: usize = 16 << 20;
    const GATHERS: usize = 1 << 21;
    const N: usize = 256;
    static ARRAY: OnceLock<Vec<u32>> = OnceLock::new();
    let array = ARRAY.get_or_init(|| {
        (0..WORDS as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect()
    });
    let median = |mut f: Box<dyn FnMut()>| -> u64 {
        let mut ns: Vec<u64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as u64
            })
            .collect();
        ns.sort_unstable();
        ns[2]
    };
    // Independent loads from places a linear congruential sequence picks, so that the memory
    // system, not one load's latency, sets the pace.
    let memory_ns = median(Box::new(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut sum = 0u32;
        for _ in 0..GATHERS {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            sum = sum.wrapping_add(array[(x >> 32) as usize % WORDS]);
        }
        black_box(sum);
    }));
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.25).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.5).collect();
    let mut c = vec![0f32; N * N];
    let compute_ns = median(Box::new(move || {
        c.fill(0.0);
        for i in 0..N {
            for k in 0..N {
                let aik = black_box(&a)[i * N + k];
                for (cij, bkj) in c[i * N..(i + 1) * N].iter_mut().zip(&b[k * N..(k + 1) * N]) {
                    *cij += aik * bkj;
                }
            }
        }
        black_box(&c);
    }));
    MachineProbe {
        memory_ns,
        compute_ns,
    }
}

/// The most workers the co-run benchmark runs at once (beyond, its last slowdown stands).
pub const MAX_CORUN: usize = 8;

/// The co-run benchmark: how much slower an op runs while others run beside it on the
/// machine's other cores. Up to `cores / threads` workers (at most [`MAX_CORUN`]), each with a
/// pool of `threads` threads and data of its own, run the same work (forward and backward of a
/// GCN layer over sparse features, a GraphSAGE and a GAT layer over dense ones, each round on
/// the next of the four quarters of a 20,000-vertex graph, as a stage runs chunk after chunk);
/// first one alone, then `k` at once, alternating so that a drift of the machine falls on
/// both. `slowdown[k-1]` is the median over repetitions of the median round's time with `k`
/// running over that alone (at least 1). Empty on a GPU and where the cores hold one worker.
pub fn measure_corun(
    device: &Device,
    threads: usize,
    effort: Effort,
    progress: &(dyn Fn(&str) + Sync),
) -> candle_core::Result<Vec<f64>> {
    use std::sync::{Barrier, Mutex};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cores / threads.max(1)).min(MAX_CORUN);
    if !device.is_cpu() || workers < 2 {
        return Ok(Vec::new());
    }
    progress("ops running at once on the cores (co-run)");
    let quick = effort == Effort::Quick;
    let repetitions = if quick { 1 } else { 7 };
    // The phases: how many workers run in each, one alone before every `k`.
    let phases: Vec<usize> = (0..repetitions)
        .flat_map(|_| (2..=workers).flat_map(|k| [1, k]))
        .collect();
    let barrier = Barrier::new(workers + 1);
    let active = Mutex::new(0usize);
    // Per phase, the rounds' times (ns) of every worker that ran.
    let times: Mutex<Vec<Vec<f64>>> = Mutex::new(vec![Vec::new(); phases.len()]);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let rounds = if quick { 4 } else { 12 };
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let (barrier, active, times, failed, phases) =
                (&barrier, &active, &times, &failed, &phases);
            scope.spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                let work = pool
                    .map_err(|e| candle_core::Error::Msg(format!("cannot build a pool: {e}")))
                    .and_then(|pool| {
                        let nodes = if quick { 2_000 } else { 20_000 };
                        let work = pool.install(|| CorunWork::new(device, worker as u64, nodes))?;
                        Ok((pool, work))
                    });
                if let Err(e) = &work {
                    *failed.lock().expect("no worker panics") = Some(e.to_string());
                }
                // Every phase: wait for the go, run if among the first `active`, report.
                barrier.wait();
                for phase in 0..phases.len() {
                    barrier.wait();
                    let running = worker < *active.lock().expect("no worker panics");
                    if let (true, Ok((pool, work))) = (running, &work) {
                        let measured = pool.install(|| {
                            (0..rounds)
                                .map(|round| {
                                    let t = Instant::now();
                                    work.round(round)?;
                                    Ok(t.elapsed().as_nanos() as f64)
                                })
                                .collect::<candle_core::Result<Vec<f64>>>()
                        });
                        match measured {
                            Ok(ns) => times.lock().expect("no worker panics")[phase].extend(ns),
                            Err(e) => {
                                *failed.lock().expect("no worker panics") = Some(e.to_string())
                            }
                        }
                    }
                    barrier.wait();
                }
            });
        }
        barrier.wait();
        for &k in &phases {
            *active.lock().expect("no worker panics") = k;
            barrier.wait();
            barrier.wait();
        }
    });
    if let Some(e) = failed.into_inner().expect("no worker panics") {
        return Err(candle_core::Error::Msg(format!(
            "the co-run benchmark: {e}"
        )));
    }
    let times = times.into_inner().expect("no worker panics");
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut slowdown = vec![1.0];
    for k in 2..=workers {
        let mut ratios: Vec<f64> = phases
            .iter()
            .enumerate()
            .filter(|&(i, &p)| p == k && i > 0)
            .map(|(i, _)| median(&times[i]) / median(&times[i - 1]))
            .collect();
        ratios.sort_by(f64::total_cmp);
        slowdown.push(ratios[ratios.len() / 2].max(1.0));
    }
    Ok(slowdown)
}

/// Bytes written between a layer's calls for the reuse curve, beside none (warm) and a whole
/// flush (cold).
const REUSE_BYTES: [usize; 8] = [
    64 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
];

/// How warm a layer finds its data after other data passed through the caches: the co-run
/// benchmark's layers (GCN, GraphSAGE, GAT; forward and backward) on each quarter of an 800-
/// and of a 3,000-vertex graph (200 and 750 rows: small enough that warm data saves a layer a
/// quarter to a third of its cold time; a 5,000-row quarter saves next to nothing, and the
/// difference of two times that close is noise), timed warm, cold and with each of
/// [`REUSE_BYTES`] written between calls, every distance twice and the faster kept. A layer's
/// warmth at a distance is how much of its cold-to-warm difference it keeps there,
/// `(cold - t) / (cold - warm)`, counted where that difference is at least a tenth of its
/// cold time. The curve is the median over layers and quarters at each distance, made
/// non-increasing ([`non_increasing`]), and ends at 0 at a whole flush (only that if warm was
/// never faster). Empty on a GPU.
fn measure_reuse(
    device: &Device,
    effort: Effort,
    progress: &(dyn Fn(&str) + Sync),
) -> candle_core::Result<Vec<(f64, f64)>> {
    if !device.is_cpu() {
        return Ok(Vec::new());
    }
    progress("how warm data stays between an op's uses (reuse)");
    let graphs: &[u32] = if effort == Effort::Quick {
        &[800]
    } else {
        &[800, 3_000]
    };
    let distances: Vec<usize> = std::iter::once(0)
        .chain(REUSE_BYTES)
        .chain(std::iter::once(FLUSH_BYTES))
        .collect();
    let mut warmth: Vec<Vec<f64>> = vec![Vec::new(); REUSE_BYTES.len()];
    for (i, &nodes) in graphs.iter().enumerate() {
        let work = CorunWork::new(device, 100 + i as u64, nodes)?;
        for layer in 0..work.layers.len() {
            for quarter in 0..4 {
                let mut times = vec![f64::INFINITY; distances.len()];
                for _pass in 0..2 {
                    for (t, &bytes) in times.iter_mut().zip(&distances) {
                        let mut epoch = 0;
                        let ns = with_flush(bytes, || {
                            time(device, || {
                                epoch += 1;
                                work.layer_round(layer, quarter, epoch)
                            })
                        })?;
                        *t = t.min(ns);
                    }
                }
                let (warm, cold) = (times[0], times[distances.len() - 1]);
                if cold - warm < 0.1 * cold {
                    continue;
                }
                for (w, t) in warmth.iter_mut().zip(&times[1..]) {
                    w.push(((cold - t) / (cold - warm)).clamp(0.0, 1.0));
                }
            }
        }
    }
    let mut medians = Vec::new();
    for (&bytes, mut w) in REUSE_BYTES.iter().zip(warmth) {
        if w.is_empty() {
            continue;
        }
        w.sort_by(f64::total_cmp);
        medians.push((bytes as f64, median(&w)));
    }
    let mut curve = non_increasing(&medians);
    curve.push((FLUSH_BYTES as f64, 0.0));
    Ok(curve)
}

/// The non-increasing curve nearest `points` (by `x`) in least squares: adjacent points that
/// rise are pooled into their mean until none does. One low point among high ones lowers only
/// itself and its neighbours a little, where a running minimum would carry it to every
/// larger distance.
fn non_increasing(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    // Blocks of (sum, count) of consecutive points, each block's mean above the next's.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for &(_, y) in points {
        blocks.push((y, 1));
        while let [.., (s0, n0), (s1, n1)] = blocks[..] {
            if s1 / n1 as f64 <= s0 / n0 as f64 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (s0 + s1, n0 + n1);
        }
    }
    let ys = blocks
        .iter()
        .flat_map(|&(s, n)| std::iter::repeat_n(s / n as f64, n));
    points.iter().zip(ys).map(|(&(x, _), y)| (x, y)).collect()
}

/// The plan shape the calibration's layers read: the first of two, with the matrices of every
/// aggregation built (GCN's, the mean's and attention's edges).
fn first_of_two_layers() -> PlanShape {
    PlanShape {
        layers: 0..2,
        n_layers: 2,
        needs: Needs {
            gcn: true,
            mean: true,
            attention: true,
        },
    }
}

/// One worker's data for the co-run benchmark: three layers, each with a chunk per quarter of
/// a seeded graph.
struct CorunWork {
    layers: Vec<(StageModel, Vec<CorunChunk>)>,
}

/// A chunk of the co-run benchmark: its plan, its input and its output's gradient.
type CorunChunk = (ChunkPlan, StageInput, Tensor);

impl CorunWork {
    fn new(device: &Device, seed: u64, nodes: u32) -> candle_core::Result<Self> {
        let g = sbm(&SbmSpec {
            nodes,
            avg_degree: 10.0,
            classes: 4,
            features: 500,
            homophily: 0.8,
            feature_density: 0.02,
            seed: 11 + seed,
        });
        let mut rng = Rng::new(29 + seed);
        let quarter = nodes as usize / 4;
        let shape = first_of_two_layers();
        let kinds = [
            (LayerKind::Gcn, 500, 16, true),
            (LayerKind::Sage, 64, 16, false),
            (
                LayerKind::Gat {
                    heads: 8,
                    concat: true,
                },
                16,
                64,
                false,
            ),
        ];
        let mut layers = Vec::new();
        for (kind, d_in, d_out, sparse) in kinds {
            let layer = Layer { kind, d_in, d_out };
            let model = StageModel {
                layers: vec![ExecLayer::new(&layer, &mut rng, device)?],
                first_layer: 0,
                is_last: false,
                dropout: LAYER_DROPOUT,
                attention_dropout: LAYER_DROPOUT,
                activation: Activation::Relu,
            };
            let mut chunks = Vec::new();
            for q in 0..4 {
                let vertices: Vec<u32> =
                    (q * quarter..(q + 1) * quarter).map(|v| v as u32).collect();
                let plan = ChunkPlan::neighbours(
                    &g.graph,
                    vertices,
                    |u| (u as usize / quarter) as u64,
                    &shape,
                );
                let view = plan.layer(0);
                let input = if sparse {
                    StageInput::Sparse(random_sparse(&mut rng, view.read.len(), 500, 18))
                } else {
                    StageInput::Dense(random(&mut rng, (view.read.len(), d_in as usize), device)?)
                };
                let g = random(&mut rng, (view.out, d_out as usize), device)?;
                chunks.push((plan, input, g));
            }
            layers.push((model, chunks));
        }
        Ok(CorunWork { layers })
    }

    /// Forward and backward of each layer on quarter `round % 4`.
    fn round(&self, round: usize) -> candle_core::Result<()> {
        for layer in 0..self.layers.len() {
            self.layer_round(layer, round % 4, round)?;
        }
        Ok(())
    }

    /// Forward and backward of layer `layer` on quarter `quarter`, dropout's masks of epoch
    /// `epoch`.
    fn layer_round(&self, layer: usize, quarter: usize, epoch: usize) -> candle_core::Result<()> {
        let (model, chunks) = &self.layers[layer];
        let (plan, input, g) = &chunks[quarter];
        let view = plan.layer(0);
        let pattern = view.attention.as_ref().map(|a| &a.edges);
        let training = Some(Training {
            seed: 1,
            epoch: epoch as u32,
        });
        let y = model.layer_forward(0, input.clone(), view, pattern, training)?;
        drop((&y * g)?.sum_all()?.backward()?);
        Ok(())
    }
}

/// `cpu` or `cuda`.
pub fn backend_name(device: &Device) -> &'static str {
    if device.is_cpu() {
        "cpu"
    } else {
        "cuda"
    }
}

fn measure_kernels(
    device: &Device,
    effort: Effort,
    progress: &(dyn Fn(&str) + Sync),
) -> candle_core::Result<BTreeMap<Kernel, Samples>> {
    let quick = effort == Effort::Quick;
    let mut rng = Rng::new(17);
    let mut out: BTreeMap<Kernel, Samples> = BTreeMap::new();
    let rows: &[usize] = if quick {
        &[64, 512, 2048]
    } else {
        &[64, 512, 2048, 8192, 32768, 131072]
    };
    let widths: &[(usize, usize)] = if quick {
        &[(16, 16), (64, 8), (8, 64)]
    } else {
        // Down to a last layer's few classes, up to wide hidden layers.
        &[
            (16, 4),
            (64, 4),
            (32, 8),
            (8, 8),
            (16, 16),
            (64, 16),
            (16, 64),
            (64, 64),
            (128, 64),
            (256, 32),
            (64, 256),
        ]
    };
    progress("dense transforms");
    for &m in rows {
        for &(k, n) in widths {
            if (m * k * n) as f64 > 3e8 {
                continue;
            }
            let x = random(&mut rng, (m, k), device)?;
            let w = random(&mut rng, (k, n), device)?;
            let g = random(&mut rng, (m, n), device)?;
            let terms = dense_terms(m as f64, k as f64, n as f64);
            let f = time(device, || x.matmul(&w))?;
            out.entry(Kernel::DenseForward).or_default().push(&terms, f);
            let gi = time(device, || g.matmul(&w.t()?))?;
            out.entry(Kernel::DenseGradInput)
                .or_default()
                .push(&terms, gi);
            let gw = time(device, || x.t()?.matmul(&g))?;
            out.entry(Kernel::DenseGradWeight)
                .or_default()
                .push(&terms, gw);
        }
    }
    progress("sparse transforms");
    for &m in rows {
        // Columns and non-zeros a row as datasets have them: 10 and 50 of 500 (PubMed's first
        // layer reads 50), Cora's 18 of 1,433, CiteSeer's 32 of 3,703, Facebook's 14 of 4,714
        // (without it, an 8-head GAT's weight gradient on Facebook lay past the grid), and a
        // dense-ish 128.
        for &(cols, per_row) in &[
            (500usize, 10usize),
            (500, 50),
            (1433, 18),
            (3703, 32),
            (4714, 14),
            (128, 128),
        ] {
            for &n in &[16usize, 64] {
                let x = random_sparse(&mut rng, m, cols, per_row);
                let w = random(&mut rng, (cols, n), device)?;
                let g = random(&mut rng, (m, n), device)?;
                let nnz = x.nnz() as f64;
                let f = time(device, || x.matmul(&w))?;
                out.entry(Kernel::SparseForward)
                    .or_default()
                    .push(&[nnz, (m * n) as f64, nnz * n as f64], f);
                // In a layer's backward the gradient comes from the kernel just before.
                let xt = x.t();
                let gw = time_warm(device, &[&g], || xt.matmul(&g))?;
                out.entry(Kernel::SparseGradWeight).or_default().push(
                    &[nnz, (cols * n) as f64, nnz * n as f64, (m * n) as f64],
                    gw,
                );
                if n == 16 {
                    let input = StageInput::Sparse(x.clone());
                    let vertices: Vec<u32> = (0..m as u32).collect();
                    let d = time_dropout(device, &input, &vertices)?;
                    out.entry(Kernel::DropoutSparse)
                        .or_default()
                        .push(&[(m + cols) as f64, nnz], d);
                }
            }
        }
    }
    progress("aggregation");
    for &m in rows {
        for &degree in &[2usize, 8, 32] {
            // Tables of 1.5 times the rows written, as a whole graph's halo, and of 6 times,
            // as a chunk of a large graph reads (GNNPipe's chunks read most of the graph):
            // what a gather costs depends on how much of its table the caches hold.
            let reads: &[usize] = if m <= 32768 {
                &[m + m / 2, 6 * m]
            } else {
                &[m + m / 2]
            };
            for &read in reads {
                let a = random_sparse(&mut rng, m, read, degree + 1);
                let at = a.t();
                let nnz = a.nnz() as f64;
                for &w in &[4usize, 8, 16, 64, 128] {
                    if m * degree * w > 120_000_000 {
                        continue;
                    }
                    let x = random(&mut rng, (read, w), device)?;
                    let g = random(&mut rng, (m, w), device)?;
                    // A gather's terms: the edges, the rows it writes, their elements, the
                    // elements gathered, those of the table gathered from, and the cache lines
                    // gathered.
                    let terms = |written: usize, table: usize| {
                        [
                            nnz,
                            written as f64,
                            (written * w) as f64,
                            nnz * w as f64,
                            (table * w) as f64,
                            nnz * row_lines(w as f64),
                        ]
                    };
                    let f = time(device, || a.matmul(&x))?;
                    out.entry(Kernel::Aggregate)
                        .or_default()
                        .push(&terms(m, read), f);
                    let b = time(device, || at.matmul(&g))?;
                    out.entry(Kernel::AggregateTranspose)
                        .or_default()
                        .push(&terms(read, m), b);
                }
            }
        }
    }
    progress("attention");
    let attention_rows: &[usize] = if quick {
        &[128, 1024]
    } else {
        &[128, 1024, 4096, 16384]
    };
    for &m in attention_rows {
        for &degree in &[3usize, 12] {
            let read = m + m / 2;
            let a = random_sparse(&mut rng, m, read, degree + 1);
            let pattern = EdgePattern::new(&a)?;
            let nnz = pattern.nnz() as f64;
            for &(heads, channels) in &[(1usize, 8usize), (8, 8), (4, 16), (1, 64)] {
                let width = heads * channels;
                let x = Var::from_tensor(&random(&mut rng, (read, width), device)?)?;
                let att_src = Var::from_tensor(&random(&mut rng, (heads, channels), device)?)?;
                let att_dst = Var::from_tensor(&random(&mut rng, (heads, channels), device)?)?;
                let run = || {
                    gat_attention(
                        &pattern,
                        x.as_tensor(),
                        att_src.as_tensor(),
                        att_dst.as_tensor(),
                        (heads, channels),
                        0.2,
                        false,
                        None,
                    )
                };
                let terms = [
                    nnz,
                    nnz * heads as f64,
                    (read * width) as f64,
                    nnz * width as f64,
                ];
                let f = time(device, run)?;
                out.entry(Kernel::AttentionForward)
                    .or_default()
                    .push(&terms, f);
                let g = random(&mut rng, (m, width), device)?;
                let y = run()?;
                let surrogate = (&y * &g)?.sum_all()?;
                // The backward alone: the surrogate's own backward is an elementwise op, timed
                // below and subtracted by the fit's structure rather than here.
                let b = time(device, || surrogate.backward())?;
                out.entry(Kernel::AttentionBackward)
                    .or_default()
                    .push(&terms, b);
            }
        }
    }
    progress("elementwise, dropout, activations, copies");
    let sizes: &[usize] = if quick {
        &[1_000, 30_000, 300_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000, 4_000_000, 16_000_000]
    };
    for &n in sizes {
        let cols = 64.min(n);
        let rows_n = n / cols;
        let x = random(&mut rng, (rows_n, cols), device)?;
        let y = random(&mut rng, (rows_n, cols), device)?;
        let e = [(rows_n * cols) as f64];
        let vertices: Vec<u32> = (0..rows_n as u32).collect();
        let input = StageInput::Dense(x.clone());
        let d = time_dropout(device, &input, &vertices)?;
        out.entry(Kernel::DropoutDense).or_default().push(&e, d);
        out.entry(Kernel::Elementwise)
            .or_default()
            .push(&e, time(device, || &x + &y)?);
        out.entry(Kernel::ReluForward)
            .or_default()
            .push(&e, time(device, || activate(&x, Activation::Relu))?);
        out.entry(Kernel::EluForward)
            .or_default()
            .push(&e, time(device, || activate(&x, Activation::Elu))?);
        // The activation's backward alone, from its output and the gradient the kernel before
        // has just written: a surrogate's backward (`(f(x) * y).sum_all()`) would add its own
        // passes and autograd's, which each layer's glue already prices.
        for (kernel, activation) in [
            (Kernel::ReluBackward, Activation::Relu),
            (Kernel::EluBackward, Activation::Elu),
        ] {
            let out_x = activate(&x, activation)?;
            let b = time_warm(device, &[&y], || {
                activation_backward(&out_x, &y, activation)
            })?;
            out.entry(kernel).or_default().push(&e, b);
        }
        // A stage's surrogate objective, forward and backward, on a leaf of the output's
        // shape: autograd's passes over it cost several times an element-wise op.
        let z = Var::from_tensor(&x)?;
        out.entry(Kernel::Objective).or_default().push(
            &e,
            time(device, || (z.as_tensor() * &y)?.sum_all()?.backward())?,
        );
        let index = Tensor::new(vertices.as_slice(), device)?;
        out.entry(Kernel::RowCopy)
            .or_default()
            .push(&e, time(device, || x.index_select(&index, 0))?);
        out.entry(Kernel::HandoffCopy)
            .or_default()
            .push(&[4.0 * e[0]], time(device, || x.copy())?);
    }
    progress("history buffers");
    // GNNPipe's buffers hold a row per vertex of the graph; a chunk reads its halo rows and
    // writes (or adds the gradient of) its own at vertices scattered over them, in order: at
    // most a fifth of the buffer's rows (a chunk's own, or the halo a layer reads), whose
    // lines a cache's prefetcher cannot stream as it streams a dense run (every row of a
    // 20,000-row buffer, 8 wide, read at 3.5 ns a row, a tenth of them at 13-16 ns).
    let (tables, widths, counts): (&[usize], &[usize], &[usize]) = if quick {
        (&[20_000], &[16], &[200, 1_000, 4_000])
    } else {
        (&[20_000, 200_000], &[8, 32, 128], &[200, 2_000, 20_000])
    };
    for &n in tables {
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        for &width in widths {
            let mut buffer = Rows::zeros(n, width);
            for &count in counts.iter().filter(|&&count| 5 * count <= n) {
                let mut rows = order[..count].to_vec();
                rows.sort_unstable();
                let t = random(&mut rng, (count, width), device)?;
                let e = [count as f64, (count * width) as f64];
                out.entry(Kernel::HistoryRead)
                    .or_default()
                    .push(&e, time(device, || buffer.read(&rows, device))?);
                out.entry(Kernel::HistoryWrite)
                    .or_default()
                    .push(&e, time(device, || buffer.write(&rows, &t))?);
                out.entry(Kernel::HistoryAdd)
                    .or_default()
                    .push(&e, time(device, || buffer.add(&rows, &t))?);
            }
        }
    }
    progress("loss and optimizer");
    for &m in &[100usize, 1_000, 10_000, 50_000] {
        for &classes in &[3usize, 7, 40] {
            let logits = Var::from_tensor(&random(&mut rng, (m, classes), device)?)?;
            // Every row labelled, one in 8, one in 64 (a few labels, as Planetoid's splits), none.
            for step in [1usize, 8, 64, usize::MAX] {
                let labelled: Vec<(u32, u32)> = (0..m as u32)
                    .step_by(step.min(m + 1))
                    .filter(|_| step != usize::MAX)
                    .map(|i| (i, i % classes as u32))
                    .collect();
                let l = time(device, || {
                    cross_entropy(logits.as_tensor(), &labelled, labelled.len().max(1))?.backward()
                })?;
                out.entry(Kernel::Loss).or_default().push(
                    &[
                        (m * classes) as f64,
                        (labelled.len() * classes) as f64,
                        f64::from(u8::from(!labelled.is_empty())),
                        labelled.len() as f64,
                    ],
                    l,
                );
            }
        }
    }
    // A step costs per tensor (a few kernels each) and per number: stages hold 2 to 4 tensors
    // a layer. Between 100,000 and 1,000,000 numbers the step's four buffers leave the cache,
    // where a stage of a wide-featured graph's first layer sits (Facebook's, 300,000).
    for &tensors in &[1usize, 3, 8] {
        for &params in &[1_000usize, 10_000, 100_000, 300_000, 1_000_000, 3_000_000] {
            let rows = params / 10 / tensors;
            let vars = (0..tensors)
                .map(|_| Var::from_tensor(&random(&mut rng, (rows, 10), device)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let grads = (0..tensors)
                .map(|_| random(&mut rng, (rows, 10), device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let mut adam = Adam::new(vars, AdamConfig::new(0.01, 5e-4))?;
            let a = time(device, || adam.step(&grads))?;
            out.entry(Kernel::Adam)
                .or_default()
                .push(&[tensors as f64, (rows * 10 * tensors) as f64], a);
        }
    }
    Ok(out)
}

/// The dropout rate of the layers calibration runs with dropout.
const LAYER_DROPOUT: f64 = 0.5;

/// Whole layers on chunks of synthetic graphs: time forward and backward, and memory.
fn measure_layers(
    device: &Device,
    effort: Effort,
    draft: &DeviceProfile,
    slot: usize,
    with_memory: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> candle_core::Result<BTreeMap<Kernel, Samples>> {
    let quick = effort == Effort::Quick;
    let mut out: BTreeMap<Kernel, Samples> = BTreeMap::new();
    let graphs: &[(u32, f64)] = if quick {
        &[(2_000, 6.0)]
    } else {
        &[(3_000, 4.0), (20_000, 10.0), (100_000, 12.0)]
    };
    let kinds = [
        LayerKind::Gcn,
        LayerKind::Sage,
        LayerKind::Gat {
            heads: 8,
            concat: true,
        },
        LayerKind::Gat {
            heads: 1,
            concat: false,
        },
    ];
    let mut rng = Rng::new(23);
    for &(nodes, degree) in graphs {
        progress(&format!("layers on a {nodes}-vertex graph"));
        let g = sbm(&SbmSpec {
            nodes,
            avg_degree: degree,
            classes: 4,
            features: 500,
            homophily: 0.8,
            feature_density: 0.02,
            seed: 5,
        });
        let csr = &g.graph;
        for &fraction in &[1usize, 4, 16] {
            let size = (nodes as usize / fraction).max(1);
            let vertices: Vec<u32> = (0..size as u32).collect();
            let part: Vec<u32> = (0..nodes).map(|v| (v as usize / size) as u32).collect();
            let shape = first_of_two_layers();
            // Neighbours read (GNNPipe, graph parallelism, exact) and, for a chunk of the
            // graph, the induced subgraph (halo drop; the whole graph reads no halo anyway).
            let mut plans = vec![ChunkPlan::neighbours(
                csr,
                vertices.clone(),
                |u| u64::from(part[u as usize]),
                &shape,
            )];
            if fraction == 4 {
                plans.push(ChunkPlan::induced(csr, vertices.clone(), &shape));
            }
            for plan in plans {
                let view = plan.layer(0);
                let read = view.read.len();
                let edges = view.gcn()?.nnz() as f64 - view.out as f64;
                for kind in kinds {
                    // Sparse inputs of 10 and 40 non-zeros a row (Cora has 18, PubMed's
                    // first layer 50), so a fit can tell non-zeros from rows.
                    for (d_in, d_out, per_row) in [
                        (500usize, 16usize, Some(10usize)),
                        (500, 16, Some(40)),
                        (64, 16, None),
                        (16, 64, None),
                    ] {
                        if quick && (d_in == 16 || per_row == Some(40)) {
                            continue;
                        }
                        let sparse = per_row.is_some();
                        // 8 heads over sparse features as GAT's first layer is usually
                        // built (8 channels a head, 64 wide: every GAT of the fidelity
                        // matrix), where 16 wide gave it 2 channels a head; over dense
                        // inputs both 2 and 8 channels.
                        let (d_out, heads) = match kind {
                            LayerKind::Gat {
                                heads,
                                concat: true,
                            } if sparse => (64, heads),
                            LayerKind::Gat {
                                heads,
                                concat: true,
                            } => (d_out.max(8) / 8 * 8, heads),
                            LayerKind::Gat { heads, .. } => (d_out, heads),
                            _ => (d_out, 1),
                        };
                        let layer = Layer {
                            kind,
                            d_in: d_in as u64,
                            d_out: d_out as u64,
                        };
                        // Timed in two variants, not on the denser sparse input (timed too,
                        // GCN's backward glue fitted its own samples with a median error of
                        // 22% rather than 13%, and on the fidelity matrix PubMed's errors
                        // fell by 5 points but the 100,000-vertex graph's grew by 9 to 18);
                        // memory in all four combinations of dropout and a following
                        // activation, so the fit can tell them apart.
                        for (dropout, elu, last, timed) in [
                            (true, false, false, true),
                            (false, true, true, true),
                            (true, true, true, false),
                            (false, false, false, false),
                        ] {
                            let timed = timed && per_row != Some(40);
                            if !timed && !with_memory {
                                continue;
                            }
                            let layer_shape = LayerShape {
                                kind,
                                out: view.out as f64,
                                read: read as f64,
                                edges,
                                d_in: d_in as f64,
                                d_out: d_out as f64,
                                heads: heads as f64,
                                sparse_nnz: None,
                                input_grad: !sparse,
                                activation: !last,
                                training: TrainingShape {
                                    dropout: if dropout { LAYER_DROPOUT } else { 0.0 },
                                    attention_dropout: dropout,
                                    elu,
                                },
                            };
                            let features = if let Some(per_row) = per_row {
                                let x = random_sparse(&mut rng, read, d_in, per_row);
                                let nnz = x.nnz() as f64;
                                (StageInput::Sparse(x), Some(nnz))
                            } else {
                                (
                                    StageInput::Dense(random(&mut rng, (read, d_in), device)?),
                                    None,
                                )
                            };
                            let layer_shape = LayerShape {
                                sparse_nnz: features.1,
                                ..layer_shape
                            };
                            measure_layer(
                                device,
                                &layer,
                                &layer_shape,
                                features.0,
                                view,
                                (draft, slot, timed, with_memory),
                                &mut rng,
                                &mut out,
                            )?;
                        }
                    }
                }
            }
        }
    }
    if with_memory && memory::available() && device.is_cpu() {
        progress("the loss's and the optimizer's temporaries");
        measure_step_memory(device, slot, &mut rng, &mut out)?;
    }
    Ok(out)
}

/// The temporaries of the loss (what it and its backward allocate, its logits' gradient among
/// them) and of an Adam step (a few copies of each tensor in turn: they scale with the
/// largest).
fn measure_step_memory(
    device: &Device,
    slot: usize,
    rng: &mut Rng,
    out: &mut BTreeMap<Kernel, Samples>,
) -> candle_core::Result<()> {
    let peak_of = |run: &mut dyn FnMut() -> candle_core::Result<()>| {
        let before = memory::current(slot);
        memory::take_peak(slot);
        run()?;
        Ok::<i64, candle_core::Error>(memory::take_peak(slot) - before)
    };
    for &m in &[1_000usize, 10_000, 100_000] {
        for &classes in &[3usize, 8, 40] {
            let logits = Var::from_tensor(&random(rng, (m, classes), device)?)?;
            for step in [1usize, 8, 64] {
                let labelled: Vec<(u32, u32)> = (0..m as u32)
                    .step_by(step)
                    .map(|i| (i, i % classes as u32))
                    .collect();
                let bytes = peak_of(&mut || {
                    let grads =
                        cross_entropy(logits.as_tensor(), &labelled, labelled.len())?.backward()?;
                    drop(grads);
                    Ok(())
                })?;
                out.entry(Kernel::LossTemporaries).or_default().push(
                    &[(m * classes) as f64, (labelled.len() * classes) as f64],
                    bytes.max(1) as f64,
                );
            }
        }
    }
    for &largest in &[1_000usize, 30_000, 300_000, 3_000_000] {
        let shapes = [(largest / 10, 10), (1, 10)];
        let vars = shapes
            .iter()
            .map(|&s| Var::from_tensor(&random(rng, s, device)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let grads = shapes
            .iter()
            .map(|&s| random(rng, s, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut adam = Adam::new(vars, AdamConfig::new(0.01, 5e-4))?;
        let bytes = peak_of(&mut || adam.step(&grads))?;
        out.entry(Kernel::AdamTemporaries)
            .or_default()
            .push(&[largest as f64], bytes.max(1) as f64);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure_layer(
    device: &Device,
    layer: &Layer,
    shape: &LayerShape,
    input: StageInput,
    view: &super::data::LayerGraph,
    (draft, slot, timed, with_memory): (&DeviceProfile, usize, bool, bool),
    rng: &mut Rng,
    out: &mut BTreeMap<Kernel, Samples>,
) -> candle_core::Result<()> {
    let exec_layer = ExecLayer::new(layer, rng, device)?;
    let model = StageModel {
        layers: vec![exec_layer],
        first_layer: 0,
        is_last: !shape.activation,
        dropout: shape.training.dropout,
        attention_dropout: if shape.training.attention_dropout {
            LAYER_DROPOUT
        } else {
            0.0
        },
        activation: if shape.training.elu {
            Activation::Elu
        } else {
            Activation::Relu
        },
    };
    // A new epoch each call, as in training: dropout's masks drawn anew. The same mask every
    // call lets the core's branch predictor learn which entries are kept, and a sparse
    // dropout over a few thousand non-zeros then runs twice as fast as in a run.
    let training = |epoch| Some(Training { seed: 1, epoch });
    let pattern = view.attention.as_ref().map(|a| &a.edges);
    // The input as the executor holds it: a leaf when its gradient is wanted.
    let (_leaf, input) = match input {
        StageInput::Dense(x) if shape.input_grad => {
            let v = Var::from_tensor(&x)?;
            (Some(v.clone()), StageInput::Dense(v.as_tensor().clone()))
        }
        other => (None, other),
    };
    let forward = |epoch| model.layer_forward(0, input.clone(), view, pattern, training(epoch));
    let g = random(rng, (view.out, layer.d_out as usize), device)?;
    let (_, stash_kernel, forward_kernel) = shape.functions(false);
    let (_, _, backward_kernel) = shape.functions(true);
    // The counting allocator sees host memory only: memory functions are fitted on the CPU.
    if with_memory && memory::available() && device.is_cpu() {
        let before = memory::current(slot);
        memory::take_peak(slot);
        let y = forward(1)?;
        let kept = memory::current(slot) - before;
        let peak_forward = memory::take_peak(slot) - before;
        let grads = (&y * &g)?.sum_all()?.backward()?;
        let peak_backward = memory::take_peak(slot) - before;
        drop(grads);
        // The surrogate objective's own share (its product, the output's gradient and
        // autograd's sums around them), measured alone on a leaf of the output's shape: a
        // stage's lower layers get their output's gradient from the layer above instead, and
        // an op counts its own objective.
        let z = Var::from_tensor(&y.detach())?;
        drop(y);
        let base = memory::current(slot);
        memory::take_peak(slot);
        let grads = (z.as_tensor() * &g)?.sum_all()?.backward()?;
        let surrogate = memory::take_peak(slot) - base;
        drop(grads);
        drop(z);
        let terms = shape.memory_terms();
        for (kernel, bytes) in [
            (stash_kernel, kept),
            (forward_kernel, peak_forward - kept),
            (backward_kernel, peak_backward - kept - surrogate),
        ] {
            out.entry(kernel)
                .or_default()
                .push(&terms, bytes.max(1) as f64);
        }
        out.entry(Kernel::ObjectiveTemporaries)
            .or_default()
            .push(&[shape.out * shape.d_out], surrogate.max(1) as f64);
    }
    if !timed {
        return Ok(());
    }
    let mut epoch = 0;
    let f_ns = time(device, || {
        epoch += 1;
        forward(epoch)
    })?;
    // The backward alone, timed on one forward's graph (a backward leaves the graph as it
    // was), as the executor runs it on the stash. Timing forward and backward together and
    // subtracting the forward's time instead left a difference of two noisy medians, down to
    // nothing on small layers, which a fit on relative error cannot absorb.
    let y = forward(epoch + 1)?;
    let surrogate = (&y * &g)?.sum_all()?;
    let backward_ns = time(device, || surrogate.backward())?;
    // The surrogate's own backward (the sum's gradient broadcast, the product's two gradients
    // and autograd's sums around them) is not the layer's: an op prices the surrogate, or the
    // loss, on its own. It is timed alone, on a leaf of the output's shape.
    let z = Var::from_tensor(&y.detach())?;
    let objective = (z.as_tensor() * &g)?.sum_all()?;
    let surrogate_ns = time(device, || objective.backward())?;
    let (glue_f, _, _) = shape.functions(false);
    let (glue_b, _, _) = shape.functions(true);
    let terms = |backward: bool| glue_terms(shape, backward, |k, terms| draft.eval(k, terms).0);
    out.entry(glue_f).or_default().push(&terms(false), f_ns);
    out.entry(glue_b).or_default().push(
        &terms(true),
        (backward_ns - surrogate_ns).max(0.5 * backward_ns),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_low_point_does_not_carry_to_every_larger_distance() {
        let points = [(1.0, 0.9), (2.0, 0.1), (3.0, 0.8), (4.0, 0.7), (5.0, 0.2)];
        let curve = non_increasing(&points);
        // 0.1, 0.8 and 0.7 pool into their mean; a running minimum would give 0.1 from 2 on.
        let want = [0.9, 1.6 / 3.0, 1.6 / 3.0, 1.6 / 3.0, 0.2];
        for ((x, y), (wx, w)) in curve.iter().zip(points.iter().map(|p| p.0).zip(want)) {
            assert_eq!(*x, wx);
            assert!((y - w).abs() < 1e-12, "{curve:?}");
        }
        // A curve that already falls is its own answer.
        let falling = [(1.0, 1.0), (2.0, 0.84), (4.0, 0.5), (8.0, 0.0)];
        assert_eq!(non_increasing(&falling), falling.to_vec());
        assert!(non_increasing(&[]).is_empty());
    }

    proptest::proptest! {
        /// Pooling keeps every point's distance and the warmth's sum, and leaves a curve that
        /// never rises, within the points' own range.
        #[test]
        fn the_pooled_curve_never_rises_and_keeps_the_sum(
            ys in proptest::collection::vec(0.0f64..=1.0, 0..12),
        ) {
            let points: Vec<(f64, f64)> =
                ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect();
            let curve = non_increasing(&points);
            proptest::prop_assert_eq!(curve.len(), points.len());
            let (lo, hi) = ys.iter().fold((1.0f64, 0.0f64), |(l, h), &y| (l.min(y), h.max(y)));
            for (pair, (c, p)) in curve.windows(2).zip(curve.iter().zip(&points)) {
                proptest::prop_assert!(pair[1].1 <= pair[0].1 + 1e-12, "{:?}", curve);
                proptest::prop_assert_eq!(c.0, p.0);
            }
            for c in &curve {
                proptest::prop_assert!(c.1 >= lo - 1e-12 && c.1 <= hi + 1e-12);
            }
            let sum = |v: &[(f64, f64)]| v.iter().map(|p| p.1).sum::<f64>();
            proptest::prop_assert!((sum(&curve) - sum(&points)).abs() < 1e-9);
        }
    }

    #[test]
    fn a_sample_is_timed_on_the_calls_that_found_the_machine_quiet() {
        // Three calls after fast flushes, two after slow ones: the slow ones do not count.
        let calls = [
            (1.0, 10.0),
            (5.0, 50.0),
            (1.1, 12.0),
            (5.0, 60.0),
            (0.9, 11.0),
        ];
        assert_eq!(quiet_median(&calls, 2.0), 11.0);
        // Fewer than three quiet calls: the third with the fastest flushes (2 of 6).
        let calls = [
            (3.0, 30.0),
            (1.0, 14.0),
            (4.0, 40.0),
            (2.0, 20.0),
            (5.0, 50.0),
            (6.0, 60.0),
        ];
        assert_eq!(quiet_median(&calls, 0.5), 20.0);
        // No limit: every call counts.
        assert_eq!(quiet_median(&calls, f64::INFINITY), 40.0);
    }

    #[test]
    fn the_flush_meter_calls_quiet_what_is_near_its_fastest_twentieth() {
        let mut meter = FlushMeter::new();
        for _ in 0..METER_WARM_UP - 1 {
            meter.record(1e6);
        }
        assert_eq!(meter.quiet_limit(), f64::INFINITY, "not warmed up yet");
        // 95 flushes of 1 ms and 5 of 0.5 ms: the 5th percentile is 0.5 ms (its bucket's upper
        // edge, 1% wide), and quiet is up to 1.2 times that.
        let mut meter = FlushMeter::new();
        for i in 0..100 {
            meter.record(if i % 20 == 0 { 5e5 } else { 1e6 });
        }
        let limit = meter.quiet_limit();
        assert!(limit > 5e5 * QUIET && limit < 5e5 * QUIET * 1.02, "{limit}");
        // A slow spell of 100 flushes at 2 ms: the reference is still the 5th percentile of
        // all 200, the 10th fastest (1 ms), not the spell's.
        for _ in 0..100 {
            meter.record(2e6);
        }
        assert!(meter.quiet_limit() > 1e6 && meter.quiet_limit() < 1e6 * QUIET * 1.02);
        // Out-of-range times fall into the first and last buckets, never out of bounds.
        meter.record(0.0);
        meter.record(f64::MAX);
        assert_eq!(meter.count, 202);
    }

    #[test]
    fn each_sample_keeps_its_fastest_pass() -> candle_core::Result<()> {
        let passes = [[5.0, 1.5, 9.0], [3.0, 4.0, 8.0], [6.0, 2.0, 7.5]];
        let mut pass = 0;
        let told = std::sync::Mutex::new(Vec::new());
        let tell = |what: &str| told.lock().unwrap().push(what.to_string());
        let kept = fastest(3, &tell, |progress| {
            progress("the grid");
            let mut samples = Samples::default();
            for (i, &y) in passes[pass].iter().enumerate() {
                samples.push(&[i as f64], y);
            }
            pass += 1;
            Ok(BTreeMap::from([(Kernel::Adam, samples)]))
        })?;
        assert_eq!(kept[&Kernel::Adam].y, [3.0, 1.5, 7.5]);
        // Slowest over fastest, less 1: 6/3, 4/1.5, 9/7.5.
        let apart = &kept[&Kernel::Adam].apart;
        for (got, want) in apart.iter().zip([1.0, 4.0 / 1.5 - 1.0, 0.2]) {
            assert!((got - want).abs() < 1e-12, "{apart:?}");
        }
        assert_eq!(apart.len(), 3);
        let again = kept[&Kernel::Adam].clone();
        assert!((median_apart([&again]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(kept[&Kernel::Adam].rows[2], [1.0, 2.0]);
        assert_eq!(
            *told.lock().unwrap(),
            [
                "the grid (pass 1 of 3)",
                "the grid (pass 2 of 3)",
                "the grid (pass 3 of 3)"
            ]
        );
        Ok(())
    }

    #[test]
    fn the_probe_says_how_much_slower_the_machine_is() {
        let then = MachineProbe {
            memory_ns: 20,
            compute_ns: 10,
        };
        let now = MachineProbe {
            memory_ns: 30,
            compute_ns: 5,
        };
        assert_eq!(now.slowdown(&then), (1.5, 0.5));
        assert_eq!(
            now.fastest(&then),
            MachineProbe {
                memory_ns: 20,
                compute_ns: 5
            }
        );
    }
}
