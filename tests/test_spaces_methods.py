"""Every method preset on the spaces of the seeds' evidence: a tiny search on digits, then a retraining of its
genotype; a combination that cannot make sense is refused before any work."""

from __future__ import annotations

import pytest

from nasrun.config.compose_errors import group_options
from nasrun.config.compose import compose, to_typed
from nasrun.errors import ConfigError
from nasrun.train.retrain import run_retrain
from nasrun.search.loop import run_search

PRESETS = group_options("method")
# no none, per-edge lists, the noise op, the residual skeleton, searched edges and independent cells
SPACES = ["s5", "rdarts_s1", "rdarts_s4", "nb201", "large"]
TINY = ["dataset=digits", "dataset.subset=16", "search.epochs=1", "search.batch_size=32", "supernet.C=4",
        "progress=false", "search.arch_warmup_epochs=0"]
PER_SPACE = {"nb201": ["supernet.layers=1"], "rdarts_s1": ["supernet.layers=3"],
             "large": ["supernet.layers=3", "space.nodes=2"], "s5": ["supernet.layers=3", "space.nodes=2"],
             "rdarts_s4": ["supernet.layers=3", "space.nodes=2"]}
PER_METHOD = {"zarts": ["estimator.update_every=2", "estimator.inner_steps=1", "estimator.samples=2"],
              "pcdarts": ["search.batch_size=32", "supernet.partial_channels=2"],
              "pdarts": ["schedule.stage_add_layers=[0,1,2]", "supernet.layers=3", "search.batch_size=32"],
              "sdarts_adv": ["perturbation.pgd_steps=2"],
              "darts_pt": ["selection.interval=1", "selection.eval_images=32"],
              "fairdarts": ["selection.threshold=0.5"],  # one epoch moves no gate to the released 0.85
              "drnas": ["supernet.C=12"]}  # its stages on the DARTS-like spaces see 1/6, then 1/4 of the channels
#: Combinations refused, and the key the refusal names.
REFUSED = {("pdarts", "rdarts_s1"): "schedule.stage_keep", ("pdarts", "rdarts_s4"): "schedule.stage_keep",
           ("pdarts", "nb201"): "schedule.max_skips", ("pdarts", "large"): "schedule='progressive'",
           ("drnas", "rdarts_s4"): "schedule='widening'"}  # its noise op has no widening rule


def _search_then_retrain(preset: str, space: str, tmp_path) -> None:
    overrides = [f"method={preset}", f"space={space}", *TINY, *PER_SPACE[space], *PER_METHOD.get(preset, [])]
    if (preset, space) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[(preset, space)].replace(".", r"\.")):
            to_typed(compose("search", overrides))
        return
    result = run_search(to_typed(compose("search", overrides)), tmp_path / "search")
    assert result["status"] == "completed" and result["genotype"]["space"] == space
    layers = 1 if space == "nb201" else 3
    retrain = to_typed(compose("retrain", [f"genotype={tmp_path / 'search'}", "recipe=quick", "recipe.epochs=1",
                                           "recipe.C=4", f"recipe.layers={layers}", "progress=false"]))
    done = run_retrain(retrain, tmp_path / "retrain")
    assert done["status"] == "completed" and 0.0 <= done["test_acc"] <= 1.0 and done["params"] > 0


#: The stable family's presets run on nb201 by default (and on the DARTS space in test_stable_family.py), on the
#: other spaces in the slow set (time).
STABLE_FAMILY = ("drnas", "gdas", "snas", "fairdarts", "beta_darts", "darts_minus", "darts_pt")
CASES = [pytest.param(preset, space, marks=pytest.mark.slow)
         if preset in STABLE_FAMILY and space != "nb201" else (preset, space)
         for preset in PRESETS for space in SPACES]


@pytest.mark.parametrize("preset,space", CASES)
def test_every_preset_searches_and_retrains_on(preset, space, tmp_path):
    _search_then_retrain(preset, space, tmp_path)


def test_pc_darts_edge_normalisation_and_partial_channels_work_on_nb201(tmp_path):
    cfg = to_typed(compose("search", ["method=pcdarts", "space=nb201", *TINY, "supernet.layers=1",
                                      "supernet.partial_channels=2"]))
    assert (cfg.supernet.edge_norm, cfg.supernet.partial_channels) == (True, 2)
    result = run_search(cfg, tmp_path / "search")
    import numpy as np

    alphas = np.load(tmp_path / "search" / "alphas.npz")
    assert alphas["normal"].shape == (1, 6, 5) and alphas["edges_normal"].shape == (1, 6)
    assert result["genotype"]["nb201"].count("~") == 6
