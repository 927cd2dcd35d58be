//! Reader for Fashion-MNIST (and MNIST) IDX files, gzip-compressed or plain.
//!
//! IDX layout: a big-endian `u32` magic (`0x0000_0801` labels, `0x0000_0803` images), one
//! big-endian `u32` per dimension, then the `u8` data. Images are 28×28 and are zero-padded
//! by 2 pixels on each side to the model's 32×32.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::DatasetError;
use crate::image_set::{IMAGE_SIZE, ImageSet, Split, check_labels};

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

const LABEL_MAGIC: u32 = 0x0000_0801;
const IMAGE_MAGIC: u32 = 0x0000_0803;
const SOURCE_SIZE: usize = 28;

/// Base names of the image and label files of a split (without `.gz`).
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// Reads one split from `dir`, taking `NAME.gz` or plain `NAME`, whichever exists.
pub fn load(dir: &Path, split: Split) -> Result<ImageSet, DatasetError> {
    let (images_name, labels_name) = file_names(split);
    let images_path = find(dir, images_name)?;
    let labels_path = find(dir, labels_name)?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    parse(&images_path, &images, &labels_path, &labels)
}

fn find(dir: &Path, name: &str) -> Result<PathBuf, DatasetError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(DatasetError::MissingFile {
        path: gz,
        hint: format!("neither {name}.gz nor {name} is in {}", dir.display()),
    })
}

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
fn read_idx(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let raw = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DatasetError::corrupt(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the IDX header: checks the magic and returns the dimensions and the data.
fn header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    dims: usize,
) -> Result<(Vec<usize>, &'a [u8]), DatasetError> {
    let header_len = 4 + 4 * dims;
    if bytes.len() < header_len {
        return Err(DatasetError::corrupt(
            path,
            format!("too short for an IDX header: {} bytes", bytes.len()),
        ));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    let found = word(0);
    if found != magic {
        return Err(DatasetError::corrupt(
            path,
            format!("wrong IDX magic number {found:#010x}: expected {magic:#010x}"),
        ));
    }
    let shape: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let expected: usize = shape.iter().product();
    let data = &bytes[header_len..];
    if data.len() != expected {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "header promises {expected} bytes of data ({shape:?}) but the file holds {}: truncated or corrupt",
                data.len()
            ),
        ));
    }
    Ok((shape, data))
}

/// Parses decompressed image and label files into a padded [`ImageSet`].
pub fn parse(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
) -> Result<ImageSet, DatasetError> {
    let (image_shape, image_data) = header(images_path, images, IMAGE_MAGIC, 3)?;
    let (label_shape, label_data) = header(labels_path, labels, LABEL_MAGIC, 1)?;
    if image_shape[1..] != [SOURCE_SIZE, SOURCE_SIZE] {
        return Err(DatasetError::corrupt(
            images_path,
            format!(
                "images are {}×{}: expected 28×28",
                image_shape[1], image_shape[2]
            ),
        ));
    }
    if image_shape[0] != label_shape[0] {
        return Err(DatasetError::corrupt(
            labels_path,
            format!(
                "{} labels for {} images in {}",
                label_shape[0],
                image_shape[0],
                images_path.display()
            ),
        ));
    }
    check_labels(labels_path, label_data)?;
    let pad = (IMAGE_SIZE - SOURCE_SIZE) / 2;
    let mut pixels = vec![0u8; image_shape[0] * IMAGE_SIZE * IMAGE_SIZE];
    for (src, dst) in image_data
        .chunks_exact(SOURCE_SIZE * SOURCE_SIZE)
        .zip(pixels.chunks_exact_mut(IMAGE_SIZE * IMAGE_SIZE))
    {
        for (row, src_row) in src.chunks_exact(SOURCE_SIZE).enumerate() {
            let start = (row + pad) * IMAGE_SIZE + pad;
            dst[start..start + SOURCE_SIZE].copy_from_slice(src_row);
        }
    }
    Ok(ImageSet {
        channels: 1,
        pixels,
        labels: label_data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write_split(dir: &Path, n: usize, compress: bool, labels: &[u8]) {
        let pixels: Vec<u8> = (0..n * 784).map(|i| (i % 256) as u8).collect();
        let (img, lab) = file_names(Split::Test);
        let files = [
            (img, idx(IMAGE_MAGIC, &[n as u32, 28, 28], &pixels)),
            (lab, idx(LABEL_MAGIC, &[labels.len() as u32], labels)),
        ];
        for (name, bytes) in files {
            if compress {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn reads_gzip_and_plain_and_pads_to_32() {
        for compress in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            write_split(dir.path(), 2, compress, &[3, 9]);
            let set = load(dir.path(), Split::Test).unwrap();
            assert_eq!(set.len(), 2);
            assert_eq!(set.labels, vec![3, 9]);
            let img = set.image(1);
            assert_eq!(img.len(), 1024);
            // Padding rows and columns are zero; pixel (0,0) of the source sits at (2,2).
            assert!(img[..64].iter().all(|&p| p == 0));
            assert_eq!(img[2 * 32 + 2], (784 % 256) as u8);
            assert_eq!(img[2 * 32 + 29], ((784 + 27) % 256) as u8);
            assert_eq!(img[2 * 32 + 30], 0);
        }
    }

    #[test]
    fn wrong_magic_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 1, false, &[1]);
        let (_, lab) = file_names(Split::Test);
        std::fs::write(dir.path().join(lab), idx(0x0803, &[1], &[1])).unwrap();
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(
            err.contains(lab) && err.contains("wrong IDX magic"),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_mismatched_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 2, false, &[1]);
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("1 labels for 2 images"), "{err}");

        let (img, _) = file_names(Split::Test);
        let path = dir.path().join(img);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, bytes).unwrap();
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn corrupt_gzip_and_bad_labels_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 2, true, &[1, 10]);
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("label 10 at record 1"), "{err}");

        let (img, _) = file_names(Split::Test);
        std::fs::write(dir.path().join(format!("{img}.gz")), [0x1f, 0x8b, 0, 1, 2]).unwrap();
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("bad gzip"), "{err}");
    }
}
