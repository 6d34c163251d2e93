"""k-means convergence: Lloyd iterations run until the error stops improving, not just once."""

import torch

from audiopalm.tokenizers.kmeans import kmeans, nearest


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
