"""The baseline a metamorphic network is measured against: one network trained on its own at
each width, with the teacher's recipe and budget, and the same channel groups scaled as the
config's metamorphic network scales (so parameter counts match width for width).

`neumeta-dist individual --config X` writes `<run_dir>/individual.json`; already trained
widths are kept, and each width checkpoints at its epoch ends (`<run_dir>/individual_<w>/`,
as the teacher does), so an interrupted sweep resumes where it stopped. Each width is scored
on test and on the held-out splits `eval.splits` names (`by_split`), as the sweeps are.
"""
from __future__ import annotations

import json
import time

from ..checkpoint import atomic_write_text
from ..config import Config
from ..distributed.accelerator import make_accelerator
from ..evaluation.accuracy import by_split
from ..models.family import Teacher, layer_areas, mac_count, parameter_count
from ..recipe.stages import generated_layers, metamorphic_groups
from ..records import provenance
from ..training.context import RunContext
from ..training.process import seed_everything, set_threads
from ..training.teacher import fit


def train_individual(cfg: Config, widths: list[float]) -> list[dict]:
    set_threads()
    accelerator = make_accelerator()
    ctx = RunContext.load(cfg)
    splits, family = ctx.splits, ctx.family
    groups = metamorphic_groups(family, generated_layers(family, cfg.meta.generated), cfg.meta.scale)
    path = ctx.run.individual
    rows = json.loads(path.read_text())["widths"] if path.is_file() else []
    full = parameter_count(family, family.full_sizes())
    for w in sorted(set(widths) - {r["width"] for r in rows}):
        seed_everything(cfg.train.seed)
        sizes = family.sizes(w, groups)
        t0 = time.perf_counter()
        name = f"individual_{w:g}"
        net, acc = fit(Teacher(family, sizes), cfg, accelerator, splits, name, ctx.run.root / name)
        held_out = splits.held_out(cfg.eval.splits)
        if held_out:
            acc = by_split(net, splits.test, held_out, cfg.data.eval_batch_size, accelerator)
        params = parameter_count(family, sizes)
        # each width keeps the provenance of the command that trained it (a sweep may resume)
        macs = mac_count(family, sizes, layer_areas(family, splits.image_size))
        scores = {"accuracy": acc["test"], "by_split": acc} if isinstance(acc, dict) else {"accuracy": acc}
        rows.append({"width": w, "params": params, "macs": macs, "compression": 1.0 - params / full, **scores,
                     **provenance.record(wall_s=round(time.perf_counter() - t0, 1))})
        rows.sort(key=lambda r: r["width"])
        if accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"dataset": splits.name, "model": family.name,
                                                "epochs": cfg.teacher.epochs, "seed": cfg.train.seed,
                                                "config": cfg.to_dict(), "widths": rows}, indent=2))
    return rows
