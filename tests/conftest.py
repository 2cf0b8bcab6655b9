"""Shared fixtures: a tiny float64 supernet and a small batch, and fast-run overrides for the CLI."""

from __future__ import annotations

import pytest
import torch

from nasrun.supernet import SuperNet

# The test networks are tiny: one thread is faster than two (no per-op thread hand-off) and immune to a
# busy second core.
torch.set_num_threads(1)

TINY_OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]

# Overrides that make a CLI search/retrain on digits take a few seconds.
TINY_SEARCH = [
    "dataset=digits",
    "search.epochs=2",
    "search.batch_size=32",
    "supernet.C=2",
    "supernet.layers=3",
    "space.nodes=2",
    "space.ops=[none,max_pool_3x3,skip_connect,sep_conv_3x3]",
    "progress=false",
]
# The same tiny supernet on a few synthetic images: three steps per epoch, for loop-level tests.
TINY_SYNTH = [
    *(o for o in TINY_SEARCH if not o.startswith(("dataset=", "search.batch_size="))),
    "dataset=synthetic",
    "dataset.num_train=96",
    "dataset.num_test=32",
    "search.batch_size=16",
]
TINY_RETRAIN = ["recipe=quick", "recipe.epochs=1", "recipe.C=4", "recipe.layers=3", "progress=false"]


@pytest.fixture
def tiny_net() -> SuperNet:
    torch.manual_seed(0)
    net = SuperNet(C=2, num_classes=3, layers=3, ops=TINY_OPS, nodes=2, in_channels=1).double()
    with torch.no_grad():  # alphas away from uniform so every term of the gradient is visible
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a) * 0.5)
    return net


@pytest.fixture
def tiny_batches():
    g = torch.Generator().manual_seed(1)
    xt = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (6,), generator=g)
    xv = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 3, (6,), generator=g)
    return xt, yt, xv, yv
