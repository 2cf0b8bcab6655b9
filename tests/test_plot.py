"""Figures: alpha heatmaps (deviation from uniform, picks, absent ops), layered cell diagrams (matplotlib and
graphviz), curves in percent; the report's time columns and its one row per run."""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("matplotlib")

from nasrun.report import alpha_figures, cell_diagram, cell_layout, curves  # noqa: E402
from nasrun.report import summary as rep  # noqa: E402
from nasrun.genotype.genotype import PUBLISHED, Cell, Genotype, parse_nb201  # noqa: E402
from nasrun.spaces.ops import DARTS_OPS, NB201_OPS  # noqa: E402
from nasrun.spaces.space import cell_edges  # noqa: E402

DARTS_V2 = PUBLISHED["DARTS_V2"]
NB201 = parse_nb201("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
LARGE_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
             "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7")


def per_position(cells: int = 8, nodes: int = 4, seed: int = 0) -> Genotype:
    """A `large`-space genotype: one cell per position, nodes with 1 to 4 inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(cells):
        edges = []
        for target in range(2, 2 + nodes):
            k = int(rng.integers(1, min(4, target) + 1))
            for src in sorted(rng.choice(target, size=k, replace=False).tolist()):
                edges.append((str(rng.choice(LARGE_OPS[1:])), src, target))
        used = {s for _, s, _ in edges}
        concat = tuple(s for s in range(2, 2 + nodes) if s not in used) or (1 + nodes,)
        out[f"cell{i}"] = Cell(tuple(edges), concat, i in (cells // 3, 2 * cells // 3))
    return Genotype(space="large", ops=LARGE_OPS, nodes=nodes, inputs=2, cells=out)


# every state feeds node 5; node 4 has three inputs
DENSE = Genotype(space="large", ops=LARGE_OPS, nodes=4, inputs=2, cells={"cell0": Cell((
    ("sep_conv_3x3", 0, 2), ("skip_connect", 0, 3), ("dil_conv_5x5", 1, 3), ("sep_conv_5x5", 2, 3),
    ("max_pool_3x3", 0, 4), ("avg_pool_3x3", 1, 4), ("conv_7x1_1x7", 3, 4),
    ("sep_conv_7x7", 0, 5), ("dil_conv_3x3", 1, 5), ("skip_connect", 2, 5), ("sep_conv_3x3", 3, 5)), (4, 5), True)})
GENOTYPES = {"DARTS_V2": DARTS_V2, "paper 8 cells": per_position(8), "NB201": NB201, "dense": DENSE,
             "PDARTS": PUBLISHED["PDARTS"]}


def softmax_history(epochs: int, edges: int, ops: int, mask=None, seed: int = 0, drift: float = 0.06) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, out = np.zeros((edges, ops)), []
    step = rng.normal(0, drift, (edges, ops))
    for _ in range(epochs):
        a = a + step + rng.normal(0, 0.01, a.shape)
        w = np.exp(a - a.max(-1, keepdims=True)) * (1 if mask is None else mask)
        out.append(w / w.sum(-1, keepdims=True))
    return np.stack(out)


def close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ alpha heatmaps
def test_heatmap_shows_weight_minus_uniform_on_a_scale_centred_at_zero():
    weights = softmax_history(10, 14, 8, drift=0.002)  # a short search: every weight 0.12-0.13
    assert np.ptp(weights[-1]) < 0.03
    fig = alpha_figures.alphas_figure({"normal": weights, "reduce": weights[:, ::-1], "ops": np.array(DARTS_OPS)})
    try:
        image = fig.axes[0].images[0]
        shown = np.ma.getdata(image.get_array())
        np.testing.assert_allclose(shown, weights[-1] - 1 / 8)
        norm = image.norm
        assert norm.vcenter == 0.0 and norm.vmin == pytest.approx(-norm.vmax)
        assert norm.vmax == pytest.approx(np.abs(np.stack([weights[-1], weights[-1, ::-1]]) - 1 / 8).max())
        assert image.get_cmap().name.startswith("RdBu")
    finally:
        close(fig)


def test_heatmap_marks_the_op_each_edge_would_pick():
    weights = softmax_history(50, 14, 8)
    fig = alpha_figures.alphas_figure({"normal": weights, "ops": np.array(DARTS_OPS)})
    try:
        picks = {p.get_gid() for p in fig.axes[0].patches if (p.get_gid() or "").startswith("pick:")}
        last = weights[-1]
        expected = {f"pick:{e}:{1 + int(np.argmax(last[e, 1:]))}" for e in range(14)}  # column 0 is none
        assert picks == expected
    finally:
        close(fig)


def test_heatmap_masks_ops_an_edge_does_not_have():
    rng = np.random.default_rng(1)
    mask = np.zeros((14, 8))
    for e in range(14):
        mask[e, rng.choice(8, 2, replace=False)] = 1  # R-DARTS S1: two ops per edge
    weights = softmax_history(20, 14, 8, mask=mask)
    assert np.all((weights[-1] == 0) == (mask == 0))
    panel = alpha_figures.alpha_panel("normal", weights, list(DARTS_OPS))
    np.testing.assert_array_equal(panel.present, mask == 1)
    np.testing.assert_array_equal(np.ma.getmaskarray(panel.deviation), mask == 0)
    np.testing.assert_allclose(panel.deviation.compressed(), (weights[-1] - 0.5)[mask == 1])  # 1/k with k = 2
    fig = alpha_figures.alphas_figure({"normal": weights, "ops": np.array(DARTS_OPS)})
    try:
        ax = fig.axes[0]
        assert np.array_equal(np.ma.getmaskarray(ax.images[0].get_array()), mask == 0)
        assert any(p.get_hatch() for p in ax.patches)  # the masked cells show a hatched background
        numbers = [t for t in ax.texts if t.get_text().startswith((".", "0", "1"))]
        assert len(numbers) == int(mask.sum())  # no number on an absent op
    finally:
        close(fig)


def test_raw_alphas_are_shown_against_their_edge_mean():
    alphas = np.random.default_rng(2).uniform(0, 1, (5, 14, 8))  # NASP ranks clipped raw alphas
    alphas[-1, 3, 2] = 0.0  # clipped to 0 now, not absent
    panel = alpha_figures.alpha_panel("normal", alphas, list(DARTS_OPS))
    assert not panel.normalised and panel.present.all()
    np.testing.assert_allclose(panel.deviation, alphas[-1] - alphas[-1].mean(axis=1, keepdims=True))


def test_edge_labels_use_the_genotype_state_numbers():
    assert alpha_figures.edge_labels(14) == [f"{s} → {t}" for s, t in cell_edges(2, 4)]
    assert alpha_figures.edge_labels(14)[:5] == ["0 → 2", "1 → 2", "0 → 3", "1 → 3", "2 → 3"]
    assert alpha_figures.edge_labels(6) == ["0 → 1", "0 → 2", "1 → 2", "0 → 3", "1 → 3", "2 → 3"] == \
        [f"{s} → {t}" for s, t in cell_edges(1, 3)]
    assert alpha_figures.edge_labels(5) == [f"{s} → {t}" for s, t in cell_edges(2, 2)]
    assert alpha_figures.edge_labels(7) == [str(e) for e in range(7)]  # no cell has 7 edges
    # every edge of a genotype printed as "t=op(s)" is a heatmap row named "s → t"
    labels = set(alpha_figures.edge_labels(14))
    for cell in DARTS_V2.cells.values():
        assert {f"{s} → {t}" for _, s, t in cell.edges} <= labels
    assert "2=sep_conv_3x3(0)+sep_conv_3x3(1)" in str(DARTS_V2)


def test_heatmap_rows_and_titles_for_nb201_and_per_position_cells():
    fig = alpha_figures.alphas_figure({"normal": softmax_history(50, 6, 5), "ops": np.array(NB201_OPS)})
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == alpha_figures.edge_labels(6)
        assert ax.get_title(loc="left") == "cell, epoch 50 of 50"
    finally:
        close(fig)
    genotype = per_position(8)
    alphas = {**{f"cell{i}": softmax_history(50, 14, 10, seed=i) for i in range(8)}, "ops": np.array(LARGE_OPS)}
    fig = alpha_figures.alphas_figure(alphas, genotype=genotype)
    try:
        titles = [ax.get_title(loc="left") for ax in fig.axes if ax.images]
        assert len(titles) == 8 and titles[2] == "cell 2 (reduction), epoch 50 of 50"
        assert titles[0] == "cell 0 (normal), epoch 50 of 50"
        kept = {f"{s} → {t}" for _, s, t in genotype.cells["cell0"].edges}
        bold = {t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_fontweight() == "bold"}
        assert bold == kept
    finally:
        close(fig)


def test_plot_alphas_writes_a_png(tmp_path: Path):
    alphas = {"normal": softmax_history(3, 14, 8), "reduce": softmax_history(3, 14, 8, seed=1),
              "ops": np.array(DARTS_OPS)}
    path = alpha_figures.plot_alphas(alphas, tmp_path / "a" / "alphas.png", title="t", genotype=DARTS_V2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ cell diagrams
@pytest.mark.parametrize("name", list(GENOTYPES))
def test_layered_layout(name: str):
    genotype = GENOTYPES[name]
    inputs, nodes = genotype.inputs, genotype.nodes
    for cell in genotype.cells.values():
        layout = cell_layout.cell_layout(cell, nodes, inputs)
        xs = [layout.pos[s][0] for s in range(inputs + nodes)] + [layout.pos[-1][0]]
        assert all(layout.pos[s][0] == 0.0 for s in range(inputs))  # the inputs: first column
        assert all(b > a for a, b in zip(xs[inputs - 1:], xs[inputs:]))  # a column per node, in state order
        assert {layout.pos[s][1] for s in range(inputs, inputs + nodes)} == {0.0}  # nodes on one row
        drawn = [(op, s, t) for op, s, t in cell.edges if op != "none"]
        assert [(r.op, r.src, r.dst) for r in layout.routes if r.op is not None] == drawn
        assert sorted(r.src for r in layout.routes if r.op is None) == sorted(cell.concat)
        for r in layout.routes:  # no edge runs across a state other than its two ends
            pts = np.asarray(r.points)
            dense = np.vstack([np.linspace(a, b, 12) for a, b in zip(pts[:-1], pts[1:])])
            for state, centre in layout.pos.items():
                if state in (r.src, r.dst):
                    continue
                assert np.hypot(*(dense - centre).T).min() > cell_layout.RADIUS, (name, r, state)


def _boxes(fig, prefix: str):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return {(id(ax), t.get_gid()): (t.get_text(), t.get_window_extent(renderer))
            for ax in fig.axes for t in ax.texts if (t.get_gid() or "").startswith(prefix)}


@pytest.mark.parametrize("name", list(GENOTYPES))
def test_cell_labels_do_not_overlap(name: str):
    genotype = GENOTYPES[name]
    fig = cell_diagram.genotype_figure(genotype, title=name)
    try:
        labels = list(_boxes(fig, "edge:").values())
        expected = sum(1 for c in genotype.cells.values() for op, _, _ in c.edges if op != "none")
        assert len(labels) == expected
        for i, (text_a, a) in enumerate(labels):
            for text_b, b in labels[i + 1:]:
                assert not a.overlaps(b), f"{name}: {text_a!r} overlaps {text_b!r}"
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        circles = [p.get_window_extent(renderer) for ax in fig.axes for p in ax.patches
                   if type(p).__name__ == "Circle"]
        for text, box in labels:
            assert not any(box.overlaps(c) for c in circles), f"{name}: {text!r} covers a state"
    finally:
        close(fig)


def test_cell_states_edges_and_titles_as_the_genotype_prints_them():
    fig = cell_diagram.genotype_figure(DARTS_V2)
    try:
        axes = fig.axes
        assert [ax.get_title(loc="left") for ax in axes] == ["normal cell: 2 skip_connect",
                                                              "reduction cell: 3 skip_connect"]
        states = {t.get_gid(): t.get_text() for t in axes[0].texts if (t.get_gid() or "").startswith("state:")}
        assert states == {"state:0": "$c_{k-2}$", "state:1": "$c_{k-1}$", "state:2": "2", "state:3": "3",
                          "state:4": "4", "state:5": "5", "state:-1": "$c_{k}$"}
        edges = {(t.get_gid(), t.get_text()) for t in axes[0].texts if (t.get_gid() or "").startswith("edge:")}
        assert edges == {(f"edge:{s}->{d}", op) for op, s, d in DARTS_V2.cells["normal"].edges}
    finally:
        close(fig)
    fig = cell_diagram.genotype_figure(NB201)
    try:
        ax = fig.axes[0]
        assert ax.get_title(loc="left") == "cell: 1 skip_connect"
        states = {t.get_gid(): t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("state:")}
        assert states == {"state:0": "in", "state:1": "1", "state:2": "2", "state:3": "3", "state:-1": "out"}
        assert "edge:1->2" not in {t.get_gid() for t in ax.texts}  # the none edge is left out
    finally:
        close(fig)
    titles = [cell_diagram._cell_title(n, c, 8, 2) for n, c in per_position(8).cells.items()]
    assert titles[2].startswith("cell 2 (reduction): ") and titles[0].startswith("cell 0 (normal): ")


def test_op_colours_are_distinct_and_grouped_by_family():
    colours = {op: cell_diagram._color(op) for op in DARTS_OPS}
    assert len(set(colours.values())) == len(DARTS_OPS)
    families = {}
    for op, c in colours.items():
        families.setdefault(cell_diagram.op_family(op), set()).add(c)
    assert set(families) == {"none", "pool", "skip", "conv"}
    assert all(not (a & b) for f, a in families.items() for g, b in families.items() if f < g)
    assert cell_diagram.op_family("noise") == "none" and cell_diagram.op_family("conv_7x1_1x7") == "conv"
    from matplotlib.colors import to_rgb

    for op in ("sep_conv_3x3", "skip_connect", "max_pool_3x3", "dil_conv_5x5", "sep_conv_5x5"):
        assert sum(to_rgb(colours[op])) / 3 < 0.65  # dark enough to read as text on white


def test_plot_genotype_uses_matplotlib_without_dot(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(cell_diagram.shutil, "which", lambda name: None)
    for name, genotype in GENOTYPES.items():
        path = cell_diagram.plot_genotype(genotype, tmp_path / f"{name}.png", title=name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_dot_is_a_layered_lr_graph():
    text = cell_diagram.cell_dot(DARTS_V2.cells["normal"], 4, 2, "normal cell: 2 skip_connect")
    assert text.startswith("digraph cell {") and "rankdir=LR" in text
    assert "{ rank=same; s0 s1; }" in text and "s0 -> s1 [style=invis]" in text
    assert "s1 -> s2 -> s3 -> s4 -> s5 -> out [style=invis, weight=4]" in text  # a rank per node, in order
    assert 's0 [label=<c<sub>k-2</sub>>' in text and 's5 [label="5"' in text
    for op, src, dst in DARTS_V2.cells["normal"].edges:
        assert f's{src} -> s{dst} [label="{op}", color="{cell_diagram._color(op)}"' in text
    for s in DARTS_V2.cells["normal"].concat:
        assert f"s{s} -> out [style=dashed" in text
    nb = cell_diagram.cell_dot(NB201.cells["normal"], 3, 1)
    assert 's0 [label="in"' in nb and "none" not in nb and "rank=same" not in nb and 'out [label="out"' in nb
    assert list(cell_diagram.genotype_dot(per_position(8))) == [f"cell{i}" for i in range(8)]


def _fake_dot(folder: Path, fail: bool = False) -> Path:
    """A `dot` that records its input and writes a small PNG (or fails)."""
    script = folder / "dot"
    script.write_text(f"""#!{sys.executable}
import sys, pathlib
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
text = sys.stdin.read()
log = pathlib.Path({str(folder / "calls.txt")!r})
log.write_text(log.read_text() + text + "\\n===\\n" if log.exists() else text + "\\n===\\n")
if {fail!r}:
    sys.exit("dot: syntax error")
out = sys.argv[sys.argv.index("-o") + 1]
fig = plt.figure(figsize=(2, 1), dpi=50)
fig.savefig(out)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_plot_genotype_uses_dot_when_installed(tmp_path: Path, monkeypatch):
    dot = _fake_dot(tmp_path)
    monkeypatch.setattr(cell_diagram.shutil, "which", lambda name: str(dot) if name == "dot" else None)
    path = cell_diagram.plot_genotype(DARTS_V2, tmp_path / "cells.png", title="DARTS_V2")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    graphs = (tmp_path / "calls.txt").read_text().split("\n===\n")[:-1]
    assert [g.strip() for g in graphs] == [g.strip() for g in cell_diagram.genotype_dot(DARTS_V2).values()]


def test_plot_genotype_falls_back_to_matplotlib_when_dot_fails(tmp_path: Path, monkeypatch, caplog):
    dot = _fake_dot(tmp_path, fail=True)
    monkeypatch.setattr(cell_diagram.shutil, "which", lambda name: str(dot) if name == "dot" else None)
    path = cell_diagram.plot_genotype(NB201, tmp_path / "cells.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "drawing it with matplotlib" in caplog.text


@pytest.mark.skipif(not cell_diagram.shutil.which("dot"), reason="graphviz dot is not installed")
def test_real_dot_draws_every_genotype(tmp_path: Path):
    for name, genotype in GENOTYPES.items():
        path = tmp_path / f"{name}.png"
        assert cell_diagram._plot_with_dot(cell_diagram.shutil.which("dot"), genotype, path, name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ curves and the report
def test_curves_plot_accuracy_in_percent():
    rows = [{"epoch": e, "val_acc": 0.25 * (e + 1), "skip_normal": e} for e in range(3)]
    fig = curves.curves_figure([("group", [("seed 0", rows)])])
    try:
        skip_ax, acc_ax = fig.axes
        np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [25.0, 50.0, 75.0])
        np.testing.assert_allclose(acc_ax.lines[0].get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(skip_ax.lines[0].get_ydata(), [0, 1, 2])
        assert "(%)" in acc_ax.get_ylabel() and "%" not in skip_ax.get_ylabel()
    finally:
        close(fig)
    fig = curves.curves_figure([("g", [("s", rows)])], keys=(("val_acc", "accuracy"),))
    try:
        assert fig.axes[0].get_ylabel() == "accuracy (%)"
    finally:
        close(fig)


@pytest.mark.parametrize("hours, expected", [
    ([0.235], "14.1 min"), ([2.35], "2.35 h"), ([0.0141], "50.8 s"), ([14.1], "14.1 h"), ([0.5, 1.5], "0.50 h"),
])
def test_duration_unit(hours, expected):
    unit = rep.duration_unit(hours)
    assert rep.format_duration(hours[0], None, unit) == expected


def test_durations_share_a_unit_per_column():
    unit = rep.duration_unit([0.0141, 0.235])
    assert unit[0] == "min"
    assert rep.format_duration(0.0141, 0.0155, unit) == "0.8 ± 0.9 min"  # the decimals of the column's largest
    assert rep.format_duration(0.235, None, unit) == "14.1 min"
    assert rep.format_duration(None, None, unit) == "–"


def _run(folder: Path, result: dict, overrides: list[str] | None = None, job: str | None = None,
         cwd: Path | None = None) -> Path:
    folder.mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        hydra = {"hydra": {"job": {"name": job}, "runtime": {"cwd": str(cwd) if cwd else None}}}
        (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def _search(seed: int, acc: float, seconds: float) -> dict:
    return {"status": "completed", "command": "search", "seed": seed, "wall_seconds": seconds,
            "final": {"val_acc": acc, "skip_normal": 2}, "genotype": DARTS_V2.to_dict()}


def _retrain(search_run: str | None, acc: float = 0.9, seconds: float = 7200.0) -> dict:
    return {"status": "completed", "command": "retrain", "seed": 0, "search_run": search_run, "test_acc": acc,
            "test_error": 1 - acc, "params": 3_000_000, "wall_seconds": seconds, "genotype": DARTS_V2.to_dict()}


def test_report_table_shows_times_in_minutes_and_accuracy_in_percent(tmp_path: Path):
    for i, seconds in enumerate((840.0, 900.0)):
        _run(tmp_path / "s" / str(i), _search(i, 0.5 + 0.1 * i, seconds), ["dataset=digits", f"seed={i}"], "search")
    out = io.StringIO()
    rep.report([tmp_path / "s"], tmp_path / "out", stdout=out)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "search time" in md and "search h" not in md
    assert "| 55.00 ± 7.07 |" in md  # percent
    assert "| 14.5 ± 0.7 min |" in md and "14.5 ± 0.7 min" in out.getvalue()  # 870 ± 42.4 s
    rows = (tmp_path / "out" / "summary.csv").read_text()
    assert "search_hours_mean" in rows  # the CSV keeps numbers in hours


def test_quickstart_search_and_its_retraining_are_one_row(tmp_path: Path, monkeypatch):
    """README's quickstart: search into outputs/quickstart/search, retrain genotype=outputs/quickstart/search."""
    project = tmp_path / "project"
    quick = project / "outputs" / "quickstart"
    _run(quick / "search", _search(2, 0.6, 600.0), ["experiment=quickstart"], "search", project)
    _run(quick / "retrain", _retrain("outputs/quickstart/search"),
         ["experiment=quickstart", "genotype=outputs/quickstart/search"], "retrain", project)
    monkeypatch.chdir(tmp_path)  # the report runs elsewhere: the relative search_run is found all the same
    groups = rep.collect([quick])
    assert len(groups) == 1 and len(groups[0].runs) == 1
    run = groups[0].runs[0]
    assert run.kind == "retrain" and run.search_folder == (quick / "search").resolve()
    assert groups[0].stats("search_val_acc")[:2] == (1, pytest.approx(0.6))
    assert groups[0].stats("test_acc")[:2] == (1, pytest.approx(0.9))
    # naming both folders gives the same single row
    assert [len(g.runs) for g in rep.collect([quick / "search", quick / "retrain"])] == [1]


def test_two_retrainings_of_one_search_count_its_figures_once(tmp_path: Path):
    search = _run(tmp_path / "s", _search(0, 0.6, 600.0), ["estimator.eta=0.3", "seed=0"], "search")
    for seed in (0, 1):
        _run(tmp_path / "r" / str(seed), {**_retrain(str(search), 0.9 + seed / 100), "seed": seed},
             [f"genotype={search}", f"seed={seed}"], "retrain")
    groups = rep.collect([tmp_path])
    assert len(groups) == 1 and len(groups[0].runs) == 2
    assert groups[0].stats("search_val_acc") == (1, pytest.approx(0.6), None)
    assert groups[0].stats("test_acc")[0] == 2


def test_pipeline_job_without_hydra_or_result_is_one_run(tmp_path: Path):
    job = tmp_path / "job"
    _run(job / "search", _search(0, 0.6, 600.0))
    _run(job / "retrain", _retrain(str(job / "search")))
    groups = rep.collect([tmp_path])
    assert [(g.kind, len(g.runs)) for g in groups] == [("pipeline", 1)]
    assert [len(g.runs) for g in rep.collect([job, job / "search", job / "retrain"])] == [1]


def test_report_plots_for_a_quickstart(tmp_path: Path):
    quick = tmp_path / "quick"
    search = _run(quick / "search", _search(3, 0.6, 600.0), ["experiment=quickstart"], "search")
    (search / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_acc": 0.3 + 0.1 * e,
                                                              "skip_normal": 1}) + "\n" for e in range(3)))
    w = softmax_history(3, 14, 8)
    np.savez(search / "alphas.npz", normal=w, reduce=w, ops=np.array(DARTS_OPS))
    DARTS_V2.save(search / "genotype.json")
    _run(quick / "retrain", _retrain(str(search)), ["experiment=quickstart", f"genotype={search}"], "retrain")
    _, out = rep.report([quick], tmp_path / "out", plot=True, stdout=io.StringIO())
    plots = out / "plots"
    assert sorted(p.name for p in (plots / "alphas").iterdir()) == ["retrain.png"]
    assert sorted(p.name for p in (plots / "cells").iterdir()) == ["retrain.png"]
    assert (plots / "curves.png").is_file()
