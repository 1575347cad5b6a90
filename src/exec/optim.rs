//! Adam with L2 weight decay added to the gradient, as `torch.optim.Adam(weight_decay=...)`,
//! and the summing of parameter gradients over the chunks (or partitions) a step applies.

use candle_core::{DType, Result, Tensor, Var};

/// Adam's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// L2 penalty added to each gradient (coupled, not AdamW's decoupled decay).
    pub weight_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl AdamConfig {
    /// PyTorch's defaults with the given learning rate and weight decay.
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamConfig {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam over a fixed list of variables.
pub struct Adam {
    config: AdamConfig,
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: i32,
}

impl Adam {
    /// An optimizer for `vars`, moments at zero.
    pub fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Adam {
            first: vars.iter().map(zeros).collect::<Result<_>>()?,
            second: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            config,
            step: 0,
        })
    }

    /// One step with `grads[i]` the gradient of `vars[i]`.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let correction1 = 1.0 - c.beta1.powi(self.step);
        let correction2 = 1.0 - c.beta2.powi(self.step);
        for (i, grad) in grads.iter().enumerate().take(self.vars.len()) {
            let var = self.vars[i].clone();
            if var.device().is_cpu() && var.dtype() == DType::F32 {
                self.step_cpu(i, grad, correction1, correction2)?;
                continue;
            }
            // Detached throughout: the moments must not keep a graph alive across steps.
            let value = var.as_tensor().detach();
            let grad = (grad.detach() + (&value * c.weight_decay)?)?;
            self.first[i] = ((&self.first[i] * c.beta1)? + (&grad * (1.0 - c.beta1))?)?;
            self.second[i] = ((&self.second[i] * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&self.first[i] / correction1)?;
            let v_hat = (&self.second[i] / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            var.set(&(value - (update * c.lr)?)?)?;
        }
        Ok(())
    }

    /// [`Adam::step`] for variable `i` on the CPU as one loop over its numbers instead of a
    /// dozen tensor operations, each number computed with the same f32 operations in the same
    /// order as the tensor form (an `affine` is `x * mul + add`), so the results are the same
    /// bits.
    fn step_cpu(
        &mut self,
        i: usize,
        grad: &Tensor,
        correction1: f64,
        correction2: f64,
    ) -> Result<()> {
        let c = self.config;
        let var = &self.vars[i];
        let (shape, device) = (var.shape().clone(), var.device().clone());
        let flat = |t: &Tensor| t.detach().flatten_all()?.to_vec1::<f32>();
        let mut value = flat(var.as_tensor())?;
        let grad = flat(grad)?;
        let mut first = flat(&self.first[i])?;
        let mut second = flat(&self.second[i])?;
        let (b1, one_b1) = (c.beta1 as f32, (1.0 - c.beta1) as f32);
        let (b2, one_b2) = (c.beta2 as f32, (1.0 - c.beta2) as f32);
        let (inv1, inv2) = ((1.0 / correction1) as f32, (1.0 / correction2) as f32);
        let (decay, eps, lr) = (c.weight_decay as f32, c.eps as f32, c.lr as f32);
        for (((x, &g), m), v) in value
            .iter_mut()
            .zip(&grad)
            .zip(first.iter_mut())
            .zip(second.iter_mut())
        {
            let g = g + (*x * decay + 0.0);
            *m = (*m * b1 + 0.0) + (g * one_b1 + 0.0);
            *v = (*v * b2 + 0.0) + ((g * g) * one_b2 + 0.0);
            let m_hat = *m * inv1 + 0.0;
            let v_hat = *v * inv2 + 0.0;
            let update = m_hat / (v_hat.sqrt() * 1.0 + eps);
            *x -= update * lr + 0.0;
        }
        self.first[i] = Tensor::from_vec(first, &shape, &device)?;
        self.second[i] = Tensor::from_vec(second, &shape, &device)?;
        var.set(&Tensor::from_vec(value, &shape, &device)?)
    }
}

/// Gradient of `var` in `grads`, zeros when it did not take part. Detached: a gradient computed
/// from tracked tensors carries their graph, which would otherwise live on in the optimizer's
/// moments, epoch after epoch.
pub(super) fn grad_of(grads: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    match grads.get(var.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => var.as_tensor().detach().zeros_like(),
    }
}

/// `summed` (none before the first backward since a step) plus each variable's gradient in
/// `store`.
pub(super) fn accumulate(
    summed: Option<Vec<Tensor>>,
    store: &candle_core::backprop::GradStore,
    vars: &[Var],
) -> Result<Vec<Tensor>> {
    accumulate_parts(summed, grads_in(store, vars), vars)
}

/// Each variable's gradient in `store`, detached (see [`grad_of`]), `None` where it took no
/// part.
pub(super) fn grads_in(
    store: &candle_core::backprop::GradStore,
    vars: &[Var],
) -> Vec<Option<Tensor>> {
    vars.iter()
        .map(|var| store.get(var.as_tensor()).map(Tensor::detach))
        .collect()
}

/// `summed` (none before the first backward since a step) plus `parts[i]`, the gradient of
/// `vars[i]` (zeros where `None`).
pub(super) fn accumulate_parts(
    summed: Option<Vec<Tensor>>,
    parts: Vec<Option<Tensor>>,
    vars: &[Var],
) -> Result<Vec<Tensor>> {
    let mut summed = summed.unwrap_or_default();
    for (i, (var, part)) in vars.iter().zip(parts).enumerate() {
        match (summed.get(i), part) {
            (None, Some(g)) => summed.push(g),
            (None, None) => summed.push(var.as_tensor().detach().zeros_like()?),
            (Some(sum), Some(g)) => summed[i] = (sum + g)?,
            // Adding zeros changes nothing: skipped.
            (Some(_), None) => {}
        }
    }
    Ok(summed)
}
