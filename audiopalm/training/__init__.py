"""Training: the loop's pieces (:mod:`audiopalm.training.core`) and the base recipe
(:mod:`audiopalm.training.recipe`) that the recipes in :mod:`audiopalm.recipes` subclass.

``from audiopalm import training; training.StepSampler`` etc. keep working: the pieces are re-exported here.
"""

from audiopalm.training.core import *  # noqa: F401,F403
