//! GAT attention aggregation (Velickovic et al., "Graph Attention Networks", 2018) as candle
//! custom ops with their backward passes, multi-threaded on CPU.
//!
//! A GAT layer scores every edge `(i, j)` of a fixed pattern per head `h`,
//! `e = LeakyReLU(<x_j, a_src> + <x_i, a_dst>)`, normalises the scores with a softmax over each
//! destination row, and sums the sources weighted by the result. Written with candle's generic
//! gather and scatter ops this materialises per-edge copies of the features; here it is a chain
//! of small ops over the edge list that holds `heads` numbers per edge, never `heads x
//! channels`: `EdgeScores` (with the LeakyReLU folded in), `EdgeSoftmax` and `EdgeAggregate`.
//! Their backward passes are custom ops too, the ones over sources walking the transposed
//! pattern with the edge id of each of its entries.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::cuda::DeviceCache;
#[cfg(feature = "cuda")]
use super::cuda::{finish, launch, output, Arg};
use super::dropout::EdgeDropout;
#[cfg(test)]
use super::sparse::SERIAL_WORK;
use super::sparse::{blocks, run_blocks, SparseMatrix};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// A sparsity pattern in compressed sparse rows, with its transpose.
#[derive(Debug, PartialEq)]
pub(super) struct Pattern {
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// Row `i`'s edges are `offsets[i]..offsets[i + 1]`.
    pub(super) offsets: Vec<usize>,
    /// The source (column) of each edge.
    pub(super) indices: Vec<u32>,
    /// Column `j`'s entries in the transpose are `t_offsets[j]..t_offsets[j + 1]`.
    pub(super) t_offsets: Vec<usize>,
    /// The destination row of each transposed entry.
    pub(super) t_rows: Vec<u32>,
    /// The edge id (position in `indices`) of each transposed entry.
    pub(super) t_edges: Vec<u32>,
    /// The arrays on each GPU that used it.
    gpu: DeviceCache,
}

/// A [`Pattern`]'s arrays on one GPU.
#[cfg(feature = "cuda")]
struct GpuPattern {
    offsets: CudaSlice<u64>,
    indices: CudaSlice<u32>,
    t_offsets: CudaSlice<u64>,
    t_rows: CudaSlice<u32>,
    t_edges: CudaSlice<u32>,
}

#[cfg(feature = "cuda")]
impl Pattern {
    /// This GPU's copy of the arrays.
    fn on(&self, device: &candle_core::CudaDevice) -> Result<Arc<GpuPattern>> {
        use super::cuda::upload;
        let wide = |v: &[usize]| v.iter().map(|&o| o as u64).collect::<Vec<u64>>();
        self.gpu.get(device, || {
            Ok(GpuPattern {
                offsets: upload(device, &wide(&self.offsets))?,
                indices: upload(device, &self.indices)?,
                t_offsets: upload(device, &wide(&self.t_offsets))?,
                t_rows: upload(device, &self.t_rows)?,
                t_edges: upload(device, &self.t_edges)?,
            })
        })
    }
}

/// The edges a GAT layer attends over: a fixed `rows x cols` pattern (destination rows by source
/// rows), its transpose, and the edge id of each transposed entry. Cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePattern(Arc<Pattern>);

impl EdgePattern {
    /// The pattern of `matrix`, its values ignored.
    ///
    /// Fails if the matrix has more than `u32::MAX` rows or non-zeros, which the transposed
    /// index arrays cannot address.
    pub fn new(matrix: &SparseMatrix) -> Result<EdgePattern> {
        let (rows, cols) = (matrix.rows(), matrix.cols());
        let offsets = matrix.offsets().to_vec();
        let indices = matrix.indices().to_vec();
        let nnz = indices.len();
        if u32::try_from(rows).is_err() || u32::try_from(nnz).is_err() {
            candle_core::bail!(
                "gat: an edge pattern holds at most {} rows and edges, this one has {rows} rows \
                 and {nnz} edges",
                u32::MAX
            );
        }
        let mut t_offsets = vec![0usize; cols + 1];
        for &c in &indices {
            t_offsets[c as usize + 1] += 1;
        }
        for j in 0..cols {
            t_offsets[j + 1] += t_offsets[j];
        }
        let mut next = t_offsets.clone();
        let mut t_rows = vec![0u32; nnz];
        let mut t_edges = vec![0u32; nnz];
        for row in 0..rows {
            let (lo, hi) = (offsets[row], offsets[row + 1]);
            for (k, &col) in (lo..hi).zip(&indices[lo..hi]) {
                let col = col as usize;
                // Both fit: checked against u32::MAX above.
                t_rows[next[col]] = row as u32;
                t_edges[next[col]] = k as u32;
                next[col] += 1;
            }
        }
        Ok(EdgePattern(Arc::new(Pattern {
            rows,
            cols,
            offsets,
            indices,
            t_offsets,
            t_rows,
            t_edges,
            gpu: DeviceCache::default(),
        })))
    }

    /// The arrays.
    pub(super) fn csr(&self) -> &Pattern {
        &self.0
    }

    /// Destination rows.
    pub fn rows(&self) -> usize {
        self.0.rows
    }

    /// Source rows (columns).
    pub fn cols(&self) -> usize {
        self.0.cols
    }

    /// Edges.
    pub fn nnz(&self) -> usize {
        self.0.indices.len()
    }

    /// Bytes of the index arrays, for memory accounting.
    pub fn bytes(&self) -> u64 {
        let p = &self.0;
        let words = std::mem::size_of::<usize>() * (p.offsets.len() + p.t_offsets.len());
        let ids = std::mem::size_of::<u32>() * (p.indices.len() + p.t_rows.len() + p.t_edges.len());
        (words + ids) as u64
    }
}

/// A GAT layer's attention: [`gat_aggregate`] with the heads averaged when `average` (GAT's
/// `concat: false`), and attention dropout drawn per edge from `dropout`, whose slice holds the
/// vertex of each read row (destinations are the first read rows).
///
/// On the CPU this is one fused op ([`super::fused_attention`]) that keeps a few numbers per edge
/// for its backward and computes every gradient in two passes over the edges; elsewhere it
/// composes [`gat_aggregate`] with a mask tensor, the same function.
#[allow(clippy::too_many_arguments)]
pub fn gat_attention(
    pattern: &EdgePattern,
    x: &Tensor,
    att_src: &Tensor,
    att_dst: &Tensor,
    (heads, channels): (usize, usize),
    negative_slope: f64,
    average: bool,
    dropout: Option<(&EdgeDropout, &[u32])>,
) -> Result<Tensor> {
    let found = check_inputs(pattern, x, att_src, att_dst, heads, negative_slope)?;
    if found != channels {
        candle_core::bail!("gat: x holds {found} channels per head, the layer {channels}");
    }
    if let Some((_, vertices)) = dropout {
        if vertices.len() < pattern.cols() {
            candle_core::bail!(
                "gat: attention dropout needs a vertex per read row, {} for {} rows",
                vertices.len(),
                pattern.cols()
            );
        }
    }
    if x.device().is_cpu() {
        return super::fused_attention::apply(
            pattern,
            x,
            att_src,
            att_dst,
            (heads, channels),
            negative_slope as f32,
            average,
            dropout.map(|(d, v)| (*d, v[..pattern.cols()].to_vec())),
        );
    }
    let mask = dropout
        .map(|(d, vertices)| edge_mask(pattern, d, vertices, heads, x.device()))
        .transpose()?;
    let out = gat_aggregate(
        pattern,
        x,
        att_src,
        att_dst,
        heads,
        negative_slope,
        mask.as_ref(),
    )?;
    if average {
        out.reshape((pattern.rows(), heads, channels))?.mean(1)
    } else {
        Ok(out)
    }
}

/// The attention-dropout factors of every edge and head, `(nnz, heads)`, as the fused op draws
/// them.
pub(super) fn edge_mask(
    pattern: &EdgePattern,
    dropout: &EdgeDropout,
    vertices: &[u32],
    heads: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let p = &pattern.0;
    let mut mask = Vec::with_capacity(p.indices.len() * heads);
    for row in 0..p.rows {
        let row_key = dropout.row_key(vertices[row]);
        for &j in &p.indices[p.offsets[row]..p.offsets[row + 1]] {
            let source = vertices[j as usize];
            mask.extend((0..heads).map(|h| dropout.scale(row_key, source, h)));
        }
    }
    Tensor::from_vec(mask, (p.indices.len(), heads), device)
}

/// Checks [`gat_aggregate`]'s arguments; returns the channels per head.
fn check_inputs(
    pattern: &EdgePattern,
    x: &Tensor,
    att_src: &Tensor,
    att_dst: &Tensor,
    heads: usize,
    negative_slope: f64,
) -> Result<usize> {
    if heads == 0 {
        candle_core::bail!("gat: heads must be at least 1");
    }
    if !negative_slope.is_finite() || negative_slope < 0.0 {
        candle_core::bail!(
            "gat: the LeakyReLU slope must be a finite non-negative number, not {negative_slope}"
        );
    }
    for (what, t) in [("x", x), ("att_src", att_src), ("att_dst", att_dst)] {
        if t.dtype() != DType::F32 {
            candle_core::bail!("gat works on f32 tensors, {what} is {:?}", t.dtype());
        }
    }
    let (out, read) = (pattern.rows(), pattern.cols());
    let Ok((x_rows, width)) = x.dims2() else {
        candle_core::bail!(
            "gat: x must be (read rows, heads * channels), not {:?}",
            x.dims()
        );
    };
    if x_rows != read {
        candle_core::bail!("gat: the edge pattern reads {read} rows but x has {x_rows}");
    }
    if out > read {
        candle_core::bail!(
            "gat: the edge pattern has {out} destination rows but reads only {read}; the \
             destinations must be the first read rows"
        );
    }
    if width == 0 || width % heads != 0 {
        candle_core::bail!("gat: x's width {width} is not a positive multiple of {heads} heads");
    }
    let channels = width / heads;
    for (what, t) in [("att_src", att_src), ("att_dst", att_dst)] {
        if t.dims() != [heads, channels] {
            candle_core::bail!(
                "gat: {what} must be ({heads}, {channels}) for {heads} heads of {channels} \
                 channels, not {:?}",
                t.dims()
            );
        }
    }
    Ok(channels)
}

/// GAT aggregation over a fixed sparsity pattern.
///
/// - `pattern`: `out x read`, one entry per (destination row `i`, source row `j`) edge, self
///   loops included. The first `out` read rows are the output rows themselves (read rows are the
///   output rows followed by halo rows), so output row `i` is read row `i`.
/// - `x`: `(read, heads * channels)` projected features (already multiplied by `W`), f32,
///   differentiable.
/// - `att_src`, `att_dst`: `(heads, channels)` attention vectors, differentiable.
/// - `negative_slope`: the LeakyReLU slope (0.2 in the paper); finite and non-negative.
/// - `edge_mask`: an optional `(nnz, heads)` tensor multiplied onto the attention coefficients
///   after the softmax (inverted dropout on attention, built by the caller).
///
/// Returns `(out, heads * channels)`:
/// `out[i, h, :] = sum over edges k = (i, j) of alpha[k, h] * x[j, h, :]`, where `alpha[., h]` is
/// the softmax over row `i` of `LeakyReLU(<x[j, h, :], att_src[h]> + <x[i, h, :], att_dst[h]>)`.
/// A row without edges comes out zero. On the CPU, and on CUDA with `--features cuda`.
pub fn gat_aggregate(
    pattern: &EdgePattern,
    x: &Tensor,
    att_src: &Tensor,
    att_dst: &Tensor,
    heads: usize,
    negative_slope: f64,
    edge_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let channels = check_inputs(pattern, x, att_src, att_dst, heads, negative_slope)?;
    let (out, read) = (pattern.rows(), pattern.cols());
    let x = x.contiguous()?;
    let x3 = x.reshape((read, heads, channels))?;
    let s_src = x3
        .broadcast_mul(&att_src.unsqueeze(0)?)?
        .sum(2)?
        .contiguous()?;
    let s_dst = x3
        .narrow(0, 0, out)?
        .broadcast_mul(&att_dst.unsqueeze(0)?)?
        .sum(2)?
        .contiguous()?;
    let scores = s_src.apply_op2(
        &s_dst,
        EdgeScores {
            pattern: pattern.clone(),
            heads,
            slope: negative_slope as f32,
        },
    )?;
    let mut alpha = scores.apply_op1(EdgeSoftmax {
        pattern: pattern.clone(),
        heads,
    })?;
    if let Some(mask) = edge_mask {
        if mask.dims() != [pattern.nnz(), heads] {
            candle_core::bail!(
                "gat: the edge mask must be ({}, {heads}), one entry per edge and head, not {:?}",
                pattern.nnz(),
                mask.dims()
            );
        }
        alpha = alpha.mul(mask)?.contiguous()?;
    }
    alpha.apply_op2(
        &x,
        EdgeAggregate {
            pattern: pattern.clone(),
            heads,
            channels,
        },
    )
}

/// Which way a segment sum runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Over each destination row's edges.
    Rows,
    /// Over each source row's edges, through the transpose.
    Cols,
}

impl Pattern {
    /// `LeakyReLU(s_src[col[k], h] + s_dst[row[k], h])` for every edge `k` and head `h`.
    fn edge_scores(
        &self,
        s_src: &[f32],
        s_dst: &[f32],
        heads: usize,
        slope: f32,
        threads: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; self.indices.len() * heads];
        let bounds = blocks(&self.offsets, self.indices.len() * heads, threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| self.offsets[r] * heads,
            |first, end, out| {
                let base = self.offsets[first];
                for row in first..end {
                    let dst = &s_dst[row * heads..][..heads];
                    for k in self.offsets[row]..self.offsets[row + 1] {
                        let src = &s_src[self.indices[k] as usize * heads..][..heads];
                        let o = &mut out[(k - base) * heads..][..heads];
                        for ((o, s), d) in o.iter_mut().zip(src).zip(dst) {
                            let e = s + d;
                            *o = if e > 0.0 { e } else { slope * e };
                        }
                    }
                }
            },
        );
        out
    }

    /// The gradient of [`Pattern::edge_scores`] with respect to `s_dst` (`Side::Rows`, one row
    /// of `heads` per destination row) or `s_src` (`Side::Cols`, one per source row), from its
    /// result `res` and the gradient `grad` of that result.
    fn leaky_segment_sum(
        &self,
        res: &[f32],
        grad: &[f32],
        heads: usize,
        slope: f32,
        side: Side,
        threads: usize,
    ) -> Vec<f32> {
        // With a non-negative slope the result is positive exactly where the score is.
        let term = |k: usize, h: usize| {
            let g = grad[k * heads + h];
            if res[k * heads + h] > 0.0 {
                g
            } else {
                slope * g
            }
        };
        let offsets = match side {
            Side::Rows => &self.offsets,
            Side::Cols => &self.t_offsets,
        };
        let segments = offsets.len() - 1;
        let mut out = vec![0f32; segments * heads];
        let bounds = blocks(offsets, self.indices.len() * heads, threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| r * heads,
            |first, end, out| {
                for (seg, o) in (first..end).zip(out.chunks_exact_mut(heads)) {
                    for t in offsets[seg]..offsets[seg + 1] {
                        let k = match side {
                            Side::Rows => t,
                            Side::Cols => self.t_edges[t] as usize,
                        };
                        for (h, o) in o.iter_mut().enumerate() {
                            *o += term(k, h);
                        }
                    }
                }
            },
        );
        out
    }

    /// The softmax of `scores` (`nnz x heads`) over each destination row's edges, per head.
    fn softmax(&self, scores: &[f32], heads: usize, threads: usize) -> Vec<f32> {
        let mut out = vec![0f32; scores.len()];
        let bounds = blocks(&self.offsets, scores.len(), threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| self.offsets[r] * heads,
            |first, end, out| {
                let base = self.offsets[first];
                let mut max = vec![0f32; heads];
                let mut sum = vec![0f32; heads];
                for row in first..end {
                    let (lo, hi) = (self.offsets[row] * heads, self.offsets[row + 1] * heads);
                    let input = &scores[lo..hi];
                    let o = &mut out[lo - base * heads..hi - base * heads];
                    max.fill(f32::NEG_INFINITY);
                    for e in input.chunks_exact(heads) {
                        for (m, &v) in max.iter_mut().zip(e) {
                            *m = m.max(v);
                        }
                    }
                    sum.fill(0.0);
                    for (o, e) in o.chunks_exact_mut(heads).zip(input.chunks_exact(heads)) {
                        for (((o, &v), m), s) in o.iter_mut().zip(e).zip(&max).zip(sum.iter_mut()) {
                            *o = (v - m).exp();
                            *s += *o;
                        }
                    }
                    for s in sum.iter_mut() {
                        *s = 1.0 / *s;
                    }
                    for o in o.chunks_exact_mut(heads) {
                        for (o, s) in o.iter_mut().zip(&sum) {
                            *o *= s;
                        }
                    }
                }
            },
        );
        out
    }

    /// The softmax's backward: `alpha * (grad - sum over the row of alpha * grad)`, per head.
    fn softmax_grad(&self, alpha: &[f32], grad: &[f32], heads: usize, threads: usize) -> Vec<f32> {
        let mut out = vec![0f32; alpha.len()];
        let bounds = blocks(&self.offsets, alpha.len(), threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| self.offsets[r] * heads,
            |first, end, out| {
                let base = self.offsets[first];
                let mut dot = vec![0f32; heads];
                for row in first..end {
                    let (lo, hi) = (self.offsets[row] * heads, self.offsets[row + 1] * heads);
                    let (a, g) = (&alpha[lo..hi], &grad[lo..hi]);
                    let o = &mut out[lo - base * heads..hi - base * heads];
                    dot.fill(0.0);
                    for (a, g) in a.chunks_exact(heads).zip(g.chunks_exact(heads)) {
                        for ((d, a), g) in dot.iter_mut().zip(a).zip(g) {
                            *d += a * g;
                        }
                    }
                    for ((o, a), g) in o
                        .chunks_exact_mut(heads)
                        .zip(a.chunks_exact(heads))
                        .zip(g.chunks_exact(heads))
                    {
                        for (((o, a), g), d) in o.iter_mut().zip(a).zip(g).zip(&dot) {
                            *o = a * (g - d);
                        }
                    }
                }
            },
        );
        out
    }

    /// `out[i, h, :] = sum over edges k = (i, j) of alpha[k, h] * x[j, h, :]`.
    fn aggregate(
        &self,
        alpha: &[f32],
        x: &[f32],
        heads: usize,
        channels: usize,
        threads: usize,
    ) -> Vec<f32> {
        let width = heads * channels;
        let mut out = vec![0f32; self.rows * width];
        let bounds = blocks(&self.offsets, self.indices.len() * width, threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| r * width,
            |first, end, out| {
                for (row, o) in (first..end).zip(out.chunks_exact_mut(width)) {
                    for k in self.offsets[row]..self.offsets[row + 1] {
                        let src = &x[self.indices[k] as usize * width..][..width];
                        let a = &alpha[k * heads..][..heads];
                        axpy_heads(o, a, src, channels);
                    }
                }
            },
        );
        out
    }

    /// The aggregation's gradient with respect to `x`:
    /// `dx[j, h, :] = sum over edges k = (i, j) of alpha[k, h] * grad[i, h, :]`.
    fn aggregate_grad_x(
        &self,
        alpha: &[f32],
        grad: &[f32],
        heads: usize,
        channels: usize,
        threads: usize,
    ) -> Vec<f32> {
        let width = heads * channels;
        let mut out = vec![0f32; self.cols * width];
        let bounds = blocks(&self.t_offsets, self.indices.len() * width, threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| r * width,
            |first, end, out| {
                for (col, o) in (first..end).zip(out.chunks_exact_mut(width)) {
                    for t in self.t_offsets[col]..self.t_offsets[col + 1] {
                        let g = &grad[self.t_rows[t] as usize * width..][..width];
                        let a = &alpha[self.t_edges[t] as usize * heads..][..heads];
                        axpy_heads(o, a, g, channels);
                    }
                }
            },
        );
        out
    }

    /// The aggregation's gradient with respect to `alpha`:
    /// `dalpha[k, h] = <grad[i, h, :], x[j, h, :]>` for each edge `k = (i, j)`.
    fn aggregate_grad_alpha(
        &self,
        x: &[f32],
        grad: &[f32],
        heads: usize,
        channels: usize,
        threads: usize,
    ) -> Vec<f32> {
        let width = heads * channels;
        let mut out = vec![0f32; self.indices.len() * heads];
        let bounds = blocks(&self.offsets, self.indices.len() * width, threads);
        run_blocks(
            &bounds,
            &mut out,
            |r| self.offsets[r] * heads,
            |first, end, out| {
                let base = self.offsets[first];
                for row in first..end {
                    let g = &grad[row * width..][..width];
                    for k in self.offsets[row]..self.offsets[row + 1] {
                        let src = &x[self.indices[k] as usize * width..][..width];
                        let o = &mut out[(k - base) * heads..][..heads];
                        for ((o, g), s) in o
                            .iter_mut()
                            .zip(g.chunks_exact(channels))
                            .zip(src.chunks_exact(channels))
                        {
                            *o = g.iter().zip(s).map(|(g, s)| g * s).sum();
                        }
                    }
                }
            },
        );
        out
    }
}

/// `out[h, :] += a[h] * v[h, :]` for rows of `channels` numbers.
pub(super) fn axpy_heads(out: &mut [f32], a: &[f32], v: &[f32], channels: usize) {
    for ((o, a), v) in out
        .chunks_exact_mut(channels)
        .zip(a)
        .zip(v.chunks_exact(channels))
    {
        for (o, v) in o.iter_mut().zip(v) {
            *o += a * v;
        }
    }
}

/// The contiguous f32 data of a custom op's input, checked to be `(rows, width)`.
pub(super) fn input<'a>(
    op: &str,
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    dims: (usize, usize),
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} works on f32 tensors, {what} is {:?}", storage.dtype());
    };
    let (start, end) = contiguous_range(op, what, layout, dims)?;
    Ok(&data[start..end])
}

/// Where a custom op's input lies in its storage, checked to be a contiguous `(rows, width)`.
pub(super) fn contiguous_range(
    op: &str,
    what: &str,
    layout: &Layout,
    dims: (usize, usize),
) -> Result<(usize, usize)> {
    if layout.shape().dims() != [dims.0, dims.1] {
        candle_core::bail!(
            "{op}: {what} must be {dims:?}, not {:?}",
            layout.shape().dims()
        );
    }
    let Some(range) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous {what}");
    };
    Ok(range)
}

/// The threads a pass may use: as many as the pool the caller runs in.
pub(super) fn threads() -> usize {
    rayon::current_num_threads()
}

/// Edge scores with the LeakyReLU: `(s_src (cols x heads), s_dst (rows x heads)) -> nnz x heads`.
struct EdgeScores {
    pattern: EdgePattern,
    heads: usize,
    slope: f32,
}

impl CustomOp2 for EdgeScores {
    fn name(&self) -> &'static str {
        "gat-edge-scores"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let s_src = input(self.name(), "s_src", s1, l1, (p.cols, self.heads))?;
        let s_dst = input(self.name(), "s_dst", s2, l2, (p.rows, self.heads))?;
        let out = p.edge_scores(s_src, s_dst, self.heads, self.slope, threads());
        Ok((
            CpuStorage::F32(out),
            Shape::from((p.indices.len(), self.heads)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &s1.device;
        let s_src = super::cuda::input(self.name(), "s_src", s1, l1, (p.cols, self.heads))?;
        let s_dst = super::cuda::input(self.name(), "s_dst", s2, l2, (p.rows, self.heads))?;
        let gpu = p.on(device)?;
        let out = output(device, p.indices.len() * self.heads)?;
        launch(
            device,
            "gat_edge_scores",
            p.rows * self.heads,
            &[
                Arg::U64s(&gpu.offsets),
                Arg::U32s(&gpu.indices),
                Arg::View(&s_src),
                Arg::View(&s_dst),
                Arg::Out(&out),
                Arg::Size(p.rows as u64),
                Arg::Size(self.heads as u64),
                Arg::Float(self.slope),
            ],
        )?;
        Ok(finish(
            device,
            out,
            Shape::from((p.indices.len(), self.heads)),
        ))
    }

    fn bwd(
        &self,
        s_src: &Tensor,
        s_dst: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let sum = |side| {
            res.apply_op2_no_bwd(
                &grad,
                &LeakySegmentSum {
                    pattern: self.pattern.clone(),
                    heads: self.heads,
                    slope: self.slope,
                    side,
                },
            )
        };
        let d_src = if s_src.track_op() {
            Some(sum(Side::Cols)?)
        } else {
            None
        };
        let d_dst = if s_dst.track_op() {
            Some(sum(Side::Rows)?)
        } else {
            None
        };
        Ok((d_src, d_dst))
    }
}

/// [`EdgeScores`]'s backward: `(res, grad) -> d s_dst` or `d s_src`.
struct LeakySegmentSum {
    pattern: EdgePattern,
    heads: usize,
    slope: f32,
    side: Side,
}

impl CustomOp2 for LeakySegmentSum {
    fn name(&self) -> &'static str {
        "gat-edge-scores-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let dims = (p.indices.len(), self.heads);
        let res = input(self.name(), "the scores", s1, l1, dims)?;
        let grad = input(self.name(), "their gradient", s2, l2, dims)?;
        let out = p.leaky_segment_sum(res, grad, self.heads, self.slope, self.side, threads());
        let segments = match self.side {
            Side::Rows => p.rows,
            Side::Cols => p.cols,
        };
        Ok((CpuStorage::F32(out), Shape::from((segments, self.heads))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &s1.device;
        let dims = (p.indices.len(), self.heads);
        let res = super::cuda::input(self.name(), "the scores", s1, l1, dims)?;
        let grad = super::cuda::input(self.name(), "their gradient", s2, l2, dims)?;
        let gpu = p.on(device)?;
        let (segments, offsets, edges) = match self.side {
            Side::Rows => (p.rows, &gpu.offsets, Arg::NoU32s),
            Side::Cols => (p.cols, &gpu.t_offsets, Arg::U32s(&gpu.t_edges)),
        };
        let out = output(device, segments * self.heads)?;
        launch(
            device,
            "gat_leaky_segment_sum",
            segments * self.heads,
            &[
                Arg::U64s(offsets),
                edges,
                Arg::View(&res),
                Arg::View(&grad),
                Arg::Out(&out),
                Arg::Size(segments as u64),
                Arg::Size(self.heads as u64),
                Arg::Float(self.slope),
            ],
        )?;
        Ok(finish(device, out, Shape::from((segments, self.heads))))
    }
}

/// The softmax of the edge scores over each destination row: `nnz x heads -> nnz x heads`.
struct EdgeSoftmax {
    pattern: EdgePattern,
    heads: usize,
}

impl CustomOp1 for EdgeSoftmax {
    fn name(&self) -> &'static str {
        "gat-edge-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let dims = (p.indices.len(), self.heads);
        let scores = input(self.name(), "the scores", storage, layout, dims)?;
        let out = p.softmax(scores, self.heads, threads());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &storage.device;
        let dims = (p.indices.len(), self.heads);
        let scores = super::cuda::input(self.name(), "the scores", storage, layout, dims)?;
        let gpu = p.on(device)?;
        let out = output(device, dims.0 * dims.1)?;
        launch(
            device,
            "gat_edge_softmax",
            p.rows * self.heads,
            &[
                Arg::U64s(&gpu.offsets),
                Arg::View(&scores),
                Arg::Out(&out),
                Arg::Size(p.rows as u64),
                Arg::Size(self.heads as u64),
            ],
        )?;
        Ok(finish(device, out, Shape::from(dims)))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &grad,
            &EdgeSoftmaxGrad {
                pattern: self.pattern.clone(),
                heads: self.heads,
            },
        )?))
    }
}

/// [`EdgeSoftmax`]'s backward: `(alpha, grad) -> d scores`.
struct EdgeSoftmaxGrad {
    pattern: EdgePattern,
    heads: usize,
}

impl CustomOp2 for EdgeSoftmaxGrad {
    fn name(&self) -> &'static str {
        "gat-edge-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let dims = (p.indices.len(), self.heads);
        let alpha = input(self.name(), "alpha", s1, l1, dims)?;
        let grad = input(self.name(), "its gradient", s2, l2, dims)?;
        let out = p.softmax_grad(alpha, grad, self.heads, threads());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &s1.device;
        let dims = (p.indices.len(), self.heads);
        let alpha = super::cuda::input(self.name(), "alpha", s1, l1, dims)?;
        let grad = super::cuda::input(self.name(), "its gradient", s2, l2, dims)?;
        let gpu = p.on(device)?;
        let out = output(device, dims.0 * dims.1)?;
        launch(
            device,
            "gat_edge_softmax_grad",
            p.rows * self.heads,
            &[
                Arg::U64s(&gpu.offsets),
                Arg::View(&alpha),
                Arg::View(&grad),
                Arg::Out(&out),
                Arg::Size(p.rows as u64),
                Arg::Size(self.heads as u64),
            ],
        )?;
        Ok(finish(device, out, Shape::from(dims)))
    }
}

/// The weighted sum over each row's edges:
/// `(alpha (nnz x heads), x (cols x heads * channels)) -> rows x heads * channels`.
struct EdgeAggregate {
    pattern: EdgePattern,
    heads: usize,
    channels: usize,
}

/// Which gradient an [`EdgeAggregateGrad`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggregateGrad {
    /// `(alpha, grad) -> dx`.
    X,
    /// `(x, grad) -> dalpha`.
    Alpha,
}

impl CustomOp2 for EdgeAggregate {
    fn name(&self) -> &'static str {
        "gat-edge-aggregate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let width = self.heads * self.channels;
        let alpha = input(self.name(), "alpha", s1, l1, (p.indices.len(), self.heads))?;
        let x = input(self.name(), "x", s2, l2, (p.cols, width))?;
        let out = p.aggregate(alpha, x, self.heads, self.channels, threads());
        Ok((CpuStorage::F32(out), Shape::from((p.rows, width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &s1.device;
        let width = self.heads * self.channels;
        let alpha =
            super::cuda::input(self.name(), "alpha", s1, l1, (p.indices.len(), self.heads))?;
        let x = super::cuda::input(self.name(), "x", s2, l2, (p.cols, width))?;
        let gpu = p.on(device)?;
        let out = output(device, p.rows * width)?;
        launch(
            device,
            "gat_edge_aggregate",
            p.rows * width,
            &[
                Arg::U64s(&gpu.offsets),
                Arg::U32s(&gpu.indices),
                Arg::NoU32s,
                Arg::View(&alpha),
                Arg::View(&x),
                Arg::Out(&out),
                Arg::Size(p.rows as u64),
                Arg::Size(self.heads as u64),
                Arg::Size(self.channels as u64),
            ],
        )?;
        Ok(finish(device, out, Shape::from((p.rows, width))))
    }

    fn bwd(
        &self,
        alpha: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let op = |which| EdgeAggregateGrad {
            pattern: self.pattern.clone(),
            heads: self.heads,
            channels: self.channels,
            which,
        };
        let d_alpha = if alpha.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &op(AggregateGrad::Alpha))?)
        } else {
            None
        };
        let d_x = if x.track_op() {
            Some(alpha.apply_op2_no_bwd(&grad, &op(AggregateGrad::X))?)
        } else {
            None
        };
        Ok((d_alpha, d_x))
    }
}

/// [`EdgeAggregate`]'s backward, one gradient at a time.
struct EdgeAggregateGrad {
    pattern: EdgePattern,
    heads: usize,
    channels: usize,
    which: AggregateGrad,
}

impl CustomOp2 for EdgeAggregateGrad {
    fn name(&self) -> &'static str {
        "gat-edge-aggregate-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = &self.pattern.0;
        let (heads, channels) = (self.heads, self.channels);
        let width = heads * channels;
        let grad = input(self.name(), "the gradient", s2, l2, (p.rows, width))?;
        match self.which {
            AggregateGrad::X => {
                let alpha = input(self.name(), "alpha", s1, l1, (p.indices.len(), heads))?;
                let out = p.aggregate_grad_x(alpha, grad, heads, channels, threads());
                Ok((CpuStorage::F32(out), Shape::from((p.cols, width))))
            }
            AggregateGrad::Alpha => {
                let x = input(self.name(), "x", s1, l1, (p.cols, width))?;
                let out = p.aggregate_grad_alpha(x, grad, heads, channels, threads());
                Ok((CpuStorage::F32(out), Shape::from((p.indices.len(), heads))))
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.pattern.0;
        let device = &s1.device;
        let (heads, channels) = (self.heads, self.channels);
        let width = heads * channels;
        let grad = super::cuda::input(self.name(), "the gradient", s2, l2, (p.rows, width))?;
        let gpu = p.on(device)?;
        let sizes = [heads as u64, channels as u64].map(Arg::Size);
        match self.which {
            AggregateGrad::X => {
                let alpha =
                    super::cuda::input(self.name(), "alpha", s1, l1, (p.indices.len(), heads))?;
                let out = output(device, p.cols * width)?;
                let [h, c] = sizes;
                launch(
                    device,
                    "gat_edge_aggregate",
                    p.cols * width,
                    &[
                        Arg::U64s(&gpu.t_offsets),
                        Arg::U32s(&gpu.t_rows),
                        Arg::U32s(&gpu.t_edges),
                        Arg::View(&alpha),
                        Arg::View(&grad),
                        Arg::Out(&out),
                        Arg::Size(p.cols as u64),
                        h,
                        c,
                    ],
                )?;
                Ok(finish(device, out, Shape::from((p.cols, width))))
            }
            AggregateGrad::Alpha => {
                let x = super::cuda::input(self.name(), "x", s1, l1, (p.cols, width))?;
                let out = output(device, p.indices.len() * heads)?;
                let [h, c] = sizes;
                launch(
                    device,
                    "gat_aggregate_grad_alpha",
                    p.rows * heads,
                    &[
                        Arg::U64s(&gpu.offsets),
                        Arg::U32s(&gpu.indices),
                        Arg::View(&x),
                        Arg::View(&grad),
                        Arg::Out(&out),
                        Arg::Size(p.rows as u64),
                        h,
                        c,
                    ],
                )?;
                Ok(finish(device, out, Shape::from((p.indices.len(), heads))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::graph::rng::Rng;

    /// Uniform numbers in `[-1, 1)`.
    fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.unit_f64() * 2.0 - 1.0) as f32)
            .collect()
    }

    /// A random `out x read` pattern: every row its self loop plus up to `extra` distinct other
    /// sources; row `lonely` (if any) only its self loop.
    fn random_graph(
        rng: &mut Rng,
        out: usize,
        read: usize,
        extra: u64,
        lonely: Option<usize>,
    ) -> SparseMatrix {
        let mut offsets = vec![0];
        let mut indices = Vec::new();
        for row in 0..out {
            let mut cols = vec![row as u32];
            if Some(row) != lonely {
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
        SparseMatrix::new(out, read, offsets, indices, vec![1.0; nnz])
    }

    /// The same aggregation from dense candle ops: per head, an `out x read` score matrix with
    /// the non-edges pushed to -1e30, softmax and matmul.
    fn dense_reference(
        matrix: &SparseMatrix,
        x: &Tensor,
        att_src: &Tensor,
        att_dst: &Tensor,
        heads: usize,
        slope: f64,
        mask: Option<&[f32]>,
    ) -> Result<Tensor> {
        let (out, read) = (matrix.rows(), matrix.cols());
        let channels = x.dims2()?.1 / heads;
        let dense = matrix.to_dense();
        let bias: Vec<f32> = dense
            .iter()
            .flatten()
            .map(|&v| if v != 0.0 { 0.0 } else { -1e30 })
            .collect();
        let bias = Tensor::from_vec(bias, (out, read), &Device::Cpu)?;
        let mut per_head = Vec::new();
        for h in 0..heads {
            let xh = x.narrow(1, h * channels, channels)?.contiguous()?;
            let a_src = att_src.narrow(0, h, 1)?.t()?.contiguous()?;
            let a_dst = att_dst.narrow(0, h, 1)?.t()?.contiguous()?;
            let s_src = xh.matmul(&a_src)?;
            let s_dst = xh.narrow(0, 0, out)?.matmul(&a_dst)?;
            let e = s_dst.broadcast_add(&s_src.t()?)?;
            let e = e.maximum(&(&e * slope)?)?;
            let mut alpha = candle_nn::ops::softmax(&e.add(&bias)?, 1)?;
            if let Some(mask) = mask {
                let mut m = vec![0f32; out * read];
                for row in 0..out {
                    for k in matrix.offsets()[row]..matrix.offsets()[row + 1] {
                        m[row * read + matrix.indices()[k] as usize] = mask[k * heads + h];
                    }
                }
                alpha = alpha.mul(&Tensor::from_vec(m, (out, read), &Device::Cpu)?)?;
            }
            per_head.push(alpha.matmul(&xh)?);
        }
        Tensor::cat(&per_head, 1)
    }

    /// `|a - b| <= 1e-5 * max(|b|, scale)` elementwise, `scale` the largest `|b|`.
    fn assert_close(what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let a = a.flatten_all()?.to_vec1::<f32>()?;
        let b = b.flatten_all()?.to_vec1::<f32>()?;
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-5 * y.abs().max(scale);
            assert!(
                (x - y).abs() <= tol,
                "{what}[{i}]: {x} vs reference {y} (tolerance {tol})"
            );
        }
        Ok(())
    }

    /// Compares output and gradients of `gat_aggregate` on `device` against the dense
    /// reference on the CPU.
    fn check_against_reference(
        device: &Device,
        seed: u64,
        heads: usize,
        channels: usize,
        with_mask: bool,
        lonely: Option<usize>,
    ) -> Result<()> {
        check_sized(
            device,
            seed,
            (heads, channels),
            with_mask,
            lonely,
            (12, 17, 4),
        )
    }

    fn check_against_large(device: &Device) -> Result<()> {
        check_sized(device, 7, (8, 8), true, None, (600, 800, 12))
    }

    /// [`check_against_reference`] on an `out x read` pattern with up to `extra` sources a row.
    fn check_sized(
        device: &Device,
        seed: u64,
        (heads, channels): (usize, usize),
        with_mask: bool,
        lonely: Option<usize>,
        (out, read, extra): (usize, usize, u64),
    ) -> Result<()> {
        let width = heads * channels;
        let mut rng = Rng::new(seed);
        let matrix = random_graph(&mut rng, out, read, extra, lonely);
        assert!(
            (0..out).any(|r| matrix.offsets()[r + 1] - matrix.offsets()[r] >= 3),
            "some row has several edges"
        );
        let pattern = EdgePattern::new(&matrix)?;
        let cpu = &Device::Cpu;
        let x = Var::from_vec(uniform(&mut rng, read * width), (read, width), cpu)?;
        let att_src = Var::from_vec(uniform(&mut rng, width), (heads, channels), cpu)?;
        let att_dst = Var::from_vec(uniform(&mut rng, width), (heads, channels), cpu)?;
        let weights = Tensor::from_vec(uniform(&mut rng, out * width), (out, width), cpu)?;
        let mask: Option<Vec<f32>> = with_mask.then(|| {
            (0..matrix.nnz() * heads)
                .map(|_| if rng.unit_f64() < 0.3 { 0.0 } else { 1.0 / 0.7 })
                .collect()
        });
        let mask_tensor = mask
            .as_ref()
            .map(|m| Tensor::from_slice(m.as_slice(), (matrix.nnz(), heads), cpu))
            .transpose()?;
        let on = |v: &Var| Var::from_tensor(&v.as_tensor().to_device(device)?);
        let (dx, dsrc, ddst) = (on(&x)?, on(&att_src)?, on(&att_dst)?);
        let sparse = gat_aggregate(
            &pattern,
            dx.as_tensor(),
            dsrc.as_tensor(),
            ddst.as_tensor(),
            heads,
            0.2,
            mask_tensor
                .map(|m| m.to_device(device))
                .transpose()?
                .as_ref(),
        )?;
        let dense = dense_reference(
            &matrix,
            x.as_tensor(),
            att_src.as_tensor(),
            att_dst.as_tensor(),
            heads,
            0.2,
            mask.as_deref(),
        )?;
        assert_close("output", &sparse.to_device(cpu)?, &dense)?;
        let grad_sparse = sparse
            .mul(&weights.to_device(device)?)?
            .sum_all()?
            .backward()?;
        let grad_dense = dense.mul(&weights)?.sum_all()?.backward()?;
        for (what, var, on_device) in [
            ("dx", &x, &dx),
            ("d att_src", &att_src, &dsrc),
            ("d att_dst", &att_dst, &ddst),
        ] {
            let s = grad_sparse
                .get(on_device.as_tensor())
                .expect("a sparse gradient");
            let d = grad_dense.get(var.as_tensor()).expect("a dense gradient");
            assert_close(what, &s.to_device(cpu)?, d)?;
        }
        Ok(())
    }

    fn multi_head(device: &Device) -> Result<()> {
        check_against_reference(device, 1, 3, 4, false, None)
    }
    test_device!(
        multi_head_output_and_gradients_match_the_dense_reference,
        multi_head
    );

    fn single_head(device: &Device) -> Result<()> {
        check_against_reference(device, 2, 1, 5, false, None)
    }
    test_device!(
        single_head_output_and_gradients_match_the_dense_reference,
        single_head
    );

    fn masked(device: &Device) -> Result<()> {
        check_against_reference(device, 3, 2, 3, true, None)
    }
    test_device!(
        masked_output_and_gradients_match_the_dense_reference,
        masked
    );

    fn lonely_row(device: &Device) -> Result<()> {
        check_against_reference(device, 4, 2, 3, false, Some(5))
    }
    test_device!(a_lonely_row_matches_the_dense_reference, lonely_row);

    /// A graph big enough for many thread blocks on a GPU and several threads on the CPU, with
    /// 8 heads (as GAT's first layer) against the dense reference.
    fn large(device: &Device) -> Result<()> {
        check_against_large(device)
    }
    test_device!(a_large_graph_matches_the_dense_reference, large);

    /// Every GAT kernel's CUDA source, run on the host, against the CPU code, with the
    /// arguments its `cuda_fwd` passes: a pattern with a lonely row, 3 heads of 5 channels.
    #[test]
    fn the_gat_kernels_match_the_cpu_code() -> Result<()> {
        use super::super::cuda::host::{run, HostArg as H};
        let mut rng = Rng::new(9);
        let (out, read, heads, channels) = (40usize, 55usize, 3usize, 5usize);
        let width = heads * channels;
        let matrix = random_graph(&mut rng, out, read, 6, Some(3));
        let pattern = EdgePattern::new(&matrix)?;
        let p = &pattern.0;
        let nnz = p.indices.len();
        let wide = |v: &[usize]| v.iter().map(|&o| o as u64).collect::<Vec<u64>>();
        let (offsets, t_offsets) = (wide(&p.offsets), wide(&p.t_offsets));
        let s_src = uniform(&mut rng, read * heads);
        let s_dst = uniform(&mut rng, out * heads);
        let grad_edges = uniform(&mut rng, nnz * heads);
        let grad_rows = uniform(&mut rng, out * width);
        let x = uniform(&mut rng, read * width);
        let (h, c, slope) = (heads as u64, channels as u64, 0.2f32);
        let threads = 1;
        let scores = p.edge_scores(&s_src, &s_dst, heads, slope, threads);
        let alpha = p.softmax(&scores, heads, threads);
        let checks: Vec<(&str, Vec<H<'_>>, Vec<f32>)> = vec![
            (
                "gat_edge_scores",
                vec![
                    H::U64s(&offsets),
                    H::U32s(&p.indices),
                    H::F32s(&s_src),
                    H::F32s(&s_dst),
                    H::Out(nnz * heads),
                    H::Size(out as u64),
                    H::Size(h),
                    H::Float(slope),
                ],
                scores.clone(),
            ),
            (
                "gat_leaky_segment_sum",
                vec![
                    H::U64s(&offsets),
                    H::NoU32s,
                    H::F32s(&scores),
                    H::F32s(&grad_edges),
                    H::Out(out * heads),
                    H::Size(out as u64),
                    H::Size(h),
                    H::Float(slope),
                ],
                p.leaky_segment_sum(&scores, &grad_edges, heads, slope, Side::Rows, threads),
            ),
            (
                "gat_leaky_segment_sum",
                vec![
                    H::U64s(&t_offsets),
                    H::U32s(&p.t_edges),
                    H::F32s(&scores),
                    H::F32s(&grad_edges),
                    H::Out(read * heads),
                    H::Size(read as u64),
                    H::Size(h),
                    H::Float(slope),
                ],
                p.leaky_segment_sum(&scores, &grad_edges, heads, slope, Side::Cols, threads),
            ),
            (
                "gat_edge_softmax",
                vec![
                    H::U64s(&offsets),
                    H::F32s(&scores),
                    H::Out(nnz * heads),
                    H::Size(out as u64),
                    H::Size(h),
                ],
                alpha.clone(),
            ),
            (
                "gat_edge_softmax_grad",
                vec![
                    H::U64s(&offsets),
                    H::F32s(&alpha),
                    H::F32s(&grad_edges),
                    H::Out(nnz * heads),
                    H::Size(out as u64),
                    H::Size(h),
                ],
                p.softmax_grad(&alpha, &grad_edges, heads, threads),
            ),
            (
                "gat_edge_aggregate",
                vec![
                    H::U64s(&offsets),
                    H::U32s(&p.indices),
                    H::NoU32s,
                    H::F32s(&alpha),
                    H::F32s(&x),
                    H::Out(out * width),
                    H::Size(out as u64),
                    H::Size(h),
                    H::Size(c),
                ],
                p.aggregate(&alpha, &x, heads, channels, threads),
            ),
            (
                "gat_edge_aggregate",
                vec![
                    H::U64s(&t_offsets),
                    H::U32s(&p.t_rows),
                    H::U32s(&p.t_edges),
                    H::F32s(&alpha),
                    H::F32s(&grad_rows),
                    H::Out(read * width),
                    H::Size(read as u64),
                    H::Size(h),
                    H::Size(c),
                ],
                p.aggregate_grad_x(&alpha, &grad_rows, heads, channels, threads),
            ),
            (
                "gat_aggregate_grad_alpha",
                vec![
                    H::U64s(&offsets),
                    H::U32s(&p.indices),
                    H::F32s(&x),
                    H::F32s(&grad_rows),
                    H::Out(nnz * heads),
                    H::Size(out as u64),
                    H::Size(h),
                    H::Size(c),
                ],
                p.aggregate_grad_alpha(&x, &grad_rows, heads, channels, threads),
            ),
        ];
        for (kernel, args, cpu) in checks {
            let Some(got) = run(kernel, &args) else {
                return Ok(());
            };
            assert_eq!(got.len(), cpu.len(), "{kernel}");
            let scale = cpu.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&cpu).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * scale,
                    "{kernel}[{i}]: {g} vs cpu {w}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_row_with_only_its_self_loop_copies_its_features() -> Result<()> {
        // Alone in its row, the self loop gets weight exactly 1 and the scores no gradient.
        let matrix = SparseMatrix::new(3, 4, vec![0, 2, 3, 5], vec![0, 3, 1, 2, 0], vec![1.0; 5]);
        let pattern = EdgePattern::new(&matrix)?;
        let cpu = &Device::Cpu;
        let mut rng = Rng::new(5);
        let x = Var::from_vec(uniform(&mut rng, 4 * 6), (4, 6), cpu)?;
        let att_src = Var::from_vec(uniform(&mut rng, 6), (2, 3), cpu)?;
        let att_dst = Var::from_vec(uniform(&mut rng, 6), (2, 3), cpu)?;
        let y = gat_aggregate(
            &pattern,
            x.as_tensor(),
            att_src.as_tensor(),
            att_dst.as_tensor(),
            2,
            0.2,
            None,
        )?;
        assert_eq!(
            y.narrow(0, 1, 1)?.to_vec2::<f32>()?,
            x.narrow(0, 1, 1)?.to_vec2::<f32>()?
        );
        let mut w = vec![0f32; 3 * 6];
        w[6..12].copy_from_slice(&uniform(&mut rng, 6));
        let weights = Tensor::from_vec(w.clone(), (3, 6), cpu)?;
        let grads = y.mul(&weights)?.sum_all()?.backward()?;
        for att in [&att_src, &att_dst] {
            let g = grads.get(att.as_tensor()).expect("a gradient");
            assert!(g.flatten_all()?.to_vec1::<f32>()?.iter().all(|&v| v == 0.0));
        }
        let dx = grads.get(x.as_tensor()).expect("a gradient");
        let mut expected = vec![0f32; 4 * 6];
        expected[6..12].copy_from_slice(&w[6..12]);
        assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, expected);
        Ok(())
    }

    #[test]
    fn a_row_without_edges_comes_out_zero() -> Result<()> {
        let matrix = SparseMatrix::new(2, 2, vec![0, 1, 1], vec![0], vec![1.0]);
        let pattern = EdgePattern::new(&matrix)?;
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let att = Tensor::new(&[[0.5f32, -1.0]], &Device::Cpu)?;
        let y = gat_aggregate(&pattern, &x, &att, &att, 1, 0.2, None)?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![1.0, 2.0], vec![0.0, 0.0]]);
        Ok(())
    }

    #[test]
    fn the_pattern_transpose_maps_back_to_the_edges() -> Result<()> {
        let mut rng = Rng::new(6);
        let matrix = random_graph(&mut rng, 12, 17, 4, None);
        let pattern = EdgePattern::new(&matrix)?;
        let p = &pattern.0;
        assert_eq!((pattern.rows(), pattern.cols()), (12, 17));
        assert_eq!(pattern.nnz(), matrix.nnz());
        let mut seen = vec![false; pattern.nnz()];
        for col in 0..p.cols {
            for t in p.t_offsets[col]..p.t_offsets[col + 1] {
                let (row, k) = (p.t_rows[t] as usize, p.t_edges[t] as usize);
                assert!((p.offsets[row]..p.offsets[row + 1]).contains(&k));
                assert_eq!(p.indices[k] as usize, col);
                seen[k] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        let nnz = pattern.nnz() as u64;
        assert_eq!(pattern.bytes(), 8 * (13 + 18) + 4 * 3 * nnz);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let matrix = SparseMatrix::new(2, 3, vec![0, 1, 2], vec![0, 1], vec![1.0; 2]);
        let pattern = EdgePattern::new(&matrix)?;
        let cpu = &Device::Cpu;
        let x = Tensor::zeros((3, 4), DType::F32, cpu)?;
        let att = Tensor::zeros((2, 2), DType::F32, cpu)?;
        let run = |x: &Tensor, att: &Tensor, heads: usize, slope: f64, mask: Option<&Tensor>| {
            gat_aggregate(&pattern, x, att, att, heads, slope, mask)
        };
        assert!(run(&x, &att, 2, 0.2, None).is_ok());
        assert!(run(&x.narrow(0, 0, 2)?, &att, 2, 0.2, None).is_err());
        assert!(run(
            &x.to_dtype(DType::F64)?,
            &att.to_dtype(DType::F64)?,
            2,
            0.2,
            None
        )
        .is_err());
        assert!(run(&x, &att, 3, 0.2, None).is_err());
        assert!(run(&x, &att, 0, 0.2, None).is_err());
        assert!(run(&x, &att.narrow(1, 0, 1)?, 2, 0.2, None).is_err());
        assert!(run(&x, &att, 2, -0.2, None).is_err());
        assert!(run(&x, &att, 2, f64::NAN, None).is_err());
        let mask = Tensor::ones((3, 2), DType::F32, cpu)?;
        assert!(run(&x, &att, 2, 0.2, Some(&mask)).is_err());
        let wide = SparseMatrix::new(3, 2, vec![0, 1, 2, 2], vec![0, 1], vec![1.0; 2]);
        let x2 = Tensor::zeros((2, 4), DType::F32, cpu)?;
        let wide = EdgePattern::new(&wide)?;
        assert!(gat_aggregate(&wide, &x2, &att, &att, 2, 0.2, None).is_err());
        Ok(())
    }

    #[test]
    fn threaded_kernels_equal_the_serial_ones() -> Result<()> {
        // Large enough to take the threaded path in every kernel: 40 000 edges, 4 heads.
        let (out, read, heads, channels) = (2000usize, 2600usize, 4usize, 8usize);
        let mut offsets = vec![0];
        let mut indices = Vec::new();
        for r in 0..out {
            indices.push(r as u32);
            // Uneven degrees so the blocks differ in rows.
            for j in 0..(r % 37) {
                indices.push(((r * 7 + j * 13 + 1) % read) as u32);
            }
            offsets.push(indices.len());
        }
        let nnz = indices.len();
        let matrix = SparseMatrix::new(out, read, offsets, indices, vec![1.0; nnz]);
        let pattern = EdgePattern::new(&matrix)?;
        let p = &pattern.0;
        assert!(nnz * heads >= SERIAL_WORK);
        assert!(blocks(&p.offsets, nnz * heads, 4).len() > 2);
        assert!(blocks(&p.t_offsets, nnz * heads, 4).len() > 2);
        let mut rng = Rng::new(7);
        let width = heads * channels;
        let s_src = uniform(&mut rng, read * heads);
        let s_dst = uniform(&mut rng, out * heads);
        let x = uniform(&mut rng, read * width);
        let grad_out = uniform(&mut rng, out * width);
        let grad_edges = uniform(&mut rng, nnz * heads);
        for threads in [2, 3, 4] {
            let scores = p.edge_scores(&s_src, &s_dst, heads, 0.2, 1);
            assert_eq!(p.edge_scores(&s_src, &s_dst, heads, 0.2, threads), scores);
            for side in [Side::Rows, Side::Cols] {
                assert_eq!(
                    p.leaky_segment_sum(&scores, &grad_edges, heads, 0.2, side, threads),
                    p.leaky_segment_sum(&scores, &grad_edges, heads, 0.2, side, 1)
                );
            }
            let alpha = p.softmax(&scores, heads, 1);
            assert_eq!(p.softmax(&scores, heads, threads), alpha);
            assert_eq!(
                p.softmax_grad(&alpha, &grad_edges, heads, threads),
                p.softmax_grad(&alpha, &grad_edges, heads, 1)
            );
            assert_eq!(
                p.aggregate(&alpha, &x, heads, channels, threads),
                p.aggregate(&alpha, &x, heads, channels, 1)
            );
            assert_eq!(
                p.aggregate_grad_x(&alpha, &grad_out, heads, channels, threads),
                p.aggregate_grad_x(&alpha, &grad_out, heads, channels, 1)
            );
            assert_eq!(
                p.aggregate_grad_alpha(&x, &grad_out, heads, channels, threads),
                p.aggregate_grad_alpha(&x, &grad_out, heads, channels, 1)
            );
        }
        Ok(())
    }
}
