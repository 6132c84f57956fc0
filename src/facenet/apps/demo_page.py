"""The page of ``facenet demo`` (``OUT/index.html``): the summary, every verified pair and every
identified probe with its face crops, and a link to the clusters' contact sheet."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from facenet.apps.gallery import Identification
from facenet.apps.results import VerifyResult
from facenet.utils import atomic_write


def crop_url(path: str | Path, images: Path) -> str:
    """The aligned crop of an LFW photo, relative to the demo folder."""
    rel = Path(path).relative_to(images).with_suffix(".png")
    return f"aligned/{rel.as_posix()}"


def write_page(
    out: Path,
    summary: dict[str, Any],
    verifications: list[tuple[VerifyResult, bool]],
    identified: list[tuple[Path, str | None, Identification]],
    images: Path,
) -> Path:
    """``out/index.html``: the summary, each pair and each probe with its face crops."""
    e = html.escape

    idn = summary["identification"]
    cl = summary["clustering"]
    rows_v = "".join(
        f"<tr><td><img src='{crop_url(v.images[0].image, images)}'></td>"
        f"<td><img src='{crop_url(v.images[1].image, images)}'></td>"
        f"<td>{v.distance:.3f}</td><td>{'same' if v.same else 'different'}</td>"
        f"<td>{'same' if truth else 'different'}</td><td>{'✔' if v.same == truth else '✘'}</td></tr>"
        for v, truth in verifications
    )
    rows_i = "".join(
        f"<tr><td><img src='{crop_url(p, images)}'></td><td>{e(n or '(not enrolled)')}</td>"
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
