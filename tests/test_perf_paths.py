"""The fast paths compute what the plain ones compute, and the benchmarks compare like with like.

- the grouped-GEMM INR (the CUDA default under bf16) equals the per-segment loop;
- the compiled INR trunk and functional student equal eager (bf16 on CPU: the grouped
  kernel's meta function accepts bf16 only, which is the GPU path's dtype anyway);
- the reference-style generator and training step of benchmarks/ (masked per-layer MLPs,
  `param.data` + manual chain rule) emit our weights and our gradients for the same
  parameters — what makes the speed-ups in docs/benchmarks.md honest;
- both benchmark scripts run end to end and write their JSON.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_net

from benchmarks import generation, train_step
from benchmarks.reference import ReferenceGenerator, ReferenceINR
from neumeta_dist.config import ConfigError, load_config
from neumeta_dist.core.inr import INR
from neumeta_dist.models.family import Teacher
from neumeta_dist.models.registry import build_family
from neumeta_dist.training.execution import Execution

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_scales(net):
    with torch.no_grad():  # per-head residual scales that differ, so a head mix-up shows
        net.inr.res_scale.uniform_(0.05, 0.5)
    return net


def _generate_with_grads(net, matmul, fraction=0.5, bf16=False, compile=False):
    net.set_execution(matmul, compile)
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        weights = net.generate(fraction, noise=1.0, generator=torch.Generator().manual_seed(0))
    sum((w.float() ** 2).sum() for w in weights.values()).backward()
    grads = {n: p.grad.clone() for n, p in net.inr.named_parameters() if p.grad is not None}
    net.set_execution("auto", False)
    return {n: w.detach().float() for n, w in weights.items()}, grads


def _assert_close(a: dict, b: dict, rtol: float, atol: float):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("heads", ["per_tensor", "shared"])
def test_grouped_generation_equals_the_per_segment_loop_with_gradients(tiny_resnet20, heads):
    net = _randomise_scales(make_net(tiny_resnet20, heads=heads).train())
    net.activate(tiny_resnet20.layers[3:9])  # a stage: segments' heads are not 0..S-1
    w_loop, g_loop = _generate_with_grads(net, "loop")
    w_grp, g_grp = _generate_with_grads(net, "grouped")
    _assert_close(w_grp, w_loop, rtol=1e-5, atol=1e-6)
    _assert_close(g_grp, g_loop, rtol=1e-4, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in g_grp.values())


def test_grouped_generation_under_bf16_matches_the_loop_up_to_rounding(tiny_resnet20):
    net = _randomise_scales(make_net(tiny_resnet20).train())
    w_loop, g_loop = _generate_with_grads(net, "loop", bf16=True)
    w_grp, g_grp = _generate_with_grads(net, "grouped", bf16=True)
    w_fp32, _ = _generate_with_grads(net, "loop")
    _assert_close(w_grp, w_loop, rtol=2e-2, atol=2e-3)
    for n in g_loop:  # gradients: bf16 GEMMs in a different order, so compare by norm
        assert (g_grp[n] - g_loop[n]).norm() <= 2e-2 * g_loop[n].norm() + 1e-6, n
    _assert_close(w_grp, w_fp32, rtol=5e-2, atol=5e-3)  # and bf16 is still the fp32 function


def test_auto_kernel_is_the_loop_on_cpu_and_grouped_only_where_aligned():
    inr = INR(num_heads=2, out_dim=9, hidden=16, layers=1, num_freqs=4)
    assert inr.kernel(torch.device("cpu")) == "loop"
    with torch.autocast("cpu", torch.bfloat16):
        assert inr.kernel(torch.device("cpu")) == "loop"  # CPU keeps its behaviour
    with pytest.raises(ValueError, match="matmul"):
        inr.set_execution("cutlass")
    with pytest.raises(ValueError, match="tile"):
        inr(torch.rand(10, 6), [(0, 0, 4), (1, 5, 10)])


# LeNet, the smallest family, and in-process kernel builds: compilation stays short on a CPU.
# torch's config.patch, not monkeypatch: see tests/test_compilation.py
@torch._inductor.config.patch(compile_threads=1)
def test_compiled_inr_and_student_equal_eager():
    torch._dynamo.reset()
    net = _randomise_scales(make_net(build_family("lenet", 0.25, in_channels=1)).train())
    x = torch.randn(2, 1, 28, 28)

    def run(compile):
        net.set_execution("grouped", compile)
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            logits, _ = net(x, 0.5, noise=1.0, generator=torch.Generator().manual_seed(0))
        logits.float().square().sum().backward()
        return logits.detach().float(), {n: p.grad.clone() for n, p in net.inr.named_parameters()}

    eager, g_eager = run(False)
    compiled, g_comp = run(True)
    torch.testing.assert_close(compiled, eager, rtol=3e-2, atol=3e-2)
    for n in g_eager:
        assert (g_comp[n] - g_eager[n]).norm() <= 5e-2 * g_eager[n].norm() + 1e-6, n
    net.set_execution("auto", False)


@pytest.mark.parametrize("name,width", [("resnet20", 0.25), ("resnet18", 0.0625)])
def test_reference_generator_emits_our_weights_for_the_same_parameters(name, width):
    family = build_family(name, width, in_channels=3)
    net = _randomise_scales(make_net(family).train())
    ref = ReferenceGenerator(ReferenceINR.from_inr(net.inr, "relu"), net.generated, net.norm_width, net.kernel)
    for fraction in (1.0, 0.5):
        ours = net.generate(fraction, noise=1.0, generator=torch.Generator().manual_seed(int(fraction * 10)))
        theirs = ref.generate(net.sizes(fraction), 1.0, torch.Generator().manual_seed(int(fraction * 10)))
        _assert_close(theirs, {n: w.detach() for n, w in ours.items()}, rtol=1e-5, atol=1e-6)


def test_reference_training_step_gives_our_inr_gradients(tiny_resnet20):
    """Manual chain rule through `param.data` == ordinary autograd, head by head."""
    family = tiny_resnet20
    torch.manual_seed(0)
    teacher = Teacher(family).eval().requires_grad_(False)
    batches = [(torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))) for _ in range(3)]
    ours = train_step.OursStep(_randomise_scales(make_net(family)).train(), teacher, Execution(), "cpu")
    ref = train_step.ReferenceStep(ours.net, teacher, "relu", "cpu")
    ours.accumulate(batches)
    ref.accumulate(batches)
    inr = ours.net.inr
    for h, mlp in enumerate(ref.inr.mlps):
        pairs = [(mlp.inp.weight.grad.T, inr.w_in.grad[h]), (mlp.out.bias.grad, inr.b_out.grad[h]),
                 (mlp.hidden[0].weight.grad.T, inr.w_hid[0].grad[h]), (mlp.scales.grad, inr.res_scale.grad[:, h])]
        for theirs, mine in pairs:
            torch.testing.assert_close(theirs, mine, rtol=1e-3, atol=1e-6)
    assert inr.w_out.grad.abs().sum() > 0


def test_execution_keys_are_typed_and_validated():
    cfg = load_config(None, ["train.precision=bf16", "train.compile=true", "train.channels_last=true"])
    ex = Execution.from_config(cfg.train)
    assert ex == Execution("bf16", True, True)
    assert ex.batch(torch.zeros(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["train.precision=fp16"])
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=maybe"])
    assert Execution.from_config(load_config(None).train) == Execution("fp32", False, False)


def test_benchmark_scripts_run_and_write_their_json(tmp_path):
    generation.main(["--device", "cpu", "--out", str(tmp_path), "--families", "resnet20", "--hidden", "8",
                     "--layers", "1", "--num-freqs", "2", "--repeats", "1", "--warmup", "0"])
    g = json.loads((tmp_path / "generation_cpu.json").read_text())
    r20 = g["families"]["resnet20"]
    assert r20["rows"] == 33738
    times = {v: r["median_s"] for v, r in r20["variants"].items() if "median_s" in r}
    best = min(times[v] for v in ("ours", "ours_compiled") if v in times)  # the ratio is the reference's
    assert r20["speedup_vs_reference"] == pytest.approx(times["reference"] / best)  # time over ours
    assert {"ours", "reference"} <= set(r20["variants"]) and g["device_name"] and g["torch"]
    ours = r20["variants"]["ours"]  # what a compiled variant reports: its compile and any recompile
    assert ours["first_call_s"] is None and ours["graphs_warmup"] == ours["graphs_timed"] == 0  # (no warm-up here)
    train_step.main(["--device", "cpu", "--out", str(tmp_path), "--cases", "fmnist-resnet20", "--batch", "2",
                     "--micro", "2", "--hidden", "8", "--layers", "1", "--num-freqs", "2", "--steps", "1",
                     "--warmup", "0"])
    t = json.loads((tmp_path / "train_step_cpu.json").read_text())
    case = t["cases"]["fmnist-resnet20"]
    assert case["images_per_step"] == 4 and case["variants"]["ours"]["images_per_s"] > 0
    ips = {v: r["images_per_s"] for v, r in case["variants"].items() if "images_per_s" in r}
    best = max(ips[v] for v in ("ours", "ours_compiled") if v in ips)  # ours' throughput over the reference's
    assert case["speedup_vs_reference"] == pytest.approx(best / ips["reference"])


def test_a_stage_trains_under_bf16_channels_last_and_fused_settings(tmp_path):
    """training/loop.py with the GPU-path switches on (as far as a CPU goes): stage 0, then stage 1."""
    from neumeta_dist.training.pipeline import run

    overrides = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=64", "data.batch_size=32",
                 "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=authors",
                 "inr.hidden=16", "inr.layers=1", "inr.num_freqs=4", "train.max_steps=2", "train.log_every=1",
                 "train.widths_per_step=2", "recipe.units_per_stage=9", "recipe.warmup_steps=0", "meta.norm=skipinit",
                 "eval.widths=[0.5,1.0]",
                 "train.precision=bf16", "train.channels_last=true", "loss.kd=1.0", f"run_dir={tmp_path}"]
    cfg = load_config("configs/blockwise.yaml", overrides)
    run(cfg, only_stage=0)
    run(cfg, only_stage=1)
    final = torch.load(tmp_path / "stage_1" / "final.pt", weights_only=True)
    assert final["steps"] == 2 and all(0.0 <= a <= 1.0 for a in final["val"].values())
    assert all(torch.isfinite(v).all() for v in final["model"].values())
