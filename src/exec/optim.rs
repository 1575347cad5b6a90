//! Adam with L2 weight decay added to the gradient, as `torch.optim.Adam(weight_decay=...)`,
//! and the summing of parameter gradients over the chunks (or partitions) a step applies.

use candle_core::{Result, Tensor, Var};

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
        for (i, var) in self.vars.iter().enumerate() {
            // Detached throughout: the moments must not keep a graph alive across steps.
            let value = var.as_tensor().detach();
            let grad = (grads[i].detach() + (&value * c.weight_decay)?)?;
            self.first[i] = ((&self.first[i] * c.beta1)? + (&grad * (1.0 - c.beta1))?)?;
            self.second[i] = ((&self.second[i] * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&self.first[i] / correction1)?;
            let v_hat = (&self.second[i] / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            var.set(&(value - (update * c.lr)?)?)?;
        }
        Ok(())
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
    let mut summed = summed.unwrap_or_default();
    for (i, var) in vars.iter().enumerate() {
        let g = grad_of(store, var)?;
        if summed.len() <= i {
            summed.push(g);
        } else {
            summed[i] = (&summed[i] + g)?;
        }
    }
    Ok(summed)
}
