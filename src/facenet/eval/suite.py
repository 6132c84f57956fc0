"""``facenet eval`` as a library call: a model + an image folder + a pairs file -> the LFW
protocol's report, with the optional robustness sweeps and identification, and the record of
how it was produced.

    >>> from facenet.eval.suite import EvalSettings, run_eval
    >>> run = run_eval(EvalSettings("inception_resnet_v1:casia-webface", "aligned/lfw_box160",
    ...                             "pairs.txt"))
    >>> run.evaluation.report.summary()

How faces are cropped is decided by ``facenet.eval.alignment.resolve_alignment``, the same way
for the command and for library calls (``facenet.eval.protocol.evaluate_pairs``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facenet.data.images import is_image_file
from facenet.data.lfw import Pairs, read_pairs
from facenet.eval.alignment import Alignment, make_aligner, resolve_alignment
from facenet.eval.embedding import DEFAULT_CENTER_FRACTION, TorchEmbedder, embed_paths
from facenet.eval.identification import (
    IdentificationReport,
    evaluate_identification,
    gallery_probe_split,
)
from facenet.eval.int8 import (
    Int8Result,
    calibration_images,
    embedding_codec,
)
from facenet.eval.peers import PUBLISHED_LFW, is_peer, load_peer
from facenet.eval.protocol import (
    PairsEvaluation,
    evaluate_mixed_pairs,
    evaluate_pairs,
    verify_embeddings,
)
from facenet.eval.robustness import LABELS, SweepResult, run_sweep
from facenet.models.card import card_of
from facenet.models.loading import load_model
from facenet.models.pretrained import cache_dir


def default_cache() -> Path:
    """The embedding cache: ``embeddings`` in facenet's cache folder (``$FACENET_CACHE``, else
    ``~/.cache/facenet``), read when a run starts."""
    return cache_dir() / "embeddings"


Progress = Callable[[int, int], None]


@dataclass
class EvalSettings:
    """What ``facenet eval`` takes (its options, one field each)."""

    model: str
    data: str | os.PathLike
    pairs: str | os.PathLike
    align: str | None = None  # None: the folder's own mode (see ``resolve_alignment``)
    center_fraction: float | None = None  # for align="center"; None: DEFAULT_CENTER_FRACTION
    detector: str | None = None
    flip: bool = False
    flip_mode: str = "mean"
    distance: str = "l2"
    far: float = 1e-3
    sweeps: tuple[str, ...] = ()  # "jpeg", "size"
    identification: bool = False
    batch_size: int = 64
    backend: str = "torch"  # "torch" (batch norm folded) or "onnxruntime" (our models only)
    # "int8": the network in ONNX Runtime, calibrated on CALIBRATION_IMAGES images
    quantize_network: str | None = None
    # "int8": also score the pairs with 128-byte embeddings (``facenet.quantize.Int8Codec``)
    quantize: str | None = None
    # harmonic embeddings: the pairs' left images embedded by this model (a gallery enrolled
    # with it), the right ones by ``model`` (its probes); None: one model for both
    gallery_model: str | None = None
    # None: no cache; default: default_cache() when the run starts
    cache_dir: str | os.PathLike | None = field(default_factory=default_cache)

    def command_line(self, align: str | None = None) -> str:
        """The options that change results, as a reproducible command line."""
        align = align or self.align or "center"
        parts = ["facenet eval", f"--model {self.model}", f"--data {self.data}"]
        if self.gallery_model:
            parts.append(f"--gallery-model {self.gallery_model}")
        parts.append(f"--pairs {self.pairs}")
        if align != "center":
            parts.append(f"--align {align}")
        if self.center_fraction:
            parts.append(f"--center-fraction {self.center_fraction}")
        if self.detector:
            parts.append(f"--detector {self.detector}")
        if self.flip:
            parts.append(f"--flip --flip-mode {self.flip_mode}")
        if self.distance != "l2":
            parts.append(f"--distance {self.distance}")
        if self.far != 1e-3:
            parts.append(f"--far {self.far:g}")
        parts += [f"--sweep {k}" for k in dict.fromkeys(self.sweeps)]
        if self.identification:
            parts.append("--identification")
        if self.backend != "torch":
            parts.append(f"--backend {self.backend}")
        if self.quantize_network:
            parts.append(f"--quantize-network {self.quantize_network}")
        if self.quantize:
            parts.append(f"--quantize {self.quantize}")
        return " ".join(parts)


@dataclass
class EvalRun:
    """One evaluation: the verification result, the optional parts, and how it was made."""

    evaluation: PairsEvaluation
    alignment: Alignment  # how faces were cropped, and why
    meta: dict[str, Any]  # model, data, protocol, alignment, timings, the command line
    sweeps: dict[str, SweepResult] = field(default_factory=dict)
    identification: IdentificationReport | None = None
    notes: list[str] = field(default_factory=list)  # caveats of the result, for people
    int8: Int8Result | None = None  # the pairs scored with 128-byte embeddings (--quantize)

    def extra(self) -> dict[str, Any]:
        """The optional parts as JSON-ready dicts (``sweeps``, ``identification``)."""
        out: dict[str, Any] = {}
        if self.sweeps:
            out["sweeps"] = {k: s.to_dict() for k, s in self.sweeps.items()}
        if self.identification is not None:
            out["identification"] = self.identification.to_dict()
        if self.int8 is not None:
            out["int8"] = {
                "bytes_per_face": self.int8.dim,
                "float32_bytes_per_face": 4 * self.int8.dim,
                "codec": self.int8.source,
                "verification": self.int8.report.to_dict(include_roc=False),
            }
        return out

    def sections(self) -> dict[str, str]:
        """Markdown sections for the report, titled."""
        out: dict[str, str] = {}
        published = self.meta.get("published_lfw")
        if published is not None:
            out["Published figure for this peer"] = (
                "| peer | reported LFW accuracy |\n|---|---|\n"
                f"| {self.meta['model']} | {published} |"
            )
        for kind, sweep in self.sweeps.items():
            out[f"Robustness: {LABELS[kind]}"] = sweep.markdown()
        if self.identification is not None:
            out["Identification (LFW gallery/probe split)"] = self.identification.markdown()
        if self.int8 is not None:
            out["128-byte embeddings (int8)"] = self.int8.markdown(self.evaluation.report)
        return out


def load_evaluated_model(ref: str) -> Any:
    """A peer (``dlib-resnet``) or one of our models, by what the user typed."""
    return load_peer(ref) if is_peer(ref) else load_model(ref)


def run_eval(
    settings: EvalSettings,
    model: Any = None,
    progress: Callable[[str], Progress | None] | None = None,
    on_alignment: Callable[[Alignment], None] | None = None,
) -> EvalRun:
    """Run the evaluation ``settings`` describe.

    Args:
        settings: the options.
        model: the model object when the caller already loaded it (else ``settings.model`` is).
        progress: ``progress(label)`` gives a ``(done, total)`` callback for each embedding pass.
        on_alignment: told how faces will be cropped (and why) before any embedding starts.

    Raises:
        FileNotFoundError, ProtocolFileError, ImageError, EmbeddingError, ValueError: bad input,
        each naming the file and the problem.
    """
    progress = progress or (lambda label: None)
    pairs = read_pairs(settings.pairs)
    data = Path(settings.data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: image folder not found")
    model = load_evaluated_model(settings.model) if model is None else model
    peer = is_peer(settings.model)
    alignment = resolve_alignment(data, settings.align, settings.detector, peer)
    if on_alignment is not None:
        on_alignment(alignment)
    fraction = settings.center_fraction or DEFAULT_CENTER_FRACTION
    embed_kw: dict[str, Any] = {
        "batch_size": settings.batch_size,
        "flip": settings.flip,
        "flip_mode": settings.flip_mode,
        "align": "center" if peer else alignment.align,
        "center_fraction": fraction,
        "cache_dir": settings.cache_dir,
    }
    embed_kw |= _aligner_kw(alignment, model)
    embedder = model
    if not peer:
        # why: one inference-ready network for the whole run (pairs, sweeps, identification)
        embedder = _torch_embedder(
            model,
            alignment,
            fraction,
            embed_kw,
            settings.backend,
            quantize=settings.quantize_network,
            calibration=calibration_images(data, pairs) if settings.quantize_network else None,
        )
        embedder.network  # noqa: B018 - build it now: a missing backend fails before any work
    elif settings.backend != "torch" or settings.quantize_network:
        raise ValueError("--backend and --quantize-network apply to our models, not to peers")
    if settings.gallery_model:
        ev = _mixed_pairs(settings, embedder, pairs, data, alignment, fraction, progress, embed_kw)
    else:
        ev = evaluate_pairs(
            embedder,
            pairs,
            data,
            settings.distance,
            settings.far,
            progress=progress("embedding"),
            **embed_kw,
        )
    run = EvalRun(ev, alignment, _meta(settings, model, pairs, alignment, ev, peer, fraction))
    run.notes += list(ev.report.notes)
    if settings.quantize:
        recorded = {} if peer else card_of(model).int8
        codec, source = embedding_codec(
            recorded, embedder, data, pairs, int(ev.left.shape[1]), progress, embed_kw
        )
        _, report = verify_embeddings(
            codec.roundtrip(ev.left),
            codec.roundtrip(ev.right),
            pairs.issame,
            pairs.folds,
            settings.distance,
            settings.far,
        )
        run.int8 = Int8Result(report, codec.dim, source)
    if peer and getattr(model, "n_fallback", 0):
        run.notes.append(f"HOG found no face in {model.n_fallback} computed images (centre box)")
    for kind in dict.fromkeys(settings.sweeps):
        run.sweeps[kind] = run_sweep(
            embedder,
            pairs,
            data,
            kind,
            distance=settings.distance,
            far_target=settings.far,
            baseline=ev.report,
            progress=progress(f"sweep {kind}"),
            **embed_kw,
        )
    if settings.identification:
        metric = "cosine" if settings.distance.startswith("cosine") else "l2"
        run.identification = identification_on_folder(
            embedder, data, settings.far, metric, progress("identification"), **embed_kw
        )
    return run


def _aligner_kw(alignment: Alignment, model: Any) -> dict[str, Any]:
    """``embed_paths``' on-the-fly aligner for ``model`` (its crop size), when the folder is
    aligned on the fly; else nothing."""
    if not alignment.detector:
        return {}
    aligner, name = make_aligner(alignment.detector, alignment.align, model)
    return {"aligner": aligner, "aligner_name": name}


def _torch_embedder(
    model: Any,
    alignment: Alignment,
    fraction: float,
    aligner_kw: dict[str, Any],
    backend: str,
    **network: Any,
) -> TorchEmbedder:
    """One of our models as the run embeds it: its crops (``alignment``), its aligner, its
    inference network (``backend``; ``network``: int8 quantisation and calibration)."""
    return TorchEmbedder(
        model,
        align=alignment.align,
        center_fraction=fraction,
        aligner=aligner_kw.get("aligner"),
        backend=backend,  # type: ignore[arg-type]
        **network,
    )


def _mixed_pairs(
    settings: EvalSettings,
    probe: Any,
    pairs: Pairs,
    data: Path,
    alignment: Alignment,
    fraction: float,
    progress: Callable[[str], Progress | None],
    embed_kw: dict[str, Any],
) -> PairsEvaluation:
    """The pairs with their left images embedded by ``settings.gallery_model`` and their right
    images by ``probe`` (the evaluated model), each in its own framing."""
    alone = {"--sweep": settings.sweeps, "--identification": settings.identification}
    alone |= {"--quantize": settings.quantize, "a peer": is_peer(settings.model)}
    # why: only the probe's network would be quantised, while the report said int8 for both
    alone["--quantize-network"] = settings.quantize_network
    clash = [k for k, v in alone.items() if v]
    if clash or is_peer(settings.gallery_model or ""):
        raise ValueError(
            "--gallery-model scores pairs across two of our models; it does not combine with "
            + ", ".join(clash or ["a peer gallery model"])
        )
    gallery = load_model(settings.gallery_model)
    dims = int(gallery.spec.embedding_dim), int(getattr(probe, "spec", gallery.spec).embedding_dim)
    if dims[0] != dims[1]:  # why: said now, not after embedding every gallery image
        raise ValueError(
            f"--gallery-model {settings.gallery_model} embeds in {dims[0]} dimensions, --model "
            f"{settings.model} in {dims[1]}: their embeddings cannot be compared"
        )
    gallery_kw = _aligner_kw(alignment, gallery)
    embedder = _torch_embedder(gallery, alignment, fraction, gallery_kw, settings.backend)
    return evaluate_mixed_pairs(
        embedder,
        probe,
        pairs,
        data,
        settings.distance,
        settings.far,
        progress=progress("embedding"),
        gallery_kwargs=gallery_kw,
        **embed_kw,
    )


def _meta(
    settings: EvalSettings,
    model: Any,
    pairs: Pairs,
    alignment: Alignment,
    ev: PairsEvaluation,
    peer: bool,
    fraction: float,
) -> dict[str, Any]:
    if peer:
        setting = "own HOG detection + 5-point alignment"
    else:
        setting = f"align={alignment.align}"
        if alignment.align == "center":
            setting += f" (fraction {fraction})"
        if alignment.detector:
            setting += f", detector {alignment.detector}"
    setting += f", {settings.distance}"
    if settings.flip:
        setting += f", flip ({settings.flip_mode})"
    if not peer:
        q = settings.quantize_network
        setting += f", {settings.backend}" + (f" {q}" if q else "")
    meta: dict[str, Any] = {
        "model": settings.model,
        "gallery_model": settings.gallery_model,
        "model_identity": model.identity if peer else card_of(model).name,
        "data": str(settings.data),
        "pairs": str(settings.pairs),
        "pairs_name": Path(settings.pairs).name,
        "folds": pairs.fold_source,
        "person_disjoint_folds": pairs.person_disjoint,
        "align": alignment.align,
        "distance": settings.distance,
        "flip": settings.flip,
        "backend": settings.backend,
        "quantize_network": settings.quantize_network,
        "quantize": settings.quantize,
        "aligned_folder_config": alignment.folder_config,
        "setting": setting,
        "images": ev.stats.n_images,
        "images_from_cache": ev.stats.n_cached,
        "images_computed": ev.stats.n_computed,
        "embedding_seconds_this_run": round(ev.stats.seconds, 1),
        "command": settings.command_line(alignment.align if not peer else "center"),
    }
    if peer and settings.model in PUBLISHED_LFW:
        meta["published_lfw"] = PUBLISHED_LFW[settings.model]
    return meta


def identification_on_folder(
    model: Any,
    data: str | os.PathLike,
    far: float = 1e-3,
    metric: str = "l2",
    progress: Progress | None = None,
    **embed_kw: Any,
) -> IdentificationReport:
    """Closed/open-set identification over every image under ``data`` (folder per identity),
    split into gallery and probes as the LFW identification protocol does."""
    data = Path(data)
    paths = sorted(p for p in data.glob("*/*") if p.is_file() and is_image_file(p))
    if not paths:
        raise FileNotFoundError(f"{data}: no images in identity folders")
    labels = [p.parent.name for p in paths]
    split = gallery_probe_split(labels, [str(p.relative_to(data)) for p in paths])
    emb = embed_paths(model, paths, progress=progress, **embed_kw)
    return evaluate_identification(
        emb[split.gallery],
        [labels[i] for i in split.gallery],
        emb[split.probes],
        [labels[i] for i in split.probes],
        emb[split.unknown],
        far_targets=(far, 1e-2, 1e-1),
        metric=metric,
    )
