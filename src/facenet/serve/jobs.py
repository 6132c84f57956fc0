"""Background jobs: clustering many photos (``POST /v1/cluster``) answered later
(``GET /v1/jobs/{id}``).

A job is accepted only after its uploads are read and their faces found (a bad image is the
usual problem, nothing queued); what remains, embedding and clustering, runs in the background.
Jobs run one at a time, in submission order, in one worker task: its faces are embedded through
the micro-batcher (the model only ever runs in the batcher's thread) and clustered in one
thread of its own (``facenet-jobs``), so the event loop never does the work.

Jobs live in this process's memory only: a restart loses them, queued ones included. A job
belongs to the API key that created it (another key is told 404); a finished job is kept for
``keep_s`` seconds and at most the last ``keep`` finished jobs are kept, then it is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet.apps.cluster import DEFAULT_METHOD, cluster_embeddings
from facenet.apps.results import ClusterResult
from facenet.apps.thresholds import OperatingPoint
from facenet.serve.problems import ProblemError, problem_body
from facenet.serve.service import ImageFaces, Service, all_faces_answers

log = logging.getLogger("facenet.serve")

KEEP = 100  # finished jobs kept
KEEP_S = 3600.0  # seconds a finished job is kept
MAX_PENDING = 100  # jobs queued or running; 503 above


@dataclass
class Job:
    id: str
    owner: str | None  # the id of the key that created it (None without authentication)
    created: float
    work: Callable[[], Awaitable[dict[str, Any]]] | None
    status: str = "queued"  # queued | running | done | failed
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.id, "status": self.status, "created": self.created}
        if self.finished is not None:
            out["finished"] = self.finished
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Jobs:
    """The jobs of a server and the one worker that runs them (all state on the event loop)."""

    keep: int = KEEP
    keep_s: float = KEEP_S
    max_pending: int = MAX_PENDING
    clock: Callable[[], float] = time.time
    _jobs: dict[str, Job] = field(default_factory=dict)  # by id, oldest first
    _queue: asyncio.Queue[Job] | None = None
    _task: asyncio.Task[None] | None = None
    _thread: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="facenet-jobs")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in the jobs' thread."""
        if self._thread is None:
            raise ProblemError("not_ready", "the server is not running")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def submit(self, owner: str | None, work: Callable[[], Awaitable[dict[str, Any]]]) -> Job:
        """Queue ``work``; 503 ``overloaded`` when ``max_pending`` jobs wait or run already."""
        if self._queue is None:
            raise ProblemError("not_ready", "the server is not running")
        self._forget()
        pending = sum(j.status in ("queued", "running") for j in self._jobs.values())
        if pending >= self.max_pending:
            raise ProblemError(
                "overloaded", f"{pending} jobs are waiting; try later", {"Retry-After": "10"}
            )
        job = Job(secrets.token_urlsafe(12), owner, self.clock(), work)
        self._jobs[job.id] = job
        self._queue.put_nowait(job)
        return job

    def get(self, job_id: str, owner: str | None) -> Job:
        """The job ``job_id`` of ``owner``; 404 ``not_found`` if unknown, forgotten or another
        key's."""
        self._forget()
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise ProblemError("not_found", "no such job (jobs are kept for a while, then gone)")
        return job

    def _forget(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished is not None]
        old = self.clock() - self.keep_s
        drop = {j.id for j in finished if j.finished is not None and j.finished < old}
        drop |= {j.id for j in finished[: max(0, len(finished) - self.keep)]}
        for job_id in drop:
            del self._jobs[job_id]

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            job.status = "running"
            try:
                assert job.work is not None
                job.result = await job.work()
                job.status = "done"
            except ProblemError as e:
                job.error = problem_body(e.code, str(e.detail))
                job.status = "failed"
            except Exception:  # noqa: BLE001 - a job's failure is its answer; the trace is logged
                log.exception("job %s failed", job.id)
                job.error = problem_body("internal", "the job failed; the error has been logged")
                job.status = "failed"
            finally:
                job.work = None  # why: its images and faces are not kept with the answer
                if job.status in ("done", "failed"):
                    job.finished = self.clock()
            self._forget()


async def cluster_faces(
    svc: Service,
    jobs: Jobs,
    found: Sequence[ImageFaces],
    op: OperatingPoint,
    min_cluster_size: int,
) -> dict[str, Any]:
    """Embed the faces of ``found`` (through the micro-batcher) and group them by person at
    ``op``: ``facenet.load(...).cluster(images, ...).to_dict()``."""
    faces = [f for image in found for f in image.faces]
    step = svc.settings.max_batch_size
    for i in range(0, len(faces), step):
        chunk = faces[i : i + step]
        vectors = await svc.embed([f.crop for f in chunk])
        for face, vector in zip(chunk, vectors, strict=True):
            face.embedding = vector
    images = all_faces_answers(svc, found)
    if not faces:
        return ClusterResult(images, (), op).to_dict()
    labels = await jobs.in_thread(
        lambda: cluster_embeddings(
            np.stack([f.embedding for f in faces]),
            method=DEFAULT_METHOD,
            threshold=op.threshold,
            min_cluster_size=min_cluster_size,
        )
    )
    return ClusterResult(images, tuple(int(v) for v in labels), op).to_dict()
