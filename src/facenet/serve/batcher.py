"""Dynamic micro-batching: the faces of concurrent requests embedded in one forward pass.

A request hands its crops to ``MicroBatcher.embed`` and awaits its embeddings. One collector
task on the event loop forms batches:

1. it waits for the first request in the queue;
2. it waits for company until the batch holds ``max_batch_size`` faces or the oldest request
   has waited ``max_wait_s`` (a request that queued while the model was busy has already
   waited, so it goes at once);
3. it takes whole requests, oldest first, while they fit (one request larger than the batch
   goes alone: its faces are never split between batches);
4. it runs ``forward`` on all their crops in one worker thread (the event loop stays free to
   accept requests, which form the next batch meanwhile), then hands each request its rows,
   in order.

An exception in ``forward`` fails the requests of that batch (``BatchFailed``) and no other; a
request whose caller gave up (timeout, disconnect) before its batch formed is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("facenet.serve")

Forward = Callable[[list[np.ndarray]], np.ndarray]  # N crops -> (N, D) embeddings


class BatchFailed(RuntimeError):
    """The forward pass of the batch a request was in raised; ``__cause__`` is why."""


class QueueFull(RuntimeError):
    """More faces are waiting for the model than the batcher accepts (overload)."""


class BatcherClosed(RuntimeError):
    """The batcher was stopped (the server is shutting down)."""


@dataclass
class _Request:
    crops: list[np.ndarray]
    future: asyncio.Future
    arrived: float  # loop time


class MicroBatcher:
    """Embeds the crops of concurrent callers together.

    Args:
        forward: crops -> (N, D) float32 embeddings (e.g. ``Embedder.embed_crops``); runs in a
            worker thread, one batch at a time.
        max_batch_size: faces per forward pass.
        max_wait_s: how long the oldest waiting request may wait for a batch to fill.
        max_queue: faces that may wait; ``embed`` raises ``QueueFull`` beyond.
        on_batch: called with each batch's face count (metrics).
    """

    def __init__(
        self,
        forward: Forward,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self.forward = forward
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._queued = 0  # faces in the queue
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ life

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Faces waiting for a forward pass."""
        return self._queued

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        if self.running:
            return
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="facenet-embed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="facenet-batcher")

    async def close(self) -> None:
        """Stop: waiting requests fail with ``BatcherClosed``; a running forward pass finishes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the server is shutting down"))
        self._queued = 0
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ callers

    async def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The (N, D) embeddings of ``crops``, in their order, computed with other callers'.

        Raises:
            QueueFull: too many faces are waiting; BatcherClosed: not running;
            BatchFailed: the forward pass of this request's batch raised.
        """
        if not self.running or self._wake is None:
            raise BatcherClosed("the batcher is not running")
        crops = list(crops)
        if not crops:
            return np.zeros((0, 0), np.float32)
        if self._queued + len(crops) > self.max_queue:
            raise QueueFull(f"{self._queued} faces are waiting for the model")
        loop = asyncio.get_running_loop()
        item = _Request(crops, loop.create_future(), loop.time())
        self._queue.append(item)
        self._queued += len(crops)
        self._wake.set()
        return await item.future

    # ------------------------------------------------------------------ the collector

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = await self._collect()
            if batch:
                await self._forward(batch)

    async def _collect(self) -> list[_Request]:
        """Wait for company (up to the oldest request's deadline), then take whole requests."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.max_wait_s
        while self._queued < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[_Request] = []
        size = 0
        while self._queue:
            item = self._queue[0]
            if batch and size + len(item.crops) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued -= len(item.crops)
            if item.future.done():  # the caller gave up while waiting
                continue
            batch.append(item)
            size += len(item.crops)
        return batch

    async def _forward(self, batch: list[_Request]) -> None:
        crops = [c for item in batch for c in item.crops]
        loop = asyncio.get_running_loop()
        try:
            embeddings = await loop.run_in_executor(self._executor, self.forward, crops)
            embeddings = np.asarray(embeddings)
            if embeddings.ndim != 2 or len(embeddings) != len(crops):
                raise RuntimeError(
                    f"forward returned shape {embeddings.shape} for {len(crops)} crops"
                )
        except asyncio.CancelledError:  # close() while the model ran: nobody is left waiting
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatcherClosed("the server is shutting down"))
            raise
        except Exception as e:
            log.exception(
                "embedding a batch of %d faces (%d requests) failed", len(crops), len(batch)
            )
            for item in batch:
                if not item.future.done():
                    failure = BatchFailed(f"embedding failed: {type(e).__name__}")
                    failure.__cause__ = e
                    item.future.set_exception(failure)
            return
        if self.on_batch is not None:
            self.on_batch(len(crops))
        start = 0
        for item in batch:
            end = start + len(item.crops)
            if not item.future.done():
                item.future.set_result(embeddings[start:end])
            start = end
