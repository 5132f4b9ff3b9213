"""Command-line options, checked where they are parsed.

Every entry point (`neumeta-dist`, `launch/train.py`, `launch/submit.py`) builds its parser
from `Parser`, whose errors are one line — `prog: error: argument --width: 'nan' is not a
fraction in (0, 1] … (see prog --help)`, exit status 2 — instead of argparse's usage block.
The `type=` functions below turn a value into what the command uses, or refuse it naming the
value and what is allowed, before any work starts (argparse adds the option's name).

Widths are fractions of the full width in (0, 1]: the width-1 network is the teacher's size,
and no generated layer has channels beyond it (nested coordinates have no teacher channel
there; `eval.widths` and `meta.max_width` stop at 1 for the same reason).

Torch-free: `launch/submit.py` parses its options on a login node.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

WIDTH_HINT = "a fraction of the full width in (0, 1], e.g. 0.5"


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and status 2); `--help` still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def width(text: str) -> float:
    """One width: a finite fraction in (0, 1]."""
    try:
        w = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: need {WIDTH_HINT}") from None
    if not (math.isfinite(w) and 0 < w <= 1):
        why = "is outside (0, 1]" if math.isfinite(w) else "is not a finite number"
        raise argparse.ArgumentTypeError(f"{text!r} {why}: need {WIDTH_HINT}")
    return w


def widths(text: str) -> list[float]:
    """Comma-separated widths, each a fraction in (0, 1]; at least one."""
    items = [t.strip() for t in text.split(",")]
    if not any(items) or not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: need comma-separated fractions in (0, 1], e.g. 0.25,0.5,1.0")
    out = []
    for item in items:
        try:
            out.append(width(item))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: item {e}") from None
    return out


def budget(text: str) -> int:
    """A positive budget (parameters, MACs): an integer, also written as 2.5e5."""
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (need a count >= 1, e.g. 250000 or 2.5e5)") from None
    if not (math.isfinite(n) and n >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (need a finite count >= 1)")
    return int(n)


def count(minimum: int):
    """An integer >= `minimum` (a `type=` for counts, steps and sizes)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (need >= {minimum})") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} is out of range (need >= {minimum})")
        return n
    parse.__name__ = f"integer >= {minimum}"
    return parse


def holdout_fraction(text: str) -> float:
    """A fraction in [0, 1)."""
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (need a fraction in [0, 1))") from None
    if not (math.isfinite(f) and 0 <= f < 1):
        raise argparse.ArgumentTypeError(f"{text!r} is outside [0, 1) (need a fraction of the training set)")
    return f


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        why = "is a file, not a directory" if path.exists() else "no such directory"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return path


def output_file(text: str) -> Path:
    """A file to write: not an existing directory, and no file where a parent folder must be
    (missing parent folders are created by the writers)."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("'' is not a file name")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name a file inside it, e.g. {path / 'out.pt'}")
    _parents_are_folders(path, text)
    return path


def output_dir(text: str) -> Path:
    """A folder to write into (created if missing): not an existing file."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("'' is not a folder name")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: name a folder (it is created if missing)")
    _parents_are_folders(path, text)
    return path


def _parents_are_folders(path: Path, text: str) -> None:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
