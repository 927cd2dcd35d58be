#!/usr/bin/env bash
# Builds what the GPU run needs into target/gpu, a folder to carry to a machine with a GPU
# and no Rust toolchain: the stripped, gzipped binaries (plan and weights compiled in; about
# 20 MB each, so the folder stays under 64 MiB), the shared
# libraries they load beyond glibc (libzmq and its dependencies, the Vulkan loader wgpu
# opens), Fashion-MNIST's test set, and run.sh. There: `bash target/gpu/run.sh OUT_DIR`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p generated --bins
out=target/gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data"
for b in edgent-edge edgent-device; do
  strip -o "$out/bin/$b" target/release/$b
done
# Libraries the dynamic linker resolves, but not glibc's own (the target has those).
ldd "$out/bin/edgent-edge" | awk '/=> \// {print $3}' |
  grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
# The Vulkan loader: wgpu opens it at run time (the GPU driver brings its own ICD).
vulkan=$(ldconfig -p | awk '/libvulkan\.so\.1 / {print $NF; exit}')
[ -n "$vulkan" ] || { echo "no libvulkan.so.1 here: run scripts/setup.sh" >&2; exit 1; }
cp -L "$vulkan" "$out/lib/"
cp -L /usr/share/datasets/fashion-mnist/t10k-* "$out/data/"
cp scripts/gpu/run.sh "$out/"
gzip -9 "$out"/bin/*
du -sh "$out"
