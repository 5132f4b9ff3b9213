"""Images/s of `neumeta-dist shards` (the one-off conversion to WebDataset shards) per worker
count, from an ImageFolder tree and from ImageNet's downloaded archives.

    .venv/bin/python benchmarks/shards.py --out runs/bench_shards [--images 2000 --workers 1,2]

Generates `--images` JPEGs of ImageNet-like sizes (benchmarks/data.py's generator: 500×375 …
640×480, smooth content at quality 90) in `<out>/tree/train/<class>/` (+ a tenth as `val/`),
packs them as image-net.org ships them (`ILSVRC2012_img_train.tar` of per-class tars, the flat
`ILSVRC2012_img_val.tar` and a devkit with their labels) in `<out>/downloads/`, then writes the
shards from each source with each worker count (verified: every image decoded at 1/8 scale
before it is written, every tar read back), after one untimed pass that warms the page cache, best of `--repeats`.
Reports images/s (wall clock) and CPU-seconds of all processes; writes `<out>/shards.json` and
prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import make_jpegs  # noqa: E402  (benchmarks/data.py)

from neumeta_dist.data.shards import DEVKIT, TRAIN_ARCHIVE, VAL_ARCHIVE, write_dataset  # noqa: E402


def make_tree(root: Path, images: int, classes: int) -> None:
    """`images` training JPEGs over `classes` folders, and a tenth of them again as val/."""
    make_jpegs(root, images, classes)
    for f in sorted((root / "train").glob("*/*.JPEG"))[::10]:
        dest = root / "val" / f.parent.name / f"val_{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy(f, dest)


def make_downloads(tree: Path, out: Path) -> None:
    """The tree as ILSVRC2012's three downloads (labels: the devkit's meta.mat + ground truth)."""
    import numpy as np
    import scipy.io

    if (out / DEVKIT).is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / TRAIN_ARCHIVE, "w") as outer:
        for cdir in sorted((tree / "train").iterdir()):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for f in sorted(cdir.iterdir()):
                    inner.add(f, arcname=f.name)
            _add(outer, f"{cdir.name}.tar", buf.getvalue())
    wnids = sorted(d.name for d in (tree / "train").iterdir())
    val = sorted((tree / "val").glob("*/*.JPEG"))
    with tarfile.open(out / VAL_ARCHIVE, "w") as tar:
        for i, f in enumerate(val):
            tar.add(f, arcname=f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    synsets = np.array([(i + 1, w, w, "", 0) for i, w in enumerate(wnids)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")])
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    truth = "".join(f"{wnids.index(f.parent.name) + 1}\n" for f in val)
    with tarfile.open(out / DEVKIT, "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth.encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children (the workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_write(source: str, path: Path, out: Path, workers: int, repeats: int = 1, verify: bool = True) -> dict:
    """The best of `repeats` conversions (wall clock; its CPU-seconds beside it). `verify=False`:
    no image decoded, no tar read back — what the main process does at any worker count (its
    ceiling: the workers take the checks off it, never the reading and writing)."""
    best = None
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), cpu_seconds()
        index = write_dataset(source, path, out, maxcount=256, holdout=0.01, workers=workers, verify=verify)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        best = min(best or (wall, cpu), (wall, cpu))
    wall, cpu = best
    n = sum(s["count"] for s in index["splits"].values())
    return {"source": source, "workers": workers if verify else "main only (no checks)", "images": n, "wall_s": round(wall, 2),
            "images_per_s": round(n / wall, 1), "cpu_s": round(cpu, 2), "images_per_cpu_s": round(n / cpu, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_shards"))
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--repeats", type=int, default=3, help="best of N conversions per row")
    args = p.parse_args()
    os.environ["NEUMETA_NO_BAR"] = "1"
    make_tree(args.out / "tree", args.images, args.classes)
    make_downloads(args.out / "tree", args.out / "downloads")
    sources = {"imagefolder": args.out / "tree", "imagenet": args.out / "downloads"}
    time_write("imagefolder", sources["imagefolder"], args.out / "shards", 1)  # untimed: warms the page cache
    rows = [row for source, path in sources.items()
            for row in [time_write(source, path, args.out / "shards", int(w), args.repeats) for w in args.workers.split(",")]
            + [time_write(source, path, args.out / "shards", 1, args.repeats, verify=False)]]
    record = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "rows": rows}
    (args.out / "shards.json").write_text(json.dumps(record, indent=1))
    print("| source | workers | images | wall s | images/s | CPU s | images/CPU-s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['workers']} | {r['images']} | {r['wall_s']} | {r['images_per_s']} | {r['cpu_s']} "
              f"| {r['images_per_cpu_s']} |")
    print(f"load average {record['machine']['load_avg']}")


if __name__ == "__main__":
    main()
