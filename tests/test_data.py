"""audiopalm.data.batching: packing keeps examples apart, the mixture is deterministic and resumes exactly."""

import itertools

import pytest
import torch
import transformers

from audiopalm.data.batching import (
    IGNORE_INDEX,
    MixtureSource,
    PackedBatches,
    PackedCollator,
    PaddingCollator,
    TaskMixture,
    count_target_tokens,
)


def _example(ids, prompt_len):
    ids = list(ids)
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt_len + ids[prompt_len:]}


def _tiny(kind: str) -> transformers.PreTrainedModel:
    cfg: transformers.PretrainedConfig
    if kind in ("llama", "qwen2"):
        config_class = transformers.LlamaConfig if kind == "llama" else transformers.Qwen2Config
        cfg = config_class(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    else:
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=97, n_positions=64)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_packed_forward_equals_separate_forwards(kind):
    """Attention must not cross packed examples: each segment's logits equal its own forward pass."""
    model = _tiny(kind)
    g = torch.Generator().manual_seed(1)
    lens = [5, 9, 3]
    exs = [_example(torch.randint(1, 97, (n,), generator=g).tolist(), 2) for n in lens]
    batch = PackedCollator(max_len=20, pad_id=0)([exs])
    assert batch["position_ids"][0].tolist() == [*range(5), *range(9), 0, 1, 2, 0, 1, 2]
    with torch.no_grad():
        # with a KV cache transformers does not look for packing (masking_utils): use_cache=False is required
        with_cache = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        at = 0
        for ex in exs:
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            n = len(ex["input_ids"])
            torch.testing.assert_close(packed[at : at + n], alone, atol=1e-5, rtol=1e-4)
            at += n
    assert not torch.allclose(with_cache[5:14], packed[5:14], atol=1e-4)  # the check above can fail


def test_padding_collator():
    exs = [_example([5, 6, 7, 8], 2), _example([9, 10], 1)]
    b = PaddingCollator(pad_id=0, pad_to_multiple_of=8)(exs)
    assert b["input_ids"].shape == (2, 8)
    assert b["attention_mask"].tolist() == [[1] * 4 + [0] * 4, [1] * 2 + [0] * 6]
    assert b["labels"][0].tolist() == [-100, -100, 7, 8] + [-100] * 4
    assert int(b["num_target_tokens"]) == 3  # 7, 8 and 10: the first column is never predicted


def test_count_target_tokens_skips_first_column():
    labels = torch.tensor([[3, -100, 4], [-100, 5, 6]])
    assert int(count_target_tokens(labels)) == 3


def _sources(render_skip_every=0):
    def render_for(tag):
        def render(row):
            if render_skip_every and row["i"] % render_skip_every == 0:
                return None
            n = 2 + row["i"] % 5
            return _example([tag] * n, 1)

        return render

    rows_a = [{"i": i} for i in range(30)]
    rows_b = [{"i": i} for i in range(10)]
    return [
        MixtureSource("A", rows_a, render_for(1), weight=3.0),
        MixtureSource("B", rows_b, render_for(2), weight=1.0),
    ]


def test_mixture_is_deterministic_and_weighted():
    def take(seed):
        return [ex["source"] for ex in itertools.islice(TaskMixture(_sources(), seed=seed), 400)]

    a, b = take(0), take(0)
    assert a == b
    assert a != take(1)
    frac_a = a.count("A") / len(a)
    assert 0.68 < frac_a < 0.82, frac_a  # weight 3:1


def test_mixture_counts_skips():
    mix = TaskMixture(_sources(render_skip_every=4), seed=0)
    list(itertools.islice(iter(mix), 30))
    assert sum(mix.skipped.values()) > 0
    assert set(mix.skipped) == {"A", "B"}


def test_mixture_example_at_renders_the_stream_again():
    mix = TaskMixture(_sources(render_skip_every=4), seed=0, examples_per_epoch=25)
    stream = list(itertools.islice(iter(mix), 60))  # across epochs 0, 1 and 2
    state = mix.state_dict()
    assert [mix.example_at(ex["address"]) for ex in reversed(stream)] == stream[::-1]
    assert mix.state_dict() == state  # position and skip counts untouched
    skipped = next(p for p in range(25) if (0, p) not in {ex["address"] for ex in stream})
    with pytest.raises(ValueError, match="renders to nothing"):
        mix.example_at((0, skipped))


def test_packed_batches_resume_exactly():
    def fresh():
        return PackedBatches(TaskMixture(_sources(render_skip_every=7), seed=3), max_len=16, rows_per_batch=2, pad_id=0)

    whole = fresh()
    full = list(itertools.islice(iter(whole), 12))
    first = fresh()
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = first.state_dict()
    resumed = fresh()
    resumed.load_state_dict(state)
    tail = list(itertools.islice(iter(resumed), 7))
    for x, y in zip(head + tail, full, strict=True):
        for k in ("input_ids", "labels", "position_ids"):
            assert torch.equal(x[k], y[k]), k
    assert resumed.mixture.skipped == whole.mixture.skipped and sum(whole.mixture.skipped.values()) > 0
    # next-fit packing of 3..7-token examples into 16-token rows leaves little padding
    nonpad = sum(int((b["input_ids"] != 0).sum()) for b in full) / sum(b["input_ids"].numel() for b in full)
    assert nonpad > 0.75, nonpad


def test_packed_batches_refuse_too_long():
    src = [MixtureSource("long", [{"i": 0}], lambda row: _example([1] * 40, 1))]
    with pytest.raises(ValueError, match="longer than max_len=16"):
        next(iter(PackedBatches(TaskMixture(src), max_len=16, rows_per_batch=1, pad_id=0)))


def test_mixture_validates_sources():
    with pytest.raises(ValueError, match="weight must be > 0"):
        MixtureSource("x", [{}], lambda r: None, weight=0)
    with pytest.raises(ValueError, match="no rows"):
        MixtureSource("x", [], lambda r: None)
