"""Operating points: which squared-L2 threshold decides "same person", and where it came from.

A model carries calibrated thresholds on its card (``{"accuracy": t, "far_1e-3": t}``); a user
may pass a threshold or a false-accept rate instead. NumPy only, so the gallery can use it
without loading PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# why: the published model and the paper's best model; used when the user names no model.
DEFAULT_MODEL = "inception_resnet_v1:casia-webface"


def resolve_threshold(
    thresholds: dict[str, float],
    threshold: float | None = None,
    far: float | None = None,
    default: Sequence[str] = ("accuracy", "far_1e-3"),
) -> tuple[float, str]:
    """The squared-L2 decision threshold and where it came from.

    ``threshold`` wins; else the model's ``far_<F>`` entry for ``far``; else the first of
    ``default`` the model has.

    Raises:
        ValueError: nothing applies (the message lists what the model has and what to pass).
    """
    if threshold is not None:
        if not 0.0 <= threshold <= 4.0:
            raise ValueError(
                f"--threshold {threshold} is outside [0, 4] (squared L2 of unit vectors)"
            )
        return float(threshold), "--threshold"
    have = ", ".join(f"{k}={v:.4f}" for k, v in thresholds.items()) or "none"
    if far is not None:
        for key, value in thresholds.items():
            if key.startswith("far_"):
                try:
                    if np.isclose(float(key[4:]), far, rtol=1e-6, atol=0.0):
                        return float(value), f"model {key}"
                except ValueError:
                    continue
        raise ValueError(
            f"the model has no threshold calibrated for FAR={far:g} (it has: {have}); "
            "pass --threshold T"
        )
    for key in default:
        if key in thresholds:
            return float(thresholds[key]), f"model {key}"
    raise ValueError(
        f"the model carries no calibrated threshold (it has: {have}); pass --threshold T "
        "(squared L2 distance) or use a calibrated model such as " + DEFAULT_MODEL
    )
