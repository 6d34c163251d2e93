"""How a refused input reaches the user: one line naming the input and what to do, exit code 2.

Every module raises its own error type (``ManifestError``, ``AudioError``, ``ConfigError``, ...; all
``ValueError`` s whose message names the file, line or field). The ``audiopalm`` command runs each
subcommand through :func:`run_command`, which turns any such error into::

    audiopalm tokenize: error: data/train.jsonl:3: field 'audio': missing required field

on standard error and exit code :data:`EXIT_BAD_INPUT`. The traceback is printed only with ``--debug``
or ``AUDIOPALM_DEBUG=1``. An exception that is not about the user's input (a bug) keeps its traceback.

Helpers for the refusals that several loaders share live here too: :func:`safe_id` (ids that become
file names), :func:`inside` (a path built from data stays inside its output folder),
:func:`check_safetensors` (a truncated weights file) and :func:`read_text_lines` (UTF-8 text with the
line named when it is not).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_BAD_INPUT = 2
"""Exit code of a refused input (argparse uses 2 for a bad command line too)."""
DEBUG_ENV = "AUDIOPALM_DEBUG"
"""``AUDIOPALM_DEBUG=1`` prints the traceback of a refused input, like ``--debug``."""


class UserError(ValueError):
    """An input the user can fix. The message names the file/field and says what to do."""


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _file_being_read(exc: BaseException) -> str | None:
    """The name of the text file a decoding error came from: the innermost frame holding an open text file."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.TextIOWrapper) and isinstance(getattr(value, "name", None), str):
                return value.name
    return None


def user_message(exc: BaseException) -> str | None:
    """The one-line message if ``exc`` refuses a user's input, else None (a bug: keep the traceback)."""
    if isinstance(exc, UnicodeDecodeError):  # a ValueError whose own text names no file: find the file
        where = _file_being_read(exc) or "input"
        return f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    if isinstance(exc, OSError) and (exc.filename is not None or isinstance(exc, FileNotFoundError)):
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror or exc}"
        return one_line(str(exc))
    if isinstance(exc, ValueError):
        return one_line(str(exc)) or type(exc).__name__
    if type(exc).__name__ == "SafetensorError":  # safetensors' own type; its text names no file
        return f"a safetensors weights file is truncated or corrupt ({one_line(str(exc))}); re-save or re-download it"
    return None


def run_command(fn: Callable[[], int | None], *, prog: str, debug: bool = False) -> int:
    """Run a subcommand; a refused input becomes one line on stderr and :data:`EXIT_BAD_INPUT`."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted into bad input vs bug below
        message = user_message(exc)
        if message is None:
            raise
        if debug_enabled(debug):
            traceback.print_exc()
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (``PROG: error: ...; see PROG --help``), exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)}; see {self.prog} --help\n")


# ----------------------------------------------------------------------------- shared checks

# A safe file-name stem: letters, digits and . _ - + = @ , (any script: \w is Unicode), no leading dot,
# at most 200 characters (file systems allow 255 bytes; suffixes such as ".k8.wav" are added to it).
_ID_RE = re.compile(r"^[\w+=@,-][\w.+=@,-]{0,199}$")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id (a file-name stem), or None if it can."""
    if not isinstance(value, str) or not value:
        return "empty id"
    if "\x00" in value:
        return "contains a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if ".." in value:
        return "contains '..'"
    if len(value) > 200:
        return f"longer than 200 characters ({len(value)})"
    if not _ID_RE.match(value):
        bad = sorted({c for c in value if not re.match(r"[\w.+=@,-]", c)})
        return (
            "starts with a dot"
            if value.startswith(".")
            else f"contains {', '.join(repr(c) for c in bad)} (ids are file-name stems: letters, digits, . _ - + = @ ,)"
        )
    return None


def safe_id(value: str, *, where: str = "id") -> str:
    """``value`` if it is a safe file-name stem, else :class:`UserError` naming ``where``."""
    problem = id_problem(value)
    if problem:
        raise UserError(f"{where}: bad id {value!r}: {problem}")
    return value


def inside(path: str | os.PathLike, root: str | os.PathLike, *, what: str = "output") -> Path:
    """``path`` resolved, refused (:class:`UserError`) unless it lies inside the folder ``root``."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise UserError(f"{path}: {what} would be written outside {root} (an id or name with a path in it?)")
    return Path(path)


def check_safetensors(path: str | os.PathLike) -> None:
    """Refuse a truncated or corrupt safetensors file (header and data size checked), naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except Exception as e:  # SafetensorError, OSError: what matters is the file and that it is broken
        raise UserError(
            f"{path}: truncated or corrupt safetensors file ({one_line(str(e))}); re-save it (or re-download it)"
        ) from None


def read_text_lines(path: str | os.PathLike, *, what: str = "file") -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of a UTF-8 text file; a non-UTF-8 line is a :class:`UserError` naming it."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: {what} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); save it as UTF-8"
                ) from None
