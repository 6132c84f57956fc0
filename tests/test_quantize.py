"""128-byte faces: the int8 codec against its own error bounds (a brute-force check over random
unit embeddings), calibration, clipping, storage size and refusals. No data needed."""

from __future__ import annotations

import numpy as np
import pytest

from facenet.quantize import LEVELS, Int8Codec


def unit(rng, n, d=128):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_face_is_one_byte_per_dimension_and_comes_back_within_half_a_step():
    rng = np.random.default_rng(0)
    train, test = unit(rng, 2000), unit(rng, 500)
    codec = Int8Codec.calibrate(train)
    codes = codec.encode(test)
    assert codes.dtype == np.int8 and codes.shape == (500, 128) and codes.nbytes == 500 * 128
    inside = np.abs(test) <= codec.scale * LEVELS  # in the calibrated range
    err = np.abs(codec.decode(codes) - test)
    half_step = np.broadcast_to(codec.scale / 2, test.shape)
    assert (err[inside] <= half_step[inside] + 1e-7).all()
    back = codec.roundtrip(test)
    cos = (back * test).sum(1) / np.linalg.norm(back, axis=1)
    # what a 128-byte face stands for is the same direction (a value past the calibrated range,
    # clipped, costs the most: the minimum)
    assert np.median(cos) > 0.9999 and cos.min() > 0.995


def test_squared_distances_move_no_more_than_the_bound():
    rng = np.random.default_rng(1)
    codec = Int8Codec.calibrate(unit(rng, 3000))
    a, b = unit(rng, 400), unit(rng, 400)
    b[:200] = a[:200] + 0.05 * unit(rng, 200)  # near pairs too, not only strangers
    b[:200] /= np.linalg.norm(b[:200], axis=1, keepdims=True)
    a, b = (
        np.clip(a, -codec.scale * LEVELS, codec.scale * LEVELS),
        np.clip(b, -codec.scale * LEVELS, codec.scale * LEVELS),
    )  # in range, where the bound is promised
    d = ((a - b) ** 2).sum(1)
    dq = ((codec.roundtrip(a) - codec.roundtrip(b)) ** 2).sum(1)
    bound = np.array([codec.distance_error_bound(x) for x in d])
    assert (np.abs(dq - d) <= bound + 1e-6).all()
    assert np.abs(dq - d).max() < 0.05  # and the bound is not vacuous at this scale


def test_calibration_maps_the_largest_value_to_127_and_clips_beyond():
    x = np.array([[0.5, -0.2], [-0.25, 0.1]], np.float32)
    codec = Int8Codec.calibrate(x)
    np.testing.assert_allclose(codec.scale, [0.5 / 127, 0.2 / 127], rtol=1e-6)
    assert codec.encode(x).tolist() == [[127, -127], [-64, 64]]
    assert codec.encode(np.array([[2.0, -3.0]])).tolist() == [[127, -127]]  # clipped
    robust = Int8Codec.calibrate(np.vstack([x, [[50.0, 0.0]]]), percentile=50)
    assert robust.scale[0] < 1.0 / 127  # an outlier does not set the range


def test_the_codec_travels_as_json_and_refuses_what_it_cannot_code():
    codec = Int8Codec.calibrate(unit(np.random.default_rng(2), 100, 16))
    again = Int8Codec.from_dict(codec.to_dict())
    np.testing.assert_array_equal(again.scale, codec.scale)
    x = unit(np.random.default_rng(3), 4, 16)
    np.testing.assert_array_equal(again.encode(x), codec.encode(x))
    for bad in (np.zeros(3), np.array([1.0, np.nan]), np.ones((2, 2)), np.array([])):
        with pytest.raises(ValueError):
            Int8Codec(bad)
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        codec.encode(np.ones((2, 8)))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(np.full((1, 16), np.nan))
    with pytest.raises(ValueError, match="int8"):
        codec.decode(np.zeros((1, 16), np.int16))
    with pytest.raises(ValueError, match="kind"):
        Int8Codec.from_dict({"kind": "pq", "scale": [1.0]})
    with pytest.raises(ValueError, match="percentile"):
        Int8Codec.calibrate(x, percentile=0)
