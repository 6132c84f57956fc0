"""Settings a run cannot honour stop it before any work, with one line naming the setting (exit
2), and a resumed run continues only the run its checkpoint holds. Found by an audit of the
training commands (stop 34); each case printed a traceback, ran silently with other settings, or
failed minutes later without naming the setting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _smoke import SMOKE, smoke_args

from facenet.cli import main
from facenet.config import ConfigError, load_config
from facenet.models import create_model
from facenet.models.loading import save_weights
from facenet.train.checkpoint import load_checkpoint


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad_settings") / "run"
    assert main(smoke_args(run, "max_steps=8")) == 0
    return run


@pytest.mark.parametrize(
    "change",
    ["optimiser.weight_decay=0.5", "optimiser.betas=[0.5,0.6]", "optimiser.lr=0.1", "seed=3"],
)
def test_resume_under_other_settings_is_refused_and_changes_nothing(
    finished_run, tmp_path, capsys, change
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / "last.pt").read_bytes(), (run / "config.yaml").read_text()
    assert main([*smoke_args(run, "max_steps=12", change), "--resume"]) == 2
    key = change.split("=")[0]
    _one_line(capsys, "last.pt", key, "model.init=")
    assert ((run / "last.pt").read_bytes(), (run / "config.yaml").read_text()) == before


def test_resume_may_run_longer_elsewhere_and_quieter(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    extra = ("max_steps=12", "threads=2", "output.log_every=1", "validation.every=4")
    extra += ("model.channels_last=false",)  # a memory layout: the same values
    assert main([*smoke_args(run, *extra), "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 12


def test_resume_with_the_runs_own_config_file(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    own = run / "config.yaml"
    # as written by an older version (a key it did not know yet) and edited by hand
    text = own.read_text().replace("    erase_area:\n    - 0.02\n    - 0.25\n", "")
    assert "erase_area" not in text
    own.write_text("# resumed by hand\n" + text)
    argv = ["train", "--config", str(own), f"output.dir={run}", "max_steps=10", "--resume"]
    assert main(argv) == 0
    assert load_config(str(own)).max_steps == 10


def test_a_fine_tuning_run_resumes_without_its_init_file(tmp_path):
    torch.manual_seed(5)
    init = save_weights(create_model("tiny", input_size=32, width=8), tmp_path / "i.safetensors")
    run = tmp_path / "run"
    assert main(smoke_args(run, f"model.init={init}", "max_steps=8")) == 0
    init.unlink()  # the run's weights are in last.pt now
    assert main([*smoke_args(run, f"model.init={init}", "max_steps=12"), "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 12


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.kwargs.foo=1", "model.kwargs"),
        ("model.kwargs.embedding_dim=0", "model.kwargs.embedding_dim"),
        ("model.name=nosuch", "model.name"),
        ("device=tpu", "device"),
        ("distill.teacher=nosuchmodel", "distill.teacher"),
        ("distill.teacher=nn4", "distill.teacher"),  # an architecture without weights
        ("harmonic.model=tiny", "harmonic.model"),
        ("model.init=tiny", "model.init"),
        ("data.augment.low_res_probability=0.5", "data.augment.low_res_min"),  # 32 >= 32 px
    ],
)
def test_a_setting_that_cannot_run_is_named_before_any_work(tmp_path, capsys, override, named):
    run = tmp_path / "run"
    assert main(smoke_args(run, override)) == 2
    _one_line(capsys, named)
    assert not (run / "last.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_named(tmp_path, capsys):
    assert main(smoke_args(tmp_path / "run", "device=cuda")) == 2
    _one_line(capsys, "device='cuda'", "no CUDA device")


def test_a_student_longer_than_its_teacher_is_refused_before_the_teacher_embeds(
    tmp_path, capsys, monkeypatch
):
    torch.manual_seed(0)
    teacher = save_weights(
        create_model("tiny", input_size=32, width=8, embedding_dim=16), tmp_path / "t.safetensors"
    )
    from facenet.train import teacher as teacher_module

    def never(*args, **kwargs):
        raise AssertionError("the teacher embedded the training faces first")

    monkeypatch.setattr(teacher_module, "compute_embeddings", never)
    assert main(smoke_args(tmp_path / "run", f"distill.teacher={teacher}")) == 2
    _one_line(capsys, "distill.teacher", "16 dimensions")


def test_the_users_config_file_is_never_overwritten(tmp_path, capsys):
    mine = tmp_path / "config.yaml"
    text = "# my settings\n" + Path(SMOKE).read_text()
    mine.write_text(text)
    assert main(["train", "--config", str(mine), f"output.dir={tmp_path}"]) == 2
    _one_line(capsys, "output.dir", "config.yaml")
    assert mine.read_text() == text


@pytest.mark.parametrize(
    "override, key",
    [
        ("threads=100000", "threads"),
        ("data.augment.brightness=-3", "data.augment.brightness"),
        ("data.augment.jpeg_probability=5", "data.augment.jpeg_probability"),
        ("data.augment.jpeg_quality=[90,10]", "data.augment.jpeg_quality"),
        ("data.augment.jpeg_quality=[200,300]", "data.augment.jpeg_quality"),
        ("data.augment.scale=[2,0.5]", "data.augment.scale"),
        ("data.augment.scale=[0,0]", "data.augment.scale"),
        ("optimiser.momentum=nan", "optimiser.momentum"),
        ("optimiser.betas=[nan,0.9]", "optimiser.betas"),
        ("optimiser.betas=[0.9,1.5]", "optimiser.betas"),
        ("faults.collapse_spread=.inf", "faults.collapse_spread"),
    ],
)
def test_out_of_range_settings_are_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(SMOKE, [override])


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("optimiser:\n  lr: 3e-5\nvalidation:\n  far_target: 1e-3\n")
    loaded = load_config(str(config), ["optimiser.eps=1e-7"])
    assert (loaded.optimiser.lr, loaded.validation.far_target) == (3e-5, 1e-3)
    assert loaded.optimiser.eps == 1e-7
    with pytest.raises(ConfigError, match="optimiser.lr"):
        load_config(str(config), ["optimiser.lr=fast"])


def test_a_teacher_cache_that_cannot_be_a_file_is_refused_before_the_teacher_embeds(
    tmp_path, capsys, monkeypatch
):
    torch.manual_seed(0)
    teacher = save_weights(create_model("tiny", input_size=32, width=8), tmp_path / "t.safetensors")
    from facenet.train import teacher as teacher_module

    def never(*args, **kwargs):
        raise AssertionError("the teacher embedded the training faces first")

    monkeypatch.setattr(teacher_module, "compute_embeddings", never)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    for cache, says in ((tmp_path / "folder", "is a folder"), (tmp_path / "afile/c.npz", "afile")):
        argv = smoke_args(tmp_path / "run", f"distill.teacher={teacher}", f"distill.cache={cache}")
        assert main(argv) == 2
        _one_line(capsys, str(cache), says)


def test_adam_betas_need_no_order():
    assert load_config(SMOKE, ["optimiser.betas=[0.95,0.9]"]).optimiser.betas == (0.95, 0.9)


def test_offline_mining_with_too_few_identities_names_the_subset_settings(tmp_path, capsys):
    argv = smoke_args(tmp_path / "run", "mining.strategy=offline")  # default subset: 200 people
    assert main(argv) == 2
    _one_line(capsys, "mining.subset_identities=200")


def test_overrides_may_follow_resume(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    args = smoke_args(run)
    assert main([*args[:3], "--resume", *args[3:], "max_steps=12"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 12


def test_a_run_cannot_resume_backwards(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main([*smoke_args(run, "max_steps=4"), "--resume"]) == 2
    _one_line(capsys, "last.pt", "step 8", "max_steps=4")
