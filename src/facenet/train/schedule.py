"""Learning-rate schedules as pure functions of the step (nanoGPT style).

No scheduler object carries hidden state: the learning rate at step ``s`` is ``lr_at(s, ...)``,
so a resumed run gets exactly the rates of an uninterrupted one.
"""

from __future__ import annotations

import bisect
import math

from facenet.config import ScheduleConfig


def lr_at(step: int, base_lr: float, max_steps: int, schedule: ScheduleConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    - warm-up: linear from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``;
    - ``constant``: ``base_lr``;
    - ``cosine``: half cosine from ``base_lr`` to ``min_lr_ratio * base_lr`` at ``max_steps``;
    - ``linear``: straight line to the same floor;
    - ``step``: ``base_lr * gamma ** (number of milestones <= step)`` (the paper's "lowered to
      finalise", SPEC §4).
    """
    w = schedule.warmup_steps
    if w > 0 and step < w:
        return base_lr * (step + 1) / w
    floor = schedule.min_lr_ratio * base_lr
    span = max(1, max_steps - w)
    t = min(1.0, max(0.0, (step - w) / span))
    if schedule.name == "constant":
        return base_lr
    if schedule.name == "cosine":
        return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule.name == "linear":
        return floor + (base_lr - floor) * (1 - t)
    if schedule.name == "step":
        return base_lr * schedule.gamma ** bisect.bisect_right(sorted(schedule.milestones), step)
    raise ValueError(f"unknown schedule {schedule.name!r}; choose constant, cosine, linear, step")
