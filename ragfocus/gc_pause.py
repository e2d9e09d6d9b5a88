"""Python's cyclic garbage collector paused for the length of a block, safely across threads.

On a GPU, ``Focuser.rank_many`` has one thread launching the device's kernels while the
calling thread fuses results while the preparation pool's reader threads unpickle prepared
batches (tens of thousands of lists and tuples a batch). Those allocations trigger the
collector in whichever thread makes them, and a full collection walks every tracked object of the
process (about 600,000 with the default model loaded) while holding the interpreter's lock:
the launching thread waits, and so does the GPU. Reference counting still frees everything
that is not in a cycle while the collector is paused; the objects made meanwhile are examined
by the first collection after it.

Measured on an H200 (``scripts/gpu/gc_pause_probe.py``, docs/gpu.md): pausing made the
device worker 1.00-1.08x faster but ``rank_many`` 0.92x overall, since that first collection
after the pause (0.4-1.0 s) lands inside the call. Not adopted: this module is kept only in
the commit that measured it.

``gc_paused`` nests and may be entered by several threads at once: the collector is paused
from the first entry to the last exit, and turned back on only if it was on at the first
entry. Code that calls ``gc.enable``/``gc.disable`` itself inside such a block has the state
of the first entry restored when the last block ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_enabled_before = False


@contextmanager
def gc_paused(active: bool = True) -> Iterator[bool]:
    """Pause automatic garbage collection inside the block (``active=False``: leave it as it
    is); yields whether it is paused.

    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    global _holders, _enabled_before
    if not active:
        yield not gc.isenabled()
        return
    with _lock:
        if _holders == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield True
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _enabled_before:
                gc.enable()


def gc_pause_holders() -> int:
    """How many ``gc_paused`` blocks are open now (for tests and diagnostics)."""
    return _holders
