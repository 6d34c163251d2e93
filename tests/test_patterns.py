"""Codebook patterns: exact round trips over random shapes, documented layouts, malformed streams rejected."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiopalm.data.patterns import PAD, PATTERNS, PatternError, get_pattern


@st.composite
def codes_and_pattern(draw):
    name = draw(st.sampled_from(sorted(PATTERNS)))
    total_k = draw(st.integers(1, 6))
    k = draw(st.integers(1, total_k))
    frames = draw(st.integers(0, 12))
    size = draw(st.integers(1, 50))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, size, (total_k, frames), generator=g)
    return name, k, codes, size


@settings(max_examples=150, deadline=None)
@given(codes_and_pattern())
def test_round_trip_and_length(case):
    name, k, codes, size = case
    p = get_pattern(name, k)
    stream = p.build(codes, size)
    assert stream.dim() == 1 and len(stream) == p.length(codes.shape[1])
    assert p.num_frames(len(stream)) == codes.shape[1]
    # every non-filler entry is an audio-local id of the codebook expected_codebook names
    for i, v in enumerate(stream.tolist()):
        q = p.expected_codebook(i, codes.shape[1])
        if q is None:
            assert v == PAD, (name, i, v)
        else:
            assert q * size <= v < (q + 1) * size, (name, i, v, q)
    back = p.revert(stream, size)
    assert torch.equal(back, codes[:k]), (name, k, codes, back)


def test_flatten_layout():
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])  # q0: 1 2 3, q1: 4 5 6
    p = get_pattern("flatten", 2)
    assert p.build(codes, 10).tolist() == [1, 14, 2, 15, 3, 16]
    # first-k: only the first codebook of a 2-codebook input
    assert get_pattern("flatten", 1).build(codes, 10).tolist() == [1, 2, 3]


def test_delay_layout():
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    p = get_pattern("delay", 2)
    assert p.build(codes, 10).tolist() == [1, PAD, 2, 14, 3, 15, PAD, 16]
    assert [p.expected_codebook(i) for i in range(4)] == [0, None, 0, 1]  # leading filler known without F
    assert p.expected_codebook(6) == 0 and p.expected_codebook(6, num_frames=3) is None


def test_delay_with_one_codebook_equals_flatten():
    codes = torch.randint(0, 7, (1, 9))
    assert torch.equal(get_pattern("delay", 1).build(codes, 7), get_pattern("flatten", 1).build(codes, 7))


@pytest.mark.parametrize(
    "name, stream, message",
    [
        ("flatten", [1, 14, 2], "not a multiple"),
        ("flatten", [1, 4, 2, 15], "position 1 holds 4, expected an id of codebook 1"),
        ("flatten", [1, 14, PAD, 15], "position 2 holds -1"),
        ("flatten", [1, 14, 20, 15], "position 2 holds 20, expected an id of codebook 0"),
        ("delay", [1, PAD, 2], "not (F + 2 - 1) * 2"),
        ("delay", [1, PAD], "not (F + 2 - 1) * 2"),
        ("delay", [1, 14, 2, 15], "position 1 holds 14, expected the filler"),
        ("delay", [1, PAD, 2, 14, PAD, 15, PAD, 16], "position 4 holds -1, expected an id of codebook 0"),
        ("delay", [1, PAD, 2, 14, 3, 15, 4, 16], "position 6 holds 4, expected the filler"),
    ],
)
def test_malformed_streams_rejected(name, stream, message):
    with pytest.raises(PatternError) as e:
        get_pattern(name, 2).revert(stream, 10)
    assert message in str(e.value)


def test_bad_codes_and_names():
    p = get_pattern("flatten", 2)
    with pytest.raises(PatternError, match=r"codes must be in \[0, 10\), got min 0 max 10"):
        p.build([[0, 10], [1, 2]], 10)
    with pytest.raises(PatternError, match="codes have 1 codebooks, the pattern uses 2"):
        p.build([[0, 1]], 10)
    with pytest.raises(PatternError, match=r"must be \[K, F\]"):
        p.build([0, 1], 10)
    with pytest.raises(KeyError, match="unknown codebook pattern 'zigzag'"):
        get_pattern("zigzag", 2)
