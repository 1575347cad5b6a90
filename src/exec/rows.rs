//! Row buffers over every vertex of the graph: GNNPipe's history of a layer's input and its
//! cross-chunk gradients.

use candle_core::{Device, Tensor};

/// An `N x width` buffer of rows (history, cross-chunk gradients).
pub(super) struct Rows {
    width: usize,
    data: Vec<f32>,
}

impl Rows {
    pub(super) fn zeros(n: usize, width: usize) -> Self {
        Rows {
            width,
            data: vec![0.0; n * width],
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }

    pub(super) fn clear(&mut self) {
        self.data.fill(0.0);
    }

    /// `rows[i] = t[i]`.
    pub(super) fn write(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            self.data[v as usize * self.width..][..self.width]
                .copy_from_slice(&values[i * self.width..][..self.width]);
        }
        Ok(())
    }

    /// `rows[i] += t[i]`.
    pub(super) fn add(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            let dst = &mut self.data[v as usize * self.width..][..self.width];
            for (d, s) in dst.iter_mut().zip(&values[i * self.width..][..self.width]) {
                *d += s;
            }
        }
        Ok(())
    }

    /// The rows as a `(rows.len(), width)` tensor on `device`.
    pub(super) fn read(&self, rows: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let mut values = Vec::with_capacity(rows.len() * self.width);
        for &v in rows {
            values.extend_from_slice(&self.data[v as usize * self.width..][..self.width]);
        }
        Tensor::from_vec(values, (rows.len(), self.width), device)
    }
}
