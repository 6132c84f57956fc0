"""Every verb x every class of bad argument: a non-zero exit, one line on stderr naming the file or
option, no traceback, and nothing that existed before changed (files, folders, symlinks and what
they point at).

Classes: missing, folder-for-file, file-for-folder, corrupt, truncated, wrong architecture, empty,
out-of-range numbers, unwritable output (a path under a file: root ignores permission bits), and
symlinked output. A verb that takes no argument of a class has no row for it; the table at the
end of the module checks that every verb has the classes its arguments allow.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from _world import assert_one_line_error, snapshot

NONE = ["--crop", "none"]
MODEL = ["--model", "{w}/model.safetensors", *NONE]
EVAL = ["eval", "--model", "{w}/model.safetensors", "--data", "{w}/lfw", "--pairs", "{w}/pairs.txt"]


@dataclass(frozen=True)
class Case:
    verb: str
    kind: str  # the class of bad argument
    argv: tuple[str, ...]
    names: tuple[str, ...]  # the stderr line must contain one of these (the file or option)
    resume_with: str = ""  # train --resume: copy this world file to {o}/run/last.pt first


def case(verb: str, kind: str, argv: list[str], *names: str, resume_with: str = "") -> Case:
    return Case(verb, kind, tuple(argv), names, resume_with)


MODEL_FILES = [
    ("missing", "missing.safetensors"),
    ("folder-for-file", "folder"),
    ("corrupt", "corrupt.safetensors"),
    ("corrupt", "corrupt.pt"),
    ("truncated", "trunc.safetensors"),
    ("truncated", "trunc.pt"),
    ("wrong architecture", "wrongarch.safetensors"),
    ("wrong architecture", "wrongarch.pt"),
    ("empty", "empty.safetensors"),
    ("empty", "empty.pt"),
]
PHOTOS = [
    ("missing", "missing.jpg"),
    ("folder-for-file", "folder"),
    ("corrupt", "corrupt.jpg"),
    ("truncated", "truncated.jpg"),
    ("empty", "empty.jpg"),
]
EMBEDDINGS = [
    ("missing", "missing.npz"),
    ("folder-for-file", "folder"),
    ("corrupt", "corrupt.npz"),
    ("truncated", "trunc.npz"),
    ("empty", "empty.npz"),
    ("wrong architecture", "wrongshape.npz"),
]

CASES: list[Case] = []
# -- models
CASES += [
    case("models", "missing", ["models", "nosuchmodel"], "nosuchmodel"),
    case("models", "out-of-range numbers", ["models", "--norm", "batchnormz"], "--norm"),
    case("models", "folder-for-file", ["models", "--json", "{w}/folder"], "--json"),
    case("models", "unwritable output", ["models", "--json", "{w}/afile.txt/m.json"], "--json"),
    case("models", "symlinked output", ["models", "--json", "{w}/link.out"], "--json"),
]
# -- export
CASES += [case("export", k, ["export", f"{{w}}/{f}", "{o}/m.onnx"], f) for k, f in MODEL_FILES]
CASES += [
    case("export", "missing", ["export", "nosuchmodel", "{o}/m.onnx"], "nosuchmodel"),
    case("export", "file-for-folder", ["export", "{w}/model.pt", "{w}/folder"], "folder"),
    case("export", "unwritable output", ["export", "tiny", "{w}/afile.txt/m.onnx"], "afile.txt"),
    case("export", "symlinked output", ["export", "tiny", "{w}/link.out"], "link.out"),
    case(
        "export", "out-of-range numbers", ["export", "tiny", "{o}/m.onnx", "--atol", "-1"], "--atol"
    ),
]
# -- align
ALIGN = ["align", "{w}/lfw", "{o}/aligned", "--quiet"]
CASES += [
    case("align", "missing", ["align", "{w}/nothere", "{o}/a"], "nothere"),
    case("align", "file-for-folder", ["align", "{w}/afile.txt", "{o}/a"], "afile.txt"),
    case("align", "file-for-folder", ["align", "{w}/lfw", "{w}/afile.txt"], "afile.txt"),
    case("align", "unwritable output", ["align", "{w}/lfw", "{w}/afile.txt/a"], "afile.txt"),
    case("align", "symlinked output", ["align", "{w}/lfw", "{w}/alignlink", "--quiet"], "Ann_A"),
    case(
        "align",
        "symlinked output",
        ["align", "{w}/lfw", "{w}/alignuser", "--quiet"],
        "manifest.csv",
    ),
    case("align", "out-of-range numbers", [*ALIGN, "--size", "0"], "--size"),
    case("align", "out-of-range numbers", [*ALIGN, "--workers", "0"], "--workers"),
    case("align", "out-of-range numbers", [*ALIGN, "--batch-size", "-3"], "--batch-size"),
    case("align", "out-of-range numbers", [*ALIGN, "--margin", "-1"], "--margin"),
    case("align", "out-of-range numbers", [*ALIGN, "--max-side", "-5"], "--max-side"),
    case("align", "missing", [*ALIGN, "--detections", "{w}/missing.csv"], "missing.csv"),
    case("align", "folder-for-file", [*ALIGN, "--detections", "{w}/folder"], "folder"),
    case("align", "corrupt", [*ALIGN, "--detections", "{w}/afile.txt"], "afile.txt"),
    case("align", "empty", [*ALIGN, "--detections", "{w}/empty.txt"], "empty.txt"),
    case("align", "wrong architecture", [*ALIGN, "--model", "nosuchmodel"], "nosuchmodel"),
]
# -- eval
EVAL_ARGS = ["--data", "{w}/lfw", "--pairs", "{w}/pairs.txt", "--no-cache", "--quiet"]
CASES += [case("eval", k, ["eval", "--model", f"{{w}}/{f}", *EVAL_ARGS], f) for k, f in MODEL_FILES]
CASES += [
    case(
        "eval",
        "missing",
        [*EVAL[:3], "--data", "{w}/nothere", "--pairs", "{w}/pairs.txt"],
        "--data",
    ),
    case(
        "eval",
        "file-for-folder",
        [*EVAL[:3], "--data", "{w}/afile.txt", "--pairs", "{w}/pairs.txt"],
        "--data",
    ),
    case("eval", "missing", [*EVAL[:5], "--pairs", "{w}/nothere.txt"], "--pairs"),
    case("eval", "folder-for-file", [*EVAL[:5], "--pairs", "{w}/folder"], "--pairs"),
    case(
        "eval", "corrupt", [*EVAL[:5], "--pairs", "{w}/badpairs.txt", "--no-cache"], "badpairs.txt"
    ),
    case("eval", "empty", [*EVAL[:5], "--pairs", "{w}/empty.txt", "--no-cache"], "empty.txt"),
    case(
        "eval",
        "corrupt",
        [*EVAL[:3], "--data", "{w}/lfwbad", "--pairs", "{w}/pairs.txt", "--no-cache", "--quiet"],
        "lfwbad",
    ),
    case("eval", "out-of-range numbers", [*EVAL, "--batch-size", "0"], "--batch-size"),
    case("eval", "out-of-range numbers", [*EVAL, "--batch-size", "-1"], "--batch-size"),
    case("eval", "out-of-range numbers", [*EVAL, "--far", "0"], "--far"),
    case("eval", "out-of-range numbers", [*EVAL, "--far", "1.5"], "--far"),
    case("eval", "out-of-range numbers", [*EVAL, "--center-fraction", "0"], "--center-fraction"),
    case("eval", "folder-for-file", [*EVAL, "--json", "{w}/folder"], "--json"),
    case("eval", "unwritable output", [*EVAL, "--json", "{w}/afile.txt/r.json"], "--json"),
    case("eval", "symlinked output", [*EVAL, "--json", "{w}/link.out"], "--json"),
    case("eval", "file-for-folder", [*EVAL, "--report", "{w}/afile.txt"], "--report"),
    case("eval", "unwritable output", [*EVAL, "--cache", "{w}/afile.txt/c"], "--cache"),
]
# -- convert
CASES += [
    case(
        "convert",
        "missing",
        ["convert", "sandberg", "--graph", "{w}/no.pb", "--out", "{o}/c.safetensors"],
        "--graph",
    ),
    case(
        "convert",
        "folder-for-file",
        ["convert", "sandberg", "--graph", "{w}/folder", "--out", "{o}/c.safetensors"],
        "--graph",
    ),
    case(
        "convert",
        "corrupt",
        ["convert", "sandberg", "--graph", "{w}/corrupt.pt", "--out", "{o}/c.safetensors"],
        "corrupt.pt",
    ),
    case(
        "convert",
        "empty",
        ["convert", "sandberg", "--graph", "{w}/empty.txt", "--out", "{o}/c.safetensors"],
        "empty.txt",
    ),
    case("convert", "file-for-folder", ["convert", "sandberg", "--out", "{w}/folder"], "--out"),
    case(
        "convert",
        "unwritable output",
        ["convert", "sandberg", "--out", "{w}/afile.txt/c.safetensors"],
        "--out",
    ),
    case("convert", "symlinked output", ["convert", "sandberg", "--out", "{w}/link.out"], "--out"),
]
# -- train
TRAIN = ["train", "--config", "configs/smoke.yaml", "output.dir={o}/run", "output.progress=false"]
CASES += [
    case("train", "missing", ["train", "--config", "{w}/nothere.yaml"], "nothere.yaml"),
    case("train", "folder-for-file", ["train", "--config", "{w}/folder"], "folder"),
    case("train", "corrupt", ["train", "--config", "{w}/corrupt.yaml"], "corrupt.yaml"),
    case("train", "corrupt", [*TRAIN, "optimiser.lr=[0.1"], "optimiser.lr"),
    case("train", "wrong architecture", [*TRAIN, "model.name=nosuchmodel"], "nosuchmodel"),
    case("train", "out-of-range numbers", [*TRAIN, "max_steps=0"], "max_steps"),
    case("train", "out-of-range numbers", [*TRAIN, "optimiser.lr=-1"], "optimiser.lr"),
    case("train", "out-of-range numbers", [*TRAIN, "optimiser.lr=abc"], "optimiser.lr"),
    case("train", "out-of-range numbers", [*TRAIN, "optimiser.lrr=1"], "optimiser.lrr"),
    case("train", "unwritable output", [*TRAIN[:3], "output.dir={w}/afile.txt/run"], "afile.txt"),
    case("train", "missing", [*TRAIN, "--resume"], "last.pt"),
]
CASES += [
    case("train", k, [*TRAIN, "--resume"], "last.pt", resume_with=f)
    for k, f in MODEL_FILES
    if f.endswith(".pt")
]
# -- embed
EMBED = ["embed", "{w}/photos", "--out", "{o}/e.npz"]
CASES += [case("embed", k, [*EMBED, "--model", f"{{w}}/{f}", *NONE], f) for k, f in MODEL_FILES]
CASES += [
    case("embed", k, ["embed", f"{{w}}/{f}", "--out", "{o}/e.npz", *MODEL], f)
    for k, f in PHOTOS
    if k != "folder-for-file"
]
CASES += [
    case("embed", "folder-for-file", [*EMBED[:3], "{w}/folder", *MODEL], "--out"),
    case("embed", "unwritable output", [*EMBED[:3], "{w}/afile.txt/e.npz", *MODEL], "--out"),
    case("embed", "symlinked output", [*EMBED[:3], "{w}/link.out", *MODEL], "--out"),
    case("embed", "out-of-range numbers", [*EMBED, *MODEL, "--batch-size", "0"], "--batch-size"),
    case(
        "embed", "wrong architecture", [*EMBED, *MODEL[2:], "--model", "nosuchmodel"], "nosuchmodel"
    ),
]
# -- verify
VERIFY = ["verify", "{w}/photo.jpg", "{w}/photo2.jpg"]
CASES += [case("verify", k, [*VERIFY, "--model", f"{{w}}/{f}", *NONE], f) for k, f in MODEL_FILES]
CASES += [
    case("verify", k, ["verify", f"{{w}}/{f}", "{w}/photo.jpg", *MODEL], f) for k, f in PHOTOS
]
CASES += [
    case("verify", "out-of-range numbers", [*VERIFY, *MODEL, "--threshold", "5"], "--threshold"),
    case("verify", "out-of-range numbers", [*VERIFY, *MODEL, "--far", "0"], "--far"),
    case("verify", "out-of-range numbers", [*VERIFY, *MODEL, "--face-a", "-1"], "--face-a"),
    case("verify", "out-of-range numbers", [*VERIFY, *MODEL, "--face-b", "3"], "photo2.jpg"),
    case("verify", "out-of-range numbers", [*VERIFY, *MODEL, "--batch-size", "0"], "--batch-size"),
]
# -- gallery
G = ["--gallery", "{w}/gallery"]
CASES += [
    case(
        "gallery",
        k,
        ["gallery", "enroll", "bob", "{w}/photo2.jpg", *G, "--model", f"{{w}}/{f}", *NONE],
        f,
    )
    for k, f in MODEL_FILES
]
CASES += [
    case("gallery", k, ["gallery", "enroll", "bob", f"{{w}}/{f}", *G, *MODEL], f)
    for k, f in PHOTOS
    if k != "folder-for-file"
]
CASES += [
    case(
        "gallery",
        "out-of-range numbers",
        ["gallery", "enroll", "bob\nann\t1 photo(s)", "{w}/photo2.jpg", *G, *MODEL],
        "identity name",
    ),
    case("gallery", "empty", ["gallery", "enroll", "  ", "{w}/photo2.jpg", *G, *MODEL], "name"),
    case("gallery", "empty", ["gallery", "enroll", "bob", "{w}/folder", *G, *MODEL], "folder"),
    case(
        "gallery",
        "file-for-folder",
        ["gallery", "enroll", "bob", "{w}/photo2.jpg", "--gallery", "{w}/afile.txt", *MODEL],
        "afile.txt",
    ),
    case(
        "gallery", "corrupt", ["gallery", "list", "--gallery", "{w}/badgallery"], "gallery.sqlite"
    ),
    case("gallery", "missing", ["gallery", "list", "--gallery", "{w}/nothere"], "nothere"),
    case("gallery", "missing", ["gallery", "remove", "ghost", *G], "ghost"),
    case("gallery", "missing", ["gallery", "rebuild", "--gallery", "{w}/nothere"], "nothere"),
    case(
        "gallery", "file-for-folder", ["gallery", "list", "--gallery", "{w}/afile.txt"], "afile.txt"
    ),
]
# -- identify
IDENTIFY = ["identify", "{w}/photo2.jpg", *G]
CASES += [
    case("identify", k, [*IDENTIFY, "--model", f"{{w}}/{f}", *NONE], f) for k, f in MODEL_FILES
]
CASES += [case("identify", k, ["identify", f"{{w}}/{f}", *G, *NONE], f) for k, f in PHOTOS]
CASES += [
    case("identify", "out-of-range numbers", [*IDENTIFY, *NONE, "--k", "0"], "--k"),
    case(
        "identify", "out-of-range numbers", [*IDENTIFY, *NONE, "--threshold", "-1"], "--threshold"
    ),
    case("identify", "out-of-range numbers", [*IDENTIFY, *NONE, "--face", "-1"], "--face"),
    case("identify", "out-of-range numbers", [*IDENTIFY, *NONE, "--face", "2"], "photo2.jpg"),
    case(
        "identify",
        "missing",
        ["identify", "{w}/photo.jpg", "--gallery", "{w}/nothere", *NONE],
        "nothere",
    ),
    case(
        "identify",
        "file-for-folder",
        ["identify", "{w}/photo.jpg", "--gallery", "{w}/afile.txt", *NONE],
        "afile.txt",
    ),
    case(
        "identify",
        "corrupt",
        ["identify", "{w}/photo.jpg", "--gallery", "{w}/badgallery", *NONE],
        "gallery.sqlite",
    ),
]
# -- cluster
CL = ["cluster", "--out", "{o}/c"]
CASES += [case("cluster", k, [*CL, "--embeddings", f"{{w}}/{f}"], f) for k, f in EMBEDDINGS]
CASES += [
    case(
        "cluster", k, ["cluster", "{w}/photos", "--out", "{o}/c", "--model", f"{{w}}/{f}", *NONE], f
    )
    for k, f in MODEL_FILES
]
CASES += [
    case("cluster", k, ["cluster", f"{{w}}/{f}", "--out", "{o}/c", *MODEL], f)
    for k, f in PHOTOS
    if k != "folder-for-file"
]
CLE = ["cluster", "--embeddings", "{w}/emb.npz"]
CASES += [
    case("cluster", "file-for-folder", [*CLE, "--out", "{w}/afile.txt"], "--out"),
    case("cluster", "unwritable output", [*CLE, "--out", "{w}/afile.txt/c"], "--out"),
    case("cluster", "symlinked output", [*CLE, "--out", "{w}/clusterlink"], "faces"),
    case("cluster", "symlinked output", [*CLE, "--out", "{w}/clusteruser"], "index.html"),
    case("cluster", "out-of-range numbers", [*CLE, "--out", "{o}/c", "--k", "0"], "--k"),
    case(
        "cluster",
        "out-of-range numbers",
        [*CLE, "--out", "{o}/c", "--threshold", "9"],
        "--threshold",
    ),
    case(
        "cluster",
        "out-of-range numbers",
        [*CLE, "--out", "{o}/c", "--min-cluster-size", "0"],
        "--min-cluster-size",
    ),
]
# -- demo
CASES += [
    case("demo", "missing", ["demo", "--data", "{w}/nothere", "--out", "{o}/d"], "nothere"),
    case(
        "demo",
        "file-for-folder",
        ["demo", "--data", "{w}/lfw", "--out", "{w}/afile.txt"],
        "afile.txt",
    ),
    case(
        "demo",
        "symlinked output",
        ["demo", "--data", "{w}/lfw", "--out", "{w}/link.out"],
        "link.out",
    ),
    case(
        "demo", "symlinked output", ["demo", "--data", "{w}/lfw", "--out", "{w}/victim"], "victim"
    ),
    case("demo", "out-of-range numbers", ["demo", "--gallery-people", "0"], "--gallery-people"),
]

# -- serve (every case fails before the server would start listening)
SERVE = ["serve", *MODEL, "--gallery", "{o}/g"]
CASES += [
    case("serve", k, ["serve", "--model", f"{{w}}/{f}", *NONE, "--gallery", "{o}/g"], f)
    for k, f in MODEL_FILES
]
CASES += [
    case("serve", "file-for-folder", [*SERVE[:-1], "{w}/afile.txt"], "afile.txt"),
    case("serve", "corrupt", [*SERVE[:-1], "{w}/badgallery"], "gallery.sqlite"),
    case("serve", "corrupt", [*SERVE, "--keys", "{w}/afile.txt"], "afile.txt"),
    case("serve", "folder-for-file", [*SERVE, "--keys", "{w}/folder"], "folder"),
    case("serve", "unwritable output", [*SERVE[:-1], "{w}/afile.txt/g"], "afile.txt"),
    case("serve", "out-of-range numbers", [*SERVE, "--port", "0"], "--port"),
    case("serve", "out-of-range numbers", [*SERVE, "--port", "70000"], "port"),
    case("serve", "out-of-range numbers", [*SERVE, "--max-images", "0"], "--max-images"),
    case("serve", "out-of-range numbers", [*SERVE, "--rate", "-1"], "--rate"),
    case("serve", "out-of-range numbers", [*SERVE, "--timeout", "0"], "--timeout"),
]
# -- keys
KEYS = ["--keys", "{w}/afile.txt"]
CASES += [
    case("keys", "missing", ["keys", "list", "--keys", "{w}/nothere.sqlite"], "nothere.sqlite"),
    case("keys", "missing", ["keys", "revoke", "ab12", "--keys", "{w}/nothere.sqlite"], "nothere"),
    case("keys", "folder-for-file", ["keys", "list", "--keys", "{w}/folder"], "folder"),
    case("keys", "corrupt", ["keys", "list", *KEYS], "afile.txt"),
    case("keys", "corrupt", ["keys", "create", "--scope", "read", *KEYS], "afile.txt"),
    case("keys", "out-of-range numbers", ["keys", "create", "--scope", "root"], "--scope"),
    case(
        "keys",
        "unwritable output",
        ["keys", "create", "--scope", "read", "--keys", "{w}/afile.txt/k.sqlite"],
        "afile.txt",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=lambda c: f"{c.verb}:{c.kind}:{' '.join(c.argv[1:])}")
def test_bad_argument_is_one_clear_line_and_changes_nothing(c, cli, world, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    if c.resume_with:
        (out / "run").mkdir()
        shutil.copy(world / c.resume_with, out / "run" / "last.pt")
    before = snapshot(world)
    argv = [a.format(w=world, o=out) for a in c.argv]
    code, _, err = cli(*argv)
    assert_one_line_error(code, err, *(n.format(w=world, o=out) for n in c.names))
    assert snapshot(world) == before


# every verb has a row for each class its arguments can take
ALL = {
    "missing",
    "folder-for-file",
    "file-for-folder",
    "corrupt",
    "truncated",
    "wrong architecture",
    "empty",
    "out-of-range numbers",
    "unwritable output",
    "symlinked output",
}
FILES_IN = {"corrupt", "truncated", "wrong architecture", "empty"}  # kinds of bad input file
NO_OUTPUT = {"unwritable output", "symlinked output"}
EXPECTED = {
    "models": ALL - FILES_IN - {"file-for-folder"},
    "export": ALL,
    "align": ALL - {"truncated"},
    "eval": ALL,
    "convert": ALL - {"truncated", "wrong architecture", "out-of-range numbers"},
    "train": ALL - {"file-for-folder", "symlinked output"},
    "embed": ALL - {"file-for-folder"},
    "verify": ALL - {"file-for-folder"} - NO_OUTPUT,
    "gallery": ALL - NO_OUTPUT,
    "identify": ALL - NO_OUTPUT,
    "cluster": ALL,
    "demo": {"missing", "file-for-folder", "out-of-range numbers", "symlinked output"},
    "serve": ALL - {"symlinked output"},
    "keys": {"missing", "folder-for-file", "corrupt", "out-of-range numbers", "unwritable output"},
}


def test_the_table_covers_every_verb_and_its_classes():
    from facenet.cli import COMMANDS

    assert set(EXPECTED) == set(COMMANDS)
    for verb, kinds in EXPECTED.items():
        assert {c.kind for c in CASES if c.verb == verb} == kinds, verb
