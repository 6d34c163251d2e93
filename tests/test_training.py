"""audiopalm.training: data order, token-normalised loss, optimizer/schedule, checkpoints, metrics."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import torch

from audiopalm import training
from audiopalm.config import OptimConfig
from audiopalm.training import IGNORE_INDEX, StepSampler

# ------------------------------------------------------------------------------------------------ data order


def test_sampler_is_a_pure_function_of_step_and_covers_each_epoch():
    a, b = StepSampler(10, 4, seed=3), StepSampler(10, 4, seed=3)
    assert [a.global_indices(s) for s in range(5)] == [b.global_indices(s) for s in reversed(range(5))][::-1]
    first_epoch = sum((a.global_indices(s) for s in range(5)), [])[:10]  # 5 steps x 4 = 2 epochs of 10
    second_epoch = sum((a.global_indices(s) for s in range(5)), [])[10:]
    assert sorted(first_epoch) == list(range(10)) and sorted(second_epoch) == list(range(10))
    assert first_epoch != second_epoch  # a new permutation each epoch
    assert StepSampler(10, 4, seed=4).global_indices(0) != a.global_indices(0)


@pytest.mark.parametrize("world, accum", [(1, 4), (2, 2), (4, 1)])
def test_micro_batches_partition_the_global_batch(world, accum):
    s = StepSampler(100, 8, seed=0)
    g = s.global_indices(7)
    parts = [
        StepSampler.micro_batch(g, m, r, micro_batch_size=8 // (world * accum), world_size=world)
        for m in range(accum)
        for r in range(world)
    ]
    assert sum(parts, []) == g


def test_sampler_errors():
    with pytest.raises(ValueError, match="num_items: no items"):
        StepSampler(0, 4)
    with pytest.raises(AssertionError, match="too small for micro 1"):
        StepSampler.micro_batch([1, 2, 3], 1, 0, micro_batch_size=2, world_size=1)


# ------------------------------------------------------------------------------------------------ loss


class _TinyLM(torch.nn.Module):
    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, x):  # [B, T] -> [B, T, V]
        return self.out(torch.tanh(self.emb(x)))


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (4, 9), generator=g)  # [4, 9]
    labels = x.clone()
    labels[0, :7] = IGNORE_INDEX  # a short target (ASR-like) ...
    labels[1, :2] = IGNORE_INDEX  # ... and a long one (TTS-like)
    labels[2, :] = IGNORE_INDEX
    labels[2, 5:7] = x[2, 5:7]
    return x, labels


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_count_targets_uses_the_shift():
    _, labels = _batch()
    # row 0: positions 7,8 scored -> after the shift (labels[:, 1:]) 2 targets; row 1: 7; row 2: 2; row 3: 8
    assert training.count_targets(labels) == 2 + 7 + 2 + 8


def test_token_loss_sum_matches_hf_style_mean():
    model, (x, labels) = _TinyLM(), _batch()
    logits = model(x)
    mean = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    total = training.token_loss_sum(logits, labels)
    assert total.shape == () and torch.allclose(total / training.count_targets(labels), mean)


@pytest.mark.parametrize("world, accum", [(1, 2), (2, 1), (2, 2), (1, 4)])
def test_any_split_gives_the_full_batch_gradient(world, accum):
    """Simulates accelerate: backward divides by accum, DDP averages over processes."""
    torch.manual_seed(0)
    model, (x, labels) = _TinyLM(), _batch()
    training.token_loss_sum(model(x), labels).div(training.count_targets(labels)).backward()
    want = _grads(model).clone()

    n = training.count_targets(labels)  # what global_sum returns: all micro-batches of all processes
    scale = training.loss_scale(n, world_size=world, grad_accum_steps=accum)
    per_rank = []
    size = 4 // (world * accum)
    for rank in range(world):
        model.zero_grad()
        for m in range(accum):
            idx = StepSampler.micro_batch(list(range(4)), m, rank, micro_batch_size=size, world_size=world)
            (training.token_loss_sum(model(x[idx]), labels[idx]) * scale / accum).backward()
        per_rank.append(_grads(model).clone())
    got = torch.stack(per_rank).mean(0)
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_mean_of_micro_batch_means_would_differ():
    """The reason for the normalisation: per-micro-batch means weigh short targets too much."""
    torch.manual_seed(0)
    model, (x, labels) = _TinyLM(), _batch()
    full = training.token_loss_sum(model(x), labels) / training.count_targets(labels)
    halves = [
        training.token_loss_sum(model(x[i]), labels[i]) / training.count_targets(labels[i]) for i in ([0, 1], [2, 3])
    ]
    assert not torch.allclose(full, (halves[0] + halves[1]) / 2)


def test_loss_scale_refuses_no_targets():
    with pytest.raises(ValueError, match="no target tokens"):
        training.loss_scale(0, world_size=1, grad_accum_steps=1)


# ------------------------------------------------------------------------------------------------ optimizer


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def test_param_groups_decay_only_matrices_and_take_group_lrs():
    model = _llama()
    groups = training.param_groups(model, lr=1e-3, weight_decay=0.1, group_lrs={"embed_tokens": 5e-3})
    by_name = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}
    assert by_name["model.embed_tokens.weight"] == (5e-3, 0.0)
    assert by_name["model.norm.weight"] == (1e-3, 0.0)
    assert by_name["model.layers.0.self_attn.q_proj.weight"] == (1e-3, 0.1)
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable
    with pytest.raises(ValueError, match=r"optim.group_lrs: no trainable parameter name contains \['nothing'\]"):
        training.param_groups(model, lr=1e-3, weight_decay=0.1, group_lrs={"nothing": 1.0})


def test_schedule_warms_up_then_decays_to_the_floor():
    model = _llama()
    cfg = OptimConfig(lr=1e-2, warmup_steps=4, min_lr_ratio=0.1, group_lrs={"embed_tokens": 2e-2})
    opt = training.make_optimizer(model, cfg)
    sched = training.make_scheduler(opt, cfg, max_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr())
        opt.step()
        sched.step()
    peaks = [g["initial_lr"] for g in opt.param_groups]
    assert sorted(set(peaks)) == [0.01, 0.02]
    for i, peak in enumerate(peaks):  # every group follows the same shape, scaled to its own peak
        curve = [lr[i] for lr in lrs]
        assert curve[:5] == pytest.approx([0, peak / 4, peak / 2, 3 * peak / 4, peak])
        assert all(a >= b for a, b in zip(curve[4:], curve[5:], strict=False))
        assert sched.get_last_lr()[i] == pytest.approx(peak * 0.1)


# ------------------------------------------------------------------------------------------------ state files


def test_tree_round_trip_keeps_types_and_int_keys(tmp_path):
    tree: dict[str, Any] = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0, 1], "foreach": None}],
        "arr": np.arange(5, dtype=np.uint32),
        "flag": True,
    }
    training.save_tree(tree, tmp_path / "opt")
    back = training.load_tree(tmp_path / "opt")
    assert back["param_groups"] == tree["param_groups"] and back["flag"] is True
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["exp_avg"], tree["state"][0]["exp_avg"])
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob("*.pkl"))


def test_tree_refuses_objects_naming_the_path(tmp_path):
    with pytest.raises(TypeError, match=r"opt\.loss_scaler: cannot save a object"):
        training.save_tree({"loss_scaler": object()}, tmp_path / "opt")


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    training.save_tree(training.rng_state(), tmp_path / "rng")
    want = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    training.set_rng_state(training.load_tree(tmp_path / "rng"))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


def _train_one_step(model, opt, sched):
    x = torch.randint(0, 64, (2, 8))
    training.token_loss_sum(model(input_ids=x).logits, x).backward()
    opt.step(), opt.zero_grad(), sched.step()


def test_checkpoint_save_load_keep_last_and_atomicity(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    cfg = OptimConfig(warmup_steps=1)
    model = _llama()
    opt = training.make_optimizer(model, cfg)
    sched = training.make_scheduler(opt, cfg, max_steps=10)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _train_one_step(model, opt, sched)
        training.save_checkpoint(
            acc,
            root,
            step=step,
            model=model,
            optimizer=opt,
            scheduler=sched,
            state={"tokens_seen": step * 16},
            keep_last=2,
        )
    assert [p.name for p in training.list_checkpoints(root)] == ["step_0000002", "step_0000003"]
    (root / ".tmp-step_0000004").mkdir()  # a save killed half-way
    (root / "step_0000005").mkdir()  # a folder without trainer_state.json is not a checkpoint
    latest = training.latest_checkpoint(root)
    assert latest is not None and latest.name == "step_0000003", latest

    model2 = _llama()
    opt2 = training.make_optimizer(model2, cfg)
    sched2 = training.make_scheduler(opt2, cfg, max_steps=10)
    state = training.load_checkpoint(root / "step_0000003", model=model2, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 3 and state["tokens_seen"] == 48
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert model2.lm_head.weight.data_ptr() == model2.model.embed_tokens.weight.data_ptr()  # still tied
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # the same next step from both
    torch.manual_seed(7)
    _train_one_step(model, opt, sched)
    torch.manual_seed(7)
    _train_one_step(model2, opt2, sched2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(root / "step_0000003").config.num_hidden_layers == 1
    with pytest.raises(FileNotFoundError, match="trainer_state.json: missing"):
        training.load_checkpoint(root / "step_0000005", model=model2, optimizer=opt2, scheduler=sched2)


# ------------------------------------------------------------------------------------------------ metrics


def test_metrics_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = training.MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 7):
        log.write({"step": step, "loss": 1.0 / step})
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')  # torn by a kill
    log.resume_at(4)
    assert [r["step"] for r in training.read_jsonl(tmp_path / "m.jsonl")] == [1, 2, 3, 4]
    training.MetricsLog(tmp_path / "other.jsonl", enabled=False).write({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0]) == {"step": 1, "loss": 1.0}


def test_new_rows_get_their_own_lr_under_lora_trainable_tokens():
    """The 'separate LR for the new embedding rows' option: peft keeps them in their own tensor."""
    import peft
    import transformers

    from audiopalm.training import param_groups

    cfg = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(cfg),
        peft.LoraConfig(
            r=2, target_modules=["q_proj"], trainable_token_indices={"embed_tokens": [90, 91]}, task_type="CAUSAL_LM"
        ),
    )
    groups = {
        g["lr"]: g["names"]
        for g in param_groups(model, lr=1e-3, weight_decay=0.1, group_lrs={"trainable_tokens": 5e-3})
    }
    assert len(groups[5e-3]) == 1 and "trainable_tokens_delta" in groups[5e-3][0]
    assert all("lora_" in n for n in groups[1e-3])
