#!/usr/bin/env bash
# Installs the system packages the project needs on a fresh Debian machine with Rust:
# Fashion-MNIST (the default data set), libzmq with CURVE (ZeroMQ), pkg-config, iproute2
# (ip netns, tc: shaped-link tests), procps (kill: the tests stop servers with SIGTERM),
# fonts for the figures, and Mesa's CPU Vulkan driver (lavapipe) with the Vulkan loader, so
# that the wgpu backend runs (and is checked against the CPU) on a machine without a GPU.
set -euo pipefail
packages=(dataset-fashion-mnist libzmq3-dev pkg-config iproute2 procps fonts-dejavu-core
  mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
