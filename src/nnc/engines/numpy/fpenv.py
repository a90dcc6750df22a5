"""Subnormal floats off while nnc computes: flush-to-zero (FTZ) and denormals-are-zero (DAZ).

On Intel cores an arithmetic operation whose input or result is subnormal (|x| < 1.2e-38 in
float32) takes a microcode assist and runs dozens of times slower; the LSTM's backward produces
such values (tiny gradients in long time loops). With FTZ a subnormal result becomes 0 and with
DAZ a subnormal input reads as 0, as TensorFlow sets them in its threads and as PyTorch's
torch.set_flush_denormal(True) does. AMD cores pay little for subnormals; the flags change no
figure that is not subnormal, and training results stay within the tolerances nnc is tested to.

The flags live in the MXCSR register of each thread. `flush_subnormals()` sets them in the
calling thread for the time nnc computes and puts back the caller's MXCSR afterwards, so nnc
used as a library leaves its caller's process as it found it. The threads that compute with it:

  - the calling thread: set by the context;
  - nnc's chunk threads (nnc.engines.numpy.parallel.run): each item runs under the MXCSR of the thread
    that called run(), then the worker's own is put back;
  - OpenBLAS's worker threads (numpy's matrix products split over more than one core): a
    thread keeps the MXCSR it was started with (Linux copies it from the thread that starts it),
    and numpy's OpenBLAS starts its workers once and does not pass its caller's MXCSR to them (it
    is not built with CONSISTENT_FPCSR): measured, a [512 x 512] product of 1e-20s under FTZ came
    out half flushed, the calling thread's half. So a training run (`blas_workers=True`) stops
    the workers and starts them again from its thread when it starts, with the flags set, and
    again when it ends, with the caller's flags back (OpenBLAS's blas_thread_shutdown_, which
    it calls itself around fork(), and blas_thread_init). That is done only while no other
    non-daemon Python thread runs, which could be inside a product; otherwise the workers keep
    what they have and a product split over them flushes in the calling thread's share only. Inference (predict, evaluate) does not
    restart them. nnc's chunked training runs BLAS on one thread in each chunk thread anyway.

How: two tiny x86-64 functions (stmxcsr / ldmxcsr; 11 bytes of machine code) in a page mapped
with mmap and made executable with mprotect, called through ctypes. Elsewhere (not x86-64, not
POSIX, or a system that refuses executable memory) the context does nothing, and
`why_unavailable` (also logged at debug level on the "nnc" logger) says why.

NNC_SUBNORMALS=keep in the environment (or `nnc train --keep-subnormals`) keeps IEEE
subnormals: the context then changes nothing. onnxruntime sessions that nnc makes follow the
same switch (their "session.set_denormal_as_zero" option).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from contextlib import contextmanager

FTZ = 0x8000  # MXCSR bit 15: flush-to-zero (subnormal results become 0)
DAZ = 0x0040  # MXCSR bit 6: denormals-are-zero (subnormal inputs read as 0)
FLAGS = FTZ | DAZ

ENV = "NNC_SUBNORMALS"

_log = logging.getLogger("nnc")
_lock = threading.Lock()
_loaded = False
_get = _set = None
why_unavailable: str | None = None

# x86-64 System V: get() -> eax = MXCSR; set(edi). Both use the red zone below rsp as scratch.
_GET = bytes([0x0F, 0xAE, 0x5C, 0x24, 0xFC,  # stmxcsr [rsp-4]
              0x8B, 0x44, 0x24, 0xFC,        # mov eax, [rsp-4]
              0xC3])                         # ret
_SET = bytes([0x89, 0x7C, 0x24, 0xFC,        # mov [rsp-4], edi
              0x0F, 0xAE, 0x54, 0x24, 0xFC,  # ldmxcsr [rsp-4]
              0xC3])                         # ret


def _load() -> None:
    global _loaded, _get, _set, why_unavailable
    with _lock:
        if _loaded:
            return
        try:
            _get, _set = _make_functions()
        except _Unavailable as e:
            why_unavailable = str(e)
            _log.debug("nnc: flush-to-zero is not available here (%s); subnormal floats are kept", e)
        _loaded = True


class _Unavailable(Exception):
    pass


def _make_functions():
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise _Unavailable(f"the MXCSR register is x86-64's, and this machine is {machine or 'unknown'}")
    if os.name != "posix":
        raise _Unavailable("nnc sets MXCSR only on POSIX systems (Linux, macOS)")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap, mprotect = libc.mmap, libc.mprotect
    except (OSError, AttributeError) as e:
        raise _Unavailable(f"no mmap/mprotect in the C library ({e})") from None
    import mmap as _m

    mmap.restype, mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                                                    ctypes.c_int, ctypes.c_long]
    mprotect.restype, mprotect.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = _m.PAGESIZE
    flags = _m.MAP_PRIVATE | getattr(_m, "MAP_ANONYMOUS", getattr(_m, "MAP_ANON", 0x20))
    addr = mmap(None, size, _m.PROT_READ | _m.PROT_WRITE, flags, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise _Unavailable(f"mmap refused a page ({os.strerror(ctypes.get_errno())})")
    ctypes.memmove(addr, _GET, len(_GET))
    ctypes.memmove(addr + 16, _SET, len(_SET))
    # written, then made executable and no longer writable: systems that refuse W+X pages accept this
    if mprotect(addr, size, _m.PROT_READ | _m.PROT_EXEC) != 0:
        raise _Unavailable(f"the system refuses executable memory ({os.strerror(ctypes.get_errno())})")
    get = ctypes.CFUNCTYPE(ctypes.c_uint32)(addr)
    set_ = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(addr + 16)
    before = get()  # a self-check: set what was read, read it back
    set_(before)
    if get() != before:  # pragma: no cover - would mean the code above is wrong
        raise _Unavailable("the MXCSR self-check failed")
    return get, set_


def available() -> bool:
    """Whether nnc can read and set MXCSR on this machine (see `why_unavailable` if not)."""
    _load()
    return _get is not None


def get_mxcsr() -> int | None:
    """The calling thread's MXCSR, or None where it cannot be read."""
    _load()
    return None if _get is None else int(_get())


def set_mxcsr(value: int) -> None:
    """Set the calling thread's MXCSR (a no-op where it cannot be set)."""
    _load()
    if _set is not None:
        _set(int(value) & 0xFFFF)


def keep_subnormals() -> bool:
    """NNC_SUBNORMALS=keep: IEEE subnormals, no flush-to-zero (nnc's and onnxruntime's)."""
    return os.environ.get(ENV, "").strip().lower() == "keep"


@contextmanager
def flush_subnormals(enabled: bool | None = None, blas_workers: bool = False):
    """FTZ and DAZ on in the calling thread for the body, the caller's MXCSR back after it.
    enabled=None follows NNC_SUBNORMALS (on unless it is `keep`); a no-op where MXCSR cannot be
    set. Nested uses are cheap: one inside another (or in a thread that has the flags already)
    changes nothing. blas_workers=True also restarts OpenBLAS's worker threads on entry and on
    exit so that they take the flags and then give them up (see the module's docstring)."""
    if enabled is None:
        enabled = not keep_subnormals()
    before = get_mxcsr() if enabled else None
    if before is None or before & FLAGS == FLAGS:
        yield
        return
    blas = None
    if blas_workers:
        from nnc.engines.numpy.parallel import BLAS as blas
    _set(before | FLAGS)
    restarted = blas is not None and blas.restart_workers()
    try:
        yield
    finally:
        _set(before)
        if restarted:  # started again from this thread, now with the caller's flags
            blas.restart_workers()


@contextmanager
def same_as(mxcsr: int | None):
    """Run the body with MXCSR `mxcsr` (another thread's, read with get_mxcsr), then put this
    thread's back: how a worker thread computes under its caller's flags."""
    if mxcsr is None or _get is None:
        yield
        return
    own = _get()
    if own == mxcsr:
        yield
        return
    _set(mxcsr)
    try:
        yield
    finally:
        _set(own)
