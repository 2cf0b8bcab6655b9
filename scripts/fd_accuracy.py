"""How accurate are the finite-difference products of DARTS second order and Amended-DARTS?

For each seed (a fresh supernet and its own batches) and each of --batches batch pairs, the implicit
(second) term of each estimator is computed both ways, at the point and on the batch the estimator
uses, and the relative error ||FD - exact|| / ||exact|| is reported per radius (mean, min, max, and
the mean cosine between the two):

- second order: B v' at the current weights w, v' = dL_val/dw at the unrolled weights
  w' = w - xi (g + wd w + mu buf) (xi = search.lr); FD = central difference with epsilon = r / ||v'||,
  exact = double backward (``estimator.hvp=exact``);
- amended: z = B (H v) at w, v = dL_val/dw; FD = the two chained central differences (each with
  epsilon = r / ||direction||), exact = double backward; the first product H v is reported too.

"exact" is double backward in the same dtype. A second table gives the cost of one whole estimate
(the estimator's call), finite difference vs exact, beside first order. Time: the fastest of
--repeats calls, the variants called in turn after a warm-up round (robust on a shared CPU). Memory:
the peak of the tensor storages created during one call, tracked op by op with a dispatch mode
(:class:`PeakTensorMemory`; on CUDA the growth of torch.cuda.max_memory_allocated): the
activations, autograd graphs, gradients and weight copies the estimate needs on top of the
network, its data and optimiser state.

Usage:

    python scripts/fd_accuracy.py                                      # quickstart size: digits 8x8, C=4, 5 cells
    python scripts/fd_accuracy.py --dtype float32 --radii 0.01,1e-4,1e-7
    python scripts/fd_accuracy.py --synthetic --C 8 --size 16 --channels 3 --batch 16 --seeds 1 --radii 0.01,1e-4
    python scripts/fd_accuracy.py --smooth --no-cost  # the same supernet without kinks: FD error ~ r^2
    python scripts/fd_accuracy.py --train-steps 20    # measure after some SGD steps instead of at initialisation

--smooth replaces every ReLU by softplus (beta 5) and every max-pool by an average pool: a twice
differentiable supernet. There the finite difference converges like r^2; in the real (ReLU, max-pool)
supernet it does not, because a perturbation of radius r flips ReLU and max-pool switches, whose
gradient jumps are divided by 2 epsilon.

--size and --channels apply to --synthetic (nasrun's synthetic dataset: class patterns plus noise,
10 classes); digits are 1x8x8. The supernet is the DARTS space (8 ops) with --nodes nodes per cell.
"""

from __future__ import annotations

import argparse
import statistics
import time

VARIANTS = [("first_order", None), ("second_order", "finite_difference"), ("second_order", "exact"),
            ("amended", "finite_difference"), ("amended", "exact")]


def make_smooth() -> None:
    """ReLU -> softplus(beta=5), max-pool -> average pool, for every module and functional call made after this."""
    import torch.nn.functional as F
    from torch import nn

    softplus = F.softplus
    F.relu = lambda x, inplace=False: softplus(x, beta=5.0)
    nn.MaxPool2d.forward = lambda self, x: F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                                                        count_include_pad=False)


def setup(args: argparse.Namespace, seed: int):
    """Config, supernet (in --dtype), weight optimiser and a function drawing batch pairs for ``seed``."""
    import torch
    import torch.nn.functional as F

    from nasrun.config.compose import compose, to_typed
    from nasrun.data import load_dataset, search_split
    from nasrun.data.augment import normalize, to_unit_float
    from nasrun.search.state import build_supernet

    if args.synthetic:
        data_over = ["dataset=synthetic", "dataset.num_classes=10", f"dataset.image_size={args.size}",
                     f"dataset.in_channels={args.channels}", f"dataset.num_train={max(512, 4 * args.batch)}"]
    else:
        data_over = ["dataset=digits"]
    cfg = to_typed(compose("search", [*data_over, f"supernet.C={args.C}", f"supernet.layers={args.layers}",
                                      f"space.nodes={args.nodes}", f"search.batch_size={args.batch}",
                                      f"seed={seed}"]))
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    data = load_dataset(cfg.dataset)
    train_idx, val_idx = search_split(len(data.train), cfg.dataset.search_split, seed)
    images = normalize(to_unit_float(data.train.images), data.mean, data.std).to(device=device, dtype=dtype)
    labels = data.train.labels.to(device)
    in_channels = images.shape[1]
    torch.manual_seed(seed)
    net = build_supernet(cfg, 10, in_channels, cfg.supernet.layers).to(device=device, dtype=dtype)
    net.train()
    s = cfg.search
    opt = torch.optim.SGD(net.weight_parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(1000 + seed)

    def draw():
        t = train_idx[torch.randperm(len(train_idx), generator=gen)[: args.batch]]
        v = val_idx[torch.randperm(len(val_idx), generator=gen)[: args.batch]]
        return images[t], labels[t], images[v], labels[v]

    for _ in range(args.train_steps):  # optional: move off the initialisation and fill the momentum buffer
        x, y, _, _ = draw()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return cfg, net, opt, draw


def _rel(a, b) -> float:
    import torch

    num = torch.sqrt(sum(((x - y).double() ** 2).sum() for x, y in zip(a, b)))
    den = torch.sqrt(sum((y.double() ** 2).sum() for y in b))
    return float(num / den)


def _cos(a, b) -> float:
    import torch

    dot = sum((x.double() * y.double()).sum() for x, y in zip(a, b))
    na = torch.sqrt(sum((x.double() ** 2).sum() for x in a))
    nb = torch.sqrt(sum((y.double() ** 2).sum() for y in b))
    return float(dot / (na * nb))


def errors(args: argparse.Namespace, radii: list[float]) -> tuple[dict, float]:
    """Per (term, radius): the list of (relative error, cosine) over seeds and batches; plus a replication check."""
    import torch

    from nasrun.methods import ArchBatch, ArchObjective, make_estimator
    from nasrun.methods.estimators import (_restore, amended_product, virtual_step, exact_mixed, finite_difference_hvp,
                                           finite_difference_mixed, preserved_buffers)
    from nasrun.config.options import SecondOrderConf

    loss = lambda m, x, y: ArchObjective()(m, x, y).total  # noqa: E731 - what the estimators differentiate
    out: dict = {}
    check = 0.0
    for seed in range(args.seeds):
        cfg, net, opt, draw = setup(args, seed)
        weights, alphas = net.weight_parameters(), net.arch_parameters()
        xi = cfg.search.lr
        for b in range(args.batches):
            xt, yt, xv, yv = draw()
            saved = [w.detach().clone() for w in weights]
            with preserved_buffers(net):
                # second order: the unrolled step exactly as SecondOrder takes it, then v' at w'
                g = torch.autograd.grad(loss(net, xt, yt), weights, allow_unused=True)
                virtual_step(opt, weights, saved, g, xi)
                grads = torch.autograd.grad(loss(net, xv, yv), alphas + weights, allow_unused=True)
                direct = grads[: len(alphas)]
                v1 = [gi if gi is not None else torch.zeros_like(w) for gi, w in zip(grads[len(alphas):], weights)]
                _restore(weights, saved)
                exact = exact_mixed(net, weights, v1, xt, yt, loss)
                if seed == 0 and b == 0:  # the reconstruction is what the estimator computes
                    est = make_estimator(SecondOrderConf(hvp="exact"))(net, ArchBatch(xt, yt, xv, yv, opt, xi))
                    check = _rel(est.grads, [d - xi * e for d, e in zip(direct, exact)])
                for r in radii:
                    fd = finite_difference_mixed(net, weights, saved, v1, xt, yt, r, loss)
                    _restore(weights, saved)
                    out.setdefault(("second order: B v'", r), []).append((_rel(fd, exact), _cos(fd, exact)))
                # amended: v at w, u = H v, z = B u
                v = [gi if gi is not None else torch.zeros_like(w) for gi, w in
                     zip(torch.autograd.grad(loss(net, xv, yv), weights, allow_unused=True), weights)]
                # exact, as amended_product(hvp="exact") computes it, keeping H v as well
                gw = torch.autograd.grad(loss(net, xt, yt), weights, create_graph=True)
                hv = [t.detach() for t in torch.autograd.grad(gw, weights, grad_outputs=v, retain_graph=True)]
                z = list(torch.autograd.grad(gw, alphas, grad_outputs=hv))
                del gw
                for r in radii:
                    hv_fd = finite_difference_hvp(net, weights, saved, v, xt, yt, r, loss)
                    _restore(weights, saved)
                    out.setdefault(("amended: H v (1st product)", r), []).append((_rel(hv_fd, hv), _cos(hv_fd, hv)))
                    z_fd = amended_product(net, v, xt, yt, "finite_difference", r, loss)
                    out.setdefault(("amended: B H v", r), []).append((_rel(z_fd, z), _cos(z_fd, z)))
            assert all(torch.equal(w, s) for w, s in zip(weights, saved))
    return out, check


def _estimator(method: str, hvp: str | None):
    from nasrun.methods import make_estimator
    from nasrun.config.options import AmendedConf, FirstOrderConf, SecondOrderConf

    conf = {"first_order": lambda: FirstOrderConf(), "second_order": lambda: SecondOrderConf(hvp=hvp),
            "amended": lambda: AmendedConf(hvp=hvp)}[method]()
    return make_estimator(conf)


def _timed(device, fn) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def timings(net, batch, repeats: int, device) -> dict:
    """Fastest of ``repeats`` whole estimates per variant, the variants called in turn (one warm-up round first)."""
    estimators = {v: _estimator(*v) for v in VARIANTS}
    times: dict = {v: [] for v in VARIANTS}
    for round_ in range(1 + repeats):
        for v, est in estimators.items():
            t = _timed(device, lambda: est(net, batch))
            if round_ > 0:
                times[v].append(t)
    return {v: min(t) for v, t in times.items()}


class PeakTensorMemory:
    """Peak bytes of the tensor storages created while it is active (a dispatch mode sees every op, backward too).

    Storages that existed before (weights, alphas, batches, optimiser state) and outputs aliasing an
    input (views, in-place ops) are not counted; a storage counts until it is freed. This is what
    torch.cuda.max_memory_allocated would grow by, without the allocator's rounding and caching, and it
    is deterministic on the CPU, where PyTorch keeps no allocator statistics.
    """

    def __init__(self) -> None:
        import torch
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self
        self.live: dict = {}  # storage id -> (weak reference, bytes)
        self.total = self.peak = 0

        def tensors(tree):
            return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tensors((args, kwargs))}
                out = func(*args, **(kwargs or {}))
                for t in tensors(out):
                    storage = t.untyped_storage()
                    ref = StorageWeakRef(storage)
                    if ref.cdata not in inputs and ref.cdata not in tracker.live:
                        tracker.live[ref.cdata] = (ref, storage.nbytes())
                        tracker.total += storage.nbytes()
                if tracker.total > tracker.peak:  # sweep out freed storages only when a new peak is possible
                    for key in [k for k, (r, _) in tracker.live.items() if r.expired()]:
                        tracker.total -= tracker.live.pop(key)[1]
                    tracker.peak = max(tracker.peak, tracker.total)
                return out

        self.mode = Mode()

    def __enter__(self) -> "PeakTensorMemory":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


def memories(net, batch, device) -> dict:
    """Peak growth of memory over one whole estimate per variant."""
    import torch

    out = {}
    for v in VARIANTS:
        est = _estimator(*v)
        if device.type == "cuda":
            est(net, batch)  # warm-up (cuDNN workspaces, handles)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            est(net, batch)
            torch.cuda.synchronize()
            out[v] = torch.cuda.max_memory_allocated() - base
        else:
            with PeakTensorMemory() as mem:
                est(net, batch)
            out[v] = mem.peak
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=4, help="supernet width (quickstart 4, papers 16)")
    p.add_argument("--layers", type=int, default=5, help="cells (quickstart 5, papers 8)")
    p.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell")
    p.add_argument("--size", type=int, default=8, help="image height and width (--synthetic only)")
    p.add_argument("--channels", type=int, default=3, help="image channels (--synthetic only)")
    p.add_argument("--batch", type=int, default=64, help="batch of each split (quickstart 64)")
    p.add_argument("--synthetic", action="store_true", help="nasrun's synthetic images instead of digits")
    p.add_argument("--radius", type=float, default=0.01, help="finite-difference radius r (epsilon = r / ||v||)")
    p.add_argument("--radii", default=None, help="comma-separated radii, e.g. 0.01,1e-4,1e-7 (overrides --radius)")
    p.add_argument("--batches", type=int, default=2, help="batch pairs per seed")
    p.add_argument("--seeds", type=int, default=2, help="seeds (a fresh supernet and batches each)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--train-steps", type=int, default=0, help="SGD steps on the weights before measuring")
    p.add_argument("--repeats", type=int, default=3, help="timed estimates per variant (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default; 1, the default, is far faster on a busy machine)")
    p.add_argument("--smooth", action="store_true", help="softplus for ReLU, average for max-pool (diagnostic)")
    p.add_argument("--no-cost", action="store_true", help="skip the time and memory table")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy table")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smooth:
        make_smooth()
    radii = [float(r) for r in args.radii.split(",")] if args.radii else [args.radius]

    data = (f"synthetic {args.channels}x{args.size}x{args.size}" if args.synthetic else "digits 1x8x8")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"cpu, {args.threads or torch.get_num_threads()} threads")
    ops = "DARTS ops (8; ReLU -> softplus, max -> avg pool)" if args.smooth else "DARTS ops (8)"
    print(f"C={args.C}, {args.layers} cells, {args.nodes} nodes, {ops}, {data}, batch {args.batch} per split, "
          f"{args.dtype}, {args.seeds} seed(s) x {args.batches} batch(es), {args.train_steps} SGD steps before; "
          f"{where}; torch {torch.__version__}\n")
    if not args.no_accuracy:
        accuracy(args, radii)
    if not args.no_cost:
        cost(args)


def accuracy(args: argparse.Namespace, radii: list[float]) -> None:
    t0 = time.perf_counter()
    table, check = errors(args, radii)
    n = args.seeds * args.batches
    print(f"relative error ||FD - exact|| / ||exact|| of the implicit term (n = {n}; cos = mean cosine FD vs exact)\n")
    print("| term | radius | mean | min | max | cos |")
    print("|---|---|---|---|---|---|")
    for (term, r), rows in table.items():
        errs = [e for e, _ in rows]
        cos = statistics.mean(c for _, c in rows)
        print(f"| {term} | {r:g} | {statistics.mean(errs):.2e} | {min(errs):.2e} | {max(errs):.2e} | {cos:.4f} |")
    print(f"\n(check: the reconstructed second-order estimate differs from SecondOrder(hvp=exact) by rel {check:.1e}; "
          f"{time.perf_counter() - t0:.0f} s)")


def cost(args: argparse.Namespace) -> None:
    label = "peak CUDA alloc growth" if args.device.startswith("cuda") else "peak tensor memory"
    print(f"\none whole estimate (FD radius 0.01): time = fastest of {args.repeats}, the variants called in turn "
          f"after a warm-up round; memory = peak of the tensors created during one call (same network and batches)\n")
    print(f"| estimator | hvp | time ms | x first order | {label} MiB | x first order |")
    print("|---|---|---|---|---|---|")
    import torch

    from nasrun.methods import ArchBatch

    device = torch.device(args.device)
    cfg, net, opt, draw = setup(args, 0)
    batch = ArchBatch(*draw(), opt, cfg.search.lr)
    times, memory = timings(net, batch, args.repeats, device), memories(net, batch, device)
    t0, m0 = times[VARIANTS[0]], memory[VARIANTS[0]]
    for v in VARIANTS:
        t, m = times[v], memory[v]
        print(f"| {v[0]} | {v[1] or '-'} | {t * 1000:.1f} | {t / t0:.1f} | {m / 2**20:.1f} | {m / m0:.1f} |")


if __name__ == "__main__":
    main()
