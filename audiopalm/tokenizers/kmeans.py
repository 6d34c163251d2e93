"""Vectorised k-means in torch: k-means++ seeding, Lloyd iterations, dead-code re-seeding.

Used to fit the codebooks of the built-in ``mel_rvq`` codec (one k-means per residual stage) and
usable for any other "k-means units" tokenizer. Everything takes a ``torch.Generator`` or a seed,
so a fit is a pure function of (data, k, seed).

- Seeding is k-means++ (Arthur & Vassilvitskii, 2007): each new centre is drawn with probability
  proportional to the squared distance to the nearest centre chosen so far. Its ``k`` sequential passes run over
  a random sample of at most ``SEED_POINTS_PER_CENTRE * k`` points (all of them when there are fewer): the Lloyd
  iterations that follow use every point, and seeding on all 182k states of the default demo's units took 41 s
  for ``k = 2048``.
- Lloyd iterations assign every point to its nearest centre (batched ``||x||^2 - 2 x.c + ||c||^2``,
  chunked over points so memory stays ``chunk x k``) and move each centre to its points' mean.
- A centre that gets no point ("dead code") is moved onto the point that is worst served right now
  (largest squared error), as SoundStream does with codes whose usage falls to zero; distinct dead
  codes take distinct points.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm import tqdm

# Points per distance block: 16384 x 1024 float32 distances = 64 MiB, small enough for any machine.
ASSIGN_CHUNK = 16384
# k-means++ seeds on at most this many points per centre (``eval/bench_kmeans.py`` measures what it costs)
SEED_POINTS_PER_CENTRE = 16


@dataclasses.dataclass
class KMeansResult:
    """What :func:`kmeans` returns."""

    centroids: torch.Tensor
    """[k, D] float: the cluster centres."""
    assignments: torch.Tensor
    """[N] long: nearest centre of each training point (after the last update)."""
    inertia: float
    """Mean squared distance of the points to their nearest centre."""
    reseeded: int
    """How many dead codes were re-seeded over the whole fit."""


def nearest(
    x: torch.Tensor, centroids: torch.Tensor, *, chunk: int = ASSIGN_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of each point. ``x`` [N, D], ``centroids`` [k, D] -> (index [N] long, sq. distance [N])."""
    assert x.dim() == 2 and centroids.dim() == 2 and x.shape[1] == centroids.shape[1], (
        f"x {tuple(x.shape)} and centroids {tuple(centroids.shape)} must be [N, D] and [k, D]"
    )
    c_sq = (centroids * centroids).sum(-1)  # [k]
    index, dist = [], []
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]  # [n, D]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin, add it after
        d = torch.addmm(c_sq.unsqueeze(0), xb, centroids.t(), alpha=-2.0)  # [n, k]
        best, idx = d.min(dim=1)  # [n], [n]
        index.append(idx)
        dist.append((best + (xb * xb).sum(-1)).clamp_min(0.0))
    return torch.cat(index), torch.cat(dist)  # [N], [N]


def kmeans_plus_plus(
    x: torch.Tensor, k: int, generator: torch.Generator, *, max_points: int | None = None
) -> torch.Tensor:
    """k-means++ seeding: ``k`` rows of ``x`` [N, D] -> centres [k, D]; over a random sample of ``max_points``
    rows of ``x`` when it has more (None: every row)."""
    if max_points is not None:
        cap = max(max_points, k)
        if x.shape[0] > cap:
            x = x[torch.randperm(x.shape[0], generator=generator)[:cap]]
    n = x.shape[0]
    x_sq = (x * x).sum(-1)  # [N]
    picks = [int(torch.randint(n, (1,), generator=generator).item())]
    # squared distance to the nearest chosen centre, as ||x||^2 - 2 x.c + ||c||^2 (a mat-vec, no [N, D] temp)
    closest = (x_sq - 2.0 * (x @ x[picks[0]]) + x_sq[picks[0]]).clamp_min(0.0)  # [N]
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # every point already sits on a centre (fewer distinct points than k)
            pick = int(torch.randint(n, (1,), generator=generator).item())
        else:
            pick = int(torch.multinomial(closest / total, 1, generator=generator).item())
        picks.append(pick)
        closest = torch.minimum(closest, (x_sq - 2.0 * (x @ x[pick]) + x_sq[pick]).clamp_min(0.0))
    return x[picks].clone()  # [k, D]


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    tol: float = 1e-5,
    seed_points_per_centre: int | None = SEED_POINTS_PER_CENTRE,
    progress: bool = False,
    desc: str = "k-means",
) -> KMeansResult:
    """Fit ``k`` centres to the points ``x`` [N, D] (float). Deterministic for a seed.

    k-means++ seeds on a random sample of ``seed_points_per_centre * k`` points (None: on all of them), then
    Lloyd iterations over every point run until ``iters`` or until the mean squared error improves by less than
    ``tol`` (relative); dead codes are re-seeded at every iteration but the last.
    """
    if x.dim() != 2:
        raise ValueError(f"k-means needs points [N, D], got shape {tuple(x.shape)}")
    n = x.shape[0]
    if k < 1 or n < k:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} with {n} points")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if seed_points_per_centre is not None and seed_points_per_centre < 1:
        raise ValueError(f"seed_points_per_centre must be >= 1 or None, got {seed_points_per_centre}")
    x = x.float().contiguous()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    cap = None if seed_points_per_centre is None else seed_points_per_centre * k
    centroids = kmeans_plus_plus(x, k, generator, max_points=cap).to(x.device)  # [k, D]
    reseeded = 0
    previous = float("inf")
    bar = tqdm(range(iters), desc=desc, disable=not progress, leave=False)
    for it in bar:
        assign, err = nearest(x, centroids)  # [N], [N]
        counts = torch.bincount(assign, minlength=k)  # [k]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # [k, D]
        alive = counts > 0
        centroids = torch.where(alive.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), centroids)
        dead = (~alive).nonzero().flatten()  # [n_dead]
        if len(dead) and it < iters - 1:
            # re-seed on the worst-served points, one distinct point per dead code
            worst = err.topk(len(dead)).indices  # [n_dead]
            centroids[dead] = x[worst]
            reseeded += len(dead)
        inertia = float(err.mean())
        bar.set_postfix(mse=f"{inertia:.4g}", dead=len(dead))
        # ``previous`` is inf before the first step, and inf - x <= tol * inf would stop after one step
        if len(dead) == 0 and previous != float("inf") and previous - inertia <= tol * max(previous, 1e-12):
            break
        previous = inertia
    assign, err = nearest(x, centroids)
    return KMeansResult(centroids=centroids, assignments=assign, inertia=float(err.mean()), reseeded=reseeded)
