"""Codebook patterns: parallel codes ``[K, F]`` <-> one 1-D token stream, each with an exact inverse.

An audio tokenizer gives K parallel codebooks per frame; a decoder-only LM reads one stream. A pattern
says where code ``codes[q, f]`` goes in that stream. Stream entries are *audio-local ids*
``q * codebook_size + code`` in ``[0, K * codebook_size)``, so the same code value in two codebooks is
two different tokens; the delay pattern also has :data:`PAD` filler slots. The vocabulary
(:mod:`audiopalm.data.vocab`) adds its ``audio_offset`` and maps :data:`PAD` to a special token.

``flatten`` (AudioPaLM / AnyGPT): frame-major, first K codebooks of each frame in turn. K=2, F=3::

    codes  q0: a0 a1 a2          stream: a0 b0 | a1 b1 | a2 b2        length F * K
           q1: b0 b1 b2

``delay`` (MusicGen): codebook q is delayed by q steps, then each step is flattened; empty slots are
filled with :data:`PAD` (``_``). K=2, F=3 (steps s0..s3)::

    step:    s0    s1    s2    s3
    q0:      a0    a1    a2    _         stream: a0 _ | a1 b0 | a2 b1 | _ b2     length (F + K - 1) * K
    q1:      _     b0    b1    b2

Patterns are picked by name from the plain dict :data:`PATTERNS` via :func:`get_pattern`.
"""

from __future__ import annotations

import torch

PAD = -1
"""Audio-local id of an empty slot in the delay pattern (the vocabulary maps it to ``<|audio_pad|>``)."""


class PatternError(ValueError):
    """A stream that no codes could have produced (wrong length, codebook or filler in the wrong place)."""


def _as_codes(codes, num_codebooks: int, codebook_size: int) -> torch.Tensor:
    """Validate and return the first ``num_codebooks`` rows of ``codes`` as a long tensor.  # [k, F]"""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2:
        raise PatternError(f"codes must be [K, F], got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise PatternError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.shape[0] < num_codebooks:
        raise PatternError(f"codes have {codes.shape[0]} codebooks, the pattern uses {num_codebooks}")
    codes = codes[:num_codebooks].long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise PatternError(f"codes must be in [0, {codebook_size}), got min {int(codes.min())} max {int(codes.max())}")
    return codes


def _as_stream(stream) -> torch.Tensor:
    """A 1-D long tensor.  # [L]"""
    stream = torch.as_tensor(stream, dtype=torch.long) if not isinstance(stream, torch.Tensor) else stream.long()
    if stream.dim() != 1:
        raise PatternError(f"a stream must be 1-D, got shape {tuple(stream.shape)}")
    return stream


def _check_slots(grid: torch.Tensor, filler: torch.Tensor, codebook_size: int) -> None:
    """Check a [S, k] grid of a stream: PAD exactly where ``filler``, codebook q's ids elsewhere."""
    k = grid.shape[1]
    q = torch.arange(k).expand_as(grid)
    bad_fill = filler & (grid != PAD)
    lo, hi = q * codebook_size, (q + 1) * codebook_size
    bad_code = ~filler & ((grid < lo) | (grid >= hi))
    bad = bad_fill | bad_code
    if bad.any():
        s, qq = (int(x) for x in bad.nonzero()[0])
        pos = s * k + qq
        want = (
            "the filler PAD"
            if filler[s, qq]
            else f"an id of codebook {qq} in [{qq * codebook_size}, {(qq + 1) * codebook_size})"
        )
        raise PatternError(f"stream position {pos} holds {int(grid[s, qq])}, expected {want}")


class FlattenPattern:
    """Frame-major: ``f0q0 f0q1 .. f0q(k-1) f1q0 ..`` using the first ``num_codebooks`` codebooks."""

    name = "flatten"

    def __init__(self, num_codebooks: int):
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks

    def length(self, num_frames: int) -> int:
        """Stream length L for F frames."""
        return num_frames * self.num_codebooks

    def num_frames(self, length: int) -> int:
        """F for a complete stream of length L (inverse of :meth:`length`); a PatternError if none."""
        if length < 0 or length % self.num_codebooks:
            raise PatternError(f"stream length {length} is not a multiple of {self.num_codebooks} codebooks")
        return length // self.num_codebooks

    def expected_codebook(self, position: int, num_frames: int | None = None) -> int | None:
        """Codebook whose code sits at stream ``position`` (never a filler in this pattern)."""
        return position % self.num_codebooks

    def build(self, codes, codebook_size: int) -> torch.Tensor:
        """``codes`` [K>=k, F] -> stream [F * k] of audio-local ids."""
        codes = _as_codes(codes, self.num_codebooks, codebook_size)  # [k, F]
        offsets = torch.arange(self.num_codebooks).unsqueeze(1) * codebook_size  # [k, 1]
        return (codes + offsets).t().reshape(-1)  # [F * k]

    def revert(self, stream, codebook_size: int) -> torch.Tensor:
        """Stream [L] -> codes [k, L / k]; a PatternError for a malformed stream."""
        stream = _as_stream(stream)  # [L]
        frames = self.num_frames(len(stream))
        grid = stream.view(frames, self.num_codebooks)  # [F, k]
        _check_slots(grid, torch.zeros_like(grid, dtype=torch.bool), codebook_size)
        offsets = torch.arange(self.num_codebooks) * codebook_size  # [k]
        return (grid - offsets).t().contiguous()  # [k, F]


class DelayPattern:
    """MusicGen delay: codebook q shifted right by q steps, flattened step-major, PAD in empty slots."""

    name = "delay"

    def __init__(self, num_codebooks: int):
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks

    def length(self, num_frames: int) -> int:
        """Stream length L for F frames: (F + k - 1) steps of k slots (0 for no frames)."""
        return (num_frames + self.num_codebooks - 1) * self.num_codebooks if num_frames > 0 else 0

    def num_frames(self, length: int) -> int:
        """F for a complete stream of length L (inverse of :meth:`length`); a PatternError if none."""
        k = self.num_codebooks
        if length == 0:
            return 0
        if length < 0 or length % k or length // k < k:
            raise PatternError(f"stream length {length} is not (F + {k} - 1) * {k} for any F >= 1")
        return length // k - k + 1

    def _filler(self, steps: int, num_frames: int) -> torch.Tensor:
        """[S, k] True where a slot is empty: step s, codebook q holds frame s - q if in [0, F)."""
        s = torch.arange(steps).unsqueeze(1)  # [S, 1]
        frame = s - torch.arange(self.num_codebooks)  # [S, k]
        return (frame < 0) | (frame >= num_frames)

    def expected_codebook(self, position: int, num_frames: int | None = None) -> int | None:
        """Codebook at stream ``position``, or None for a filler slot.

        Without ``num_frames`` (while generating, the length is unknown) only the leading fillers
        (step < q) are known to be fillers; with it, the trailing ones are too."""
        k = self.num_codebooks
        step, q = divmod(position, k)
        frame = step - q
        if frame < 0 or (num_frames is not None and frame >= num_frames):
            return None
        return q

    def build(self, codes, codebook_size: int) -> torch.Tensor:
        """``codes`` [K>=k, F] -> stream [(F + k - 1) * k] of audio-local ids and PAD."""
        codes = _as_codes(codes, self.num_codebooks, codebook_size)  # [k, F]
        k, frames = codes.shape
        if frames == 0:
            return torch.zeros(0, dtype=torch.long)
        grid = torch.full((frames + k - 1, k), PAD, dtype=torch.long)  # [S, k]
        for q in range(k):
            grid[q : q + frames, q] = codes[q] + q * codebook_size
        return grid.reshape(-1)  # [S * k]

    def revert(self, stream, codebook_size: int) -> torch.Tensor:
        """Stream [L] -> codes [k, F]; a PatternError for a malformed stream."""
        stream = _as_stream(stream)  # [L]
        k = self.num_codebooks
        frames = self.num_frames(len(stream))
        if frames == 0:
            return torch.zeros(k, 0, dtype=torch.long)
        grid = stream.view(frames + k - 1, k)  # [S, k]
        _check_slots(grid, self._filler(frames + k - 1, frames), codebook_size)
        return torch.stack([grid[q : q + frames, q] - q * codebook_size for q in range(k)])  # [k, F]


# name -> class. A plain dict registry; the name is stored in audiopalm.json of every checkpoint.
PATTERNS: dict[str, type] = {"flatten": FlattenPattern, "delay": DelayPattern}


def get_pattern(name: str, num_codebooks: int) -> FlattenPattern | DelayPattern:
    """The pattern ``name`` (a key of :data:`PATTERNS`) over the first ``num_codebooks`` codebooks."""
    if name not in PATTERNS:
        raise KeyError(f"unknown codebook pattern {name!r}; known: {', '.join(PATTERNS)}")
    return PATTERNS[name](num_codebooks)
