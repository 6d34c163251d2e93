"""The C allocator setting every command applies (audiopalm/runtime.py): large allocations come from the heap and
freed memory is kept. Checked in a fresh interpreter each time, through glibc's own counters (mallinfo2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audiopalm import runtime

pytestmark = pytest.mark.skipif(runtime.glibc_version() is None, reason="the setting is glibc's")

# Allocate and free a 64 MiB block, then report glibc's mmapped-block count while it was held and the heap's
# free top after it was freed (arena bytes - in-use bytes).
PROBE = """
import ctypes, json, sys
from audiopalm import runtime
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = runtime.keep_freed_memory()
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)
held = libc.mallinfo2().hblks - before
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped_while_held": held, "kept_free": after.fordblks}))
"""


def _probe(env: dict[str, str]) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_large_blocks_come_from_the_heap_and_stay_there():
    got = _probe({runtime.MALLOC_ENV: ""})
    assert got["applied"] is True
    assert got["mmapped_while_held"] == 0  # glibc's default maps a 64 MiB block on its own
    assert got["kept_free"] >= 64 << 20  # freed, and kept for the next allocation


def test_system_keeps_glibc_defaults():
    got = _probe({runtime.MALLOC_ENV: "system"})
    assert got["applied"] is False
    assert got["mmapped_while_held"] == 1
    assert got["kept_free"] < 64 << 20  # handed back to the kernel


def test_the_cli_and_a_launched_recipe_apply_it_before_their_work(monkeypatch, capsys):
    from audiopalm.commands.main import main
    from audiopalm.recipes.pretrain_text import PretrainTextRecipe

    calls: list[str] = []

    def record() -> bool:
        calls.append("applied")
        return True

    monkeypatch.setattr(runtime, "keep_freed_memory", record)
    with pytest.raises(SystemExit):  # even a command that is then refused
        main(["no-such-command"])
    assert calls == ["applied"]
    # `accelerate launch -m audiopalm.recipes.X` enters through Recipe.main, not the CLI
    assert PretrainTextRecipe.main(["--config", "pretrain_text_tiny", "--print-config"]) == 0
    assert "recipe: pretrain_text" in capsys.readouterr().out
    assert calls == ["applied", "applied"]
