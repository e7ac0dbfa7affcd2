"""On-device personalization: the user's own state mixed with the global model, never uploaded.

* :mod:`~keyboard_fl.personal.cache` — a personal word/bigram cache interpolated
  with the global model's word distribution (:class:`CachedSuggester`);
* :mod:`~keyboard_fl.personal.bias` — the output bias fine-tuned on the user's messages;
* :mod:`~keyboard_fl.personal.evaluate` — personalized against global on training
  users' later messages (``keyboard-fl personalize``);
* :mod:`~keyboard_fl.personal.compare` — which global model personalization helps
  most: two models' gains over the same users, with a paired bootstrap interval.

Both personalised back-ends implement :class:`keyboard_fl.suggester.Suggester`.
"""

from keyboard_fl.personal.bias import BiasConfig, fit_bias, personal_bias, with_bias
from keyboard_fl.personal.cache import BOS, CacheConfig, CachedSuggester, NgramCache, interpolate, mix, previous_word

__all__ = [
    "BOS",
    "BiasConfig",
    "CacheConfig",
    "CachedSuggester",
    "NgramCache",
    "fit_bias",
    "interpolate",
    "mix",
    "personal_bias",
    "previous_word",
    "with_bias",
]
