//! Files a command writes: gathered while it computes, written together at its end, each to a
//! temporary file beside its target and renamed over it.
//!
//! A command that fails before [`Outputs::commit`] writes nothing, and a reader (or a kill in the
//! middle of a write) never sees half a file: the target is the old file or the new one. Large
//! files (Chrome traces) are streamed into their temporary, never held whole in memory.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::run::{CliError, ExitStatus, Result};

/// Writes a file's content into its temporary at commit time.
type Writer<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + 'a>;

/// A file's content: bytes computed already, or a writer run at commit time.
enum Content<'a> {
    Bytes(Vec<u8>),
    Stream(Writer<'a>),
}

impl fmt::Debug for Content<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(bytes) => write!(f, "{} bytes", bytes.len()),
            Content::Stream(_) => f.write_str("streamed"),
        }
    }
}

/// The folders to create and the files to write, in the order they were added. A streamed
/// file borrows what it writes for `'a`.
#[derive(Debug, Default)]
pub(super) struct Outputs<'a> {
    folders: Vec<PathBuf>,
    files: Vec<(PathBuf, Content<'a>)>,
}

impl<'a> Outputs<'a> {
    /// No outputs yet.
    pub(super) fn new() -> Self {
        Outputs {
            folders: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Creates `dir` (and its parents) at commit time, before any file is written.
    pub(super) fn folder(&mut self, dir: &Path) {
        self.folders.push(dir.to_path_buf());
    }

    /// Writes `bytes` to `path` at commit time.
    pub(super) fn file(&mut self, path: &Path, bytes: impl Into<Vec<u8>>) {
        self.files
            .push((path.to_path_buf(), Content::Bytes(bytes.into())));
    }

    /// Writes `path` at commit time with `writer`, which streams the content into the
    /// temporary (buffered) rather than building it in memory first.
    pub(super) fn stream(
        &mut self,
        path: &Path,
        writer: impl Fn(&mut dyn Write) -> io::Result<()> + 'a,
    ) {
        self.files
            .push((path.to_path_buf(), Content::Stream(Box::new(writer))));
    }

    /// Adds every output of `other` after this one's.
    pub(super) fn extend(&mut self, other: Outputs<'a>) {
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
        for (path, content) in &self.files {
            match write_temporary(path, content) {
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

/// Writes `content` to a new file beside `path` and returns its path.
fn write_temporary(path: &Path, content: &Content<'_>) -> Result<PathBuf> {
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
        match content {
            Content::Bytes(bytes) => file.write_all(bytes)?,
            Content::Stream(writer) => {
                let mut buffered = BufWriter::new(&mut file);
                writer(&mut buffered)?;
                buffered.flush()?;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_files_replace_the_target_or_leave_it_whole() {
        let dir = std::env::temp_dir().join(format!("pipegnn-outputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("t.json");
        std::fs::write(&target, "old").unwrap();
        let text = String::from("new, streamed");

        // A stream that fails half-way leaves the old file and no temporary.
        let mut outputs = Outputs::new();
        outputs.stream(&target, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        let err = outputs.commit().unwrap_err();
        assert!(err.message.contains("cannot write: disk full"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        let mut outputs = Outputs::new();
        outputs.stream(&target, |out| out.write_all(text.as_bytes()));
        outputs.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
