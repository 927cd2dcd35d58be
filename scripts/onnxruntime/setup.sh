#!/usr/bin/env bash
# Creates (once) the Python virtual environment of the onnxruntime benchmark anchor at
# target/onnxruntime-venv (relative to the repository root) and installs onnxruntime, onnx,
# numpy and safetensors into it from PyPI. Idempotent: a second run installs nothing.
# Quiet except for errors; the last line of stdout is the venv's python, e.g.
#   py=$(scripts/onnxruntime/setup.sh | tail -n1) && "$py" scripts/onnxruntime/bench.py ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/onnxruntime-venv"
py="$venv/bin/python"
python="${PYTHON:-python3}"
modules="import onnxruntime, onnx, numpy, safetensors"

command -v "$python" >/dev/null 2>&1 || {
  echo "error: $python not found; install it first (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
}

# A venv left half-made (e.g. by a run without ensurepip) has no pip: start it anew.
if [ -d "$venv" ] && ! "$py" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
fi

if [ ! -x "$py" ]; then
  if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
    echo "error: '$python -m venv' cannot create a venv with pip (no ensurepip module)." >&2
    echo "       On Debian/Ubuntu install it with: apt-get install python3-venv" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$venv")"
  if ! "$python" -m venv "$venv" >/dev/null; then
    rm -rf "$venv"
    echo "error: '$python -m venv $venv' failed." >&2
    echo "       On Debian/Ubuntu install the venv support with: apt-get install python3-venv" >&2
    exit 1
  fi
fi

if ! "$py" -c "$modules" >/dev/null 2>&1; then
  "$py" -m pip install --quiet --disable-pip-version-check onnxruntime onnx numpy safetensors
  "$py" -c "$modules" || {
    echo "error: onnxruntime, onnx, numpy or safetensors still not importable in $venv" >&2
    exit 1
  }
fi

echo "$py"
