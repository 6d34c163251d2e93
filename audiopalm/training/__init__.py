"""Training: the loop's pieces (:mod:`audiopalm.training.core`) and the base recipe
(:mod:`audiopalm.training.recipe`) that the recipes in :mod:`audiopalm.recipes` subclass.

``from audiopalm import training; training.StepSampler`` etc. keep working: the pieces are re-exported here.
"""

from audiopalm.training.core import *  # noqa: F401,F403
from audiopalm.training.core import (IGNORE_INDEX, STATE_FILE, MetricsLog, StepSampler, checkpoint_name,  # noqa: F401
                                     chunked, count_targets, global_sum, latest_checkpoint, list_checkpoints,
                                     load_checkpoint, load_model_weights, load_training_state, load_tree,
                                     loss_scale, make_accelerator, make_optimizer, make_scheduler, param_groups,
                                     perplexity, read_jsonl, read_state, rng_state, save_checkpoint, save_tree,
                                     set_rng_state, token_loss_sum)
