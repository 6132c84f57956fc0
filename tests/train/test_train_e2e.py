"""A real (tiny, synthetic-data) training run through the CLI: outputs, resume, faults."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _smoke import SMOKE, smoke_args

from facenet.cli import main
from facenet.config import load_config
from facenet.models.card import card_of
from facenet.models.loading import load_weights_file
from facenet.train import loop, terms
from facenet.train.checkpoint import load_checkpoint, write_checkpoint
from facenet.train.data import MINING_STREAM, augment_stream, build_train_data
from facenet.train.distributed import DistInfo
from facenet.train.offline import OfflineTripletMiner
from facenet.train.validate import embed_images


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(smoke_args(run, "output.tensorboard=true")) == 0
    return run


def test_run_writes_everything_a_user_needs(reference_run):
    run = reference_run
    for name in (
        "config.yaml",
        "train_log.csv",
        "val_log.csv",
        "curves.png",
        "last.pt",
        "best.pt",
        "best.safetensors",
        "last.safetensors",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 24 and ckpt["model"] == "tiny"
    assert ckpt["config"]["max_steps"] == 24 and ckpt["spec"]["input_size"] == [32, 32]
    # the framing validation used (centre 32 px of the 37 px cached faces) is in the spec
    assert ckpt["spec"]["crop_fraction"] == round(32 / 37, 6)
    for key in ("optimizer", "sampler", "rng", "metrics", "thresholds", "model_kwargs"):
        assert ckpt[key], key
    assert set(ckpt["thresholds"]) == {"accuracy", "far_1e-3"}
    # the resolved config beside the run rebuilds the same config
    assert load_config(run / "config.yaml").max_steps == 24
    # checkpoints load as models, thresholds included (verify/identify/cluster use them)
    model = load_weights_file(run / "best.pt")
    assert card_of(model).thresholds == load_checkpoint(run / "best.pt")["thresholds"]
    st = load_weights_file(run / "last.safetensors")
    assert _states_equal(st.state_dict(), ckpt["model_state"])
    # validation rows at steps 8, 16, 24 on identities never trained on
    rows = (run / "val_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [8, 16, 24]
    assert load_checkpoint(run / "best.pt")["best"]["accuracy"] > 0.6


def test_existing_run_needs_resume(reference_run, capsys):
    assert main(smoke_args(reference_run)) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_after_sigkill_is_bit_exact(reference_run, tmp_path):
    """Kill a real training process with SIGKILL mid-run, resume, compare final weights."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "facenet", *smoke_args(run)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if (run / "last.pt").exists():
                step = load_checkpoint(run / "last.pt")["step"]
                if step >= 8:  # past a validation and a few checkpoints, well before the end
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    if killed_at is None:
        pytest.fail(f"process ended before it could be killed: {proc.stdout.read().decode()}")
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "last.pt")["step"] < 24
    elapsed_at_kill = load_checkpoint(run / "last.pt")["metrics"]["elapsed_s"]
    assert elapsed_at_kill > 0
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(run / "last.pt")
    ref = load_checkpoint(reference_run / "last.pt")
    assert final["step"] == ref["step"] == 24
    assert _states_equal(final["model_state"], ref["model_state"])
    # the logs are continuous too: one row per logged step, no duplicates from the replay
    steps = [int(r.split(",")[0]) for r in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(2, 25, 2))
    # training time carries over the kill (elapsed_s, time_limit_minutes count across resumes)
    with open(run / "train_log.csv") as f:
        elapsed = [float(r["elapsed_s"]) for r in csv.DictReader(f)]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed_at_kill
    ref_val = (reference_run / "val_log.csv").read_text().splitlines()
    assert (run / "val_log.csv").read_text().splitlines() == ref_val


def test_collapse_stops_with_a_clear_message(tmp_path, capsys):
    # spread is always < 2, so every step counts as collapsed: the run must stop at step 3
    code = main(
        smoke_args(tmp_path / "run", "faults.collapse_spread=2.0", "faults.collapse_patience=3")
    )
    assert code == 5
    err = capsys.readouterr().err
    assert "collapsed at step 3" in err and "embedding spread" in err


def test_divergence_stops_before_the_weights_are_touched(tmp_path, monkeypatch, capsys):
    real = terms.triplet_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        out = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 7:  # step 7: after the checkpoint of step 4
            return type(out)(out.loss * float("nan"), out.stats, out.triplets)
        return out

    monkeypatch.setattr(terms, "triplet_loss", poisoned)
    run = tmp_path / "run"
    assert main(smoke_args(run)) == 4
    err = capsys.readouterr().err
    assert "diverged at step 7" in err and str(run / "last.pt") in err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 4
    assert all(
        torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point()
    )
    load_weights_file(run / "last.pt")  # the last good checkpoint is intact and loadable


def test_bad_override_is_exit_code_2(tmp_path, capsys):
    assert main(smoke_args(tmp_path / "run", "optimiser.lrr=1")) == 2
    assert "optimiser.lrr" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_other_optimisers_train(tmp_path, name):
    lr = 0.05 if name == "adagrad" else 0.01
    run = tmp_path / "run"
    assert main(smoke_args(run, "max_steps=6", f"optimiser.name={name}", f"optimiser.lr={lr}")) == 0
    assert load_checkpoint(run / "last.pt")["optimizer"]["state"]


def test_the_training_loop_streams_never_share_a_seed():
    ranks = range(1024)
    streams = [MINING_STREAM, *map(augment_stream, ranks)]
    assert len(set(streams)) == len(streams)
    # a single process augments from stream 0, as every run before the streams were named did
    assert augment_stream(0) == 0


def test_hooks_see_every_step_and_can_stop_the_run(tmp_path):
    """The loop's seam: a hook is called with the state before each step; an exception it raises
    ends the run after the previous step's checkpoint, which then resumes to the same end."""
    config = load_config(SMOKE, [f"output.dir={tmp_path / 'run'}", "max_steps=6"])
    seen: list[int] = []

    class Stop(Exception):
        pass

    def record(state) -> None:
        seen.append(state.step)
        if state.step == 4:
            raise Stop

    with pytest.raises(Stop):
        loop.train(config, hooks=[record])
    assert seen == [0, 1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4  # checkpoint_every=4
    result = loop.train(config, resume=True, hooks=[lambda state: seen.append(state.step)])
    assert result.step == 6 and seen[5:] == [4, 5]


def test_removed_options_are_one_line_naming_the_last_commit_with_them(tmp_path, capsys):
    assert main(smoke_args(tmp_path / "run", "optimiser.sam_rho=0.05")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optimiser.sam_rho" in err and "b0f95e6" in err
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_the_removed_classifier_is_refused(reference_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["classifier"] = {"weight": torch.zeros(24, 128)}  # as a classifier.weight run saved it
    ckpt["config"]["classifier"] = {"weight": 0.5, "scale": 30.0, "margin": 0.2}
    write_checkpoint(run / "last.pt", ckpt)
    assert main([*smoke_args(run, "max_steps=30"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "classifier.weight=0.5" in err and "b0f95e6" in err


def test_a_run_logged_with_removed_columns_resumes_without_them(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    with open(run / "train_log.csv", "w", newline="") as f:  # as runs with the classifier wrote it
        w = csv.DictWriter(f, fieldnames=[*rows[0], "classifier_loss", "consistency"])
        w.writeheader()
        w.writerows({**r, "classifier_loss": "1.5", "consistency": "nan"} for r in rows)
    assert main([*smoke_args(run, "max_steps=26"), "--resume"]) == 0
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert "classifier_loss" not in rows[0] and [int(r["step"]) for r in rows[-2:]] == [24, 26]


# ---------------------------------------------------------------- EMA of the weights
EMA = ("optimiser.ema_decay=0.9",)


def _finished_run(tmp_path_factory, name: str, *extra: str) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    assert main(smoke_args(run, *extra)) == 0
    return run


def _resume_matches(reference: Path, run: Path, interrupt_training, *extra: str) -> dict:
    """Kill an EMA run of ``extra`` after step 12's checkpoint, resume it, and check that it ends
    with ``reference``'s weights (averaged and trained); returns the final checkpoint."""
    interrupt_training(12, main, smoke_args(run, *extra))
    assert load_checkpoint(run / "last.pt")["ema_updates"] == 12
    assert main([*smoke_args(run, *extra), "--resume"]) == 0
    final, ref = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    assert final["step"] == ref["step"] == 24
    assert _states_equal(final["model_state"], ref["model_state"])
    assert _states_equal(final["train_model_state"], ref["train_model_state"])
    return final


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    return _finished_run(tmp_path_factory, "ema", *EMA)


def test_ema_run_trains_the_same_weights_and_ships_their_average(ema_run, reference_run):
    ckpt, ref = load_checkpoint(ema_run / "last.pt"), load_checkpoint(reference_run / "last.pt")
    # the average only watches: the trained weights are the plain run's, bit for bit
    assert _states_equal(ckpt["train_model_state"], ref["model_state"])
    assert ckpt["ema_updates"] == 24
    assert not _states_equal(ckpt["model_state"], ckpt["train_model_state"])
    # what eval/export/apps load is the average, with the thresholds calibrated on it
    exported = load_weights_file(ema_run / "last.safetensors")
    assert _states_equal(exported.state_dict(), ckpt["model_state"])
    with open(ema_run / "val_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [8, 16, 24]
    assert all(0 < float(r["raw_accuracy"]) <= 1 and 0 < float(r["raw_auc"]) <= 1 for r in rows)
    # the raw weights' validation is the plain run's (same weights, same pairs)
    with open(reference_run / "val_log.csv") as f:
        plain = list(csv.DictReader(f))
    assert [float(r["raw_auc"]) for r in rows] == pytest.approx([float(r["auc"]) for r in plain])
    # the checkpoint's accuracy threshold is the averaged model's (the logged one), not the raw's
    assert ckpt["thresholds"]["accuracy"] == pytest.approx(float(rows[-1]["threshold"]))
    assert float(rows[-1]["threshold"]) != pytest.approx(float(plain[-1]["threshold"]))


def test_ema_run_resumes_bit_exactly(ema_run, tmp_path, interrupt_training):
    final = _resume_matches(ema_run, tmp_path / "run", interrupt_training, *EMA)
    assert final["ema_updates"] == 24


def test_resume_with_a_different_ema_setting_is_refused(ema_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ema_run, run)
    assert main([*smoke_args(run, "max_steps=30"), "--resume"]) == 2
    assert "optimiser.ema_decay: 0.9 -> 0.0" in capsys.readouterr().err


@pytest.mark.parametrize("decay", ["1.0", "-0.5"])
def test_ema_decay_outside_its_range_is_refused(tmp_path, capsys, decay):
    assert main(smoke_args(tmp_path / "run", f"optimiser.ema_decay={decay}")) == 2
    assert "optimiser.ema_decay" in capsys.readouterr().err


# ---------------------------------------------------------------- offline mining (SPEC §3)
OFFLINE = (
    "mining.strategy=offline",
    "mining.refresh_every=8",
    "mining.subset_identities=12",
    "mining.subset_images_per_identity=4",
    "mining.triplets_per_batch=40",
)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("offline") / "run"
    assert main(smoke_args(run, *OFFLINE)) == 0
    return run


def test_offline_mining_run_trains_on_batches_of_mined_triplets(offline_run, reference_run):
    ckpt = load_checkpoint(offline_run / "last.pt")
    state = ckpt["offline_miner"]
    assert state["refreshes"] == 3 and state["mined_at"] == 16  # mined at steps 0, 8, 16
    with open(offline_run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    # the epoch column counts minings; every batch is triplets_per_batch mined triplets
    assert [int(r["epoch"]) for r in rows] == [1] * 4 + [2] * 4 + [3] * 4
    assert all(int(r["num_triplets"]) == 40 for r in rows)
    assert all(int(r["num_pairs"]) > 0 for r in rows)
    assert load_checkpoint(offline_run / "best.pt")["best"]["accuracy"] > 0.6
    ref = load_checkpoint(reference_run / "last.pt")
    assert not _states_equal(ckpt["model_state"], ref["model_state"])


def test_offline_mining_mines_with_the_current_weights_and_resumes_bit_exactly(
    offline_run, tmp_path, interrupt_training
):
    """Oracle: the second mining (step 8) redone outside the loop, with the step-8 weights
    read from the checkpoint, gives the triplet pool the loop trained on; two resumes, one on
    each side of that mining, end on the uninterrupted run's weights."""
    run = tmp_path / "run"
    interrupt_training(8, main, smoke_args(run, *OFFLINE))
    at8 = load_checkpoint(run / "last.pt")
    assert at8["step"] == 8 and at8["offline_miner"]["refreshes"] == 1
    config = load_config(run / "config.yaml")
    data = build_train_data(config, (32, 32), False, frozenset())
    miner = OfflineTripletMiner(data.labels, "semi_hard", 0.2, 8, 12, 4, 40, seed=0)
    miner.load_state_dict(at8["offline_miner"])
    model = load_weights_file(run / "last.pt")
    miner.refresh(lambda i: embed_images(model, data.images[i], (32, 32), torch.device("cpu")), 8)

    interrupt_training(12, main, [*smoke_args(run, *OFFLINE), "--resume"])
    at12 = load_checkpoint(run / "last.pt")["offline_miner"]
    assert at12["refreshes"] == 2 and at12["mined_at"] == 8
    # the loop's pool may have been reshuffled once used up: compare the triplets as sets
    assert np.array_equal(np.unique(at12["pool"], axis=0), np.unique(miner._pool, axis=0))

    assert main([*smoke_args(run, *OFFLINE), "--resume"]) == 0
    final, ref = load_checkpoint(run / "last.pt"), load_checkpoint(offline_run / "last.pt")
    assert final["step"] == ref["step"] == 24
    assert _states_equal(final["model_state"], ref["model_state"])


def test_resume_with_another_mining_strategy_is_refused(offline_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(offline_run, run)
    assert main([*smoke_args(run, "max_steps=30"), "--resume"]) == 2
    assert "mining.strategy: 'offline' -> 'online'" in capsys.readouterr().err


def test_offline_mining_refuses_bad_sizes_and_torchrun(tmp_path, capsys, monkeypatch):
    assert main(smoke_args(tmp_path / "a", *OFFLINE, "mining.triplets_per_batch=0")) == 2
    assert "mining.triplets_per_batch=0" in capsys.readouterr().err
    # as a rank of a 2-process torchrun would see it (refused before any collective call)
    monkeypatch.setattr(loop.D, "setup", lambda device: DistInfo(0, 2, 0, torch.device("cpu")))
    assert main(smoke_args(tmp_path / "b", *OFFLINE)) == 2
    assert "runs in one process" in capsys.readouterr().err


def test_offline_mining_takes_each_face_of_a_small_identity_once(tmp_path):
    # 3 faces per identity, 4 asked for: a face drawn twice would pair an image with itself
    run = tmp_path / "run"
    args = smoke_args(run, *OFFLINE, "data.synthetic_images_per_identity=3", "max_steps=2")
    assert main(args) == 0
    pool = load_checkpoint(run / "last.pt")["offline_miner"]["pool"]
    assert len(pool) > 0
    assert (pool[:, 0] != pool[:, 1]).all()


def test_offline_mining_that_finds_no_triplet_falls_back_to_online_batches(tmp_path):
    # margin 0: the semi-hard band (d_ap, d_ap + 0) is empty, so every mining finds nothing
    run = tmp_path / "run"
    assert main(smoke_args(run, *OFFLINE, "mining.margin=0.0", "max_steps=4")) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 4 and len(ckpt["offline_miner"]["pool"]) == 0
    assert ckpt["sampler"]["position"] == 4  # the four batches came from the online sampler
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["num_triplets"]) for r in rows] == [0, 0]
    assert all(int(r["num_pairs"]) == 6 * 4 * 3 for r in rows)  # online: 6 ids x 4 x 3 pairs


def test_a_run_in_a_longer_process_leaves_the_thread_count_as_it_found_it(tmp_path):
    """``threads`` applies to the run only: the Python API or a notebook keeps its own setting."""
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    run = tmp_path / "run"
    args = smoke_args(run, f"threads={wanted}", "max_steps=1", "validation.every=0")
    config = load_config(args[2], args[3:])
    loop.train(config)
    assert torch.get_num_threads() == before
