"""Public alias of `pss_tf.models.supernet` (the supernet, `build_supernet`, `encode`, `encode_group`)."""

from pss_tf.models.supernet import *  # noqa: F401,F403
from pss_tf.models.supernet import __all__  # noqa: F401
