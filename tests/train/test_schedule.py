import math

import pytest

from facenet.config import ScheduleConfig
from facenet.train.schedule import lr_at


def test_constant_with_warmup():
    s = ScheduleConfig(name="constant", warmup_steps=4)
    assert [lr_at(i, 1.0, 100, s) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_goes_from_base_to_floor():
    s = ScheduleConfig(name="cosine", min_lr_ratio=0.1)
    assert lr_at(0, 2.0, 100, s) == pytest.approx(2.0)
    assert lr_at(50, 2.0, 100, s) == pytest.approx(0.2 + 1.8 * 0.5)
    assert lr_at(100, 2.0, 100, s) == pytest.approx(0.2)
    values = [lr_at(i, 2.0, 100, s) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_linear_and_step():
    lin = ScheduleConfig(name="linear")
    assert lr_at(25, 1.0, 100, lin) == pytest.approx(0.75)
    st = ScheduleConfig(name="step", milestones=(10, 20), gamma=0.5)
    assert [lr_at(i, 1.0, 100, st) for i in (0, 9, 10, 19, 20, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_schedule_is_a_pure_function_of_the_step():
    s = ScheduleConfig(name="cosine", warmup_steps=3)
    a = [lr_at(i, 0.05, 50, s) for i in range(50)]
    b = [lr_at(i, 0.05, 50, s) for i in reversed(range(50))][::-1]
    assert a == b and all(math.isfinite(x) and x > 0 for x in a)
