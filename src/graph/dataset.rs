//! A strict loader for graph-csv v1 dataset folders (shared/data/README.md), fed by a file reader.
//!
//! The loader never touches the filesystem: the caller passes a function that returns a file's
//! text by name, so only `cli` does I/O and tests can feed texts from memory. Every promise of the
//! format is checked, and the first violation is reported with its file, 1-based line and reason.
//!
//! Files are read in this order, each checked fully before the next: `meta.json`, `labels.csv`
//! (which fixes the node count before anything is allocated from it), `edges.csv`,
//! `features.csv`, `train_idx.csv`, `val_idx.csv`, `test_idx.csv`.

use serde_json::Value;

use super::csr::Csr;
use super::features::SparseFeatures;

/// One graph-csv v1 dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `meta.name`, for example `cora`.
    pub name: String,
    /// The undirected graph.
    pub graph: Csr,
    /// `meta.num_features`: the feature width, also when the features are not included.
    pub num_features: u32,
    /// `meta.num_classes`.
    pub num_classes: u32,
    /// The feature matrix, `None` when `meta.features_available` is false.
    pub features: Option<SparseFeatures>,
    /// One label per node, in `0..num_classes`, or -1 for unlabelled.
    pub labels: Vec<i32>,
    /// Training nodes, ascending.
    pub train: Vec<u32>,
    /// Validation nodes, ascending.
    pub val: Vec<u32>,
    /// Test nodes, ascending.
    pub test: Vec<u32>,
}

/// A problem with a dataset file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct DatasetError {
    /// The file's name inside the dataset folder, for example `edges.csv`.
    pub file: String,
    /// The 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong, as a lowercase fragment.
    pub message: String,
}

impl DatasetError {
    pub(super) fn new(file: &str, line: Option<usize>, message: impl Into<String>) -> DatasetError {
        DatasetError {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// Loads one graph-csv v1 dataset.
///
/// # Arguments
/// * `read`: `read(name)` returns the text of file `name` in the dataset folder (`"meta.json"`,
///   `"edges.csv"`, ...), `Ok(None)` if it does not exist, `Err(message)` if it cannot be read.
///
/// # Returns
/// The dataset, or the first violation of the format: a missing required file, a bad header,
/// field count or number, an id out of range, rows out of order or repeated, a row count that
/// differs from `meta.json`, a label outside `[-1, C)`, overlapping or unlabelled split nodes,
/// a `\r`, or a missing newline at the end of a file.
///
/// # Complexity
/// Linear in the size of the files.
pub fn load(
    read: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<Dataset, DatasetError> {
    let meta = Meta::parse(&required(read, META)?)?;
    let labels = parse_labels(&required(read, LABELS)?, &meta)?;
    let graph = parse_edges(&required(read, EDGES)?, &meta)?;
    let features = if meta.features_available {
        Some(parse_features(&required(read, FEATURES)?, &meta)?)
    } else {
        if read_file(read, FEATURES)?.is_some() {
            return Err(DatasetError::new(
                FEATURES,
                None,
                "file is present but meta.json says features_available is false",
            ));
        }
        None
    };
    // Which split holds each node (0 = none), to check that the splits are disjoint.
    let mut split_of = vec![0u8; labels.len()];
    let mut splits = Vec::with_capacity(SPLITS.len());
    for split in SPLITS {
        let text = required(read, split.0)?;
        splits.push(parse_split(split, &text, &meta, &labels, &mut split_of)?);
    }
    let [train, val, test]: [Vec<u32>; 3] = splits
        .try_into()
        .expect("one list per entry of SPLITS, which has three");
    Ok(Dataset {
        name: meta.name,
        graph,
        num_features: meta.num_features,
        num_classes: meta.num_classes,
        features,
        labels,
        train,
        val,
        test,
    })
}

const META: &str = "meta.json";
const EDGES: &str = "edges.csv";
const FEATURES: &str = "features.csv";
const LABELS: &str = "labels.csv";
/// Each split's file, the `meta.json` key of its row count, and the tag marking its nodes.
const SPLITS: [(&str, &str, u8); 3] = [
    ("train_idx.csv", "num_train", 1),
    ("val_idx.csv", "num_val", 2),
    ("test_idx.csv", "num_test", 3),
];

fn read_file(
    read: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
    file: &str,
) -> Result<Option<String>, DatasetError> {
    read(file).map_err(|e| DatasetError::new(file, None, format!("cannot read: {e}")))
}

fn required(
    read: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
    file: &str,
) -> Result<String, DatasetError> {
    read_file(read, file)?.ok_or_else(|| DatasetError::new(file, None, "required file is missing"))
}

/// The `meta.json` keys the loader uses.
struct Meta {
    name: String,
    num_nodes: u32,
    num_edges_undirected: u64,
    num_features: u32,
    num_classes: u32,
    features_available: bool,
    /// `Some` exactly when `features_available`.
    feature_nnz: Option<u64>,
    /// `num_train`, `num_val`, `num_test`, in the order of [`SPLITS`].
    split_sizes: [u64; 3],
}

impl Meta {
    fn parse(text: &str) -> Result<Meta, DatasetError> {
        let err = |message: String| DatasetError::new(META, None, message);
        let value: Value = serde_json::from_str(text)
            .map_err(|e| DatasetError::new(META, Some(e.line()), format!("invalid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| err("expected a JSON object".to_owned()))?;
        let key = |name: &str| {
            object
                .get(name)
                .ok_or_else(|| err(format!("missing key `{name}`")))
        };
        let uint = |name: &str| {
            key(name)?
                .as_u64()
                .ok_or_else(|| err(format!("key `{name}` must be a non-negative integer")))
        };
        let uint32 = |name: &str| {
            let x = uint(name)?;
            u32::try_from(x).map_err(|_| err(format!("key `{name}` is {x}, above the u32 limit")))
        };
        let name = key("name")?
            .as_str()
            .ok_or_else(|| err("key `name` must be a string".to_owned()))?
            .to_owned();
        let features_available = key("features_available")?
            .as_bool()
            .ok_or_else(|| err("key `features_available` must be true or false".to_owned()))?;
        let num_edges_undirected = uint("num_edges_undirected")?;
        // Optional, but when present it must agree.
        if let Some(directed) = object.get("num_edges_directed") {
            if directed.as_u64() != num_edges_undirected.checked_mul(2) {
                return Err(err(format!(
                    "key `num_edges_directed` must be twice num_edges_undirected ({})",
                    u128::from(num_edges_undirected) * 2
                )));
            }
        }
        Ok(Meta {
            name,
            num_nodes: uint32("num_nodes")?,
            num_edges_undirected,
            num_features: uint32("num_features")?,
            num_classes: uint32("num_classes")?,
            features_available,
            feature_nnz: if features_available {
                Some(uint("feature_nnz")?)
            } else {
                None
            },
            split_sizes: [uint("num_train")?, uint("num_val")?, uint("num_test")?],
        })
    }
}

/// The records of one CSV file after its header, with line numbers.
struct Csv<'a> {
    file: &'static str,
    rest: &'a [u8],
    line: usize,
}

impl<'a> Csv<'a> {
    /// Checks the whole-file rules (no `\r`, a final newline) and the header.
    fn open(file: &'static str, text: &'a str, header: &str) -> Result<Csv<'a>, DatasetError> {
        let bytes = text.as_bytes();
        if bytes.contains(&b'\r') {
            let at = bytes
                .iter()
                .position(|&b| b == b'\r')
                .expect("contains said so");
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            return Err(DatasetError::new(
                file,
                Some(line),
                "carriage return (\\r) found: lines must end with \\n alone",
            ));
        }
        if bytes.is_empty() {
            return Err(DatasetError::new(
                file,
                None,
                format!("file is empty, expected the header `{header}`"),
            ));
        }
        if bytes[bytes.len() - 1] != b'\n' {
            let line = 1 + bytes.iter().filter(|&&b| b == b'\n').count();
            return Err(DatasetError::new(
                file,
                Some(line),
                "last line does not end with a newline",
            ));
        }
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .expect("ends with a newline");
        if &bytes[..end] != header.as_bytes() {
            return Err(DatasetError::new(
                file,
                Some(1),
                format!(
                    "expected the header `{header}`, found `{}`",
                    show(&bytes[..end])
                ),
            ));
        }
        Ok(Csv {
            file,
            rest: &bytes[end + 1..],
            line: 1,
        })
    }

    /// The next record and its line number.
    fn next_record(&mut self) -> Option<(usize, &'a [u8])> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("open checked that the text ends with a newline");
        let record = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        self.line += 1;
        Some((self.line, record))
    }

    fn error(&self, line: usize, message: impl Into<String>) -> DatasetError {
        DatasetError::new(self.file, Some(line), message)
    }

    /// The error for a file with fewer rows than `meta.json` says.
    fn too_few(&self, rows: u64, key: &str, expected: u64) -> DatasetError {
        DatasetError::new(
            self.file,
            None,
            format!("has {rows} rows but meta.json {key} is {expected}"),
        )
    }
}

/// At most 60 characters of `bytes`, for quoting in a message.
pub(super) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// Splits `record` into exactly `K` comma-separated fields.
fn fields<const K: usize>(record: &[u8]) -> Result<[&[u8]; K], String> {
    let found = 1 + record.iter().filter(|&&b| b == b',').count();
    if found != K {
        return Err(format!(
            "expected {K} comma-separated fields, found {found} in `{}`",
            show(record)
        ));
    }
    let mut out = [&record[..0]; K];
    for (slot, field) in out.iter_mut().zip(record.split(|&b| b == b',')) {
        *slot = field;
    }
    Ok(out)
}

/// Parses an unsigned base-10 integer with no sign.
pub(super) fn parse_uint(field: &[u8], what: &str) -> Result<u64, String> {
    if field.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let mut x: u64 = 0;
    for &b in field {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(format!(
                "{what} `{}` is not an unsigned integer",
                show(field)
            ));
        }
        x = x
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(digit)))
            .ok_or_else(|| format!("{what} `{}` is too large", show(field)))?;
    }
    Ok(x)
}

/// Parses a node id and checks it is below `n_nodes`; `role` names the record in the message.
fn parse_node(field: &[u8], role: &str, n_nodes: u32) -> Result<u32, String> {
    let id = parse_uint(field, "node id")?;
    if id >= u64::from(n_nodes) {
        return Err(format!(
            "{role} names vertex {id} but the dataset has {n_nodes} nodes"
        ));
    }
    Ok(id as u32)
}

/// Parses a feature value: a decimal number with no exponent that is a finite, nonzero f32.
fn parse_value(field: &[u8]) -> Result<f32, String> {
    if field == b"1" {
        return Ok(1.0);
    }
    let digits = field.strip_prefix(b"-").unwrap_or(field);
    let dots = digits.iter().filter(|&&b| b == b'.').count();
    let well_formed = dots <= 1
        && digits.iter().any(u8::is_ascii_digit)
        && digits.iter().all(|&b| b == b'.' || b.is_ascii_digit());
    if !well_formed {
        return Err(format!("value `{}` is not a decimal number", show(field)));
    }
    let text = std::str::from_utf8(field).expect("checked to be ASCII digits, '.' and '-'");
    let value: f32 = text
        .parse()
        .map_err(|_| format!("value `{text}` is not a decimal number"))?;
    if !value.is_finite() {
        return Err(format!("value `{}` does not fit a float32", show(field)));
    }
    if value == 0.0 {
        return Err("value is zero, but only nonzero entries are listed".to_owned());
    }
    Ok(value)
}

fn parse_labels(text: &str, meta: &Meta) -> Result<Vec<i32>, DatasetError> {
    let mut csv = Csv::open(LABELS, text, "node,label")?;
    let n = meta.num_nodes;
    // Capacity from the file size too, so a wrong num_nodes cannot request a huge allocation.
    let mut labels = Vec::with_capacity((n as usize).min(text.len() / 4));
    while let Some((line, record)) = csv.next_record() {
        if labels.len() as u64 == u64::from(n) {
            return Err(csv.error(line, format!("more rows than meta.json num_nodes ({n})")));
        }
        let label = label_record(record, labels.len() as u64, meta.num_classes)
            .map_err(|m| csv.error(line, m))?;
        labels.push(label);
    }
    if labels.len() as u64 != u64::from(n) {
        return Err(csv.too_few(labels.len() as u64, "num_nodes", u64::from(n)));
    }
    Ok(labels)
}

/// One `node,label` row, which must be node `expected`'s.
fn label_record(record: &[u8], expected: u64, c: u32) -> Result<i32, String> {
    let [node, label] = fields::<2>(record)?;
    let node = parse_uint(node, "node id")?;
    if node != expected {
        return Err(format!(
            "expected node {expected} (one row per node, in node order), found {node}"
        ));
    }
    if let Some(magnitude) = label.strip_prefix(b"-") {
        let magnitude = parse_uint(magnitude, "label")?;
        if magnitude != 1 {
            return Err(format!(
                "label -{magnitude} is out of range: expected -1 or 0..{c}"
            ));
        }
        return Ok(-1);
    }
    let label = parse_uint(label, "label")?;
    if label >= u64::from(c) {
        return Err(format!(
            "label {label} is out of range: expected -1 or 0..{c}"
        ));
    }
    i32::try_from(label).map_err(|_| format!("label {label} does not fit an i32"))
}

fn parse_edges(text: &str, meta: &Meta) -> Result<Csr, DatasetError> {
    let mut csv = Csv::open(EDGES, text, "src,dst")?;
    let expected = meta.num_edges_undirected;
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity((expected as usize).min(text.len() / 4));
    while let Some((line, record)) = csv.next_record() {
        if edges.len() as u64 == expected {
            return Err(csv.error(
                line,
                format!("more rows than meta.json num_edges_undirected ({expected})"),
            ));
        }
        let edge = edge_record(record, meta.num_nodes, edges.last().copied())
            .map_err(|m| csv.error(line, m))?;
        edges.push(edge);
    }
    if edges.len() as u64 != expected {
        return Err(csv.too_few(edges.len() as u64, "num_edges_undirected", expected));
    }
    Ok(Csr::from_undirected_edges(meta.num_nodes as usize, &edges))
}

/// One `src,dst` row, which must follow `prev` in (src, dst) order.
fn edge_record(record: &[u8], n: u32, prev: Option<(u32, u32)>) -> Result<(u32, u32), String> {
    let [src, dst] = fields::<2>(record)?;
    let src = parse_node(src, "edge", n)?;
    let dst = parse_node(dst, "edge", n)?;
    if src == dst {
        return Err(format!("self loop on vertex {src}"));
    }
    if src > dst {
        return Err(format!(
            "src {src} is not below dst {dst} (each edge is listed once, with src < dst)"
        ));
    }
    if let Some((prev_src, prev_dst)) = prev {
        if (src, dst) == (prev_src, prev_dst) {
            return Err(format!("duplicate edge {src},{dst}"));
        }
        if (src, dst) < (prev_src, prev_dst) {
            return Err(format!(
                "edges are not sorted by (src, dst): {src},{dst} follows {prev_src},{prev_dst}"
            ));
        }
    }
    Ok((src, dst))
}

fn parse_features(text: &str, meta: &Meta) -> Result<SparseFeatures, DatasetError> {
    let mut csv = Csv::open(FEATURES, text, "node,feature,value")?;
    let n = meta.num_nodes;
    let expected = meta
        .feature_nnz
        .expect("feature_nnz is read whenever features are available");
    let capacity = (expected as usize).min(text.len() / 6);
    let mut offsets = Vec::with_capacity(n as usize + 1);
    offsets.push(0u64);
    let mut columns: Vec<u32> = Vec::with_capacity(capacity);
    let mut values: Vec<f32> = Vec::with_capacity(capacity);
    // The (node, feature) of the previous row, to check the order.
    let mut prev: Option<(u32, u32)> = None;
    while let Some((line, record)) = csv.next_record() {
        if columns.len() as u64 == expected {
            return Err(csv.error(
                line,
                format!("more rows than meta.json feature_nnz ({expected})"),
            ));
        }
        let (node, feature, value) =
            feature_record(record, n, meta.num_features, prev).map_err(|m| csv.error(line, m))?;
        // Close the rows of every node before this one.
        while offsets.len() <= node as usize {
            offsets.push(columns.len() as u64);
        }
        columns.push(feature);
        values.push(value);
        prev = Some((node, feature));
    }
    if columns.len() as u64 != expected {
        return Err(csv.too_few(columns.len() as u64, "feature_nnz", expected));
    }
    offsets.resize(n as usize + 1, columns.len() as u64);
    Ok(SparseFeatures {
        n_rows: n,
        n_cols: meta.num_features,
        offsets,
        columns,
        values,
    })
}

/// One `node,feature,value` row, which must follow `prev` in (node, feature) order.
fn feature_record(
    record: &[u8],
    n: u32,
    f: u32,
    prev: Option<(u32, u32)>,
) -> Result<(u32, u32, f32), String> {
    let [node, feature, value] = fields::<3>(record)?;
    let node = parse_node(node, "feature row", n)?;
    let feature = parse_uint(feature, "feature id")?;
    if feature >= u64::from(f) {
        return Err(format!(
            "feature {feature} is out of range: the dataset has {f} features"
        ));
    }
    let feature = feature as u32;
    if let Some(prev) = prev {
        if (node, feature) == prev {
            return Err(format!("duplicate entry {node},{feature}"));
        }
        if (node, feature) < prev {
            return Err(format!(
                "rows are not sorted by (node, feature): {node},{feature} follows {},{}",
                prev.0, prev.1
            ));
        }
    }
    Ok((node, feature, parse_value(value)?))
}

fn parse_split(
    (file, key, tag): (&'static str, &str, u8),
    text: &str,
    meta: &Meta,
    labels: &[i32],
    split_of: &mut [u8],
) -> Result<Vec<u32>, DatasetError> {
    let mut csv = Csv::open(file, text, "node")?;
    let expected = meta.split_sizes[usize::from(tag - 1)];
    let mut nodes: Vec<u32> = Vec::with_capacity((expected as usize).min(text.len() / 2));
    while let Some((line, record)) = csv.next_record() {
        if nodes.len() as u64 == expected {
            return Err(csv.error(line, format!("more rows than meta.json {key} ({expected})")));
        }
        let node = split_record(
            record,
            meta.num_nodes,
            nodes.last().copied(),
            labels,
            split_of,
        )
        .map_err(|m| csv.error(line, m))?;
        split_of[node as usize] = tag;
        nodes.push(node);
    }
    if nodes.len() as u64 != expected {
        return Err(csv.too_few(nodes.len() as u64, key, expected));
    }
    Ok(nodes)
}

/// One split row: a labelled node after `prev` and in no split yet.
fn split_record(
    record: &[u8],
    n: u32,
    prev: Option<u32>,
    labels: &[i32],
    split_of: &[u8],
) -> Result<u32, String> {
    let [node] = fields::<1>(record)?;
    let node = parse_node(node, "split", n)?;
    if let Some(prev) = prev {
        if node == prev {
            return Err(format!("duplicate node {node}"));
        }
        if node < prev {
            return Err(format!("node ids are not ascending: {node} follows {prev}"));
        }
    }
    if labels[node as usize] < 0 {
        return Err(format!("node {node} has no label (-1) but is in a split"));
    }
    let other = split_of[node as usize];
    if other != 0 {
        return Err(format!(
            "node {node} is also in {}: the splits must be disjoint",
            SPLITS[usize::from(other - 1)].0
        ));
    }
    Ok(node)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// The shared data folder, or `None` (after saying so on stderr) when it is absent.
    pub(crate) fn data_dir() -> Option<PathBuf> {
        let dir = match std::env::var_os("PIPEGNN_DATA") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
        };
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!(
                "skipping: ../shared/data not found (looked in {})",
                dir.display()
            );
            None
        }
    }

    /// Loads `name` from the shared data folder, or `None` when the folder is absent.
    pub(crate) fn load_shared(name: &str) -> Option<Dataset> {
        let dir = data_dir()?.join(name);
        let mut read = |file: &str| match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        Some(load(&mut read).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    fn degree_zero(graph: &Csr) -> usize {
        (0..graph.n_nodes() as u32)
            .filter(|&v| graph.degree(v) == 0)
            .count()
    }

    #[test]
    fn cora() {
        let Some(d) = load_shared("cora") else { return };
        assert_eq!(d.name, "cora");
        assert_eq!(d.graph.n_nodes(), 2708);
        assert_eq!(d.graph.n_undirected_edges(), 5278);
        assert_eq!((d.num_features, d.num_classes), (1433, 7));
        let features = d.features.as_ref().unwrap();
        assert_eq!(features.nnz(), 49216);
        assert_eq!((features.n_rows, features.n_cols), (2708, 1433));
        assert_eq!(features.row(0).0[..2], [19, 81]);
        assert!(features.values.iter().all(|&v| v == 1.0));
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (140, 500, 1000));
        assert_eq!(d.train, (0..140).collect::<Vec<_>>());
        assert_eq!(degree_zero(&d.graph), 0);
        assert!(d.labels.iter().all(|&l| (0..7).contains(&l)));
    }

    #[test]
    fn citeseer() {
        let Some(d) = load_shared("citeseer") else {
            return;
        };
        assert_eq!(d.graph.n_nodes(), 3327);
        assert_eq!(d.graph.n_undirected_edges(), 4552);
        assert_eq!((d.num_features, d.num_classes), (3703, 6));
        assert_eq!(d.features.as_ref().unwrap().nnz(), 105165);
        assert_eq!(degree_zero(&d.graph), 48);
        assert_eq!(d.labels.iter().filter(|&&l| l == -1).count(), 15);
        assert_eq!(d.labels[2407], -1);
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (120, 500, 1000));
    }

    #[test]
    fn pubmed() {
        let Some(d) = load_shared("pubmed") else {
            return;
        };
        assert_eq!(d.graph.n_nodes(), 19717);
        assert_eq!(d.graph.n_undirected_edges(), 44324);
        assert_eq!((d.num_features, d.num_classes), (500, 3));
        assert_eq!(d.features, None);
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (60, 500, 1000));
    }

    #[test]
    fn facebook() {
        let Some(d) = load_shared("facebook") else {
            return;
        };
        assert_eq!(d.graph.n_nodes(), 22470);
        assert_eq!(d.graph.n_undirected_edges(), 170823);
        assert_eq!((d.num_features, d.num_classes), (4714, 4));
        assert_eq!(d.features.as_ref().unwrap().nnz(), 314583);
        let max_degree = (0..22470).map(|v| d.graph.degree(v)).max().unwrap();
        assert_eq!(max_degree, 709);
        assert_eq!(
            (d.train.len(), d.val.len(), d.test.len()),
            (13482, 4494, 4494)
        );
    }

    /// Times the loader; run with
    /// `cargo test --release --lib graph::dataset::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        for name in ["cora", "citeseer", "pubmed", "facebook"] {
            let Some(dir) = data_dir() else { return };
            let dir = dir.join(name);
            // Read the files first so the time measured is parsing and building alone.
            let mut files = BTreeMap::new();
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap();
                let text = std::fs::read_to_string(file.path()).unwrap();
                files.insert(file.file_name().into_string().unwrap(), text);
            }
            let start = std::time::Instant::now();
            let runs = 10;
            for _ in 0..runs {
                let mut read = |f: &str| Ok(files.get(f).cloned());
                std::hint::black_box(load(&mut read).unwrap());
            }
            eprintln!(
                "{name}: {:.2} ms per load (from memory)",
                start.elapsed().as_secs_f64() * 1000.0 / runs as f64
            );
            let start = std::time::Instant::now();
            load_shared(name).unwrap();
            eprintln!(
                "{name}: {:.2} ms per load (reading the files)",
                start.elapsed().as_secs_f64() * 1000.0
            );
        }
    }

    /// A small valid dataset: a path 0-1-2-3-4 plus 0-2, two classes, node 2 unlabelled.
    fn tiny() -> BTreeMap<&'static str, String> {
        let meta = r#"{"name": "tiny", "format": "graph-csv v1 (see ../README.md)",
            "num_nodes": 5, "num_edges_undirected": 5, "num_edges_directed": 10,
            "num_features": 3, "num_classes": 2, "features_available": true,
            "feature_nnz": 4, "num_train": 1, "num_val": 1, "num_test": 2}"#;
        BTreeMap::from([
            ("meta.json", meta.to_owned()),
            ("edges.csv", "src,dst\n0,1\n0,2\n1,2\n2,3\n3,4\n".to_owned()),
            (
                "features.csv",
                "node,feature,value\n0,0,1\n0,2,0.5\n2,1,1\n3,0,2.25\n".to_owned(),
            ),
            (
                "labels.csv",
                "node,label\n0,0\n1,1\n2,-1\n3,1\n4,0\n".to_owned(),
            ),
            ("train_idx.csv", "node\n0\n".to_owned()),
            ("val_idx.csv", "node\n1\n".to_owned()),
            ("test_idx.csv", "node\n3\n4\n".to_owned()),
        ])
    }

    fn load_from(files: &BTreeMap<&'static str, String>) -> Result<Dataset, DatasetError> {
        load(&mut |name: &str| Ok(files.get(name).cloned()))
    }

    /// Loads `tiny()` with `file` replaced by `text` and returns the error.
    fn error_with(file: &'static str, text: &str) -> DatasetError {
        let mut files = tiny();
        files.insert(file, text.to_owned());
        load_from(&files).expect_err("the change makes the dataset invalid")
    }

    fn assert_error(e: DatasetError, file: &str, line: Option<usize>, needle: &str) {
        assert_eq!(e.file, file, "{e}");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(needle), "`{e}` lacks `{needle}`");
    }

    #[test]
    fn tiny_loads() {
        let d = load_from(&tiny()).unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!(d.graph.neighbors(2), &[0, 1, 3]);
        assert_eq!(d.graph.n_undirected_edges(), 5);
        let f = d.features.unwrap();
        assert_eq!(f.offsets, vec![0, 2, 2, 3, 4, 4]);
        assert_eq!(f.row(0), (&[0u32, 2][..], &[1.0f32, 0.5][..]));
        assert_eq!(f.row(3).1, &[2.25]);
        assert_eq!(d.labels, vec![0, 1, -1, 1, 0]);
        assert_eq!((d.train, d.val, d.test), (vec![0], vec![1], vec![3, 4]));
    }

    #[test]
    fn error_display_has_file_and_line() {
        let e = error_with("edges.csv", "src,dst\n0,1\n0,x\n1,2\n2,3\n3,4\n");
        assert_eq!(
            e.to_string(),
            "edges.csv:3: node id `x` is not an unsigned integer"
        );
        let e = DatasetError::new("meta.json", None, "missing key `name`");
        assert_eq!(e.to_string(), "meta.json: missing key `name`");
    }

    #[test]
    fn malformed_lines() {
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,2,7\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "expected 2 comma-separated fields, found 3",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "expected 2 comma-separated fields, found 1",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n+0,2\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "not an unsigned integer",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,99999999999999999999\n"),
            "edges.csv",
            Some(3),
            "too large",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,0,1\n0,2,1e3\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "not a decimal number",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,0,1\n0,2,0\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "zero",
        );
    }

    #[test]
    fn vertex_out_of_range() {
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,9999\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "edge names vertex 9999 but the dataset has 5 nodes",
        );
        assert_error(
            error_with("test_idx.csv", "node\n3\n5\n"),
            "test_idx.csv",
            Some(3),
            "names vertex 5 but the dataset has 5 nodes",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,0,1\n0,3,1\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "feature 3 is out of range",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,0,1\n5,0,1\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "feature row names vertex 5",
        );
    }

    #[test]
    fn order_and_duplicates() {
        assert_error(
            error_with("edges.csv", "src,dst\n0,2\n0,1\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "edges are not sorted by (src, dst): 0,1 follows 0,2",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,1\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "duplicate edge 0,1",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n2,0\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "src 2 is not below dst 0",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n1,1\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "self loop",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,2,1\n0,0,1\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "not sorted",
        );
        assert_error(
            error_with(
                "features.csv",
                "node,feature,value\n0,2,1\n0,2,1\n2,1,1\n3,0,1\n",
            ),
            "features.csv",
            Some(3),
            "duplicate entry 0,2",
        );
        assert_error(
            error_with("labels.csv", "node,label\n0,0\n2,1\n1,-1\n3,1\n4,0\n"),
            "labels.csv",
            Some(3),
            "expected node 1",
        );
        assert_error(
            error_with("test_idx.csv", "node\n3\n3\n"),
            "test_idx.csv",
            Some(3),
            "duplicate node 3",
        );
        assert_error(
            error_with("test_idx.csv", "node\n4\n3\n"),
            "test_idx.csv",
            Some(3),
            "not ascending: 3 follows 4",
        );
    }

    #[test]
    fn splits_must_be_disjoint_and_labelled() {
        assert_error(
            error_with("test_idx.csv", "node\n0\n3\n"),
            "test_idx.csv",
            Some(2),
            "node 0 is also in train_idx.csv",
        );
        assert_error(
            error_with("test_idx.csv", "node\n2\n3\n"),
            "test_idx.csv",
            Some(2),
            "node 2 has no label",
        );
    }

    #[test]
    fn labels_in_range() {
        assert_error(
            error_with("labels.csv", "node,label\n0,0\n1,2\n2,-1\n3,1\n4,0\n"),
            "labels.csv",
            Some(3),
            "label 2 is out of range",
        );
        assert_error(
            error_with("labels.csv", "node,label\n0,0\n1,-2\n2,-1\n3,1\n4,0\n"),
            "labels.csv",
            Some(3),
            "label -2 is out of range",
        );
    }

    #[test]
    fn bad_header() {
        assert_error(
            error_with("edges.csv", "source,target\n0,1\n0,2\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(1),
            "expected the header `src,dst`, found `source,target`",
        );
        assert_error(
            error_with("labels.csv", ""),
            "labels.csv",
            None,
            "file is empty",
        );
    }

    #[test]
    fn missing_file() {
        for file in tiny().keys() {
            let mut files = tiny();
            files.remove(file);
            assert_error(
                load_from(&files).unwrap_err(),
                file,
                None,
                "required file is missing",
            );
        }
        let e = load(&mut |_: &str| Err("permission denied".to_owned())).unwrap_err();
        assert_eq!(e.to_string(), "meta.json: cannot read: permission denied");
    }

    #[test]
    fn wrong_row_counts() {
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,2\n1,2\n2,3\n"),
            "edges.csv",
            None,
            "has 4 rows but meta.json num_edges_undirected is 5",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,2\n1,2\n2,3\n3,4\n3,5\n"),
            "edges.csv",
            Some(7),
            "more rows than meta.json num_edges_undirected (5)",
        );
        assert_error(
            error_with("labels.csv", "node,label\n0,0\n1,1\n2,-1\n3,1\n"),
            "labels.csv",
            None,
            "has 4 rows but meta.json num_nodes is 5",
        );
        assert_error(
            error_with("labels.csv", "node,label\n0,0\n1,1\n2,-1\n3,1\n4,0\n5,0\n"),
            "labels.csv",
            Some(7),
            "more rows than meta.json num_nodes (5)",
        );
        assert_error(
            error_with("features.csv", "node,feature,value\n0,0,1\n"),
            "features.csv",
            None,
            "has 1 rows but meta.json feature_nnz is 4",
        );
        assert_error(
            error_with("train_idx.csv", "node\n"),
            "train_idx.csv",
            None,
            "has 0 rows but meta.json num_train is 1",
        );
    }

    #[test]
    fn carriage_returns_and_final_newline() {
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,2\r\n1,2\n2,3\n3,4\n"),
            "edges.csv",
            Some(3),
            "carriage return",
        );
        assert_error(
            error_with("edges.csv", "src,dst\n0,1\n0,2\n1,2\n2,3\n3,4"),
            "edges.csv",
            Some(6),
            "does not end with a newline",
        );
    }

    #[test]
    fn meta_keys() {
        let files = tiny();
        // Each edit must change the text, or the test would check nothing.
        let edit = |from: &str, to: &str| {
            let text = files["meta.json"].replace(from, to);
            assert_ne!(text, files["meta.json"], "`{from}` is in the fixture");
            text
        };
        let without = edit("\"num_classes\": 2,", "");
        assert_error(
            error_with("meta.json", &without),
            "meta.json",
            None,
            "missing key `num_classes`",
        );
        let mistyped = edit("\"num_nodes\": 5", "\"num_nodes\": \"5\"");
        assert_error(
            error_with("meta.json", &mistyped),
            "meta.json",
            None,
            "key `num_nodes` must be a non-negative integer",
        );
        assert_error(
            error_with("meta.json", "{\n\"name\": \n"),
            "meta.json",
            Some(3),
            "invalid JSON",
        );
        let directed = edit("\"num_edges_directed\": 10", "\"num_edges_directed\": 9");
        assert_error(
            error_with("meta.json", &directed),
            "meta.json",
            None,
            "num_edges_directed",
        );
        let big = edit("\"num_nodes\": 5", "\"num_nodes\": 4294967296");
        assert_error(
            error_with("meta.json", &big),
            "meta.json",
            None,
            "key `num_nodes` is 4294967296, above the u32 limit",
        );
        let name = edit("\"name\": \"tiny\"", "\"name\": 3");
        assert_error(
            error_with("meta.json", &name),
            "meta.json",
            None,
            "key `name` must be a string",
        );
        assert_error(
            error_with("meta.json", "[1, 2]"),
            "meta.json",
            None,
            "expected a JSON object",
        );
    }

    #[test]
    fn features_absent_when_not_available() {
        let mut files = tiny();
        let meta = files["meta.json"]
            .replace(
                "\"features_available\": true",
                "\"features_available\": false",
            )
            .replace("\"feature_nnz\": 4", "\"feature_nnz\": null");
        files.insert("meta.json", meta);
        assert_error(
            load_from(&files).unwrap_err(),
            "features.csv",
            None,
            "features_available is false",
        );
        files.remove("features.csv");
        let d = load_from(&files).unwrap();
        assert_eq!((d.features, d.num_features), (None, 3));
    }
}
