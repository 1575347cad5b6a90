//! Files a command writes: gathered while it computes, written together at its end, each to a
//! temporary file beside its target and renamed over it.
//!
//! A command that fails before [`Outputs::commit`] writes nothing, and a reader (or a kill in the
//! middle of a write) never sees half a file: the target is the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::run::{CliError, ExitStatus, Result};

/// The folders to create and the files to write, in the order they were added.
#[derive(Debug, Default)]
pub(super) struct Outputs {
    folders: Vec<PathBuf>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Outputs {
    /// No outputs yet.
    pub(super) fn new() -> Self {
        Outputs::default()
    }

    /// Creates `dir` (and its parents) at commit time, before any file is written.
    pub(super) fn folder(&mut self, dir: &Path) {
        self.folders.push(dir.to_path_buf());
    }

    /// Writes `bytes` to `path` at commit time.
    pub(super) fn file(&mut self, path: &Path, bytes: impl Into<Vec<u8>>) {
        self.files.push((path.to_path_buf(), bytes.into()));
    }

    /// Adds every output of `other` after this one's.
    pub(super) fn extend(&mut self, other: Outputs) {
        self.folders.extend(other.folders);
        self.files.extend(other.files);
    }

    /// Creates the folders, writes every file to a temporary beside its target, and only when
    /// all are written renames each over its target; on a failure the temporaries are removed
    /// and the targets are left as they were (except those already renamed when a later
    /// rename fails, which a writable folder does not do).
    pub(super) fn commit(self) -> Result<()> {
        for dir in &self.folders {
            std::fs::create_dir_all(dir).map_err(|err| {
                CliError::new(
                    ExitStatus::Io,
                    format!("{}: cannot create the folder: {err}", dir.display()),
                )
            })?;
        }
        let mut temporaries: Vec<PathBuf> = Vec::new();
        let cleanup = |temporaries: &[PathBuf]| {
            for temp in temporaries {
                let _ = std::fs::remove_file(temp);
            }
        };
        for (path, bytes) in &self.files {
            match write_temporary(path, bytes) {
                Ok(temp) => temporaries.push(temp),
                Err(err) => {
                    cleanup(&temporaries);
                    return Err(err);
                }
            }
        }
        for (i, (temp, (path, _))) in temporaries.iter().zip(&self.files).enumerate() {
            if let Err(err) = std::fs::rename(temp, path) {
                cleanup(&temporaries[i..]);
                return Err(cannot_write(path, err));
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to a new file beside `path` and returns its path.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(CliError::new(
            ExitStatus::Io,
            format!("{}: cannot write: not a file name", path.display()),
        ));
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = std::fs::File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(temp),
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            Err(cannot_write(path, err))
        }
    }
}

fn cannot_write(path: &Path, err: std::io::Error) -> CliError {
    CliError::new(
        ExitStatus::Io,
        format!("{}: cannot write: {err}", path.display()),
    )
}
