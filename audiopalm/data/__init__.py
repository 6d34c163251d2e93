"""Data: manifests, token stores, the unified vocabulary, tasks, codebook patterns, batching, the text tokenizer."""
