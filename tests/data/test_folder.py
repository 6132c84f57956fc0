import numpy as np
import pytest

from facenet.data.folder import (
    pairs_people,
    read_people_folds,
    read_people_list,
    scan_roots,
    split_excluded_people,
)
from facenet.data.synthetic import write_synthetic_folders


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    a = write_synthetic_folders(base / "a", 4, 3, size=16, seed=1)
    b = write_synthetic_folders(base / "b", 3, 1, size=16, seed=2)
    return a, b


def test_scan_merges_roots_and_applies_minimum(roots):
    a, b = roots
    ds = scan_roots([a, b], min_images_per_identity=2)
    assert len(ds.identities) == 4 and len(ds) == 12
    assert ds.counts().tolist() == [3, 3, 3, 3]
    assert list(ds.labels) == sorted(ds.labels)
    everyone = scan_roots([a, b], min_images_per_identity=1)
    assert len(everyone.identities) == 7


def test_same_identity_in_two_roots_is_merged(tmp_path):
    write_synthetic_folders(tmp_path / "x", 2, 1, size=8, seed=5)
    write_synthetic_folders(tmp_path / "y", 2, 1, size=8, seed=5)
    ds = scan_roots([tmp_path / "x", tmp_path / "y"], min_images_per_identity=2)
    assert len(ds.identities) == 2 and ds.counts().tolist() == [2, 2]


def test_exclude_include_and_max(roots):
    a, _ = roots
    all_ids = scan_roots([a]).identities
    ds = scan_roots([a], exclude=[all_ids[0]])
    assert all_ids[0] not in ds.identities and len(ds.identities) == 3
    assert scan_roots([a], include=[all_ids[1]]).identities == (all_ids[1],)
    assert len(scan_roots([a], max_identities=2).identities) == 2


def test_missing_root_and_empty_result_are_clear_errors(tmp_path, roots):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        scan_roots([tmp_path / "nope"])
    with pytest.raises(ValueError, match=">= 99 images"):
        scan_roots([roots[0]], min_images_per_identity=99)


def test_lfw_view1_people_lists_partition_people_txt(lfw_dir):
    train = set(read_people_list(lfw_dir / "peopleDevTrain.txt"))
    test = set(read_people_list(lfw_dir / "peopleDevTest.txt"))
    assert (len(train), len(test)) == (4038, 1711)
    assert not train & test
    folds = read_people_folds(lfw_dir / "people.txt")
    assert len(folds) == 10
    everyone = set().union(*map(set, folds))
    assert train | test == everyone
    # the test pairs only use test people: excluding them keeps training person-disjoint
    assert pairs_people(lfw_dir / "pairsDevTest.txt") <= test
    assert split_excluded_people("lfw_view1", lfw_dir) == test
    assert split_excluded_people("lfw_folds", lfw_dir, 3) == set(folds[3])


def test_view1_split_on_real_lfw_leaves_only_train_people(lfw_dir):
    excluded = split_excluded_people("lfw_view1", lfw_dir)
    ds = scan_roots([lfw_dir / "lfw-deepfunneled"], min_images_per_identity=2, exclude=excluded)
    train = set(read_people_list(lfw_dir / "peopleDevTrain.txt"))
    assert set(ds.identities) <= train
    assert np.all(ds.counts() >= 2)
    assert not set(ds.identities) & pairs_people(lfw_dir / "pairsDevTest.txt")


def test_bad_split_name():
    with pytest.raises(ValueError, match="unknown split"):
        split_excluded_people("view3", "/tmp")
