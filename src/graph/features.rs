//! Sparse node-feature matrices in compressed sparse rows.

/// A sparse row-major feature matrix (CSR).
///
/// Row `r` holds `columns[offsets[r]..offsets[r + 1]]`, ascending and without repeats, with the
/// matching `values`. Entries that are not listed are 0.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseFeatures {
    /// The number of rows (one per node).
    pub n_rows: u32,
    /// The number of columns (the feature width).
    pub n_cols: u32,
    /// `n_rows + 1` row offsets into `columns` and `values`, from 0 to `nnz()`.
    pub offsets: Vec<u64>,
    /// Column of each stored entry, ascending within a row.
    pub columns: Vec<u32>,
    /// Value of each stored entry.
    pub values: Vec<f32>,
}

impl SparseFeatures {
    /// The number of stored entries.
    pub fn nnz(&self) -> u64 {
        self.columns.len() as u64
    }

    /// The columns and values of row `r`.
    ///
    /// # Panics
    /// If `r >= n_rows`, or the offsets do not fit the entries.
    pub fn row(&self, r: u32) -> (&[u32], &[f32]) {
        let start = self.offsets[r as usize] as usize;
        let end = self.offsets[r as usize + 1] as usize;
        (&self.columns[start..end], &self.values[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_slice_the_entries() {
        let f = SparseFeatures {
            n_rows: 3,
            n_cols: 4,
            offsets: vec![0, 2, 2, 3],
            columns: vec![0, 3, 1],
            values: vec![1.0, 0.5, 2.0],
        };
        assert_eq!(f.nnz(), 3);
        assert_eq!(f.row(0), (&[0u32, 3][..], &[1.0f32, 0.5][..]));
        assert_eq!(f.row(1), (&[][..], &[][..]));
        assert_eq!(f.row(2), (&[1u32][..], &[2.0f32][..]));
    }
}
