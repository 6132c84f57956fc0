"""Operating points: which squared-L2 threshold decides "same person", and where it came from.

A model carries calibrated thresholds on its card (``{"accuracy": t, "far_1e-3": t}``); a user
may pass a threshold or a false-accept rate instead. NumPy only, so the gallery can use it
without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# why: the published model and the paper's best model; used when the user names no model.
DEFAULT_MODEL = "inception_resnet_v1:casia-webface"


# why: one operating point for verify, identify and cluster, so one pair gets one verdict in every
# command. "accuracy" (best accuracy on balanced same/different pairs) accepts ~1% of strangers;
# a gallery or a collection compares each face with many others, so a stranger would find a
# look-alike there. FAR 1e-3 (a stranger pair is accepted with probability 1/1000) is the
# strictest point every shipped model is calibrated at. Override with --operating-point,
# --far or --threshold.
DEFAULT_OPERATING_POINT = "far_1e-3"


@dataclass(frozen=True)
class OperatingPoint:
    """The squared-L2 threshold an answer used, the operating point it stands for and where
    it came from."""

    threshold: float  # same person iff distance <= threshold
    name: str  # "far_1e-3", "accuracy", ... or "threshold" for a value the caller gave
    source: str  # "model far_1e-3", "gallery far_1e-3", "--threshold", ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 6),
            "operating_point": self.name,
            "threshold_source": self.source,
        }


@dataclass(frozen=True)
class Words:
    """How the caller's interface names the three choices, in messages and answers: a command
    line's flags, a Python call's arguments, an HTTP form's fields."""

    threshold: str  # the threshold choice, e.g. "--threshold T"
    far: str
    operating_point: str
    source: str  # ``OperatingPoint.source`` of a threshold the caller gave
    given: str  # a threshold the caller gave, "{}" standing for its value

    def given_threshold(self, value: float) -> str:
        return self.given.format(f"{value:g}")


CLI_WORDS = Words(
    "--threshold T", "--far F", "--operating-point NAME", "--threshold", "--threshold {}"
)
PYTHON_WORDS = Words(
    "threshold=T", "far=F", "operating_point=NAME", "threshold argument", "threshold={}"
)


def operating_point(
    thresholds: dict[str, float],
    threshold: float | None = None,
    far: float | None = None,
    name: str | None = None,
    where: str = "model",
    words: Words = CLI_WORDS,
) -> OperatingPoint:
    """The one rule for choosing a decision threshold.

    ``threshold`` wins; else the calibrated threshold for ``far`` (``far_<F>``); else the named
    operating point ``name``; else ``DEFAULT_OPERATING_POINT``. ``where`` names the owner of
    ``thresholds`` in the answer ("model", "gallery"); ``words``, the caller's names for the
    three choices in messages.

    Raises:
        ValueError: nothing applies (the message lists what is calibrated and what to pass).
    """
    w = words
    if threshold is not None:
        if not 0.0 <= threshold <= 4.0:
            raise ValueError(
                f"{w.given_threshold(threshold)} is outside [0, 4] (squared L2 of unit vectors)"
            )
        return OperatingPoint(float(threshold), "threshold", w.source)
    have = ", ".join(f"{k}={v:.4f}" for k, v in thresholds.items()) or "none"
    if far is not None:
        for key, value in thresholds.items():
            if key.startswith("far_"):
                try:
                    if np.isclose(float(key[4:]), far, rtol=1e-6, atol=0.0):
                        return OperatingPoint(float(value), key, f"{where} {key}")
                except ValueError:
                    continue
        raise ValueError(
            f"the {where} has no threshold calibrated for FAR={far:g} (it has: {have}); "
            f"pass {w.threshold}"
        )
    key = name or DEFAULT_OPERATING_POINT
    if key in thresholds:
        return OperatingPoint(float(thresholds[key]), key, f"{where} {key}")
    if name is not None:
        raise ValueError(
            f"the {where} has no operating point {name!r} (it has: {have}); "
            f"pass {w.threshold} or another {w.operating_point}"
        )
    raise ValueError(
        f"the {where} carries no {DEFAULT_OPERATING_POINT} threshold (it has: {have}); pass "
        f"{w.operating_point}, {w.far} or {w.threshold} (squared L2 distance), or use a "
        "calibrated model such as " + DEFAULT_MODEL
    )
