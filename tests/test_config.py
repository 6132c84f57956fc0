from pathlib import Path

import pytest
import yaml

from facenet.config import (
    Config,
    ConfigError,
    apply_overrides,
    check_config,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_papers_recipe():
    c = Config()
    assert c.optimiser.name == "adagrad" and c.optimiser.lr == 0.05
    assert c.mining.rule == "semi_hard" and c.mining.margin == 0.2
    assert (c.sampler.identities_per_batch, c.sampler.images_per_identity) == (45, 40)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    c = load_config(path)
    assert config_from_dict(config_to_dict(c)) == c
    assert config_from_dict(yaml.safe_load(dump_config(c))) == c


def test_paper_yaml_matches_the_paper():
    c = load_config(CONFIGS / "paper.yaml")
    assert (c.optimiser.name, c.optimiser.lr, c.mining.margin, c.mining.rule) == (
        "adagrad",
        0.05,
        0.2,
        "semi_hard",
    )
    assert c.sampler.identities_per_batch * c.sampler.images_per_identity == 1800


def test_overrides_parse_yaml_values_and_nested_keys():
    c = apply_overrides(
        Config(),
        [
            "optimiser.lr=0.1",
            "data.roots=[a, b]",
            "model.kwargs={width: 8}",
            "optimiser.betas=[0.8, 0.9]",
            "output.tensorboard=false",
            "max_steps=7",
        ],
    )
    assert c.optimiser.lr == 0.1 and isinstance(c.optimiser.lr, float)
    assert c.data.roots == ("a", "b")
    assert c.model.kwargs == {"width": 8}
    assert c.optimiser.betas == (0.8, 0.9)
    assert c.output.tensorboard is False and c.max_steps == 7


def test_model_kwargs_take_new_keys_one_at_a_time():
    c = apply_overrides(Config(), ["model.kwargs={input_size: 96}", "model.kwargs.head=gdc"])
    assert c.model.kwargs == {"input_size": 96, "head": "gdc"}


def test_single_value_for_a_tuple_field_becomes_a_tuple():
    assert apply_overrides(Config(), ["data.roots=/x"]).data.roots == ("/x",)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimiser.lrr=0.1", "unknown key 'optimiser.lrr'"),
        ("optimizer.lr=0.1", "optimizer"),
        ("optimiser.name=adam", "not one of"),
        ("max_steps=ten", "expected an integer"),
        ("output.tensorboard=3", "true/false"),
        ("optimiser=3", "section"),
        ("noequals", "key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optimiser:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="valid keys under optimiser: .*lr"):
        load_config(p)
    # the key is named with its section's dot (it read 'optimiserlearning_rate')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) optimiser\.learning_rate;"):
        load_config(p)
    p.write_text("data:\n  augment:\n    flipp: true\n")
    with pytest.raises(ConfigError, match=r"data\.augment\.flipp"):
        load_config(p)


@pytest.mark.parametrize(
    "override",
    [
        "max_steps=0",
        "optimiser.lr=0",
        "sampler.images_per_identity=1",
        "output.checkpoint_every=0",
        "validation.far_target=1",
        "data.crop_fraction=0",
        "schedule.min_lr_ratio=2",
    ],
)
def test_out_of_range_values_are_refused_before_a_run(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"{key}=.* is out of range"):
        load_config(None, [override])


def test_an_override_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="optimiser.lr=\\[.*not valid YAML"):
        load_config(None, ["optimiser.lr=["])


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        Config().seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override",
    [
        "optimiser.sam_rho=0.05",
        "optimiser.sam_start_step=100",
        "optimiser.ema_consistency=0.1",
        "classifier.weight=1.0",
        "classifier={weight: 1.0}",
    ],
)
def test_removed_options_name_the_last_commit_that_has_them(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: option removed .*commit b0f95e6") as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


def test_a_config_file_with_a_removed_section_is_refused_by_name(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("classifier:\n  weight: 0.5\n  scale: 30.0\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: classifier: option removed .*b0f95e6"):
        load_config(p)
    p.write_text("optimiser:\n  lr: 0.1\n  sam_rho: 0.05\n")
    with pytest.raises(ConfigError, match=r"optimiser\.sam_rho: option removed"):
        load_config(p)


def test_offline_mining_sizes_and_processes_are_checked():
    c = load_config(None, ["mining.strategy=offline"])
    assert check_config(c) is c
    with pytest.raises(ConfigError, match="mining.refresh_every=0"):
        load_config(None, ["mining.strategy=offline", "mining.refresh_every=0"])
    # online mining never reads the offline sizes
    load_config(None, ["mining.refresh_every=0"])
    with pytest.raises(ConfigError, match="runs in one process"):
        check_config(c, world_size=2)
