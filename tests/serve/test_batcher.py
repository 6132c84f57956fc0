"""The micro-batcher with a fake slow forward function: concurrent requests share forward passes,
each gets its own rows back in order, nobody waits past ``max_wait``, and a failing batch fails
only its own requests."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from facenet.serve.batcher import BatcherClosed, BatchFailed, MicroBatcher, QueueFull


class SlowForward:
    """crops -> (N, 2) rows [request id, face index] read back from the crops' pixels, after
    ``delay`` seconds; records every call's size and thread."""

    def __init__(self, delay: float = 0.02, fail_when: int | None = None) -> None:
        self.delay = delay
        self.fail_when = fail_when  # raise when a crop carries this request id
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        self.calls.append(len(crops))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        ids = np.array([[c[0, 0, 0], c[0, 0, 1]] for c in crops], np.float32)
        if self.fail_when is not None and (ids[:, 0] == self.fail_when).any():
            raise RuntimeError("a poisoned crop")
        return ids


def crops_of(request: int, n: int) -> list[np.ndarray]:
    """``n`` 2x2 crops whose pixels say (request, face)."""
    return [np.full((2, 2, 3), (request, face, 0), np.uint8) for face in range(n)]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows():
    forward = SlowForward(delay=0.02)

    async def main():
        async with MicroBatcher(forward, max_batch_size=32, max_wait_s=0.05) as b:
            # 16 requests of 1..3 faces each, all at once
            sizes = [1 + r % 3 for r in range(16)]
            results = await asyncio.gather(*(b.embed(crops_of(r, n)) for r, n in enumerate(sizes)))
            return sizes, results

    sizes, results = run(main())
    assert len(forward.calls) < 16  # batched: fewer forward passes than requests
    assert sum(forward.calls) == sum(sizes) and max(forward.calls) <= 32
    for r, (n, rows) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(rows, [[r, face] for face in range(n)])
    assert all(name.startswith("facenet-embed") for name in forward.threads)  # off the loop


def test_the_event_loop_stays_free_while_the_model_runs():
    forward = SlowForward(delay=0.3)
    ticks = []

    async def ticker():
        for _ in range(10):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main():
        async with MicroBatcher(forward, max_wait_s=0.0) as b:
            await asyncio.gather(b.embed(crops_of(0, 1)), ticker())

    run(main())
    assert max(np.diff(ticks)) < 0.15  # the ticker kept ticking during the 0.3 s forward


def test_a_lone_request_waits_max_wait_and_no_longer():
    forward = SlowForward(delay=0.0)

    async def main():
        async with MicroBatcher(forward, max_batch_size=64, max_wait_s=0.2) as b:
            start = time.perf_counter()
            await b.embed(crops_of(0, 1))
            return time.perf_counter() - start

    elapsed = run(main())
    assert 0.18 <= elapsed < 0.6


def test_a_full_batch_goes_at_once():
    forward = SlowForward(delay=0.0)

    async def main():
        async with MicroBatcher(forward, max_batch_size=4, max_wait_s=30.0) as b:
            start = time.perf_counter()
            await asyncio.gather(*(b.embed(crops_of(r, 1)) for r in range(4)))
            return time.perf_counter() - start

    assert run(main()) < 2.0  # never the 30 s wait
    assert forward.calls == [4]


def test_requests_that_queued_while_the_model_ran_do_not_wait_again():
    forward = SlowForward(delay=0.2)

    async def main():
        async with MicroBatcher(forward, max_batch_size=64, max_wait_s=0.15) as b:
            first = asyncio.ensure_future(b.embed(crops_of(0, 1)))
            await asyncio.sleep(0.2)  # the first batch is in the model now
            start = time.perf_counter()
            await asyncio.gather(*(b.embed(crops_of(r, 1)) for r in range(1, 6)))
            await first
            return time.perf_counter() - start

    # they queued at t=0.2 and the model frees at ~0.35: their 0.15 s wait is over by then
    assert run(main()) < 0.6
    assert forward.calls == [1, 5]


def test_a_request_larger_than_the_batch_goes_whole_and_alone():
    forward = SlowForward(delay=0.0)

    async def main():
        async with MicroBatcher(forward, max_batch_size=4, max_wait_s=0.05) as b:
            return await asyncio.gather(b.embed(crops_of(0, 2)), b.embed(crops_of(1, 9)))

    small, big = run(main())
    np.testing.assert_array_equal(big, [[1, f] for f in range(9)])
    np.testing.assert_array_equal(small, [[0, 0], [0, 1]])
    assert sorted(forward.calls) == [2, 9]


def test_an_error_fails_only_the_requests_of_its_batch():
    forward = SlowForward(delay=0.05, fail_when=3)

    async def main():
        async with MicroBatcher(forward, max_batch_size=4, max_wait_s=0.05) as b:
            # requests 0..3 fill the first batch (3 is poisoned); 4..7 the second
            tasks = [asyncio.ensure_future(b.embed(crops_of(r, 1))) for r in range(8)]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            after = await b.embed(crops_of(9, 2))  # the batcher lives on
            return results, after

    results, after = run(main())
    assert forward.calls[:2] == [4, 4]
    assert all(isinstance(r, BatchFailed) for r in results[:4])
    assert isinstance(results[0].__cause__, RuntimeError)
    for r in range(4, 8):
        np.testing.assert_array_equal(results[r], [[r, 0]])
    np.testing.assert_array_equal(after, [[9, 0], [9, 1]])


def test_a_wrong_shape_from_forward_is_an_error_of_that_batch():
    async def main():
        async with MicroBatcher(lambda crops: np.zeros((1, 2)), max_wait_s=0.0) as b:
            with pytest.raises(BatchFailed):
                await b.embed(crops_of(0, 3))

    run(main())


def test_a_caller_that_gave_up_is_dropped():
    forward = SlowForward(delay=0.0)

    async def main():
        async with MicroBatcher(forward, max_batch_size=64, max_wait_s=0.2) as b:
            gone = asyncio.ensure_future(b.embed(crops_of(0, 5)))
            await asyncio.sleep(0.01)
            gone.cancel()
            rows = await b.embed(crops_of(1, 1))
            return rows

    np.testing.assert_array_equal(run(main()), [[1, 0]])
    assert forward.calls == [1]


def test_a_full_queue_is_refused_and_a_closed_batcher_says_so():
    forward = SlowForward(delay=0.2)

    async def main():
        b = MicroBatcher(forward, max_batch_size=2, max_wait_s=0.0, max_queue=4)
        with pytest.raises(BatcherClosed):
            await b.embed(crops_of(0, 1))
        await b.start()
        first = asyncio.ensure_future(b.embed(crops_of(0, 2)))
        await asyncio.sleep(0.05)  # in the model
        waiting = asyncio.ensure_future(b.embed(crops_of(1, 3)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.embed(crops_of(2, 2))  # 3 waiting + 2 > 4
        assert b.queue_depth == 3
        await first
        await waiting
        await b.close()
        with pytest.raises(BatcherClosed):
            await b.embed(crops_of(3, 1))

    run(main())


def test_closing_fails_the_waiting_requests():
    forward = SlowForward(delay=0.0)

    async def main():
        b = MicroBatcher(forward, max_batch_size=64, max_wait_s=10.0)
        await b.start()
        waiting = asyncio.ensure_future(b.embed(crops_of(0, 1)))
        await asyncio.sleep(0.05)
        await b.close()
        with pytest.raises(BatcherClosed):
            await waiting

    run(main())
