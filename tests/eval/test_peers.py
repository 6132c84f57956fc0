"""The dlib-resnet peer wrapper (extra ``peers``): same numbers as dlib's own pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from facenet.eval.peers import PEERS, is_peer, load_peer


def test_peer_names():
    assert is_peer("dlib-resnet") and not is_peer("tiny") and PEERS == ("dlib-resnet",)
    with pytest.raises(ValueError, match="unknown peer"):
        load_peer("openface")


@pytest.mark.slow
def test_dlib_wrapper_matches_dlib_descriptor(lfw_dir):
    dlib = pytest.importorskip("dlib", reason="extra 'peers' not installed")
    models = pytest.importorskip("face_recognition_models")
    from facenet.data.images import load_image
    from facenet.eval.embedding import embed_paths

    paths = [
        lfw_dir / "lfw-deepfunneled/Abel_Pacheco/Abel_Pacheco_0001.jpg",
        lfw_dir / "lfw-deepfunneled/Abel_Pacheco/Abel_Pacheco_0004.jpg",
    ]
    peer = load_peer("dlib-resnet")
    ours = embed_paths(peer, paths, batch_size=2)
    # dlib's own one-call pipeline, as in shared/peers/peer_dlib_lfw.py
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    rec = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    for p, e in zip(paths, ours, strict=True):
        img = load_image(p)
        box = max(det(img, 1), key=lambda b: b.area())
        ref = np.array(rec.compute_face_descriptor(img, sp(img, box)))
        np.testing.assert_allclose(e, ref, atol=1e-5)
    # same person: below dlib's documented Euclidean threshold 0.6
    assert np.sum((ours[0] - ours[1]) ** 2) < 0.36
