"""audiopalm.data.batching: packing keeps examples apart and fills rows, the mixture and the batches resume exactly."""

import itertools
import json
from collections import Counter
from typing import Any

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


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_layer_logits_read_a_layer_as_the_model_cut_there_would(kind):
    """``layer_logits`` on decoder layer 1's output = the logits of the same model cut to 1 layer (its final norm and
    output layer kept), bare and inside peft; a model with no known final norm is refused by name."""
    import peft

    from audiopalm.training.core import layer_logits

    model = _tiny(kind)
    cut: Any = _tiny(kind)
    if kind == "gpt2":
        cut.transformer.h = cut.transformer.h[:1]
        cut.config.n_layer = 1
    else:
        cut.model.layers = cut.model.layers[:1]
        cut.config.num_hidden_layers = 1
    cut.load_state_dict(model.state_dict(), strict=False)
    ids = torch.randint(1, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
        want = cut(input_ids=ids).logits
        torch.testing.assert_close(layer_logits(model, hidden), want, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(input_ids=ids).logits, want, atol=1e-3)  # the check above can fail
        target = ["q_proj"] if kind == "llama" else ["c_attn"]
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=target))
        torch.testing.assert_close(layer_logits(wrapped, hidden), want, atol=1e-5, rtol=1e-4)
    bare: Any = _tiny("llama")
    del bare.model.norm
    with pytest.raises(ValueError, match="LlamaForCausalLM: no final norm found"):
        layer_logits(bare, hidden)


def test_packed_and_padded_steps_give_the_same_loss_and_gradients():
    """A step's loss (token sum / target tokens) and its gradients do not depend on how the same examples are
    batched: packed rows (no mask, restarting positions) train the model exactly as padded rows with a mask do."""
    from audiopalm.training.core import count_targets, token_loss_sum

    model = _tiny("llama").train()
    g = torch.Generator().manual_seed(2)
    lens = torch.randint(6, 20, (9,), generator=g).tolist()
    exs = [_example(torch.randint(1, 97, (n,), generator=g).tolist(), n // 3) for n in lens]

    def step(batch, keys):
        model.zero_grad()
        logits = model(**{k: batch[k] for k in keys}, use_cache=False).logits
        loss = token_loss_sum(logits, batch["labels"]) / count_targets(batch["labels"])
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    packed = PackedCollator(max_len=64, pad_id=0)([exs[:3], exs[3:6], exs[6:]])
    loss_packed, grad_packed = step(packed, ("input_ids", "position_ids"))
    loss_padded, grad_padded = step(PaddingCollator(pad_id=0)(exs), ("input_ids", "attention_mask"))
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_packed, grad_padded, atol=1e-6, rtol=1e-4)
    # the check can fail: without its position ids the packed rows are one long sequence each
    _, grad_unmasked = step(packed, ("input_ids",))
    assert not torch.allclose(grad_unmasked, grad_padded, atol=1e-4)


def _reading(ids, prompt_len, lo, hi, words):
    return {**_example(ids, prompt_len), "read": (lo, hi, list(words))}


def test_read_fields_follow_packing_and_the_reading_loss_is_ctc_per_span():
    """The reading spans land where their examples do in packed and padded batches; the reading loss is, span by
    span, the CTC of the model's output there against the transcript, the same however the batch is laid out."""
    from audiopalm.training.core import reading_loss_sum

    g = torch.Generator().manual_seed(3)
    exs = [
        _reading(torch.randint(1, 97, (12,), generator=g).tolist(), 8, 2, 7, [5, 6]),
        _example(torch.randint(1, 97, (6,), generator=g).tolist(), 3),  # a text-input example: no span
        _reading(torch.randint(1, 97, (15,), generator=g).tolist(), 10, 1, 9, [7, 7, 8]),
    ]
    packed = PackedCollator(max_len=40, pad_id=0)([exs])
    assert packed["read_span"][0].tolist() == [0, 0] + [1] * 5 + [0] * 12 + [2] * 8 + [0] * 13
    assert packed["read_targets"].tolist() == [[[5, 6, IGNORE_INDEX], [7, 7, 8]]]
    padded = PaddingCollator(pad_id=0)(exs)
    assert padded["read_span"].tolist() == [
        [0, 0, 1, 1, 1, 1, 1] + [0] * 8,
        [0] * 15,
        [0] + [1] * 8 + [0] * 6,
    ]
    assert padded["read_targets"][1].tolist() == [[IGNORE_INDEX] * 3]
    assert "read_span" not in PaddingCollator(pad_id=0)([exs[1]])  # nothing to read: no fields

    model = _tiny("llama")
    with torch.no_grad():
        logits_packed = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
        logits_padded = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    by_hand = sum(
        torch.nn.functional.ctc_loss(
            logits_padded[b, lo:hi].log_softmax(-1)[:, None],
            torch.tensor([words]),
            torch.tensor([hi - lo]),
            torch.tensor([len(words)]),
            blank=0,
            reduction="sum",
        )
        for b, (lo, hi, words) in ((0, exs[0]["read"]), (2, exs[2]["read"]))
    )
    got_padded = reading_loss_sum(logits_padded, padded["read_span"], padded["read_targets"], blank=0)
    got_packed = reading_loss_sum(logits_packed, packed["read_span"], packed["read_targets"], blank=0)
    torch.testing.assert_close(got_padded, by_hand, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got_packed, by_hand, atol=1e-4, rtol=1e-5)
    assert float(by_hand) > 0
    # it trains the model: its gradient reaches the weights
    model.train().zero_grad()
    logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    reading_loss_sum(logits, padded["read_span"], padded["read_targets"], blank=0).backward()
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding) and embedding.weight.grad is not None
    assert float(embedding.weight.grad.abs().sum()) > 0


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
    """Sources A (weight 3) and B of 2..6-token examples whose every token names the example: 100 x tag + row."""

    def render_for(tag):
        def render(row):
            if render_skip_every and row["i"] % render_skip_every == 0:
                return None
            n = 2 + row["i"] % 5
            return _example([100 * tag + row["i"]] * n, 1)

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


def _segments(batch):
    """(token, length) of each example in a packed batch, row by row (padding runs left out)."""
    out = []
    for ids, pos in zip(batch["input_ids"].tolist(), batch["position_ids"].tolist(), strict=True):
        starts = [t for t, p in enumerate(pos) if p == 0] + [len(pos)]
        out += [(ids[a], b - a) for a, b in itertools.pairwise(starts) if ids[a] != 0]
    return out


@pytest.mark.parametrize(("max_len", "open_rows"), [(16, None), (16, 1), (6, 3)])
def test_packed_batches_resume_exactly(max_len, open_rows):
    """Restored from state_dict() (through JSON, as checkpoints store it) at several points, including with
    examples waiting in open rows and closed rows left over, a run yields the uninterrupted run's batches."""

    def fresh():
        mixture = TaskMixture(_sources(render_skip_every=7), seed=3)
        return PackedBatches(mixture, max_len=max_len, rows_per_batch=2, pad_id=0, open_rows=open_rows)

    whole = fresh()
    full = list(itertools.islice(iter(whole), 24))
    waiting: Counter[str] = Counter()
    for at in (0, 1, 5, 13, 14, 20):
        first = fresh()
        head = list(itertools.islice(iter(first), at))
        state = json.loads(json.dumps(first.state_dict()))
        waiting.update(closed=len(state["closed"]), open=sum(map(len, state["open"])))
        resumed = fresh()
        resumed.load_state_dict(state)
        tail = list(itertools.islice(iter(resumed), 24 - at))
        for x, y in zip(head + tail, full, strict=True):
            for k in ("input_ids", "labels", "position_ids", "num_target_tokens"):
                assert torch.equal(x[k], y[k]), (at, k)
        assert resumed.mixture.skipped == whole.mixture.skipped, at
        again = list(itertools.islice(iter(first), 24 - at))  # iterating again continues after the last batch too
        assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(again, full[at:], strict=True))
    assert sum(whole.mixture.skipped.values()) > 0
    with pytest.raises(ValueError, match="not a best-fit packer's"):  # an older checkpoint's mixture-only state
        fresh().load_state_dict(state["mixture"])
    assert waiting["open"] > 0  # the restore points had examples waiting in open rows ...
    if max_len == 6:
        assert waiting["closed"] > 0  # ... and, with 6-token rows, a closed row short of a batch


@pytest.mark.parametrize("open_rows", [None, 1])
def test_packed_batches_lose_nothing(open_rows):
    """Over many batches, the examples packed plus those waiting are the mixture's stream, each once and whole."""
    packer = PackedBatches(
        TaskMixture(_sources(render_skip_every=7), seed=5), max_len=16, rows_per_batch=3, pad_id=0, open_rows=open_rows
    )
    packed = [seg for batch in itertools.islice(iter(packer), 40) for seg in _segments(batch)]
    state = packer.state_dict()
    waiting = [packer.mixture.example_at(a) for row in state["closed"] + state["open"] for a in row]
    mix = TaskMixture(_sources(render_skip_every=7), seed=5)
    stream = iter(mix)
    drawn = []
    while (mix.epoch, mix.position) != (state["mixture"]["epoch"], state["mixture"]["position"]):
        drawn.append(next(stream))
    assert mix.epoch > 0  # the batches span more than one epoch
    assert Counter(packed) + Counter((ex["input_ids"][0], len(ex["input_ids"])) for ex in waiting) == Counter(
        (ex["input_ids"][0], len(ex["input_ids"])) for ex in drawn
    )
    assert len(packed) > 0.9 * len(drawn)


def _length_mix():
    """ASR-, TTS- and S2ST-like lengths (8..24, 20..40, 30..60 tokens) for 64-token rows, ASR twice as likely."""

    def render_for(lo, hi):
        return lambda row: _example([1] * (lo + row["i"] * 7919 % (hi - lo + 1)), 1)

    rows = [{"i": i} for i in range(40)]
    return [
        MixtureSource("ASR", rows, render_for(8, 24), weight=2.0),
        MixtureSource("TTS", rows, render_for(20, 40)),
        MixtureSource("S2ST", rows, render_for(30, 60)),
    ]


def test_best_fit_leaves_fewer_empty_slots_than_next_fit():
    def empty_fraction(open_rows):
        packer = PackedBatches(
            TaskMixture(_length_mix(), seed=0), max_len=64, rows_per_batch=2, pad_id=0, open_rows=open_rows
        )
        batches = list(itertools.islice(iter(packer), 40))
        return sum(int((b["input_ids"] == 0).sum()) for b in batches) / sum(b["input_ids"].numel() for b in batches)

    next_fit, best_fit = empty_fraction(1), empty_fraction(None)  # measured: 0.198 and 0.076
    assert next_fit > 0.15 and best_fit < 0.5 * next_fit, (next_fit, best_fit)


def test_packed_batches_refuse_too_long():
    src = [MixtureSource("long", [{"i": 0}], lambda row: _example([1] * 40, 1))]
    with pytest.raises(ValueError, match="longer than max_len=16"):
        next(iter(PackedBatches(TaskMixture(src), max_len=16, rows_per_batch=1, pad_id=0)))


def test_mixture_validates_sources():
    with pytest.raises(ValueError, match="weight must be > 0"):
        MixtureSource("x", [{}], lambda r: None, weight=0)
    with pytest.raises(ValueError, match="no rows"):
        MixtureSource("x", [], lambda r: None)


def test_unit_noise_changes_only_input_units_by_address_and_resumes():
    """UnitNoise replaces about p of the prompt's units (never a target's, never a token without neighbours) by a
    neighbour, the same for an example however it is reached (stream, example_at, a resumed mixture)."""
    from audiopalm.data.batching import UnitNoise, nearest_units

    neighbours = {u: [u + 1000, u + 2000] for u in range(100, 200)}  # "units" 100..199; text tokens below 100
    noise = UnitNoise(neighbours, 0.3)

    def render(row):  # 3 text tokens, 40 input units, 10 target units
        return _example([1, 2, 3, *range(100 + row["i"], 140 + row["i"]), *range(150, 160)], 43)

    sources = [MixtureSource("A", [{"i": i} for i in range(20)], render)]
    mix = TaskMixture(sources, seed=0, augment=noise)
    stream = list(itertools.islice(iter(mix), 30))
    changed = total = 0
    for ex in stream:
        ids, labels = ex["input_ids"], ex["labels"]
        assert ids[:3] == [1, 2, 3] and ids[43:] == list(range(150, 160)) and labels[43:] == ids[43:]
        for t in ids[3:43]:
            total += 1
            if t >= 1000:
                changed += 1
                assert 100 <= t % 1000 < 200
    assert 0.2 < changed / total < 0.4, changed / total
    assert [mix.example_at(ex["address"]) for ex in stream] == stream
    first = TaskMixture(sources, seed=0, augment=noise)
    list(itertools.islice(iter(first), 25))  # into the second epoch (20 rows an epoch)
    resumed = TaskMixture(sources, seed=0, augment=noise)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert list(itertools.islice(iter(resumed), 5)) == stream[25:30]
    other = list(itertools.islice(iter(TaskMixture(sources, seed=1, augment=noise)), 30))
    assert [ex["input_ids"] for ex in other] != [ex["input_ids"] for ex in stream]
    with pytest.raises(ValueError, match="p and shift must be"):
        UnitNoise(neighbours, 1.0)
    vectors = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    assert nearest_units(vectors, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]


def test_unit_shift_takes_a_neighbouring_input_unit_and_keeps_the_length():
    """UnitNoise(shift=q): about q of the prompt's units take the unit before or after them in the original sequence,
    never a text token's or a target's; the length, the text and the targets stay; with p too, both kinds happen."""
    from audiopalm.data.batching import UnitNoise

    neighbours = {u: [u + 1000] for u in range(100, 300)}
    orig = [1, 2, 3, *range(100, 140), 7, *range(250, 260)]  # text, 40 input units, a text token, 10 target units
    shifted = left = right = total = 0
    for seed in range(40):
        ex = UnitNoise(neighbours, 0.0, shift=0.3)(_example(orig, 44), torch.Generator().manual_seed(seed))
        ids = ex["input_ids"]
        assert len(ids) == len(orig) and ids[:3] == [1, 2, 3] and ids[43:] == orig[43:]
        for k in range(3, 43):
            total += 1
            if ids[k] != orig[k]:
                shifted += 1
                assert ids[k] in (orig[k - 1], orig[k + 1]) and 100 <= ids[k] < 140, "only an input unit's place"
                left += ids[k] == orig[k - 1]
                right += ids[k] == orig[k + 1]
        assert ids[3] in (orig[3], orig[4]) and ids[42] in (orig[41], orig[42])
    assert 0.22 < shifted / total < 0.38 and left > 0.3 * shifted and right > 0.3 * shifted, (shifted, left, right)
    both = UnitNoise(neighbours, 0.2, shift=0.2)(_example(orig, 44), torch.Generator().manual_seed(0))["input_ids"]
    assert any(t >= 1000 for t in both) and any(100 <= t < 140 and t != o for t, o in zip(both, orig, strict=True))
    with pytest.raises(ValueError, match="p \\+ shift < 1"):
        UnitNoise(neighbours, 0.5, shift=0.5)


def test_store_rows_through_a_shared_row_cache_read_each_row_once():
    """StoreRows over the same stores with one RowCache: every row equals the store's own, each is read from the
    store once however many tasks' rows pick it, and the cache stays within its size."""
    from audiopalm.data.batching import RowCache, StoreRows

    class Store:  # counts its reads
        def __init__(self, name, n):
            self.rows = [{"id": f"{name}{i}", "codes": [i, i + 1]} for i in range(n)]
            self.reads = 0

        def __getitem__(self, r):
            self.reads += 1
            return self.rows[r]

    stores = [Store("a", 5), Store("b", 3)]
    picks = [(0, 0), (0, 3), (1, 2), (0, 4)]
    cache = RowCache()
    asr, tts = StoreRows(stores, picks, cache), StoreRows(stores, picks[::-1], cache)
    plain = [StoreRows(stores, picks)[i] for i in range(4)]
    assert [asr[i] for i in range(4)] == plain == [stores[s].rows[r] for s, r in picks]
    before = sum(s.reads for s in stores)
    assert [tts[i] for i in range(4)] == plain[::-1]
    assert sum(s.reads for s in stores) == before, "the second task's rows come from the cache"
    small = RowCache(size=2)
    rows = StoreRows(stores, picks, small)
    assert [rows[i]["id"] for i in range(4)] == ["a0", "a3", "b2", "a4"] and len(small.rows) <= 2
