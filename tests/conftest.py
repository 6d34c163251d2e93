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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    a second thread gains nothing on them, and on a shared, loaded 2-core machine its spin-waits made tests many
    times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
