"""Export any model to ONNX or TorchScript, with a parity check against PyTorch.

Both formats take a float (B, 3, H, W) batch with a dynamic batch size, already normalised as
``model.spec`` says, and return (B, D) L2-normalised embeddings. The model's self-description
(registry name, kwargs, spec, thresholds; see ``facenet.models.loading.model_info``) travels
inside the file: ONNX ``metadata_props["facenet"]``, TorchScript extra file ``facenet.json``.

>>> report = export_model(create_model("nn4"), "nn4.onnx", "onnx")
>>> report.max_abs_diff <= 1e-4
True
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from facenet.models.loading import METADATA_KEY, load_weights_file, model_info, save_weights

ExportFormat = Literal["onnx", "torchscript", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "safetensors")
# why: the acceptance bound for exported embeddings vs PyTorch's (unit vectors).
PARITY_ATOL = 1e-4
# why: batch sizes unlike the export example (2) prove the batch dimension stayed dynamic.
PARITY_BATCH_SIZES = (1, 3)
ONNX_OPSET = 18


class ExportParityError(RuntimeError):
    """The exported model's embeddings differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote and how closely it matches PyTorch."""

    path: Path  # the written file
    format: str  # "onnx" or "torchscript"
    max_abs_diff: float  # max |exported - PyTorch| over the parity batches; nan if unchecked
    batch_sizes: tuple[int, ...]  # batch sizes the parity check ran
    bytes: int  # file size


def _example(model: nn.Module, batch: int, seed: int) -> Tensor:
    """A seeded standard-normal (batch, 3, H, W) batch at the model's input size."""
    h, w = model.spec.input_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g)


def parity(
    model: nn.Module,
    run: Callable[[Tensor], np.ndarray],
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """Max abs difference between ``model(x)`` and ``run(x)`` over seeded batches of each size."""
    worst = 0.0
    for i, b in enumerate(batch_sizes):
        x = _example(model, b, seed + i)
        with torch.no_grad():
            ref = model(x).numpy()
        got = np.asarray(run(x))
        if got.shape != ref.shape:
            raise ExportParityError(f"exported output shape {got.shape} != PyTorch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX (torch.export-based exporter, dynamic batch), atomically."""
    path = Path(path)
    model = model.eval()
    example = _example(model, 2, seed=1234)
    batch = torch.export.Dim("batch", min=1, max=4096)
    tmp = _tmp_path(path)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # why: "torchvision is not installed" notes are noise here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["images"],
            output_names=["embeddings"],
            opset_version=opset,
            verbose=False,
        )
    onnx_log.setLevel(level)
    program.model.metadata_props[METADATA_KEY] = json.dumps(model_info(model))
    try:
        program.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_runner(path: str | os.PathLike, threads: int = 0) -> Callable[[Tensor], np.ndarray]:
    """An ONNX Runtime (CPU) function: float (B, 3, H, W) tensor -> (B, D) numpy embeddings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def export_torchscript(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load``-able), atomically."""
    path = Path(path)
    model = model.eval()
    example = _example(model, 2, seed=1234)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    tmp = _tmp_path(path)
    try:
        torch.jit.save(
            traced, str(tmp), _extra_files={"facenet.json": json.dumps(model_info(model))}
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def torchscript_runner(path: str | os.PathLike) -> Callable[[Tensor], np.ndarray]:
    """A TorchScript function: float (B, 3, H, W) tensor -> (B, D) numpy embeddings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(x).numpy()

    return run


def safetensors_runner(path: str | os.PathLike) -> Callable[[Tensor], np.ndarray]:
    """Callable embedding a batch with the model rebuilt from a facenet ``.safetensors`` file."""

    model = load_weights_file(path)

    def run(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x).numpy()

    return run


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    format: ExportFormat,
    check: bool = True,
    atol: float = PARITY_ATOL,
    half: bool = False,
    extra: dict[str, Any] | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` and (by default) check it against PyTorch.

    Args:
        model: a facenet model (carries ``spec``); put in eval mode.
        path: output file (``.onnx`` / ``.pt`` by convention).
        format: ``"onnx"``, ``"torchscript"`` or ``"safetensors"`` (facenet's self-describing
            weights file, rebuilt with ``facenet.models.load_model``).
        check: run the exported file on seeded batches of sizes 1 and 3 and compare.
        atol: largest allowed max abs difference of embeddings.
        half: safetensors only: store floating tensors as fp16 (half the size; embeddings move
            by ~1e-3, so pass a matching ``atol``).
        extra: safetensors only: more metadata (training config, metrics, data terms).

    Raises:
        ValueError: unknown format.
        ExportParityError: exported embeddings differ by more than ``atol`` (the file stays,
            so it can be inspected).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {FORMATS}")
    model = model.eval()
    if half and format != "safetensors":
        raise ValueError("half=True is for format='safetensors' only")
    if format == "onnx":
        out = export_onnx(model, path)
        runner = onnx_runner(out) if check else None
    elif format == "safetensors":
        out = save_weights(model, path, extra=extra, dtype=torch.float16 if half else None)
        runner = safetensors_runner(out) if check else None
    else:
        out = export_torchscript(model, path)
        runner = torchscript_runner(out) if check else None
    diff = parity(model, runner) if runner is not None else float("nan")
    if check and not diff <= atol:
        raise ExportParityError(
            f"{out}: exported embeddings differ from PyTorch by {diff:.3g} (> {atol:g})"
        )
    return ExportReport(
        path=out,
        format=format,
        max_abs_diff=diff,
        batch_sizes=PARITY_BATCH_SIZES if check else (),
        bytes=out.stat().st_size,
    )
