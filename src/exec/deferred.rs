//! The split backward's dense transforms: `X W` whose backward gives only the input gradient
//! and keeps `(X, dY)` on a [`WeightTape`], so that `I(c, s)` (the whole backward of the chunk
//! but its weight products) skips every `X^T dY`, and `W(c, s)` computes them later from the
//! tape.
//!
//! candle's own matmul always computes both gradients, even of a detached weight, so the
//! deferred transform is a custom op: its forward is candle's matmul kernel (the same numbers
//! as `x.matmul(w)`), its backward `dY W^T` for a tracked input and nothing for the weight. For
//! sparse inputs (a first stage's features, which need no gradient) the op is on the weight
//! alone and its backward only records. The weight products of `W` are the ones the full
//! backward computes (`X^T dY` with candle's matmul, or the sparse transpose's product), so the
//! split gives the full backward's gradients.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, TensorId, Var};

use super::sparse::SparseMatrix;

/// A transform's input as `W` needs it.
#[derive(Debug, Clone)]
pub(super) enum TapeInput {
    /// Dense rows.
    Dense(Tensor),
    /// Sparse rows (a first stage's features after dropout).
    Sparse(SparseMatrix),
}

/// One deferred weight product: the weight, the transform's input and its output's gradient.
#[derive(Debug)]
struct Deferred {
    weight: TensorId,
    input: TapeInput,
    grad: Tensor,
}

/// What a chunk's `I` leaves for its `W`: per deferred transform its input and the gradient of
/// its output, recorded by the transforms' backward. Cheap to clone (one shared list).
#[derive(Debug, Clone, Default)]
pub struct WeightTape(Arc<Mutex<Vec<Deferred>>>);

impl WeightTape {
    /// An empty tape.
    pub fn new() -> Self {
        WeightTape::default()
    }

    pub(super) fn record(&self, weight: TensorId, input: TapeInput, grad: Tensor) -> Result<()> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("a weight tape's lock was poisoned".into()))?
            .push(Deferred {
                weight,
                input,
                grad,
            });
        Ok(())
    }

    /// Transforms recorded so far.
    pub fn len(&self) -> usize {
        self.0.lock().map(|entries| entries.len()).unwrap_or(0)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `W`: each recorded transform's weight gradient `X^T dY`, by index into `vars` in
    /// increasing order (a weight recorded twice gets the sum), emptying the tape so that what
    /// it kept is freed.
    pub fn weight_grads(&self, vars: &[Var]) -> Result<Vec<(usize, Tensor)>> {
        let entries =
            std::mem::take(&mut *self.0.lock().map_err(|_| {
                candle_core::Error::Msg("a weight tape's lock was poisoned".into())
            })?);
        let mut grads: Vec<(usize, Tensor)> = Vec::with_capacity(entries.len());
        for Deferred {
            weight,
            input,
            grad,
        } in entries
        {
            let Some(index) = vars.iter().position(|v| v.as_tensor().id() == weight) else {
                candle_core::bail!("a deferred weight gradient for a weight the stage does not own")
            };
            let g = match input {
                TapeInput::Dense(x) => x.t()?.matmul(&grad)?,
                TapeInput::Sparse(x) => x.t().matmul(&grad)?,
            };
            match grads.iter_mut().find(|(i, _)| *i == index) {
                Some((_, sum)) => *sum = (&*sum + g)?,
                None => grads.push((index, g)),
            }
        }
        grads.sort_by_key(|&(index, _)| index);
        Ok(grads)
    }
}

/// `x w` for dense `x` whose backward gives `x`'s gradient and leaves `w`'s to `tape`.
pub(super) fn dense_transform(x: &Tensor, weight: &Var, tape: &WeightTape) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (k2, n) = weight.dims2()?;
    if k != k2 {
        candle_core::bail!("deferred transform: x is {m}x{k} but the weight {k2}x{n}");
    }
    if m == 0 || n == 0 || k == 0 {
        // Nothing to multiply and a zero weight gradient, which is what a missing one means.
        return x.matmul(&weight.as_tensor().detach());
    }
    x.apply_op2(weight.as_tensor(), DenseTransform(tape.clone()))
}

/// The custom op of [`dense_transform`].
struct DenseTransform(WeightTape);

impl CustomOp2 for DenseTransform {
    fn name(&self) -> &'static str {
        "deferred-transform"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, k), n) = (x_layout.shape().dims2()?, w_layout.shape().dims2()?.1);
        let out = x.matmul(w, (1, m, n, k), x_layout, w_layout)?;
        Ok((out, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        w: &candle_core::CudaStorage,
        w_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let ((m, k), n) = (x_layout.shape().dims2()?, w_layout.shape().dims2()?.1);
        let out = x.matmul(w, (1, m, n, k), x_layout, w_layout)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.0
            .record(w.id(), TapeInput::Dense(x.detach()), grad_res.detach())?;
        // candle's matmul backward for the input, `dY W^T`; none for the weight.
        let grad_x = if x.track_op() {
            Some(grad_res.matmul(&w.t()?)?)
        } else {
            None
        };
        Ok((grad_x, None))
    }
}
