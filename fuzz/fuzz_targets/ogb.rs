//! OGB-layout folders through the streaming loader.
//!
//! Input: the folder's files as plain CSV, separated by NUL bytes, in the order of [`FILES`]; a
//! file past the last part is missing, and the split folder `s` exists when any of its files
//! does. A first byte `k` keeps the edge list as written (`undirected: false`) and is not part
//! of the first file.

#![no_main]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use pipegnn::graph::ogb::{self, Folder, OgbOptions};
use pipegnn_fuzz::{show, Capped};

#[global_allocator]
static ALLOCATOR: Capped = Capped;

const FILES: [&str; 8] = [
    "raw/num-node-list.csv",
    "raw/num-edge-list.csv",
    "raw/node-label.csv",
    "raw/edge.csv",
    "raw/node-feat.csv",
    "split/s/train.csv",
    "split/s/valid.csv",
    "split/s/test.csv",
];

/// The input's parts by path.
struct Parts(BTreeMap<&'static str, Vec<u8>>);

impl Folder for Parts {
    fn open(&mut self, path: &str) -> Result<Option<Box<dyn Read>>, String> {
        Ok(self
            .0
            .get(path)
            .map(|bytes| Box::new(Cursor::new(bytes.clone())) as Box<dyn Read>))
    }

    fn subfolders(&mut self, path: &str) -> Result<Vec<String>, String> {
        let any = self.0.keys().any(|key| key.starts_with("split/"));
        Ok(if path == "split" && any {
            vec!["s".to_owned()]
        } else {
            Vec::new()
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let (undirected, data) = match data.split_first() {
        Some((b'k', rest)) => (false, rest),
        _ => (true, data),
    };
    let files = FILES
        .iter()
        .copied()
        .zip(data.split(|&b| b == 0).map(<[u8]>::to_vec))
        .collect();
    let options = OgbOptions {
        undirected,
        split: None,
    };
    let loaded = ogb::load("fuzz", &mut Parts(files), &options);
    match &loaded {
        Ok(dataset) => show(format_args!("loaded: {} nodes", dataset.graph.n_nodes())),
        Err(err) => show(format_args!("{err}")),
    }
    if let Err(err) = loaded {
        let message = err.to_string();
        assert!(
            message.starts_with(&err.file),
            "names its file: {message:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
});
