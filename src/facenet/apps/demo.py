"""``facenet demo``: the whole system on a sample of LFW in a few minutes on a CPU.

1. align: detect and crop a sample of LFW photos (crops saved under ``OUT/aligned``);
2. verify: a few same and different pairs from LFW's own ``pairs.txt``;
3. identify: enrol a gallery (SQLite + FAISS), then identify probes of enrolled people and of
   people never enrolled, who must come back as "unknown";
4. cluster: a mixed folder of photos of several people, grouped without labels;
5. ``OUT/index.html``: everything above, with the face crops.

Data: ``--data DIR`` or ``$FACENET_DATA`` (or ``../shared/data``), holding ``lfw/`` (or an LFW
folder itself). With no data, ``how_to_get_lfw`` explains, and ``download_lfw`` fetches LFW from
scikit-learn's public figshare mirror (checksummed), or accepts a folder you already have.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facenet.models.card import card_of

# why: scikit-learn's fetch_lfw_* mirror (figshare); the UMass site is often unreachable.
# The SHA-256 sums are scikit-learn's; pairs.txt's equals our copy of LFW's pairs.txt.
LFW_FILES: dict[str, tuple[str, str]] = {
    "lfw-funneled.tgz": (
        "https://ndownloader.figshare.com/files/5976015",
        "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
    ),
    "pairs.txt": (
        "https://ndownloader.figshare.com/files/5976006",
        "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    ),
}
# folders that hold LFW's <Name>/<Name>_NNNN.jpg, best first
LFW_IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw")


class DataNotFound(FileNotFoundError):
    """No LFW under the given folder; ``str(e)`` says how to get it."""


def find_lfw(data: str | os.PathLike | None) -> tuple[Path, Path | None] | None:
    """``(image folder, pairs.txt or None)`` of an LFW copy under ``data`` (``data/lfw/...``,
    ``data/...``, or ``data`` itself being the image folder), else None."""
    if data is None:
        return None
    data = Path(data)
    for base in (data / "lfw", data):
        for name in LFW_IMAGE_FOLDERS:
            images = base / name
            if images.is_dir() and any(images.iterdir()):
                pairs = base / "pairs.txt"
                return images, pairs if pairs.is_file() else None
    # the image folder itself: <Name>/<Name>_0001.jpg
    if data.is_dir():
        for sub in data.iterdir():
            if sub.is_dir() and (sub / f"{sub.name}_0001.jpg").is_file():
                pairs = data.parent / "pairs.txt"
                return data, pairs if pairs.is_file() else None
    return None


def how_to_get_lfw(data: str | os.PathLike | None) -> str:
    where = f"under {data}" if data else "(no --data given, $FACENET_DATA unset, no ../shared/data)"
    return (
        f"No LFW photos found {where}.\n"
        "The demo needs Labeled Faces in the Wild (13,233 photos of 5,749 people, ~240 MB):\n"
        "  * with internet:   facenet demo --download --data ~/facenet-data\n"
        "    (fetches lfw-funneled.tgz + pairs.txt from scikit-learn's figshare mirror,\n"
        "     SHA-256 checked: " + LFW_FILES["lfw-funneled.tgz"][0] + ")\n"
        "  * already have it: facenet demo --data DIR   (DIR/lfw/lfw-deepfunneled/<Name>/..., \n"
        "    DIR/lfw-funneled/..., or the image folder itself), or set FACENET_DATA=DIR.\n"
        "LFW is for research only; its authors warn it is no evidence of fitness for commercial use."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_lfw(
    dest: str | os.PathLike,
    files: dict[str, tuple[str, str]] = LFW_FILES,
    quiet: bool = False,
) -> Path:
    """LFW under ``dest/lfw``: reuse what is there, else download, check SHA-256, extract.

    Args:
        dest: data folder; the result is ``dest/lfw/<image folder>`` and ``dest/lfw/pairs.txt``.
        files: name -> (url, sha256); tests pass ``file://`` URLs.

    Returns:
        the image folder.

    Raises:
        ValueError: a download whose checksum does not match (the file is deleted).
        OSError / urllib.error.URLError: no network or a failed transfer.
    """
    found = find_lfw(dest)
    if found is not None and found[1] is not None:
        return found[0]
    root = Path(dest) / "lfw"
    root.mkdir(parents=True, exist_ok=True)
    for name, (url, sha) in files.items():
        target = root / name
        if name.endswith(".tgz") and find_lfw(dest) is not None:
            continue  # images already extracted
        if not (target.is_file() and _sha256(target) == sha):
            part = root / (name + ".part")
            if not quiet:
                print(f"downloading {url} -> {target}")
            with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:  # noqa: S310
                shutil.copyfileobj(r, f, 1 << 20)
            got = _sha256(part)
            if got != sha:
                part.unlink()
                raise ValueError(f"{url}: SHA-256 {got} does not match the expected {sha}")
            os.replace(part, target)
        if name.endswith(".tgz"):
            if not quiet:
                print(f"extracting {target}")
            with tarfile.open(target) as tar:
                try:
                    tar.extractall(root, filter="data")
                except TypeError:  # Python < 3.12 without extraction filters
                    tar.extractall(root)  # noqa: S202
    found = find_lfw(dest)
    if found is None:
        raise ValueError(f"{root}: downloaded archive did not contain an LFW image folder")
    return found[0]


# --------------------------------------------------------------------------- the demo


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


def _people(images: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".png", ".jpeg"))
        if files:
            out[d.name] = files
    return out


def _pairs(pairs_file: Path | None, images: Path, n: int) -> list[tuple[Path, Path, bool]]:
    """The first ``n`` same and ``n`` different pairs of ``pairs.txt`` whose photos exist."""
    if pairs_file is None:
        return []
    same, diff = [], []
    for line in pairs_file.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            a = images / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"
            b = images / f[0] / f"{f[0]}_{int(f[2]):04d}.jpg"
            if len(same) < n and a.is_file() and b.is_file():
                same.append((a, b, True))
        elif len(f) == 4:
            a = images / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"
            b = images / f[2] / f"{f[2]}_{int(f[3]):04d}.jpg"
            if len(diff) < n and a.is_file() and b.is_file():
                diff.append((a, b, False))
        if len(same) >= n and len(diff) >= n:
            break
    return same + diff


def choose_model(model_ref: str | None, log: Any = print) -> tuple[Any, str]:
    """The pretrained model if it loads, else ``model_ref``; says which and why."""
    from facenet.apps.embedder import DEFAULT_MODEL
    from facenet.models.loading import load_model

    refs = [model_ref] if model_ref else [DEFAULT_MODEL]
    for ref in refs:
        try:
            return load_model(ref), ref
        except Exception as e:  # noqa: BLE001 - we explain and fall back
            log(f"cannot load {ref}: {e}")
    log("falling back to an untrained 'tiny' model: the demo runs, but its answers are random")
    return load_model("tiny"), "tiny"


def _calibrate_on_view1(
    embedder: Any, images: Path, pairs_file: Path, exclude: set[str], n: int = 150
) -> dict[str, float]:
    """Thresholds fitted on ``n`` same + ``n`` different View 1 training pairs of people not in
    the demo (used only when the model ships without calibrated thresholds)."""
    from facenet.eval.verification import calibrate_thresholds

    pairs = [
        p
        for p in _pairs(pairs_file, images, 10 * n)
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


DEMO_MARKER = ".facenet-demo"


def claim_demo_folder(out: Path) -> None:
    """Make ``out`` the demo's folder, or refuse: the demo replaces its own sub-folders whole, so
    it only ever writes into a new or empty folder, or one an earlier demo run made (it holds
    ``.facenet-demo``).

    Raises:
        UnsafeOutputError: ``out`` is a file, or a non-empty folder the demo did not make.
    """
    from facenet.utils import UnsafeOutputError

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
    from PIL import Image

    from facenet.apps.cluster import DEFAULT_OPERATING_POINT, cluster_embeddings
    from facenet.apps.cluster_folder import write_clusters
    from facenet.apps.embedder import Embedder, _subject_index
    from facenet.apps.gallery import FaceRecord, Gallery
    from facenet.apps.verify import verify_faces
    from facenet.eval.clustering import clustering_metrics

    found = find_lfw(data)
    if found is None:
        raise DataNotFound(how_to_get_lfw(data))
    images, pairs_file = found
    out = Path(out)
    claim_demo_folder(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    rng = np.random.default_rng(config.seed)

    # ---- choose the sample (seeded): gallery, unknown, mixed folder, pairs
    people = _people(images)
    pairs = _pairs(pairs_file, images, config.pairs)
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
    probes = [
        (p, n)
        for n in gallery_people
        for p in people[n][config.enroll_images : config.enroll_images + config.probe_images]
    ]
    probes += [(p, None) for n in unknown_people for p in people[n][:2]]
    mixed = [(p, n) for n in cluster_people for p in people[n][: config.cluster_images]]
    mixed += [(people[n][0], n) for n in distractors]

    # ---- model
    model, ref = choose_model(model_ref, log)
    embedder = Embedder(model, detector=detector, ref=ref)
    log(f"model: {ref} ({embedder.embedding_dim}-d); detector: {detector}")
    thresholds = embedder.thresholds
    threshold_note = "shipped with the model"
    if not thresholds and pairs_file is not None:
        dev = pairs_file.parent / "pairsDevTrain.txt"
        t0 = time.perf_counter()
        thresholds = _calibrate_on_view1(
            embedder, images, dev if dev.is_file() else pairs_file, used
        )
        card_of(model).set_thresholds(thresholds)
        timings["calibrate"] = time.perf_counter() - t0
        threshold_note = "fitted now on 150+150 LFW View 1 training pairs (the model ships none)"
    t_verify = thresholds.get("accuracy", 1.0)
    t_open = thresholds.get("far_1e-3", t_verify)
    log(f"thresholds: {thresholds} ({threshold_note})")

    # ---- 1. align + embed every photo's main face once
    t0 = time.perf_counter()
    all_paths = sorted(
        {str(p) for ps in enroll.values() for p in ps}
        | {str(p) for p, _ in probes}
        | {str(q) for a, b, _ in pairs for q in (a, b)}
    )
    faces: dict[str, Any] = {}
    aligned = out / "aligned"
    no_face: list[str] = []
    for r in embedder.embed_files(all_paths, subject_only=True, progress=True):
        if not r.faces:
            no_face.append(r.path)
            continue
        face = r.faces[0]
        faces[r.path] = face
        rel = Path(r.path).relative_to(images).with_suffix(".png")
        (aligned / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face.crop).save(aligned / rel)
    timings["align+embed"] = time.perf_counter() - t0
    log(f"aligned and embedded {len(faces)} of {len(all_paths)} photos -> {aligned}")

    def crop_url(path: str | Path) -> str:
        rel = Path(path).relative_to(images).with_suffix(".png")
        return f"aligned/{rel.as_posix()}"

    # ---- 2. verify pairs
    verifications = []
    for a, b, same in pairs:
        if str(a) in faces and str(b) in faces:
            v = verify_faces(faces[str(a)], faces[str(b)], t_verify, "model accuracy")
            verifications.append((v, same))

    # ---- 3. gallery: enrol, identify known and unknown probes
    t0 = time.perf_counter()
    gdir = out / "gallery"
    if gdir.exists():
        shutil.rmtree(gdir)
    identified = []
    with Gallery(gdir) as gallery:
        for name, paths in enroll.items():
            recs = [
                FaceRecord(faces[str(p)].embedding, str(p), 0, faces[str(p)].box)
                for p in paths
                if str(p) in faces
            ]
            if recs:
                gallery.enroll(name, recs, embedder.fingerprint, thresholds)
        usable = [(p, n) for p, n in probes if str(p) in faces]
        answers = gallery.identify(
            np.stack([faces[str(p)].embedding for p, _ in usable]), t_open, k=3
        )
        identified = [(p, n, a) for (p, n), a in zip(usable, answers, strict=True)]
    timings["gallery"] = time.perf_counter() - t0
    known = [(n, a) for _, n, a in identified if n is not None]
    unknown = [(n, a) for _, n, a in identified if n is None]
    id_summary = {
        "enrolled_people": len(enroll),
        "known_probes": len(known),
        "rank1_correct": sum(a.matches[0].name == n for n, a in known if a.matches),
        "accepted_correct": sum(a.name == n for n, a in known),
        "unknown_probes": len(unknown),
        "unknown_rejected": sum(not a.known for _, a in unknown),
        "threshold": t_open,
    }

    # ---- 4. cluster a mixed folder (every face of every photo)
    t0 = time.perf_counter()
    mixed_dir = out / "mixed"
    if mixed_dir.exists():
        shutil.rmtree(mixed_dir)
    mixed_dir.mkdir()
    truth_of: dict[str, str] = {}
    for i, (p, n) in enumerate([mixed[j] for j in rng.permutation(len(mixed))]):
        link = mixed_dir / f"photo_{i:03d}{p.suffix}"
        os.symlink(p.resolve(), link)
        truth_of[str(link)] = n
    c_paths, c_boxes, c_idx, c_emb, c_subject, c_truth = [], [], [], [], [], []
    for r in embedder.embed_files(sorted(truth_of), progress=True):
        if not r.faces:
            continue
        img_shape = Image.open(r.path).size[::-1]
        main = _subject_index(r.faces, img_shape)
        for j, f in enumerate(r.faces):
            c_paths.append(r.path)
            c_boxes.append(f.box)
            c_idx.append(f.face_index)
            c_emb.append(f.embedding)
            c_subject.append(j == main)
            c_truth.append(truth_of[r.path])
    emb = np.array(c_emb, np.float32)
    # why: the operating point `facenet cluster` uses (README: clustering a real collection);
    # a folder of ~70 photos takes the small-collection minimum cluster size
    t_cluster = thresholds.get(DEFAULT_OPERATING_POINT, t_verify)
    labels = cluster_embeddings(emb, "agglomerative", threshold=t_cluster, min_cluster_size=3)
    cdir = out / "clusters"
    if cdir.exists():
        shutil.rmtree(cdir)
    written = write_clusters(
        cdir, c_paths, np.array(c_boxes), c_idx, labels, title="facenet demo: a mixed folder"
    )
    sub = np.array(c_subject)
    report = clustering_metrics(np.array(c_truth)[sub], labels[sub])
    timings["cluster"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    summary = {
        "model": ref,
        "thresholds": thresholds,
        "threshold_note": threshold_note,
        "photos_aligned": len(faces),
        "photos_without_face": no_face,
        "verification": [
            {
                "a": str(v.path_a),
                "b": str(v.path_b),
                "distance": v.distance,
                "same": v.same,
                "truth": s,
            }
            for v, s in verifications
        ],
        "identification": id_summary,
        "clustering": {
            "faces": written.n_faces,
            "clusters": written.n_clusters,
            "people": len(cluster_people) + len(distractors),
            "threshold": t_cluster,
            "unclustered": written.n_singletons,
            **{
                k: v
                for k, v in report.to_dict().items()
                if k.endswith(("f1", "_f", "precision", "recall"))
            },
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    page = _write_page(out, summary, verifications, identified, crop_url, written)
    from facenet.utils import write_json

    write_json(out / "summary.json", summary)
    return DemoResult(page, summary)


def _write_page(
    out: Path,
    summary: dict[str, Any],
    verifications: list[tuple[Any, bool]],
    identified: list[tuple[Path, str | None, Any]],
    crop_url: Any,
    clusters: Any,
) -> Path:
    from facenet.utils import atomic_write

    e = html.escape
    idn = summary["identification"]
    cl = summary["clustering"]
    rows_v = "".join(
        f"<tr><td><img src='{crop_url(v.path_a)}'></td><td><img src='{crop_url(v.path_b)}'></td>"
        f"<td>{v.distance:.3f}</td><td>{'same' if v.same else 'different'}</td>"
        f"<td>{'same' if truth else 'different'}</td><td>{'✔' if v.same == truth else '✘'}</td></tr>"
        for v, truth in verifications
    )
    rows_i = "".join(
        f"<tr><td><img src='{crop_url(p)}'></td><td>{e(n or '(not enrolled)')}</td>"
        f"<td>{e(a.name)}</td><td>{a.distance:.3f}</td>"
        f"<td>{'✔' if a.name == (n or 'unknown') else '✘'}</td></tr>"
        for p, n, a in identified
    )
    page_text = f"""<!doctype html><meta charset="utf-8"><title>facenet demo</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:70em}}img{{width:64px;height:64px}}
td,th{{padding:2px 8px;text-align:left}}table{{border-collapse:collapse}}
tr:nth-child(even){{background:#f3f3f3}}</style>
<h1>facenet demo</h1>
<p>Model <b>{e(summary["model"])}</b>; thresholds (squared L2) {e(str({k: round(v, 3) for k, v in summary["thresholds"].items()}))}
{e(summary["threshold_note"])}. {summary["photos_aligned"]} LFW photos aligned (crops in <code>aligned/</code>).
Time: {e(str(summary["seconds"]))} s.</p>
<h2>1. Verification (pairs from LFW pairs.txt)</h2>
<table><tr><th>A</th><th>B</th><th>distance</th><th>says</th><th>truth</th><th></th></tr>{rows_v}</table>
<h2>2. Open-set identification</h2>
<p>{idn["enrolled_people"]} people enrolled with up to 3 photos each. Known probes: rank-1 correct
{idn["rank1_correct"]}/{idn["known_probes"]}, accepted as the right person {idn["accepted_correct"]}/{idn["known_probes"]}.
Probes of people never enrolled rejected as "unknown": {idn["unknown_rejected"]}/{idn["unknown_probes"]}
(threshold {idn["threshold"]:.3f}).</p>
<table><tr><th>probe</th><th>truth</th><th>answer</th><th>distance</th><th></th></tr>{rows_i}</table>
<h2>3. Clustering a mixed folder</h2>
<p>{cl["faces"]} faces in photos of {cl["people"]} people -> {cl["clusters"]} clusters and
{cl["unclustered"]} faces left unclustered (average linkage cut at {cl["threshold"]:.3f}, the model's
far_1e-3 threshold; clusters under 3 faces left out). Main faces scored against the true names: pairwise F1
{cl["pairwise_f1"]:.3f}, BCubed F {cl["bcubed_f"]:.3f}. <a href="clusters/index.html">Contact sheet</a>,
<code>clusters/clusters.csv</code>, and a folder per cluster in <code>clusters/</code>.</p>
"""
    page = out / "index.html"
    with atomic_write(page, "w") as f:
        f.write(page_text)
    return page
