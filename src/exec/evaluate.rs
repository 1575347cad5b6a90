//! The evaluator: accuracy on the training, validation and test splits after each epoch, from
//! the parameters the workers report, on the CPU.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use super::data::{ChunkPlan, Needs, PlanShape};
use super::input::ExecInput;
use super::layers::StageInput;
use super::sparse::SparseMatrix;
use crate::gnn::Halo;

/// Accuracy after each epoch: the model's forward with dropout off, over the chunks' induced
/// subgraphs for halo `drop` (how such a pipeline infers) and over the whole graph otherwise.
pub(super) struct Evaluator {
    plans: Vec<ChunkPlan>,
    features: Vec<SparseMatrix>,
}

impl Evaluator {
    pub(super) fn new(input: &ExecInput<'_>) -> Self {
        let all = 0..input.model.layers.len();
        let plans: Vec<ChunkPlan> = match input.halo {
            Halo::Drop => input
                .members()
                .into_iter()
                .map(|vertices| input.plan(vertices, all.clone()))
                .collect(),
            _ => {
                let everyone: Vec<u32> = (0..input.graph.n_nodes() as u32).collect();
                let shape = PlanShape {
                    layers: all.clone(),
                    n_layers: all.end,
                    needs: Needs::of(input.model),
                };
                vec![ChunkPlan::neighbours(input.graph, everyone, |_| 0, &shape)]
            }
        };
        let features = plans
            .iter()
            .map(|p| input.data.feature_rows(&p.layer(0).read))
            .collect();
        Evaluator { plans, features }
    }

    pub(super) fn accuracy(
        &self,
        input: &ExecInput<'_>,
        params: &BTreeMap<u32, Vec<Tensor>>,
    ) -> candle_core::Result<(f64, f64, f64)> {
        let device = Device::Cpu;
        let layers = input.build_model(&device)?;
        let all = 0..input.model.layers.len();
        let model = input.stage_model(layers, &all);
        let vars = model.vars();
        let values: Vec<&Tensor> = params.values().flatten().collect();
        if values.len() != vars.len() {
            candle_core::bail!(
                "the workers reported {} parameters for a model of {}",
                values.len(),
                vars.len()
            );
        }
        for (var, value) in vars.iter().zip(values) {
            var.set(value)?;
        }
        let mut predicted = vec![u32::MAX; input.data.labels.len()];
        for (plan, features) in self.plans.iter().zip(&self.features) {
            let mut h = StageInput::Sparse(features.clone());
            let mut logits = None;
            for l in all.clone() {
                let graph = plan.layer(l);
                let out = model.layer_forward(
                    l,
                    h,
                    graph,
                    graph.attention.as_ref().map(|a| &a.edges),
                    None,
                )?;
                h = StageInput::Dense(out.clone());
                logits = Some(out);
            }
            let classes = logits
                .expect("a model has a layer")
                .argmax(1)?
                .to_vec1::<u32>()?;
            for (&v, class) in plan.vertices.iter().zip(classes) {
                predicted[v as usize] = class;
            }
        }
        let accuracy = |split: &[u32]| {
            let correct = split
                .iter()
                .filter(|&&v| {
                    i64::from(predicted[v as usize]) == i64::from(input.data.labels[v as usize])
                })
                .count();
            correct as f64 / split.len().max(1) as f64
        };
        Ok((
            accuracy(&input.data.train),
            accuracy(&input.data.val),
            accuracy(&input.data.test),
        ))
    }
}
