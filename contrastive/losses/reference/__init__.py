"""Dense reference losses: the papers' equations over the full ``[B, B]`` matrix.

For tests and small batches only. Same names and signatures as `contrastive.losses` without
``axis_name``; ``block_size`` is accepted and ignored. One module per family.
"""

from contrastive.losses.reference.clip import sigmoid_loss
from contrastive.losses.reference.clip import softmax_loss
from contrastive.losses.reference.multimodal import *  # noqa: F401,F403
from contrastive.losses.reference.pairs import *  # noqa: F401,F403
