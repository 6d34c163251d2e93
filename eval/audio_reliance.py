"""Does the LM read the audio? Its ASR loss with each utterance's own audio vs with another's.

The transcript loss of an ASR model that ignores its input equals the loss with any other input; the gap
between the two is what the model takes from the audio (nats per transcript token). It tells an LM that
reads the audio badly (a gap, but a high WER) from one that has learnt only the languages (no gap).
"Another utterance's audio" is a rotation by one of the same utterances, so both losses score the same
transcripts and only their pairing with the audio changes.

  python eval/audio_reliance.py --checkpoint runs/demo/audiopalm/final --store runs/demo/tokens/dev --lang en
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_tokens import Pair, store_pairs  # noqa: E402  (eval/ is not a package)


@torch.no_grad()
def asr_loss(pipe, pairs: list[Pair], lang: str, *, progress: bool = False) -> float:
    """Mean cross-entropy (nats per target token, eos included) of the ``[ASR lang]`` transcripts given the codes,
    on the examples the fine-tune renders (:func:`audiopalm.data.tasks.render`: the prompt masked out of the labels)."""
    from audiopalm.data.tasks import IGNORE_INDEX, render

    k = pipe.vocab.num_codebooks
    device = next(pipe.model.parameters()).device
    total, count = 0.0, 0
    for codes, text in tqdm(pairs, desc="ASR loss", unit="utt", disable=not progress):
        rec = {"lang": lang, "text": text, "audio_codes": torch.as_tensor(codes)[:k]}
        ex = render(rec, "ASR", pipe.vocab, max_len=pipe.max_length or sys.maxsize)
        if ex is None:
            raise ValueError(f"the ASR example of {text!r} does not render (longer than the model's context?)")
        n = sum(label != IGNORE_INDEX for label in ex["labels"])
        ids, labels = (torch.tensor([ex[key]], device=device) for key in ("input_ids", "labels"))
        out = pipe.model(ids, labels=labels)
        total += out.loss.item() * n  # the model's mean over the n target tokens
        count += n
    return total / count


def audio_reliance(pipe, pairs: list[Pair], lang: str, *, progress: bool = False) -> dict:
    """ASR loss with the right audio, with another utterance's audio, and the gap between them."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 utterances to swap their audio, got {len(pairs)}")
    swapped = [(codes, text) for (codes, _), (_, text) in zip(pairs[1:] + pairs[:1], pairs, strict=True)]
    own = asr_loss(pipe, pairs, lang, progress=progress)
    other = asr_loss(pipe, swapped, lang, progress=progress)
    return {"own_audio": own, "other_audio": other, "gap": other - own, "utterances": len(pairs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="AudioPaLM checkpoint (e.g. runs/demo/audiopalm/final)")
    parser.add_argument("--store", required=True, help="token store made with the checkpoint's audio tokenizer")
    parser.add_argument("--lang", default="en", help="language of the utterances (default: en)")
    parser.add_argument("--max-items", type=int, default=100, metavar="N", help="first N utterances (default: 100)")
    parser.add_argument("--out", help="write the result here as JSON")
    args = parser.parse_args(argv)
    from audiopalm.inference.pipeline import AudioPaLM

    try:
        if args.max_items < 2:
            raise ValueError(f"--max-items: need at least 2, got {args.max_items}")
        pairs, _ = store_pairs(args.store, args.lang)
        pipe = AudioPaLM.from_pretrained(args.checkpoint)
        result = audio_reliance(pipe, pairs[: args.max_items], args.lang, progress=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"audio_reliance: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.checkpoint}, [ASR {args.lang}] on {result['utterances']} utterances of {args.store}: "
        f"own audio {result['own_audio']:.3f}, another's {result['other_audio']:.3f}, "
        f"gap {result['gap']:.3f} nats/token"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"checkpoint": args.checkpoint, "store": args.store, "lang": args.lang, **result}, indent=1)
            + "\n",
            encoding="utf-8",
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
