//! A layer's bias and activation (ReLU, or ELU with `alpha = 1`) on the CPU as custom ops whose
//! backward is one pass over the output: candle's own backward builds the activation's
//! derivative from comparison masks, type conversions and an exponential (about ten full-size
//! tensors for ELU), and the bias gradient with a strided reduction. Elsewhere candle's ops, the
//! same functions.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};

use super::fused_attention::exp;
use crate::scenario::Activation;

/// `activation(x)`: ReLU, or ELU with `alpha = 1` (`x` for `x > 0`, `e^x - 1` otherwise).
pub fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    if !is_cpu_f32(x) {
        return candle_activate(x, activation);
    }
    x.contiguous()?.apply_op1(Activate(activation))
}

/// `activation(y + bias)` for `y` of shape `(rows, width)` and `bias` of `width`, or `y + bias`
/// without an activation.
pub fn bias_activation(
    y: &Tensor,
    bias: &Tensor,
    activation: Option<Activation>,
) -> Result<Tensor> {
    if !is_cpu_f32(y) || !is_cpu_f32(bias) {
        let z = y.broadcast_add(bias)?;
        return match activation {
            Some(a) => candle_activate(&z, a),
            None => Ok(z),
        };
    }
    y.contiguous()?
        .apply_op2(&bias.contiguous()?, BiasActivation(activation))
}

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

fn candle_activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Elu => x.elu(1.0),
    }
}

/// The activation of one number.
fn forward(activation: Option<Activation>, v: f32) -> f32 {
    match activation {
        None => v,
        Some(Activation::Relu) => {
            if v > 0.0 {
                v
            } else {
                0.0
            }
        }
        Some(Activation::Elu) => {
            if v > 0.0 {
                v
            } else {
                expm1(v)
            }
        }
    }
}

/// `e^x - 1` for `x <= 0` to within a few ulp (PyTorch's ELU uses `expm1` too): near zero a
/// Taylor polynomial, where `e^x - 1` would cancel; below, `e^x - 1` from the fused attention's
/// exponential, cheaper than the library's `expm1f`.
fn expm1(x: f32) -> f32 {
    if x > -0.35 {
        // The first omitted term, x^8 / 8!, is below 2e-8 relative here.
        let p = 1.0 / 5040.0;
        let p = p * x + 1.0 / 720.0;
        let p = p * x + 1.0 / 120.0;
        let p = p * x + 1.0 / 24.0;
        let p = p * x + 1.0 / 6.0;
        let p = p * x + 0.5;
        let p = p * x + 1.0;
        p * x
    } else {
        exp(x) - 1.0
    }
}

/// The gradient through the activation, read off its output `y`: 1 where `y` is positive, else
/// 0 (ReLU) or `y + 1` (ELU's `e^x`), as PyTorch's backward from the result.
fn backward(activation: Option<Activation>, y: f32, g: f32) -> f32 {
    match activation {
        None => g,
        Some(_) if y > 0.0 => g,
        Some(Activation::Relu) => 0.0,
        Some(Activation::Elu) => g * (y + 1.0),
    }
}

/// The gradient through `activation` from its output `y` and the output's gradient `grad`:
/// the activation's backward alone, which `calibrate` times (on the CPU one pass; elsewhere
/// candle's ops, as candle's own backward of `relu` and `elu` compute it).
pub fn activation_backward(y: &Tensor, grad: &Tensor, activation: Activation) -> Result<Tensor> {
    if !is_cpu_f32(y) || !is_cpu_f32(grad) {
        let positive = y.gt(0.0)?;
        return match activation {
            Activation::Relu => grad * positive.to_dtype(y.dtype())?,
            Activation::Elu => positive.where_cond(grad, &(y.affine(1.0, 1.0)? * grad)?),
        };
    }
    let grad = grad.contiguous()?;
    let d = with_slices("activation", y, &grad, |y, g| {
        y.iter()
            .zip(g)
            .map(|(&y, &g)| backward(Some(activation), y, g))
            .collect::<Vec<f32>>()
    })?;
    Tensor::from_vec(d, y.shape(), y.device())
}

/// `activation(x)`.
struct Activate(Activation);

impl CustomOp1 for Activate {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(self.name(), storage, layout)?;
        let out = x.iter().map(|&v| forward(Some(self.0), v)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        activation_backward(res, grad_res, self.0).map(Some)
    }
}

/// `activation(y + bias)`, the bias broadcast over the rows.
struct BiasActivation(Option<Activation>);

impl CustomOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous(self.name(), s1, l1)?;
        let bias = contiguous(self.name(), s2, l2)?;
        let (_, width) = l1.shape().dims2()?;
        if l2.shape().dims() != [width] {
            candle_core::bail!(
                "{}: the bias must be ({width},), not {:?}",
                self.name(),
                l2.shape().dims()
            );
        }
        let tile = tiled(bias);
        let mut out = Vec::with_capacity(y.len());
        for block in y.chunks(tile.len().max(1)) {
            out.extend(block.iter().zip(&tile).map(|(v, b)| forward(self.0, v + b)));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let width = bias.elem_count();
        let (d, d_bias) = with_slices(self.name(), res, &grad, |out, g| {
            let mut d = Vec::with_capacity(out.len());
            // Sums per position of a tile of rows, folded into the bias's width at the end.
            let mut sums = vec![0f32; tile_len(width)];
            let block = sums.len().max(1);
            for (o, g) in out.chunks(block).zip(g.chunks(block)) {
                d.extend(o.iter().zip(g).zip(sums.iter_mut()).map(|((&o, &g), sum)| {
                    let v = backward(self.0, o, g);
                    *sum += v;
                    v
                }));
            }
            let mut d_bias = vec![0f32; width];
            for row in sums.chunks_exact(width.max(1)) {
                for (db, &v) in d_bias.iter_mut().zip(row) {
                    *db += v;
                }
            }
            (d, d_bias)
        })?;
        let d_y = if y.track_op() {
            Some(Tensor::from_vec(d, y.shape(), y.device())?)
        } else {
            None
        };
        let d_bias = if bias.track_op() {
            Some(Tensor::from_vec(d_bias, bias.shape(), bias.device())?)
        } else {
            None
        };
        Ok((d_y, d_bias))
    }
}

/// Elements in the blocks of whole rows that the bias and activation pass over: at least 64,
/// so that a narrow layer's (a last layer's few classes) inner loop is long enough to
/// vectorize rather than a few elements a row (on a 2-core EPYC VM, 4,929 rows of 3: 4.4 us
/// in blocks, 14 us a row at a time; no change from 64 columns up).
fn tile_len(width: usize) -> usize {
    width * 64usize.div_ceil(width.max(1))
}

/// The bias repeated over a block of [`tile_len`] elements.
fn tiled(bias: &[f32]) -> Vec<f32> {
    bias.iter()
        .copied()
        .cycle()
        .take(tile_len(bias.len()))
        .collect()
}

/// `body` over the CPU data of an op's output and its gradient, both contiguous and of one size.
fn with_slices<R>(
    op: &str,
    out: &Tensor,
    grad: &Tensor,
    body: impl FnOnce(&[f32], &[f32]) -> R,
) -> Result<R> {
    let (os, ol) = out.storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let (Storage::Cpu(os), Storage::Cpu(gs)) = (&*os, &*gs) else {
        candle_core::bail!("{op} runs on the CPU");
    };
    let (o, g) = (contiguous(op, os, ol)?, contiguous(op, gs, gl)?);
    if o.len() != g.len() {
        candle_core::bail!("{op}: {} outputs, {} gradients", o.len(), g.len());
    }
    Ok(body(o, g))
}

/// The contiguous f32 data of a custom op's input.
fn contiguous<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} works on f32 tensors, not {:?}", storage.dtype());
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input");
    };
    Ok(&data[start..end])
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// A 20 x 10 input on both sides of zero, and weights for a surrogate loss.
    fn input_and_weights() -> Result<(Var, Tensor)> {
        let values: Vec<f32> = (0..200).map(|i| (i as f32 - 100.5) / 13.0).collect();
        let x = Var::from_vec(values, (20, 10), &Device::Cpu)?;
        let weights = Tensor::arange(0f32, 200.0, &Device::Cpu)?.reshape((20, 10))?;
        Ok((x, weights))
    }

    /// Output and input gradient against candle's own ReLU and ELU.
    #[test]
    fn both_match_candles_ops() -> Result<()> {
        let (x, weights) = input_and_weights()?;
        for activation in [Activation::Relu, Activation::Elu] {
            let ours = activate(x.as_tensor(), activation)?;
            let theirs = match activation {
                Activation::Relu => x.as_tensor().relu()?,
                Activation::Elu => x.as_tensor().elu(1.0)?,
            };
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{activation:?}: output differs by {diff}");
            let g_ours = ours.mul(&weights)?.sum_all()?.backward()?;
            let g_theirs = theirs.mul(&weights)?.sum_all()?.backward()?;
            let (a, b) = (
                g_ours.get(x.as_tensor()).expect("a gradient"),
                g_theirs.get(x.as_tensor()).expect("a gradient"),
            );
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{activation:?}: gradient differs by {diff}");
        }
        Ok(())
    }

    /// The backward alone (what `calibrate` times), on the CPU's one pass and through candle's
    /// ops (f64 takes that path), against autograd's gradient.
    #[test]
    fn the_backward_alone_is_autograd_s() -> Result<()> {
        let (x, g) = input_and_weights()?;
        for activation in [Activation::Relu, Activation::Elu] {
            let y = activate(x.as_tensor(), activation)?;
            let grads = y.mul(&g)?.sum_all()?.backward()?;
            let want = grads.get(x.as_tensor()).expect("a gradient");
            let f64 = candle_core::DType::F64;
            for got in [
                activation_backward(&y, &g, activation)?,
                activation_backward(&y.to_dtype(f64)?, &g.to_dtype(f64)?, activation)?
                    .to_dtype(candle_core::DType::F32)?,
            ] {
                let diff = (&got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{activation:?}: differs by {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn expm1_is_within_a_few_ulp() {
        let mut worst = 0f32;
        for i in 1..=400_000 {
            let x = -(i as f32) / 20_000.0;
            let (ours, libm) = (expm1(x), x.exp_m1());
            worst = worst.max((ours - libm).abs() / libm.abs());
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(expm1(0.0), 0.0);
        assert!(expm1(f32::NAN).is_nan());
    }

    /// Bias plus activation against candle's broadcast addition and activation, over 20 rows
    /// of widths whose blocks hold 22 rows (3: one short block), 7 (10: two whole blocks and a
    /// short one) and 1 (70: whole blocks only).
    #[test]
    fn bias_and_activation_match_candles_ops() -> Result<()> {
        for width in [3usize, 10, 70] {
            let (x, weights) = input_and_weights()?;
            let x = Var::from_tensor(&x.as_tensor().repeat((1, 7))?.narrow(1, 0, width)?)?;
            let weights = weights.repeat((1, 7))?.narrow(1, 0, width)?;
            bias_and_activation_at(&x, &weights)?;
        }
        Ok(())
    }

    fn bias_and_activation_at(x: &Var, weights: &Tensor) -> Result<()> {
        let width = x.dims()[1];
        let b = Var::from_vec(
            (0..width).map(|i| i as f32 / 5.0 - 1.0).collect(),
            width,
            &Device::Cpu,
        )?;
        for activation in [None, Some(Activation::Relu), Some(Activation::Elu)] {
            let ours = bias_activation(x.as_tensor(), b.as_tensor(), activation)?;
            let sum = x.as_tensor().broadcast_add(b.as_tensor())?;
            let theirs = match activation {
                None => sum,
                Some(a) => candle_activate(&sum, a)?,
            };
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{activation:?}: output differs by {diff}");
            let g_ours = ours.mul(weights)?.sum_all()?.backward()?;
            let g_theirs = theirs.mul(weights)?.sum_all()?.backward()?;
            for var in [x, &b] {
                let (a, c) = (
                    g_ours.get(var.as_tensor()).expect("a gradient"),
                    g_theirs.get(var.as_tensor()).expect("a gradient"),
                );
                let diff = (a - c)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-3, "{activation:?}: gradient differs by {diff}");
            }
        }
        Ok(())
    }
}
