//! Row buffers over vertices of the graph: GNNPipe's history of a layer's input and its
//! cross-chunk gradients, over every vertex, or (GNNPipe's hybrid) over the rows one partition
//! owns or reads.

use std::sync::Arc;

use candle_core::{Device, Tensor};

/// A buffer of `width`-wide rows, one per vertex it holds: every vertex, or those a [`Slots`]
/// map lists.
pub(super) struct Rows {
    width: usize,
    slots: Option<Arc<Slots>>,
    data: Vec<f32>,
}

/// Which row of a buffer holds each vertex: vertex -> slot, `u32::MAX` for none; and how many
/// do.
pub(super) struct Slots(Vec<u32>, usize);

impl Slots {
    /// Slots for `vertices` (distinct), in their order, among `n` vertices.
    pub(super) fn new(n: usize, vertices: impl IntoIterator<Item = u32>) -> Self {
        let mut slot = vec![u32::MAX; n];
        let mut next = 0;
        for v in vertices {
            if slot[v as usize] == u32::MAX {
                slot[v as usize] = next;
                next += 1;
            }
        }
        Slots(slot, next as usize)
    }
}

impl Rows {
    /// Zeros for each of `n` vertices.
    pub(super) fn zeros(n: usize, width: usize) -> Self {
        Rows {
            width,
            slots: None,
            data: vec![0.0; n * width],
        }
    }

    /// Zeros for the vertices `slots` lists.
    pub(super) fn zeros_over(slots: Arc<Slots>, width: usize) -> Self {
        let n = slots.1;
        Rows {
            width,
            slots: Some(slots),
            data: vec![0.0; n * width],
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }

    pub(super) fn clear(&mut self) {
        self.data.fill(0.0);
    }

    /// Where vertex `v`'s row starts in `data`.
    fn at(&self, v: u32) -> candle_core::Result<usize> {
        let row = match &self.slots {
            None => v as usize,
            Some(slots) => match slots.0.get(v as usize) {
                Some(&s) if s != u32::MAX => s as usize,
                _ => candle_core::bail!("vertex {v} has no row in this buffer"),
            },
        };
        Ok(row * self.width)
    }

    /// `rows[i] = t[i]`.
    pub(super) fn write(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            let at = self.at(v)?;
            self.data[at..][..self.width].copy_from_slice(&values[i * self.width..][..self.width]);
        }
        Ok(())
    }

    /// `rows[i] += t[i]`.
    pub(super) fn add(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            let at = self.at(v)?;
            let dst = &mut self.data[at..][..self.width];
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
            let at = self.at(v)?;
            values.extend_from_slice(&self.data[at..][..self.width]);
        }
        Tensor::from_vec(values, (rows.len(), self.width), device)
    }
}
