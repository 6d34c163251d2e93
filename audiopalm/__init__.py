"""audiopalm: turn a pretrained Hugging Face text LLM into a model that can listen and speak.

The data flow (see README): corpus -> manifest -> token store -> task examples -> packed batches
-> train -> checkpoint -> generate -> eval report. Each stage lives in one module of this package.
"""

__version__ = "0.1.0"
