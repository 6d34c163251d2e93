"""The acoustic stage: semantic units + a voice prompt -> codec features -> waveform (AudioLM stages 2-3).

- :mod:`audiopalm.acoustic.model`: :class:`AcousticConfig`, :class:`AcousticModel` (the network).
- :mod:`audiopalm.acoustic.stage`: :class:`AcousticStage` (network + codec; ``synthesize``, save / load).
- :mod:`audiopalm.acoustic.data`: cached (units, features) per utterance and prompt-paired batches.
- :mod:`audiopalm.acoustic.train`: the training loss and default voice (the recipe and its config are in :mod:`audiopalm.recipes.train_acoustic` and :mod:`audiopalm.config`).

See docs/acoustic_stage.md.
"""

from audiopalm.acoustic.model import AcousticConfig, AcousticModel
from audiopalm.acoustic.stage import AcousticStage

__all__ = ["AcousticConfig", "AcousticModel", "AcousticStage"]
