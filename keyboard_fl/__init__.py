"""keyboard_fl: a private phone keyboard, end to end.

Simulated typists (:mod:`keyboard_fl.data`), a SentencePiece tokenizer trained on
public text (:mod:`keyboard_fl.tokenizer`), a CIFG-LSTM next-word model
(:mod:`keyboard_fl.models`), federated rounds with user-level differential
privacy (:mod:`keyboard_fl.fl`, :mod:`keyboard_fl.privacy`), keyboard metrics
(:mod:`keyboard_fl.eval`) and a suggestion strip (:mod:`keyboard_fl.suggest`).
"""

__version__ = "0.1.0"

from keyboard_fl.hostdevices import configure_host_devices as _configure_host_devices

# Before JAX starts: a fixed number of CPU devices, so rounds use every core
# and give the same results on any core count (keyboard_fl/hostdevices.py).
_configure_host_devices()
