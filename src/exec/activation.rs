//! ReLU and ELU on the CPU as custom ops whose backward is one pass over the output: candle's
//! own backward builds the derivative from comparison masks, type conversions and an
//! exponential, about ten full-size tensors for ELU. Elsewhere candle's ops, the same functions.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::scenario::Activation;

/// `activation(x)`: ReLU, or ELU with `alpha = 1` (`x` for `x > 0`, `e^x - 1` otherwise).
pub fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return match activation {
            Activation::Relu => x.relu(),
            Activation::Elu => x.elu(1.0),
        };
    }
    x.apply_op1(Activate(activation))
}

/// The op; its backward reads the derivative off the output: 1 where it is positive, else 0
/// (ReLU) or `out + 1` (ELU's `e^x`).
struct Activate(Activation);

impl CustomOp1 for Activate {
    fn name(&self) -> &'static str {
        match self.0 {
            Activation::Relu => "relu",
            Activation::Elu => "elu",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(self.name(), storage, layout)?;
        let out = match self.0 {
            Activation::Relu => x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect(),
            Activation::Elu => x
                .iter()
                .map(|&v| if v > 0.0 { v } else { v.exp_m1() })
                .collect(),
        };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(&grad, &Derivative(self.0))?))
    }
}

/// [`Activate`]'s backward: `(out, grad) -> grad * activation'`.
struct Derivative(Activation);

impl candle_core::CustomOp2 for Derivative {
    fn name(&self) -> &'static str {
        match self.0 {
            Activation::Relu => "relu-grad",
            Activation::Elu => "elu-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = contiguous(self.name(), s1, l1)?;
        let grad = contiguous(self.name(), s2, l2)?;
        if out.len() != grad.len() {
            candle_core::bail!(
                "{}: {} outputs, {} gradients",
                self.name(),
                out.len(),
                grad.len()
            );
        }
        let d = match self.0 {
            Activation::Relu => out
                .iter()
                .zip(grad)
                .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
                .collect(),
            Activation::Elu => out
                .iter()
                .zip(grad)
                .map(|(&y, &g)| if y > 0.0 { g } else { g * (y + 1.0) })
                .collect(),
        };
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
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

    /// Output and input gradient against candle's own ReLU and ELU.
    #[test]
    fn both_match_candles_ops() -> Result<()> {
        let values: Vec<f32> = (0..200).map(|i| (i as f32 - 100.5) / 13.0).collect();
        let x = Var::from_vec(values, (20, 10), &Device::Cpu)?;
        let weights = Tensor::arange(0f32, 200.0, &Device::Cpu)?.reshape((20, 10))?;
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
}
