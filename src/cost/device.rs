//! Device profiles: fitted cost functions for every kernel the executor runs on one device,
//! thread count and dtype (`pipegnn calibrate --device cpu --out FILE`), so any scenario on that
//! device is predicted from its own shapes.
//!
//! Each [`Kernel`] has a few terms, functions of the shape it runs on (the first is always 1,
//! a call's fixed cost); its time is `sum_i c_i * t_i` with non-negative coefficients fitted
//! to microbenchmarks ([`super::fit`]). Memory is fitted the same way: the bytes a layer's
//! forward keeps for its backward, and the temporaries its forward and its backward allocate
//! beyond that, per layer kind, in terms of rows, edges and widths; the loss's temporaries, and
//! an Adam step's.
//!
//! The file is JSON: `{"format": "pipegnn-device-profile v10", "device", "backend", "threads",
//! "dtype", "machine", "kernels": [{"kernel", "terms", "coefficients", "samples",
//! "median_error", "p90_error", "max_error", "range", "knee", "knee_term", "spill": [{"term",
//! "table", "cache"}]}], "wakeup_ns", "gap_ns", "stash_scale",
//! "workspace_scale", "matrix_buffer_bytes", "probe": {"memory_ns", "compute_ns"} or
//! null, "passes_apart": a number or null (absent: null), "corun_slowdown": a list of numbers
//! of at least 1 (absent or null: not measured), "warm_kernels": a list as `kernels` of the
//! time functions timed warm, "reuse": [{"bytes", "warmth"}] (both absent or null: not
//! measured)}`.
//!
//! The wake-up, the gap and the two scales come from real runs of built-in pipelines (not any
//! user's configuration): a worker's wake-up, its gap between ops, and how much more memory
//! in-flight chunks, and apart from them temporaries, hold in a running pipeline than the
//! layer functions measured alone.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

use super::fit::{Fit, Knee, Spill};

macro_rules! kernels {
    ($($variant:ident => $name:literal, [$($term:literal),*], $doc:literal;)*) => {
        /// A kernel the executor runs, or a layer's or op's composition of them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kernel {
            $(#[doc = $doc] $variant,)*
        }

        impl Kernel {
            /// Every kernel, in a fixed order.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];

            /// The name used in profiles.
            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name,)* }
            }

            /// The names of its terms (after the constant `calls`).
            pub fn terms(self) -> &'static [&'static str] {
                match self { $(Kernel::$variant => &[$($term),*],)* }
            }
        }
    };
}

kernels! {
    DenseForward => "dense_forward", ["m*k+k*n+m*n", "m*k*n", "m*(k8*n8-k*n)"], "`X W`: `(m, k) x (k, n)`; `k8` and `n8` are `k` and `n` rounded up to a multiple of 8, so the last term counts the multiply-adds a vector microkernel spends on padding (a 3- to 7-wide last layer's).";
    DenseGradInput => "dense_grad_input", ["m*k+k*n+m*n", "m*k*n", "m*(k8*n8-k*n)"], "`dY W^T`, the input gradient of `X W`.";
    DenseGradWeight => "dense_grad_weight", ["m*k+k*n+m*n", "m*k*n", "m*(k8*n8-k*n)"], "`X^T dY`, the weight gradient of `X W`.";
    SparseForward => "sparse_forward", ["nnz", "m*n", "nnz*n"], "Sparse input features times a weight: `m` rows, `nnz` non-zeros, `n` outputs.";
    SparseGradWeight => "sparse_grad_weight", ["nnz", "k*n", "nnz*n", "m*n"], "`X^T dY` for sparse `X` of `m` rows and `k` columns: it gathers `nnz` rows of `n` from the `m`-row gradient.";
    Aggregate => "aggregate", ["nnz", "m", "m*w", "nnz*w", "read*w", "nnz*lines"], "The CSR sparse-dense product: `m` output rows, `nnz` edges, width `w`, gathered from a table of `read` rows; `lines` is the cache lines a gathered row spans (`w` rounded up to 16 values, over 16), which a narrow row costs whole.";
    AggregateTranspose => "aggregate_transpose", ["nnz", "m", "m*w", "nnz*w", "out*w", "nnz*lines"], "Its transpose (the backward): `m` rows read, `nnz` edges, width `w`, gathered from the `out` rows' gradient.";
    AttentionForward => "attention_forward", ["nnz", "nnz*h", "m*h*c", "nnz*h*c"], "GAT's edge scores, edge softmax and weighted aggregation, as the executor calls them together: `nnz` edges with self-loops (each edge's endpoints are read once, whatever the heads), `h` heads of `c` channels, `m` rows read.";
    AttentionBackward => "attention_backward", ["nnz", "nnz*h", "m*h*c", "nnz*h*c"], "Their backward.";
    DropoutDense => "dropout_dense", ["elements"], "Inverted dropout on dense rows (masks keyed by vertex).";
    DropoutSparse => "dropout_sparse", ["m+k", "nnz"], "Inverted dropout on sparse input rows: `nnz` values, `m` rows and `k` columns (the transpose is rebuilt).";
    ReluForward => "relu_forward", ["elements"], "ReLU.";
    ReluBackward => "relu_backward", ["elements"], "ReLU's gradient.";
    EluForward => "elu_forward", ["elements"], "ELU.";
    EluBackward => "elu_backward", ["elements"], "ELU's gradient.";
    Elementwise => "elementwise", ["elements"], "A binary elementwise op (bias, sums, the surrogate product).";
    RowCopy => "row_copy", ["elements"], "Copying rows in order (halo rows into a leaf, concatenation).";
    HistoryRead => "history_read", ["rows", "elements"], "GNNPipe's history and gradient buffers (a row per vertex): `rows` rows of `elements` values in all gathered at scattered vertices into a tensor.";
    HistoryWrite => "history_write", ["rows", "elements"], "Rows of a tensor written into such a buffer at scattered vertices.";
    HistoryAdd => "history_add", ["rows", "elements"], "Rows of a tensor added into such a buffer at scattered vertices (a gradient's).";
    Objective => "objective", ["elements"], "A stage's surrogate objective `(out * grad).sum()` over `elements` outputs and its backward (autograd's broadcast of the sum's gradient and the product's two gradients), up to the output's gradient: what a stage but the last runs on top of its layers.";
    Loss => "loss", ["m*classes", "labelled*classes", "labelled>0", "labelled"], "Softmax cross-entropy over the `labelled` of `m` rows, forward and backward; `labelled>0` is 1 when a row is labelled (only then do the selection, the softmax and their backward run); each labelled row is selected, gathered and scattered back, whatever its classes.";
    Adam => "adam", ["tensors", "parameters"], "One Adam step over `tensors` parameter tensors of `parameters` numbers in all (each tensor is a few kernels of its own).";
    HandoffCopy => "handoff_copy", ["bytes"], "The receiver's copy of a hand-off into its stage's input (a leaf of its own), in its forward.";
    GcnForward => "gcn_forward", ["dropout_ns", "kernels_ns", "elements"], "A GCN layer's forward as the executor runs it: its input's dropout's predicted time (the first kernel, on cold data as its microbenchmark), its other kernels' predicted time (they find their operands warm) and the elements it touches (autograd bookkeeping).";
    GcnBackward => "gcn_backward", ["kernels_ns", "gradient_elements", "masked_elements"], "Its backward: its kernels' predicted time, the elements of the gradients autograd builds and sums into, and the elements behind a mask (a dropped input's, whose mask autograd differentiates too, and an activation's).";
    SageForward => "sage_forward", ["dropout_ns", "kernels_ns", "elements"], "A GraphSAGE layer's forward.";
    SageBackward => "sage_backward", ["kernels_ns", "gradient_elements", "masked_elements"], "Its backward.";
    GatForward => "gat_forward", ["dropout_ns", "kernels_ns", "elements", "(nnz+m)*h"], "A GAT layer's forward; its last term counts attention's values per edge (self-loops included) and head.";
    GatBackward => "gat_backward", ["kernels_ns", "gradient_elements", "masked_elements", "(nnz+m)*h"], "Its backward.";
    GcnStash => "gcn_stash_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "Bytes a GCN forward keeps for its backward.";
    SageStash => "sage_stash_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "Bytes a GraphSAGE forward keeps.";
    GatStash => "gat_stash_bytes", ["input", "sparse_input", "read*h*c", "out*b", "nnz*h", "dropout*input", "dropout*sparse_input", "activation*out*b"], "Bytes a GAT forward keeps.";
    GcnTemporaries => "gcn_forward_temporary_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The most a GCN layer's forward allocates beyond what it keeps.";
    SageTemporaries => "sage_forward_temporary_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The same for GraphSAGE.";
    GatTemporaries => "gat_forward_temporary_bytes", ["input", "sparse_input", "read*h*c", "out*b", "nnz*h", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The same for GAT.";
    GcnBackwardTemporaries => "gcn_backward_temporary_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The most a GCN layer's backward allocates beyond its stash and its output's gradient (its parameters' gradients among them).";
    SageBackwardTemporaries => "sage_backward_temporary_bytes", ["input", "sparse_input", "read*b", "out*b", "nnz", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The same for GraphSAGE.";
    GatBackwardTemporaries => "gat_backward_temporary_bytes", ["input", "sparse_input", "read*h*c", "out*b", "nnz*h", "dropout*input", "dropout*sparse_input", "activation*out*b"], "The same for GAT.";
    LossTemporaries => "loss_temporary_bytes", ["m*classes", "labelled*classes"], "What the loss and its backward allocate over `m` rows of `classes` logits, `labelled` of them labelled, the logits' gradient among them.";
    ObjectiveTemporaries => "objective_temporary_bytes", ["elements"], "What a stage's surrogate objective `(out * grad).sum()` and its backward allocate over `elements` outputs, the output's gradient among them.";
    AdamTemporaries => "adam_temporary_bytes", ["largest"], "The most an Adam step allocates: its largest parameter tensor's numbers (tensors are stepped one at a time).";
}

impl Kernel {
    /// Parses a profile's kernel name.
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// For a gather, the terms that may spill past a cache (its gathered rows and their cache
    /// lines: a row that misses costs a trip to memory whatever its width, and a wide one
    /// more lines; the sparse weight gradient's rows and elements) and its table's term,
    /// indices with `calls` as 0 ([`super::fit::fit_with_spill`]).
    pub fn gathers(self) -> Option<(&'static [usize], usize)> {
        match self {
            Kernel::SparseGradWeight => Some((&[1, 3], 4)),
            Kernel::Aggregate | Kernel::AggregateTranspose => Some((&[1, 6], 5)),
            _ => None,
        }
    }

    /// Whether it is a memory function (bytes) rather than a time (ns).
    pub fn is_memory(self) -> bool {
        self.name().ends_with("_bytes")
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a profile was measured on; a profile applies only to a device that matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTarget {
    /// `cpu` or `cuda`.
    pub backend: String,
    /// Compute threads per device.
    pub threads: u32,
    /// Element type.
    pub dtype: String,
}

/// A device profile: fitted cost functions per kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    /// A description of the device (e.g. `cpu: 2 threads`).
    pub device: String,
    /// Backend, threads and dtype.
    pub target: ProfileTarget,
    /// The machine it was measured on (CPU model, cores).
    pub machine: String,
    /// The fitted functions.
    pub kernels: BTreeMap<Kernel, Fit>,
    /// Median time from a hand-off's arrival to the start of the op that waited for it.
    pub wakeup_ns: u64,
    /// Median time a worker spends between two ops that did not wait: its bookkeeping.
    pub gap_ns: u64,
    /// Measured over predicted memory of in-flight chunks (activations at the peak) in the
    /// built-in pipelines: what a running pipeline keeps per chunk beyond what the stash
    /// functions, measured on layers alone, and the inputs a worker builds predict. Applied
    /// to every forward's stash.
    pub stash_scale: f64,
    /// The same for an op's temporaries (workspace at the peak, beyond the matrix buffer).
    /// Applied to every op's.
    pub workspace_scale: f64,
    /// Bytes a worker keeps from its first matrix product on, for the rest of its life: the
    /// packing buffers the CPU's matrix library gives its threads that multiply, each about
    /// the size of a core's L2 cache (0 on a GPU). The executor makes every worker's first
    /// product before its first epoch, so every worker holds them; not scaled.
    pub matrix_buffer_bytes: u64,
    /// What a hand-off between two processes costs, measured at the run that uses it
    /// (`compare --transport mpi`); never read from or written to the file.
    pub between_processes: Option<HandoffCost>,
    /// The machine's state while it was calibrated (absent from profiles written before it
    /// was measured).
    pub probe: Option<MachineProbe>,
    /// How far the machine moved the timed samples between the calibration's passes over its
    /// grid: the median over samples of the slowest pass over the fastest, less 1 (`None`
    /// after one pass, and in profiles written before it was recorded). The fitted functions
    /// carry that noise.
    pub passes_apart: Option<f64>,
    /// How much slower an op runs while `n` ops, each on this profile's thread count, run at
    /// once on the machine's cores, for n = 1, 2, ... (the first 1): the co-run benchmark of
    /// `calibrate`, the machine's memory system and last-level cache shared. Empty where it
    /// was not measured (one core, a GPU, profiles written before it).
    pub corun_slowdown: Vec<f64>,
    /// The time functions again, timed warm: each call right after the one before, its data
    /// still in the caches, as a stage's ops find it when all its data fits them. Empty where
    /// it was not measured (a GPU, profiles written before it).
    pub warm_kernels: BTreeMap<Kernel, Fit>,
    /// How warm a layer finds its data after other data of this many bytes passed through
    /// the caches since its own was last touched: `(bytes, warmth)` by increasing bytes, the
    /// warmth 1 for an op timed warm and 0 cold, measured on whole layers. Empty with
    /// [`DeviceProfile::warm_kernels`].
    pub reuse: Vec<(f64, f64)>,
}

/// Two fixed workloads timed on one thread: how fast the machine was at a moment. On a shared
/// machine its neighbours' load changes both, and a measurement compared against a
/// prediction is only as good as the machine was alike at calibration and at the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineProbe {
    /// Gathering from random places of a 64 MiB array (caches and memory), in ns.
    pub memory_ns: u64,
    /// A small dense product held in cache (the core), in ns.
    pub compute_ns: u64,
}

impl MachineProbe {
    /// Each workload's faster time of the two.
    pub fn fastest(&self, other: &MachineProbe) -> MachineProbe {
        MachineProbe {
            memory_ns: self.memory_ns.min(other.memory_ns),
            compute_ns: self.compute_ns.min(other.compute_ns),
        }
    }

    /// How much slower the machine is now than at `then`: now over then, per workload.
    pub fn slowdown(&self, then: &MachineProbe) -> (f64, f64) {
        (
            self.memory_ns as f64 / then.memory_ns.max(1) as f64,
            self.compute_ns as f64 / then.compute_ns.max(1) as f64,
        )
    }
}

/// What a hand-off costs beyond the links: a fixed time plus a time per byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandoffCost {
    /// Per message.
    pub fixed_ns: u64,
    /// Per byte.
    pub ns_per_byte: f64,
    /// Whether it runs alongside the links rather than after them (between processes with
    /// emulated links: the message travels while the receiver waits out the pacing).
    pub alongside_links: bool,
}

impl DeviceProfile {
    /// What a hand-off costs on this device beyond the links: between processes, what was
    /// measured there; else the receiving worker's wake-up. The receiver's copy of what it
    /// received into a leaf of its own is its forward's, priced there ([`Kernel::HandoffCopy`]).
    pub fn handoff(&self) -> HandoffCost {
        self.between_processes.unwrap_or(HandoffCost {
            fixed_ns: self.wakeup_ns,
            ns_per_byte: 0.0,
            alongside_links: false,
        })
    }
}

/// A kernel evaluated beyond its calibrated range.
#[derive(Debug, Clone, PartialEq)]
pub struct Extrapolation {
    /// The kernel.
    pub kernel: Kernel,
    /// The term past its range.
    pub term: &'static str,
    /// The term's value over the largest calibrated value.
    pub ratio: f64,
}

impl fmt::Display for Extrapolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} extrapolated: {} is {:.1}x the largest calibrated",
            self.kernel, self.term, self.ratio
        )
    }
}

impl DeviceProfile {
    /// The fitted value of `kernel` at `terms` (without the constant, which is prepended),
    /// and the extrapolation if the terms lie past the calibrated range.
    pub fn eval(&self, kernel: Kernel, terms: &[f64]) -> (f64, Option<Extrapolation>) {
        let Some(fit) = self.kernels.get(&kernel) else {
            return (0.0, None);
        };
        let mut all = Vec::with_capacity(terms.len() + 1);
        all.push(1.0);
        all.extend_from_slice(terms);
        let beyond = fit.beyond_range(&all).map(|(i, ratio)| Extrapolation {
            kernel,
            term: kernel.terms()[i - 1],
            ratio,
        });
        (fit.eval(&all).max(0.0), beyond)
    }

    /// How warm an op finds its data when `bytes` of other data passed through the caches
    /// since its own was last touched: [`DeviceProfile::reuse`] interpolated along the
    /// logarithm of the bytes, its first point's warmth below it and its last point's past it
    /// (0 where nothing was measured).
    pub fn warmth(&self, bytes: f64) -> f64 {
        let (Some(&(lo, first)), Some(&(hi, last))) = (self.reuse.first(), self.reuse.last())
        else {
            return 0.0;
        };
        if self.warm_kernels.is_empty() {
            return 0.0;
        }
        if bytes <= lo {
            return first;
        }
        if bytes >= hi {
            return last;
        }
        let at = self
            .reuse
            .windows(2)
            .find(|pair| bytes <= pair[1].0)
            .expect("between the first and the last point");
        let ((b0, h0), (b1, h1)) = (at[0], at[1]);
        let t = (bytes / b0).ln() / (b1 / b0).ln();
        h0 + t * (h1 - h0)
    }

    /// The profile with its time functions timed warm ([`DeviceProfile::warm_kernels`]), the
    /// rest as it is; `None` where they were not measured.
    pub fn warm(&self) -> Option<DeviceProfile> {
        if self.warm_kernels.is_empty() || self.reuse.is_empty() {
            return None;
        }
        let mut warm = self.clone();
        for (kernel, fit) in &self.warm_kernels {
            warm.kernels.insert(*kernel, fit.clone());
        }
        Some(warm)
    }

    /// Refuses a profile measured on another backend, thread count or dtype.
    pub fn check_target(&self, want: &ProfileTarget) -> Result<(), String> {
        let t = &self.target;
        let mut differences = Vec::new();
        if t.backend != want.backend {
            differences.push(format!(
                "backend {} (the device: {})",
                t.backend, want.backend
            ));
        }
        if t.threads != want.threads {
            differences.push(format!(
                "{} thread{} (the device runs {})",
                t.threads,
                if t.threads == 1 { "" } else { "s" },
                want.threads
            ));
        }
        if t.dtype != want.dtype {
            differences.push(format!("dtype {} (the model: {})", t.dtype, want.dtype));
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the profile was measured for another device: {}; calibrate one with `pipegnn calibrate --device {} --threads {}`",
                differences.join(", "),
                want.backend,
                want.threads
            ))
        }
    }

    /// The profile as JSON text.
    pub fn to_json(&self) -> String {
        let doc = json!({
            "format": "pipegnn-device-profile v10",
            "device": self.device,
            "backend": self.target.backend,
            "threads": self.target.threads,
            "dtype": self.target.dtype,
            "machine": self.machine,
            "kernels": kernels_json(&self.kernels),
            "wakeup_ns": self.wakeup_ns,
            "gap_ns": self.gap_ns,
            "stash_scale": self.stash_scale,
            "workspace_scale": self.workspace_scale,
            "matrix_buffer_bytes": self.matrix_buffer_bytes,
            "probe": self.probe.map(|p| json!({"memory_ns": p.memory_ns, "compute_ns": p.compute_ns})),
            "passes_apart": self.passes_apart,
            "corun_slowdown": self.corun_slowdown,
            "warm_kernels": kernels_json(&self.warm_kernels),
            "reuse": self
                .reuse
                .iter()
                .map(|&(bytes, warmth)| json!({"bytes": bytes, "warmth": warmth}))
                .collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&doc).expect("a JSON value always serializes") + "\n"
    }

    /// Parses a profile written by [`DeviceProfile::to_json`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let earlier = match doc["format"].as_str() {
            Some("pipegnn-device-profile v1") => Some(
                "v1: its layer functions were fitted with the sparse products after dropout \
                 priced on all the input's non-zeros, not the kept ones",
            ),
            Some("pipegnn-device-profile v2") => Some(
                "v2: measured while every matrix product also counted the machine's cores, \
                 about 30 us a product, and freed pages went back to the kernel, costs the \
                 executor no longer pays",
            ),
            Some("pipegnn-device-profile v3") => Some(
                "v3: its gathers were priced without the size of the table they read, which \
                 on a chunk of a large graph costs up to three times as much",
            ),
            Some("pipegnn-device-profile v4") => Some(
                "v4: its aggregations were priced without a cost per row, which a chunk \
                 reading many halo rows of a few edges each pays several times over",
            ),
            Some("pipegnn-device-profile v5") => Some(
                "v5: its dense products were priced without the padding of a narrow side, \
                 which a last layer's few classes pay up to twice over",
            ),
            Some("pipegnn-device-profile v6") => Some(
                "v6: its layers' backwards counted the elements of a sparse input, which they \
                 never hold, and neither the gradients behind a mask nor GAT's values per \
                 edge and head",
            ),
            Some("pipegnn-device-profile v7") => Some(
                "v7: its gathers priced a narrow row by its values, not by the cache line it \
                 costs whole, and its loss had no cost per labelled row",
            ),
            Some("pipegnn-device-profile v8") => Some(
                "v8: GNNPipe's history and gradient buffers were priced as copies of rows in \
                 order, where rows at scattered vertices cost two to three times as much",
            ),
            Some("pipegnn-device-profile v9") => Some(
                "v9: its gathers spilled past one cache size picked from the samples, which \
                 calibrations of one machine picked differently, not along a curve of sizes",
            ),
            _ => None,
        };
        if let Some(why) = earlier {
            return Err(format!(
                "a profile of an earlier version ({why}): calibrate again"
            ));
        }
        if doc["format"] != "pipegnn-device-profile v10" {
            return Err(
                "not a device profile (`format` is not \"pipegnn-device-profile v10\"; profiles of one run from earlier versions are no longer read: calibrate again)"
                    .into(),
            );
        }
        let text_of = |key: &str| {
            doc[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` is missing or not text"))
        };
        let (number, float) = (json_u64, json_f64);
        let kernels = parse_kernels(&doc["kernels"], "kernels")?;
        // Memory functions come all together (a CPU calibration) or not at all (a GPU's).
        if kernels.keys().any(|k| k.is_memory()) {
            if let Some(missing) = Kernel::ALL
                .iter()
                .find(|k| k.is_memory() && !kernels.contains_key(k))
            {
                return Err(format!(
                    "no `{missing}` among its memory functions (earlier versions priced \
                     temporaries otherwise): calibrate again"
                ));
            }
        }
        if !doc["memory_scale"].is_null() {
            return Err(
                "`memory_scale` is an earlier version's one scale for chunks and temporaries: \
                 calibrate again"
                    .into(),
            );
        }
        let scale = |field: &str| {
            float(&doc[field], field).and_then(|v| {
                if v > 0.0 {
                    Ok(v)
                } else {
                    Err(format!("`{field}` must be positive"))
                }
            })
        };
        let warm_kernels = match &doc["warm_kernels"] {
            Value::Null => BTreeMap::new(),
            list => parse_kernels(list, "warm_kernels")?,
        };
        if let Some(memory) = warm_kernels.keys().find(|k| k.is_memory()) {
            return Err(format!(
                "`warm_kernels` lists `{memory}`, a memory function: only times are timed warm"
            ));
        }
        let reuse = match &doc["reuse"] {
            Value::Null => Vec::new(),
            Value::Array(points) => {
                let mut reuse: Vec<(f64, f64)> = Vec::with_capacity(points.len());
                for (i, point) in points.iter().enumerate() {
                    let bytes = float(&point["bytes"], &format!("reuse[{i}].bytes"))?;
                    let warmth = float(&point["warmth"], &format!("reuse[{i}].warmth"))?;
                    if !(bytes > 0.0 && (0.0..=1.0).contains(&warmth)) {
                        return Err(format!(
                            "`reuse[{i}]` is {bytes} bytes at warmth {warmth}: bytes are \
                             positive and a warmth lies between 0 (cold) and 1 (warm)"
                        ));
                    }
                    if let Some(&(before, was)) = reuse.last() {
                        if bytes <= before || warmth > was {
                            return Err(format!(
                                "`reuse[{i}]` must lie past the point before it, at no \
                                 greater warmth (more data between two uses leaves less \
                                 in the caches)"
                            ));
                        }
                    }
                    reuse.push((bytes, warmth));
                }
                reuse
            }
            _ => return Err("`reuse` must be a list of {bytes, warmth} points".into()),
        };
        if warm_kernels.is_empty() != reuse.is_empty() {
            return Err(
                "`warm_kernels` and `reuse` come together (a CPU calibration) or not at all".into(),
            );
        }
        let threads = number(&doc["threads"], "threads")?;
        Ok(DeviceProfile {
            device: text_of("device")?,
            target: ProfileTarget {
                backend: text_of("backend")?,
                threads: u32::try_from(threads).map_err(|_| "`threads` is too large")?,
                dtype: text_of("dtype")?,
            },
            machine: text_of("machine")?,
            kernels,
            wakeup_ns: number(&doc["wakeup_ns"], "wakeup_ns")?,
            gap_ns: number(&doc["gap_ns"], "gap_ns")?,
            stash_scale: scale("stash_scale")?,
            workspace_scale: scale("workspace_scale")?,
            matrix_buffer_bytes: match &doc["matrix_buffer_bytes"] {
                Value::Null => {
                    return Err(
                        "no `matrix_buffer_bytes` (a worker's matrix-product buffer, \
                                which earlier versions did not measure): calibrate again"
                            .into(),
                    )
                }
                bytes => number(bytes, "matrix_buffer_bytes")?,
            },
            between_processes: None,
            probe: match &doc["probe"] {
                Value::Null => None,
                p => Some(MachineProbe {
                    memory_ns: number(&p["memory_ns"], "probe.memory_ns")?,
                    compute_ns: number(&p["compute_ns"], "probe.compute_ns")?,
                }),
            },
            passes_apart: match &doc["passes_apart"] {
                Value::Null => None,
                v => match float(v, "passes_apart")? {
                    apart if apart >= 0.0 => Some(apart),
                    _ => return Err("`passes_apart` must not be negative".into()),
                },
            },
            corun_slowdown: match &doc["corun_slowdown"] {
                Value::Null => Vec::new(),
                Value::Array(values) => {
                    let mut slowdown = Vec::with_capacity(values.len());
                    for (i, v) in values.iter().enumerate() {
                        let name = format!("corun_slowdown[{i}]");
                        match float(v, &name)? {
                            x if i == 0 && x != 1.0 => {
                                return Err(format!(
                                    "`{name}` is {x}: one op alone runs at its own speed, 1"
                                ))
                            }
                            x if (1.0..=100.0).contains(&x) => slowdown.push(x),
                            x => {
                                return Err(format!(
                                    "`{name}` is {x}: a slowdown is at least 1 and at most 100"
                                ))
                            }
                        }
                    }
                    slowdown
                }
                _ => return Err("`corun_slowdown` must be a list of numbers".into()),
            },
            warm_kernels,
            reuse,
        })
    }
}

/// A profile's non-negative integer (`what` names it in errors).
fn json_u64(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("`{what}` is not a non-negative integer"))
}

/// A profile's finite number (`what` names it in errors).
fn json_f64(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{what}` is not a finite number"))
}

/// Parses a profile's list of fitted functions (`field` names it in errors).
fn parse_kernels(list: &Value, field: &str) -> Result<BTreeMap<Kernel, Fit>, String> {
    let (number, float) = (json_u64, json_f64);
    let mut kernels = BTreeMap::new();
    for (i, entry) in list
        .as_array()
        .ok_or_else(|| format!("`{field}` is not a list"))?
        .iter()
        .enumerate()
    {
        let at = |key: &str| format!("{field}[{i}].{key}");
        let name = entry["kernel"].as_str().ok_or_else(|| at("kernel"))?;
        let kernel = Kernel::from_name(name)
            .ok_or_else(|| format!("{}: unknown kernel `{name}`", at("kernel")))?;
        let p = kernel.terms().len() + 1;
        // The terms as this version computes them, in its order: a profile fitted on other
        // terms would be read with its coefficients against the wrong ones.
        let mut terms: Vec<String> = vec!["calls".into()];
        terms.extend(kernel.terms().iter().map(|t| t.to_string()));
        let written: Vec<&str> = entry["terms"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).take(p).collect())
            .unwrap_or_default();
        if written != terms {
            return Err(format!(
                    "{}: {name} was fitted on terms {written:?}, this version prices it with {terms:?}: calibrate again",
                    at("terms")
                ));
        }
        let list = |key: &str| -> Result<Vec<f64>, String> {
            let values = entry[key]
                .as_array()
                .ok_or_else(|| format!("{} is not a list", at(key)))?;
            values.iter().map(|v| float(v, &at(key))).collect()
        };
        let term_named = |v: &Value, key: &str| {
            v.as_str()
                .and_then(|t| terms.iter().skip(1).position(|n| n == t))
                .map(|i| i + 1)
                .ok_or_else(|| format!("{} names none of {name}'s terms", at(key)))
        };
        // Profiles written before knees could sit on any term put them on the last.
        let knee = match &entry["knee"] {
            Value::Null => None,
            v => Some(Knee {
                term: match &entry["knee_term"] {
                    Value::Null => p - 1,
                    t => term_named(t, "knee_term")?,
                },
                at: float(v, &at("knee"))?,
            }),
        };
        let spills = entry["spill"]
            .as_array()
            .ok_or_else(|| format!("{} is not a list", at("spill")))?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Ok(Spill {
                    term: term_named(&v["term"], &format!("spill[{i}].term"))?,
                    table: term_named(&v["table"], &format!("spill[{i}].table"))?,
                    cache: float(&v["cache"], &at(&format!("spill[{i}].cache")))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let coefficients = list("coefficients")?;
        let want = p + usize::from(knee.is_some()) + spills.len();
        if coefficients.len() != want || coefficients.iter().any(|&c| c < 0.0) {
            return Err(format!(
                "{} must be {want} non-negative numbers",
                at("coefficients")
            ));
        }
        let range = entry["range"]
            .as_array()
            .ok_or_else(|| format!("{} is not a list", at("range")))?
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([lo, hi]) => Ok((float(lo, &at("range"))?, float(hi, &at("range"))?)),
                _ => Err(format!("{} entries are [low, high] pairs", at("range"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if range.len() != p {
            return Err(format!("{} must have {p} pairs", at("range")));
        }
        kernels.insert(
            kernel,
            Fit {
                coefficients,
                samples: number(&entry["samples"], &at("samples"))? as usize,
                median_error: float(&entry["median_error"], &at("median_error"))?,
                p90_error: float(&entry["p90_error"], &at("p90_error"))?,
                max_error: float(&entry["max_error"], &at("max_error"))?,
                range,
                knee,
                spills,
            },
        );
    }
    Ok(kernels)
}

/// Fitted functions as the profile's JSON lists them.
fn kernels_json(kernels: &BTreeMap<Kernel, Fit>) -> Vec<Value> {
    kernels
        .iter()
        .map(|(k, f)| {
            let mut terms: Vec<String> = vec!["calls".into()];
            terms.extend(k.terms().iter().map(|t| t.to_string()));
            let spill: Vec<Value> = f
                .spills
                .iter()
                .map(|s| json!({"term": terms[s.term], "table": terms[s.table], "cache": s.cache}))
                .collect();
            if let Some(knee) = f.knee {
                terms.push(format!("max(0, {} - knee)", terms[knee.term]));
            }
            for s in &f.spills {
                terms.push(format!(
                    "{} * max(0, 1 - cache / {})",
                    terms[s.term], terms[s.table]
                ));
            }
            json!({
                "kernel": k.name(),
                "terms": terms,
                "knee": f.knee.map(|k| k.at),
                "knee_term": f.knee.map(|k| terms[k.term].clone()),
                "spill": spill,
                "coefficients": f.coefficients,
                "samples": f.samples,
                "median_error": f.median_error,
                "p90_error": f.p90_error,
                "max_error": f.max_error,
                "range": f.range.iter().map(|(lo, hi)| [lo, hi]).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> DeviceProfile {
        let fit = |p: usize| Fit {
            coefficients: (0..p).map(|i| 1.5 + i as f64).collect(),
            samples: 12,
            median_error: 0.01,
            p90_error: 0.03,
            max_error: 0.07,
            range: (0..p).map(|i| (1.0, 10.0 * (i + 1) as f64)).collect(),
            knee: None,
            spills: Vec::new(),
        };
        DeviceProfile {
            device: "cpu: 2 threads".into(),
            target: ProfileTarget {
                backend: "cpu".into(),
                threads: 2,
                dtype: "f32".into(),
            },
            machine: "test machine".into(),
            kernels: Kernel::ALL
                .iter()
                .map(|&k| (k, fit(k.terms().len() + 1)))
                .collect(),
            wakeup_ns: 2500,
            gap_ns: 900,
            stash_scale: 1.25,
            workspace_scale: 2.5,
            matrix_buffer_bytes: 1_048_576,
            probe: Some(MachineProbe {
                memory_ns: 41_000_000,
                compute_ns: 9_000_000,
            }),
            between_processes: None,
            passes_apart: Some(0.0625),
            corun_slowdown: vec![1.0, 1.1875],
            warm_kernels: [Kernel::DenseForward, Kernel::GcnForward]
                .into_iter()
                .map(|k| (k, fit(k.terms().len() + 1)))
                .collect(),
            reuse: vec![(65536.0, 0.875), (1048576.0, 0.5), (25165824.0, 0.0)],
        }
    }

    #[test]
    fn profiles_round_trip() {
        let mut profile = sample();
        let adam = profile.kernels.get_mut(&Kernel::Adam).unwrap();
        adam.knee = Some(Knee { term: 1, at: 4.0 });
        adam.coefficients.push(0.25);
        let aggregate = profile.kernels.get_mut(&Kernel::Aggregate).unwrap();
        aggregate.spills = vec![
            Spill {
                term: 1,
                table: 5,
                cache: 131072.0,
            },
            Spill {
                term: 6,
                table: 5,
                cache: 2097152.0,
            },
        ];
        aggregate.coefficients.extend([0.75, 0.0625]);
        let transpose = profile
            .kernels
            .get_mut(&Kernel::AggregateTranspose)
            .unwrap();
        transpose.knee = Some(Knee { term: 2, at: 9.0 });
        transpose.spills = vec![Spill {
            term: 4,
            table: 5,
            cache: 1024.0,
        }];
        transpose.coefficients.extend([0.5, 0.125]);
        assert_eq!(
            DeviceProfile::parse(&profile.to_json()),
            Ok(profile.clone())
        );
        let mut doc: Value = serde_json::from_str(&profile.to_json()).unwrap();
        for entry in doc["kernels"].as_array_mut().unwrap() {
            if entry["kernel"] == "aggregate" {
                entry["spill"][1]["table"] = json!("read");
            }
        }
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("spill[1].table names none of aggregate's terms"),
            "{err}"
        );
        // Written before knees could sit on any term: on the last one.
        let mut doc: Value = serde_json::from_str(&profile.to_json()).unwrap();
        for entry in doc["kernels"].as_array_mut().unwrap() {
            entry.as_object_mut().unwrap().remove("knee_term");
        }
        let old = DeviceProfile::parse(&doc.to_string()).unwrap();
        assert_eq!(
            old.kernels[&Kernel::Adam].knee,
            Some(Knee { term: 2, at: 4.0 })
        );
        let mut doc: Value = serde_json::from_str(&profile.to_json()).unwrap();
        for entry in doc["kernels"].as_array_mut().unwrap() {
            if entry["kernel"] == "adam" {
                entry["knee_term"] = json!("calls");
            }
        }
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("knee_term names none of adam's terms"),
            "{err}"
        );
        // Written before the machine was probed: read without a probe.
        profile.probe = None;
        let text = profile.to_json();
        assert!(text.contains("\"probe\": null"), "{text}");
        assert_eq!(DeviceProfile::parse(&text), Ok(profile));
        let bad = sample()
            .to_json()
            .replacen("\"memory_ns\": 41000000", "\"memory_ns\": -1", 1);
        assert!(DeviceProfile::parse(&bad)
            .unwrap_err()
            .contains("probe.memory_ns"));
        // Written before the passes' spread was recorded, or after one pass: none.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        doc.as_object_mut().unwrap().remove("passes_apart");
        assert_eq!(
            DeviceProfile::parse(&doc.to_string()).unwrap().passes_apart,
            None
        );
        doc["passes_apart"] = json!(-0.5);
        assert!(DeviceProfile::parse(&doc.to_string())
            .unwrap_err()
            .contains("`passes_apart` must not be negative"));
        // Written before the co-run slowdown was measured: none; a speed-up is refused.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        doc.as_object_mut().unwrap().remove("corun_slowdown");
        assert!(DeviceProfile::parse(&doc.to_string())
            .unwrap()
            .corun_slowdown
            .is_empty());
        doc["corun_slowdown"] = json!([1.0, 0.5]);
        assert!(DeviceProfile::parse(&doc.to_string())
            .unwrap_err()
            .contains("`corun_slowdown[1]` is 0.5"));
        doc["corun_slowdown"] = json!([1.5, 2.0]);
        assert!(DeviceProfile::parse(&doc.to_string())
            .unwrap_err()
            .contains("`corun_slowdown[0]` is 1.5"));
        // A profile fitted on other terms (an earlier version's order) is refused, not misread.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        let gcn = doc["kernels"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|k| k["kernel"] == "gcn_forward")
            .unwrap();
        gcn["terms"] = json!(["calls", "elements", "kernels_ns"]);
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("gcn_forward was fitted on terms") && err.contains("calibrate again"),
            "{err}"
        );
        // Each earlier version is refused with what it lacked: v1's layer functions priced
        // sparse products on every non-zero, v2's products each paid for counting the cores,
        // v3's gathers did not know their table's size, v4's aggregations had no cost per row,
        // v5's dense products did not count their padding, v6's backwards the elements behind
        // a mask, v7's gathers a narrow row's whole cache line and its loss a labelled row,
        // v8's history buffers rows at scattered vertices, v9's gathers one cache size.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        for (version, why) in [
            ("v1", "kept ones"),
            ("v2", "counted the machine's cores"),
            ("v3", "size of the table"),
            ("v4", "cost per row"),
            ("v5", "padding"),
            ("v6", "behind a mask"),
            ("v7", "cache line"),
            ("v8", "scattered vertices"),
            ("v9", "one cache size"),
        ] {
            doc["format"] = json!(format!("pipegnn-device-profile {version}"));
            let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
            assert!(
                err.contains(why) && err.contains("calibrate again"),
                "{err}"
            );
        }
        // One scale for chunks and temporaries (an earlier version's) is refused too.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        doc["memory_scale"] = json!(1.7);
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("memory_scale") && err.contains("calibrate again"),
            "{err}"
        );
        // Memory functions all or none: an earlier version's, without the backward's
        // temporaries, is refused; a GPU's, without any, is not.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        doc["kernels"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["kernel"] != "gat_backward_temporary_bytes");
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("gat_backward_temporary_bytes") && err.contains("calibrate again"),
            "{err}"
        );
        doc["kernels"]
            .as_array_mut()
            .unwrap()
            .retain(|k| !k["kernel"].as_str().unwrap().ends_with("_bytes"));
        assert!(DeviceProfile::parse(&doc.to_string()).is_ok());
        // A profile without the worker's buffer is refused.
        let mut doc: Value = serde_json::from_str(&sample().to_json()).unwrap();
        doc.as_object_mut().unwrap().remove("matrix_buffer_bytes");
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(
            err.contains("matrix_buffer_bytes") && err.contains("calibrate again"),
            "{err}"
        );
        let zero =
            sample()
                .to_json()
                .replacen("\"workspace_scale\": 2.5", "\"workspace_scale\": 0.0", 1);
        assert!(DeviceProfile::parse(&zero)
            .unwrap_err()
            .contains("`workspace_scale` must be positive"));
        assert!(DeviceProfile::parse("{}")
            .unwrap_err()
            .contains("not a device profile"));
        let broken = sample()
            .to_json()
            .replacen("\"dense_forward\"", "\"dense_sideways\"", 1);
        assert!(DeviceProfile::parse(&broken)
            .unwrap_err()
            .contains("unknown kernel `dense_sideways`"));
    }

    /// The warm functions and the reuse curve: read as written, absent from earlier profiles,
    /// and refused where the curve cannot be one (warmer after more data, outside 0 to 1,
    /// without the warm functions it scales).
    #[test]
    fn warm_functions_and_the_reuse_curve_round_trip_and_are_checked() {
        let text = sample().to_json();
        assert_eq!(DeviceProfile::parse(&text), Ok(sample()));
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        doc.as_object_mut().unwrap().remove("warm_kernels");
        doc.as_object_mut().unwrap().remove("reuse");
        let earlier = DeviceProfile::parse(&doc.to_string()).unwrap();
        assert!(earlier.warm_kernels.is_empty() && earlier.reuse.is_empty());
        assert_eq!(earlier.warm(), None);
        assert_eq!(earlier.warmth(1.0), 0.0);
        for (reuse, wrong) in [
            (
                json!([{"bytes": 1e6, "warmth": 0.5}, {"bytes": 2e6, "warmth": 0.75}]),
                "`reuse[1]` must lie past",
            ),
            (
                json!([{"bytes": 2e6, "warmth": 0.5}, {"bytes": 1e6, "warmth": 0.25}]),
                "`reuse[1]` must lie past",
            ),
            (
                json!([{"bytes": 1e6, "warmth": 1.5}]),
                "`reuse[0]` is 1000000 bytes at warmth 1.5",
            ),
            (
                json!([{"bytes": 0.0, "warmth": 0.5}]),
                "`reuse[0]` is 0 bytes",
            ),
            (json!([]), "come together"),
            (json!({"bytes": 1e6}), "`reuse` must be a list"),
        ] {
            let mut doc: Value = serde_json::from_str(&text).unwrap();
            doc["reuse"] = reuse;
            let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
            assert!(err.contains(wrong), "{err}");
        }
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        doc["warm_kernels"] = doc["kernels"].clone();
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(err.contains("a memory function"), "{err}");
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        doc["warm_kernels"][0]["kernel"] = json!("dense_sideways");
        let err = DeviceProfile::parse(&doc.to_string()).unwrap_err();
        assert!(err.contains("warm_kernels[0].kernel"), "{err}");
    }

    /// Warmth follows the curve along the logarithm of the bytes: its first point's below it,
    /// its last point's past it, and in between never warmer after more data.
    #[test]
    fn warmth_interpolates_the_reuse_curve_along_log_bytes() {
        let profile = sample();
        // (64 KiB, 0.875), (1 MiB, 0.5), (24 MiB, 0).
        assert_eq!(profile.warmth(1.0), 0.875);
        assert_eq!(profile.warmth(65536.0), 0.875);
        assert_eq!(profile.warmth(1048576.0), 0.5);
        // 256 KiB is halfway from 64 KiB to 1 MiB along log2 (16 to 20).
        assert!((profile.warmth(262144.0) - 0.6875).abs() < 1e-12);
        assert_eq!(profile.warmth(25165824.0), 0.0);
        assert_eq!(profile.warmth(1e12), 0.0);
        let mut last = 1.0;
        for i in 0..200 {
            let h = profile.warmth(1.1f64.powi(i));
            assert!((0.0..=last).contains(&h), "{h} after {last}");
            last = h;
        }
        // The warm twin prices with the warm functions where there are any, else as cold.
        let warm = profile.warm().unwrap();
        assert_eq!(warm.kernels.len(), profile.kernels.len());
        assert_eq!(warm.warm_kernels, profile.warm_kernels);
        let mut without_warm = profile.clone();
        without_warm.warm_kernels.clear();
        assert_eq!(without_warm.warm(), None);
        assert_eq!(without_warm.warmth(1.0), 0.0);
    }

    proptest::proptest! {
        /// For any curve a calibration may write (bytes increasing, warmth between 0 and 1
        /// and never greater after more data): the profile reads it back, and the warmth at
        /// every size lies within the curve's, never grows with the bytes, and passes through
        /// each point.
        #[test]
        fn warmth_never_grows_with_the_bytes_between_uses(
            steps in proptest::collection::vec((1.0f64..8.0, 0.0f64..=1.0), 1..10),
            first in 1.0f64..1e6,
            probes in proptest::collection::vec(0.0f64..40.0, 1..30),
        ) {
            let mut profile = sample();
            let mut bytes = first;
            let mut warmth = 1.0;
            profile.reuse = steps
                .iter()
                .map(|&(factor, keep)| {
                    bytes *= factor.max(1.0 + 1e-9);
                    warmth *= keep;
                    (bytes, warmth)
                })
                .collect();
            // Written and read back, the curve is accepted (its numbers to the last digit or
            // so: JSON's shortest decimal form is read back to the nearest double).
            let read = DeviceProfile::parse(&profile.to_json()).unwrap();
            proptest::prop_assert_eq!(read.reuse.len(), profile.reuse.len());
            for &(b, h) in &profile.reuse {
                proptest::prop_assert!((profile.warmth(b) - h).abs() < 1e-12);
            }
            let mut sizes: Vec<f64> = probes.iter().map(|&e| 2f64.powf(e)).collect();
            sizes.sort_by(f64::total_cmp);
            let (top, bottom) = (profile.reuse[0].1, profile.reuse.last().unwrap().1);
            let mut last = top;
            for b in sizes {
                let h = profile.warmth(b);
                proptest::prop_assert!(h <= last + 1e-12 && h >= bottom - 1e-12, "{} at {}", h, b);
                last = h;
            }
        }
    }

    #[test]
    fn a_profile_of_another_device_is_refused() {
        let profile = sample();
        let mut want = profile.target.clone();
        assert_eq!(profile.check_target(&want), Ok(()));
        want.threads = 1;
        let err = profile.check_target(&want).unwrap_err();
        assert!(err.contains("2 threads (the device runs 1)"), "{err}");
        want.backend = "cuda".into();
        let err = profile.check_target(&want).unwrap_err();
        assert!(err.contains("backend cpu (the device: cuda)"), "{err}");
    }

    #[test]
    fn evaluation_flags_extrapolation() {
        let mut profile = sample();
        let (ns, beyond) = profile.eval(Kernel::DropoutDense, &[5.0]);
        assert_eq!(ns, 1.5 + 2.5 * 5.0);
        let dropout = profile.kernels.get_mut(&Kernel::DropoutDense).unwrap();
        dropout.knee = Some(Knee { term: 1, at: 4.0 });
        dropout.coefficients.push(0.5);
        assert_eq!(
            profile.eval(Kernel::DropoutDense, &[5.0]).0,
            1.5 + 2.5 * 5.0 + 0.5
        );
        assert_eq!(beyond, None);
        let (_, beyond) = profile.eval(Kernel::DropoutDense, &[100.0]);
        let beyond = beyond.unwrap();
        assert_eq!(beyond.term, "elements");
        assert!((beyond.ratio - 5.0).abs() < 1e-9);
        assert!(beyond.to_string().contains("dropout_dense extrapolated"));
    }
}
