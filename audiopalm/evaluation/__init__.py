"""Evaluation: metrics, ASR judges, the evaluation run (audiopalm eval) and its report."""
