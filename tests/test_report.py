"""neumeta_dist.evaluation.report: the evidence table marks each width's kind and carries each row's
provenance; write_report copies the JSONs beside the table and draws the plot."""
from __future__ import annotations

import json

from neumeta_dist.evaluation.report import table, write_report


def _row(recipe, kinds, acc, **extra):
    widths = [{"width": w, "seen": k == "trained", "kind": k, "params": int(100 * w), "compression": 1 - w,
               "accuracy": a} for (w, k), a in zip(kinds, acc)]
    return {"teacher": {"accuracy": 0.9, "params": 100}, "widths": widths, "dataset": "fashion-mnist",
            "model": "resnet20", "recipe": recipe, "stages_completed": 6, "generated_layers": ["a"] * 24, **extra}


KINDS = [(0.25, "outside"), (0.625, "held_out"), (1.0, "trained")]


def test_cells_mark_held_out_and_outside_widths_and_rows_carry_provenance():
    r = _row("full", KINDS, [0.5, 0.8, 0.88], command="launch/train.py --config x.yaml", commit="abcdef1234",
             wall_s={"0": 600, "1": 1200})
    ind = {"widths": [{"width": 0.25, "accuracy": 0.87}]}
    text = table([r], ind, {})
    assert "| full | 0.5000* | 0.8000† | 0.8800 |" in text
    assert "| individually trained | 0.8700 | – | – |" in text
    assert "| full | 6 | 24 | 30 | abcdef1 | `launch/train.py --config x.yaml` |" in text


def test_rows_written_before_kinds_existed_still_render():
    r = _row("old", KINDS, [0.5, 0.8, 0.88])
    for w in r["widths"]:
        del w["kind"]
    assert "| old | 0.5000* | 0.8000* | 0.8800 |" in table([r], None, {"old": "cmd"})


def test_write_report_copies_each_json_beside_the_table_and_plots(tmp_path):
    runs = []
    for name in ("full", "slimmable"):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_row(name, KINDS, [0.5, 0.8, 0.9])))
        runs.append(d)
    out = tmp_path / "docs" / "w050" / "results.md"
    text = write_report(runs, None, out, {})
    assert "| slimmable |" in text
    for name in ("full", "slimmable"):
        assert json.loads((out.parent / "results" / f"fashion-mnist_resnet20_{name}.json").read_text())["recipe"] == name
    assert (out.parent / "fashion-mnist_resnet20.png").read_bytes()[:4] == b"\x89PNG"


def test_the_plot_takes_macs_on_its_x_axis_and_refuses_rows_without_them(tmp_path):
    import pytest

    from neumeta_dist.evaluation.report import plot
    r = _row("full", KINDS, [0.5, 0.8, 0.9])
    with pytest.raises(ValueError, match="full results have no macs per width.*re-run `neumeta-dist eval`"):
        plot([r], None, tmp_path / "x.png", x="macs")
    for w in r["widths"]:
        w["macs"] = int(1e6 * w["width"])
    ind = {"widths": [{"width": 0.25, "accuracy": 0.87}]}  # an older baseline without MACs: left out
    plot([r], ind, tmp_path / "macs.png", x="macs")
    assert (tmp_path / "macs.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_groups_give_mean_and_spread_per_width_and_their_jsons_are_kept(tmp_path):
    from neumeta_dist.cli import main
    dirs = []
    for seed, accs in ((0, [0.5, 0.8, 0.90]), (1, [0.7, 0.8, 0.92])):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_row(f"nsn_seed{seed}", KINDS, accs, seed=seed)))
        dirs.append(str(d))
    out = tmp_path / "docs" / "results.md"
    main(["report", "--runs", dirs[0], "--out", str(out), "--seeds", f"nsn={','.join(dirs)}"])
    text = out.read_text()
    assert "| nsn (0, 1) | 0.6000 ± 0.1414 | 0.8000 ± 0.0000 | 0.9100 ± 0.0141 |" in text
    assert json.loads((out.parent / "results" / "fashion-mnist_resnet20_nsn_seed1.json").read_text())["seed"] == 1



def test_two_runs_of_one_recipe_are_refused_rather_than_one_json_overwriting_the_other(tmp_path):
    import pytest
    dirs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_row("slimmable", KINDS, [0.5, 0.8, 0.9])))
        dirs.append(d)
    with pytest.raises(ValueError, match="both recipe 'slimmable': re-run one with its own recipe.name"):
        write_report(dirs[:1], None, tmp_path / "r.md", {}, seeds={"s": dirs})
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
