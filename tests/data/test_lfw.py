"""LFW protocol files: both pair formats, fold structure, person-disjointness, errors, paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facenet.data.lfw import (
    ImageResolver,
    ProtocolFileError,
    image_stem,
    person_disjoint_folds,
    read_pairs,
    read_people,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


VIEW2 = """2\t2
Ann\t1\t2
Bob\t1\t3
Ann\t1\tCid\t1
Bob\t2\tDee\t1
Eve\t1\t2
Fay\t2\t4
Eve\t1\tGus\t1
Fay\t3\tHal\t1
"""


def test_view2_folds_are_consecutive_blocks_and_formats_parse(tmp_path):
    p = read_pairs(write(tmp_path, "pairs.txt", VIEW2))
    assert len(p) == 8 and p.n_folds == 2 and p.fold_source == "file"
    assert p.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert p.issame.tolist() == [True, True, False, False] * 2
    assert p.left[0] == "Ann/Ann_0001" and p.right[0] == "Ann/Ann_0002"
    assert p.left[2] == "Ann/Ann_0001" and p.right[2] == "Cid/Cid_0001"
    assert p.left_people[3] == "Bob" and p.right_people[3] == "Dee"
    assert p.person_disjoint
    assert p.stems()[:3] == ["Ann/Ann_0001", "Ann/Ann_0002", "Bob/Bob_0001"]


def test_space_separated_lines_parse_too(tmp_path):
    p = read_pairs(write(tmp_path, "pairs.txt", VIEW2.replace("\t", " ")))
    assert p.issame.sum() == 4


def test_view1_split_is_seeded_balanced_and_person_disjoint(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"P{i:03d}" for i in range(120)]
    same = [f"{names[i]}\t1\t2" for i in range(60)]
    diff = [f"{names[rng.integers(120)]}\t1\t{names[rng.integers(120)]}\t3" for _ in range(60)]
    path = write(tmp_path, "dev.txt", "60\n" + "\n".join(same + diff) + "\n")
    a, b = read_pairs(path), read_pairs(path)
    assert a.fold_source == "person-disjoint-random" and a.n_folds == 10
    assert np.array_equal(a.folds, b.folds)  # seeded
    assert not np.array_equal(a.folds, read_pairs(path, seed=1).folds)
    assert a.person_disjoint
    # independent check: no name appears in two folds
    where: dict[str, set[int]] = {}
    for left, right, f in zip(a.left_people, a.right_people, a.folds, strict=True):
        where.setdefault(left, set()).add(int(f))
        where.setdefault(right, set()).add(int(f))
    assert all(len(v) == 1 for v in where.values())
    assert set(a.folds.tolist()) == set(range(10))


def test_person_disjoint_folds_keeps_a_connected_group_together():
    left = ["A", "B", "C", "D", "E", "F"]
    right = ["B", "C", "A", "D", "F", "E"]  # components {A,B,C}, {D}, {E,F}
    folds = person_disjoint_folds(left, right, n_folds=2, seed=0)
    assert folds[0] == folds[1] == folds[2]
    assert folds[4] == folds[5]


def test_real_view2_is_exactly_ten_blocks_and_matches_people_folds(lfw_dir):
    p = read_pairs(lfw_dir / "pairs.txt")
    assert len(p) == 6000 and p.n_folds == 10
    for f in range(10):
        idx = np.flatnonzero(p.folds == f)
        assert idx.tolist() == list(range(600 * f, 600 * (f + 1)))
        assert p.issame[idx[:300]].all() and not p.issame[idx[300:]].any()
    assert p.person_disjoint
    people = read_people(lfw_dir / "people.txt")
    fold_of = dict(zip(people.names, people.folds.tolist(), strict=True))
    for left, right, f in zip(p.left_people, p.right_people, p.folds, strict=True):
        assert fold_of[left] == f and fold_of[right] == f


def test_real_view1_split_is_person_disjoint(lfw_dir):
    p = read_pairs(lfw_dir / "pairsDevTest.txt")
    assert len(p) == 1000 and p.person_disjoint
    assert np.bincount(p.folds).tolist() == [100] * 10
    assert np.bincount(p.folds[p.issame]).tolist() == [50] * 10


def test_real_people_files(lfw_dir):
    people = read_people(lfw_dir / "people.txt")
    assert people.n_folds == 10 and len(people) == 5749 and people.counts.sum() == 13233
    dev = read_people(lfw_dir / "peopleDevTest.txt")
    assert dev.n_folds == 1 and len(dev) == 1711 and dev.counts.sum() == 3708


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("1 1\nAnn\t1\t2\nBob\t1\n", 3, "got 2 fields"),
        ("1 1\nAnn\t1\t2\nBob\t1\tCid\t1\tx\n", 3, "got 5 fields"),
        ("1 1\nAnn\tone\t2\nBob\t1\tCid\t1\n", 2, "image number must be an integer"),
        ("1 1\nAnn\t0\t2\nBob\t1\tCid\t1\n", 2, "must be >= 1"),
        ("x 1\nAnn\t1\t2\nBob\t1\tCid\t1\n", 1, "number of folds must be an integer"),
        ("1 1 1\nAnn\t1\t2\n", 1, "header must be"),
        ("1 1\nBob\t1\tCid\t1\nAnn\t1\t2\n", 2, "same pairs then"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(ProtocolFileError) as e:
        read_pairs(path)
    assert e.value.line == line
    assert f"{path}:{line}:" in str(e.value)
    assert fragment in str(e.value)


def test_pair_count_mismatch_and_missing_file(tmp_path):
    path = write(tmp_path, "short.txt", "2 1\nAnn\t1\t2\nBob\t1\tCid\t1\n")
    with pytest.raises(ProtocolFileError, match="promises 2 x 2 x 1 = 4 pairs, the file has 2"):
        read_pairs(path)
    with pytest.raises(ProtocolFileError, match="file not found"):
        read_pairs(tmp_path / "nope.txt")
    with pytest.raises(ProtocolFileError, match="empty file"):
        read_pairs(write(tmp_path, "empty.txt", "\n\n"))


def test_people_formats_and_errors(tmp_path):
    multi = read_people(write(tmp_path, "people.txt", "2\n2\nAnn\t3\nBob\t1\n1\nCid\t2\n"))
    assert multi.n_folds == 2 and multi.names == ("Ann", "Bob", "Cid")
    assert multi.folds.tolist() == [0, 0, 1] and multi.counts.tolist() == [3, 1, 2]
    assert multi.stems(1) == ["Cid/Cid_0001", "Cid/Cid_0002"]
    single = read_people(write(tmp_path, "dev.txt", "2\nAnn\t3\nBob\t1\n"))
    assert single.n_folds == 1 and len(single) == 2
    bad = write(tmp_path, "bad.txt", "2\nAnn\t3\nBob\n")
    with pytest.raises(ProtocolFileError, match=rf"{bad}:3: expected 'NAME COUNT'"):
        read_people(bad)
    extra = write(tmp_path, "extra.txt", "1\nAnn\t3\nBob\t1\n")
    with pytest.raises(ProtocolFileError, match=rf"{extra}:3: extra lines"):
        read_people(extra)
    short = write(tmp_path, "short.txt", "2\n2\nAnn\t3\nBob\t1\n")
    with pytest.raises(ProtocolFileError, match="promises 2 folds"):
        read_people(short)


def test_image_resolution_finds_extension_on_disk(tmp_path):
    (tmp_path / "Ann").mkdir()
    (tmp_path / "Ann" / "Ann_0001.png").write_bytes(b"x")
    (tmp_path / "Ann" / "Ann_0002.jpg").write_bytes(b"x")
    (tmp_path / "Ann" / "Ann_0002.png").write_bytes(b"x")  # .jpg wins a clash
    r = ImageResolver(tmp_path)
    assert r(image_stem("Ann", 1)) == tmp_path / "Ann" / "Ann_0001.png"
    assert r("Ann/Ann_0002") == tmp_path / "Ann" / "Ann_0002.jpg"
    with pytest.raises(FileNotFoundError, match="Ann_0003.jpg: image not found"):
        r("Ann/Ann_0003")
    with pytest.raises(FileNotFoundError, match="Bob_0001"):
        r("Bob/Bob_0001")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageResolver(tmp_path / "missing")
