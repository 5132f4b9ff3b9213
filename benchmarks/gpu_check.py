"""The summary of a GPU check (launch/gpu_check.sh): one table from its step records and the
JSONs its steps wrote, and `gpu_check.json` beside them.

    python benchmarks/gpu_check.py OUT_DIR STEPS_TSV [JUNIT_XML] [--device cuda|cpu]

STEPS_TSV holds one line per step, `name<TAB>status<TAB>seconds<TAB>limit` (status: ok,
failed (rc N), timeout, skipped); JUNIT_XML is pytest's report of the CUDA tests. A
`cuda_tests` step that exited 0 yet ran nothing fails here: on `--device cuda` when no test
passed (all skipped: the GPU path went unchecked), anywhere when none was collected. A step's
figures come from the JSON it writes (generation_<device>.json, train_step_<device>.json,
stage_<device>.json, config_step_<device>.json); a step that failed or ran out of time shows what it wrote before.
Imports only the standard library: it must report even when torch is what broke.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_steps(tsv: Path) -> list[dict]:
    steps = []
    for line in tsv.read_text().splitlines():
        name, status, seconds, limit = line.split("\t")
        steps.append({"name": name, "status": status, "seconds": float(seconds), "limit_s": float(limit)})
    return steps


def read_tests(junit: Path | None) -> dict | None:
    """Counts and the names of failing tests from pytest's JUnit XML."""
    if junit is None or not junit.is_file():
        return None
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    outcome = lambda c: next((t for t in ("failure", "error", "skipped") if c.find(t) is not None), "passed")
    counts = {k: 0 for k in ("passed", "failure", "error", "skipped")}
    for c in cases:
        counts[outcome(c)] += 1
    return {**counts, "failed": [f"{c.get('classname')}::{c.get('name')}" for c in cases
                                 if outcome(c) in ("failure", "error")]}


def judge_tests(steps: list[dict], tests: dict | None, device: str) -> None:
    """Mark an 'ok' cuda_tests step failed when it checked nothing (pytest exits 0 when every
    test is skipped)."""
    for s in steps:
        if s["name"] != "cuda_tests" or s["status"] != "ok":
            continue
        if tests is None or sum(tests[k] for k in ("passed", "failure", "error", "skipped")) == 0:
            s["status"] = "failed (0 tests collected)"
        elif device == "cuda" and tests["passed"] == 0:
            s["status"] = "failed (0 tests ran: all skipped)"


def _json(out: Path, prefix: str) -> dict | None:
    found = sorted(out.glob(f"{prefix}_*.json"))
    return json.loads(found[0].read_text()) if found else None


def _pct(r: dict) -> str:
    p = r.get("percent_of_measured_bf16_peak")
    return f", {p:.1f} % of measured peak" if p is not None else ""


def _variant_lines(groups: dict, measured: str, rate) -> list[str]:
    """One line per variant (its rate when it has `measured`, else the error it hit) and each
    group's speed-up."""
    lines = []
    for name, group in groups.items():
        for v, r in group["variants"].items():
            lines.append(f"{name} {v}: " + (rate(r) if measured in r else r.get("error", "?")))
        if group.get("speedup_vs_reference"):
            lines.append(f"{name}: ×{group['speedup_vs_reference']:.2f} vs reference")
    return lines


def generation_lines(g: dict) -> list[str]:
    return _variant_lines(g.get("families", {}), "median_s",
                          lambda r: f"{r['median_s'] * 1e3:.2f} ms, {r['tflop_per_s']:.3g} TFLOP/s{_pct(r)}")


def train_step_lines(t: dict) -> list[str]:
    return _variant_lines(t.get("cases", {}), "images_per_s",
                          lambda r: f"{r['images_per_s']:.1f} images/s, "
                                    f"{r.get('tflop_per_s', float('nan')):.3g} TFLOP/s{_pct(r)}")


def stage_lines(s: dict) -> list[str]:
    lines = []
    for k, r in s.get("stages", {}).items():
        rate = f"{r['images_per_s']:.0f} images/s" if r.get("images_per_s") else "- images/s"
        lines.append(f"stage {k}: {r['wall_s']:.1f} s, {rate}, peak {r['peak_memory_gib']:.2f} GiB")
    return lines


def config_lines(c: dict) -> list[str]:
    return [f"{Path(path).stem}: {r['median_step_s']:.3f} s/step, {r['images_per_s']:.0f} images/s, "
            f"{r['stage_hours']:.2f} h per stage of {r['steps_per_stage']:,} steps"
            + (f", peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else "")
            for path, r in c.get("configs", {}).items()]


def test_lines(t: dict | None) -> list[str]:
    if t is None:
        return ["no report"]
    return [f"{t['passed']} passed, {t['skipped']} skipped, {t['failure']} failed, {t['error']} errors",
            *[f"FAILED {n}" for n in t["failed"]]]


def summarise(out: Path, steps: list[dict], tests: dict | None) -> tuple[dict, str]:
    jsons = {"generation": _json(out, "generation"), "train_step": _json(out, "train_step"),
             "stage": _json(out, "stage"), "configs": _json(out, "config_step")}
    figures = {"cuda_tests": test_lines(tests),
               "generation": generation_lines(jsons["generation"] or {}),
               "train_step": train_step_lines(jsons["train_step"] or {}),
               "stage": stage_lines(jsons["stage"] or {}),
               "configs": config_lines(jsons["configs"] or {})}
    first = next((j for j in jsons.values() if j), {})
    peak = next((j.get("measured_bf16_matmul_peak") for j in jsons.values() if j and j.get("measured_bf16_matmul_peak")), None)
    total = sum(s["seconds"] for s in steps)
    header = (f"GPU check on {first.get('device_name', '?')} (torch {first.get('torch', '?')}): {total:.0f} s"
              + (f"; bf16 matmul {peak['n']}³ measured {peak['tflop_per_s']:.3g} TFLOP/s" if peak else ""))
    rows = ["| step | status | s (limit) | figures |", "|---|---|---|---|"]
    for s in steps:
        lines = figures.get(s["name"]) or [""]
        rows.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} ({s['limit_s']:.0f}) | {lines[0]} |")
        rows += [f"| | | | {line} |" for line in lines[1:]]
    summary = {"device_name": first.get("device_name"), "torch": first.get("torch"), "total_s": total,
               "measured_bf16_matmul_peak": peak, "steps": steps, "cuda_tests": tests,
               "files": sorted(p.name for p in out.glob("*.json") if p.name != "gpu_check.json")}
    return summary, "\n".join([header, *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("tsv", type=Path)
    p.add_argument("junit", type=Path, nargs="?")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out
    steps = read_steps(args.tsv) if args.tsv.is_file() else []
    tests = read_tests(args.junit)
    judge_tests(steps, tests, args.device)
    summary, table = summarise(out, steps, tests)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(table)
    print(f"wrote {out / 'gpu_check.json'}")
    return 0 if all(s["status"] in ("ok", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
