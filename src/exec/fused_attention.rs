//! GAT's attention as one fused CPU op, the CPU path of [`super::attention::gat_attention`]: per
//! destination row, the edge scores `LeakyReLU(<x_j, a_src> + <x_i, a_dst>)` per head, their
//! softmax, attention dropout drawn in place, and the weighted sum of the sources (the heads
//! averaged for `concat: false`), in one pass over the row's edges. Its backward computes the
//! gradients of `x`, `a_src` and `a_dst` in one pass over the rows, one over the transposed
//! pattern and a small reduction.
//!
//! Composed of candle ops, every intermediate (scores, coefficients, dropped coefficients, the
//! per-head halves of the scores) is a tensor, and autograd gives each a gradient of its own: a
//! zeroed buffer plus an addition. Fused, none of them is a tensor; the forward keeps for the
//! backward only the coefficients before and after dropout and the score halves, and the
//! backward re-derives the LeakyReLU's side from the halves. Every number is computed by one
//! thread in a fixed order, so results do not depend on the thread count.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::attention::{input, threads, EdgePattern, Pattern};
use super::dropout::EdgeDropout;
use super::sparse::blocks;

/// Heads and channels of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    heads: usize,
    channels: usize,
}

impl Dims {
    /// Numbers per projected row: `heads * channels`.
    fn width(self) -> usize {
        self.heads * self.channels
    }
}

/// What the forward leaves for the backward.
#[derive(Debug)]
struct Saved {
    /// `<x_j, a_src[h]>` per read row and head.
    s_src: Vec<f32>,
    /// `<x_i, a_dst[h]>` per destination row and head.
    s_dst: Vec<f32>,
    /// The softmax coefficients, `nnz x heads`.
    alpha: Vec<f32>,
    /// With dropout, the coefficients after it (zero where dropped).
    kept: Option<Vec<f32>>,
    /// The attention vectors' values.
    a_src: Vec<f32>,
    /// See `a_src`.
    a_dst: Vec<f32>,
}

/// The op: `(x, a_src, a_dst) -> out`.
struct FusedAttention {
    pattern: EdgePattern,
    dims: Dims,
    slope: f32,
    average: bool,
    /// Attention dropout and each read row's vertex.
    dropout: Option<(EdgeDropout, Vec<u32>)>,
    /// Set by the forward; shared by every backward through this op.
    saved: Mutex<Option<Arc<Saved>>>,
}

/// The fused attention over `x` (`read x heads * channels`, f32, already checked against the
/// pattern by the caller): `(out, heads * channels)`, or `(out, channels)` when `average`.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    pattern: &EdgePattern,
    x: &Tensor,
    att_src: &Tensor,
    att_dst: &Tensor,
    (heads, channels): (usize, usize),
    slope: f32,
    average: bool,
    dropout: Option<(EdgeDropout, Vec<u32>)>,
) -> Result<Tensor> {
    let op = FusedAttention {
        pattern: pattern.clone(),
        dims: Dims { heads, channels },
        slope,
        average,
        dropout,
        saved: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&att_src.contiguous()?, &att_dst.contiguous()?, op)
}

/// `<x_r[h], att[h]>` for the first `rows` rows of `x` and every head.
fn head_dots(x: &[f32], att: &[f32], rows: usize, dims: Dims) -> Vec<f32> {
    let mut out = vec![0f32; rows * dims.heads];
    for (o, row) in out
        .chunks_exact_mut(dims.heads)
        .zip(x.chunks_exact(dims.width()))
    {
        for ((o, xh), ah) in o
            .iter_mut()
            .zip(row.chunks_exact(dims.channels))
            .zip(att.chunks_exact(dims.channels))
        {
            *o = dot(xh, ah);
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `out += a * v`.
fn axpy(out: &mut [f32], a: f32, v: &[f32]) {
    for (o, v) in out.iter_mut().zip(v) {
        *o += a * v;
    }
}

/// `data` cut into the blocks `bounds` delimits, block rows `a..b` owning
/// `data[start(a)..start(b)]`.
fn split<'a>(
    mut data: &'a mut [f32],
    bounds: &[usize],
    start: impl Fn(usize) -> usize,
) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(bounds.len().saturating_sub(1));
    for pair in bounds.windows(2) {
        let (mine, rest) = std::mem::take(&mut data).split_at_mut(start(pair[1]) - start(pair[0]));
        parts.push(mine);
        data = rest;
    }
    parts
}

/// Runs `body` on every item, each a task of the calling thread's rayon pool when there are
/// several.
fn each<T: Send>(items: Vec<T>, body: impl Fn(T) + Sync) {
    if items.len() <= 1 {
        items.into_iter().for_each(&body);
        return;
    }
    let body = &body;
    rayon::scope(|scope| {
        for item in items {
            scope.spawn(move |_| body(item));
        }
    });
}

impl FusedAttention {
    fn out_width(&self) -> usize {
        if self.average {
            self.dims.channels
        } else {
            self.dims.width()
        }
    }

    /// The output and what the backward needs, rows split over `threads`.
    fn forward(
        &self,
        x: &[f32],
        a_src: &[f32],
        a_dst: &[f32],
        threads: usize,
    ) -> (Vec<f32>, Saved) {
        let p = self.pattern.csr();
        let (h, w) = (self.dims.heads, self.dims.width());
        let nnz = p.indices.len();
        let s_src = head_dots(x, a_src, p.cols, self.dims);
        let s_dst = head_dots(x, a_dst, p.rows, self.dims);
        let mut alpha = vec![0f32; nnz * h];
        let mut kept = self.dropout.as_ref().map(|_| vec![0f32; nnz * h]);
        let out_w = self.out_width();
        let mut out = vec![0f32; p.rows * out_w];
        let bounds = blocks(&p.offsets, nnz * w, threads);
        let edge_start = |r: usize| p.offsets[r] * h;
        let alphas = split(&mut alpha, &bounds, edge_start);
        let mut kepts: Vec<Option<&mut [f32]>> = match kept.as_mut() {
            Some(k) => split(k, &bounds, edge_start)
                .into_iter()
                .map(Some)
                .collect(),
            None => (1..bounds.len()).map(|_| None).collect(),
        };
        let outs = split(&mut out, &bounds, |r| r * out_w);
        let items: Vec<_> = bounds
            .windows(2)
            .zip(alphas)
            .zip(kepts.drain(..))
            .zip(outs)
            .map(|(((b, a), k), o)| (b[0], b[1], a, k, o))
            .collect();
        each(items, |(first, end, alpha, kept, out)| {
            let halves = (&s_src[..], &s_dst[..]);
            shaped!(
                self,
                forward_rows(p, (first, end), x, halves, alpha, kept, out)
            );
        });
        let saved = Saved {
            s_src,
            s_dst,
            alpha,
            kept,
            a_src: a_src.to_vec(),
            a_dst: a_dst.to_vec(),
        };
        (out, saved)
    }

    /// Rows `first..end`: their coefficients into `alpha` (and `kept`), their outputs into
    /// `out`, each slice starting at the block's first row. `H` and `C` fix the heads and
    /// channels at compile time where they are not zero (see [`shaped`]).
    #[allow(clippy::too_many_arguments)]
    fn forward_rows<const H: usize, const C: usize>(
        &self,
        p: &Pattern,
        (first, end): (usize, usize),
        x: &[f32],
        (s_src, s_dst): (&[f32], &[f32]),
        alpha: &mut [f32],
        mut kept: Option<&mut [f32]>,
        out: &mut [f32],
    ) {
        let (h, c) = self.shape::<H, C>();
        let w = h * c;
        let out_w = self.out_width();
        let base = p.offsets[first];
        let mut max = vec![0f32; h];
        let mut sum = vec![0f32; h];
        let (max, sum) = (&mut max[..h], &mut sum[..h]);
        let inv_heads = 1.0 / h as f32;
        let mut acc = vec![0f32; out_w];
        for row in first..end {
            let (lo, hi) = (p.offsets[row], p.offsets[row + 1]);
            let sources = &p.indices[lo..hi];
            let a = &mut alpha[(lo - base) * h..(hi - base) * h];
            let dst = &s_dst[row * h..][..h];
            max.fill(f32::NEG_INFINITY);
            for (a, &j) in a.chunks_exact_mut(h).zip(sources) {
                let (a, src) = (&mut a[..h], &s_src[j as usize * h..][..h]);
                for i in 0..h {
                    let e = src[i] + dst[i];
                    a[i] = if e > 0.0 { e } else { self.slope * e };
                    max[i] = max[i].max(a[i]);
                }
            }
            sum.fill(0.0);
            for a in a.chunks_exact_mut(h) {
                let a = &mut a[..h];
                for i in 0..h {
                    a[i] = exp(a[i] - max[i]);
                    sum[i] += a[i];
                }
            }
            for s in sum.iter_mut() {
                *s = 1.0 / *s;
            }
            for a in a.chunks_exact_mut(h) {
                let a = &mut a[..h];
                for i in 0..h {
                    a[i] *= sum[i];
                }
            }
            let weights: &[f32] = match (kept.as_deref_mut(), &self.dropout) {
                (Some(kept), Some((dropout, vertices))) => {
                    let k = &mut kept[(lo - base) * h..(hi - base) * h];
                    let row_key = dropout.row_key(vertices[row]);
                    for ((k, a), &j) in k.chunks_exact_mut(h).zip(a.chunks_exact(h)).zip(sources) {
                        let source = vertices[j as usize];
                        for (head, (k, a)) in k.iter_mut().zip(a).enumerate() {
                            *k = a * dropout.scale(row_key, source, head);
                        }
                    }
                    k
                }
                _ => a,
            };
            // Summed in a buffer of this function's own, which the compiler can tell apart
            // from `x` and so vectorise.
            acc.fill(0.0);
            let acc = &mut acc[..out_w];
            for (wk, &j) in weights.chunks_exact(h).zip(sources) {
                let (wk, src) = (&wk[..h], &x[j as usize * w..][..w]);
                for i in 0..h {
                    let (acc, wi) = if self.average {
                        (&mut acc[..c], wk[i] * inv_heads)
                    } else {
                        (&mut acc[i * c..][..c], wk[i])
                    };
                    let src = &src[i * c..][..c];
                    for t in 0..c {
                        acc[t] += wi * src[t];
                    }
                }
            }
            out[(row - first) * out_w..][..out_w].copy_from_slice(acc);
        }
    }

    /// The heads and channels, `H` and `C` where they are not zero.
    fn shape<const H: usize, const C: usize>(&self) -> (usize, usize) {
        (
            if H > 0 { H } else { self.dims.heads },
            if C > 0 { C } else { self.dims.channels },
        )
    }

    /// The gradients of `x`, `a_src` and `a_dst` from the output's gradient `grad`.
    fn backward(
        &self,
        saved: &Saved,
        x: &[f32],
        grad: &[f32],
        threads: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let p = self.pattern.csr();
        let Dims {
            heads: h,
            channels: c,
        } = self.dims;
        let w = self.dims.width();
        let nnz = p.indices.len();
        // The averaged heads' gradient is the output's, a `1 / heads` share each.
        let expanded;
        let grad = if self.average {
            let inv = 1.0 / h as f32;
            expanded = grad
                .chunks_exact(c)
                .flat_map(|g| (0..h).flat_map(move |_| g.iter().map(move |v| v * inv)))
                .collect::<Vec<f32>>();
            &expanded[..]
        } else {
            grad
        };
        // Over the rows: each edge's score gradient `dz` and each destination's `d s_dst`.
        let mut dz = vec![0f32; nnz * h];
        let mut ds_dst = vec![0f32; p.rows * h];
        let bounds = blocks(&p.offsets, nnz * w, threads);
        let dzs = split(&mut dz, &bounds, |r| p.offsets[r] * h);
        let dds = split(&mut ds_dst, &bounds, |r| r * h);
        let items: Vec<_> = bounds
            .windows(2)
            .zip(dzs)
            .zip(dds)
            .map(|((b, z), d)| (b[0], b[1], z, d))
            .collect();
        each(items, |(first, end, dz, ds_dst)| {
            shaped!(
                self,
                score_grads(p, saved, (first, end), x, grad, dz, ds_dst)
            );
        });
        // Over the sources: `dx` from the weighted sum and both score halves, and `d s_src`.
        let mut dx = vec![0f32; p.cols * w];
        let mut ds_src = vec![0f32; p.cols * h];
        let bounds = blocks(&p.t_offsets, nnz * w, threads);
        let dxs = split(&mut dx, &bounds, |r| r * w);
        let dss = split(&mut ds_src, &bounds, |r| r * h);
        let items: Vec<_> = bounds
            .windows(2)
            .zip(dxs)
            .zip(dss)
            .map(|((b, x), s)| (b[0], b[1], x, s))
            .collect();
        each(items, |(first, end, dx, ds_src)| {
            let halves = (grad, &dz[..], &ds_dst[..]);
            shaped!(
                self,
                source_grads(p, saved, (first, end), halves, dx, ds_src)
            );
        });
        // The attention vectors: `d a[h] = sum over rows of ds[r, h] * x[r, h, :]`.
        let reduce = |ds: &[f32], rows: usize| {
            let mut out = vec![0f32; w];
            for (s, xr) in ds.chunks_exact(h).zip(x.chunks_exact(w)).take(rows) {
                for ((o, &s), xh) in out.chunks_exact_mut(c).zip(s).zip(xr.chunks_exact(c)) {
                    axpy(o, s, xh);
                }
            }
            out
        };
        let d_src = reduce(&ds_src, p.cols);
        let d_dst = reduce(&ds_dst, p.rows);
        (dx, d_src, d_dst)
    }

    /// Rows `first..end`: each edge's score gradient (before the LeakyReLU) into `dz` and each
    /// row's sum of them into `ds_dst`, both slices starting at the block's first row.
    #[allow(clippy::too_many_arguments)]
    fn score_grads<const H: usize, const C: usize>(
        &self,
        p: &Pattern,
        saved: &Saved,
        (first, end): (usize, usize),
        x: &[f32],
        grad: &[f32],
        dz: &mut [f32],
        ds_dst: &mut [f32],
    ) {
        let (h, c) = self.shape::<H, C>();
        let w = h * c;
        let base = p.offsets[first];
        let mut d_alpha: Vec<f32> = Vec::new();
        let mut dot_row = vec![0f32; h];
        let dot_row = &mut dot_row[..h];
        let scale = self.dropout.as_ref().map(|(d, _)| d.kept_scale());
        for row in first..end {
            let (lo, hi) = (p.offsets[row], p.offsets[row + 1]);
            let sources = &p.indices[lo..hi];
            let g = &grad[row * w..][..w];
            // The coefficients' gradient: `<g_i[h], x_j[h]>`, through the dropout mask.
            d_alpha.clear();
            d_alpha.resize((hi - lo) * h, 0.0);
            for (d, &j) in d_alpha.chunks_exact_mut(h).zip(sources) {
                let (d, src) = (&mut d[..h], &x[j as usize * w..][..w]);
                for i in 0..h {
                    let (g, s) = (&g[i * c..][..c], &src[i * c..][..c]);
                    let mut v = 0.0;
                    for t in 0..c {
                        v += g[t] * s[t];
                    }
                    d[i] = v;
                }
            }
            if let (Some(kept), Some(scale)) = (&saved.kept, scale) {
                // A coefficient is zero after dropout exactly when it was dropped, or when it is
                // zero itself, where its gradient below is multiplied by zero anyway.
                for (d, &k) in d_alpha.iter_mut().zip(&kept[lo * h..hi * h]) {
                    *d = if k != 0.0 { *d * scale } else { 0.0 };
                }
            }
            let alpha = &saved.alpha[lo * h..hi * h];
            dot_row.fill(0.0);
            for (a, d) in alpha.chunks_exact(h).zip(d_alpha.chunks_exact(h)) {
                let (a, d) = (&a[..h], &d[..h]);
                for i in 0..h {
                    dot_row[i] += a[i] * d[i];
                }
            }
            let dst = &saved.s_dst[row * h..][..h];
            let ds = &mut ds_dst[(row - first) * h..][..h];
            let z = &mut dz[(lo - base) * h..(hi - base) * h];
            for (((z, a), d), &j) in z
                .chunks_exact_mut(h)
                .zip(alpha.chunks_exact(h))
                .zip(d_alpha.chunks_exact(h))
                .zip(sources)
            {
                let (z, a, d) = (&mut z[..h], &a[..h], &d[..h]);
                let src = &saved.s_src[j as usize * h..][..h];
                for i in 0..h {
                    let v = a[i] * (d[i] - dot_row[i]);
                    let v = if src[i] + dst[i] > 0.0 {
                        v
                    } else {
                        self.slope * v
                    };
                    z[i] = v;
                    ds[i] += v;
                }
            }
        }
    }

    /// Source rows `first..end`: their `dx` rows and `d s_src`, each slice starting at the
    /// block's first row.
    #[allow(clippy::too_many_arguments)]
    fn source_grads<const H: usize, const C: usize>(
        &self,
        p: &Pattern,
        saved: &Saved,
        (first, end): (usize, usize),
        (grad, dz, ds_dst): (&[f32], &[f32], &[f32]),
        dx: &mut [f32],
        ds_src: &mut [f32],
    ) {
        let (h, c) = self.shape::<H, C>();
        let w = h * c;
        let weights = saved.kept.as_deref().unwrap_or(&saved.alpha);
        // Summed in buffers of this function's own, which the compiler can tell apart from
        // `grad` and so vectorise.
        let mut acc = vec![0f32; w];
        let mut ds_acc = vec![0f32; h];
        let (acc, ds_acc) = (&mut acc[..w], &mut ds_acc[..h]);
        for col in first..end {
            acc.fill(0.0);
            ds_acc.fill(0.0);
            for t in p.t_offsets[col]..p.t_offsets[col + 1] {
                let (i, k) = (p.t_rows[t] as usize, p.t_edges[t] as usize);
                let (wk, zk, g) = (
                    &weights[k * h..][..h],
                    &dz[k * h..][..h],
                    &grad[i * w..][..w],
                );
                for head in 0..h {
                    let (acc, g) = (&mut acc[head * c..][..c], &g[head * c..][..c]);
                    for t in 0..c {
                        acc[t] += wk[head] * g[t];
                    }
                    ds_acc[head] += zk[head];
                }
            }
            for head in 0..h {
                let acc = &mut acc[head * c..][..c];
                axpy(acc, ds_acc[head], &saved.a_src[head * c..][..c]);
                if col < p.rows {
                    axpy(acc, ds_dst[col * h + head], &saved.a_dst[head * c..][..c]);
                }
            }
            dx[(col - first) * w..][..w].copy_from_slice(acc);
            ds_src[(col - first) * h..][..h].copy_from_slice(ds_acc);
        }
    }
}

/// Calls `$op.$method::<H, C>(args)` with the heads and channels fixed at compile time for the
/// common shapes (8 heads of 8 channels, GAT's hidden layers; one head, its output layer), so
/// the per-head and per-channel loops unroll; zero means "as `dims` says".
macro_rules! shaped {
    ($op:expr, $method:ident ( $($arg:expr),* $(,)? )) => {
        match ($op.dims.heads, $op.dims.channels) {
            (8, 8) => $op.$method::<8, 8>($($arg),*),
            (1, _) => $op.$method::<1, 0>($($arg),*),
            _ => $op.$method::<0, 0>($($arg),*),
        }
    };
}
use shaped;

/// `e^x` for `x <= 0` (softmax arguments, the row's maximum subtracted) to within a few ulp, in
/// straight-line arithmetic the compiler vectorises: `2^n e^r` with `n` the nearest integer to
/// `x / ln 2` and Cephes' polynomial for `e^r`, `|r| <= ln 2 / 2`. Arguments below -87 give
/// `e^-87` (about 1.6e-38) rather than a subnormal or zero; NaN stays NaN.
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "gat-fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = self.pattern.csr();
        let Dims { heads, channels } = self.dims;
        let x = input(self.name(), "x", s1, l1, (p.cols, self.dims.width()))?;
        let a_src = input(self.name(), "att_src", s2, l2, (heads, channels))?;
        let a_dst = input(self.name(), "att_dst", s3, l3, (heads, channels))?;
        let (out, saved) = self.forward(x, a_src, a_dst, threads());
        *self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("gat: a fused attention panicked".into()))? =
            Some(Arc::new(saved));
        Ok((
            CpuStorage::F32(out),
            Shape::from((p.rows, self.out_width())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        att_src: &Tensor,
        att_dst: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("gat: a fused attention panicked".into()))?
            .clone()
            .ok_or_else(|| {
                candle_core::Error::Msg(
                    "gat: the fused attention's backward before its forward".into(),
                )
            })?;
        let p = self.pattern.csr();
        let grad = grad_res.contiguous()?;
        let (dx, d_src, d_dst) = {
            let (xs, xl) = x.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (Storage::Cpu(xs), Storage::Cpu(gs)) = (&*xs, &*gs) else {
                candle_core::bail!("gat: the fused attention runs on the CPU");
            };
            let xv = input(self.name(), "x", xs, xl, (p.cols, self.dims.width()))?;
            let gv = input(
                self.name(),
                "the gradient",
                gs,
                gl,
                (p.rows, self.out_width()),
            )?;
            self.backward(&saved, xv, gv, threads())
        };
        let device = x.device();
        let dims = (self.dims.heads, self.dims.channels);
        let d_x = if x.track_op() {
            Some(Tensor::from_vec(dx, (p.cols, self.dims.width()), device)?)
        } else {
            None
        };
        let d_src = if att_src.track_op() {
            Some(Tensor::from_vec(d_src, dims, device)?)
        } else {
            None
        };
        let d_dst = if att_dst.track_op() {
            Some(Tensor::from_vec(d_dst, dims, device)?)
        } else {
            None
        };
        Ok((d_x, d_src, d_dst))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::exec::attention::{edge_mask, gat_aggregate};
    use crate::exec::sparse::SparseMatrix;
    use crate::graph::rng::Rng;

    fn uniform(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.unit_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    }

    /// An `out x read` pattern: each row its self loop and up to `extra` other sources, row 3
    /// only its self loop and row 5 no edge at all.
    fn pattern(rng: &mut Rng, out: usize, read: usize, extra: u64) -> Result<EdgePattern> {
        let mut offsets = vec![0];
        let mut indices = Vec::new();
        for row in 0..out {
            let mut cols = if row == 5 { vec![] } else { vec![row as u32] };
            if row != 3 && row != 5 {
                for _ in 0..rng.below(extra + 1) {
                    let c = rng.below(read as u64) as u32;
                    if !cols.contains(&c) {
                        cols.push(c);
                    }
                }
            }
            cols.sort_unstable();
            indices.extend(cols);
            offsets.push(indices.len());
        }
        let nnz = indices.len();
        EdgePattern::new(&SparseMatrix::new(
            out,
            read,
            offsets,
            indices,
            vec![1.0; nnz],
        ))
    }

    /// `|a - b| <= 2e-5 * max(|b|, largest |b|)` elementwise.
    fn assert_close(what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let a = a.flatten_all()?.to_vec1::<f32>()?;
        let b = b.flatten_all()?.to_vec1::<f32>()?;
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 2e-5 * y.abs().max(scale);
            assert!(
                (x - y).abs() <= tol,
                "{what}[{i}]: {x} vs {y} (tolerance {tol})"
            );
        }
        Ok(())
    }

    /// The fused op against the composed ops (edge scores, softmax, mask, aggregation, then the
    /// head mean), output and the three gradients.
    fn check(
        seed: u64,
        (heads, channels): (usize, usize),
        average: bool,
        p: Option<f64>,
    ) -> Result<()> {
        let mut rng = Rng::new(seed);
        let (out, read) = (40, 57);
        let pattern = pattern(&mut rng, out, read, 9)?;
        let cpu = &Device::Cpu;
        let width = heads * channels;
        let x = Var::from_vec(uniform(&mut rng, read * width, 2.0), (read, width), cpu)?;
        let att_src = Var::from_vec(uniform(&mut rng, width, 1.0), (heads, channels), cpu)?;
        let att_dst = Var::from_vec(uniform(&mut rng, width, 1.0), (heads, channels), cpu)?;
        let out_w = if average { channels } else { width };
        let weights = Tensor::from_vec(uniform(&mut rng, out * out_w, 1.0), (out, out_w), cpu)?;
        let vertices: Vec<u32> = (0..read as u32).map(|v| v * 7 + 3).collect();
        let dropout = p.map(|p| EdgeDropout::new(p, seed ^ 0xABCD));
        let fused = apply(
            &pattern,
            x.as_tensor(),
            att_src.as_tensor(),
            att_dst.as_tensor(),
            (heads, channels),
            0.2,
            average,
            dropout.map(|d| (d, vertices.clone())),
        )?;
        let mask = dropout
            .map(|d| edge_mask(&pattern, &d, &vertices, heads, cpu))
            .transpose()?;
        let composed = gat_aggregate(
            &pattern,
            x.as_tensor(),
            att_src.as_tensor(),
            att_dst.as_tensor(),
            heads,
            0.2,
            mask.as_ref(),
        )?;
        let composed = if average {
            composed.reshape((out, heads, channels))?.mean(1)?
        } else {
            composed
        };
        assert_close("output", &fused, &composed)?;
        assert_eq!(
            fused
                .narrow(0, 5, 1)?
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?,
            0.0,
            "a row without edges is zero"
        );
        let g_fused = fused.mul(&weights)?.sum_all()?.backward()?;
        let g_composed = composed.mul(&weights)?.sum_all()?.backward()?;
        for (what, var) in [("dx", &x), ("d att_src", &att_src), ("d att_dst", &att_dst)] {
            assert_close(
                what,
                g_fused.get(var.as_tensor()).expect("a fused gradient"),
                g_composed
                    .get(var.as_tensor())
                    .expect("a composed gradient"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn eight_heads_of_eight_match_the_composed_ops() -> Result<()> {
        check(1, (8, 8), false, None)?;
        check(2, (8, 8), false, Some(0.6))?;
        check(3, (8, 8), true, Some(0.3))
    }

    #[test]
    fn one_head_matches_the_composed_ops() -> Result<()> {
        check(4, (1, 7), true, Some(0.6))?;
        check(5, (1, 5), false, None)
    }

    #[test]
    fn other_shapes_match_the_composed_ops() -> Result<()> {
        check(6, (3, 4), false, Some(0.5))?;
        check(7, (2, 16), true, None)
    }

    /// The gradients against central finite differences of the loss, in f64 arithmetic on
    /// top of the op's f32: a check that does not go through the composed ops.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let mut rng = Rng::new(8);
        let (out, read, heads, channels) = (9usize, 12usize, 2usize, 3usize);
        let pattern = pattern(&mut rng, out, read, 4)?;
        let cpu = &Device::Cpu;
        let width = heads * channels;
        let x = uniform(&mut rng, read * width, 1.0);
        let a_src = uniform(&mut rng, width, 1.0);
        let a_dst = uniform(&mut rng, width, 1.0);
        let weights = uniform(&mut rng, out * width, 1.0);
        let vertices: Vec<u32> = (0..read as u32).collect();
        let dropout = Some((EdgeDropout::new(0.3, 5), vertices));
        let loss = |x: &[f32], a_src: &[f32], a_dst: &[f32]| -> Result<f64> {
            let y = apply(
                &pattern,
                &Tensor::from_slice(x, (read, width), cpu)?,
                &Tensor::from_slice(a_src, (heads, channels), cpu)?,
                &Tensor::from_slice(a_dst, (heads, channels), cpu)?,
                (heads, channels),
                0.2,
                false,
                dropout.clone(),
            )?;
            let y = y.flatten_all()?.to_vec1::<f32>()?;
            Ok(y.iter().zip(&weights).map(|(a, b)| f64::from(a * b)).sum())
        };
        let vx = Var::from_slice(&x, (read, width), cpu)?;
        let vs = Var::from_slice(&a_src, (heads, channels), cpu)?;
        let vd = Var::from_slice(&a_dst, (heads, channels), cpu)?;
        let y = apply(
            &pattern,
            vx.as_tensor(),
            vs.as_tensor(),
            vd.as_tensor(),
            (heads, channels),
            0.2,
            false,
            dropout.clone(),
        )?;
        let grads = y
            .mul(&Tensor::from_slice(&weights, (out, width), cpu)?)?
            .sum_all()?
            .backward()?;
        let eps = 1e-3f32;
        let base = loss(&x, &a_src, &a_dst)?;
        let mut kinks = 0;
        for which in 0..3 {
            let var = [&vx, &vs, &vd][which];
            let analytic = grads
                .get(var.as_tensor())
                .expect("a gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (i, &g) in analytic.iter().enumerate() {
                let mut args = [x.clone(), a_src.clone(), a_dst.clone()];
                args[which][i] += eps;
                let up = loss(&args[0], &args[1], &args[2])?;
                args[which][i] -= 2.0 * eps;
                let down = loss(&args[0], &args[1], &args[2])?;
                let h = f64::from(eps);
                let (right, left) = ((up - base) / h, (base - down) / h);
                // A LeakyReLU kink between the two points: the one-sided slopes disagree.
                if (right - left).abs() > 0.05 * right.abs().max(0.1) {
                    kinks += 1;
                    continue;
                }
                let numeric = (up - down) / (2.0 * h);
                assert!(
                    (numeric - f64::from(g)).abs() <= 5e-3 * numeric.abs().max(1.0),
                    "argument {which}[{i}]: finite difference {numeric}, backward {g}"
                );
            }
        }
        assert!(kinks <= 4, "{kinks} arguments sit on a kink");
        Ok(())
    }

    /// Blocks of rows on several threads give the same bits as one thread.
    #[test]
    fn threads_do_not_change_a_bit() -> Result<()> {
        let mut rng = Rng::new(9);
        let (out, read, heads, channels) = (3000usize, 3500usize, 8usize, 8usize);
        let pattern = pattern(&mut rng, out, read, 12)?;
        let width = heads * channels;
        let op = FusedAttention {
            pattern: pattern.clone(),
            dims: Dims { heads, channels },
            slope: 0.2,
            average: false,
            dropout: Some((EdgeDropout::new(0.6, 3), (0..read as u32).collect())),
            saved: Mutex::new(None),
        };
        let p = pattern.csr();
        assert!(blocks(&p.offsets, p.indices.len() * width, 4).len() > 3);
        assert!(blocks(&p.t_offsets, p.indices.len() * width, 4).len() > 3);
        let x = uniform(&mut rng, read * width, 1.0);
        let a_src = uniform(&mut rng, width, 1.0);
        let a_dst = uniform(&mut rng, width, 1.0);
        let grad = uniform(&mut rng, out * width, 1.0);
        let (serial, saved) = op.forward(&x, &a_src, &a_dst, 1);
        let serial_grads = op.backward(&saved, &x, &grad, 1);
        for threads in [2, 3, 4] {
            let (parallel, saved) = op.forward(&x, &a_src, &a_dst, threads);
            assert_eq!(parallel, serial);
            assert_eq!(op.backward(&saved, &x, &grad, threads), serial_grads);
        }
        Ok(())
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) / 10_000.0;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) > 0.0);
    }
}
