#!/usr/bin/env bash
# Mining-rule ablation at equal wall-clock budget (SPEC §3: the paper's semi-hard rule vs others).
# Same model, data, batches and optimiser; only mining.rule changes. Each run stops after
# MINUTES of training (plus a final validation on LFW pairsDevTest.txt) and the table below is
# printed from the runs' logs: best/final accuracy, VAL@FAR, AUC, steps, and collapse events.
#
#   MINUTES=20 scripts/ablation.sh [configs/cpu.yaml] [extra overrides...]
#
# A rule that collapses stops early with exit code 5; that is a result, not an error.
set -uo pipefail
CONFIG=${1:-configs/cpu.yaml}
shift || true
MINUTES=${MINUTES:-20}
OUT=${OUT:-runs/ablation}
RULES=${RULES:-"semi_hard batch_hard batch_all random_violating"}
mkdir -p "$OUT"
for rule in $RULES; do
  run="$OUT/$rule"
  if [ -f "$run/last.pt" ] && [ -f "$run/done" ]; then continue; fi
  rm -rf "$run"
  nice -n 10 facenet train --config "$CONFIG" "mining.rule=$rule" "time_limit_minutes=$MINUTES" \
    "output.dir=$run" output.progress=false "$@" > "$OUT/$rule.log" 2>&1
  echo $? > "$run/exit_code"
  touch "$run/done"
done
python - "$OUT" $RULES <<'PY'
import csv, sys
from pathlib import Path
out, rules = Path(sys.argv[1]), sys.argv[2:]
print("| rule | steps | best accuracy | final accuracy | VAL@FAR=1e-3 | AUC | collapse | exit |")
print("|---|---|---|---|---|---|---|---|")
for rule in rules:
    run = out / rule
    val = list(csv.DictReader(open(run / "val_log.csv"))) if (run / "val_log.csv").exists() else []
    train = list(csv.DictReader(open(run / "train_log.csv"))) if (run / "train_log.csv").exists() else []
    code = (run / "exit_code").read_text().strip() if (run / "exit_code").exists() else "?"
    best = max(val, key=lambda r: float(r["accuracy"])) if val else None
    last = val[-1] if val else None
    steps = train[-1]["step"] if train else "0"
    collapse = "yes" if code == "5" else "no"
    f = lambda r, k: f"{100 * float(r[k]):.1f}%" if r else "-"
    auc = f"{float(last['auc']):.3f}" if last else "-"
    print(f"| {rule} | {steps} | {f(best, 'accuracy')} | {f(last, 'accuracy')} | {f(last, 'val')} | {auc} | {collapse} | {code} |")
PY
