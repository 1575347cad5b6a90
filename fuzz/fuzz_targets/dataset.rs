//! graph-csv v1 dataset folders through the loader.
//!
//! Input: the folder's files separated by NUL bytes, in the order of [`FILES`]. A file past
//! the last part is missing; an empty part is an empty file. `features.csv` comes last so that
//! a folder without it is simply one part shorter. A part that is not UTF-8 reads as an error,
//! as the CLI's reader returns for it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipegnn_fuzz::{show, Capped};

#[global_allocator]
static ALLOCATOR: Capped = Capped;

const FILES: [&str; 7] = [
    "meta.json",
    "labels.csv",
    "edges.csv",
    "train_idx.csv",
    "val_idx.csv",
    "test_idx.csv",
    "features.csv",
];

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let mut reader = |name: &str| -> Result<Option<String>, String> {
        let index = FILES
            .iter()
            .position(|&file| file == name)
            .unwrap_or_else(|| panic!("the loader asked for an unknown file {name:?}"));
        match parts.get(index) {
            None => Ok(None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(Some(text.to_owned())),
                Err(_) => Err("stream did not contain valid UTF-8".to_owned()),
            },
        }
    };
    let loaded = pipegnn::graph::dataset::load(&mut reader);
    match &loaded {
        Ok(dataset) => show(format_args!(
            "loaded {:?}: {} nodes",
            dataset.name,
            dataset.graph.n_nodes()
        )),
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
