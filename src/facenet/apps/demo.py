"""``facenet demo``: the whole system on a sample of LFW in a few minutes on a CPU.

1. align: detect and crop a sample of LFW photos (crops saved under ``OUT/aligned``);
2. verify: a few same and different pairs from LFW's own ``pairs.txt``;
3. identify: enrol a gallery (SQLite + FAISS), then identify probes of enrolled people and of
   people never enrolled, who must come back as "unknown";
4. cluster: a mixed folder of photos of several people, grouped without labels;
5. ``OUT/index.html``: everything above, with the face crops.

Finding and downloading LFW: ``facenet.apps.demo_lfw``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facenet.apps.cluster import cluster_embeddings
from facenet.apps.cluster_folder import write_clusters
from facenet.apps.demo_lfw import DataNotFound, find_lfw, how_to_get_lfw, lfw_pairs, lfw_people
from facenet.apps.demo_page import write_page
from facenet.apps.embedder import Embedder, Face, subject_index
from facenet.apps.gallery import FaceRecord, Gallery, Identification
from facenet.apps.results import VerifyResult
from facenet.apps.thresholds import DEFAULT_MODEL, DEFAULT_OPERATING_POINT, OperatingPoint
from facenet.apps.verify import verify_faces
from facenet.eval.clustering import clustering_metrics
from facenet.eval.verification import calibrate_thresholds
from facenet.models.card import card_of
from facenet.models.loading import load_model
from facenet.utils import UnsafeOutputError, write_json


@dataclass(frozen=True)
class DemoConfig:
    """How big the demo is (defaults take a few minutes on a 2-core CPU)."""

    gallery_people: int = 20  # people enrolled
    enroll_images: int = 3  # photos enrolled per person
    probe_images: int = 3  # further photos of each enrolled person, to identify
    unknown_people: int = 10  # people never enrolled, each probed with 2 photos
    cluster_people: int = 8  # people in the mixed folder ...
    cluster_images: int = 8  # ... with this many photos each,
    cluster_distractors: int = 8  # plus single photos of other people
    pairs: int = 4  # same and different pairs each, from pairs.txt
    seed: int = 0


@dataclass
class DemoResult:
    html: Path
    summary: dict[str, Any] = field(default_factory=dict)


DEMO_MARKER = ".facenet-demo"


def claim_demo_folder(out: Path) -> None:
    """Make ``out`` the demo's folder, or refuse: the demo replaces its own sub-folders whole, so
    it only ever writes into a new or empty folder, or one an earlier demo run made (it holds
    ``.facenet-demo``).

    Raises:
        UnsafeOutputError: ``out`` is a file, or a non-empty folder the demo did not make.
    """
    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"{out}: is a file, not a folder")
    marker = out / DEMO_MARKER
    if out.is_dir() and not marker.is_file() and any(out.iterdir()):
        raise UnsafeOutputError(
            f"{out}: not empty and not made by facenet demo (no {DEMO_MARKER}); the demo "
            "replaces its sub-folders, so give it a new or empty folder (--out DIR)"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("this folder was made by `facenet demo`, which may replace its contents\n")


@dataclass(frozen=True)
class DemoSample:
    """Which LFW photos play which part (drawn with the demo's seed)."""

    pairs: list[tuple[Path, Path, bool]]  # verification pairs from pairs.txt: (a, b, same)
    enroll: dict[str, list[Path]]  # gallery person -> photos enrolled
    probes: list[tuple[Path, str | None]]  # (photo, enrolled person; None: never enrolled)
    mixed: list[tuple[Path, str]]  # (photo, person) of the folder to cluster
    mixed_people: int  # people in the mixed folder
    used: set[str]  # people in the gallery, the mixed folder or the pairs

    def photos_to_align(self) -> list[str]:
        """Every photo of the gallery, the probes and the pairs, once, sorted."""
        return sorted(
            {str(p) for ps in self.enroll.values() for p in ps}
            | {str(p) for p, _ in self.probes}
            | {str(q) for a, b, _ in self.pairs for q in (a, b)}
        )


def choose_sample(
    images: Path, pairs_file: Path | None, config: DemoConfig, rng: np.random.Generator
) -> DemoSample:
    """The demo's people: a gallery and probes of people with enough photos, strangers never
    enrolled, a mixed folder of other people plus single-photo distractors, and the pairs."""
    people = lfw_people(images)
    pairs = lfw_pairs(pairs_file, images, config.pairs)
    in_pairs = {p.parent.name for a, b, _ in pairs for p in (a, b)}
    rich = [n for n, f in people.items() if len(f) >= config.enroll_images + config.probe_images]
    rich = [n for n in rng.permutation(rich).tolist() if n not in in_pairs]
    gallery_people = rich[: config.gallery_people]
    cluster_pool = [
        n for n in rich[config.gallery_people :] if len(people[n]) >= config.cluster_images
    ]
    cluster_people = cluster_pool[: config.cluster_people]
    used = set(gallery_people) | set(cluster_people) | in_pairs
    others = [n for n in rng.permutation(sorted(people)).tolist() if n not in used]
    unknown_people = [n for n in others if len(people[n]) >= 2][: config.unknown_people]
    distractors = [n for n in others if n not in unknown_people][: config.cluster_distractors]
    enroll = {n: people[n][: config.enroll_images] for n in gallery_people}
    probes: list[tuple[Path, str | None]] = [
        (p, n)
        for n in gallery_people
        for p in people[n][config.enroll_images : config.enroll_images + config.probe_images]
    ]
    probes += [(p, None) for n in unknown_people for p in people[n][:2]]
    mixed = [(p, n) for n in cluster_people for p in people[n][: config.cluster_images]]
    mixed += [(people[n][0], n) for n in distractors]
    return DemoSample(pairs, enroll, probes, mixed, len(cluster_people) + len(distractors), used)


def choose_model(model_ref: str | None, log: Any = print) -> tuple[Any, str]:
    """The pretrained model if it loads, else ``model_ref``; says which and why."""
    refs = [model_ref] if model_ref else [DEFAULT_MODEL]
    for ref in refs:
        try:
            return load_model(ref), ref
        except Exception as e:  # noqa: BLE001 - we explain and fall back
            log(f"cannot load {ref}: {e}")
    log("falling back to an untrained 'tiny' model: the demo runs, but its answers are random")
    return load_model("tiny"), "tiny"


def run_demo(
    data: str | os.PathLike,
    out: str | os.PathLike,
    model_ref: str | None = None,
    config: DemoConfig = DemoConfig(),
    detector: str = "mtcnn",
    log: Any = print,
) -> DemoResult:
    """Run the demo on the LFW copy under ``data``; writes ``out/index.html``.

    Raises:
        DataNotFound: no LFW under ``data`` (the message says how to get it).
    """
    found = find_lfw(data)
    if found is None:
        raise DataNotFound(how_to_get_lfw(data))
    images, pairs_file = found
    out = Path(out)
    claim_demo_folder(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    rng = np.random.default_rng(config.seed)
    sample = choose_sample(images, pairs_file, config, rng)

    model, ref = choose_model(model_ref, log)
    embedder = Embedder(model, detector=detector, ref=ref)
    log(f"model: {ref} ({embedder.embedding_dim}-d); detector: {detector}")
    thresholds, threshold_note = _thresholds(embedder, model, images, pairs_file, sample, timings)
    t_verify = thresholds.get("accuracy", 1.0)
    t_open = thresholds.get("far_1e-3", t_verify)
    log(f"thresholds: {thresholds} ({threshold_note})")

    t0 = time.perf_counter()
    all_paths = sample.photos_to_align()
    faces, no_face = _align_and_embed(embedder, all_paths, images, out / "aligned")
    timings["align+embed"] = time.perf_counter() - t0
    log(f"aligned and embedded {len(faces)} of {len(all_paths)} photos -> {out / 'aligned'}")

    verifications = _verify_pairs(sample.pairs, faces, t_verify)
    t0 = time.perf_counter()
    identified = _identify(out / "gallery", sample, faces, embedder, thresholds, t_open)
    timings["gallery"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # why: the operating point `facenet cluster` uses (README: clustering a real collection)
    t_cluster = thresholds.get(DEFAULT_OPERATING_POINT, t_verify)
    clustering = _cluster_mixed(out, sample, embedder, t_cluster, rng)
    timings["cluster"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    summary = {
        "model": ref,
        "thresholds": thresholds,
        "threshold_note": threshold_note,
        "photos_aligned": len(faces),
        "photos_without_face": no_face,
        "verification": [
            dict(
                a=v.images[0].image, b=v.images[1].image, distance=v.distance, same=v.same, truth=s
            )
            for v, s in verifications
        ],
        "identification": _identification_summary(sample, identified, t_open),
        "clustering": clustering,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    page = write_page(out, summary, verifications, identified, images)
    write_json(out / "summary.json", summary)
    return DemoResult(page, summary)


def _thresholds(
    embedder: Embedder,
    model: Any,
    images: Path,
    pairs_file: Path | None,
    sample: DemoSample,
    timings: dict[str, float],
) -> tuple[dict[str, float], str]:
    """The model's calibrated thresholds, else ones fitted now on LFW View 1 training pairs of
    people outside the demo (recorded on the model card); and a note saying which."""
    thresholds = embedder.thresholds
    if thresholds or pairs_file is None:
        return thresholds, "shipped with the model"
    dev = pairs_file.parent / "pairsDevTrain.txt"
    t0 = time.perf_counter()
    thresholds = _calibrate_on_view1(
        embedder, images, dev if dev.is_file() else pairs_file, sample.used
    )
    card_of(model).set_thresholds(thresholds)
    timings["calibrate"] = time.perf_counter() - t0
    return thresholds, "fitted now on 150+150 LFW View 1 training pairs (the model ships none)"


def _calibrate_on_view1(
    embedder: Any, images: Path, pairs_file: Path, exclude: set[str], n: int = 150
) -> dict[str, float]:
    """Thresholds fitted on ``n`` same + ``n`` different View 1 training pairs of people not in
    the demo (used only when the model ships without calibrated thresholds)."""
    pairs = [
        p
        for p in lfw_pairs(pairs_file, images, 10 * n)
        if p[0].parent.name not in exclude and p[1].parent.name not in exclude
    ]
    same = [p for p in pairs if p[2]][:n]
    diff = [p for p in pairs if not p[2]][:n]
    paths = sorted({str(q) for a, b, _ in same + diff for q in (a, b)})
    emb = {}
    for r in embedder.embed_files(paths, subject_only=True):
        if r.faces:
            emb[r.path] = r.faces[0].embedding
    d, y = [], []
    for a, b, s in same + diff:
        if str(a) in emb and str(b) in emb:
            d.append(float(((emb[str(a)] - emb[str(b)]) ** 2).sum()))
            y.append(s)
    return calibrate_thresholds(np.array(d), np.array(y))


def _align_and_embed(
    embedder: Embedder, paths: list[str], images: Path, aligned: Path
) -> tuple[dict[str, Face], list[str]]:
    """Each photo's main face, embedded once, its crop saved under ``aligned`` (as under
    ``images``); and the photos without a face."""
    faces: dict[str, Face] = {}
    no_face: list[str] = []
    for r in embedder.embed_files(paths, subject_only=True, progress=True):
        if not r.faces:
            no_face.append(r.path)
            continue
        face = r.faces[0]
        faces[r.path] = face
        rel = Path(r.path).relative_to(images).with_suffix(".png")
        (aligned / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face.crop).save(aligned / rel)
    return faces, no_face


def _verify_pairs(
    pairs: list[tuple[Path, Path, bool]], faces: dict[str, Face], threshold: float
) -> list[tuple[VerifyResult, bool]]:
    """(verdict, truth) of every pair whose two photos have a face (LFW's pairs are balanced:
    the best-accuracy operating point is the one to score them at)."""
    op = OperatingPoint(threshold, "accuracy", "model accuracy")
    return [
        (verify_faces(faces[str(a)], faces[str(b)], op), same)
        for a, b, same in pairs
        if str(a) in faces and str(b) in faces
    ]


def _identify(
    gdir: Path,
    sample: DemoSample,
    faces: dict[str, Face],
    embedder: Embedder,
    thresholds: dict[str, float],
    threshold: float,
) -> list[tuple[Path, str | None, Identification]]:
    """Enrol the gallery people into a fresh gallery at ``gdir``, then identify every probe
    with a face at the open-set ``threshold``: (probe, truth, answer)."""
    if gdir.exists():
        shutil.rmtree(gdir)
    with Gallery(gdir) as gallery:
        for name, paths in sample.enroll.items():
            recs = [
                FaceRecord(faces[str(p)].embedding, str(p), 0, faces[str(p)].box)
                for p in paths
                if str(p) in faces
            ]
            if recs:
                gallery.enroll(name, recs, embedder.fingerprint, thresholds)
        usable = [(p, n) for p, n in sample.probes if str(p) in faces]
        answers = gallery.identify(
            np.stack([faces[str(p)].embedding for p, _ in usable]), threshold, k=3
        )
    return [(p, n, a) for (p, n), a in zip(usable, answers, strict=True)]


def _identification_summary(
    sample: DemoSample,
    identified: list[tuple[Path, str | None, Identification]],
    threshold: float,
) -> dict[str, Any]:
    known = [(n, a) for _, n, a in identified if n is not None]
    unknown = [(n, a) for _, n, a in identified if n is None]
    return {
        "enrolled_people": len(sample.enroll),
        "known_probes": len(known),
        "rank1_correct": sum(a.matches[0].name == n for n, a in known if a.matches),
        "accepted_correct": sum(a.name == n for n, a in known),
        "unknown_probes": len(unknown),
        "unknown_rejected": sum(not a.known for _, a in unknown),
        "threshold": threshold,
    }


def _link_mixed_folder(
    mixed_dir: Path, sample: DemoSample, rng: np.random.Generator
) -> dict[str, str]:
    """A fresh folder of links to the mixed photos in a random order; link -> true person."""
    if mixed_dir.exists():
        shutil.rmtree(mixed_dir)
    mixed_dir.mkdir()
    truth_of: dict[str, str] = {}
    shuffled = [sample.mixed[j] for j in rng.permutation(len(sample.mixed))]
    for i, (p, n) in enumerate(shuffled):
        link = mixed_dir / f"photo_{i:03d}{p.suffix}"
        os.symlink(p.resolve(), link)
        truth_of[str(link)] = n
    return truth_of


def _cluster_mixed(
    out: Path, sample: DemoSample, embedder: Embedder, threshold: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Cluster every face of every photo of the mixed folder (``out/mixed``) into
    ``out/clusters``; the main faces are scored against the true names."""
    truth_of = _link_mixed_folder(out / "mixed", sample, rng)
    c_paths, c_boxes, c_idx, c_emb, c_subject, c_truth = [], [], [], [], [], []
    for r in embedder.embed_files(sorted(truth_of), progress=True):
        if not r.faces:
            continue
        img_shape = Image.open(r.path).size[::-1]
        main = subject_index(r.faces, img_shape)
        for j, f in enumerate(r.faces):
            c_paths.append(r.path)
            c_boxes.append(f.box)
            c_idx.append(f.face_index)
            c_emb.append(f.embedding)
            c_subject.append(j == main)
            c_truth.append(truth_of[r.path])
    emb = np.array(c_emb, np.float32)
    # why: a folder of ~70 photos takes the small-collection minimum cluster size
    labels = cluster_embeddings(emb, "agglomerative", threshold=threshold, min_cluster_size=3)
    cdir = out / "clusters"
    if cdir.exists():
        shutil.rmtree(cdir)
    written = write_clusters(
        cdir, c_paths, np.array(c_boxes), c_idx, labels, title="facenet demo: a mixed folder"
    )
    sub = np.array(c_subject)
    report = clustering_metrics(np.array(c_truth)[sub], labels[sub])
    return {
        "faces": written.n_faces,
        "clusters": written.n_clusters,
        "people": sample.mixed_people,
        "threshold": threshold,
        "unclustered": written.n_singletons,
        **{
            k: v
            for k, v in report.to_dict().items()
            if k.endswith(("f1", "_f", "precision", "recall"))
        },
    }
