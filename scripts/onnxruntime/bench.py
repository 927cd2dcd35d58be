#!/usr/bin/env python3
"""onnxruntime benchmark anchor for Edgent's 5-exit B-AlexNet.

Builds one ONNX graph per exit (1..5) from the project's safetensors weights, checks each
graph's logits against an independent numpy implementation of the same forward pass (and,
optionally, against logits the Rust runtime computed), then times batch-1 inference of every
exit with onnxruntime's CPU execution provider.

The network mirrors `runtime/src/model/layers.rs` (`TRUNK`, `BRANCHES`, `b_alexnet`) and
DESIGN.md §3:

* convolutions stride 1, zero padding kernel // 2;
* max-pooling 3x3 stride 2, ceil mode, no padding (32 -> 16 -> 8 -> 4);
* LRN with Chainer's formula ``x / (k + alpha * sum_{3 channels} x^2) ** beta``, alpha = 5e-5,
  beta = 0.75, k = 2, n = 3 (ONNX divides alpha by size, so the graph gets alpha = 1.5e-4);
* dropout is the identity at inference and is left out;
* FC layers flatten in C, H, W order, then ``y = x W^T + b`` (Gemm, transB = 1).

Exit i (1..4) runs the first ``tap`` trunk layers, then branch i, whose layers are named
``exit{i}.{name}``; exit 5 is the whole trunk. Tensors are ``{layer}.weight`` and
``{layer}.bias`` in PyTorch layouts (conv ``[out, in, kh, kw]``, fc ``[out, in]``), float32.

Usage (run with the venv from ``scripts/onnxruntime/setup.sh``)::

    bench.py --weights generated/model.safetensors --threads N [--repeats R]
             [--reference FILE] [--channels C] [--write-reference FILE]

``--reference FILE`` is JSON ``{"channels": C, "input": [C*32*32 floats],
"logits": [[classes floats] x 5]}``: onnxruntime's logits on that input are compared with
the file's. ``--write-reference FILE`` writes such a file from the numpy reference (on the
deterministic validation input), e.g. to exercise ``--reference``.

The last line of stdout is one JSON object::

    {"threads": N, "ms": [5 medians], "max_rel_diff_numpy": [5],
     "max_rel_diff_reference": [5] or null, "onnxruntime": "<version>"}

The relative difference of two logit vectors a (onnxruntime) and b (reference) is
``max|a - b| / max|b|``; every exit must be within ``--tolerance`` (1e-4), or the script
exits with status 1. The numpy check runs on a seeded N(0, 1) input and on the same input
times 50 (so that LRN's denominator weighs in) and reports the larger difference. Progress
and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# The architecture (a transcription of runtime/src/model/layers.rs).
# ---------------------------------------------------------------------------------------------

NUM_EXITS = 5
SIDE = 32
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 3, 5e-5, 0.75, 2.0  # Chainer's parameters
POOL_KERNEL, POOL_STRIDE = 3, 2
OPSET = 17


@dataclass(frozen=True)
class Op:
    """One architecture step: kind is conv, relu, pool, lrn, dropout or fc."""

    kind: str
    out: int = 0  # conv: output channels; fc: output features (0 = the number of classes)
    kernel: int = 0  # conv only


def conv(out: int, kernel: int) -> Op:
    """A stride-1 convolution with padding kernel // 2."""
    return Op("conv", out, kernel)


def fc(out: int) -> Op:
    """A fully connected layer; out = 0 means the number of classes."""
    return Op("fc", out)


RELU, POOL, LRN, DROPOUT = Op("relu"), Op("pool"), Op("lrn"), Op("dropout")

TRUNK = [
    ("conv1", conv(32, 5)), ("relu1", RELU), ("pool1", POOL), ("lrn1", LRN),
    ("conv2", conv(64, 5)), ("relu2", RELU), ("pool2", POOL), ("lrn2", LRN),
    ("conv3", conv(96, 3)), ("relu3", RELU),
    ("conv4", conv(96, 3)), ("relu4", RELU),
    ("conv5", conv(64, 3)), ("relu5", RELU), ("pool5", POOL),
    ("fc6", fc(256)), ("relu6", RELU), ("drop6", DROPOUT),
    ("fc7", fc(128)), ("relu7", RELU), ("drop7", DROPOUT),
    ("fc8", fc(0)),
]  # fmt: skip

# (trunk layers the branch follows, the branch's own layers) for exits 1..4.
BRANCHES = [
    (4, [("conv1", conv(32, 3)), ("relu1", RELU), ("pool1", POOL),
         ("conv2", conv(32, 3)), ("relu2", RELU), ("pool2", POOL), ("fc", fc(0))]),
    (8, [("conv1", conv(32, 3)), ("relu1", RELU), ("conv2", conv(32, 3)), ("relu2", RELU),
         ("pool", POOL), ("fc", fc(0))]),
    (10, [("conv1", conv(32, 3)), ("relu1", RELU), ("conv2", conv(32, 3)), ("relu2", RELU),
          ("pool", POOL), ("fc", fc(0))]),
    (12, [("conv1", conv(32, 3)), ("relu1", RELU), ("pool", POOL),
          ("fc1", fc(128)), ("relu2", RELU), ("fc2", fc(0))]),
]  # fmt: skip


def exit_chain(exit_no: int) -> list[tuple[str, Op]]:
    """The named layers of exit `exit_no` (1-based), as `b_alexnet` builds them."""
    if exit_no == NUM_EXITS:
        return list(TRUNK)
    tap, branch = BRANCHES[exit_no - 1]
    return TRUNK[:tap] + [(f"exit{exit_no}.{name}", op) for name, op in branch]


def log(msg: str) -> None:
    """Prints a progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    """Prints an error on stderr and exits with status 1."""
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def load_weights(path: str, channels: int | None) -> tuple[dict[str, np.ndarray], int, int]:
    """Loads the safetensors file; returns (tensors, channels, classes) after checking shapes."""
    from safetensors.numpy import load_file

    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_file(path).items()}
    if "conv1.weight" not in weights or "fc8.bias" not in weights:
        fail(f"{path}: no conv1.weight / fc8.bias; not a B-AlexNet weights file")
    found = weights["conv1.weight"].shape[1]
    if channels is not None and channels != found:
        fail(f"--channels {channels} but conv1.weight has {found} input channels")
    classes = weights["fc8.bias"].shape[0]
    for exit_no in range(1, NUM_EXITS + 1):
        shape = [found, SIDE, SIDE]
        for name, op in exit_chain(exit_no):
            expect = None
            if op.kind == "conv":
                expect = (op.out, shape[0], op.kernel, op.kernel)
            elif op.kind == "fc":
                expect = (op.out or classes, int(np.prod(shape)))
            if expect is not None:
                for suffix, want in (("weight", expect), ("bias", expect[:1])):
                    got = weights.get(f"{name}.{suffix}")
                    if got is None or tuple(got.shape) != want:
                        got_shape = None if got is None else list(got.shape)
                        fail(f"{name}.{suffix}: expected shape {list(want)}, found {got_shape}")
            shape = layer_output_shape(op, shape, classes)
        if shape != [classes]:
            fail(f"exit {exit_no} ends in shape {shape}, not [{classes}]")
    return weights, found, classes


def pool_side(n: int) -> int:
    """Output side of ceil-mode max-pooling (a window that starts inside the input counts)."""
    return -(-(n - POOL_KERNEL) // POOL_STRIDE) + 1


def layer_output_shape(op: Op, shape: list[int], classes: int) -> list[int]:
    """Per-sample output shape of `op` on a per-sample input `shape`."""
    if op.kind == "conv":
        return [op.out, shape[1], shape[2]]  # odd kernel, padding kernel // 2
    if op.kind == "pool":
        return [shape[0], pool_side(shape[1]), pool_side(shape[2])]
    if op.kind == "fc":
        return [op.out or classes]
    return list(shape)


# ---------------------------------------------------------------------------------------------
# ONNX graphs.
# ---------------------------------------------------------------------------------------------


def build_onnx(exit_no: int, weights: dict[str, np.ndarray], channels: int, classes: int):
    """Builds and checks the ONNX model of exit `exit_no` (input "input", output "logits")."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x, rank = "input", 4

    def param(name: str) -> tuple[str, str]:
        for suffix in ("weight", "bias"):
            inits.append(numpy_helper.from_array(weights[f"{name}.{suffix}"], f"{name}.{suffix}"))
        return f"{name}.weight", f"{name}.bias"

    for name, op in exit_chain(exit_no):
        y = name
        if op.kind == "conv":
            w, b = param(name)
            pad = op.kernel // 2
            nodes.append(helper.make_node(
                "Conv", [x, w, b], [y], name=name, kernel_shape=[op.kernel, op.kernel],
                strides=[1, 1], pads=[pad, pad, pad, pad]))
        elif op.kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [y], name=name))
        elif op.kind == "pool":
            nodes.append(helper.make_node(
                "MaxPool", [x], [y], name=name, kernel_shape=[POOL_KERNEL, POOL_KERNEL],
                strides=[POOL_STRIDE, POOL_STRIDE], pads=[0, 0, 0, 0], ceil_mode=1))
        elif op.kind == "lrn":
            # ONNX: x / (bias + alpha / size * sum x^2) ** beta, so alpha = Chainer's alpha * n.
            nodes.append(helper.make_node(
                "LRN", [x], [y], name=name, size=LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE,
                beta=LRN_BETA, bias=LRN_K))
        elif op.kind == "dropout":
            continue  # the identity at inference
        elif op.kind == "fc":
            if rank != 2:
                flat = f"{name}.flatten"
                nodes.append(helper.make_node("Flatten", [x], [flat], name=flat, axis=1))
                x, rank = flat, 2
            w, b = param(name)
            nodes.append(helper.make_node("Gemm", [x, w, b], [y], name=name, transB=1))
        else:
            raise ValueError(f"unknown layer kind {op.kind}")
        x = y
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))

    graph = helper.make_graph(
        nodes, f"b_alexnet_exit{exit_no}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgent-bench")
    model.ir_version = 8  # the IR version of opset 17; keeps older onnxruntime builds happy
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------
# The independent numpy reference (float64).
# ---------------------------------------------------------------------------------------------


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stride-1 convolution of x [C,H,W] with w [O,C,k,k], zero padding k // 2 (im2col)."""
    k = w.shape[2]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))  # C,H,W,k,k
    return np.einsum("chwij,ocij->ohw", cols, w, optimize=True) + b[:, None, None]


def np_pool(x: np.ndarray) -> np.ndarray:
    """3x3 stride-2 max-pooling of x [C,H,W] in ceil mode (windows clipped at the edge)."""
    c, h, w = x.shape
    oh, ow = pool_side(h), pool_side(w)
    out = np.empty((c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            r, s = i * POOL_STRIDE, j * POOL_STRIDE
            out[:, i, j] = x[:, r : r + POOL_KERNEL, s : s + POOL_KERNEL].max(axis=(1, 2))
    return out


def np_lrn(x: np.ndarray) -> np.ndarray:
    """Chainer's LRN: x / (k + alpha * sum of x^2 over channels c-1..c+1) ** beta."""
    half = LRN_SIZE // 2
    sq = np.pad(x * x, ((half, half), (0, 0), (0, 0)))
    window = sum(sq[i : i + x.shape[0]] for i in range(LRN_SIZE))
    return x / (LRN_K + LRN_ALPHA * window) ** LRN_BETA


def numpy_forward(exit_no: int, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of exit `exit_no` for one sample x [C,H,W], computed in float64."""
    x = x.astype(np.float64)
    for name, op in exit_chain(exit_no):
        if op.kind in ("conv", "fc"):
            w = weights[f"{name}.weight"].astype(np.float64)
            b = weights[f"{name}.bias"].astype(np.float64)
        if op.kind == "conv":
            x = np_conv(x, w, b)
        elif op.kind == "relu":
            x = np.maximum(x, 0.0)
        elif op.kind == "pool":
            x = np_pool(x)
        elif op.kind == "lrn":
            x = np_lrn(x)
        elif op.kind == "fc":
            x = w @ x.reshape(-1) + b  # flatten in C, H, W order
    return x


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b| over a logits vector (b is the reference)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


# ---------------------------------------------------------------------------------------------
# onnxruntime.
# ---------------------------------------------------------------------------------------------


def make_session(model, threads: int):
    """A CPU InferenceSession with `threads` intra-op threads, sequential, all optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def run_logits(session, x: np.ndarray) -> np.ndarray:
    """onnxruntime's logits for one sample x [C,H,W]."""
    feed = {"input": np.ascontiguousarray(x, dtype=np.float32)[None]}
    return session.run(["logits"], feed)[0][0]


def time_session(session, x: np.ndarray, warmup: int, repeats: int) -> float:
    """Median wall time in ms of `repeats` batch-1 `run` calls, after `warmup` untimed ones."""
    feed = {"input": np.ascontiguousarray(x, dtype=np.float32)[None]}
    for _ in range(warmup):
        session.run(["logits"], feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        session.run(["logits"], feed)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def load_reference(path: str, channels: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads a reference JSON file; returns (input [C,32,32] float32, logits [5, classes])."""
    with open(path, encoding="utf-8") as f:
        ref = json.load(f)
    if ref.get("channels") != channels:
        fail(f"{path}: channels {ref.get('channels')}, but the weights take {channels}")
    x = np.asarray(ref.get("input", []), dtype=np.float32)
    if x.size != channels * SIDE * SIDE:
        fail(f"{path}: input has {x.size} values, expected {channels * SIDE * SIDE}")
    logits = np.asarray(ref.get("logits", []), dtype=np.float64)
    if logits.shape != (NUM_EXITS, classes):
        fail(f"{path}: logits have shape {list(logits.shape)}, expected [{NUM_EXITS}, {classes}]")
    return x.reshape(channels, SIDE, SIDE), logits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="model.safetensors")
    p.add_argument("--threads", type=int, required=True, help="intra-op threads")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per exit (200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs per exit first (20)")
    p.add_argument("--reference", help="JSON with the Rust runtime's input and logits")
    p.add_argument("--channels", type=int, help="input channels (default: from conv1.weight)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max relative difference")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation input")
    p.add_argument("--write-reference", metavar="FILE",
                   help="write a reference file from the numpy forward on the validation input")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--threads and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Validates the five exits, times them and prints the JSON summary."""
    args = parse_args(argv)
    import onnxruntime as ort

    weights, channels, classes = load_weights(args.weights, args.channels)
    log(f"onnxruntime {ort.__version__}, {channels} channel(s), {classes} classes, "
        f"{args.threads} thread(s), {args.repeats} repeats")

    # Deterministic validation input, roughly the scale of normalised images.
    x = np.random.default_rng(args.seed).standard_normal((channels, SIDE, SIDE))
    x = x.astype(np.float32)
    reference = load_reference(args.reference, channels, classes) if args.reference else None

    sessions, diffs_np, diffs_ref, np_logits, problems = [], [], [], [], []
    for exit_no in range(1, NUM_EXITS + 1):
        session = make_session(build_onnx(exit_no, weights, channels, classes), args.threads)
        sessions.append(session)
        # Two inputs: as drawn, and scaled by 50 so that LRN's denominator matters (at scale 1
        # even a wrong LRN alpha moves the logits by only a few 1e-4).
        np_logits.append(numpy_forward(exit_no, weights, x))
        d = max(rel_diff(run_logits(session, x), np_logits[-1]),
                rel_diff(run_logits(session, 50 * x), numpy_forward(exit_no, weights, 50 * x)))
        diffs_np.append(d)
        line = f"exit {exit_no}: rel diff vs numpy {d:.3e}"
        if d > args.tolerance:
            problems.append(f"exit {exit_no}: onnxruntime vs numpy reference {d:.3e}")
        if reference is not None:
            r = rel_diff(run_logits(session, reference[0]), reference[1][exit_no - 1])
            diffs_ref.append(r)
            line += f", vs {args.reference} {r:.3e}"
            if r > args.tolerance:
                problems.append(f"exit {exit_no}: onnxruntime vs {args.reference} {r:.3e}")
        log(line)

    if args.write_reference:
        with open(args.write_reference, "w", encoding="utf-8") as f:
            json.dump({"channels": channels, "input": [float(v) for v in x.ravel()],
                       "logits": [[float(v) for v in row] for row in np_logits]}, f)
        log(f"wrote {args.write_reference}")

    if problems:
        fail(f"relative difference above {args.tolerance:g}:\n  " + "\n  ".join(problems))

    ms = []
    for exit_no, session in enumerate(sessions, start=1):
        ms.append(time_session(session, x, args.warmup, args.repeats))
        log(f"exit {exit_no}: median {ms[-1]:.4f} ms")

    print(json.dumps({
        "threads": args.threads,
        "ms": [round(v, 5) for v in ms],
        "max_rel_diff_numpy": diffs_np,
        "max_rel_diff_reference": diffs_ref if reference is not None else None,
        "onnxruntime": ort.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
