//! A CSR sparse-dense product as a candle custom op, with its backward, multi-threaded on CPU.
//!
//! candle's generic `index_add` is slow for aggregation (on CUDA it walks every edge serially per
//! column, and `scatter_add`'s backward is broken), so GNN aggregation is one op here:
//! `Y = A X` for a fixed sparse `A` (rows x cols, f32 values) and a dense `X` (cols x d). Its
//! gradient is `dX = A^T dY`, the same op over the transpose, which is built once with `A`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::cuda::DeviceCache;
use super::deferred::{TapeInput, WeightTape};

/// One sparse matrix in compressed sparse rows.
#[derive(Debug, Clone, PartialEq)]
struct Csr {
    rows: usize,
    cols: usize,
    offsets: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
    /// The arrays on each GPU that multiplied by it.
    gpu: DeviceCache,
}

/// A [`Csr`]'s arrays on one GPU.
#[cfg(feature = "cuda")]
struct GpuCsr {
    offsets: candle_core::cuda_backend::cudarc::driver::CudaSlice<u64>,
    indices: candle_core::cuda_backend::cudarc::driver::CudaSlice<u32>,
    values: candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
}

impl Csr {
    fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.cols {
            counts[i + 1] += counts[i];
        }
        let offsets = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.indices.len()];
        let mut values = vec![0f32; self.values.len()];
        for row in 0..self.rows {
            for k in self.offsets[row]..self.offsets[row + 1] {
                let col = self.indices[k] as usize;
                indices[next[col]] = row as u32;
                values[next[col]] = self.values[k];
                next[col] += 1;
            }
        }
        Csr {
            rows: self.cols,
            cols: self.rows,
            offsets,
            indices,
            values,
            gpu: DeviceCache::default(),
        }
    }

    /// `out[r] = sum_k values[k] * x[indices[k]]` for the rows of `out`, starting at `first_row`.
    fn multiply_rows(&self, x: &[f32], width: usize, first_row: usize, out: &mut [f32]) {
        for (i, out_row) in out.chunks_mut(width).enumerate() {
            let row = first_row + i;
            out_row.fill(0.0);
            for k in self.offsets[row]..self.offsets[row + 1] {
                let value = self.values[k];
                let src = &x[self.indices[k] as usize * width..][..width];
                for (o, s) in out_row.iter_mut().zip(src) {
                    *o += value * s;
                }
            }
        }
    }

    /// The whole product, its rows split over the caller's rayon pool (one thread per core of
    /// the device a stage worker emulates) by equal shares of non-zeros.
    fn multiply(&self, x: &[f32], width: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * width];
        let bounds = blocks(
            &self.offsets,
            self.indices.len() * width,
            rayon::current_num_threads(),
        );
        run_blocks(
            &bounds,
            &mut out,
            |r| r * width,
            |first, _, out| self.multiply_rows(x, width, first, out),
        );
        out
    }
}

/// Below this much work (multiply-adds, roughly) a pass runs on the calling thread.
pub(super) const SERIAL_WORK: usize = 1 << 16;

/// Row boundaries that split `offsets`' rows into at most `threads` blocks of about equal
/// non-zeros; one block when `work` is small.
pub(super) fn blocks(offsets: &[usize], work: usize, threads: usize) -> Vec<usize> {
    let rows = offsets.len().saturating_sub(1);
    let threads = threads.min(rows.max(1));
    if threads <= 1 || work < SERIAL_WORK {
        return vec![0, rows];
    }
    let per_thread = offsets[rows].div_ceil(threads);
    let mut bounds = vec![0usize];
    for t in 1..threads {
        let target = t * per_thread;
        let row = offsets.partition_point(|&o| o < target).min(rows);
        if row > *bounds.last().expect("bounds starts with 0") {
            bounds.push(row);
        }
    }
    if rows > *bounds.last().expect("bounds starts with 0") {
        bounds.push(rows);
    }
    bounds
}

/// Runs `body(first_row, end_row, out_block)` over the blocks `bounds` delimits, each a task of
/// the calling thread's rayon pool (a stage worker's own) when there are several. Block rows
/// `a..b` own `out[start(a)..start(b)]`.
pub(super) fn run_blocks<S, F>(bounds: &[usize], out: &mut [f32], start: S, body: F)
where
    S: Fn(usize) -> usize + Sync,
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    if let [first, end] = *bounds {
        body(first, end, out);
        return;
    }
    let body = &body;
    rayon::scope(|scope| {
        let mut rest = out;
        for pair in bounds.windows(2) {
            let (mine, tail) = rest.split_at_mut(start(pair[1]) - start(pair[0]));
            rest = tail;
            let (first, end) = (pair[0], pair[1]);
            scope.spawn(move |_| body(first, end, mine));
        }
    });
}

/// A fixed sparse matrix and its transpose, cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseMatrix {
    forward: Arc<Csr>,
    transposed: Arc<Csr>,
}

impl SparseMatrix {
    /// Builds a `rows x cols` matrix from CSR arrays.
    ///
    /// # Panics
    /// If the arrays are inconsistent; callers build them from validated graphs.
    pub fn new(
        rows: usize,
        cols: usize,
        offsets: Vec<usize>,
        indices: Vec<u32>,
        values: Vec<f32>,
    ) -> Self {
        assert_eq!(
            offsets.len(),
            rows + 1,
            "CSR offsets have one entry per row plus one"
        );
        assert_eq!(
            indices.len(),
            values.len(),
            "CSR indices and values pair up"
        );
        assert!(
            indices.iter().all(|&c| (c as usize) < cols),
            "CSR column indices are in range"
        );
        // Built by pushes, the arrays may hold up to twice their length: held for a run's
        // length, they keep only what they use (and count as `sparse_bytes` says).
        let (mut offsets, mut indices, mut values) = (offsets, indices, values);
        offsets.shrink_to_fit();
        indices.shrink_to_fit();
        values.shrink_to_fit();
        let forward = Csr {
            rows,
            cols,
            offsets,
            indices,
            values,
            gpu: DeviceCache::default(),
        };
        let transposed = forward.transpose();
        SparseMatrix {
            forward: Arc::new(forward),
            transposed: Arc::new(transposed),
        }
    }

    /// The same pattern with other values (e.g. dropout applied to the non-zeros).
    pub fn with_values(&self, values: Vec<f32>) -> Self {
        let csr = &self.forward;
        SparseMatrix::new(
            csr.rows,
            csr.cols,
            csr.offsets.clone(),
            csr.indices.clone(),
            values,
        )
    }

    /// The non-zero values, row by row.
    pub fn values(&self) -> &[f32] {
        &self.forward.values
    }

    /// The positions of row `row`'s non-zeros: `start..end` into [`SparseMatrix::values`].
    pub fn row_range(&self, row: usize) -> (usize, usize) {
        (self.forward.offsets[row], self.forward.offsets[row + 1])
    }

    /// The column of non-zero `k`.
    pub fn column(&self, k: usize) -> u32 {
        self.forward.indices[k]
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.forward.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.forward.cols
    }

    /// Non-zeros.
    pub fn nnz(&self) -> usize {
        self.forward.indices.len()
    }

    /// The transpose (shares storage).
    pub fn t(&self) -> SparseMatrix {
        SparseMatrix {
            forward: self.transposed.clone(),
            transposed: self.forward.clone(),
        }
    }

    /// `A x` for a dense `x` of shape `(cols, d)`, differentiable in `x`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(SpMM(self.clone(), None))
    }

    /// `A w` for a weight `w` whose gradient `A^T dY` is left to `tape` (the split backward's
    /// `W`): the backward only records.
    pub(super) fn matmul_deferred(&self, weight: &Tensor, tape: &WeightTape) -> Result<Tensor> {
        weight
            .contiguous()?
            .apply_op1(SpMM(self.clone(), Some(tape.clone())))
    }

    /// The dense form, for tests.
    pub fn to_dense(&self) -> Vec<Vec<f32>> {
        let csr = &self.forward;
        let mut dense = vec![vec![0f32; csr.cols]; csr.rows];
        for (row, dense_row) in dense.iter_mut().enumerate() {
            for k in csr.offsets[row]..csr.offsets[row + 1] {
                dense_row[csr.indices[k] as usize] += csr.values[k];
            }
        }
        dense
    }

    /// The row offsets: row `r`'s non-zeros are `offsets()[r]..offsets()[r + 1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.forward.offsets
    }

    /// The column index of each non-zero, row by row.
    pub fn indices(&self) -> &[u32] {
        &self.forward.indices
    }
}

/// The custom op: `Y = A X`; with a tape, `X`'s gradient is deferred to it.
struct SpMM(SparseMatrix, Option<WeightTape>);

impl CustomOp1 for SpMM {
    fn name(&self) -> &'static str {
        "csr-spmm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, width) = layout.shape().dims2()?;
        let csr = &self.0.forward;
        if rows != csr.cols {
            candle_core::bail!(
                "csr-spmm: the sparse matrix has {} columns but x has {rows} rows",
                csr.cols
            );
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("csr-spmm works on f32 tensors");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("csr-spmm needs a contiguous x");
        };
        let out = csr.multiply(&data[start..end], width);
        Ok((CpuStorage::F32(out), Shape::from((csr.rows, width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{finish, input, launch, output, upload, Arg};
        let csr = &self.0.forward;
        let (rows, width) = layout.shape().dims2()?;
        if rows != csr.cols {
            candle_core::bail!(
                "csr-spmm: the sparse matrix has {} columns but x has {rows} rows",
                csr.cols
            );
        }
        let device = &storage.device;
        let x = input(self.name(), "x", storage, layout, (rows, width))?;
        let gpu = csr.gpu.get(device, || {
            let offsets: Vec<u64> = csr.offsets.iter().map(|&o| o as u64).collect();
            Ok(GpuCsr {
                offsets: upload(device, &offsets)?,
                indices: upload(device, &csr.indices)?,
                values: upload(device, &csr.values)?,
            })
        })?;
        let out = output(device, csr.rows * width)?;
        launch(
            device,
            "csr_spmm",
            csr.rows * width,
            &[
                Arg::U64s(&gpu.offsets),
                Arg::U32s(&gpu.indices),
                Arg::F32s(&gpu.values),
                Arg::View(&x),
                Arg::Out(&out),
                Arg::Size(csr.rows as u64),
                Arg::Size(width as u64),
            ],
        )?;
        Ok(finish(device, out, Shape::from((csr.rows, width))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if let Some(tape) = &self.1 {
            tape.record(
                arg.id(),
                TapeInput::Sparse(self.0.clone()),
                grad_res.detach(),
            )?;
            return Ok(None);
        }
        Ok(Some(self.0.t().matmul(grad_res)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn small() -> SparseMatrix {
        // 3 x 4: [[1, 0, 2, 0], [0, 0, 0, 3], [4, 5, 0, 0]]
        SparseMatrix::new(
            3,
            4,
            vec![0, 2, 3, 5],
            vec![0, 2, 3, 0, 1],
            vec![1.0, 2.0, 3.0, 4.0, 5.0],
        )
    }

    /// `a x` and its gradient on `device` against the dense product on the CPU, to 1e-5 of the
    /// largest value.
    fn check_against_dense(device: &Device, a: &SparseMatrix, width: usize) -> Result<()> {
        let cpu = &Device::Cpu;
        let dense = Tensor::new(
            a.to_dense().into_iter().flatten().collect::<Vec<f32>>(),
            cpu,
        )?
        .reshape((a.rows(), a.cols()))?;
        let values: Vec<f32> = (0..a.cols() * width)
            .map(|i| ((i * 7919) % 23) as f32 * 0.125 - 1.5)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(values, (a.cols(), width), cpu)?)?;
        let x_on = Var::from_tensor(&x.as_tensor().to_device(device)?)?;
        let weights: Vec<f32> = (0..a.rows() * width)
            .map(|i| ((i * 104729) % 17) as f32 * 0.25 - 2.0)
            .collect();
        let weights = Tensor::from_vec(weights, (a.rows(), width), cpu)?;
        let sparse = a.matmul(x_on.as_tensor())?;
        let reference = dense.matmul(x.as_tensor())?;
        let grad_sparse = sparse
            .mul(&weights.to_device(device)?)?
            .sum_all()?
            .backward()?;
        let grad_dense = reference.mul(&weights)?.sum_all()?.backward()?;
        let pairs = [
            ("product", sparse.to_device(cpu)?, reference),
            (
                "gradient",
                grad_sparse.get(x_on.as_tensor()).unwrap().to_device(cpu)?,
                grad_dense.get(x.as_tensor()).unwrap().clone(),
            ),
        ];
        for (what, got, want) in pairs {
            let (got, want) = (
                got.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?,
            );
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{what}[{i}]: {g} vs dense {w}"
                );
            }
        }
        Ok(())
    }

    fn small_product(device: &Device) -> Result<()> {
        check_against_dense(device, &small(), 2)
    }
    test_device!(
        product_and_gradient_match_the_dense_reference,
        small_product
    );

    /// Many thread blocks on a GPU, several threads on the CPU; widths that do not divide a warp,
    /// and an empty row and column.
    fn large_product(device: &Device) -> Result<()> {
        let (rows, cols) = (1500usize, 900usize);
        let mut offsets = vec![0];
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for r in 0..rows {
            if r != 17 {
                for j in 0..(r % 29) {
                    let c = (r * 31 + j * 97) % (cols - 1);
                    if !indices[offsets[r]..].contains(&(c as u32)) {
                        indices.push(c as u32);
                        values.push(((r + j) % 7) as f32 - 3.0);
                    }
                }
            }
            offsets.push(indices.len());
        }
        let a = SparseMatrix::new(rows, cols, offsets, indices, values);
        for width in [1, 7, 16, 33] {
            check_against_dense(device, &a, width)?;
        }
        Ok(())
    }
    test_device!(a_large_product_matches_the_dense_reference, large_product);

    /// The CUDA kernel's source, run on the host, against the CPU product, with the arguments
    /// `cuda_fwd` passes.
    #[test]
    fn the_spmm_kernel_matches_the_cpu_code() {
        use super::super::cuda::host::{run, HostArg};
        let a = {
            let (rows, cols) = (300usize, 200usize);
            let mut offsets = vec![0];
            let mut indices = Vec::new();
            for r in 0..rows {
                if r != 5 {
                    indices.extend((0..(r % 9) as u32).map(|j| (r as u32 * 7 + j * 13) % 199));
                }
                offsets.push(indices.len());
            }
            let values = (0..indices.len())
                .map(|k| (k % 11) as f32 * 0.5 - 2.0)
                .collect();
            SparseMatrix::new(rows, cols, offsets, indices, values)
        };
        for m in [a.clone(), a.t()] {
            let csr = &m.forward;
            for width in [1usize, 16, 33] {
                let x: Vec<f32> = (0..csr.cols * width)
                    .map(|i| (i % 13) as f32 * 0.25 - 1.0)
                    .collect();
                let offsets: Vec<u64> = csr.offsets.iter().map(|&o| o as u64).collect();
                let Some(kernel) = run(
                    "csr_spmm",
                    &[
                        HostArg::U64s(&offsets),
                        HostArg::U32s(&csr.indices),
                        HostArg::F32s(&csr.values),
                        HostArg::F32s(&x),
                        HostArg::Out(csr.rows * width),
                        HostArg::Size(csr.rows as u64),
                        HostArg::Size(width as u64),
                    ],
                ) else {
                    return;
                };
                let cpu = csr.multiply(&x, width);
                assert_eq!(kernel.len(), cpu.len());
                for (i, (k, c)) in kernel.iter().zip(&cpu).enumerate() {
                    assert!((k - c).abs() <= 1e-6 * c.abs().max(1.0), "[{i}] {k} vs {c}");
                }
            }
        }
    }

    #[test]
    fn threaded_product_equals_the_serial_one() -> Result<()> {
        // Large enough to take the threaded path: 2000 rows, 40 non-zeros each, width 16.
        let (rows, cols, width) = (2000usize, 500usize, 16usize);
        let mut offsets = vec![0];
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for r in 0..rows {
            for j in 0..40 {
                indices.push(((r * 7 + j * 13) % cols) as u32);
                values.push(((r + j) % 5) as f32 - 2.0);
            }
            offsets.push(indices.len());
        }
        let a = SparseMatrix::new(rows, cols, offsets, indices, values);
        let x: Vec<f32> = (0..cols * width).map(|i| (i % 11) as f32 * 0.25).collect();
        let threaded = a.forward.multiply(&x, width);
        let mut serial = vec![0f32; rows * width];
        a.forward.multiply_rows(&x, width, 0, &mut serial);
        assert_eq!(threaded, serial);
        Ok(())
    }

    /// Arrays built by pushes keep spare capacity; a matrix held for a run keeps only what it
    /// uses, so a stage's features and graph take the bytes `sparse_bytes` counts.
    #[test]
    fn a_matrix_keeps_no_spare_capacity() {
        let mut indices = Vec::with_capacity(64);
        indices.extend([0u32, 2, 1]);
        let mut values = Vec::with_capacity(64);
        values.extend([1.0f32, 2.0, 3.0]);
        let mut offsets = Vec::with_capacity(64);
        offsets.extend([0usize, 2, 3]);
        let m = SparseMatrix::new(2, 3, offsets, indices, values);
        let csr = &m.forward;
        assert_eq!(csr.indices.capacity(), 3);
        assert_eq!(csr.values.capacity(), 3);
        assert_eq!(csr.offsets.capacity(), 3);
    }
}
