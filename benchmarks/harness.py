"""What every benchmark shares: the machine's description, timing, host-sync counting, JSON.

Imports only torch and the standard library (the GPU image has no DeepSpeed/WebDataset/submitit).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name;
# the first match wins, so the more specific names come first.
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
              ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12))


def open_device(name: str, threads: int) -> torch.device:
    """The benchmark's device (a clear error when CUDA is asked for but absent) and CPU threads."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible (use --device cpu)")
    if threads:
        torch.set_num_threads(threads)
    return device


def add_common_args(p: argparse.ArgumentParser) -> None:
    """What every timed benchmark takes: the device, our precision, warm-up calls, CPU threads."""
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="ours (default: bf16 on cuda)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--peak-n", type=int, default=None,
                   help="side of the n×n×n bf16 matmul that measures the device's peak "
                        "(default 8192 on cuda, 256 on cpu; 0: not measured)")


def start(p: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, torch.device]:
    """Parsed arguments (precision defaulted by device) and the opened device."""
    args = p.parse_args(argv)
    device = open_device(args.device, args.threads)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if args.peak_n is None:
        args.peak_n = 8192 if device.type == "cuda" else 256
    return args, device


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = _cpu_name()
    return info


def bf16_peak(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAKS if key in device_name), None)


def matmul_peak(device: torch.device, n: int, repeats: int = 10, warmup: int = 3) -> dict | None:
    """The bf16 dense matmul rate this device reaches here, on n×n×n products of random data.

    The yardstick for "% of peak": measured in the same process as the figures it divides,
    because clocks, power caps and the BLAS differ between machines of one name (an H200
    seen here: 769–798 TFLOP/s against a 989 datasheet figure). Ten products per timed call,
    so the per-call sync is noise.
    """
    if n <= 0:
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    c = torch.empty_like(a)
    per_call = 10

    def products():
        for _ in range(per_call):
            torch.matmul(a, b, out=c)
    r = timed(products, device, repeats, warmup)
    del a, b, c
    free(device)
    return {"n": n, "tflop_per_s": per_call * 2 * n ** 3 / r["median_s"] / 1e12, "median_s": r["median_s"] / per_call}


def flop_rates(flops: float, seconds: float, measured_peak: dict | None, device_name: str, device) -> dict:
    """TFLOP/s of `flops` done in `seconds`, as a share of the measured bf16 matmul peak and
    (on CUDA) of the datasheet's dense bf16 peak."""
    rate = flops / seconds
    out = {"tflop_per_s": rate / 1e12}
    if measured_peak:
        out["percent_of_measured_bf16_peak"] = 100 * rate / (measured_peak["tflop_per_s"] * 1e12)
    sheet = bf16_peak(device_name)
    if sheet and torch.device(device).type == "cuda":
        out["percent_of_bf16_peak"] = 100 * rate / sheet
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Seconds of `warmup` untimed calls (compilation lands here: `first_call_s` is the first
    one alone) and of `repeats` timed calls; the graphs `torch.compile` made in the warm-up and
    in the timed calls (`graphs_timed` > 0: a recompile the warm-up did not absorb)."""
    sync(device)
    graphs = graphs_compiled()
    t0 = time.perf_counter()
    first = None
    for _ in range(warmup):
        fn()
        sync(device)
        first = time.perf_counter() - t0 if first is None else first
    warm = time.perf_counter() - t0
    graphs_warm = graphs_compiled() - graphs
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"warmup_s": warm, "first_call_s": first, "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times, "graphs_warmup": graphs_warm, "graphs_timed": graphs_compiled() - graphs - graphs_warm}


def graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process (0 where nothing was compiled)."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def host_syncs(fn: Callable[[], object], device: torch.device) -> dict | None:
    """How often one call makes the host wait for the GPU, counted two ways: CUDA's sync
    debug mode (a warning per synchronising op) and the profiler's runtime events."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    debug = sum("synchroniz" in str(w.message) for w in caught)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    names = [e.name for e in prof.events()]
    runtime = sum(n in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
                        "cudaMemcpy") for n in names)
    return {"sync_debug_warnings": debug, "profiler_sync_calls": max(0, runtime - 1)}  # − our own sync


def write_json(out: str | Path, name: str, payload: dict) -> Path:
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


def free(device: torch.device) -> None:
    gc.collect()  # a finished variant's optimiser/EMA may sit in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def announced_peak(device: torch.device, n: int) -> dict | None:
    """`matmul_peak`, printed once where a benchmark starts (None off CUDA or with n = 0)."""
    peak = matmul_peak(device, n)
    if peak:
        print(f"  bf16 matmul {peak['n']}³: {peak['tflop_per_s']:.3g} TFLOP/s", flush=True)
    return peak
