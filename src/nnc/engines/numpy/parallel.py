"""Data parallelism over the batch, for the NumPy backend.

A batch is cut into one chunk per core; each chunk runs forward and backward in a thread of its
own, and the weight gradients of the chunks are summed. NumPy releases the GIL inside ufunc
loops and matrix products, so the chunks really run at once: the elementwise work (pooling,
im2col, activations), which a multithreaded BLAS never parallelizes, is spread over the cores
too. While the chunks run, each thread's BLAS is held to one thread, so the cores are not
oversubscribed.

NNC_THREADS sets the number of chunks (1 turns this off); by default it is the number of
cores this process may run on.

A model with a recurrent layer runs its batch whole (its time loop is thousands of small
operations, too small to share): there a second core takes the layer's long products instead,
block by block while the loop runs (Background, below).
"""

from __future__ import annotations

import ctypes
import glob
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from nnc.engines.numpy import fpenv

MIN_CHUNK = 16  # samples: smaller chunks cost more in per-call overhead than they gain


RECURRENT = ("rnn", "lstm", "gru")
WHOLE_BATCH = ("batchnorm",)
"""Kinds whose training forward needs the whole batch at once (batch statistics)."""


def default_threads(kinds: tuple[str, ...] = ()) -> int:
    """NNC_THREADS, else one chunk per core; but one chunk for models with recurrent layers:
    their time loops are thousands of small operations, and two threads handing the GIL back
    and forth at each of them lose what they gain (measured: no faster, more CPU time).
    Always one chunk for a model with a WHOLE_BATCH kind: its batch statistics are the batch's."""
    if any(k in WHOLE_BATCH for k in kinds):
        return 1
    env = os.environ.get("NNC_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    if any(k in RECURRENT for k in kinds):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --- OpenBLAS thread control (what threadpoolctl does, for the one library numpy ships) ------


class _Blas:
    """The process-wide thread count of the OpenBLAS that numpy ships. (OpenBLAS's
    openblas_set_num_threads_local is process-wide too in pthreads builds, so it buys nothing.)"""

    def __init__(self):
        self.set = self.get = None
        try:
            import numpy as np

            base = os.path.dirname(os.path.dirname(np.__file__))
            paths = glob.glob(os.path.join(base, "numpy.libs", "*openblas*.so*"))
            lib = ctypes.CDLL(paths[0]) if paths else None  # already loaded by numpy: the same instance
        except OSError:
            lib = None
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                s, g = f"{prefix}set_num_threads{suffix}", f"{prefix}get_num_threads{suffix}"
                if lib is not None and self.set is None and hasattr(lib, s) and hasattr(lib, g):
                    self.set, self.get = getattr(lib, s), getattr(lib, g)
                    self.set.argtypes, self.set.restype = [ctypes.c_int], None
                    self.get.argtypes, self.get.restype = [], ctypes.c_int
        self._shutdown = self._init = None
        if lib is not None and hasattr(lib, "blas_thread_shutdown_") and hasattr(lib, "blas_thread_init"):
            self._shutdown, self._init = lib.blas_thread_shutdown_, lib.blas_thread_init
            for fn in (self._shutdown, self._init):
                fn.argtypes, fn.restype = [], ctypes.c_int

    def restart_workers(self) -> bool:
        """Stop OpenBLAS's worker threads and start them again from this thread, so that they take
        its MXCSR (flush-to-zero; see nnc.engines.numpy.fpenv): a thread keeps the MXCSR it started with, and
        this OpenBLAS does not copy its caller's into its workers. (Started here and now, not
        lazily by whichever thread makes the next product.) Done only when no other non-daemon
        Python thread could be inside a product meanwhile; returns whether they were restarted."""
        if self._shutdown is None or self.get is None or self.get() <= 1:
            return False
        me = threading.current_thread()
        others = [t.name for t in threading.enumerate()
                  if t is not me and not t.daemon and not t.name.startswith("nnc-chunk")]
        if others:
            import logging

            logging.getLogger("nnc").debug("nnc: OpenBLAS's worker threads keep their MXCSR: other threads "
                                           "run (%s)", ", ".join(others[:3]))
            return False
        self._shutdown()
        self._init()
        return True

    @property
    def controllable(self) -> bool:
        return self.set is not None

    @contextmanager
    def one_thread(self):
        """BLAS on one thread for a stretch of small products (a recurrent layer's steps), where
        waking a second thread costs more than it saves. A no-op without control of BLAS."""
        if self.set is None:
            yield
            return
        before = self.get()
        if before != 1:
            self.set(1)
        try:
            yield
        finally:
            if before != 1:
                self.set(before)

    @contextmanager
    def single_threaded(self):
        """BLAS on one thread while the chunks run (each chunk's thread is one core)."""
        before = self.get()
        self.set(1)
        try:
            yield
        finally:
            self.set(before)


BLAS = _Blas()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


_busy = threading.Lock()  # held while the pool runs; a run inside a run goes sequentially


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: a pool inherited from the parent would
    take work that no thread ever runs (its idle-worker count says one is waiting), and a lock
    held by a parent's thread at the fork would stay held. The child starts its own."""
    global _pool, _pool_size, _busy
    _pool, _pool_size = None, 0
    _busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def run(fn, items: list) -> list:
    """fn over items, one thread each (the calling thread takes the first). Inside another run
    (a kernel splitting its work, called from a batch chunk) the items run one after another:
    the cores are taken already, and waiting on the pool from its own worker would deadlock."""
    global _pool, _pool_size
    if len(items) == 1 or not _busy.acquire(blocking=False):
        return [fn(item) for item in items]
    try:
        if _pool is None or _pool_size < len(items) - 1:
            _pool = ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="nnc-chunk")
            _pool_size = len(items) - 1
        # each chunk computes under the caller's MXCSR (flush-to-zero, see nnc.engines.numpy.fpenv), then the
        # worker's own is put back
        mxcsr = fpenv.get_mxcsr()
        with BLAS.single_threaded():
            futures = [_pool.submit(_under, mxcsr, fn, item) for item in items[1:]]
            try:
                first = fn(items[0])
            finally:
                rest = [f.result() for f in futures]
            return [first] + rest
    finally:
        _busy.release()


def _under(mxcsr, fn, item):
    with fpenv.same_as(mxcsr):
        return fn(item)


class Background:
    """Tasks run in order on one other core while the calling thread goes on: a recurrent
    layer hands its long products (weight and input gradients of the steps done so far) to it
    block by block while its time loop runs on. Few, large tasks: each takes the GIL only to
    start and to end, so the loop's many small operations are barely slowed.

    Used as a context manager. Without a second core, without control of BLAS's threads, or
    inside a parallel run (the cores are taken), submit() runs each task at once in the caller:
    the same tasks, in the same order, so the results do not depend on where they ran. BLAS
    is held to one thread while the helper may run (each side is one core).

        with Background() as bg:
            bg.submit(fn, *args)  # returns at once
            ...
            bg.wait(k)  # until the first k tasks are done
            results = bg.results()  # waits; the tasks' return values in submission order
    """

    def __init__(self, threads: int | None = None):
        self.threads = default_threads() if threads is None else threads
        self._active = False
        self._done: list = []
        self._error: BaseException | None = None
        self._progress = threading.Condition()

    def __enter__(self):
        global _pool, _pool_size
        if self.threads >= 2 and BLAS.controllable and _busy.acquire(blocking=False):
            self._active = True
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnc-chunk")
                _pool_size = 1
            self._before = BLAS.get()
            BLAS.set(1)
            self._queue = queue.SimpleQueue()
            self._worker = _pool.submit(_under, fpenv.get_mxcsr(), self._work, None)
        return self

    def _work(self, _):
        while True:
            task = self._queue.get()
            if task is None:
                return
            if self._error is not None:
                continue  # a task failed: skip the rest, the caller hears of it in results()
            fn, args = task
            try:
                out = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller in results()
                out, self._error = None, e
            with self._progress:
                if self._error is None:
                    self._done.append(out)
                self._progress.notify_all()

    def submit(self, fn, *args) -> None:
        if self._active:
            self._queue.put((fn, args))
        else:
            self._done.append(fn(*args))

    def wait(self, n: int) -> None:
        """Until the first n tasks are done (a task's failure raises here)."""
        with self._progress:
            while len(self._done) < n and self._error is None and self._active:
                self._progress.wait()
        if self._error is not None:
            self.results()

    def results(self) -> list:
        self._stop()
        if self._error is not None:
            raise self._error
        return self._done

    def _stop(self) -> None:
        if self._active:
            self._active = False
            try:
                self._queue.put(None)
                self._worker.result()
            finally:
                BLAS.set(self._before)
                _busy.release()

    def __exit__(self, *exc):
        self._stop()  # also when the caller failed: the helper ends before the arrays go
        return False


def chunks(n: int, threads: int) -> list[slice]:
    """Cut a batch of n into at most `threads` near-equal chunks of at least MIN_CHUNK."""
    # without control of BLAS's threads, chunks in threads would oversubscribe the cores
    k = max(1, min(threads, n // MIN_CHUNK)) if BLAS.controllable else 1
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


# --- memory: keep freed blocks for the next batch ---------------------------------------------

_malloc_tuned = False


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep the blocks a batch frees for the next batch.

    Each training step allocates the same large arrays (im2col columns, recurrent states) and
    frees them. By default glibc returns such blocks to the kernel (mmap/munmap, heap trimming)
    and every batch pays for fresh zeroed pages again: about a tenth of a training step, measured
    as minor page faults. Here large blocks come from the heap (up to 32 MiB, glibc's maximum
    for this setting), the heap is not trimmed, and the chunk threads share the main arena, so
    the process keeps its peak footprint and reuses it. A no-op where libc has no mallopt."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(M_ARENA_MAX, 1)
