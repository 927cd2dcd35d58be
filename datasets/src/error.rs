//! Errors of the data set readers.

use std::path::PathBuf;

/// What went wrong while reading a data set. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The data directory does not exist.
    #[error("data directory {dir} does not exist: {hint}")]
    MissingDirectory {
        /// The directory that was looked for.
        dir: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// A file the data set needs is not there.
    #[error("{path}: file not found: {hint}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// The file exists but could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's content is not what the format requires.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// Images and labels disagree, or a label is out of range.
    #[error("{path}: label {label} at record {index} is out of range (expected 0..{classes})")]
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// Record number, from 0.
        index: usize,
        /// The label found.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// The caller asked for something inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl DatasetError {
    pub(crate) fn corrupt(path: &std::path::Path, problem: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::MissingFile {
                path: path.to_path_buf(),
                hint: "check --data-dir".into(),
            }
        } else {
            Self::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
