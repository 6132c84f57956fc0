"""The paper's evaluation suite: LFW-protocol verification (k-fold accuracy, VAL@FAR, ROC),
identification, clustering quality, robustness sweeps and reports.

Submodules are imported on use (``from facenet.eval.verification import evaluate_verification``);
nothing heavy happens at package import.
"""
