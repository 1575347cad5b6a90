//! Dropout decisions as pure functions of a key: a counter-based stream (the splitmix64
//! finaliser), so a mask entry depends on the seed, epoch, layer, vertex and column or edge, never
//! on which chunk, stage, thread or op draws it. Feature dropout (`exec::layers`) and attention
//! dropout (`exec::attention`, drawn inside the fused op) share it.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// Multiplier that spreads a vertex id over a row key.
pub(super) const ROW: u64 = 0x9E37_79B9_7F4A_7C15;
/// Multiplier that spreads a column (or source and head) over an entry key.
const COLUMN: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// The splitmix64 finaliser: a counter-based stream, so a mask entry is a pure function of its
/// key.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keep-or-drop decisions for inverted dropout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Keep {
    threshold: u64,
    scale: f32,
}

impl Keep {
    /// Decisions that drop with probability `p`, in `[0, 1)`.
    pub(super) fn new(p: f64) -> Self {
        let keep = 1.0 - p;
        Keep {
            // 24-bit draws resolve the keep probability to 1/16M.
            threshold: (keep * f64::from(1u32 << 24)).round() as u64,
            scale: (1.0 / keep) as f32,
        }
    }

    /// The key of the row of vertex `vertex` under `key`.
    pub(super) fn row_key(key: u64, vertex: u32) -> u64 {
        mix(key ^ u64::from(vertex).wrapping_mul(ROW))
    }

    /// The factor of entry `column` of the row keyed `row_key`: `1 / (1 - p)` or zero.
    pub(super) fn scale(&self, row_key: u64, column: u64) -> f32 {
        if mix(row_key ^ column.wrapping_mul(COLUMN)) >> 40 < self.threshold {
            self.scale
        } else {
            0.0
        }
    }

    /// The factor a kept entry is multiplied by, `1 / (1 - p)`.
    pub(super) fn kept_scale(&self) -> f32 {
        self.scale
    }
}

/// Inverted dropout on attention coefficients: edge `(i, j)`'s head `h` is kept or dropped by
/// its destination vertex, source vertex and head, whichever chunk holds the edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeDropout {
    keep: Keep,
    key: u64,
}

impl EdgeDropout {
    /// Drops with probability `p` (in `[0, 1)`), the stream keyed by `key`.
    pub fn new(p: f64, key: u64) -> Self {
        EdgeDropout {
            keep: Keep::new(p),
            key,
        }
    }

    /// The key of destination vertex `vertex`'s edges.
    pub(super) fn row_key(&self, vertex: u32) -> u64 {
        Keep::row_key(self.key, vertex)
    }

    /// The factor of head `head` on the edge from `source` into the row keyed `row_key`.
    pub(super) fn scale(&self, row_key: u64, source: u32, head: usize) -> f32 {
        self.keep
            .scale(row_key, u64::from(source) << 8 | head as u64)
    }

    /// The factor a kept coefficient is multiplied by.
    pub(super) fn kept_scale(&self) -> f32 {
        self.keep.kept_scale()
    }
}

/// `x * mask` elementwise, differentiable in `x`: on the CPU one op that keeps the mask for its
/// backward (no mask tensor, no broadcasting multiplication either way); elsewhere candle's
/// multiplication.
pub(super) fn apply_mask(x: &Tensor, mask: Vec<f32>) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        return x * mask;
    }
    if mask.len() != x.elem_count() {
        candle_core::bail!(
            "dropout: {} mask entries for {} numbers",
            mask.len(),
            x.elem_count()
        );
    }
    x.contiguous()?.apply_op1(Masked(mask))
}

/// [`apply_mask`]'s op.
struct Masked(Vec<f32>);

impl CustomOp1 for Masked {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("dropout works on f32 tensors");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("dropout needs a contiguous input");
        };
        let out = data[start..end]
            .iter()
            .zip(&self.0)
            .map(|(x, m)| x * m)
            .collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let d = grad.iter().zip(&self.0).map(|(g, m)| g * m).collect();
        Ok(Some(Tensor::from_vec(d, arg.shape(), arg.device())?))
    }
}
