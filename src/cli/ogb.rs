//! OGB-layout folders on disk: `graph.ogb` loading, `bench --ogb` and `bench --write-ogb`.

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use super::run::{peak_resident, print, CliError, ExitStatus, Result};
use super::BenchArgs;
use crate::diag::FieldPath;
use crate::graph::dataset::Dataset;
use crate::graph::ogb::{self, Folder, OgbOptions, SyntheticOgb};
use crate::scenario::Scenario;
use crate::units;

/// A folder on disk. A file that exists but cannot be opened or read sets `unreadable`, so
/// the error is exit 3; what the loader finds wrong in readable bytes is exit 4.
struct Disk {
    dir: PathBuf,
    unreadable: Rc<Cell<bool>>,
}

/// A file whose read errors set the folder's `unreadable`.
struct Flagged {
    file: std::fs::File,
    unreadable: Rc<Cell<bool>>,
}

impl Read for Flagged {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read(buf);
        if read.is_err() {
            self.unreadable.set(true);
        }
        read
    }
}

impl Folder for Disk {
    fn open(&mut self, path: &str) -> std::result::Result<Option<Box<dyn Read>>, String> {
        match std::fs::File::open(self.dir.join(path)) {
            Ok(file) => Ok(Some(Box::new(Flagged {
                file,
                unreadable: self.unreadable.clone(),
            }))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                self.unreadable.set(true);
                Err(err.to_string())
            }
        }
    }

    fn subfolders(&mut self, path: &str) -> std::result::Result<Vec<String>, String> {
        let entries = match std::fs::read_dir(self.dir.join(path)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                self.unreadable.set(true);
                return Err(err.to_string());
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| {
                self.unreadable.set(true);
                err.to_string()
            })?;
            if entry.path().is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Loads an OGB-layout folder, its name the folder's; a problem names the file, its line and
/// `context` (which scenario field, or command, asked for it).
fn load(dir: &Path, options: &OgbOptions, context: &str) -> Result<Dataset> {
    let unreadable = Rc::new(Cell::new(false));
    let mut folder = Disk {
        dir: dir.to_path_buf(),
        unreadable: unreadable.clone(),
    };
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "ogb".to_owned());
    ogb::load(&name, &mut folder, options).map_err(|mut err| {
        err.file = dir.join(&err.file).display().to_string();
        let status = if unreadable.get() {
            ExitStatus::Io
        } else {
            ExitStatus::InvalidInput
        };
        CliError::new(status, format!("{err} {context}"))
    })
}

/// Reads a scenario's `graph.ogb` folder.
pub(super) fn load_for(
    scenario: &Scenario,
    dir: &Path,
    undirected: bool,
    split: Option<&str>,
) -> Result<Dataset> {
    if !dir.is_dir() {
        let at = FieldPath::root().key("graph").key("ogb").key("path");
        let diag = scenario.source.diagnostic(
            at,
            format!("{} is not a dataset folder (OGB layout)", dir.display()),
        );
        return Err(CliError::new(ExitStatus::Io, diag));
    }
    let options = OgbOptions {
        undirected,
        split: split.map(str::to_owned),
    };
    load(
        dir,
        &options,
        &format!("(graph.ogb of {})", scenario.source.file),
    )
}

/// `pipegnn bench --ogb DIR`: loads the folder once and reports the time, the process's peak
/// resident memory and the bytes of the arrays it loaded.
pub(super) fn bench_load(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(CliError::new(
            ExitStatus::Io,
            format!("{}: not a dataset folder (OGB layout)", dir.display()),
        ));
    }
    let start = Instant::now();
    let d = load(dir, &OgbOptions::default(), "(bench --ogb)")?;
    let seconds = start.elapsed().as_secs_f64();
    let n = d.graph.n_nodes() as u64;
    let graph_bytes = 8 * (n + 1) + 4 * d.graph.n_directed_edges();
    let features_bytes = d
        .features
        .as_ref()
        .map_or(0, |f| 8 * (u64::from(f.n_rows) + 1) + 8 * f.nnz());
    let other_bytes = 4 * (d.labels.len() + d.train.len() + d.val.len() + d.test.len()) as u64;
    let arrays = graph_bytes + features_bytes + other_bytes;
    print(&format!(
        "{}: {} vertices, {} undirected edges, {} features ({} non-zero), {} classes, \
         {}/{}/{} train/valid/test\n\
         load              {seconds:>9.2} s\n\
         peak resident     {:>9}\n\
         arrays            {:>9}  (adjacency {}, features {}, labels and splits {})\n",
        dir.display(),
        n,
        d.graph.n_undirected_edges(),
        d.num_features,
        d.features.as_ref().map_or(0, |f| f.nnz()),
        d.num_classes,
        d.train.len(),
        d.val.len(),
        d.test.len(),
        peak_resident(),
        units::format_bytes(arrays),
        units::format_bytes(graph_bytes),
        units::format_bytes(features_bytes),
        units::format_bytes(other_bytes),
    ))
}

/// `pipegnn bench --write-ogb DIR`: writes a seeded OGB-layout folder (gzip) for `--ogb`.
pub(super) fn bench_write(dir: &Path, args: &BenchArgs) -> Result<()> {
    let spec = SyntheticOgb {
        nodes: args.nodes,
        edges: args.edges,
        features: args.features,
        classes: 47,
        seed: args.seed,
    };
    if u64::from(spec.nodes) * u64::from(spec.features) > ogb::MAX_FEATURE_VALUES {
        return Err(CliError::new(
            ExitStatus::Usage,
            format!(
                "--nodes {} x --features {} is more than the {} (2^28) feature values a \
                 dataset may have",
                spec.nodes,
                spec.features,
                ogb::MAX_FEATURE_VALUES
            ),
        ));
    }
    let start = Instant::now();
    let mut create = |name: &str| -> std::result::Result<Box<dyn std::io::Write>, String> {
        let path = dir.join(name);
        let cannot = |err: std::io::Error| format!("{name}: cannot write: {err}");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        let file = std::fs::File::create(&path).map_err(cannot)?;
        Ok(Box::new(file))
    };
    ogb::write_synthetic(&spec, &mut create)
        .map_err(|e| CliError::new(ExitStatus::Io, dir.join(e).display()))?;
    print(&format!(
        "{}: {} vertices, {} edges, {} features, {} classes, seed {}; written in {:.1} s\n",
        dir.display(),
        spec.nodes,
        spec.edges,
        spec.features,
        spec.classes,
        spec.seed,
        start.elapsed().as_secs_f64()
    ))
}
