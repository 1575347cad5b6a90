//! A streaming loader for OGB node-property dataset folders (`raw/`, `split/`), fed by a folder.
//!
//! The layout is the one `ogb` downloads for `ogbn-arxiv` or `ogbn-products` (see
//! `ogb/io/read_graph_raw.py` and `ogb/nodeproppred/dataset.py` in snap-stanford/ogb): CSV files
//! without headers, each gzip-compressed (`NAME.csv.gz`) or plain (`NAME.csv`):
//!
//! - `raw/num-node-list`: one line, the vertex count N; `raw/num-edge-list`: one line, the
//!   number of lines of `raw/edge`;
//! - `raw/edge`: one `src,dst` per line, 0-based; a directed list (arxiv's citations) or each
//!   undirected edge once (products, where OGB adds the inverse edges itself);
//! - `raw/node-label`: N lines, one class id each; an empty line or `NaN` is an unlabelled
//!   vertex (`-1`), as pandas writes a missing label;
//! - `raw/node-feat`: N lines of F comma-separated numbers;
//! - `split/NAME/{train,valid,test}`: vertex ids, one per line, in any order.
//!
//! Like the graph-csv loader ([`super::dataset`]) it opens nothing itself: the caller hands it a
//! [`Folder`] that opens a file by its path in the folder, so only `cli` does I/O. Unlike it, it
//! never holds a file's text: each file is decompressed and parsed line by line straight into
//! the final arrays, so a graph of ogbn-products' size loads at a peak about the size of its
//! arrays (the edge list is held beside the adjacency only while the adjacency is built, before
//! the larger features are read). Every problem is reported with the file's path in the folder
//! and the 1-based line.

use std::io::{BufRead, BufReader, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::csr::Csr;
use super::dataset::{parse_uint, show, Dataset, DatasetError};
use super::features::SparseFeatures;
use super::rng::Rng;

/// The most vertices a folder may have: 2^25, as for synthetic graphs (ogbn-products has
/// 2,449,029; ogbn-papers100M's 111 million are refused: plan it by its counts with `stats`).
pub const MAX_NODES: u64 = 1 << 25;
/// The most lines `raw/edge` may have: 2^26 (ogbn-products has 61,859,140).
pub const MAX_EDGES: u64 = 1 << 26;
/// The most feature values (N x F) a folder may have: 2^28, 2 GiB in memory (ogbn-products has
/// 244,902,900).
pub const MAX_FEATURE_VALUES: u64 = 1 << 28;
/// The most classes: 2^24, as for graphs given by their counts.
pub const MAX_CLASSES: u64 = 1 << 24;
/// The longest line read: 4 MiB (a row of 100 features is about 1 KB).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The files of one dataset folder.
pub trait Folder {
    /// Opens the file at `path` (relative, `/`-separated, e.g. `raw/edge.csv.gz`): `Ok(None)`
    /// if it does not exist, `Err(message)` if it cannot be opened.
    fn open(&mut self, path: &str) -> Result<Option<Box<dyn Read>>, String>;

    /// The names of the folders inside the folder at `path`, sorted; empty if it does not exist.
    fn subfolders(&mut self, path: &str) -> Result<Vec<String>, String>;
}

/// How a folder is read: the scenario's `graph.ogb` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OgbOptions {
    /// Add every edge's reverse (`true`, what GNN papers train on), or take the edge list as it
    /// is written (`false`), which must then list both directions of every edge.
    pub undirected: bool,
    /// The folder under `split/` to read; `None` takes the only one there is.
    pub split: Option<String>,
}

impl Default for OgbOptions {
    fn default() -> Self {
        OgbOptions {
            undirected: true,
            split: None,
        }
    }
}

/// Loads one OGB node-property dataset folder.
///
/// # Arguments
/// * `name`: the dataset's name (the folder's, e.g. `ogbn-arxiv`).
/// * `folder`: opens the folder's files.
/// * `options`: whether to add reverse edges, and which split.
///
/// # Returns
/// The dataset: the graph with self loops and repeated edges dropped, N x F features stored
/// sparse (zeros dropped), labels (`-1` for unlabelled), the split's vertices ascending; or the
/// first problem: a missing file, a line that is not what its file holds, counts that differ
/// from `num-node-list` or `num-edge-list`, an id out of range, feature rows of unequal width, a
/// split vertex that is unlabelled, repeated or in two splits, a size past the limits above, an
/// edge without its reverse (`undirected: false`), or data that is not gzip.
///
/// # Complexity
/// Linear in the size of the files, plus sorting each vertex's neighbours (and, with
/// `undirected: false`, the edge list). Memory: the arrays, plus the edge list (8 bytes per line
/// of `raw/edge`) while the adjacency is built.
pub fn load(
    name: &str,
    folder: &mut dyn Folder,
    options: &OgbOptions,
) -> Result<Dataset, DatasetError> {
    let n = read_count(folder, "raw/num-node-list", "vertices", MAX_NODES)?;
    let m = read_count(folder, "raw/num-edge-list", "edges", MAX_EDGES)?;
    let n = n as u32;
    let (labels, num_classes) = read_labels(folder, n)?;
    let graph = read_edges(folder, n, m, options.undirected)?;
    let features = read_features(folder, n)?;
    let [train, val, test] = read_split(folder, options.split.as_deref(), &labels)?;
    Ok(Dataset {
        name: name.to_owned(),
        graph,
        num_features: features.n_cols,
        num_classes,
        features: Some(features),
        labels,
        train,
        val,
        test,
    })
}

/// One file, read line by line.
struct Lines {
    /// The path in the folder, with its extension, for messages.
    file: String,
    reader: Box<dyn BufRead>,
    /// The line last returned, 1-based.
    line: usize,
    buf: Vec<u8>,
}

impl Lines {
    /// Opens `stem.csv.gz`, or else `stem.csv`; `Ok(None)` when neither exists.
    fn open(folder: &mut dyn Folder, stem: &str) -> Result<Option<Lines>, DatasetError> {
        for (extension, gzip) in [(".csv.gz", true), (".csv", false)] {
            let file = format!("{stem}{extension}");
            let opened = folder
                .open(&file)
                .map_err(|e| DatasetError::new(&file, None, format!("cannot read: {e}")))?;
            if let Some(read) = opened {
                let reader: Box<dyn BufRead> = if gzip {
                    Box::new(BufReader::with_capacity(
                        1 << 16,
                        MultiGzDecoder::new(BufReader::with_capacity(1 << 16, read)),
                    ))
                } else {
                    Box::new(BufReader::with_capacity(1 << 16, read))
                };
                return Ok(Some(Lines {
                    file,
                    reader,
                    line: 0,
                    buf: Vec::new(),
                }));
            }
        }
        Ok(None)
    }

    /// Opens `stem.csv.gz` or `stem.csv`, or says that neither is there.
    fn required(folder: &mut dyn Folder, stem: &str) -> Result<Lines, DatasetError> {
        Lines::open(folder, stem)?.ok_or_else(|| {
            DatasetError::new(
                &format!("{stem}.csv.gz"),
                None,
                format!("required file is missing (nor is there a plain {stem}.csv)"),
            )
        })
    }

    /// The next line without its `\n` (or `\r\n`), or `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<&[u8]>, DatasetError> {
        self.buf.clear();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let what = if self.file.ends_with(".gz") {
                        "cannot read or decompress (gzip)"
                    } else {
                        "cannot read"
                    };
                    return Err(self.error(self.line + 1, format!("{what}: {e}")));
                }
            };
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                // The last line has no newline; take it as it is.
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > MAX_LINE_BYTES {
                return Err(self.error(
                    self.line + 1,
                    format!("line is longer than {} MiB", MAX_LINE_BYTES >> 20),
                ));
            }
            self.buf.extend_from_slice(&available[..take]);
            self.reader.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some(&self.buf))
    }

    fn error(&self, line: usize, message: impl Into<String>) -> DatasetError {
        DatasetError::new(&self.file, Some(line), message)
    }

    /// The error for a file with fewer lines than expected.
    fn too_few(&self, what: &str, expected: u64, source: &str) -> DatasetError {
        DatasetError::new(
            &self.file,
            None,
            format!("has {} {what} but {source} says {expected}", self.line),
        )
    }
}

/// Makes room in a full `v` for `expected` elements in all: at once when the file has already
/// given an eighth of them, else by doubling (from 4,096). An honest file thus ends with an
/// exact allocation after one large copy of at most a quarter of it (the allocator copies on
/// growth), and a short file declaring millions allocates at most eight times what it holds.
fn reserve<T>(v: &mut Vec<T>, expected: u64) {
    if v.len() == v.capacity() {
        let expected = expected as usize;
        let target = if v.len() >= expected / 8 {
            expected
        } else {
            (2 * v.len()).max(4096).min(expected)
        };
        v.reserve_exact(target.saturating_sub(v.len()).max(1));
    }
}

/// Reads a one-line count file (`num-node-list`, `num-edge-list`) and checks it against `max`.
fn read_count(
    folder: &mut dyn Folder,
    stem: &str,
    what: &str,
    max: u64,
) -> Result<u64, DatasetError> {
    let mut lines = Lines::required(folder, stem)?;
    let Some(line) = lines.next_line()? else {
        return Err(DatasetError::new(
            &lines.file,
            None,
            format!("file is empty, expected the number of {what}"),
        ));
    };
    let count =
        parse_uint(line, &format!("the number of {what}")).map_err(|m| lines.error(1, m))?;
    if count > max {
        return Err(lines.error(
            1,
            format!(
                "{count} {what} is more than the {max} (2^{}) a dataset may have",
                max.trailing_zeros()
            ),
        ));
    }
    if let Some(extra) = lines.next_line()? {
        let message = if extra.is_empty() {
            "expected one line, found an empty line after it".to_owned()
        } else {
            "expected one line: a node-property dataset is one graph".to_owned()
        };
        return Err(lines.error(2, message));
    }
    Ok(count)
}

/// Reads `raw/node-label`: N labels, and the class count (the largest label plus one).
fn read_labels(folder: &mut dyn Folder, n: u32) -> Result<(Vec<i32>, u32), DatasetError> {
    let mut lines = Lines::required(folder, "raw/node-label")?;
    let mut labels: Vec<i32> = Vec::new();
    let mut classes = 0u32;
    while let Some(line) = lines.next_line()? {
        if labels.len() as u64 == u64::from(n) {
            let message = format!("more lines than the {n} vertices of raw/num-node-list");
            return Err(lines.error(lines.line, message));
        }
        let label = parse_label(line).map_err(|m| lines.error(lines.line, m))?;
        if let Some(label) = label {
            classes = classes.max(label + 1);
        }
        reserve(&mut labels, u64::from(n));
        labels.push(label.map_or(-1, |l| l as i32));
    }
    if labels.len() as u64 != u64::from(n) {
        return Err(lines.too_few("lines", u64::from(n), "raw/num-node-list"));
    }
    Ok((labels, classes))
}

/// One label: a class id (`3`, or `3.0` as pandas writes a column with missing values), or
/// `None` for an empty line or `NaN`.
fn parse_label(line: &[u8]) -> Result<Option<u32>, String> {
    if line.is_empty() || line.eq_ignore_ascii_case(b"nan") {
        return Ok(None);
    }
    if line.contains(&b',') {
        let found = 1 + line.iter().filter(|&&b| b == b',').count();
        return Err(format!(
            "expected one label per line, found {found} comma-separated values \
             (multi-task labels, as ogbn-proteins has, are not supported)"
        ));
    }
    let integral = match line.iter().position(|&b| b == b'.') {
        Some(dot) if line[dot + 1..].iter().all(|&b| b == b'0') => &line[..dot],
        Some(_) => return Err(format!("label `{}` is not a class id", show(line))),
        None => line,
    };
    let label = parse_uint(integral, "label").map_err(|_| {
        format!(
            "label `{}` is not a class id (an unsigned integer)",
            show(line)
        )
    })?;
    if label >= MAX_CLASSES {
        return Err(format!(
            "label {label} is too large: a dataset may have at most {MAX_CLASSES} (2^24) classes"
        ));
    }
    Ok(Some(label as u32))
}

/// Parses one vertex id of `line` and checks it is below `n`.
fn parse_vertex(field: &[u8], what: &str, n: u32) -> Result<u32, String> {
    let id = parse_uint(field, what)?;
    if id >= u64::from(n) {
        return Err(format!(
            "{what} {id} is out of range: raw/num-node-list says {n} vertices"
        ));
    }
    Ok(id as u32)
}

/// Reads `raw/edge` (`m` lines) into the adjacency.
fn read_edges(
    folder: &mut dyn Folder,
    n: u32,
    m: u64,
    undirected: bool,
) -> Result<Csr, DatasetError> {
    let mut lines = Lines::required(folder, "raw/edge")?;
    let mut edges: Vec<(u32, u32)> = Vec::new();
    while let Some(line) = lines.next_line()? {
        if edges.len() as u64 == m {
            let message = format!("more lines than the {m} edges of raw/num-edge-list");
            return Err(lines.error(lines.line, message));
        }
        let edge = edge_line(line, n).map_err(|e| lines.error(lines.line, e))?;
        reserve(&mut edges, m);
        edges.push(edge);
    }
    if edges.len() as u64 != m {
        return Err(lines.too_few("lines", m, "raw/num-edge-list"));
    }
    let file = lines.file.clone();
    drop(lines);
    if undirected {
        return Ok(Csr::from_undirected_edge_list(n as usize, edges));
    }
    let graph = Csr::from_undirected_edges(n as usize, &edges);
    if let Some((src, dst)) = one_way_edge(&mut edges, &graph) {
        drop(edges);
        let line = find_edge_line(folder, "raw/edge", (src, dst))?;
        return Err(DatasetError::new(
            &file,
            line,
            format!(
                "edge {src},{dst} has no reverse {dst},{src}: with `undirected: false` the \
                 edge list must list both directions of every edge (pipegnn trains on \
                 undirected graphs; leave `undirected` true to add the reverse edges)"
            ),
        ));
    }
    Ok(graph)
}

/// One `src,dst` line.
fn edge_line(line: &[u8], n: u32) -> Result<(u32, u32), String> {
    let mut fields = line.split(|&b| b == b',');
    let (Some(src), Some(dst), None) = (fields.next(), fields.next(), fields.next()) else {
        let found = 1 + line.iter().filter(|&&b| b == b',').count();
        return Err(format!(
            "expected 2 comma-separated fields (src,dst), found {found} in `{}`",
            show(line)
        ));
    };
    Ok((parse_vertex(src, "src", n)?, parse_vertex(dst, "dst", n)?))
}

/// An edge of the list, other than a self loop, whose reverse the list lacks, if there is one.
///
/// The list is symmetric exactly when its distinct non-loop edges are as many as the directed
/// edges of the symmetrized `graph` (which holds each of them and each one's reverse). Sorts
/// `edges` in place.
fn one_way_edge(edges: &mut [(u32, u32)], graph: &Csr) -> Option<(u32, u32)> {
    edges.sort_unstable();
    let mut distinct = 0u64;
    for (i, &(u, v)) in edges.iter().enumerate() {
        if u != v && (i == 0 || edges[i - 1] != (u, v)) {
            distinct += 1;
        }
    }
    if distinct == graph.n_directed_edges() {
        return None;
    }
    edges
        .iter()
        .find(|&&(u, v)| u != v && edges.binary_search(&(v, u)).is_err())
        .copied()
}

/// The line of `stem` holding `edge`, read again; `None` if it is not found there.
fn find_edge_line(
    folder: &mut dyn Folder,
    stem: &str,
    edge: (u32, u32),
) -> Result<Option<usize>, DatasetError> {
    let mut lines = Lines::required(folder, stem)?;
    while let Some(line) = lines.next_line()? {
        if edge_line(line, u32::MAX).ok() == Some(edge) {
            return Ok(Some(lines.line));
        }
    }
    Ok(None)
}

/// Reads `raw/node-feat`: N rows of the same width, stored sparse (zeros dropped).
fn read_features(folder: &mut dyn Folder, n: u32) -> Result<SparseFeatures, DatasetError> {
    let Some(mut lines) = Lines::open(folder, "raw/node-feat")? else {
        return Err(DatasetError::new(
            "raw/node-feat.csv.gz",
            None,
            "required file is missing (nor is there a plain raw/node-feat.csv): datasets \
             without vertex features are not supported",
        ));
    };
    let mut width = 0u32;
    // Rows times the width: what honest rows hold at most.
    let mut expected = 0u64;
    let mut offsets: Vec<u64> = vec![0];
    let mut columns: Vec<u32> = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let file = lines.file.clone();
    let mut row = 0u64;
    while let Some(line) = lines.next_line()? {
        row += 1;
        let error = |message: String| DatasetError::new(&file, Some(row as usize), message);
        if row > u64::from(n) {
            let message = format!("more lines than the {n} vertices of raw/num-node-list");
            return Err(error(message));
        }
        let found = 1 + line.iter().filter(|&&b| b == b',').count() as u64;
        if row == 1 {
            if found * u64::from(n) > MAX_FEATURE_VALUES {
                let message = format!(
                    "{n} rows of {found} values are more than the {MAX_FEATURE_VALUES} (2^28) \
                     feature values a dataset may have"
                );
                return Err(error(message));
            }
            width = found as u32;
            expected = found * u64::from(n);
        } else if found != u64::from(width) {
            let message = format!("expected {width} values (as on line 1), found {found}");
            return Err(error(message));
        }
        for (column, field) in line.split(|&b| b == b',').enumerate() {
            let value =
                parse_feature(field).map_err(|m| error(format!("value {}: {m}", column + 1)))?;
            if value != 0.0 {
                reserve(&mut columns, expected);
                reserve(&mut values, expected);
                columns.push(column as u32);
                values.push(value);
            }
        }
        reserve(&mut offsets, u64::from(n) + 1);
        offsets.push(columns.len() as u64);
    }
    if lines.line as u64 != u64::from(n) {
        return Err(lines.too_few("lines", u64::from(n), "raw/num-node-list"));
    }
    // Room reserved for zeros is given back only when it is more than a fifth of the room: the
    // allocator shrinks by copying, which would briefly double dense features.
    if columns.capacity() - columns.len() > columns.len() / 4 {
        columns.shrink_to_fit();
        values.shrink_to_fit();
    }
    Ok(SparseFeatures {
        n_rows: n,
        n_cols: width,
        offsets,
        columns,
        values,
    })
}

/// One feature value: a finite number as Rust reads a float (`1`, `-0.5`, `2.5e-3`).
fn parse_feature(field: &[u8]) -> Result<f32, String> {
    let text =
        std::str::from_utf8(field).map_err(|_| format!("`{}` is not a number", show(field)))?;
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(format!("`{}` is not a finite float32", show(field))),
        Err(_) if text.is_empty() => Err("is empty".to_owned()),
        Err(_) => Err(format!("`{}` is not a number", show(field))),
    }
}

/// The three splits' file stems under `split/NAME/`, with what messages call them.
const SPLITS: [(&str, &str); 3] = [
    ("train", "training"),
    ("valid", "validation"),
    ("test", "test"),
];

/// Reads `split/NAME/{train,valid,test}`: each split's vertices, ascending.
fn read_split(
    folder: &mut dyn Folder,
    name: Option<&str>,
    labels: &[i32],
) -> Result<[Vec<u32>; 3], DatasetError> {
    let found = folder
        .subfolders("split")
        .map_err(|e| DatasetError::new("split", None, format!("cannot list: {e}")))?;
    let name =
        match (name, found.as_slice()) {
            (Some(name), _) if found.iter().any(|f| f == name) => name.to_owned(),
            (Some(name), _) => {
                return Err(DatasetError::new(
                    &format!("split/{name}"),
                    None,
                    format!("no such split folder (split/ holds: {})", listing(&found)),
                ))
            }
            (None, [only]) => only.clone(),
            (None, []) => return Err(DatasetError::new(
                "split",
                None,
                "no split folder: expected split/NAME/train.csv.gz, valid.csv.gz and test.csv.gz",
            )),
            (None, _) => {
                return Err(DatasetError::new(
                    "split",
                    None,
                    format!(
                        "there are several splits ({}): name one with `split:`",
                        found.join(", ")
                    ),
                ))
            }
        };
    let n = labels.len() as u32;
    // Which split holds each vertex (0 = none), to check that the splits are disjoint.
    let mut split_of = vec![0u8; labels.len()];
    let mut splits: [Vec<u32>; 3] = Default::default();
    for (index, (stem, what)) in SPLITS.iter().enumerate() {
        let mut lines = Lines::required(folder, &format!("split/{name}/{stem}"))?;
        let vertices = &mut splits[index];
        while let Some(line) = lines.next_line()? {
            let v = parse_vertex(line, "vertex", n).map_err(|m| lines.error(lines.line, m))?;
            let tag = index as u8 + 1;
            let message = match split_of[v as usize] {
                0 if labels[v as usize] < 0 => {
                    format!("vertex {v} has no label but is in the {what} split")
                }
                0 => {
                    split_of[v as usize] = tag;
                    reserve(vertices, u64::from(n));
                    vertices.push(v);
                    continue;
                }
                other if other == tag => format!("vertex {v} is listed twice"),
                other => format!(
                    "vertex {v} is also in the {} split: the splits must be disjoint",
                    SPLITS[usize::from(other - 1)].1
                ),
            };
            return Err(lines.error(lines.line, message));
        }
        vertices.sort_unstable();
    }
    Ok(splits)
}

/// `a, b` or `none`: the folders under `split/`, for messages.
fn listing(found: &[String]) -> String {
    if found.is_empty() {
        "none".to_owned()
    } else {
        found.join(", ")
    }
}

/// Makes the file at a path in the folder (`raw/edge.csv.gz`, ...) with its parent folders, for
/// writing.
pub type CreateFile<'a> = dyn FnMut(&str) -> Result<Box<dyn Write>, String> + 'a;

/// A seeded OGB-layout folder for benchmarks: uniform random edges, labels, features and split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticOgb {
    /// Vertices.
    pub nodes: u32,
    /// Lines of `raw/edge` (one-way edges, no self loops; repeats possible).
    pub edges: u64,
    /// Feature width.
    pub features: u32,
    /// Classes.
    pub classes: u32,
    /// The seed.
    pub seed: u64,
}

/// Writes `spec` as gzip-compressed OGB files (fastest compression) through `create`. The split
/// is `split/random`: about 10% of the vertices train, 5% validate and 85% test, as products'
/// split leaves most vertices to test. Feature values are in (-1, 1) with four decimals.
///
/// # Complexity
/// Linear in the output; memory is constant (every file is streamed).
pub fn write_synthetic(spec: &SyntheticOgb, create: &mut CreateFile) -> Result<(), String> {
    let mut rng = Rng::new(spec.seed);
    let n = u64::from(spec.nodes);
    write_gz(create, "raw/num-node-list.csv.gz", &mut |out| {
        line(out, &[n])
    })?;
    write_gz(create, "raw/num-edge-list.csv.gz", &mut |out| {
        line(out, &[spec.edges])
    })?;
    write_gz(create, "raw/edge.csv.gz", &mut |out| {
        for _ in 0..spec.edges {
            let u = rng.below(n);
            // A vertex other than u, uniformly.
            let mut v = rng.below(n.saturating_sub(1));
            if v >= u {
                v += 1;
            }
            line(out, &[u, v.min(n.saturating_sub(1))])?;
        }
        Ok(())
    })?;
    write_gz(create, "raw/node-label.csv.gz", &mut |out| {
        for _ in 0..n {
            line(out, &[rng.below(u64::from(spec.classes))])?;
        }
        Ok(())
    })?;
    write_gz(create, "raw/node-feat.csv.gz", &mut |out| {
        let mut text = Vec::new();
        for _ in 0..n {
            text.clear();
            for column in 0..spec.features {
                if column > 0 {
                    text.push(b',');
                }
                // A value in (-1, 1) with four decimals: sign, "0.", four digits.
                let x = rng.below(20_000);
                if x >= 10_000 {
                    text.push(b'-');
                }
                let digits = x % 10_000;
                text.extend_from_slice(&[
                    b'0',
                    b'.',
                    b'0' + (digits / 1000) as u8,
                    b'0' + (digits / 100 % 10) as u8,
                    b'0' + (digits / 10 % 10) as u8,
                    b'0' + (digits % 10) as u8,
                ]);
            }
            text.push(b'\n');
            out.write_all(&text)?;
        }
        Ok(())
    })?;
    let mut split_of = Vec::with_capacity(spec.nodes as usize);
    for _ in 0..n {
        split_of.push(match rng.below(20) {
            0 | 1 => 0u8,
            2 => 1,
            _ => 2,
        });
    }
    for (index, (stem, _)) in SPLITS.iter().enumerate() {
        let path = format!("split/random/{stem}.csv.gz");
        write_gz(create, &path, &mut |out| {
            for (v, &s) in split_of.iter().enumerate() {
                if usize::from(s) == index {
                    line(out, &[v as u64])?;
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes one gzip file whose contents `body` writes.
fn write_gz(
    create: &mut CreateFile<'_>,
    path: &str,
    body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let file = create(path)?;
    let mut encoder = GzEncoder::new(file, Compression::fast());
    let written = (|| {
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut encoder);
        body(&mut buffered)?;
        buffered.flush()?;
        drop(buffered);
        encoder.try_finish()?;
        encoder.get_mut().flush()
    })();
    written.map_err(|e| format!("{path}: cannot write: {e}"))
}

/// Writes `values` comma-separated, then a newline.
fn line(out: &mut dyn Write, values: &[u64]) -> std::io::Result<()> {
    let mut text = [0u8; 64];
    let mut at = 0;
    for (i, &value) in values.iter().enumerate() {
        if i > 0 {
            text[at] = b',';
            at += 1;
        }
        let mut digits = [0u8; 20];
        let mut len = 0;
        let mut x = value;
        loop {
            digits[len] = b'0' + (x % 10) as u8;
            len += 1;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        for d in digits[..len].iter().rev() {
            text[at] = *d;
            at += 1;
        }
    }
    text[at] = b'\n';
    out.write_all(&text[..=at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Cursor;

    /// Files written by path, shared with the writers that fill them.
    type Files = std::rc::Rc<std::cell::RefCell<Vec<(String, Vec<u8>)>>>;

    /// A folder in memory: file bytes by path.
    struct Memory(BTreeMap<String, Vec<u8>>);

    impl Folder for Memory {
        fn open(&mut self, path: &str) -> Result<Option<Box<dyn Read>>, String> {
            Ok(self
                .0
                .get(path)
                .map(|bytes| Box::new(Cursor::new(bytes.clone())) as Box<dyn Read>))
        }

        fn subfolders(&mut self, path: &str) -> Result<Vec<String>, String> {
            let prefix = format!("{path}/");
            let names: BTreeSet<String> = self
                .0
                .keys()
                .filter_map(|key| key.strip_prefix(&prefix))
                .filter_map(|rest| rest.split_once('/').map(|(dir, _)| dir.to_owned()))
                .collect();
            Ok(names.into_iter().collect())
        }
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    /// The tiny folder's files by stem: five vertices, a triangle 0-1-2 given with one repeat
    /// (1,0) and a self loop (3,3); vertex 2 unlabelled (an empty line), vertex 4 `NaN`.
    fn tiny_files() -> Vec<(&'static str, &'static str)> {
        vec![
            ("raw/num-node-list", "5\n"),
            ("raw/num-edge-list", "5\n"),
            ("raw/edge", "0,1\n1,2\n2,0\n3,3\n1,0\n"),
            ("raw/node-label", "1\n0\n\n2\nNaN\n"),
            (
                "raw/node-feat",
                "0.5,0,1\n0,0,0\n-1.25,2e-1,0\n1,1,1\n0,0,3\n",
            ),
            ("split/time/train", "3\n0\n"),
            ("split/time/valid", "1\n"),
            ("split/time/test", ""),
        ]
    }

    /// `files` as a folder, each file gzip-compressed (`.csv.gz`) or plain (`.csv`).
    fn folder(files: &[(&str, &str)], gzipped: bool) -> Memory {
        Memory(
            files
                .iter()
                .map(|(stem, text)| {
                    if gzipped {
                        (format!("{stem}.csv.gz"), gzip(text.as_bytes()))
                    } else {
                        (format!("{stem}.csv"), text.as_bytes().to_vec())
                    }
                })
                .collect(),
        )
    }

    /// The tiny folder with `stem`'s text replaced (or the file removed, for `None`).
    fn with(stem: &str, text: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
        let mut files = tiny_files();
        let at = files.iter().position(|(s, _)| *s == stem);
        match (at, text) {
            (Some(at), Some(text)) => files[at].1 = text,
            (Some(at), None) => {
                files.remove(at);
            }
            (None, Some(text)) => files.push((Box::leak(stem.to_owned().into_boxed_str()), text)),
            (None, None) => {}
        }
        files
    }

    fn load_files(files: &[(&str, &str)], options: &OgbOptions) -> Result<Dataset, String> {
        load("tiny", &mut folder(files, true), options).map_err(|e| e.to_string())
    }

    fn error(files: &[(&str, &str)]) -> String {
        load_files(files, &OgbOptions::default()).unwrap_err()
    }

    #[test]
    fn loads_every_array_exactly() {
        let d = load(
            "tiny",
            &mut folder(&tiny_files(), true),
            &OgbOptions::default(),
        )
        .unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!(d.graph.n_nodes(), 5);
        assert_eq!(d.graph.offsets(), &[0, 2, 4, 6, 6, 6]);
        assert_eq!(d.graph.targets(), &[1, 2, 0, 2, 0, 1]);
        assert_eq!(d.labels, vec![1, 0, -1, 2, -1]);
        assert_eq!((d.num_classes, d.num_features), (3, 3));
        let f = d.features.unwrap();
        assert_eq!((f.n_rows, f.n_cols), (5, 3));
        assert_eq!(f.offsets, vec![0, 2, 2, 4, 7, 8]);
        assert_eq!(f.columns, vec![0, 2, 0, 1, 0, 1, 2, 2]);
        assert_eq!(f.values, vec![0.5, 1.0, -1.25, 0.2, 1.0, 1.0, 1.0, 3.0]);
        assert_eq!((d.train, d.val, d.test), (vec![0, 3], vec![1], vec![]));
    }

    #[test]
    fn plain_gzip_and_mixed_folders_load_the_same() {
        let options = OgbOptions::default();
        let gz = load("tiny", &mut folder(&tiny_files(), true), &options).unwrap();
        let plain = load("tiny", &mut folder(&tiny_files(), false), &options).unwrap();
        assert_eq!(gz, plain);
        let mut mixed = folder(&tiny_files(), true);
        let edges = mixed.0.remove("raw/edge.csv.gz").unwrap();
        let text = flate2::read::GzDecoder::new(&edges[..]);
        let mut plain_edges = Vec::new();
        BufReader::new(text).read_to_end(&mut plain_edges).unwrap();
        mixed.0.insert("raw/edge.csv".to_owned(), plain_edges);
        assert_eq!(load("tiny", &mut mixed, &options).unwrap(), gz);
    }

    #[test]
    fn windows_line_ends_and_a_missing_last_newline_are_read() {
        let files = with("raw/edge", Some("0,1\r\n1,2\r\n2,0\r\n3,3\r\n1,0"));
        let d = load_files(&files, &OgbOptions::default()).unwrap();
        assert_eq!(d.graph.targets(), &[1, 2, 0, 2, 0, 1]);
    }

    #[test]
    fn gzip_members_concatenated_are_one_file() {
        let mut files = folder(&tiny_files(), true);
        let mut edges = gzip(b"0,1\n1,2\n");
        edges.extend(gzip(b"2,0\n3,3\n1,0\n"));
        files.0.insert("raw/edge.csv.gz".to_owned(), edges);
        let d = load("tiny", &mut files, &OgbOptions::default()).unwrap();
        assert_eq!(d.graph.n_undirected_edges(), 3);
    }

    #[test]
    fn kept_edges_must_list_both_directions() {
        let kept = OgbOptions {
            undirected: false,
            split: None,
        };
        assert_eq!(
            load_files(&tiny_files(), &kept).unwrap_err(),
            "raw/edge.csv.gz:2: edge 1,2 has no reverse 2,1: with `undirected: false` the edge \
             list must list both directions of every edge (pipegnn trains on undirected graphs; \
             leave `undirected` true to add the reverse edges)"
        );
        let both = with("raw/edge", Some("0,1\n1,2\n2,0\n3,3\n1,0\n2,1\n0,2\n"));
        let both = with_count(&both, "7\n");
        let d = load_files(&both, &kept).unwrap();
        assert_eq!(
            d,
            load_files(&tiny_files(), &OgbOptions::default()).unwrap()
        );
    }

    fn with_count(
        files: &[(&'static str, &'static str)],
        edges: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        let mut files = files.to_vec();
        for file in &mut files {
            if file.0 == "raw/num-edge-list" {
                file.1 = edges;
            }
        }
        files
    }

    #[test]
    fn split_folder_by_name_when_there_are_several() {
        let mut files = tiny_files();
        files.push(("split/random/train", "1\n"));
        files.push(("split/random/valid", "0\n"));
        files.push(("split/random/test", "3\n"));
        assert_eq!(
            error(&files),
            "split: there are several splits (random, time): name one with `split:`"
        );
        let options = OgbOptions {
            undirected: true,
            split: Some("random".to_owned()),
        };
        let d = load_files(&files, &options).unwrap();
        assert_eq!((d.train, d.val, d.test), (vec![1], vec![0], vec![3]));
        let options = OgbOptions {
            undirected: true,
            split: Some("species".to_owned()),
        };
        assert_eq!(
            load_files(&files, &options).unwrap_err(),
            "split/species: no such split folder (split/ holds: random, time)"
        );
    }

    #[test]
    fn each_problem_names_its_file_and_line() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                with("raw/edge", None),
                "raw/edge.csv.gz: required file is missing (nor is there a plain raw/edge.csv)",
            ),
            (
                with("raw/node-feat", None),
                "raw/node-feat.csv.gz: required file is missing (nor is there a plain \
                 raw/node-feat.csv): datasets without vertex features are not supported",
            ),
            (
                with("raw/edge", Some("0,1\n1,x\n")),
                "raw/edge.csv.gz:2: dst `x` is not an unsigned integer",
            ),
            (
                with("raw/edge", Some("0,1\n1\n")),
                "raw/edge.csv.gz:2: expected 2 comma-separated fields (src,dst), found 1 in `1`",
            ),
            (
                with("raw/edge", Some("0,1\n1,2,3\n")),
                "raw/edge.csv.gz:2: expected 2 comma-separated fields (src,dst), found 3 in \
                 `1,2,3`",
            ),
            (
                with("raw/edge", Some("0,1\n7,2\n")),
                "raw/edge.csv.gz:2: src 7 is out of range: raw/num-node-list says 5 vertices",
            ),
            (
                with("raw/edge", Some("0,1\n1,2\n")),
                "raw/edge.csv.gz: has 2 lines but raw/num-edge-list says 5",
            ),
            (
                with("raw/edge", Some("0,1\n1,2\n2,0\n3,3\n1,0\n0,4\n")),
                "raw/edge.csv.gz:6: more lines than the 5 edges of raw/num-edge-list",
            ),
            (
                with("raw/num-node-list", Some("5\n5\n")),
                "raw/num-node-list.csv.gz:2: expected one line: a node-property dataset is one \
                 graph",
            ),
            (
                with("raw/num-node-list", Some("")),
                "raw/num-node-list.csv.gz: file is empty, expected the number of vertices",
            ),
            (
                with("raw/num-node-list", Some("33554433\n")),
                "raw/num-node-list.csv.gz:1: 33554433 vertices is more than the 33554432 \
                 (2^25) a dataset may have",
            ),
            (
                with("raw/num-edge-list", Some("-5\n")),
                "raw/num-edge-list.csv.gz:1: the number of edges `-5` is not an unsigned \
                 integer",
            ),
            (
                with("raw/node-label", Some("1\n0\n")),
                "raw/node-label.csv.gz: has 2 lines but raw/num-node-list says 5",
            ),
            (
                with("raw/node-label", Some("1\n0\n1.5\n")),
                "raw/node-label.csv.gz:3: label `1.5` is not a class id",
            ),
            (
                with("raw/node-label", Some("1\n0,1\n")),
                "raw/node-label.csv.gz:2: expected one label per line, found 2 comma-separated \
                 values (multi-task labels, as ogbn-proteins has, are not supported)",
            ),
            (
                with("raw/node-label", Some("1\n-1\n")),
                "raw/node-label.csv.gz:2: label `-1` is not a class id (an unsigned integer)",
            ),
            (
                with("raw/node-feat", Some("1,2,3\n1,2\n")),
                "raw/node-feat.csv.gz:2: expected 3 values (as on line 1), found 2",
            ),
            (
                with("raw/node-feat", Some("1,2,3\n1,abc,3\n")),
                "raw/node-feat.csv.gz:2: value 2: `abc` is not a number",
            ),
            (
                with("raw/node-feat", Some("1,2,3\n1,,3\n")),
                "raw/node-feat.csv.gz:2: value 2: is empty",
            ),
            (
                with("raw/node-feat", Some("1,2,3\n1,2,1e39\n")),
                "raw/node-feat.csv.gz:2: value 3: `1e39` is not a finite float32",
            ),
            (
                with("raw/node-feat", Some("1\n2\n3\n4\n5\n6\n")),
                "raw/node-feat.csv.gz:6: more lines than the 5 vertices of raw/num-node-list",
            ),
            (
                with("raw/node-feat", Some("1\n2\n")),
                "raw/node-feat.csv.gz: has 2 lines but raw/num-node-list says 5",
            ),
            (
                with("split/time/valid", Some("1\n9\n")),
                "split/time/valid.csv.gz:2: vertex 9 is out of range: raw/num-node-list says 5 \
                 vertices",
            ),
            (
                with("split/time/valid", Some("1\n1\n")),
                "split/time/valid.csv.gz:2: vertex 1 is listed twice",
            ),
            (
                with("split/time/valid", Some("1\n3\n")),
                "split/time/valid.csv.gz:2: vertex 3 is also in the training split: the splits \
                 must be disjoint",
            ),
            (
                with("split/time/test", Some("2\n")),
                "split/time/test.csv.gz:1: vertex 2 has no label but is in the test split",
            ),
            (
                with("split/time/test", None),
                "split/time/test.csv.gz: required file is missing (nor is there a plain \
                 split/time/test.csv)",
            ),
        ];
        for (files, expected) in cases {
            assert_eq!(error(&files), expected);
        }
        let no_split: Vec<_> = tiny_files()
            .into_iter()
            .filter(|(stem, _)| !stem.starts_with("split/"))
            .collect();
        assert_eq!(
            error(&no_split),
            "split: no split folder: expected split/NAME/train.csv.gz, valid.csv.gz and \
             test.csv.gz"
        );
    }

    #[test]
    fn data_that_is_not_gzip_or_is_cut_short() {
        let mut files = folder(&tiny_files(), true);
        files
            .0
            .insert("raw/edge.csv.gz".to_owned(), b"0,1\n1,2\n".to_vec());
        let err = load("tiny", &mut files, &OgbOptions::default()).unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(
            err.to_string()
                .starts_with("raw/edge.csv.gz:1: cannot read or decompress (gzip): "),
            "{err}"
        );
        let whole = gzip("0,1\n".repeat(5000).as_bytes());
        let files = &mut folder(&tiny_files(), true);
        files
            .0
            .insert("raw/num-edge-list.csv.gz".to_owned(), gzip(b"5000\n"));
        files.0.insert(
            "raw/edge.csv.gz".to_owned(),
            whole[..whole.len() / 2].to_vec(),
        );
        let err = load("tiny", files, &OgbOptions::default()).unwrap_err();
        assert_eq!(err.file, "raw/edge.csv.gz");
        assert!(err.line.is_some(), "{err}");
        assert!(err.message.contains("gzip"), "{err}");
    }

    #[test]
    fn a_line_past_the_limit_is_refused_before_it_is_held() {
        let long = "1,".repeat(MAX_LINE_BYTES / 2 + 1);
        let files = with("raw/node-feat", Some(Box::leak(long.into_boxed_str())));
        assert_eq!(
            error(&files),
            "raw/node-feat.csv.gz:1: line is longer than 4 MiB"
        );
    }

    #[test]
    fn features_past_the_limit_are_refused_at_the_first_row() {
        let files = with("raw/node-feat", Some("1,2,3,4,5,6,7,8,9\n"));
        let err = read_features(&mut folder(&files, true), 1 << 25).unwrap_err();
        assert_eq!(
            err.to_string(),
            "raw/node-feat.csv.gz:1: 33554432 rows of 9 values are more than the 268435456 \
             (2^28) feature values a dataset may have"
        );
    }

    #[test]
    fn a_declared_count_alone_allocates_nothing_large() {
        let mut v: Vec<u32> = Vec::new();
        reserve(&mut v, 1 << 26);
        assert_eq!(v.capacity(), 4096);
        v.resize(4096, 0);
        reserve(&mut v, 1 << 26);
        assert_eq!(v.capacity(), 8192);
        v.resize(8192, 0);
        reserve(&mut v, 60_000);
        assert_eq!(v.capacity(), 60_000);
    }

    #[test]
    fn the_synthetic_folder_loads_with_its_counts() {
        let spec = SyntheticOgb {
            nodes: 1000,
            edges: 5000,
            features: 8,
            classes: 5,
            seed: 3,
        };
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let shared = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(String, Vec<u8>)>::new()));
        {
            struct Sink(Files, usize);
            impl Write for Sink {
                fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                    self.0.borrow_mut()[self.1].1.extend_from_slice(buf);
                    Ok(buf.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let mut create = |path: &str| -> Result<Box<dyn Write>, String> {
                let mut all = shared.borrow_mut();
                all.push((path.to_owned(), Vec::new()));
                Ok(Box::new(Sink(shared.clone(), all.len() - 1)))
            };
            write_synthetic(&spec, &mut create).unwrap();
        }
        files.extend(shared.borrow().iter().cloned());
        let d = load("synthetic", &mut Memory(files), &OgbOptions::default()).unwrap();
        assert_eq!(d.graph.n_nodes(), 1000);
        // 5,000 one-way edges between random pairs: a few repeat in either direction.
        assert!((4900..=5000).contains(&d.graph.n_undirected_edges()));
        assert_eq!((d.num_features, d.num_classes), (8, 5));
        assert_eq!(d.train.len() + d.val.len() + d.test.len(), 1000);
        assert!(d.train.len() > 50 && d.val.len() > 20);
    }
}
