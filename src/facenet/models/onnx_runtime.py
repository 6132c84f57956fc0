"""ONNX Runtime as an embedding backend: the project's own ONNX export, cached, behind ``nn.Module``.

``onnx_network(model)`` exports ``model`` once with ``facenet.models.export`` (the one exporter,
with its parity check against PyTorch), keeps the file in facenet's cache folder keyed by the
weights' SHA-256 (``$FACENET_CACHE/onnx/``, default ``~/.cache/facenet/onnx/``; written
atomically), and returns an ``OnnxRuntimeNet``: a module whose ``forward`` runs the file in ONNX
Runtime. It takes and returns what the PyTorch model does (a normalised (B, 3, H, W) float batch
-> (B, D) unit vectors), so ``facenet.models.inference.embed_faces`` drives both backends with
the same preprocessing.

``quantize="int8"``: static int8 quantisation of the exported graph (ONNX Runtime
``quantize_static``, QDQ format, per-channel int8 weights, uint8 activations with MinMax ranges
from calibration crops). Why static and not ``quantize_dynamic``: dynamic quantisation turns
every convolution into ``ConvInteger`` with a per-call ``DynamicQuantizeLinear``, which ONNX
Runtime runs ~3x *slower* than float on Inception-ResNet-v1 (3.7 vs 12-41 img/s, 2 threads);
the static graph runs on the int8 GEMM kernels, ~3x *faster* than float. The ranges need ~64
face crops like the ones that will be embedded (never the evaluation's own test images).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from facenet.fingerprint import array_sha256, weights_sha256
from facenet.models.card import card_of
from facenet.models.export import export_model
from facenet.models.pretrained import cache_dir
from facenet.preprocess import preprocess

Quantize = Literal["int8"]
QUANTIZE_MODES: tuple[str, ...] = ("int8",)
INSTALL_HINT = "pip install 'facenet-triplet[export]'"
CALIBRATION_BATCH = 16  # crops per calibration pass (memory, not accuracy)


class BackendUnavailableError(ImportError):
    """The ONNX Runtime backend was asked for but its packages are not installed."""


def _require_onnxruntime() -> Any:
    try:
        # why: optional dependency (the `export` extra); imported only when the backend is used
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            f"the onnxruntime backend needs ONNX Runtime, which is not installed ({INSTALL_HINT})"
        ) from None
    return onnxruntime


def onnx_cache_dir() -> Path:
    """``$FACENET_CACHE/onnx`` (default ``~/.cache/facenet/onnx``), read at each call."""
    return cache_dir() / "onnx"


class OnnxRuntimeNet(nn.Module):
    """An ONNX Runtime CPU session as a module: normalised float (B, 3, H, W) -> (B, D) float32.

    Has no parameters (``embed_faces`` then runs it on the CPU) and no training mode; ``spec``
    and ``card`` are the exported model's.

    Args:
        path: the ``.onnx`` file.
        spec: the model's ``ModelSpec``.
        threads: intra-op threads (default: PyTorch's current setting, so both backends follow
            ``torch.set_num_threads``/``OMP_NUM_THREADS`` alike).
    """

    def __init__(self, path: str | os.PathLike, spec: Any, threads: int | None = None) -> None:
        super().__init__()
        ort = _require_onnxruntime()
        self.path = Path(path)
        self.spec = spec
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1  # why: one chain of convolutions, nothing to run beside it
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self._input: batch})[0])


def _name(model: nn.Module) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in card_of(model).name)[:40]


def exported_file(model: nn.Module, weights_hash: str | None = None) -> Path:
    """The cached float ONNX export of ``model`` (exported and parity-checked on first use)."""
    weights_hash = weights_hash or weights_sha256(model)
    path = onnx_cache_dir() / f"{_name(model)}-{weights_hash[:16]}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # why: the exporter writes atomically and checks the file against PyTorch (<= 1e-4); a
    # file that fails the check is removed, so the cache never serves one
    try:
        export_model(model.eval(), path, "onnx")
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return path


def calibration_digest(batch: np.ndarray) -> str:
    """SHA-256 of the normalised calibration batch: the int8 file's cache key beside the
    weights' hash (other crops give other activation ranges)."""
    return array_sha256(np.ascontiguousarray(batch))


def quantized_file(
    model: nn.Module, calibration: Sequence[np.ndarray], weights_hash: str | None = None
) -> Path:
    """The cached int8 (static, QDQ) version of ``model``'s ONNX export, calibrated on
    ``calibration`` (framed uint8 RGB crops at the model's input size).

    Raises:
        ValueError: no calibration crops.
    """
    if len(calibration) == 0:
        raise ValueError("int8 quantisation needs calibration face crops (got none)")
    batch = preprocess(list(calibration), model.spec, framed=True).numpy()
    weights_hash = weights_hash or weights_sha256(model)
    key = hashlib.sha256(f"{weights_hash}|{calibration_digest(batch)}".encode()).hexdigest()
    path = onnx_cache_dir() / f"{_name(model)}-{weights_hash[:16]}-int8-{key[:12]}.onnx"
    if path.is_file():
        return path
    source = exported_file(model, weights_hash)
    _require_onnxruntime()
    # why: the quantisation tool is part of onnxruntime (optional); imported only when used
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            chunks = range(0, len(batch), CALIBRATION_BATCH)
            self._feeds = iter([{"images": batch[i : i + CALIBRATION_BATCH]} for i in chunks])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # why: shape inference + graph optimisation first, as ONNX Runtime's quantiser advises
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        os.replace(out, path)  # why: same folder, so atomic: readers see no file or a whole one
    return path


def onnx_network(
    model: nn.Module,
    quantize: Quantize | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    threads: int | None = None,
) -> OnnxRuntimeNet:
    """``model`` as an ONNX Runtime module, exported (and quantised) once and then read from the
    cache.

    Args:
        model: an embedding network (carries ``spec``).
        quantize: None (float32) or ``"int8"`` (static int8; needs ``calibration``).
        calibration: framed uint8 RGB crops at the model's input size for ``"int8"``.
        threads: intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        BackendUnavailableError: ONNX Runtime (or the exporter's ``onnx``/``onnxscript``) is
            not installed.
        ValueError: an unknown ``quantize`` or int8 without calibration crops.
    """
    _require_onnxruntime()
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize {quantize!r}; choose one of {QUANTIZE_MODES}")
    for package in ("onnx", "onnxscript"):  # what torch's ONNX exporter imports
        if importlib.util.find_spec(package) is None:
            raise BackendUnavailableError(
                f"the onnxruntime backend exports the model with {package}, which is not "
                f"installed ({INSTALL_HINT})"
            )
    weights_hash = weights_sha256(model)
    if quantize == "int8":
        path = quantized_file(model, calibration or [], weights_hash)
    else:
        path = exported_file(model, weights_hash)
    try:
        net = OnnxRuntimeNet(path, model.spec, threads)
    except BackendUnavailableError:
        raise
    except Exception:  # a damaged cache file: export again, once
        path.unlink(missing_ok=True)
        path = (
            quantized_file(model, calibration or [], weights_hash)
            if quantize
            else exported_file(model, weights_hash)
        )
        net = OnnxRuntimeNet(path, model.spec, threads)
    net.card = card_of(model)
    return net
