"""Evaluate any checkpoint on any tasks of any manifest; the same as ``audiopalm eval``.

    python eval/evaluate.py --checkpoint runs/demo/audiopalm --manifest runs/demo/corpus/test.jsonl \\
        --tasks ASR AST TTS S2ST "ASR AST S2ST" MT --out runs/demo/eval

See :mod:`audiopalm.evaluation.evaluate` for the options, the files written and the metrics.
"""

import sys

from audiopalm.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
