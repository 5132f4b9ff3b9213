"""Malformed input is refused in one line that names it (issue 15, items 1-3).

Each row of the table is one bad input — a config value or file, a SLURM profile, a command's
option, a source folder for the shard writer — handed to a real entry point: `neumeta-dist`'s
main, launch/train.py's (`pipeline.main`) or launch/submit.py's (`submit.main`), in process.
Every one must exit non-zero with exactly one line of error output that names the input (the
key, option or file, and the value) — never a traceback, never a silent run. The tests after
the table run the real processes (console script, `accelerate launch`, cluster/submit.py without
SLURM) and the dry run that must work on a machine without SLURM.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from neumeta_dist import cli
from neumeta_dist.cluster import submit
from neumeta_dist.config import load_config
from neumeta_dist.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "blockwise.yaml")
BIN = Path(sys.executable).parent
# cluster/submit.py counts the plan's stages, which loads the data: the synthetic set, small
TINY = ["data.dataset=synthetic", "data.train_limit=64", "data.test_limit=32", "model.width=0.25",
        "recipe.warmup_steps=0", "recipe.units_per_stage=9"]
ENTRIES: dict[str, Callable[[list[str]], None]] = {"cli": cli.main, "train": pipeline.main, "submit": submit.main}


class Inputs:
    """Builds a row's files under its tmp_path; `no_slurm` hides every SLURM command."""

    def __init__(self, tmp_path: Path, monkeypatch, request):
        self.tmp, self.monkeypatch, self.request = tmp_path, monkeypatch, request

    def text(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def bytes(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def dir(self, name: str = "d") -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)

    def images(self, files: dict[str, bytes | None]) -> str:
        """An image folder `<root>/train/<class>/<file>`: a real 8×8 JPEG/PNG where the value is
        None, else those bytes; a name ending in / is an empty class folder."""
        root = self.tmp / "images"
        for name, data in files.items():
            path = root / "train" / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_image(path.suffix) if data is None else data)
        return str(root)

    def run_dir(self) -> str:
        return str(self.tmp / "run")

    def no_slurm(self) -> None:
        empty = self.tmp / "no_slurm_bin"
        empty.mkdir(exist_ok=True)
        self.monkeypatch.setenv("PATH", str(empty))

    def trained(self) -> str:
        return str(self.request.getfixturevalue("trained_run"))


def _image(suffix: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 60)).save(buf, format="PNG" if suffix.lower() == ".png" else "JPEG")
    return buf.getvalue()


@dataclass
class Row:
    id: str
    entry: str
    argv: Callable[[Inputs], list[str]]
    names: tuple[str, ...]  # each must appear in the error line


def plan(id: str, *overrides: str, names: tuple[str, ...] = ()) -> Row:
    """A bad override of the demo config (the key and value must be named)."""
    key, _, value = overrides[0].partition("=")
    return Row(id, "cli", lambda f: ["plan", "--config", DEMO, *overrides], names or (key, value))


def config_file(id: str, text: str | bytes, *names: str) -> Row:
    """A bad config file (its name must be named)."""
    def argv(f):
        path = f.bytes("bad.yaml", text) if isinstance(text, bytes) else f.text("bad.yaml", text)
        return ["plan", "--config", path]
    return Row(id, "cli", argv, ("bad.yaml", *names))


def profile(id: str, text: str | bytes, *names: str) -> Row:
    """A bad SLURM profile given to a dry run (its name must be named)."""
    def argv(f):
        path = f.bytes("prof.yaml", text) if isinstance(text, bytes) else f.text("prof.yaml", text)
        return ["--config", DEMO, "--profile", path, "--dry-run", *TINY, f"run_dir={f.run_dir()}"]
    return Row(id, "submit", argv, ("prof.yaml", *names))


def command(id: str, argv: Callable[[Inputs], list[str]], *names: str, entry: str = "cli") -> Row:
    return Row(id, entry, argv, names)


def _recorded_job(f: Inputs) -> list[str]:
    """A chain with stage 0's job recorded, so that --status must ask SLURM about it."""
    jobs = Path(f.run_dir()) / "slurm" / "jobs.json"
    jobs.parent.mkdir(parents=True)
    jobs.write_text(json.dumps({"config_digest": load_config(DEMO, TINY).digest(),
                                "stages": {"0": {"job_id": "17", "log": str(jobs.parent / "17_0_log.out")}}}))
    f.no_slurm()
    return ["--config", DEMO, "--profile", str(ROOT / "slurm/local.yaml"), "--status", *TINY,
            f"run_dir={f.run_dir()}"]


def _no_slurm(f: Inputs, *args: str) -> list[str]:
    f.no_slurm()
    return ["--config", DEMO, "--profile", str(ROOT / "slurm/local.yaml"), *args, *TINY, f"run_dir={f.run_dir()}"]


JPEG_HEAD = _image(".jpg")

ROWS = [
    # --- config values out of range, or of the wrong kind (the demo config + one override)
    plan("max_steps_negative", "train.max_steps=-5"),
    plan("epochs_negative", "train.epochs=-1"),
    plan("epochs_zero", "train.epochs=0"),
    plan("teacher_epochs_negative", "teacher.epochs=-3"),
    plan("save_every_negative", "train.save_every=-1"),
    plan("keep_checkpoints_zero", "train.keep_checkpoints=0"),
    plan("calib_samples_negative", "eval.calib_samples=-10"),
    plan("grad_clip_negative", "train.grad_clip=-1"),
    plan("log_every_zero", "train.log_every=0"),
    plan("eval_batch_size_zero", "data.eval_batch_size=0"),
    plan("batch_size_zero", "data.batch_size=0"),
    plan("channel_count_zero", "model.channels=[4,0,16]", names=("model.channels", "item 0")),
    plan("channels_wrong_length", "model.channels=[4,8]", names=("model.channels", "3 entries")),
    plan("lr_nan", "train.lr=nan", names=("train.lr", "finite")),
    plan("lr_inf", "train.lr=inf", names=("train.lr", "finite")),
    plan("kd_weight_negative", "loss.kd=-1"),
    plan("kd_temperature_zero", "loss.kd_temperature=0"),
    plan("inr_hidden_zero", "inr.hidden=0"),
    plan("coord_noise_negative", "inr.coord_noise=-0.1"),
    plan("size_noise_one", "inr.size_noise=1"),
    plan("min_width_zero", "meta.min_width=0"),
    plan("max_width_above_one", "meta.max_width=1.5"),
    plan("widths_not_ordered", "meta.min_width=0.9", "meta.max_width=0.5", names=("min_width", "0.9", "0.5")),
    plan("train_width_above_one", "meta.train_widths=[0.5,2.0]", names=("meta.train_widths", "2.0")),
    plan("eval_widths_empty", "eval.widths=[]", names=("eval.widths",)),
    plan("eval_width_negative", "eval.widths=[0.5,-1]", names=("eval.widths", "-1")),
    plan("val_fraction_one", "data.val_fraction=1.0"),
    plan("ema_decay_one", "train.ema_decay=1.0"),
    plan("seed_negative", "train.seed=-1"),
    plan("momentum_above_one", "teacher.momentum=1.5"),
    plan("bad_fraction_negative", "data.max_bad_fraction=-0.1"),
    plan("num_workers_negative", "data.num_workers=-1"),
    plan("widths_per_step_zero", "train.widths_per_step=0"),
    plan("units_per_stage_zero", "recipe.units_per_stage=0"),
    plan("select_every_negative", "train.select_every=-2"),
    plan("every_loss_zero", "loss.ce=0", "loss.recon=0", names=("loss.ce",)),
    plan("teacher_checkpoint_missing", "teacher.checkpoint=/nonexistent/teacher.pt"),
    plan("resume_dir_missing", "train.resume=/nonexistent/checkpoint_00000010"),
    command("run_dir_is_a_file", lambda f: ["plan", "--config", DEMO, f"run_dir={f.text('afile', 'x')}"],
            "run_dir", "afile"),
    plan("override_value_not_yaml", "train.lr=[1,", names=("train.lr=[1,", "YAML")),
    plan("override_without_value", "train.lr", names=("train.lr", "key=value")),
    plan("unknown_key", "train.learning_rate=1", names=("train.learning_rate",)),
    plan("wrong_type", "data.batch_size=abc"),
    plan("bad_choice", "model.family=resnet1000"),
    # --- config files
    config_file("empty_file", "", "empty"),
    config_file("only_comments", "# nothing here\n\n", "empty"),
    config_file("not_utf8", b"\xff\xfe\x00\x01train:\x80\x81\n", "UTF-8"),
    config_file("binary_utf8_with_nul", b"train:\x00\x00\x01 lr\n", "YAML"),
    config_file("base_is_a_number", "base: 3\ntrain: {lr: 0.1}\n", "base=3"),
    config_file("base_is_a_list", "base: [demo.yaml]\n", "base="),
    config_file("base_missing", "base: gone.yaml\n", "gone.yaml"),
    config_file("top_level_list", "- train\n- lr\n", "mapping"),
    config_file("key_twice", "train:\n  lr: 0.1\ntrain:\n  max_steps: 3\n", "'train' appears twice", "line 3"),
    config_file("invalid_yaml", "train: [1, 2\n", "YAML"),
    config_file("value_out_of_range_in_file", "train:\n  max_steps: -5\n", "train.max_steps=-5"),
    command("base_has_the_bad_value",
            lambda f: ["plan", "--config", (f.text("base.yaml", "train: {log_every: 0}\n"),
                                            f.text("child.yaml", "base: base.yaml\n"))[1]],
            "child.yaml", "train.log_every=0"),
    command("config_is_a_directory", lambda f: ["plan", "--config", f.dir("cfgdir")], "cfgdir", "directory"),
    command("config_missing", lambda f: ["plan", "--config", str(f.tmp / "nope.yaml")], "nope.yaml", "not found"),
    # --- SLURM profiles
    profile("profile_empty", "", "empty"),
    profile("profile_not_utf8", b"nodes: \xff\xfe\n", "UTF-8"),
    profile("profile_nodes_zero", "nodes: 0\n", "nodes=0"),
    profile("profile_time_negative", "time_min: -5\n", "time_min=-5"),
    profile("profile_mem_negative", "mem_gb: -1\n", "mem_gb=-1"),
    profile("profile_cpus_zero", "cpus_per_task: 0\n", "cpus_per_task=0"),
    profile("profile_signal_after_end", "time_min: 60\nsignal_delay_s: 4000\n", "signal_delay_s=4000"),
    profile("profile_unknown_key", "gpus: 4\n", "gpus"),
    profile("profile_accelerate_config_missing", "accelerate_args: [--config_file, nope/acc.yaml]\n",
            "nope/acc.yaml"),
    profile("profile_sbatch_with_dashes", "sbatch: ['--exclusive']\n", "--exclusive"),
    profile("profile_top_level_list", "- nodes\n", "mapping"),
    profile("profile_key_twice", "nodes: 1\nnodes: 2\n", "'nodes' appears twice"),
    profile("profile_wrong_type", "nodes: many\n", "nodes", "many"),
    command("profile_missing", lambda f: ["--config", DEMO, "--profile", str(f.tmp / "none.yaml"), "--dry-run"],
            "none.yaml", entry="submit"),
    # --- options of neumeta-dist
    command("individual_widths_not_numbers", lambda f: ["individual", "--config", DEMO, "--widths", "0.5,abc"],
            "--widths", "abc"),
    command("individual_widths_empty_item", lambda f: ["individual", "--config", DEMO, "--widths", "0.5,,1"],
            "--widths", "0.5,,1"),
    command("individual_width_above_one", lambda f: ["individual", "--config", DEMO, "--widths", "0.5,1.5"],
            "--widths", "1.5"),
    command("eval_widths_nan", lambda f: ["eval", "--run", f.dir(), "--widths", "nan"], "--widths", "nan"),
    command("eval_samples_negative", lambda f: ["eval", "--run", f.dir(), "--samples", "-1"], "--samples", "-1"),
    command("eval_run_missing", lambda f: ["eval", "--run", str(f.tmp / "norun")], "--run", "norun"),
    command("eval_run_not_a_run", lambda f: ["eval", "--run", f.dir("empty_run")], "empty_run", "config.yaml"),
    command("export_width_zero", lambda f: ["export", "--run", f.dir(), "--width", "0", "--out", "x.pt"],
            "--width", "'0'"),
    command("export_width_negative", lambda f: ["export", "--run", f.dir(), "--width", "-1", "--out", "x.pt"],
            "--width", "'-1'"),
    command("export_width_nan", lambda f: ["export", "--run", f.dir(), "--width", "nan", "--out", "x.pt"],
            "--width", "nan"),
    command("export_width_text", lambda f: ["export", "--run", f.dir(), "--width", "half", "--out", "x.pt"],
            "--width", "half"),
    command("export_width_above_one", lambda f: ["export", "--run", f.dir(), "--width", "1.5", "--out", "x.pt"],
            "--width", "1.5"),
    command("export_width_below_one_channel",
            lambda f: ["export", "--run", f.trained(), "--width", "0.001", "--out", str(f.tmp / "x.pt")],
            "--width 0.001", "no channel"),
    command("export_out_is_a_directory",
            lambda f: ["export", "--run", f.dir(), "--width", "0.5", "--out", f.dir("outdir")], "--out", "outdir"),
    command("export_out_under_a_file",
            lambda f: ["export", "--run", f.dir(), "--width", "0.5", "--out", f.text("plain", "x") + "/net.pt"],
            "--out", "plain"),
    command("export_ckpt_missing",
            lambda f: ["export", "--run", f.dir(), "--width", "0.5", "--out", "x.pt", "--ckpt", "/nope/final.pt"],
            "--ckpt", "/nope/final.pt"),
    command("consolidate_ckpt_missing", lambda f: ["consolidate", "--ckpt", "/nope/checkpoint_1", "--out", "x.pt"],
            "--ckpt", "/nope/checkpoint_1"),
    command("consolidate_out_is_a_directory",
            lambda f: ["consolidate", "--ckpt", f.dir(), "--out", f.dir("outdir")], "--out", "outdir"),
    command("report_command_without_recipe",
            lambda f: ["report", "--runs", f.dir(), "--out", str(f.tmp / "t.md"), "--command", "just-a-command"],
            "--command", "just-a-command"),
    command("report_seeds_without_directories",
            lambda f: ["report", "--runs", f.dir(), "--out", str(f.tmp / "t.md"), "--seeds", "nsn="], "--seeds", "nsn="),
    command("report_runs_missing", lambda f: ["report", "--runs", "/nope/run", "--out", "t.md"], "--runs", "/nope/run"),
    command("train_stage_negative", lambda f: ["train", "--config", DEMO, "--stage", "-1"], "--stage", "-1"),
    command("slimmable_steps_negative", lambda f: ["slimmable", "--config", DEMO, "--steps", "-5"], "--steps", "-5"),
    # --- the shard writer
    command("shards_out_is_a_file",
            lambda f: ["shards", "--source", "imagefolder", f.images({"a/x.jpg": None}), "--out", f.text("o", "")],
            "--out", "is a file"),
    command("shards_source_missing", lambda f: ["shards", "--source", "imagefolder", "/nope/in", "--out", "o"],
            "/nope/in"),
    command("shards_maxcount_zero",
            lambda f: ["shards", "--source", "imagefolder", f.dir(), "--out", "o", "--maxcount", "0"], "--maxcount"),
    command("shards_holdout_one",
            lambda f: ["shards", "--source", "imagefolder", f.dir(), "--out", "o", "--holdout", "1"], "--holdout"),
    command("shards_empty_class",
            lambda f: ["shards", "--source", "imagefolder", f.images({"a/x.jpg": None, "b/": None}),
                       "--out", str(f.tmp / "o")], "train/b", "without"),
    command("shards_class_with_only_other_files",
            lambda f: ["shards", "--source", "imagefolder", f.images({"a/x.jpg": None, "b/notes.txt": b"hi"}),
                       "--out", str(f.tmp / "o")], "train/b", "without"),
    command("shards_garbage_jpeg",
            lambda f: ["shards", "--source", "imagefolder",
                       f.images({"a/x.jpg": None, "a/y.jpg": b"this is not a jpeg at all" * 40}),
                       "--out", str(f.tmp / "o")], "a/y.jpg", "not a readable image"),
    command("shards_truncated_jpeg",
            lambda f: ["shards", "--source", "imagefolder",
                       f.images({"a/x.jpg": None, "a/y.jpg": JPEG_HEAD[:len(JPEG_HEAD) // 2]}),
                       "--out", str(f.tmp / "o")], "a/y.jpg", "not a readable image"),
    command("shards_key_clash",
            lambda f: ["shards", "--source", "imagefolder", f.images({"a/x.jpg": None, "a/x.png": None}),
                       "--out", str(f.tmp / "o")], "a/x.jpg", "a/x.png", "same sample key"),
    # --- launch/train.py
    command("train_py_log_every_zero", lambda f: ["--config", DEMO, "train.log_every=0"], "train.log_every=0",
            entry="train"),
    command("train_py_stage_not_a_number", lambda f: ["--config", DEMO, "--stage", "two"], "--stage", "two",
            entry="train"),
    command("train_py_config_binary", lambda f: ["--config", f.bytes("bin.yaml", bytes(range(256)))], "bin.yaml",
            entry="train"),
    # --- launch/submit.py: data and config errors before submission, and no SLURM
    command("submit_stages_outside_plan", lambda f: _no_slurm(f, "--stages", "5:2", "--dry-run"), "--stages",
            entry="submit"),
    command("submit_data_root_missing",
            lambda f: ["--config", DEMO, "--profile", str(ROOT / "slurm/local.yaml"), "--dry-run",
                       "data.root=/nonexistent/fmnist", f"run_dir={f.run_dir()}"], "/nonexistent/fmnist",
            entry="submit"),
    command("submit_config_value", lambda f: _no_slurm(f, "--dry-run", "train.keep_checkpoints=0"),
            "train.keep_checkpoints=0", entry="submit"),
    command("submit_without_slurm", lambda f: _no_slurm(f), "SLURM is not reachable", "--dry-run", entry="submit"),
    command("status_without_slurm", _recorded_job, "SLURM is not reachable", entry="submit"),
]


@pytest.fixture
def inputs(tmp_path, monkeypatch, request) -> Inputs:
    monkeypatch.setenv("NEUMETA_NO_BAR", "1")
    monkeypatch.chdir(tmp_path)  # relative outputs (x.pt, o) land here, and nothing is written into the checkout
    return Inputs(tmp_path, monkeypatch, request)


def refused(capsys, entry: Callable[[list[str]], None], argv: list[str]) -> str:
    """Run an entry point in process; it must exit non-zero with one line of error output
    (stderr, or the message of its SystemExit) and no traceback. Returns that line."""
    capsys.readouterr()  # what building the input printed (a training run) is not the entry's
    with pytest.raises(SystemExit) as stop:
        entry(argv)
    code = stop.value.code
    err = capsys.readouterr().err + (f"{code}\n" if isinstance(code, str) else "")
    assert code not in (0, None), f"exited 0: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_the_table_holds_at_least_sixty_bad_inputs():
    assert len(ROWS) >= 60 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_a_bad_input_is_refused_in_one_line_naming_it(row, inputs, capsys):
    line = refused(capsys, ENTRIES[row.entry], row.argv(inputs))
    for name in row.names:
        assert name in line, line


def test_every_numeric_config_and_profile_key_declares_its_range():
    import dataclasses

    from neumeta_dist.cluster.slurm import Profile
    from neumeta_dist.config import Config

    def numeric(obj, prefix=""):
        for f in dataclasses.fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                yield from numeric(getattr(obj, f.name), prefix + f.name + ".")
            elif str(f.type) in ("int", "float", "list[int]", "list[float]"):
                yield prefix + f.name, f

    keys = [(k, f) for obj in (Config(), Profile()) for k, f in numeric(obj)]
    assert len(keys) > 60 and [k for k, f in keys if "range" not in f.metadata] == []


def test_a_dry_run_prints_every_job_without_slurm(inputs, capsys):
    inputs.no_slurm()
    submit.main(["--config", DEMO, "--profile", str(ROOT / "slurm/example_gpu.yaml"), "--dry-run", *TINY,
                 f"run_dir={inputs.run_dir()}"])
    out = capsys.readouterr()
    assert "# stage 0" in out.out and "# stage 1" in out.out and "#SBATCH --nodes=2" in out.out
    assert "# each node runs:" in out.out and "--stage 1" in out.out and out.err == ""
    assert not (inputs.tmp / "run" / "slurm").exists()


def test_a_dry_run_without_slurm_says_recorded_jobs_are_unknown_and_still_prints(inputs, capsys):
    argv = _recorded_job(inputs)
    argv[argv.index("--status")] = "--dry-run"
    submit.main(argv)
    out = capsys.readouterr()
    assert "SLURM is not reachable" in out.err and "unknown" in out.err
    assert "# stage 0" in out.out and "UNKNOWN" not in out.out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The smallest real run: a one-epoch teacher and one INR stage of one step (last block)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = load_config(DEMO, ["data.dataset=synthetic", "data.train_limit=128", "data.test_limit=64",
                             "data.batch_size=32", "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1",
                             "meta.generated=last_block", "meta.norm=fold", "smoothing.two_opt_rounds=1",
                             "inr.hidden=8", "inr.layers=1", "inr.num_freqs=2", "train.max_steps=1",
                             "train.widths_per_step=1", "train.warmup_fraction=0", "recipe.warmup_steps=0",
                             "eval.widths=[1.0]", f"run_dir={run_dir}"])
    bar = os.environ.get("NEUMETA_NO_BAR")
    os.environ["NEUMETA_NO_BAR"] = "1"
    try:
        pipeline.run(cfg)
    finally:
        os.environ.pop("NEUMETA_NO_BAR") if bar is None else os.environ.update(NEUMETA_NO_BAR=bar)
    return run_dir


def test_export_accepts_a_width_just_above_its_narrowest(trained_run, tmp_path, capsys):
    """The narrowest refused width's neighbour still exports (widths are not over-refused)."""
    cli.main(["export", "--run", str(trained_run), "--width", "0.04", "--out", str(tmp_path / "net.pt")])
    assert (tmp_path / "net.pt").is_file() and capsys.readouterr().out.startswith("width 0.04 ")


def _env(**extra) -> dict:
    return {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **extra}


def _one_line(out: subprocess.CompletedProcess, *names: str) -> None:
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert all(n in lines[0] for n in names), lines[0]


def test_the_console_script_refuses_a_nan_width_in_one_line(tmp_path):
    out = subprocess.run([str(BIN / "neumeta-dist"), "export", "--run", str(tmp_path), "--width", "nan",
                          "--out", str(tmp_path / "x.pt")], capture_output=True, text=True, env=_env(), timeout=120)
    _one_line(out, "--width", "nan")
    assert out.returncode == 2


def test_accelerate_launch_quiet_leaves_our_one_line_alone(tmp_path):
    """What the README's commands run: `accelerate launch --quiet launch/train.py`; without
    --quiet Accelerate adds its CalledProcessError traceback after our line."""
    out = subprocess.run([str(BIN / "accelerate"), "launch", "--quiet", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "launch/train.py"),
                          "--config", DEMO, "train.log_every=0", f"run_dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    _one_line(out, "train.log_every=0", "blockwise.yaml")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_submit_py_without_slurm_says_so_in_one_line(tmp_path):
    (tmp_path / "bin").mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "launch/submit.py"), "--config", DEMO, "--profile",
                          str(ROOT / "slurm/local.yaml"), *TINY, f"run_dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, env=_env(PATH=str(tmp_path / "bin")), cwd=ROOT, timeout=300)
    _one_line(out, "SLURM is not reachable", "--dry-run")
