"""Shared fixtures. Models in tests are tiny and built from configs; nothing is downloaded."""

import os

import pytest

# Never reach for a hub in tests, and keep tokenizers' thread pools quiet on 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
