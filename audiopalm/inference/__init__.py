"""Inference: modality-constrained generation and the pipelines (AudioPaLM, Speech-Llama)."""
