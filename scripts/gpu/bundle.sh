#!/usr/bin/env bash
# Builds what a GPU run needs into a folder to carry to a machine with a GPU and no Rust
# toolchain (each under 64 MiB):
#   bundle.sh [serve]  → target/gpu: edgent-edge and edgent-device (plan and weights
#                        compiled in), Fashion-MNIST's test set and run.sh
#                        (there: `bash target/gpu/run.sh OUT_DIR`);
#   bundle.sh train    → target/gpu-train: xtask, the whole of Fashion-MNIST and train.sh
#                        (there: `bash target/gpu-train/train.sh OUT_DIR`).
# The binaries are stripped and gzipped; beside them go the shared libraries they load
# beyond glibc (libzmq and its dependencies; the Vulkan loader wgpu opens — the GPU driver
# brings its own ICD).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-serve}
case "$mode" in
  serve)
    out=target/gpu
    binaries=(edgent-edge edgent-device)
    data=(t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
    script=run.sh
    cargo build --release --locked -p generated --bins
    ;;
  train)
    out=target/gpu-train
    binaries=(xtask)
    data=(t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
      train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz)
    script=train.sh
    cargo build --release --locked -p xtask
    ;;
  *)
    echo "usage: bundle.sh [serve|train]" >&2
    exit 2
    ;;
esac
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data"
for b in "${binaries[@]}"; do
  strip -o "$out/bin/$b" "target/release/$b"
  # Libraries the dynamic linker resolves, but not glibc's own (the target has those).
  ldd "$out/bin/$b" | awk '/=> \// {print $3}' |
    grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$out/lib/"; done
done
vulkan=$(ldconfig -p | awk '/libvulkan\.so\.1 / {print $NF; exit}')
[ -n "$vulkan" ] || { echo "no libvulkan.so.1 here: run scripts/setup.sh" >&2; exit 1; }
cp -L "$vulkan" "$out/lib/"
for f in "${data[@]}"; do cp -L "/usr/share/datasets/fashion-mnist/$f" "$out/data/"; done
cp "scripts/gpu/$script" scripts/gpu/common.sh scripts/gpu/load.sh "$out/"
gzip -9 "$out"/bin/*
du -sh "$out"
