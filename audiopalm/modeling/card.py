"""Model cards and provenance for every saved model folder, so that a folder can go to the Hugging Face hub as is.

Each folder a training run publishes (``final/`` of the AudioPaLM fine-tune, its LoRA ``adapter/`` and the
``base/`` the adapter applies to, the Speech-Llama folder, the acoustic stage, the stage-0 text LM) gets a
``README.md`` written by :func:`write_model_card` inside the atomic save, before the ``complete.json`` marker::

    ---
    base_model: meta-llama/Llama-3.2-1B        # only a hub id; a local base is named in the text
    library_name: transformers                 # or peft (adapters), audiopalm (Speech-Llama, acoustic stage)
    language: [en, fr]
    pipeline_tag: any-to-any                   # one task: automatic-speech-recognition, text-to-speech, ...
    tags: [audiopalm, speech, asr, ...]
    ---
    # title / what it is / tasks and languages / audio tokenizer and its source / dev figures / how to load

Provenance never holds an absolute local path (:func:`source_of`): a hub model is its id (+ revision), a
local one is ``{"local": <folder name>}`` plus what identifies it (a fingerprint), since the path means
nothing on another machine.

Eval figures: ``audiopalm eval`` writes its results into its own ``--out`` folder and never edits the
checkpoint it scored (a published folder is immutable once its marker is written; it may be a read-only hub
cache; two evals of one checkpoint would race on its card). ``audiopalm push FOLDER REPO --eval RESULTS``
puts them into the card of the copy it uploads (:func:`add_eval_results`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from audiopalm.data.sources import is_local, source_of

CARD_NAME = "README.md"
"""The model card's file name (what the hub shows)."""

LIBRARY = "audiopalm"
"""``library_name`` of folders that only this package loads (Speech-Llama, acoustic stage)."""

# One task -> the hub's pipeline tag; a model trained on several speech/text tasks is "any-to-any".
PIPELINE_TAGS = {
    "ASR": "automatic-speech-recognition",
    "AST": "automatic-speech-recognition",
    "TTS": "text-to-speech",
    "S2ST": "audio-to-audio",
    "MT": "translation",
    "LM": "text-generation",
}
TASK_NAMES = {
    "ASR": "speech recognition",
    "AST": "speech-to-text translation",
    "TTS": "text-to-speech",
    "S2ST": "speech-to-speech translation",
    "MT": "text translation",
    "LM": "text language modelling",
}


def describe_source(source: dict | None) -> str:
    """One line for a card: ``facebook/encodec_24khz@abc123`` or ``local folder mel_rvq (fingerprint ...)``."""
    if not source:
        return "unknown"
    extra = ", ".join(f"{k} {v}" for k, v in source.items() if k not in ("hub_id", "revision", "local") and v)
    if "hub_id" in source:
        rev = f" (revision {source['revision']})" if source.get("revision") else ""
        head = f"[{source['hub_id']}](https://huggingface.co/{source['hub_id']}){rev}"
    else:
        head = f"a local folder `{source.get('local')}`, not on the hub"
    return head + (f"; {extra}" if extra else "")


def pipeline_tag(tasks: list[str]) -> str | None:
    """The hub's pipeline tag for a model trained on ``tasks`` (None for none)."""
    if not tasks:
        return None
    names = {t.split()[0].upper() for t in tasks}
    if names <= {"LM", "MT"} and len(tasks) > 1:  # a text LM (stage 0)
        return "text-generation"
    if len(names) == 1 and len(tasks[0].split()) == 1:
        return PIPELINE_TAGS.get(next(iter(names)), "any-to-any")
    return "any-to-any"


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_model_card(
    folder: str | os.PathLike,
    *,
    title: str,
    summary: str,
    load_code: str,
    library_name: str = "transformers",
    base_model: str | None = None,
    base_source: dict | None = None,
    tasks: dict[str, list[str]] | None = None,
    audio_tokenizer: dict | None = None,
    dev: dict | None = None,
    training: dict | None = None,
    tags: list[str] | None = None,
) -> Path:
    """Write ``folder/README.md``: YAML metadata (``huggingface_hub.ModelCardData``) and a body a person reads.

    ``tasks``: task name -> languages (``["en"]`` or pairs ``["en-fr"]``) it was trained on. ``audio_tokenizer``:
    ``{"type", "fingerprint", "source"}`` (source from :func:`source_of`). ``dev``: dev figures of the training
    (name -> value). ``training``: steps, tokens and the like. ``load_code``: the (about) three lines that load it.
    ``base_model`` goes into the metadata only when it is a hub id; ``base_source`` names it in the text."""
    from huggingface_hub import ModelCard, ModelCardData

    tasks = tasks or {}
    langs = sorted({part for ls in tasks.values() for lang in ls for part in lang.split("-") if part})
    hub_base = base_model if base_model and not is_local(base_model) else None
    data = ModelCardData(
        base_model=hub_base,
        library_name=library_name,
        language=langs or None,
        pipeline_tag=pipeline_tag(list(tasks)),
        tags=list(dict.fromkeys(["audiopalm", "speech", *(t.split()[0].lower() for t in tasks), *(tags or [])])),
    )
    body = [f"# {title}", "", summary, ""]
    base = base_source or source_of(base_model)
    if base:
        body += [f"Base model: {describe_source(base)}.", ""]
    if tasks:
        body += ["## Trained on", "", "| task | what | languages |", "|---|---|---|"]
        for t, ls in tasks.items():
            what = ", then ".join(TASK_NAMES.get(part.upper(), part) for part in t.split())  # chains: in order
            body.append(f"| `{t}` | {what} | {', '.join(ls) or 'all'} |")
        body.append("")
    if audio_tokenizer:
        body += [
            "## Audio tokenizer",
            "",
            f"`{audio_tokenizer.get('type')}`, fingerprint `{audio_tokenizer.get('fingerprint')}`, from "
            f"{describe_source(audio_tokenizer.get('source'))}. Token stores made by another tokenizer are refused.",
            "",
        ]
    if dev:
        body += [
            "## Dev figures (at the step the training table gives)",
            "",
            _table([{"set": k, "loss": v} for k, v in dev.items()]),
            "",
        ]
    if training:
        body += ["## Training", "", _table([training]), ""]
    body += ["## How to load", "", "```python", load_code.strip(), "```", ""]
    card = ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body))
    return _write_atomic(Path(folder) / CARD_NAME, str(card))


def add_eval_results(card_path: str | os.PathLike, eval_summaries: list[dict]) -> Path:
    """Append the metrics of ``audiopalm eval`` runs (their ``summary.json``) to a card, as an "Eval figures"
    section naming the data each was scored on."""
    path = Path(card_path)
    text = path.read_text(encoding="utf-8").rstrip() + "\n\n## Eval figures\n"
    for s in eval_summaries:
        rows = [
            {k: v for k, v in r.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
            for r in s.get("metrics", [])
        ]
        data = s.get("data") or s.get("manifest") or "?"
        text += f"\nOn `{Path(str(data)).name}` (judge: {s.get('judge', '?')}):\n\n{_table(rows)}\n"
    return _write_atomic(path, text)


def read_card_data(folder: str | os.PathLike) -> dict:
    """The YAML metadata of ``folder/README.md`` as a dict (empty if there is no card)."""
    from huggingface_hub import ModelCard

    path = Path(folder) / CARD_NAME
    return ModelCard.load(path).data.to_dict() if path.is_file() else {}


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def find_absolute_paths(folder: str | os.PathLike) -> list[str]:
    """``file: value`` for every string in the folder's JSON/YAML files that is an absolute path (what a saved
    folder must not hold: it means nothing on another machine)."""
    import yaml

    found = []
    for f in sorted(Path(folder).rglob("*")):
        if f.suffix not in (".json", ".yaml", ".yml") or not f.is_file():
            continue
        text = f.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if f.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError):
            continue
        stack = [data]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)
            elif isinstance(x, str) and (x.startswith("/") or (len(x) > 2 and x[1:3] in (":\\", ":/"))):
                found.append(f"{f.relative_to(folder)}: {x}")
    return found
