//! The GNN workload: layers and their parameters, how a model splits into stages, and the rows
//! and edges each layer touches for a chunk under each halo rule.

pub mod model;
pub mod stats_model;
pub mod work;

pub use model::{split_stages, GnnModel, Layer, LayerKind};
pub use work::{GraphMetrics, Halo, LayerRows};
