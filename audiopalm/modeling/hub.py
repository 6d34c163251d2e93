"""``audiopalm push FOLDER REPO_ID``: upload a saved model folder to the Hugging Face hub (``HfApi.upload_folder``).

    audiopalm push runs/demo/audiopalm/final me/audiopalm-tiny --eval runs/demo/eval
    audiopalm push runs/lora/base    me/audiopalm-lora-base
    audiopalm push runs/lora/adapter me/audiopalm-lora --base-repo me/audiopalm-lora-base

Only a complete folder (its ``complete.json`` marker written last by the save) with no absolute local path in
its JSON/YAML files is uploaded, so a second machine can load the repo with nothing else. ``--eval`` adds the
figures of ``audiopalm eval`` result folders (their ``summary.json``) to the card of the uploaded copy; the folder
on disk is not changed. A LoRA adapter names its base by a relative path (``../base``); ``--base-repo`` says which
hub repo holds that base, and the uploaded ``adapter_config.json`` names it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from audiopalm.data.sources import is_local
from audiopalm.errors import UserError
from audiopalm.modeling.adapter import ADAPTER_CONFIG, set_adapter_base
from audiopalm.modeling.card import CARD_NAME, add_eval_results, find_absolute_paths
from audiopalm.modeling.extend import check_complete


def _stage(folder: Path, into: Path) -> Path:
    """A view of ``folder`` to edit a few small files in: hard links (copies where links fail) of every file."""
    for src in folder.rglob("*"):
        dst = into / src.relative_to(folder)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return into


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    eval_dirs: list[str | os.PathLike] = (),  # type: ignore[assignment]
    base_repo: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a complete saved model folder to ``repo_id`` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    check_complete(folder)
    bad = find_absolute_paths(folder)
    if bad:
        raise UserError(f"{folder}: holds absolute local paths ({'; '.join(bad[:3])}); re-save it with this version")
    if not (folder / CARD_NAME).is_file():
        raise UserError(f"{folder}: no {CARD_NAME} model card; re-save it with this version")
    adapter_base = None
    if (folder / ADAPTER_CONFIG).is_file():
        named = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base_repo is None and (not named or is_local(named)):
            raise UserError(
                f"{folder}: a LoRA adapter whose base is the local folder {named!r}; push that folder first and "
                "give its repo with --base-repo"
            )
        adapter_base = base_repo
    summaries = []
    for d in eval_dirs:
        path = Path(d) / "summary.json" if Path(d).is_dir() else Path(d)
        if not path.is_file():
            raise UserError(f"{d}: no summary.json of `audiopalm eval` here")
        summaries.append(json.loads(path.read_text(encoding="utf-8")))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="audiopalm-push-") as tmp:
        upload = folder
        if summaries or adapter_base:
            # hard links; the edits below write a new file and rename it over the link, so the original stays
            upload = _stage(folder, Path(tmp) / folder.name)
            if summaries:
                add_eval_results(upload / CARD_NAME, summaries)
            if adapter_base:
                set_adapter_base(upload, adapter_base)
        return str(
            api.upload_folder(
                folder_path=str(upload),
                repo_id=repo_id,
                repo_type="model",
                revision=revision,
                commit_message=commit_message or f"Upload {folder.name} with audiopalm push",
            )
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a saved model folder (final/, adapter/, base/, a Speech-Llama or acoustic one)")
    parser.add_argument("repo_id", help="the hub repo to upload to (created if missing), e.g. me/audiopalm-tiny")
    parser.add_argument(
        "--eval", action="append", default=[], help="an `audiopalm eval` results folder whose figures go in the card"
    )
    parser.add_argument("--base-repo", help="LoRA adapters: the hub repo holding the run's base/ folder")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to upload to (default: main)")
    parser.add_argument("--message", help="commit message")


def run(args) -> int:
    url = push_to_hub(
        args.folder,
        args.repo_id,
        eval_dirs=args.eval,
        base_repo=args.base_repo,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
    )
    print(f"uploaded {args.folder} -> {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``audiopalm push`` as a function: a refused input is one line on stderr and exit code 2."""
    from audiopalm import errors

    parser = errors.OneLineParser(prog="audiopalm push", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return errors.run_command(lambda: run(args), prog="audiopalm push")
