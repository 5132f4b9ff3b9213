"""Images/s of the training input pipeline: WebDataset shards (data/stream.py) vs torchvision
`ImageFolder`, on the same generated JPEG set, per DataLoader worker count.

    .venv/bin/python benchmarks/data.py --out runs/bench_data [--images 1200 --workers 0,1,2]

Generates `--images` JPEGs of ImageNet-like sizes (500×375, 375×500, 500×333, 500×500,
640×480; smooth content at quality 90, ~40-90 kB each) in `<out>/imagefolder/train/<class>/`,
converts them once with the shard writer into `<out>/shards/`, then times one epoch of
training batches (RandomResizedCrop 224 + flip + normalise, batch 64) for each pipeline and
worker count, after one untimed epoch that starts the (persistent) workers and warms the page
cache. Reports images/s (wall clock) and images per CPU-second of all the pipeline's
processes (main + workers; the per-core rate, to size CPUs per GPU). Writes
`<out>/data_pipeline.json` and prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

SIZES = [(500, 375), (375, 500), (500, 333), (500, 500), (640, 480)]


def make_jpegs(root: Path, n: int, classes: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:06d}.JPEG"
        if path.exists():
            continue
        w, h = SIZES[rng.integers(len(SIZES))]
        coarse = rng.integers(0, 256, (h // 25, w // 25, 3), dtype=np.uint8)  # smooth, photo-like sizes
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


def imagefolder_epochs(root: Path, workers: int, batch: int, size: int):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = DataLoader(ImageFolder(str(root / "train"), tf), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    while True:
        yield iter(loader), len(loader)


def shard_epochs(shards: Path, workers: int, batch: int, size: int, decode: str):
    from neumeta_dist.config import DataConfig
    from neumeta_dist.data import load_splits
    from neumeta_dist.data.stream import RankStream, normalize

    cfg = DataConfig(dataset="shards", root=str(shards), num_workers=workers, batch_size=batch, image_size=size,
                     decode=decode, shuffle_buffer=1000, val_shards="index.json#train", test_shards="index.json#train")
    spec = load_splits(cfg).train.spec(True, batch)
    stream = RankStream(spec)
    normalised = ((normalize(x, spec), y) for x, y in stream)  # on the CPU here (training: on the GPU)
    while True:
        yield normalised, stream.per_epoch


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the DataLoader workers) so far."""
    import psutil

    me, total = psutil.Process(), 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(epochs, repeats: int) -> tuple[float, float]:
    """(images/s of wall time, images per CPU-second of every process of the pipeline) of the
    best of `repeats` timed epochs, after an untimed one. The second is the per-core rate, and
    holds on a shared machine where wall-clock rates depend on the neighbours."""
    best = (0.0, 0.0)
    for r in range(repeats + 1):
        t, cpu, images = time.perf_counter(), cpu_seconds(), 0
        it, n = next(epochs)
        for _ in range(n):
            x, _ = next(it)
            images += len(x)
        wall, used = time.perf_counter() - t, cpu_seconds() - cpu
        if r:
            best = max(best, (images / wall, images / used))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the generated data and data_pipeline.json")
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)  # one core per process, as in a data-loading worker
    make_jpegs(out / "imagefolder", args.images, args.classes)
    if not (out / "shards" / "index.json").is_file():
        from neumeta_dist.data.shards import write_dataset
        write_dataset("imagefolder", out / "imagefolder", out / "shards", maxcount=max(1, args.images // 12), holdout=0)
    jpeg_kb = np.mean([f.stat().st_size for f in (out / "imagefolder").rglob("*.JPEG")]) / 1024
    b, size = args.batch_size, args.image_size
    pipelines = {"ImageFolder (PIL)": lambda w: imagefolder_epochs(out / "imagefolder", w, b, size),
                 "WebDataset shards (PIL)": lambda w: shard_epochs(out / "shards", w, b, size, "pil"),
                 "WebDataset shards (torchvision.io)": lambda w: shard_epochs(out / "shards", w, b, size, "torchvision")}
    load_before, rows = os.getloadavg()[0], []
    for workers in (int(w) for w in args.workers.split(",")):
        for name, make in pipelines.items():
            rate, per_cpu = measure(make(workers), args.repeats)
            rows.append({"pipeline": name, "workers": workers, "images_per_s": rate, "images_per_cpu_s": per_cpu})
            print(f"{name:36s} workers={workers}: {rate:7.1f} images/s, {per_cpu:6.1f} images per CPU-second",
                  flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # before, after
              "torch": torch.__version__, "images": args.images, "mean_jpeg_kb": round(float(jpeg_kb), 1),
              "batch_size": args.batch_size, "image_size": args.image_size, "rows": rows}
    (out / "data_pipeline.json").write_text(json.dumps(result, indent=2))
    print(table(result))


def table(r: dict) -> str:
    """Rows: pipelines; columns: images/s (wall) per worker count, then images per CPU-second."""
    names = list(dict.fromkeys(row["pipeline"] for row in r["rows"]))
    workers = sorted({row["workers"] for row in r["rows"]})
    row = {(x["pipeline"], x["workers"]): x for x in r["rows"]}
    lines = ["| pipeline | " + " | ".join(f"images/s, {w} workers" for w in workers) + " | "
             + " | ".join(f"images/CPU-s, {w} workers" for w in workers) + " |",
             "|---|" + "---|" * 2 * len(workers)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{row[(n, w)]['images_per_s']:.0f}" for w in workers) + " | "
                     + " | ".join(f"{row[(n, w)]['images_per_cpu_s']:.0f}" for w in workers) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
