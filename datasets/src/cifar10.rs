//! Reader for the CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes
//! (1024 red, 1024 green, 1024 blue, each 32×32 row-major).

use std::path::Path;

use crate::DatasetError;
use crate::image_set::{IMAGE_SIZE, ImageSet, Split, check_labels};

/// Bytes of one record: the label and a 3×32×32 image.
pub const RECORD_LEN: usize = 1 + 3 * IMAGE_SIZE * IMAGE_SIZE;

/// The files of each split, in order.
pub fn files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    }
}

/// Reads every file of `split` from `dir` (the `cifar-10-batches-bin` folder).
pub fn load(dir: &Path, split: Split) -> Result<ImageSet, DatasetError> {
    let mut set = ImageSet {
        channels: 3,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for name in files(split) {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| DatasetError::io(&path, e))?;
        parse_into(&path, &bytes, &mut set)?;
    }
    Ok(set)
}

/// Parses the records of one file and appends them to `set`.
pub fn parse_into(path: &Path, bytes: &[u8], set: &mut ImageSet) -> Result<(), DatasetError> {
    if bytes.is_empty() {
        return Err(DatasetError::corrupt(
            path,
            "file is empty: expected CIFAR-10 records",
        ));
    }
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "truncated or not a CIFAR-10 binary file: {} bytes is not a multiple of the {RECORD_LEN}-byte record ({} whole records and {} bytes left over)",
                bytes.len(),
                bytes.len() / RECORD_LEN,
                bytes.len() % RECORD_LEN
            ),
        ));
    }
    let start = set.labels.len();
    for record in bytes.chunks_exact(RECORD_LEN) {
        set.labels.push(record[0]);
        set.pixels.extend_from_slice(&record[1..]);
    }
    check_labels(path, &set.labels[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `count` records whose pixels encode the record number, as CIFAR-10 does.
    fn write_file(path: &Path, count: usize, label_of: impl Fn(usize) -> u8) {
        let mut bytes = Vec::new();
        for i in 0..count {
            bytes.push(label_of(i));
            bytes.extend((0..3 * 1024).map(|j| ((i * 7 + j) % 251) as u8));
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_all_training_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (b, name) in files(Split::Train).iter().enumerate() {
            write_file(&dir.path().join(name), 3, |i| ((b * 3 + i) % 10) as u8);
        }
        let set = load(dir.path(), Split::Train).unwrap();
        assert_eq!(set.len(), 15);
        assert_eq!(set.channels, 3);
        assert_eq!(
            set.labels,
            (0..15).map(|i| (i % 10) as u8).collect::<Vec<_>>()
        );
        // First pixel of record 1 of every file is 7, the red plane comes first.
        assert_eq!(set.image(1)[0], 7);
        assert_eq!(set.image(1)[1024], ((7 + 1024) % 251) as u8);
    }

    #[test]
    fn truncated_file_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_batch.bin");
        write_file(&path, 2, |_| 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(RECORD_LEN + 100);
        std::fs::write(&path, bytes).unwrap();
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn out_of_range_label_is_reported_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_batch.bin");
        write_file(&path, 4, |i| if i == 2 { 12 } else { 3 });
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("label 12 at record 2"), "{err}");
    }

    #[test]
    fn missing_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("data_batch_1.bin"), 1, |_| 0);
        let err = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_2.bin") && err.contains("not found"),
            "{err}"
        );
    }
}
