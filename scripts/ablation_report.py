"""Table and plot of a mining-rule ablation written by ``scripts/ablation.sh``.

    python scripts/ablation_report.py runs/ablation semi_hard batch_hard batch_all random_violating

Prints one Markdown row per rule (steps, best and final pairsDevTest accuracy, VAL@FAR, AUC,
collapse, exit code) and writes ``<out>/ablation.png``: validation accuracy and the batch's
embedding spread against training time, one line per rule.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def main(argv: list[str]) -> None:
    out, rules = Path(argv[0]), argv[1:]
    print(
        "| rule | steps | best accuracy | final accuracy | VAL@FAR=1e-3 | AUC | "
        "lowest spread | collapse | exit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    curves = {}
    for rule in rules:
        run = out / rule
        val, train = _rows(run / "val_log.csv"), _rows(run / "train_log.csv")
        code = (run / "exit_code").read_text().strip() if (run / "exit_code").exists() else "?"
        best = max(val, key=lambda r: float(r["accuracy"])) if val else None
        last = val[-1] if val else None
        # a time-limited run's last step may fall between logged rows; its final validation has it
        steps = max([int(r["step"]) for r in train[-1:] + val[-1:]], default=0)
        spread = min((float(r["embedding_spread"]) for r in train), default=float("nan"))
        collapse = "yes (stopped)" if code == "5" else "no"

        def pct(r, k):
            return f"{100 * float(r[k]):.1f}%" if r else "-"

        auc = f"{float(last['auc']):.3f}" if last else "-"
        print(
            f"| {rule} | {steps} | {pct(best, 'accuracy')} | {pct(last, 'accuracy')} | "
            f"{pct(last, 'val')} | {auc} | {spread:.2f} | {collapse} | {code} |"
        )
        # validation rows have steps, training rows have elapsed time: a validation is placed at
        # the time of the last training row at or before its step
        logged = [(int(r["step"]), float(r["elapsed_s"]) / 60) for r in train]

        def minutes_at(step: int, logged: list[tuple[int, float]] = logged) -> float:
            return max((m for s, m in logged if s <= step), default=0.0)

        curves[rule] = (
            [(minutes_at(int(r["step"])), float(r["accuracy"])) for r in val],
            [(float(r["elapsed_s"]) / 60, float(r["embedding_spread"])) for r in train],
        )
    try:  # why: optional, and its file-only backend must be chosen before pyplot loads
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the table is the result; the plot is a convenience
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (rule, (acc, spread)) in enumerate(curves.items()):
        color = f"C{i}"  # one colour per rule in both panels, also for a rule with no validation
        if acc:
            ax1.plot(*zip(*acc, strict=True), marker="o", label=rule, color=color)
        if spread:
            ax2.plot(*zip(*spread, strict=True), label=rule, color=color)
    ax1.set(xlabel="training minutes", ylabel="pairsDevTest accuracy", title="validation")
    ax2.set(
        xlabel="training minutes", ylabel="embedding spread", title="batch spread (0 = collapse)"
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)
    print(f"\nplot: {out / 'ablation.png'}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
