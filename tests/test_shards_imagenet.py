"""`neumeta-dist shards --source imagenet`: ImageNet's archives as downloaded (train tar of class
tars, flat validation tar + devkit labels) become the shards of their extracted tree, byte for
byte; `--workers N` writes the same shards as one process."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from neumeta_dist.data.shards import DEVKIT, TRAIN_ARCHIVE, VAL_ARCHIVE, ShardError, write_dataset

# ILSVRC2012_IDs are not in wnid order (ID 1 is n02119789, not n01440764): the devkit maps them
IDS = {"n02": 1, "n00": 2, "n01": 3}


def _tar(path: Path, files: dict[str, bytes]) -> None:
    with open(path, "wb") as fh:
        _tar_to(fh, files)


def _archives(tree: Path, out: Path) -> Path:
    """The three downloads of `tree` (make_image_folder's layout), as image-net.org ships them; the
    tree's val/ is renamed to what extracting them and sorting val by class (valprep.sh) gives."""
    import scipy.io
    out.mkdir()
    classes = {}
    for cdir in sorted((tree / "train").iterdir()):
        buf = io.BytesIO()
        _tar_to(buf, {f.name: f.read_bytes() for f in sorted(cdir.iterdir())})
        classes[f"{cdir.name}.tar"] = buf.getvalue()
    _tar(out / TRAIN_ARCHIVE, classes)
    val = sorted((tree / "val").glob("*/*.JPEG"))[::-1]  # numbered in another order than the classes
    names = {f: f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i, f in enumerate(val)}
    _tar(out / VAL_ARCHIVE, {names[f]: f.read_bytes() for f in val})
    truth = "".join(f"{IDS[f.parent.name]}\n" for f in sorted(val, key=lambda f: names[f]))
    synsets = np.array([(i, w, w, "", 0) for w, i in IDS.items()] + [(1001, "n99", "all", "", 3)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")])
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    with tarfile.open(out / DEVKIT, "w:gz") as tar:
        for name, data in {"meta.mat": mat.getvalue(), "ILSVRC2012_validation_ground_truth.txt": truth.encode()}.items():
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for f, name in names.items():  # the extracted, sorted tree
        f.rename(f.parent / name)
    return out


def _tar_to(fh, files: dict[str, bytes]) -> None:
    with tarfile.open(fileobj=fh, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _files(folder: Path) -> dict[str, bytes]:
    """Every tar, byte for byte (index.json: compared as data, its `source` differs)."""
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.tar"))}


def test_the_downloaded_archives_give_the_shards_of_their_extracted_tree(tmp_path):
    pytest.importorskip("scipy")
    tree = make_image_folder(tmp_path / "tree", per_class=6, val=3)
    archives = _archives(tree, tmp_path / "downloads")
    b = write_dataset("imagefolder", tree, tmp_path / "from_tree", maxcount=5, holdout=0.2, name="imagenet")
    for workers in (1, 3):  # 3 after 1: forked workers must not share the parent's open archive
        a = write_dataset("imagenet", archives, tmp_path / f"archives_{workers}", maxcount=5, holdout=0.2,
                          name="imagenet", workers=workers)
        assert a["splits"]["test"]["count"] == 9
        assert a["splits"]["train"]["count"] + a["splits"]["holdout"]["count"] == 18
        assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
        assert _files(tmp_path / f"archives_{workers}") == _files(tmp_path / "from_tree")


def test_more_workers_write_the_same_shards_as_one(tmp_path):
    tree = make_image_folder(tmp_path / "tree", per_class=8, val=2)
    write_dataset("imagefolder", tree, tmp_path / "one", maxcount=5, holdout=0.2, workers=1)
    write_dataset("imagefolder", tree, tmp_path / "three", maxcount=5, holdout=0.2, workers=3)
    assert _files(tmp_path / "one") == _files(tmp_path / "three")
    assert (tmp_path / "one" / "index.json").read_bytes() == (tmp_path / "three" / "index.json").read_bytes()


def test_a_worker_that_finds_a_bad_image_names_it(tmp_path):
    tree = make_image_folder(tmp_path / "tree", per_class=8)
    bad = tree / "train" / "n01" / "n01_3.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(ShardError, match=r"n01_3\.JPEG: not a readable image"):
        write_dataset("imagefolder", tree, tmp_path / "out", workers=2)


def test_missing_archives_are_named(tmp_path):
    with pytest.raises(ShardError, match=rf"{TRAIN_ARCHIVE} not found"):
        write_dataset("imagenet", tmp_path, tmp_path / "out")
