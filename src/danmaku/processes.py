"""Worker processes that never outlive the command that started them.

A ``kill -9`` of an import or export used to leave its spawn-started workers
parsing on (~175 MB each, a minute or more) and writing into an abandoned
staging folder. Every process pool of the package passes ``die_with_parent``
as its initializer: on Linux the kernel kills the worker when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also checks once a
second that the parent is still the one that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0
# A spawned worker costs seconds of imports; tokenising 4 MB of corpus in this process is as quick.
IN_PROCESS_BYTES = 4 << 20


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """Initializer of a worker process: end it as soon as its parent is gone."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def workers_for(input_bytes: int) -> int:
    """Worker processes for reading ``input_bytes`` of corpus: this one alone below ``IN_PROCESS_BYTES``."""
    return 1 if input_bytes < IN_PROCESS_BYTES else os.cpu_count() or 1


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """``fn`` over ``items``, results in order: in this process for ``workers`` 1, else in spawned workers.

    At most ``2 * workers`` items are read ahead of the results handed back,
    so memory stays flat however long ``items`` is (a corpus read as chunks);
    the workers use ``die_with_parent``. ``fn`` must be picklable (a module
    function or a ``functools.partial`` of one).
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=die_with_parent) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft().result()
