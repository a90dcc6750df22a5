"""Training data for `nnc train` and `nnc eval`: read, shaped for the spec, and refused (with the
array and the problem named) before any training starts when it does not fit.

Sources (`--data`):
  - `digits`: the 8x8 handwritten digits shipped in nnc/data/digits.npz (see its README):
    1,437 training and 360 test images, pixels scaled to [0, 1].
  - `sine`: a noisy two-tone series cut into windows of the spec's input length, each
    window's target the next value (2,000 training and 500 test windows; see sine_series).
  - `FILE.npz` with `x_train, y_train[, x_test, y_test]`, the layout of Keras's mnist.npz and
    imdb.npz. uint8 images are scaled to [0, 1]; token sequences (int arrays, or ragged lists,
    which need pickle and so `allow_pickle`) are padded or truncated to the spec's length as
    keras.utils.pad_sequences does.
  - `FILE.csv`: one sample a row, the input's values flattened, then the target column(s);
    a first row that is not numbers is a header.

    data = load_data("digits", model, loss)    # Dataset: x_train, y_train, x_test, y_test
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from math import prod

import numpy as np

from nnc.lang.errors import UserError
from nnc.lang.model import Model

BUILTIN = ("digits", "sine")
NOTED = ("x_train", "y_train", "x", "y")  # the arrays whose preparation is noted for the user (not test, validation)


@dataclass
class Dataset:
    name: str  # what --data said
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # what was done to the data, for the user

    # validation data given apart (nnc.fit's validation_data): it replaces validation_split
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def fingerprint(self) -> str:
        """A hash of the training arrays as training sees them (and of the validation arrays given
        apart, if any): resuming checks it."""
        h = hashlib.sha256()
        extra = (self.x_val, self.y_val) if self.x_val is not None else ()
        for a in (self.x_train, self.y_train) + extra:
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def load_data(source: str, model: Model, loss: str, allow_pickle: bool = False) -> Dataset:
    """Read `source` and shape it for `model` trained with `loss`; UserError when it does not fit.

    Object arrays in an .npz (ragged token lists, as in Keras's imdb.npz) can only be read with
    pickle, which runs whatever code the file holds: they are refused unless `allow_pickle`
    (the command line's --allow-pickle) says the file is trusted."""
    raw, scale, notes = _read(source, model, loss, allow_pickle)
    train = _pair(raw, "x_train", "y_train", source)
    test = None
    if "x_test" in raw or "y_test" in raw:
        test = _pair(raw, "x_test", "y_test", source)
    x_train = prepare_x(train[0], "x_train", model, scale, notes)
    y_train = prepare_y(train[1], "y_train", model, loss, notes)
    _same_length(x_train, y_train, "x_train", "y_train")
    ds = Dataset(source, x_train, y_train, notes=notes)
    if test is not None:
        ds.x_test = prepare_x(test[0], "x_test", model, scale, [])
        ds.y_test = prepare_y(test[1], "y_test", model, loss, [])
        _same_length(ds.x_test, ds.y_test, "x_test", "y_test")
    return ds


def from_arrays(x, y, model: Model, loss: str, validation_data=None, name: str = "<arrays>") -> Dataset:
    """Arrays in memory (nnc.fit's x, y and validation_data=(x_val, y_val)) shaped for `model`
    trained with `loss` exactly as load_data shapes a file's x_train and y_train (uint8 scaled,
    token sequences padded, class ids one-hot for categorical_crossentropy, ...), with the same
    refusals naming `x`, `y` or `validation_data`."""
    notes: list[str] = []
    xa, ya = _array(x, "x"), _array(y, "y")
    ds = Dataset(name, prepare_x(xa, "x", model, None, notes), prepare_y(ya, "y", model, loss, notes), notes=notes)
    _same_length(ds.x_train, ds.y_train, "x", "y")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise UserError("validation_data must be a pair (x_val, y_val)"
                            + (" (nnc takes no sample weights)" if isinstance(validation_data, (tuple, list))
                               and len(validation_data) == 3 else ""))
        xv, yv = _array(validation_data[0], "validation_data[0]"), _array(validation_data[1], "validation_data[1]")
        ds.x_val = prepare_x(xv, "validation_data[0]", model, None, [])
        ds.y_val = prepare_y(yv, "validation_data[1]", model, loss, [])
        _same_length(ds.x_val, ds.y_val, "validation_data[0]", "validation_data[1]")
    return ds


def _array(a, name: str) -> np.ndarray:
    """np.asarray, but ragged lists (token sequences of different lengths) become an object array
    (padded later, as from an .npz), and a scalar is refused."""
    try:
        out = np.asarray(a)
    except ValueError:  # a ragged nested list
        if not isinstance(a, (list, tuple)):
            raise UserError(f"{name} cannot be read as an array") from None
        out = np.empty(len(a), dtype=object)
        for i, sample in enumerate(a):
            out[i] = sample
    if out.ndim == 0:
        raise UserError(f"{name} is a single value ({type(a).__name__}); it must hold one sample per row")
    return out


# --- reading -----------------------------------------------------------------------------------


def _read(source: str, model: Model, loss: str, allow_pickle: bool = False) -> tuple[dict, float | None, list[str]]:
    notes: list[str] = []
    if source == "sine":
        return sine_series(model), None, ["sine: 2,000 training and 500 test windows of a noisy two-tone "
                                          "series; the target is the value after each window"]
    if source in BUILTIN:
        from importlib.resources import files

        with files("nnc").joinpath("data", f"{source}.npz").open("rb") as f, np.load(f) as d:
            raw = {k: d[k] for k in d.files}
        notes.append("digits: 1,437 training and 360 test images of 8x8 pixels, scaled from 0..16 to [0, 1]")
        return raw, 1 / 16, notes
    ext = os.path.splitext(source)[1].lower()
    if not os.path.exists(source):
        raise UserError(f"cannot read data {source}: no such file",
                        help="--data takes an .npz (x_train, y_train[, x_test, y_test]), a .csv, 'digits' or 'sine'")
    if ext == ".npz":
        from nnc.lang.npz import read_npz

        return read_npz(source, "data", allow_pickle), None, notes
    if ext == ".csv":
        return _read_csv(source, model, loss), None, notes
    raise UserError(f"cannot read data {source}: expected an .npz or .csv file, 'digits' or 'sine'")


def sine_series(model: Model, n_train: int = 2000, n_test: int = 500) -> dict:
    """The built-in regression data (`--data sine`), made on the fly, always the same: a series
    s(t) = sin(2 pi t / 50) + 0.5 sin(2 pi t / 23) + noise (normal, sd 0.1, from
    default_rng(0)), cut into windows of the spec's input length (the input is [steps] or
    [steps, 1]); each window's target is the next value of the series. Windows start one step
    apart; the test windows come from the series after the training windows' last target."""
    shape = model.input.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or model.input.dtype != "float32":
        raise UserError(f"--data sine makes windows of one series, [steps, 1]; this spec's input is "
                        f"{model.input.dtype}[{', '.join(map(str, shape))}]",
                        help="write the input as float32[STEPS, 1], e.g. float32[64, 1]")
    steps = shape[0]
    t = np.arange(n_train + n_test + 2 * steps + 1, dtype=np.float64)
    s = np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 23)
    s += np.random.default_rng(0).normal(0.0, 0.1, size=t.shape)

    def windows(start: int, n: int):
        idx = start + np.arange(n)[:, None] + np.arange(steps)[None, :]
        return s[idx].astype(np.float32).reshape(n, *shape), s[start + np.arange(n) + steps].astype(np.float32)[:, None]

    x_train, y_train = windows(0, n_train)
    x_test, y_test = windows(n_train + steps, n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _read_csv(path: str, model: Model, loss: str) -> dict:
    n_in = prod(model.input.shape)
    out = model.output_shape
    n_out = prod(out[:-1]) if loss == "sparse_categorical_crossentropy" else prod(out)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel, Windows) is not data
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read data {path}: {e}") from None
    except csv.Error as e:  # a field over the csv module's limit (128 KiB), a NUL byte, ...
        raise UserError(f"cannot read data {path}: not a CSV file nnc can read ({e})", exit_code=1) from None
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise UserError(f"data {path} has no rows", exit_code=1)
    want = n_in + n_out
    values = []
    for i, r in enumerate(rows, start=1):
        if len(r) != want:
            raise UserError(f"data {path}: row {i} has {len(r)} columns, but the spec needs {want} "
                            f"({n_in} input values, then {n_out} target{'s' if n_out != 1 else ''})", exit_code=1)
        try:
            values.append([float(c) for c in r])
        except ValueError:
            bad = next(c for c in r if not _is_float(c))
            raise UserError(f"data {path}: row {i} has a value that is not a number: {bad!r}", exit_code=1) from None
    table = np.array(values)
    return {"x_train": table[:, :n_in], "y_train": table[:, n_in:] if n_out != 1 else table[:, n_in]}


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _numeric(row: list[str]) -> bool:
    return all(_is_float(c) for c in row)


def _pair(raw: dict, xname: str, yname: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [n for n in (xname, yname) if n not in raw]
    if missing:
        raise UserError(f"data {source} lacks {' and '.join(missing)} (it has {', '.join(sorted(raw)) or 'no arrays'})",
                        exit_code=1, help="an .npz for nnc holds x_train, y_train and optionally x_test, y_test")
    return raw[xname], raw[yname]


def _same_length(x, y, xname, yname):
    if len(x) != len(y):
        raise UserError(f"{xname} has {len(x)} samples, but {yname} has {len(y)}", exit_code=1)
    if len(x) == 0:
        raise UserError(f"{xname} has no samples", exit_code=1)


# --- inputs ------------------------------------------------------------------------------------


def pad_sequences(seqs, maxlen: int, value: int = 0) -> np.ndarray:
    """keras.utils.pad_sequences with its defaults: pad and truncate at the front ('pre'), so a
    long sequence keeps its last `maxlen` tokens."""
    out = np.full((len(seqs), maxlen), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s).reshape(-1)
        if s.size and not np.issubdtype(s.dtype, np.integer):
            if not np.issubdtype(s.dtype, np.floating) or not np.isfinite(s).all() or (s != np.round(s)).any():
                raise ValueError(f"sequence {i} holds values that are not token ids (whole numbers)")
        s = s.astype(np.int64)[-maxlen:] if maxlen else np.zeros(0, np.int64)
        if len(s):
            out[i, maxlen - len(s):] = s
    return out


def prepare_x(x: np.ndarray, name: str, model: Model, scale: float | None, notes: list[str]) -> np.ndarray:
    inp = model.input
    want = tuple(inp.shape)
    x = np.asarray(x)
    if inp.dtype == "int64":
        return _prepare_tokens(x, name, want, inp.vocab, notes)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise UserError(f"{name} has dtype {x.dtype}, but the input '{inp.name}' takes real numbers (float32)",
                        exit_code=1)
    x = _reshape(x, name, want, f"the input '{inp.name}'")
    if scale is None and x.dtype == np.uint8:
        scale = 1 / 255
        if name in NOTED:
            notes.append(f"{name} is uint8: pixels scaled from 0..255 to [0, 1]")
    x = x.astype(np.float32)
    if scale is not None:
        x *= np.float32(scale)
    _finite(x, name)
    return x


def _prepare_tokens(x, name, want, vocab, notes):
    maxlen = want[0] if want else 0
    if x.dtype == object:  # ragged lists of token ids
        try:
            x = pad_sequences(list(x), maxlen)
        except (TypeError, ValueError, OverflowError) as e:
            why = f" ({e})" if "token ids" in str(e) else ""
            raise UserError(f"{name} holds objects that are not sequences of token ids{why}", exit_code=1) from None
        if name in NOTED:
            notes.append(f"{name}: sequences padded or truncated at the front to {maxlen} tokens (as pad_sequences)")
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or (x != np.round(x)).any():
            raise UserError(f"{name} has non-integer values, but the input takes token ids (int64)", exit_code=1)
        x = x.astype(np.int64)
    elif not np.issubdtype(x.dtype, np.integer):
        raise UserError(f"{name} has dtype {x.dtype}, but the input takes token ids (int64)", exit_code=1)
    if x.ndim != 2 and len(want) == 1:
        raise UserError(f"{name} has shape {list(x.shape)}, but the input takes sequences of token ids "
                        f"[samples, {maxlen}]", exit_code=1)
    if len(want) == 1 and x.shape[1] != maxlen:
        x = pad_sequences(x, maxlen)
        if name in NOTED:
            notes.append(f"{name}: sequences padded or truncated at the front to {maxlen} tokens (as pad_sequences)")
    x = _reshape(x, name, want, "the input")
    if x.dtype.kind == "u" and x.size and x.max() > np.iinfo(np.int64).max:
        raise UserError(f"{name} has a token id of {int(x.max())}, larger than any vocab", exit_code=1)
    x = x.astype(np.int64)
    if x.size and x.min() < 0:
        raise UserError(f"{name} has a negative token id ({int(x.min())})", exit_code=1)
    if vocab is not None and x.size and x.max() >= vocab:
        raise UserError(f"{name} has token ids up to {int(x.max())}, but the input's vocab is {vocab} (ids 0 to {vocab - 1})",
                        exit_code=1, help="map rarer words to one out-of-vocabulary id first, as Keras's "
                                          "imdb.load_data(num_words=...) does, or raise vocab= in the spec")
    return x


def _reshape(x, name, want, what):
    got = tuple(x.shape[1:])
    if got == want:
        return x
    squeezed = tuple(d for d in got if d != 1)
    # accept only shapes that differ by axes of size 1 ([28, 28] for [28, 28, 1]) or flat rows
    if x.ndim >= 1 and prod(got) == prod(want) and (squeezed == tuple(d for d in want if d != 1) or len(got) == 1):
        return x.reshape((len(x),) + want)
    raise UserError(f"{name} has samples of shape {list(got)}, but {what} takes {list(want)}", exit_code=1)


def _finite(a, name):
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        bad = int(a.size - np.isfinite(a).sum())
        raise UserError(f"{name} has {bad} NaN or Inf value{'s' if bad != 1 else ''}", exit_code=1)


# --- targets -----------------------------------------------------------------------------------


def prepare_y(y: np.ndarray, name: str, model: Model, loss: str, notes: list[str]) -> np.ndarray:
    out = tuple(model.output_shape)
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or np.iscomplexobj(y):
        raise UserError(f"{name} has dtype {y.dtype}, but targets are real numbers", exit_code=1)
    _finite(y, name)
    classes = out[-1]
    if loss == "sparse_categorical_crossentropy":
        labels = _labels(y, name, out[:-1], classes)
        return labels
    if loss == "categorical_crossentropy" and tuple(y.shape[1:]) != out and np.issubdtype(y.dtype, np.integer):
        labels = _labels(y, name, out[:-1], classes)
        if name in NOTED:
            notes.append(f"{name} holds class ids: one-hot encoded for categorical_crossentropy")
        return np.eye(classes, dtype=np.float32)[labels]
    if tuple(y.shape[1:]) != out:
        if prod(y.shape[1:]) == prod(out) and tuple(d for d in y.shape[1:] if d != 1) == tuple(d for d in out if d != 1):
            y = y.reshape((len(y),) + out)
        else:
            raise UserError(f"{name} has targets of shape {list(y.shape[1:])}, but the model outputs {list(out)}",
                            exit_code=1)
    y = y.astype(np.float32)
    if loss == "binary_crossentropy" and y.size and (y.min() < 0 or y.max() > 1):
        raise UserError(f"{name} has values from {y.min():g} to {y.max():g}, but binary_crossentropy takes "
                        f"targets in [0, 1]", exit_code=1)
    if loss == "categorical_crossentropy" and y.size and y.min() < 0:
        raise UserError(f"{name} has negative values, but categorical_crossentropy takes one-hot targets", exit_code=1)
    return y


def _labels(y, name, positions, classes):
    """Class ids shaped [samples, *positions]; a trailing axis of 1 is dropped as Keras does."""
    if tuple(y.shape[1:]) != positions:
        if prod(y.shape[1:]) == prod(positions) and tuple(d for d in y.shape[1:] if d != 1) == \
                tuple(d for d in positions if d != 1):
            y = y.reshape((len(y),) + positions)
        else:
            raise UserError(f"{name} has labels of shape {list(y.shape[1:])}, but sparse labels for a model with "
                            f"output {list(positions) + [classes]} are shaped {list(positions)} (one class id "
                            f"per {'position' if positions else 'sample'})", exit_code=1,
                            help="one-hot targets go with loss categorical_crossentropy"
                            + ("; the model classifies every position: for one class per sample, end it with "
                               "an output of [classes] (return_sequences=false, a global pooling or flatten)"
                               if positions and not y.shape[1:] else ""))
    if np.issubdtype(y.dtype, np.floating) and (y != np.round(y)).any():
        raise UserError(f"{name} has labels that are not whole numbers, but class ids are 0 to {classes - 1}",
                        exit_code=1)
    if y.size and y.min() < 0:
        raise UserError(f"{name} has a negative label ({y.min():g}); class ids are 0 to {classes - 1}", exit_code=1)
    if y.size and y.max() >= classes:
        raise UserError(f"{name} has labels up to {int(y.max())}, but the model outputs {classes} "
                        f"class{'es' if classes != 1 else ''} (ids 0 to {classes - 1})", exit_code=1)
    return y.astype(np.int64)
