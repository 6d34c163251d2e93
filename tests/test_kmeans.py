"""k-means convergence: Lloyd iterations run until the error stops improving, not just once."""

import pytest
import torch

from audiopalm.tokenizers.kmeans import kmeans, kmeans_plus_plus, nearest


def _overlapping_blobs(seed: int = 0) -> torch.Tensor:
    """Eight Gaussian blobs whose spread is about their spacing, so one Lloyd step is far from a fixed point."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 4, generator=g) * 1.5  # [8, 4]
    return (centres.repeat_interleave(400, 0) + torch.randn(3200, 4, generator=g)).contiguous()  # [3200, 4]


def test_kmeans_iterates_to_a_fixed_point_on_overlapping_clusters():
    x = _overlapping_blobs()
    one = kmeans(x, 8, iters=1, seed=0)
    many = kmeans(x, 8, iters=200, seed=0)  # default tol: the old stop test ended here after one step
    assert many.inertia < one.inertia * 0.999, (one.inertia, many.inertia)
    # at convergence one more Lloyd step leaves the centres where they are
    assign, _ = nearest(x, many.centroids)
    counts = torch.bincount(assign, minlength=8).clamp_min(1).unsqueeze(1).float()
    means = torch.zeros_like(many.centroids).index_add_(0, assign, x) / counts
    shift = (means - many.centroids).norm(dim=1).max().item()
    assert shift < 1e-2, shift


def test_kmeans_tolerance_stops_early_but_not_after_one_step():
    x = _overlapping_blobs(1)
    loose = kmeans(x, 8, iters=200, seed=0, tol=1e-2)
    one = kmeans(x, 8, iters=1, seed=0)
    assert loose.inertia < one.inertia, (one.inertia, loose.inertia)


def test_seeding_on_a_sample_draws_centres_from_the_points_and_converges_as_well():
    x = _overlapping_blobs(2)
    g = torch.Generator().manual_seed(0)
    seeds = kmeans_plus_plus(x, 8, g, max_points=40)
    # every centre is one of the points, and the 8 are distinct
    assert (seeds[:, None, :] == x[None, :, :]).all(-1).any(1).all()
    assert len({tuple(r.tolist()) for r in seeds}) == 8
    sampled = kmeans(x, 8, iters=200, seed=0, seed_points_per_centre=5)
    full = kmeans(x, 8, iters=200, seed=0, seed_points_per_centre=None)
    assert sampled.inertia <= full.inertia * 1.02, (sampled.inertia, full.inertia)
    # a cap at or above the number of points seeds on all of them: the same fit as no cap
    assert torch.equal(
        kmeans(x, 8, iters=5, seed=0, seed_points_per_centre=400).centroids,
        kmeans(x, 8, iters=5, seed=0, seed_points_per_centre=None).centroids,
    )
    with pytest.raises(ValueError, match="seed_points_per_centre"):
        kmeans(x, 8, seed_points_per_centre=0)
