"""Run ``prepare_inputs`` in a child Python process.

On a GPU, ``Focuser.rank_many`` has one thread launching the device's kernels and another
tokenizing and fusing; both need the interpreter's lock, and together their Python took about
as long as the GPU's own work (``docs/gpu.md``). Tokenizing in a child process leaves the
calling thread only the fusion. The child is a plain ``python -c`` that calls ``main`` below (not
``multiprocessing``, which would import the caller's ``__main__`` again); it receives the
pickled tokenizer once, then batches, and answers each with a ``PreparedInputs`` or the error
that stopped it, over its standard input and output.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import IO, Any

from ragfocus.preparation import PreparedInputs, merge_prepared, prepare_inputs

logger = logging.getLogger(__name__)

_READY = "ready"

PREPARATION_PROCESSES = 3
"""Child processes that split each batch's tokenizing on a GPU (``host_process``), at most one
fewer than this machine's CPUs. Each holds about 0.4 GB of memory (it imports torch)."""


class PreparationProcess:
    """A child process that runs ``prepare_inputs`` with its own copy of ``tokenizer``.

    ``submit`` returns at once with a ``Future``; the child works through batches in order.
    If the child dies, every pending and later ``Future`` fails with ``RuntimeError`` (the
    caller then prepares in its own thread). ``close`` ends the child; so does the end of the
    calling process.
    """

    def __init__(self, tokenizer: object) -> None:
        payload = pickle.dumps(tokenizer, protocol=pickle.HIGHEST_PROTOCOL)
        environment = dict(os.environ)
        # The child imports ragfocus from wherever this process found it.
        environment["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from ragfocus.preparation_process import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        self._pending: dict[int, Future[PreparedInputs]] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._ready = threading.Event()
        self._failure: str | None = None
        self.prepared = 0
        """Batches the child has answered with a result."""
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._outbox.put(payload)
        # Writes go through their own thread: a write blocks while the child works on an
        # earlier batch, and the caller must not.
        self._writer = threading.Thread(target=self._write, name="ragfocus-preparation-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="ragfocus-preparation-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    @property
    def ready(self) -> bool:
        """The child has started and holds the tokenizer (batches sent before wait for it)."""
        return self._ready.is_set() and self._failure is None

    @property
    def alive(self) -> bool:
        return self._failure is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the child is ready or has failed; ``True`` when ready."""
        self._ready.wait(timeout)
        return self.ready

    def submit(
        self,
        inputs: Sequence[tuple[str, Sequence[str]]],
        *,
        prompt_tokens: int | None,
        sentences: bool,
        distraction: bool,
    ) -> Future[PreparedInputs]:
        """``prepare_inputs(tokenizer, inputs, ...)`` in the child."""
        future: Future[PreparedInputs] = Future()
        options = {"prompt_tokens": prompt_tokens, "sentences": sentences, "distraction": distraction}
        message = pickle.dumps(([(query, list(texts)) for query, texts in inputs], options), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._failure is not None:
                future.set_exception(RuntimeError(self._failure))
                return future
            number = next(self._numbers)
            self._pending[number] = future
        # The job number goes in front of the pickled job so the child can answer it.
        self._outbox.put(number.to_bytes(8, "little") + message)
        return future

    def close(self) -> None:
        """End the child (it finishes the batch it is on) and fail what is still pending."""
        self._outbox.put(None)
        self._fail("the preparation process was closed", expected=True)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _write(self) -> None:
        stream = self._process.stdin
        assert stream is not None
        try:
            while (message := self._outbox.get()) is not None:
                stream.write(len(message).to_bytes(8, "little"))
                stream.write(message)
                stream.flush()
        except (BrokenPipeError, OSError, ValueError) as error:
            self._fail(f"the preparation process stopped reading ({type(error).__name__}: {error})")
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def _read(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        try:
            while True:
                message = _receive(stream)
                if message is None:
                    break
                number, succeeded, value = pickle.loads(message)
                if number == -1 and value == _READY:
                    self._ready.set()
                    continue
                with self._lock:
                    future = self._pending.pop(number, None)
                if future is None:
                    continue
                if succeeded:
                    self.prepared += 1
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except Exception as error:  # noqa: BLE001 - a broken stream: reported through the futures
            self._fail(f"the preparation process's answer could not be read ({type(error).__name__}: {error})")
            return
        code = self._process.wait()
        self._fail(f"the preparation process exited (code {code})")

    def _fail(self, reason: str, *, expected: bool = False) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = reason
                if not expected:
                    logger.warning("%s; batches are prepared in the calling thread", reason)
            pending, self._pending = self._pending, {}
        self._ready.set()
        for future in pending.values():
            if not future.done():
                future.set_exception(RuntimeError(reason))


class PreparationPool:
    """Several ``PreparationProcess`` children that split each batch between them.

    ``submit`` cuts the batch into one consecutive slice per ready child and merges their
    answers (``merge_prepared``), so a batch is prepared in about 1/n of one child's time:
    the first batch of ``rank_many``, which the device waits for, and every later one (one
    child tokenized a batch of HotpotQA prompts in about the time a GPU scored it,
    ``docs/gpu.md``). The interface is ``PreparationProcess``'s; a child that dies is left out
    of later batches, and the batch it was on fails (the caller prepares it itself).
    """

    def __init__(self, tokenizer: object, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = [PreparationProcess(tokenizer) for _ in range(processes)]

    @property
    def ready(self) -> bool:
        """At least one child is ready."""
        return any(process.ready for process in self.processes)

    @property
    def alive(self) -> bool:
        return any(process.alive for process in self.processes)

    @property
    def prepared(self) -> int:
        """Slices the children have answered with a result."""
        return sum(process.prepared for process in self.processes)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every child is ready or has failed (at most ``timeout`` seconds in
        all); ``True`` when at least one is ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for process in self.processes:
            process.wait_ready(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.ready

    def submit(
        self,
        inputs: Sequence[tuple[str, Sequence[str]]],
        *,
        prompt_tokens: int | None,
        sentences: bool,
        distraction: bool,
    ) -> Future[PreparedInputs]:
        """``prepare_inputs(tokenizer, inputs, ...)``, split between the ready children."""
        ready = [process for process in self.processes if process.ready] or self.processes[:1]
        count = max(1, min(len(ready), len(inputs)))
        bounds = [len(inputs) * part // count for part in range(count + 1)]
        parts = [
            process.submit(inputs[start:end], prompt_tokens=prompt_tokens, sentences=sentences, distraction=distraction)
            for process, start, end in zip(ready, bounds, bounds[1:])
        ]
        if len(parts) == 1:
            return parts[0]
        merged: Future[PreparedInputs] = Future()
        remaining = [len(parts)]
        lock = threading.Lock()

        def part_done(_: Future[PreparedInputs]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            failed = next((part.exception() for part in parts if part.exception() is not None), None)
            if failed is not None:
                merged.set_exception(failed)
            else:
                merged.set_result(merge_prepared([part.result() for part in parts]))

        for part in parts:
            part.add_done_callback(part_done)
        return merged

    def close(self) -> None:
        """End every child."""
        for process in self.processes:
            process.close()


def _receive(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or ``None`` at the end of the stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "little")
    message = stream.read(size)
    if len(message) < size:
        return None
    return message


def _send(stream: IO[bytes], number: int, succeeded: bool, value: Any) -> None:
    try:
        message = pickle.dumps((number, succeeded, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001 - an answer that cannot travel becomes an error that can
        message = pickle.dumps((number, False, RuntimeError(f"the prepared batch could not be sent back: {error!r}")))
    stream.write(len(message).to_bytes(8, "little"))
    stream.write(message)
    stream.flush()


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child's loop: the tokenizer first, then one answer per batch until the input ends."""
    message = _receive(requests)
    if message is None:
        return
    tokenizer = pickle.loads(message)
    _send(answers, -1, True, _READY)
    while (message := _receive(requests)) is not None:
        number = int.from_bytes(message[:8], "little")
        try:
            inputs, options = pickle.loads(message[8:])
            result: Any = prepare_inputs(tokenizer, inputs, **options)
            succeeded = True
        except Exception as error:  # noqa: BLE001 - the caller prepares this batch itself
            result, succeeded = error, False
        _send(answers, number, succeeded, result)


def main() -> None:
    # Answers go out on a private copy of standard output; anything a library prints goes to
    # standard error instead of into the answers.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)

