"""Running an ONNX model on onnxruntime, from Python or `nnc run`.

    from nnc.onnx.runtime import Runner
    r = Runner("mnist_convnet.onnx", device="cpu")   # or "cuda"
    y = r.run(x)                                      # x: [batch, *spec shape], the spec's dtype
    r.provider                                        # "CPUExecutionProvider" or "CUDAExecutionProvider"

Inputs are checked before onnxruntime sees them: shape, dtype and, for token ids, the range
0 <= id < vocab (nnc stores the spec's input in the model's metadata, `nnc.input`). A model not
written by nnc is checked against the shapes its graph declares.

`device="cuda"` runs on the CUDA provider or raises UserError saying what is missing: it
never falls back to the CPU. (onnxruntime itself does fall back, with only a warning; the
providers the session really got are checked after it is created.)

Sessions flush subnormal floats to zero ("session.set_denormal_as_zero", as nnc's NumPy backend
does; NNC_SUBNORMALS=keep keeps them), without leaving the flags set in the caller's thread
(see nnc.engines.numpy.fpenv).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
from dataclasses import dataclass

import numpy as np

from nnc.engines.numpy import fpenv
from nnc.lang.errors import UserError

DEVICES = ("cpu", "cuda")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(double)": "float64",
           "tensor(int32)": "int32", "tensor(float16)": "float16"}


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: str
    shape: tuple  # without the batch; an entry is None where the model leaves it free
    vocab: int | None = None
    batch: int | None = None  # a graph that fixes its batch size (nnc's never do)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{self.batch if self.batch is not None else 'batch'}{', ' if dims else ''}{dims}]"


def _cuda_major() -> str:
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version

        return cuda_version.split(".")[0]
    except (ImportError, AttributeError):  # pragma: no cover - CPU-only builds
        return "12"


_CUDA_HELP = ("the CUDA provider needs an NVIDIA GPU with its driver, the CUDA and cuDNN 9 libraries that this "
              "onnxruntime-gpu was built for (pip install 'onnxruntime-gpu[cuda,cudnn]' brings them); "
              "or run with --device cpu")


def _missing_cuda_libraries() -> list[str]:
    """Which of the shared libraries the CUDA provider needs cannot be loaded here."""
    major = _cuda_major()
    wanted = [("the NVIDIA driver", "libcuda.so.1"), (f"CUDA {major} runtime", f"libcudart.so.{major}"),
              (f"cuBLAS {major}", f"libcublas.so.{major}"), (f"cuBLASLt {major}", f"libcublasLt.so.{major}"),
              ("cuDNN 9", "libcudnn.so.9")]
    missing = []
    for what, lib in wanted:
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(f"{what} ({lib})")
    return missing


def cuda_unavailable() -> str | None:
    """Why this onnxruntime cannot offer the CUDA provider at all, or None."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ("this onnxruntime has no CUDA provider (the CPU-only `onnxruntime` package is installed); "
                "install `onnxruntime-gpu` instead")
    return None


def _why_no_cuda() -> str:
    missing = _missing_cuda_libraries()
    if missing:
        return "cannot load " + ", ".join(missing)
    return "no usable NVIDIA GPU was found (check `nvidia-smi`)"


def _session(path: str, device: str):
    import onnxruntime as ort

    if device not in DEVICES:
        raise UserError(f"unknown device '{device}': expected one of {', '.join(DEVICES)}")
    if not os.path.isfile(path):
        raise UserError(f"cannot read model {path}: " + ("it is a folder" if os.path.isdir(path) else "no such file"))
    so = ort.SessionOptions()
    so.log_severity_level = 3  # onnxruntime's fallback warning is replaced by the check below
    if not fpenv.keep_subnormals():
        # subnormal floats flushed to zero in onnxruntime's threads, as in nnc's backend (NNC_SUBNORMALS=keep
        # keeps them). onnxruntime also sets the flags, once per process and for good, in the thread that
        # makes its first session: that thread's own are put back below, and Runner.run sets them while it runs
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    mxcsr = fpenv.get_mxcsr()
    providers = [PROVIDERS[device]]
    if device == "cuda":
        problem = cuda_unavailable()
        if problem:
            raise UserError(f"--device cuda: {problem}", exit_code=2, help=_CUDA_HELP)
        try:  # onnxruntime >= 1.21 can load CUDA and cuDNN from the nvidia-* pip packages
            with contextlib.redirect_stdout(io.StringIO()):  # it prints what it misses; we say it below
                ort.preload_dlls()
        except Exception:  # noqa: BLE001 - best effort; a failure is diagnosed below
            pass
        # onnxruntime logs its failure to create the provider as an error before falling back;
        # the check after the session replaces that with one message of ours
        ort.set_default_logger_severity(4)
        # TF32 off: float32 results as Keras computes them, not with 10-bit mantissas on Ampere and later;
        # the CPU provider stays listed only for operators the CUDA provider lacks
        providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(path, so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load model {path}: {msg}") from None
    finally:
        if device == "cuda":
            ort.set_default_logger_severity(2)
        if mxcsr is not None:
            fpenv.set_mxcsr(mxcsr)
    _check_external_data(path, sess)
    if device == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        # onnxruntime fell back to the CPU with only a warning: refuse instead
        raise UserError(f"--device cuda: onnxruntime could not create its CUDA provider: {_why_no_cuda()}",
                        exit_code=2, help=_CUDA_HELP)
    return sess


def _check_external_data(path: str, sess) -> None:
    """A model nnc wrote with its weights in a side file names that file's SHA-256: a data file
    from another compile (one killed between writing the two files) is refused, not run."""
    import hashlib

    meta = sess.get_modelmeta().custom_metadata_map
    if "nnc.external_data" not in meta:
        return
    try:
        info = json.loads(meta["nnc.external_data"])
        data_path = os.path.join(os.path.dirname(os.path.abspath(path)), info["location"])
        want = str(info["sha256"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"cannot load model {path}: its nnc.external_data metadata is broken", exit_code=1) from None
    h = hashlib.sha256()
    try:
        with open(data_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    except OSError as e:
        raise UserError(f"cannot load model {path}: cannot read its weights {data_path}: {e.strerror or e}",
                        exit_code=1) from None
    if h.hexdigest() != want:
        raise UserError(f"cannot load model {path}: its weights file {data_path} is not the one compiled with it "
                        f"(checksums differ; a compile was interrupted, or the files come from two compiles)",
                        exit_code=1, help="compile the model again")


def _metadata_input(sess) -> InputInfo | None:
    meta = sess.get_modelmeta().custom_metadata_map
    if "nnc.input" not in meta:
        return None
    try:
        d = json.loads(meta["nnc.input"])
        info = InputInfo(str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]),
                         None if d.get("vocab") is None else int(d["vocab"]))
        np.dtype(info.dtype)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not nnc's metadata after all: the graph's own declaration is checked instead
    return info


def _graph_input(sess) -> InputInfo:
    i = sess.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else None for d in i.shape[1:])
    batch = i.shape[0] if i.shape and isinstance(i.shape[0], int) else None
    return InputInfo(i.name, _DTYPES.get(i.type, i.type.replace("tensor(", "").rstrip(")")), shape, batch=batch)


class Runner:
    """A model loaded on one device, ready to run many inputs."""

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        self.device = device
        self.session = _session(path, device)
        if len(self.session.get_inputs()) != 1:
            raise UserError(f"{path} has {len(self.session.get_inputs())} inputs; nnc runs models with one")
        self.input = _metadata_input(self.session) or _graph_input(self.session)
        self.output_name = self.session.get_outputs()[0].name

    @property
    def provider(self) -> str:
        """The provider the session runs on (the first of those onnxruntime really created)."""
        return self.session.get_providers()[0]

    def validate(self, x) -> np.ndarray:
        """Refuse an input that does not fit the model, with a message that says how."""
        info = self.input
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        want = info.describe()
        got = f"{x.dtype}[{', '.join(map(str, x.shape))}]"
        fits = x.ndim == len(info.shape) + 1 and all(w is None or w == d for w, d in zip(info.shape, x.shape[1:]))
        fits = fits and (info.batch is None or x.shape[0] == info.batch)
        if not fits:
            help = None
            if x.ndim == len(info.shape) and all(w is None or w == d for w, d in zip(info.shape, x.shape)):
                help = "this looks like one sample without the batch axis: add it with x[None] (np.expand_dims(x, 0))"
            raise UserError(f"input has shape {got}, but the model's input '{info.name}' is {want}", exit_code=1,
                            help=help)
        try:
            wanted = np.dtype(info.dtype)
        except TypeError:
            wanted = None  # a type numpy has no name for (a string tensor, ...): onnxruntime judges
        if wanted is not None and x.dtype != wanted:
            raise UserError(f"input has dtype {x.dtype}, but the model's input '{info.name}' is {want}", exit_code=1,
                            help=f"convert it with x.astype(np.{info.dtype})")
        if info.vocab is not None and x.size:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= info.vocab:
                bad = lo if lo < 0 else hi
                where = tuple(int(i) for i in np.argwhere(x == bad)[0])
                raise UserError(f"input '{info.name}' holds token id {bad} at index {list(where)}, but ids must be "
                                f"in 0..{info.vocab - 1} (vocab={info.vocab})", exit_code=1)
        return np.ascontiguousarray(x)

    def run(self, x) -> np.ndarray:
        x = self.validate(x)
        try:
            with fpenv.flush_subnormals():  # the calling thread computes a share too
                return self.session.run([self.output_name], {self.session.get_inputs()[0].name: x})[0]
        except Exception as e:  # onnxruntime's own exception types: a node that fails on this input
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"onnxruntime failed to run {self.path}: {msg}", exit_code=1) from None


def run_model(path: str, x, device: str = "cpu") -> tuple[np.ndarray, str]:
    """Run `path` on `x`; returns (output, the provider used)."""
    r = Runner(path, device)
    return r.run(x), r.provider


def load_input(path: str) -> np.ndarray:
    from nnc.lang.npz import read_npy

    return read_npy(path, "input")
