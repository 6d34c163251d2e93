"""Shared fixtures. Models in tests are tiny and built from configs; nothing is downloaded."""

import os

import pytest

# Never reach for a hub in tests, whatever the caller's environment says (set, not setdefault: an
# HF_HUB_OFFLINE=0 in a shell must not let a test make a network request), and keep tokenizers'
# thread pools quiet on 2 cores.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
