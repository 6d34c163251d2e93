"""Command line of the evaluation report; the code lives in :mod:`audiopalm.evaluation.report`.

python eval/report.py RESULTS_DIR [--samples 4] [--runs DIR...]
"""

import sys

from audiopalm.evaluation.report import main

if __name__ == "__main__":
    sys.exit(main())
