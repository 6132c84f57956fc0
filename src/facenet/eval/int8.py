"""int8 in ``facenet eval``: the images that calibrate it (people the pairs never name) and the
pairs scored again with 128-byte embeddings (``--quantize int8``), beside float."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facenet.data.images import is_image_file
from facenet.data.lfw import Pairs
from facenet.eval.embedding import embed_paths
from facenet.eval.verification import VerificationReport
from facenet.quantize import Int8Codec

Progress = Callable[[int, int], None]
# why: MinMax activation ranges settle within a few dozen faces; 64 crops take ~2 s to embed
CALIBRATION_IMAGES = 64


def calibration_images(
    data: str | os.PathLike, pairs: Pairs, count: int = CALIBRATION_IMAGES
) -> list[Path]:
    """``count`` images of ``data`` (folder per identity) of people the pairs never name, evenly
    spaced over the sorted list: int8 calibration that sees none of the evaluated people.

    Raises:
        FileNotFoundError: no image of another person under ``data``.
    """
    named = set(pairs.left_people) | set(pairs.right_people)
    paths = sorted(
        p
        for p in Path(data).glob("*/*")
        if p.parent.name not in named and p.is_file() and is_image_file(p)
    )
    if not paths:
        raise FileNotFoundError(
            f"{data}: int8 calibration needs images of people outside {pairs.path}; none found"
        )
    step = max(1, len(paths) // count)
    return paths[::step][:count]


# why: each dimension's calibrated maximum settles within a few hundred faces
CODEC_IMAGES = 500


@dataclass(frozen=True)
class Int8Result:
    """The pairs scored again with every embedding as its int8 code (``Int8Codec``)."""

    report: VerificationReport
    dim: int  # bytes per face
    source: str  # where the codec's scales come from

    def markdown(self, float_report: VerificationReport) -> str:
        rows = [
            "| embeddings | bytes per face | accuracy | VAL @ FAR | AUC |",
            "|---|---|---|---|---|",
        ]
        for name, size, r in (
            ("float32", 4 * self.dim, float_report),
            ("int8", self.dim, self.report),
        ):
            rows.append(
                f"| {name} | {size} | {100 * r.accuracy:.2f}% ± {100 * r.accuracy_std:.2f} | "
                f"{100 * r.val:.2f}% @ {r.far:.1e} | {r.auc:.4f} |"
            )
        drop = 100 * (float_report.accuracy - self.report.accuracy)
        return "\n".join(rows) + f"\n\nAccuracy drop: {drop:+.2f} points. Codec: {self.source}."


def embedding_codec(
    recorded: dict[str, Any],
    embedder: Any,
    data: Path,
    pairs: Pairs,
    dim: int,
    progress: Callable[[str], Progress | None],
    embed_kw: dict[str, Any],
) -> tuple[Int8Codec, str]:
    """The int8 code of the evaluated embeddings: the model card's (calibrated on its training
    faces) when it has one of this dimension, else calibrated here on ``CODEC_IMAGES`` images
    under ``data`` of people the pairs never name (``recorded``: the card's ``int8``)."""
    if recorded:
        codec = Int8Codec.from_dict(recorded)
        if codec.dim == dim:
            return codec, "the model's own scales, calibrated on its training faces"
    paths = calibration_images(data, pairs, CODEC_IMAGES)
    calibration = embed_paths(embedder, paths, progress=progress("int8 calibration"), **embed_kw)
    return (
        Int8Codec.calibrate(calibration),
        f"calibrated on {len(paths)} images under {data} of people the pairs never name",
    )
