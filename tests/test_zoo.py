"""Teachers from the model zoos (neumeta_dist/models/zoo.py): a state dict in torchvision's
ResNet layout, as torchvision and the CIFAR zoos save it, loads as the family's BN teacher."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock

from neumeta_dist.checkpoint import CheckpointError
from neumeta_dist.config import load_config
from neumeta_dist.models import zoo
from neumeta_dist.models.family import Teacher, apply_layer
from neumeta_dist.models.registry import build_family
from neumeta_dist.training.teacher import load_teacher

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
# Same ops in the same order (conv, BN, ReLU, max-pool, add, mean, linear): observed bitwise
# equal; the bound leaves room for another BLAS. Folding BN reorders the arithmetic: 1e-4.
ATOL_BN, ATOL_FOLDED = 1e-5, 1e-4


class CifarResNet(nn.Module):
    """A CIFAR zoo's ResNet-20/56 (chenyaofo/pytorch-cifar-models): 3×3 stem, three stages of
    torchvision BasicBlocks, option-B 1×1-conv projections — the layout such zoos save."""

    def __init__(self, depth: int, channels=(16, 32, 64), in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        width = channels[0]
        for s, c in enumerate(channels, start=1):
            stride = 1 if s == 1 else 2
            blocks = []
            for j in range(depth):
                down = None
                if j == 0 and (stride != 1 or width != c):
                    down = nn.Sequential(nn.Conv2d(width, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                blocks.append(BasicBlock(width, c, stride if j == 0 else 1, down))
                width = c
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomised(model: nn.Module) -> nn.Module:
    """Eval mode, every BN's affine and running statistics random: folding is not the identity."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _load(tmp_path, family, state, fmt: str = "auto") -> Teacher:
    path = tmp_path / "zoo.pth"
    torch.save(state, path)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"teacher.checkpoint={path}", f"teacher.format={fmt}"])
    art = load_teacher(cfg, family)
    assert art["accuracy"] is None and art["source"]["format"] == "torchvision"  # scored by stage 0
    teacher = Teacher(family)
    teacher.load_state_dict(art["state_dict"])
    return teacher.eval()


def _assert_same_logits(teacher: Teacher, zoo_model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = zoo_model(x)
        got = teacher(x)
        folded = teacher.folded()
        got_folded = teacher.family.forward(x, lambda s, h: apply_layer(s, h, folded))
    assert expected.abs().max() > 1e-2  # a non-trivial function
    assert (got - expected).abs().max() <= ATOL_BN
    assert (got_folded - expected).abs().max() <= ATOL_FOLDED * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnet_state_dict_loads_as_the_teacher_with_torchvisions_logits(tmp_path, name):
    tv = _randomised(getattr(torchvision.models, name)(weights=None, num_classes=10))
    teacher = _load(tmp_path, build_family(name, in_channels=3, num_classes=10), tv.state_dict())
    _assert_same_logits(teacher, tv, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("name, depth", [("resnet20", 3), ("resnet56", 9)])
def test_cifar_zoo_resnet_state_dict_loads_as_the_teacher_with_the_zoos_logits(tmp_path, name, depth):
    zoo = _randomised(CifarResNet(depth, num_classes=100))
    teacher = _load(tmp_path, build_family(name, in_channels=3, num_classes=100), zoo.state_dict(), "torchvision")
    _assert_same_logits(teacher, zoo, torch.randn(2, 3, 32, 32))


def test_a_dataparallel_prefix_and_absent_batch_counters_are_accepted(tmp_path):
    zoo = _randomised(CifarResNet(3, channels=(4, 8, 16)))
    state = {f"module.{k}": v for k, v in zoo.state_dict().items() if not k.endswith("num_batches_tracked")}
    teacher = _load(tmp_path, build_family("resnet20", 0.25), state)
    _assert_same_logits(teacher, zoo, torch.randn(2, 3, 16, 16))


def _error(tmp_path, family, state, fmt="auto") -> str:
    with pytest.raises(CheckpointError) as err:
        _load(tmp_path, family, state, fmt)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "zoo.pth") in msg
    return msg


def test_missing_unexpected_and_misshaped_keys_are_one_error_naming_them(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()  # 1000 classes, the config asks for 10
    del state["layer4.1.bn2.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    msg = _error(tmp_path, build_family("resnet18", num_classes=10), state)
    assert "1 missing: layer4.1.bn2.running_var" in msg
    assert "1 unexpected: layer5.0.conv1.weight" in msg
    assert "fc.weight (1000, 512)≠(10, 512)" in msg and "fc.bias (1000,)≠(10,)" in msg
    # another depth: the keys of the blocks it lacks, named with a count, still one line
    msg = _error(tmp_path, build_family("resnet50", num_classes=1000),
                 torchvision.models.resnet18(weights=None).state_dict())
    assert "missing: " in msg and "layer1.0.conv3.weight" in msg and "more)" in msg


def test_option_a_shortcuts_are_refused_as_unmappable(tmp_path):
    state = {k: v for k, v in CifarResNet(3).state_dict().items() if ".downsample." not in k}
    msg = _error(tmp_path, build_family("resnet20"), state)
    assert "option-A" in msg and "layer2.0.downsample.0.weight" in msg


def test_a_file_of_neither_layout_asks_for_teacher_format(tmp_path):
    msg = _error(tmp_path, build_family("resnet20"), {"linear.weight": torch.zeros(10, 64)})
    assert "teacher.format" in msg


def test_a_zoo_teacher_is_scored_once_by_stage_0_and_kept_in_the_run(tmp_path):
    """`teacher.checkpoint=<zoo URL>` end to end: stage 0 downloads it into the hub cache
    (a file:// URL: the same urllib download as https), maps it, measures its test accuracy,
    stores it as the run's teacher.pt and smooths it; a bad file is one line, no traceback."""
    zoo = _randomised(CifarResNet(3, channels=(4, 8, 16), in_channels=1))
    url, src = _hashed(tmp_path / "src", zoo.state_dict())
    args = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=128", "model.family=resnet20",
            "model.width=0.25", "smoothing.two_opt_rounds=2", f"teacher.checkpoint={url}"]
    out = _train(tmp_path / "run", args, torch_home=tmp_path / "home")
    assert out.returncode == 0, out.stderr[-2000:]
    cached = tmp_path / "home/hub/checkpoints" / src.name
    assert cached.read_bytes() == src.read_bytes()
    art = torch.load(tmp_path / "run/teacher/teacher.pt", weights_only=True)
    assert 0.0 <= art["accuracy"] <= 1.0
    assert art["source"] == {"path": url, "file": str(cached), "format": "torchvision"}
    assert f"test accuracy {art['accuracy']:.4f}" in out.stdout
    assert (tmp_path / "run/teacher/reference.pt").is_file()

    path = tmp_path / "zoo.pth"
    args[-1] = f"teacher.checkpoint={path}"

    torch.save({k: v for k, v in zoo.state_dict().items() if k != "fc.bias"}, path)
    out = _train(tmp_path / "bad", args)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: teacher.checkpoint") and "1 missing: fc.bias" in lines[0]


def _train(run_dir: Path, args: list[str], torch_home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
    return subprocess.run([sys.executable, str(ROOT / "launch/train.py"), "--config", str(ROOT / "configs/blockwise.yaml"),
                           "--stage", "0", *args, f"run_dir={run_dir}"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def _hashed(folder: Path, state: dict, name: str = "zoo", good: bool = True) -> tuple[str, Path]:
    """A state dict saved as `<name>-<sha256 prefix>.pth`, as the zoos name theirs, and its file:// URL
    (`good=False`: a prefix that does not match the content)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8] if good else "00000000"
    path = tmp.rename(folder / f"{name}-{digest}.pth")
    return path.as_uri(), path


def test_torchvision_weights_resolve_to_their_file_in_the_hub_cache(tmp_path, monkeypatch):
    """`torchvision:<Weights>` is the file torchvision's own loader caches: found there without a
    download (how a node without internet runs it), loaded as a torchvision state dict."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    spec = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = zoo.cached_path(spec)
    assert cached == tmp_path / "home/hub/checkpoints" / url.rsplit("/", 1)[1]
    tv = _randomised(torchvision.models.resnet18(weights=None, num_classes=10))
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"teacher.checkpoint={spec}"])  # files=True: no path check
    art = load_teacher(cfg, build_family("resnet18", in_channels=3, num_classes=10))
    assert art["source"] == {"path": spec, "file": str(cached), "format": "torchvision"}
    teacher = Teacher(build_family("resnet18", in_channels=3, num_classes=10))
    teacher.load_state_dict(art["state_dict"])
    _assert_same_logits(teacher.eval(), tv, torch.randn(2, 3, 64, 64))


def test_a_download_is_checked_against_the_hash_in_its_name_and_leaves_nothing_when_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    state = CifarResNet(3, channels=(4, 8, 16)).state_dict()
    url, src = _hashed(tmp_path / "src", state)
    assert zoo.locate(url).read_bytes() == src.read_bytes()
    bad_url, bad = _hashed(tmp_path / "bad", state, "other", good=False)
    with pytest.raises(ValueError) as err:
        zoo.locate(bad_url)
    msg = str(err.value)
    assert "\n" not in msg and bad_url in msg and str(zoo.cached_path(bad_url)) in msg
    assert not zoo.cached_path(bad_url).exists() and not list(zoo.cached_path(bad_url).parent.glob("tmp*"))


@pytest.mark.parametrize("spec, says", [
    ("torchvision:ResNet18_Weights.IMAGENET1K_V9", "torchvision has no weights"),
    ("http://127.0.0.1:9/teacher-0123abcd.pth", "put the file at"),  # the discard port: refused at once
])
def test_an_unknown_or_unreachable_teacher_is_one_line_naming_the_fix(tmp_path, monkeypatch, spec, says):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"teacher.checkpoint={spec}"])
    with pytest.raises(CheckpointError) as err:
        load_teacher(cfg, build_family("resnet18", in_channels=3, num_classes=10))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"teacher.checkpoint {spec}") and says in msg


def test_config_fetch_teacher_downloads_once_and_prints_the_file(tmp_path):
    url, src = _hashed(tmp_path / "src", CifarResNet(3, channels=(4, 8, 16)).state_dict())
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "neumeta_dist.cli", "config", str(ROOT / "configs/demo.yaml"),
           f"teacher.checkpoint={url}", "--fetch-teacher"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    cached = tmp_path / "home/hub/checkpoints" / src.name
    assert cached.read_bytes() == src.read_bytes()
    assert out.stdout.rstrip().splitlines()[-1].startswith(f"# teacher.checkpoint {url}: {cached}")
