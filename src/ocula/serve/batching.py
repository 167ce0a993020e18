"""Dynamic micro-batching: requests that arrive together share one forward pass.

Each image of each request becomes one item on an asyncio queue. A single collector task takes the
first waiting item, then keeps taking items until it has `max_batch` of them or `max_wait_ms` have
passed since the first one, and runs the model on the stacked batch in ONE worker thread, so the
event loop stays free to accept and decode the next requests meanwhile. Under load the queue fills
while the model runs, so batches fill at once and nobody waits the full `max_wait_ms`.

Requests that gave up (timed out, client gone) are dropped before the model sees them.
`close()` stops new work and drains everything already queued: graceful shutdown loses nothing.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import torch


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


class BatcherBusy(RuntimeError):
    """The queue is full: the client should retry later."""


@dataclass
class _Item:
    x: torch.Tensor  # (C, H, W)
    future: asyncio.Future


_STOP = object()


class MicroBatcher:
    """`await batcher.infer(x)` with x (N, C, H, W) → model output (N, K), batched with others.

    `run_batch(x (B, C, H, W)) -> (B, K)` is called in a single dedicated thread.
    `on_batch(size, seconds)` is told about every batch that ran (metrics).
    """

    def __init__(self, run_batch: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Optional[Callable[[int, float], None]] = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        self.run_batch, self.max_batch = run_batch, max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: Optional[asyncio.Queue] = None
        self._collector: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closing = False
        self._waiting = 0  # items queued, not yet handed to the model

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the collector on the running event loop (the app's lifespan calls this)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocula-model")
        self._closing = False
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="ocula-batcher")

    async def close(self) -> None:
        """Refuse new work, finish everything queued, stop the model thread."""
        if self._collector is None:
            return
        self._closing = True
        await self._queue.put(_STOP)  # queued after every pending item, so those run first
        await self._collector
        self._collector = None
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._closing

    @property
    def depth(self) -> int:
        """Images waiting for the model (not counting the batch running now)."""
        return self._waiting

    # ------------------------------------------------------------------ requests
    async def infer(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, K). Cancelling the caller (a timeout) withdraws its images."""
        if not self.running:
            raise BatcherClosed("the server is shutting down")
        if self._waiting + len(x) > self.max_queue:
            raise BatcherBusy(f"queue full ({self._waiting} images waiting)")
        loop = asyncio.get_running_loop()
        items = [_Item(row, loop.create_future()) for row in x]
        for item in items:
            self._queue.put_nowait(item)
        self._waiting += len(items)
        rows = await asyncio.gather(*(item.future for item in items), return_exceptions=True)
        for row in rows:  # the model failed: every row carries the same error
            if isinstance(row, BaseException):
                raise row
        return torch.stack(rows)

    # ------------------------------------------------------------------ the collector
    async def _collect(self) -> None:
        while True:
            first = await self._queue.get()
            if first is _STOP:
                return
            batch, stop = await self._gather_more([first])
            self._waiting -= len(batch)
            live = [item for item in batch if not item.future.done()]  # drop abandoned requests
            if live:
                await self._run(live)
            if stop:
                return

    async def _gather_more(self, batch: list) -> tuple[list, bool]:
        """Fill `batch` up to max_batch, waiting at most max_wait after its first item."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()  # already queued: take it without waiting
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    async def _run(self, items: list) -> None:
        x = torch.stack([item.x for item in items])  # (B, C, H, W)
        start = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self.run_batch, x)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the model's failure
            for item in items:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - start)
        for item, row in zip(items, out):
            if not item.future.done():
                item.future.set_result(row)
