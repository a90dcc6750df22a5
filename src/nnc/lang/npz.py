"""Reading .npz archives that a user hands to nnc (data, checkpoints, run states) safely.

Every member's .npy header is read and checked before any array is decompressed: a header that
declares more bytes than the archive says the member holds (a corrupt or hostile file claiming a
10^12-element array) is refused without allocating anything, and so is a member that is not an
.npy at all. Object arrays can only be read with pickle, which runs any code the file holds:
they are refused, naming the array, unless the caller was told the file is trusted.

    arrays = read_npz(path, "data")     # {name: ndarray}; UserError (exit 1) for any bad file
"""

from __future__ import annotations

import zipfile

import numpy as np

from nnc.lang.errors import UserError

PICKLE_HELP = ("save token lists as one int array padded to a common length (keras.utils.pad_sequences), or, "
               "for a file you trust (Keras's own imdb.npz), pass --allow-pickle")


def _header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        shape, _, dtype = np.lib.format._read_array_header(f, version)  # (3, 0): utf-8 field names
    return tuple(shape), dtype


def headers(path: str, what: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's (shape, dtype), from the .npy headers, after checking that the archive can
    hold what they declare. UserError for anything that is not a sound .npz."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"cannot read {what} {path}: it is a folder, not an .npz file") from None
    except Exception as e:  # zipfile raises a dozen kinds (NotImplementedError, struct.error, ...) on a bad file
        kind = ""
        try:
            with open(path, "rb") as f:
                if f.read(6) == b"\x93NUMPY":
                    kind = " (it is a single .npy array; save arrays with numpy.savez to name them)"
        except OSError:
            pass
        raise UserError(f"cannot read {what} {path}: not an .npz archive{kind or f' ({e})'}", exit_code=1) from None
    out = {}
    with zf:
        try:
            infos = zf.infolist()
        except Exception as e:  # pragma: no cover - infolist is read when the archive opens
            raise UserError(f"cannot read {what} {path}: a corrupt archive ({e})", exit_code=1) from None
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if not info.filename.endswith(".npy"):
                raise UserError(f"cannot read {what} {path}: member '{info.filename}' is not an .npy array",
                                exit_code=1)
            try:
                with zf.open(info) as f:
                    shape, dtype = _header(f)
                    offset = f.tell()
            except Exception as e:  # any broken member: zlib.error, EOFError, SyntaxError in the header, ...
                raise UserError(f"cannot read {what} {path}: array '{name}' has a broken header ({e})",
                                exit_code=1) from None
            if any(d < 0 for d in shape):
                raise UserError(f"cannot read {what} {path}: array '{name}' declares a negative dimension", exit_code=1)
            if not dtype.hasobject:
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size - offset:
                    raise UserError(f"cannot read {what} {path}: array '{name}' declares {list(shape)} "
                                    f"({declared:,} bytes) but the archive holds {max(info.file_size - offset, 0):,} "
                                    f"bytes for it: the file is truncated or corrupt", exit_code=1)
            out[name] = (shape, dtype)
    return out


def read_npz(path: str, what: str, allow_pickle: bool = False,
             declared: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None) -> dict[str, np.ndarray]:
    """Every array of the archive, checked by `headers` first (pass what `headers` already
    returned to skip reading them again). Object arrays only with `allow_pickle` (the user's
    word that the file is trusted)."""
    if declared is None:
        declared = headers(path, what)
    for name, (_, dtype) in declared.items():
        if dtype.hasobject and not allow_pickle:
            raise UserError(f"{what} {path}: array '{name}' holds Python objects (such as ragged token lists), which "
                            f"only pickle can read, and unpickling runs any code the file contains; nnc does not "
                            f"load it", exit_code=1, help=PICKLE_HELP)
    try:
        with np.load(path, allow_pickle=allow_pickle) as d:
            return {k: d[k] for k in d.files}
    except MemoryError:
        raise UserError(f"cannot read {what} {path}: its arrays do not fit in memory", exit_code=1) from None
    except Exception as e:  # corrupt compressed data and the like, past the header checks
        raise UserError(f"cannot read {what} {path}: the file is corrupt ({type(e).__name__}: {e})",
                        exit_code=1) from None


def read_npy(path: str, what: str) -> np.ndarray:
    """One .npy array, its header checked against the file's size before anything is read
    (UserError, exit 1, for a broken or hostile file; exit 2 when it is missing)."""
    import os

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            magic = f.read(6)
            f.seek(0)
            if magic[:2] == b"PK":
                raise UserError(f"cannot read {what} {path}: it is an .npz archive; save one array with np.save",
                                exit_code=1)
            shape, dtype = _header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise UserError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"cannot read {what} {path}: it is a folder") from None
    except UserError:
        raise
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, ... on a bad file
        raise UserError(f"cannot read {what} {path}: not a .npy array ({type(e).__name__}: {e})", exit_code=1) from None
    if dtype.hasobject:
        raise UserError(f"cannot read {what} {path}: it holds Python objects, which only pickle can read "
                        f"(and unpickling runs code); nnc does not load it", exit_code=1)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if any(d < 0 for d in shape) or declared > size - offset:
        raise UserError(f"cannot read {what} {path}: its header declares {list(shape)} ({declared:,} bytes) but the "
                        f"file holds {max(size - offset, 0):,}: it is truncated or corrupt", exit_code=1)
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError:
        raise UserError(f"cannot read {what} {path}: it does not fit in memory", exit_code=1) from None
    except Exception as e:
        raise UserError(f"cannot read {what} {path}: {type(e).__name__}: {e}", exit_code=1) from None
