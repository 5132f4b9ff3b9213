"""The shard format: WebDataset tars plus one JSON index, written once and verified.

A sample is two tar members sharing a key: `<key>.jpg` (or `.png`) holding the encoded image
as it came from the source (JPEGs are copied byte for byte, never re-encoded) and `<key>.cls`
holding the class index as decimal text. Keys are derived from the source (ImageFolder: the
file's path under the root without its suffix, `train/<class>/<stem>`; Fashion-MNIST/CIFAR:
`<split>_<index>`), so they are the same every time a source is converted, and tars are
byte-identical across runs (fixed order, owner and mtime).

Splits: `train`, `holdout` and `test`. The holdout (model selection) is cut from the source's
training set by a hash of the key, so it never overlaps `train`, does not depend on the order
files are listed in, and a sample stays on its side when the source grows. ImageNet's `val/`
folder becomes `test` (reported accuracy); model selection uses `holdout`.

Sources: an ImageFolder tree, ImageNet's archives as downloaded (`imagenet_items`: the train
tar of per-class tars, the flat validation tar labelled by the devkit's ground truth, as
torchvision's ImageNet reader does; read in place, nothing extracted, keys and order those of
the extracted tree, so both give the same shards byte for byte), Fashion-MNIST and CIFAR.
Worker processes (`workers`) check the images (decoding them: the cost); the main process reads
and writes every tar in order, so the shards do not depend on the number of workers.

The writer refuses what a reader could not use, naming the file: a class folder without an
image, an image that does not decode (`verify`: each is decoded, JPEGs at 1/8 scale, before it
is written), two files that give one key (`a.jpg` beside `a.png`), an output path that is a file.

`index.json` beside the tars records each shard's name, sample count, size and SHA-256, the
class names, channels, native image size and normalisation statistics; the pipeline
(stream.py) plans exact epochs from these counts without opening a tar.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .sources import DataError

INDEX = "index.json"
FORMAT = "neumeta-dist shards v1"
IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SOURCES = ("imagefolder", "imagenet", "fashion-mnist", "cifar10", "cifar100")
# ImageNet as downloaded (image-net.org, ILSVRC2012): what `--source imagenet FOLDER` reads
TRAIN_ARCHIVE, VAL_ARCHIVE, DEVKIT = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"


class ShardError(DataError):
    """A shard or index that cannot be used (a DataError: the CLI prints it as one line)."""


class TruncatedShard(ShardError):
    """A tar ended inside a member (or its header is garbage); `samples` came out whole first."""

    def __init__(self, path: str, samples: int, why: str):
        super().__init__(f"{path} is truncated or corrupt after {samples} samples ({why}): re-write it "
                         "with `neumeta-dist shards`")
        self.samples = samples


@dataclass(frozen=True)
class Item:
    """One sample before it is written: `load` returns its encoded image bytes."""

    key: str
    label: int
    ext: str
    load: Callable[[], bytes]
    origin: str = ""  # where it came from, for errors: the source file, or `<source> <split>[i]`


# ---------------------------------------------------------------- reading records


def read_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of a tar, in order, streaming (no seeks).

    Raises TruncatedShard (with the count of whole samples before it) when the tar ends early.
    """
    n = 0
    key, fields = None, {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_name(member.name)
                data = tar.extractfile(member).read()
                if k != key and key is not None:
                    yield key, fields
                    n += 1
                    fields = {}
                key = k
                fields[ext] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise TruncatedShard(str(path), n, str(e) or type(e).__name__) from None
    if key is not None:
        yield key, fields


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is everything before the first dot of the file name."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def read_index(path: str | Path) -> dict:
    path = Path(path)
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path} not found: write shards with `neumeta-dist shards` (it writes the index)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path} is not valid JSON ({e}): re-write the shards with `neumeta-dist shards`") from None
    if index.get("format") != FORMAT:
        raise ShardError(f"{path}: not a {FORMAT!r} index: re-write the shards with `neumeta-dist shards`")
    return index


# ---------------------------------------------------------------- sources


def in_holdout(key: str, fraction: float) -> bool:
    """A key's side of the train/holdout cut: a stable hash, independent of order and machine."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") < fraction * 2 ** 64


def imagefolder_items(root: Path) -> tuple[dict[str, list[Item]], list[str], dict]:
    """ImageNet's layout: `root/train/<wnid>/*.JPEG` (+ `root/val/<wnid>/*`), or `root/<class>/*`."""
    parts = {"train": root / "train", "test": root / "val"} if (root / "train").is_dir() else {"train": root}
    classes = sorted(d.name for d in parts["train"].iterdir() if d.is_dir())
    if not classes:
        raise ShardError(f"{parts['train']} has no class folders: expected <root>/train/<class>/<image>.JPEG")
    label = {c: i for i, c in enumerate(classes)}
    out, ignored = {}, []
    for split, folder in parts.items():
        if not folder.is_dir():
            continue
        items, origin = [], {}
        for cdir in sorted(d for d in folder.iterdir() if d.is_dir()):
            if cdir.name not in label:
                raise ShardError(f"{cdir}: class {cdir.name!r} is not among the training classes of {parts['train']}")
            before = len(items)
            for f in sorted(cdir.iterdir()):
                ext = IMAGE_EXTS.get(f.suffix.lower())
                if ext is None:
                    ignored.append(str(f))
                    continue
                key = str(f.relative_to(root).with_suffix("")).replace(".", "_")
                if key in origin:  # one key, two tar members of one kind or two images: unreadable as one sample
                    raise ShardError(f"{origin[key]} and {f} give the same sample key {key!r} (a key is the path "
                                     "without its suffix, dots as _): rename or remove one")
                origin[key] = f
                items.append(Item(key, label[cdir.name], ext, f.read_bytes, str(f)))
            if len(items) == before:
                raise ShardError(f"{cdir}: class folder without a .jpg/.jpeg/.png image (a class with no samples "
                                 "cannot be trained or scored): add its images or remove the folder")
        out[split] = items
    if ignored:
        print(f"ignored {len(ignored)} files that are not .jpg/.jpeg/.png, e.g. {ignored[0]}")
    meta = {"channels": 3, "image_size": 0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return out, classes, meta


@dataclass(frozen=True)
class ArchiveMember:
    """The bytes of one file inside an uncompressed tar (nested tars included), read in place:
    an absolute offset and a size, so any process can read it without scanning the archive."""

    path: str
    offset: int
    size: int

    def __call__(self) -> bytes:
        # one handle per archive and process: a forked worker must not share its parent's,
        # whose file offset would move under it with every seek of another process
        key = (os.getpid(), self.path)
        fh = _OPEN.get(key)
        if fh is None:
            fh = _OPEN[key] = open(self.path, "rb")
        fh.seek(self.offset)
        return fh.read(self.size)


_OPEN: dict[tuple[int, str], object] = {}


def imagenet_items(root: Path) -> tuple[dict[str, list[Item]], list[str], dict]:
    """ImageNet as downloaded into `root`: ILSVRC2012_img_train.tar (one tar per class, `<wnid>.tar`
    of `<wnid>_<n>.JPEG`), and, when present, ILSVRC2012_img_val.tar (50,000 flat JPEGs) with
    ILSVRC2012_devkit_t12.tar.gz (their labels: data/ILSVRC2012_validation_ground_truth.txt,
    the ILSVRC2012_ID of each image in name order, mapped to wnids by data/meta.mat). Keys are
    those of the extracted tree (`train/<wnid>/<stem>`, `val/<wnid>/<stem>`)."""
    train_tar = root / TRAIN_ARCHIVE
    if not train_tar.is_file():
        raise ShardError(f"{train_tar} not found: --source imagenet reads the archives as downloaded "
                         f"({TRAIN_ARCHIVE}, and for the test split {VAL_ARCHIVE} + {DEVKIT}) from one folder")
    train = []
    with tarfile.open(train_tar, "r:") as outer:
        for cls_tar in outer:
            if not cls_tar.name.endswith(".tar"):
                continue
            wnid = Path(cls_tar.name).stem
            with tarfile.open(fileobj=outer.extractfile(cls_tar), mode="r:") as inner:
                members = [m for m in inner if m.isfile()]
            if not members:
                raise ShardError(f"{train_tar}:{cls_tar.name}: class archive without an image")
            train += [(wnid, Path(m.name).name, ArchiveMember(str(train_tar), cls_tar.offset_data + m.offset_data, m.size))
                      for m in members]
    classes = sorted({wnid for wnid, _, _ in train})
    parts = {"train": _archive_items("train", train, classes, train_tar)}
    if (root / VAL_ARCHIVE).is_file():
        labels = val_labels(root / DEVKIT)
        with tarfile.open(root / VAL_ARCHIVE, "r:") as tar:
            files = sorted((m for m in tar if m.isfile()), key=lambda m: m.name)
        if len(files) != len(labels):
            raise ShardError(f"{root / VAL_ARCHIVE} holds {len(files)} images, {DEVKIT} labels {len(labels)}")
        val = [(wnid, Path(m.name).name, ArchiveMember(str(root / VAL_ARCHIVE), m.offset_data, m.size))
               for m, wnid in zip(files, labels)]
        parts["test"] = _archive_items("val", val, classes, root / VAL_ARCHIVE)
    meta = {"channels": 3, "image_size": 0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return parts, classes, meta


def _archive_items(folder: str, files: list[tuple[str, str, ArchiveMember]], classes: list[str],
                   archive: Path) -> list[Item]:
    """Items in the order (class, file name) an ImageFolder listing of the extracted tree has."""
    label = {c: i for i, c in enumerate(classes)}
    items = []
    for wnid, name, member in sorted(files, key=lambda f: (f[0], f[1])):
        ext = IMAGE_EXTS.get(Path(name).suffix.lower())
        if ext is None:
            continue
        if wnid not in label:
            raise ShardError(f"{archive}: {name} is labelled {wnid!r}, not among the training classes")
        key = f"{folder}/{wnid}/{Path(name).with_suffix('')}".replace(".", "_")
        items.append(Item(key, label[wnid], ext, member, f"{archive}:{name}"))
    return items


def val_labels(devkit: Path) -> list[str]:
    """The wnid of each validation image, in file-name order, from the devkit archive (as
    torchvision's `parse_devkit_archive`: meta.mat's leaf synsets map ILSVRC2012_ID to wnid)."""
    if not devkit.is_file():
        raise ShardError(f"{devkit} not found: the validation images' labels come from it (or leave "
                         f"{VAL_ARCHIVE} out of the folder to write no test split)")
    try:
        import scipy.io
    except ImportError:
        raise ShardError(f"reading {devkit.name}'s meta.mat needs scipy: pip install 'neumeta-dist[imagenet]'") from None
    with tarfile.open(devkit, "r:gz") as tar:
        read = {Path(m.name).name: m for m in tar if m.isfile()}
        if "meta.mat" not in read or "ILSVRC2012_validation_ground_truth.txt" not in read:
            raise ShardError(f"{devkit}: no data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt in it")
        synsets = scipy.io.loadmat(io.BytesIO(tar.extractfile(read["meta.mat"]).read()), squeeze_me=True)["synsets"]
        truth = tar.extractfile(read["ILSVRC2012_validation_ground_truth.txt"]).read().decode().split()
    wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}  # (ILSVRC2012_ID, WNID, …, num_children)
    return [wnid[int(i)] for i in truth]


def array_items(source: str, root: Path) -> tuple[dict[str, list[Item]], list[str], dict]:
    """Fashion-MNIST / CIFAR through sources.py's readers, each image encoded as a lossless PNG."""
    import torch

    from ..config import DataConfig
    from .sources import load_raw

    (xtr, ytr), (xte, yte), classes = load_raw(DataConfig(dataset=source, root=str(root)))
    as_u8 = lambda x: (x * 255).round().to(torch.uint8).numpy()  # exact: the readers divided u8 by 255
    arrays = {"train": (as_u8(xtr), ytr.numpy()), "test": (as_u8(xte), yte.numpy())}
    out = {split: [Item(f"{split}_{i:07d}", int(y[i]), "png", _png(x, i), f"{source} {split}[{i}]")
                   for i in range(len(x))]
           for split, (x, y) in arrays.items()}
    train = arrays["train"][0].astype(np.float64) / 255
    meta = {"channels": int(xtr.shape[1]), "image_size": int(xtr.shape[-1]),
            "mean": train.mean(axis=(0, 2, 3)).tolist(), "std": train.std(axis=(0, 2, 3)).tolist()}
    return out, [str(c) for c in range(classes)], meta


def _png(x: np.ndarray, i: int) -> Callable[[], bytes]:
    def load() -> bytes:
        from PIL import Image
        img = x[i]
        pil = Image.fromarray(img[0]) if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0))
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        return buf.getvalue()
    return load


# ---------------------------------------------------------------- writing


def write_dataset(source: str, path: str | Path, out: str | Path, maxcount: int = 1000, maxsize: int = 3 << 30,
                  holdout: float = 0.01, seed: int = 0, name: str = "", verify: bool = True,
                  workers: int = 1) -> dict:
    """Convert a source into shards + `index.json` under `out`; returns the index.

    `verify`: decode every image before it is written and read every tar back after (off:
    bytes are copied as they are, e.g. to test how readers handle a corrupt sample).
    `workers`: processes that read and check the images (the tars are the same for any number)."""
    from tqdm.auto import tqdm

    path, out = Path(path), Path(out)
    if not path.exists():
        raise ShardError(f"source {path} does not exist")
    if out.exists() and not out.is_dir():
        raise ShardError(f"output {out} is a file: name a folder (it will hold <split>-NNNNNN.tar and index.json)")
    if not 0 <= holdout < 1:
        raise ShardError(f"--holdout {holdout}: need 0 <= holdout < 1")
    if maxcount < 1 or maxsize < 1:
        raise ShardError("--maxcount and --maxsize must be >= 1")
    read = {"imagefolder": imagefolder_items, "imagenet": imagenet_items}.get(source)
    parts, classes, meta = read(path) if read else array_items(source, path)
    train = parts.pop("train")
    parts = {"train": [i for i in train if not in_holdout(i.key, holdout)],
             "holdout": [i for i in train if in_holdout(i.key, holdout)], **parts}
    out.mkdir(parents=True, exist_ok=True)
    index = {"format": FORMAT, "name": name or (path.name if source == "imagefolder" else source),
             "source": source, "classes": classes, **meta, "holdout_fraction": holdout, "seed": seed, "splits": {}}
    written = {}
    with tqdm(total=sum(map(len, parts.values())), desc=f"writing shards ({workers} workers)", unit="img",
              dynamic_ncols=True,
              disable=os.environ.get("NEUMETA_NO_BAR") == "1") as bar:
        for split, items in parts.items():
            items = list(items)
            random.Random(f"{seed}/{split}").shuffle(items)  # class-sorted folders → mixed shards
            shards, keys = _write_split(items, out, split, maxcount, maxsize, bar, verify, workers)
            index["splits"][split] = {"count": len(items), "shards": shards}
            written.update(keys)
    if verify:
        verify_shards(out, index, written, workers)
    from ..checkpoint import atomic_write_text
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return index


def _write_split(items: Sequence[Item], out: Path, split: str, maxcount: int, maxsize: int,
                 bar, verify: bool = True, workers: int = 1) -> tuple[list[dict], dict[str, list[tuple[str, int]]]]:
    """Rotate to a new tar at `maxcount` samples or before `maxsize` bytes."""
    shards, keys, tar = [], {}, None
    try:
        for item, payload in zip(items, payloads(items, verify, workers)):
            if tar is None or tar.count >= maxcount or (tar.count and tar.size_with(len(payload)) > maxsize):
                if tar is not None:
                    shards.append(tar.close())
                tar = _Tar(out, f"{split}-{len(shards):06d}.tar")
                keys[tar.name] = []
            tar.write(item, payload)
            keys[tar.name].append((item.key, item.label))
            bar.update(1)
    except BaseException:
        if tar is not None:  # a refused image: no half-written temporary tar left behind
            tar.discard()
        raise
    if tar is not None:
        shards.append(tar.close())
    return shards, keys


def payloads(items: Sequence[Item], verify: bool, workers: int = 1) -> Iterator[bytes]:
    """Each item's bytes, in order, checked first (`verify`) — by `workers` forked processes.

    The check (decoding every image) is the cost; reading the bytes is not (a file or archive
    read, a small PNG encode). So workers only check, and send back nothing but the verdict;
    the main process reads each item itself, once its check is in, in order. Forked, so the
    items (whose loaders may be closures) reach the workers without pickling: tasks are indices.
    """
    if workers <= 1 or len(items) < 2 or not verify:
        yield from (_checked(item, verify) for item in items)
        return
    global _ITEMS
    _ITEMS = items
    try:
        with _pool(workers) as pool:
            chunk = max(1, min(64, len(items) // (4 * workers)))
            for item, _ in zip(items, pool.imap(_check_at, range(len(items)), chunksize=chunk)):
                yield item.load()
    finally:
        _ITEMS = None


_ITEMS: Sequence[Item] | None = None  # the split being written, inherited by forked workers


def _pool(workers: int):
    """Forked worker processes with the default signal handlers: a parent that trained in this
    process records SIGTERM for a clean stop (distributed/preemption.py), and workers that
    inherited that would ignore the SIGTERM with which the pool ends them, and the pool would
    wait on them for ever."""
    import multiprocessing
    return multiprocessing.get_context("fork").Pool(workers, initializer=_default_signals)


def _default_signals() -> None:
    import signal
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)


def _checked(item: Item, verify: bool) -> bytes:
    payload = item.load()
    if verify:
        check_image(payload, item.origin or item.key)
    return payload


def _check_at(i: int) -> None:
    _checked(_ITEMS[i], True)


class _Tar:
    """One shard being written: under a temporary name, renamed into place when closed, so a
    crash leaves no half tar under a real name. Fixed owner and mtime: byte-identical reruns."""

    def __init__(self, out: Path, name: str):
        from webdataset import TarWriter
        self.out, self.name, self.count, self.bytes = out, name, 0, 0
        self.tmp = out / f".{name}.tmp"
        self.fh = open(self.tmp, "wb")
        self.writer = TarWriter(self.fh, user="neumeta", group="neumeta", encoder=False, mtime=0)

    @staticmethod
    def sample_bytes(payload: int) -> int:
        """A sample's bytes in the tar: two headers, the image padded to blocks, the label's block."""
        block = tarfile.BLOCKSIZE
        return 3 * block + -(-payload // block) * block

    def size_with(self, payload: int) -> int:
        """The closed tar's size if a sample of `payload` bytes joined (counted, because the tar
        stream buffers whole records): samples, the end marker, padding to whole records."""
        record = tarfile.RECORDSIZE
        return -(-(self.bytes + self.sample_bytes(payload) + 2 * tarfile.BLOCKSIZE) // record) * record

    def write(self, item: Item, payload: bytes) -> None:
        self.writer.write({"__key__": item.key, item.ext: payload, "cls": str(item.label).encode()})
        self.count += 1
        self.bytes += self.sample_bytes(len(payload))

    def discard(self) -> None:
        self.writer.close()
        self.fh.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> dict:
        self.writer.close()
        self.fh.close()
        os.replace(self.tmp, self.out / self.name)
        path = self.out / self.name
        return {"name": self.name, "count": self.count, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def check_image(payload: bytes, origin: str) -> None:
    """The image decodes (what the readers will do with it), or a ShardError naming `origin`.
    JPEGs decode at 1/8 scale (PIL's draft mode): every coded block is still read, so garbage
    and truncation show, at a fraction of a full decode's time."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.draft("RGB", (1, 1))
            img.load()
    except UnidentifiedImageError:
        raise ShardError(f"{origin}: not a readable image (no image format PIL knows): replace or remove it") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on a damaged file
        raise ShardError(f"{origin}: not a readable image ({type(e).__name__}: {e}): replace or remove it") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_shards(out: Path, index: dict, written: dict[str, list[tuple[str, int]]], workers: int = 1) -> None:
    """Read every tar back (`workers` processes): its keys and labels in written order, and an
    image member each."""
    paths = [out / shard["name"] for split in index["splits"].values() for shard in split["shards"]]
    if workers > 1 and len(paths) > 1:
        with _pool(min(workers, len(paths))) as pool:
            read = pool.map(shard_labels, paths, chunksize=1)
    else:
        read = [shard_labels(p) for p in paths]
    for path, got in zip(paths, read):
        if got != written[path.name]:
            raise ShardError(f"{path}: read back {len(got)} samples that differ from the "
                             f"{len(written[path.name])} written: the disk or filesystem lost data")


def shard_labels(path: Path) -> list[tuple[str, int]]:
    """(key, label) of every sample of a tar, each checked to hold an image and its label."""
    got = []
    for key, fields in read_samples(path):
        if "cls" not in fields or not ({"jpg", "png"} & set(fields)):
            raise ShardError(f"{path}: sample {key} lacks its image or .cls after writing")
        got.append((key, int(fields["cls"])))
    return got
