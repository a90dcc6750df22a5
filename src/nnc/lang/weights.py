"""Weights in the contract's Keras layouts: initialization as Keras initializes them, and
checkpoints (.npz) read with every mismatch refused by name, written atomically.

Array names are `LAYER.kernel`, `LAYER.recurrent_kernel`, `LAYER.bias`, `LAYER.embeddings`
(Model.weight_shapes() lists them in order), so weights move between Keras and nnc as they are.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from math import prod
from typing import IO, Iterator

import numpy as np

from nnc.lang.errors import UserError
from nnc.lang.model import Layer, Model


# --- initialization, as Keras 3 does it ------------------------------------------------------


_CHUNK = 1 << 20  # float64 draws made at once


def _uniform(rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
    """rng.uniform(low, high, shape) as float32, drawn a million values at a time: the values are
    exactly those of one float64 draw (a Generator's stream does not depend on how it is cut),
    but a model's initial weights take their float32 size plus 8 MB, not three times that."""
    out = np.empty(shape, dtype=np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        stop = min(start + _CHUNK, flat.size)
        flat[start:stop] = rng.uniform(low, high, size=stop - start)
    return out


def _glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # keras.initializers.GlorotUniform: fans include the receptive field of a conv kernel
    receptive = prod(shape[:-2]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return _uniform(rng, -limit, limit, shape)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # keras.initializers.Orthogonal: QR of a normal matrix, signs fixed by diag(r)
    rows, cols = shape[0], prod(shape[1:])
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def _glorot_fans(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return _uniform(rng, -limit, limit, shape)


def init_layer(layer: Layer, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for full, shape in layer.weights.items():
        name = full.rsplit(".", 1)[-1]  # dotted names (query.kernel, forward.bias): the last part decides
        if layer.kind == "attention" and name == "kernel":
            # keras EinsumDense's glorot_uniform counts fans over its einsum's input and output
            # axes: q/k/v [F, heads, dim] read F; the output kernel [heads, value_dim, F] writes F
            if full.startswith("attention_output."):
                w = _glorot_fans(rng, shape, prod(shape[:-1]), shape[-1])
            else:
                w = _glorot_fans(rng, shape, shape[0], prod(shape[1:]))
        elif name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            w = _glorot_uniform(rng, shape)
        elif name == "recurrent_kernel":
            w = _orthogonal(rng, shape)
        elif name == "embeddings" and layer.kind == "position_embedding":
            w = _glorot_uniform(rng, shape)
        elif name == "embeddings":
            w = _uniform(rng, -0.05, 0.05, shape)  # keras Embedding: RandomUniform(-0.05, 0.05)
        elif name in ("gamma", "moving_variance"):
            w = np.ones(shape, np.float32)
        else:  # biases, beta, moving_mean, prelu's alpha
            w = np.zeros(shape, np.float32)
            if layer.kind == "lstm" and name == "bias":
                u = layer.options["units"]
                w[u : 2 * u] = 1.0  # unit_forget_bias: the forget gate (order i, f, c, o) starts open
        out[f"{layer.name}.{full}"] = w.astype(np.float32, copy=False)
    return out


def available_memory() -> int | None:
    """Bytes this process could still allocate (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def refuse_past_memory(nbytes: int, path: str, what: str) -> None:
    """Refuse, before reading or unpacking it, a part of a file (`what`: "its external data", ...)
    that declares more bytes than this machine's free memory (importers of untrusted files)."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise UserError(f"{path}: {what} declares {nbytes:,} bytes, more than the {avail:,} bytes of memory "
                        "available; refused unread", exit_code=1)


def check_fits_in_memory(model: Model, copies: int = 1, what: str = "its weights") -> None:
    """Refuse, before allocating anything, a model whose float32 weights (times `copies`: a
    training run keeps gradients and optimizer slots too) would not fit in this machine's memory."""
    need = 4 * model.total_params * copies
    avail = available_memory()
    if avail is not None and need > avail:
        raise UserError(f"{model.name} has {model.total_params:,} parameters: {what} need {need:,} bytes "
                        f"({f'{need / 1024**3:,.1f}' if need < 2**1000 else f'{need >> 30:,}'} GiB), "  # huge ints overflow floats
                        f"more than the {avail / 1024**3:,.1f} GiB of memory available",
                        exit_code=1, help="`nnc check` and `nnc summary` count such a model without allocating it")


def init_weights(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh weights for every layer, deterministic in `seed`."""
    check_fits_in_memory(model)
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for layer in model.layers:
        weights.update(init_layer(layer, rng))
    return weights


# --- checkpoints ------------------------------------------------------------------------------


def _problems(model: Model, declared: dict[str, tuple[tuple[int, ...], np.dtype]],
              arrays: dict[str, np.ndarray] | None) -> list[str]:
    """What does not fit the model: from shapes and dtypes alone, and NaN/Inf when `arrays` are given."""
    expected = model.weight_shapes()
    problems: list[str] = []
    for name, shape in expected.items():
        if name not in declared:
            problems.append(f"missing array '{name}' (expected shape {list(shape)})")
            continue
        got, dtype = declared[name]
        if tuple(got) != shape:
            problems.append(f"array '{name}' has shape {list(got)}, but the spec needs {list(shape)}")
        elif dtype != np.float32:
            problems.append(f"array '{name}' has dtype {dtype}, but nnc weights are float32")
        elif arrays is not None and not np.isfinite(arrays[name]).all():
            a = arrays[name]
            bad = int(np.size(a) - np.isfinite(a).sum())
            problems.append(f"array '{name}' has {bad} NaN or Inf value{'s' if bad != 1 else ''}")
    for name in sorted(set(declared) - set(expected)):
        problems.append(f"unexpected array '{name}' (shape {list(declared[name][0])}): the spec has no such weight")
    return problems


def _refuse(model: Model, problems: list[str], source: str) -> None:
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise UserError(f"{source} does not fit {model.name}:\n  " + "\n  ".join(shown), exit_code=1,
                        help="arrays are named LAYER.kernel, LAYER.recurrent_kernel, LAYER.bias, LAYER.embeddings "
                             "(and LAYER.gamma, LAYER.forward.kernel, ... for the newer kinds) in Keras layouts; "
                             "`nnc summary --format json` lists each layer's weight shapes")


def validate(model: Model, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Refuse arrays that do not fit the model: missing, extra, wrong shape or dtype, NaN/Inf."""
    declared = {k: (tuple(np.shape(a)), np.asarray(a).dtype) for k, a in arrays.items()}
    _refuse(model, _problems(model, declared, arrays), source)
    return {name: arrays[name] for name in model.weight_shapes()}


def load_checkpoint(path: str, model: Model) -> dict[str, np.ndarray]:
    """Read an .npz checkpoint and validate it against the model. Shapes and dtypes are checked
    from the .npy headers first, so a checkpoint that cannot fit (a 2 GiB array where a bias
    belongs) is refused before anything is decompressed."""
    from nnc.lang.npz import headers, read_npz

    declared = headers(path, "weights")
    _refuse(model, _problems(model, declared, None), f"weights {path}")
    return validate(model, read_npz(path, "weights", declared=declared), source=f"weights {path}")


def output_target(path: str, inputs: tuple[str, ...] = ()) -> str:
    """Where writing `path` really goes, after the output policy's refusals (UserError, exit 2):
    a symlink is followed to its target (the link stays a link), a folder is refused, and so is
    a path that is one of the command's `inputs` (`nnc compile a.nnspec -o a.nnspec`)."""
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise UserError(f"cannot write {path}: it is a folder; give a file name inside it")
    for src in inputs:
        try:
            same = src and os.path.exists(target) and os.path.samefile(src, target)
        except OSError:
            same = False
        if same:
            raise UserError(f"cannot write {path}: it is the input {src}, which writing would destroy",
                            help="choose another output name")
    return target


@contextmanager
def atomic_open(path: str, mode: str = "wb", inputs: tuple[str, ...] = ()) -> Iterator[IO]:
    """Write `path` so that nothing is lost: readers (and a crash or Ctrl-C half-way) never see a
    half-written file, and nothing but the named file changes.

    - `-` is standard output (the bytes or text go there; nothing is closed);
    - a symlink is followed: its target is replaced and the link stays a link;
    - a character device, FIFO or socket (/dev/null, a pipe) is written in place, never
      replaced by a regular file;
    - a regular file with other hard links gets the new content in place (once it is complete
      in a temporary file), so the links keep sharing it;
    - otherwise the content goes to a temporary file beside the target, renamed over it;
    - a folder, one of `inputs`, or a place that cannot be written is a UserError (exit 2)."""
    if path == "-":
        yield sys.stdout.buffer if "b" in mode else sys.stdout
        (sys.stdout.buffer if "b" in mode else sys.stdout).flush()
        return
    target = output_target(path, inputs)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(target, mode) as f:
                yield f
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        return
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if st is not None and st.st_nlink > 1:
            with open(tmp, "rb") as src, open(target, "r+b") as dst:
                shutil.copyfileobj(src, dst)
                dst.truncate()
                dst.flush()
                os.fsync(dst.fileno())
            os.unlink(tmp)
            return
        # mkstemp makes the file owner-only; give it the mode a plain open() would have
        # (the existing file's mode when replacing one).
        if st is not None:
            mode_bits = st.st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode_bits = 0o666 & ~umask
        os.chmod(tmp, mode_bits)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def save_checkpoint(path: str, weights: dict[str, np.ndarray]) -> None:
    """Write weights as an .npz, atomically, in a deterministic order."""
    with atomic_open(path) as f:
        np.savez(f, **{k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
