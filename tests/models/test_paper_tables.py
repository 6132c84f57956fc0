"""Counted params and multiply-adds against the paper's tables, row by row and in total."""

import functools

import pytest
import torch

from facenet.models import create_model
from facenet.models.flops import PAPER_COSTS, count_params, model_cost, per_module_cost

# why: the paper's Table 1 (NN1): module -> (params, FLOPS = multiply-adds), as printed.
NN1_ROWS = {
    "features.0": (9e3, 115e6),  # conv1
    "features.3": (4e3, 13e6),  # conv2a
    "features.4": (111e3, 335e6),  # conv2
    "features.7": (37e3, 29e6),  # conv3a
    "features.8": (664e3, 521e6),  # conv3
    "features.10": (148e3, 29e6),  # conv4a
    "features.11": (885e3, 173e6),  # conv4
    "features.12": (66e3, 13e6),  # conv5a
    "features.13": (590e3, 116e6),  # conv5
    "features.14": (66e3, 13e6),  # conv6a
    "features.15": (590e3, 116e6),  # conv6
    "fc1": (103e6, 103e6),
    "fc2": (34e6, 34e6),
    "fc7128": (524e3, 0.5e6),
}
# why: the paper's Table 2 (NN2), as printed; "inception (2)" is stem.3 + stem.4.
NN2_ROWS = {
    "stem.0": (9e3, 119e6),  # conv1
    "blocks.inception_3a": (164e3, 128e6),
    "blocks.inception_3b": (228e3, 179e6),
    "blocks.inception_3c": (398e3, 108e6),
    "blocks.inception_4a": (545e3, 107e6),
    "blocks.inception_4b": (595e3, 117e6),
    "blocks.inception_4c": (654e3, 128e6),
    "blocks.inception_4d": (722e3, 142e6),
    "blocks.inception_4e": (717e3, 56e6),
    "blocks.inception_5a": (1.6e6, 78e6),
    "blocks.inception_5b": (1.6e6, 78e6),
    "fc": (131e3, 0.1e6),
}
NN2_INCEPTION_2 = (115e3, 360e6)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # why: on a busy 2-core machine two intra-op threads spin at barriers; one is far faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _model(name: str, norm: str = "lrn") -> torch.nn.Module:
    return create_model(name, norm=norm)


@functools.cache
def _cost(name: str, norm: str = "lrn"):
    return model_cost(_model(name, norm))


def _close(counted: float, printed: float, rel: float) -> bool:
    return abs(counted - printed) <= rel * printed


def _as_printed(counted: float, printed: float, unit: float) -> bool:
    """Within 2% or one unit of the printed figure (the table truncates: 9,472 -> "9K")."""
    return abs(counted - printed) <= max(0.02 * printed, unit)


@pytest.mark.parametrize(("name", "rows"), [("nn1", NN1_ROWS), ("nn2", NN2_ROWS)])
def test_every_row_matches_the_paper_table(name, rows):
    costs = per_module_cost(_model(name), depth=2)
    for module, (params, flops) in rows.items():
        got_params, got_flops = costs[module]
        # why: the table prints params in K and FLOPS in M (truncated: "9K" for 9,472).
        assert _as_printed(got_params, params, 1e3), (name, module, got_params, params)
        assert _as_printed(got_flops, flops, 1e6), (name, module, got_flops, flops)
    if name == "nn2":
        p = costs["stem.3"][0] + costs["stem.4"][0]
        f = costs["stem.3"][1] + costs["stem.4"][1]
        assert _close(p, NN2_INCEPTION_2[0], 0.01) and _close(f, NN2_INCEPTION_2[1], 0.01)


@pytest.mark.parametrize("name", sorted(PAPER_COSTS))
def test_totals_within_ten_percent_of_the_paper(name):
    cost = _cost(name)
    params, flops = PAPER_COSTS[name]
    if params is not None:
        assert _close(cost.params, params, 0.10), (cost.params, params)
    if flops is not None:
        assert _close(cost.flops, flops, 0.10), (cost.flops, flops)


def test_nn1_nn2_nn4_match_to_the_printed_digits():
    assert round(_cost("nn1").params / 1e6) == 140
    assert round(_cost("nn1").flops / 1e8) == 16
    assert round(_cost("nn2").flops / 1e8) == 16
    assert round(_cost("nn4").flops / 1e6) == 285


def test_nn3_and_nn4_share_nn2s_architecture():
    nn2, nn3, nn4 = (_cost(n) for n in ("nn2", "nn3", "nn4"))
    assert nn3.params == nn2.params
    assert 0.5e9 <= nn3.flops <= 1.6e9  # SPEC §5: ~0.5-1.6B
    assert 6.6e6 <= nn4.params <= 7.5e6  # SPEC §5: ~6.6-7.5M
    assert _model("nn4").blocks.inception_5a.branch5x5 is None
    assert _model("nn4").blocks.inception_4d.branch5x5 is not None


@pytest.mark.parametrize("name", sorted(PAPER_COSTS))
def test_batchnorm_option_keeps_the_learned_parameter_count(name):
    lrn, bn = _model(name), _model(name, "batchnorm")
    assert count_params(bn) == count_params(lrn)
    assert not any(type(m).__name__ == "LocalResponseNorm" for m in bn.modules())
    assert any(type(m).__name__ == "LocalResponseNorm" for m in lrn.modules())
    assert _cost(name, "batchnorm").flops == _cost(name).flops
