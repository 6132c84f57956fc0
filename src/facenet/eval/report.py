"""Evaluation reports: ``report.json``, ``report.md``, ``index.html`` and the PNG figures.

The HTML embeds the PNGs (base64) so the single file can be mailed; the PNGs are also written
beside it. The paper's numbers (SPEC §6) sit next to ours, each labelled with what it measured.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from facenet.eval.verification import VerificationReport
from facenet.utils import atomic_write, write_json

# why: SPEC §6, the paper's LFW results (unrestricted, labelled outside data, 10 folds).
PAPER_LFW = [
    ("FaceNet (paper), fixed centre crop", 98.87, 0.15),
    ("FaceNet (paper), with face alignment", 99.63, 0.09),
]
# why: SPEC §5/§6, VAL @ FAR 1e-3 on the paper's private hold-out set (not LFW).
PAPER_VAL_HOLDOUT = [("NN1 (Zeiler&Fergus)", 87.9, 1.9), ("NN2 (Inception 224)", 89.4, 1.6)]


def _save_figure(fig, path: str | Path) -> Path:
    """Lay out, write and close ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(rep: VerificationReport, path: str | os.PathLike, title: str = "") -> Path:
    """TAR (VAL) against FAR on a log FAR axis, with the VAL@FAR point and FAR resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar = rep.roc["far"], rep.roc["tar"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    # log axis: FAR = 0 cannot be drawn, so the FAR = 0 part of the curve is pinned to the left
    # edge (a decade below both the target and the resolution 1/n_different) and labelled.
    x_min = min(rep.far_target, rep.far_resolution) / 10
    far_plot = np.where(far > 0, far, x_min)
    ax.step(far_plot, tar, where="post", color="C0", lw=1.6, label=f"AUC {rep.auc:.4f}")
    ax.axvline(rep.far_resolution, color="grey", ls=":", lw=1)
    ax.text(
        rep.far_resolution, 0.02, f" 1/{rep.n_different}", color="grey", fontsize=8, va="bottom"
    )
    ax.axvline(rep.far_target, color="C3", ls="--", lw=1, label=f"FAR target {rep.far_target:g}")
    point_label = f"VAL {100 * rep.val:.1f}% @ FAR {rep.far:.1e}"
    if rep.far == 0:
        point_label = f"VAL {100 * rep.val:.1f}% @ FAR 0 (target below 1/{rep.n_different})"
    ax.plot(
        [rep.far if rep.far > 0 else x_min],
        [rep.val],
        "o",
        color="C3",
        ms=7,
        clip_on=False,
        label=point_label,
    )
    ax.text(
        x_min,
        -0.06,
        "FAR=0",
        color="grey",
        fontsize=8,
        ha="center",
        va="top",
        transform=ax.get_xaxis_transform(),
    )
    ax.set_xscale("log")
    ax.set_xlim(x_min, 1.0)
    ax.set_ylim(0.0, 1.005)
    ax.set_xlabel("FAR (false accept rate, log)")
    ax.set_ylabel("VAL (true accept rate)")
    ax.set_title("ROC, log FAR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax2.plot(far, tar, color="C0", lw=1.6)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax2.plot([rep.eer], [1 - rep.eer], "s", color="C2", label=f"EER {100 * rep.eer:.2f}%")
    # zoom on the interesting corner: 4x the EER on both axes (whole square for weak models)
    span = min(1.0, 4 * max(rep.eer, 0.02))
    ax2.set_xlim(0, span)
    ax2.set_ylim(1 - span, 1.0 + span * 0.005)
    ax2.set_xlabel("FAR")
    ax2.set_ylabel("VAL")
    ax2.set_title("ROC, linear (zoom: top-left corner)" if span < 1 else "ROC, linear")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def plot_rocs(
    reports: dict[str, VerificationReport], path: str | os.PathLike, title: str = ""
) -> Path:
    """Several ROC curves on one log-FAR axis (one per named report, e.g. model pairings), each
    labelled with its accuracy and AUC; FAR = 0 is pinned to the left edge as in ``plot_roc``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    x_min = min(min(r.far_target, r.far_resolution) for r in reports.values()) / 10
    for k, (name, rep) in enumerate(reports.items()):
        far, tar = rep.roc["far"], rep.roc["tar"]
        label = (
            f"{name}: {100 * rep.accuracy:.1f}% ± {100 * rep.accuracy_std:.1f}, AUC {rep.auc:.4f}"
        )
        ax.step(
            np.where(far > 0, far, x_min), tar, where="post", color=f"C{k}", lw=1.6, label=label
        )
    ax.set_xscale("log")
    ax.set_xlim(x_min, 1.0)
    ax.set_ylim(0.0, 1.005)
    ax.set_xlabel("FAR (false accept rate, log; FAR = 0 at the left edge)")
    ax.set_ylabel("VAL (true accept rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


def plot_histograms(
    distances: np.ndarray,
    issame: np.ndarray,
    rep: VerificationReport,
    path: str | os.PathLike,
    title: str = "",
    distance: str = "l2",
) -> Path:
    """Same-person and different-person distance histograms with both thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.asarray(distances)
    y = np.asarray(issame, dtype=bool)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    bins = np.linspace(d.min(), d.max(), 61)
    ax.hist(d[y], bins=bins, alpha=0.6, color="C0", label=f"same person ({y.sum()})")
    ax.hist(d[~y], bins=bins, alpha=0.6, color="C1", label=f"different people ({(~y).sum()})")
    ax.axvline(
        rep.threshold_accuracy,
        color="k",
        ls="--",
        lw=1,
        label=f"accuracy threshold {rep.threshold_accuracy:.4g}",
    )
    ax.axvline(
        rep.threshold_far,
        color="C3",
        ls=":",
        lw=1.2,
        label=f"FAR {rep.far_target:g} threshold {rep.threshold_far:.4g}",
    )
    names = {"l2": "squared L2 distance", "cosine": "cosine distance"}
    ax.set_xlabel(names.get(distance, f"{distance} distance"))
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:.2f}%"


def _num(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4f}"


def lfw_table_row(name: str, rep: VerificationReport, extra: str = "") -> str:
    """One Markdown row: model | accuracy ± std | VAL@FAR | AUC | EER | notes."""
    flag = "" if rep.far_attainable else " (FAR=0: target below resolution)"
    return (
        f"| {name} | {100 * rep.accuracy:.2f}% ± {100 * rep.accuracy_std:.2f} | "
        f"{100 * rep.val:.2f}% @ {rep.far:.1e}{flag} | {100 * rep.val_mean:.2f}% ± "
        f"{100 * rep.val_std:.2f} | {rep.auc:.4f} | {100 * rep.eer:.2f}% | {extra} |"
    )


LFW_TABLE_HEAD = (
    "| model | accuracy (10-fold) | VAL @ FAR (all pairs) | VAL (10-fold) | AUC | EER | notes |\n"
    "|---|---|---|---|---|---|---|"
)


def markdown_report(
    rep: VerificationReport, meta: dict[str, Any], sections: dict[str, str] | None = None
) -> str:
    """The report as Markdown (tables only)."""
    name = meta.get("model", "model")
    lines = [f"# Verification: {name} on {meta.get('pairs_name', 'pairs')}", ""]
    lines += [LFW_TABLE_HEAD, lfw_table_row(name, rep, meta.get("setting", ""))]
    for label, acc, std in PAPER_LFW:
        lines.append(f"| {label} | {acc:.2f}% ± {std:.2f} | - | - | - | - | SPEC §6 |")
    lines += [
        "",
        "## Per fold",
        "",
        "| fold | accuracy | threshold | VAL | FAR |",
        "|---|---|---|---|---|",
    ]
    for i, (a, t, v, f) in enumerate(
        zip(rep.fold_accuracies, rep.fold_thresholds, rep.fold_vals, rep.fold_fars, strict=True),
        start=1,
    ):
        lines.append(f"| {i} | {100 * a:.2f}% | {t:.4f} | {_pct(v)} | {_num(f)} |")
    if rep.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep.notes]
    for title, body in (sections or {}).items():
        lines += ["", f"## {title}", "", body]
    return "\n".join(lines) + "\n"


def _md_table_to_html(md: str) -> str:
    rows = [r.strip() for r in md.strip().splitlines() if r.strip().startswith("|")]
    rows = [r for r in rows if not set(r.replace("|", "").strip()) <= {"-", ":"}]
    out = ["<table>"]
    for i, r in enumerate(rows):
        cells = [html.escape(c.strip()) for c in r.strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def write_report(
    out_dir: str | os.PathLike,
    rep: VerificationReport,
    distances: np.ndarray,
    issame: np.ndarray,
    meta: dict[str, Any],
    sections: dict[str, str] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``roc.png``, ``distances.png``, ``index.html``.

    Args:
        out_dir: folder (created).
        rep: the verification report.
        distances, issame: (N,) pair distances and labels (for the histograms).
        meta: run description (model, data, pairs, align, distance, flip, command, ...).
        sections: extra Markdown sections (title -> Markdown body, e.g. sweep tables).
        extra_json: extra JSON fields (sweeps, identification).

    Returns:
        name -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{meta.get('model', '')} on {meta.get('pairs_name', '')}"
    roc_png = plot_roc(rep, out / "roc.png", title)
    hist_png = plot_histograms(
        distances, issame, rep, out / "distances.png", title, meta.get("distance", "l2")
    )
    payload = {"meta": meta, "verification": rep.to_dict(), **(extra_json or {})}
    write_json(out / "report.json", payload)
    md = markdown_report(rep, meta, sections)
    with atomic_write(out / "report.md", "w") as f:
        f.write(md)

    meta_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in meta.items()
    )
    main_table = _md_table_to_html(
        "\n".join(
            [
                LFW_TABLE_HEAD,
                lfw_table_row(meta.get("model", "model"), rep, meta.get("setting", "")),
            ]
            + [
                f"| {lab} | {a:.2f}% ± {s:.2f} | - | - | - | - | SPEC §6 |"
                for lab, a, s in PAPER_LFW
            ]
        )
    )
    holdout = _md_table_to_html(
        "| paper model | VAL @ FAR 1e-3 (paper's hold-out set, not LFW) |\n|---|---|\n"
        + "\n".join(f"| {n} | {v:.1f}% ± {s:.1f} |" for n, v, s in PAPER_VAL_HOLDOUT)
    )
    folds_md = "| fold | accuracy | threshold | VAL | FAR |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {i} | {100 * a:.2f}% | {t:.4f} | {_pct(v)} | {_num(f)} |"
        for i, (a, t, v, f) in enumerate(
            zip(
                rep.fold_accuracies, rep.fold_thresholds, rep.fold_vals, rep.fold_fars, strict=True
            ),
            start=1,
        )
    )
    thresholds = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.5f}</td></tr>" for k, v in rep.thresholds.items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
    extra_html = "".join(
        f"<h2>{html.escape(t)}</h2>\n{_md_table_to_html(b)}" for t, b in (sections or {}).items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
tr:first-child th {{ background: #f0f0f0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
.small {{ color: #666; font-size: 13px; }}
</style></head><body>
<h1>Face verification: {html.escape(title)}</h1>
<p class="small">{rep.n_pairs} pairs ({rep.n_same} same, {rep.n_different} different),
{rep.n_folds} folds; threshold chosen on the other folds, accuracy on the held-out one.
VAL and FAR as defined in the FaceNet paper: VAL = same pairs with D &le; d / same pairs,
FAR = different pairs with D &le; d / different pairs.</p>
<h2>Result beside the paper</h2>
{main_table}
{holdout}
<h2>ROC</h2>
{_img(roc_png, "ROC curve")}
<h2>Distances</h2>
{_img(hist_png, "distance histograms")}
<h2>Thresholds (fitted on all pairs, accept D &le; t)</h2>
<table>{thresholds}<tr><th>EER threshold</th><td>{rep.eer_threshold:.5f}</td></tr></table>
<h2>Per fold</h2>
{_md_table_to_html(folds_md)}
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
{extra_html}
<h2>Run</h2>
<table>{meta_rows}</table>
</body></html>
"""
    with atomic_write(out / "index.html", "w") as f:
        f.write(page)
    return {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "html": out / "index.html",
        "roc": roc_png,
        "distances": hist_png,
    }
