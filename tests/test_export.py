"""neumeta_dist.evaluation.export: a generated width becomes a standalone network, saved and reloaded —
by this package (`pt`) or, as TorchScript, a torch.export program or ONNX, without it."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest
import torch
from conftest import make_net

from neumeta_dist.evaluation.export import PlainNet, load_exported, materialise, save_exported, write
from neumeta_dist.models.registry import build_family

pytestmark = pytest.mark.usefixtures("one_thread")


def _round_trip(net, fraction, tmp_path, x):
    net.eval()
    weights = net.generate(fraction)
    with torch.no_grad():
        expected, _ = net(x, fraction, weights=weights)
    path = tmp_path / f"net_{fraction}.pt"
    save_exported(materialise(net, weights), path, fraction)
    loaded = load_exported(path)
    assert isinstance(loaded, PlainNet)
    with torch.no_grad():
        return expected, loaded(x), loaded


@pytest.mark.parametrize("generated", ["all", "last_block"])
@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.3])
def test_exported_network_reloads_to_the_same_logits(tmp_path, tiny_resnet20, generated, fraction):
    net = make_net(tiny_resnet20, generated)
    x = torch.randn(3, 1, 16, 16)
    expected, got, loaded = _round_trip(net, fraction, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)
    # a standalone network: every tensor of the family, at the sizes of that width
    w = loaded._w()
    sizes = net.sizes(fraction)
    assert set(w) == {f"{l.name}.{k}" for l in tiny_resnet20.layers for k in ("weight", "bias")}
    for l in tiny_resnet20.layers:
        assert tuple(w[f"{l.name}.weight"].shape) == l.weight_shape(sizes)


def test_exported_resnet18_reloads_to_the_same_logits(tmp_path):
    family = build_family("resnet18", 0.0625, in_channels=3)
    expected, got, _ = _round_trip(make_net(family, scale="all"), 0.5, tmp_path, torch.randn(2, 3, 32, 32))
    assert torch.allclose(got, expected, atol=1e-6)


def test_exported_network_keeps_trained_skipinit_scales(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20, norm="skipinit")
    assert len(net.alpha) == len(tiny_resnet20.blocks)
    with torch.no_grad():
        for i, a in enumerate(net.alpha.values()):
            a.fill_(0.1 * (i + 1))  # as if trained: every block's α differs from 0 and 1
    x = torch.randn(3, 1, 16, 16)
    expected, got, loaded = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert sorted(loaded.alphas.values()) == pytest.approx([0.1 * (i + 1) for i in range(len(net.alpha))])


def test_exported_network_of_a_partial_stage_matches_the_stage_network(tmp_path, tiny_resnet20):
    """Mid-plan, only the active blocks are generated (with their α); the rest is the teacher's."""
    net = make_net(tiny_resnet20, norm="skipinit")
    with torch.no_grad():
        for a in net.alpha.values():
            a.fill_(0.5)
    net.activate(tiny_resnet20.layers[:5])  # stem, layer1.0, layer1.1
    x = torch.randn(3, 1, 16, 16)
    expected, got, _ = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_exported_network_uses_the_trained_classifier_copy(tmp_path, tiny_resnet20):
    """With `train_head`, the classifier is a trained parameter, not the teacher's."""
    from conftest import random_bn_teacher

    from neumeta_dist.config import INRConfig
    from neumeta_dist.core.metamorphic import MetamorphicNet
    from neumeta_dist.recipe.stages import generated_layers

    reference = random_bn_teacher(tiny_resnet20).folded()
    net = MetamorphicNet(tiny_resnet20, reference, generated_layers(tiny_resnet20, "last_block"),
                         INRConfig(hidden=16, layers=1, num_freqs=4), scale="inner", norm="fold",
                         train_head=True)
    assert len(net.shared) == 2
    with torch.no_grad():
        for p in net.shared.values():
            p.add_(0.5)  # as if trained away from the teacher's classifier
    x = torch.randn(3, 1, 16, 16)
    expected, got, _ = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_export_records_the_width_and_loads_without_the_inr(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20).eval()
    path = tmp_path / "w.pt"
    save_exported(materialise(net, net.generate(0.5)), path, 0.5)
    art = torch.load(path, weights_only=True)
    assert art["width"] == 0.5
    loaded = load_exported(path)
    assert not any("inr" in name for name, _ in loaded.named_parameters())
    n_params = sum(p.numel() for p in loaded.parameters())
    assert n_params == net.params_at(0.5)


# --- standalone formats: loaded and run by torch or onnxruntime alone ------------------------

STANDALONE_FORMATS = {"torchscript": "net.ts", "pt2": "net.pt2", "onnx": "net.onnx"}
# What a process without this package runs: each artefact on the saved images, batch 3 and 1
# (the traced batch was 2). The outputs come back as tensors in one file.
LOADER = r"""
import sys, importlib.util
assert importlib.util.find_spec("neumeta_dist") is None, "neumeta_dist importable: not a standalone check"
import torch
x = torch.load("x.pt")
out = {"torchscript": [torch.jit.load("net.ts")(b) for b in (x, x[:1])],
       "pt2": [torch.export.load("net.pt2").module()(b) for b in (x, x[:1])]}
import onnxruntime
session = onnxruntime.InferenceSession("net.onnx", providers=["CPUExecutionProvider"])
out["onnx"] = [torch.from_numpy(session.run(["logits"], {"images": b.numpy()})[0]) for b in (x, x[:1])]
torch.save(out, "out.pt")
"""


def _without_this_package(script: str, cwd) -> subprocess.CompletedProcess:
    """Run `script` with this interpreter and its site-packages, but neither PYTHONPATH, the
    current directory, nor the .pth files that point an editable install at this package
    (-I -S; site-packages put back on sys.path by hand, so torch and onnxruntime import)."""
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    head = f"import sys; sys.path += {site!r}\n"
    env = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-I", "-S", "-c", head + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_standalone_exports_run_without_this_package_and_give_the_evaluated_logits(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20, norm="skipinit").eval()
    with torch.no_grad():
        for i, a in enumerate(net.alpha.values()):
            a.fill_(0.2 * (i + 1))  # trained residual scales travel in the traced graph
    weights = net.generate(0.5)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected, _ = net(x, 0.5, weights=weights)  # what `neumeta-dist eval` scores
    plain = materialise(net, weights)
    for fmt, name in STANDALONE_FORMATS.items():
        assert str(tmp_path / name) in write(plain, tmp_path / name, fmt, 0.5, torch.randn(2, 1, 16, 16))  # how to load it
    torch.save(x, tmp_path / "x.pt")

    blocked = _without_this_package("import neumeta_dist", tmp_path)
    assert blocked.returncode == 1 and "No module named 'neumeta_dist'" in blocked.stderr
    ran = _without_this_package(LOADER, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    for fmt in STANDALONE_FORMATS:
        full, one = out[fmt]
        assert full.shape == (3, 10) and one.shape == (1, 10)
        assert (full - expected).abs().max() <= STANDALONE_ATOL[fmt], fmt
        assert (one - expected[:1]).abs().max() <= STANDALONE_ATOL[fmt], fmt


# Measured on this network: TorchScript and torch.export replay the same aten ops (0.0);
# onnxruntime's own kernels differ in rounding (≤ 1e-6 observed).
STANDALONE_ATOL = {"torchscript": 1e-6, "pt2": 1e-6, "onnx": 1e-5}


def test_an_unknown_standalone_format_is_refused(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20).eval()
    with pytest.raises(KeyError):
        write(materialise(net, net.generate(0.5)), tmp_path / "x", "tflite", 0.5, torch.randn(2, 1, 16, 16))
