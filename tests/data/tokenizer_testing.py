"""What the tokenizer tests share: random texts for the live comparisons with the peers."""

import numpy as np


def random_texts(n: int, seed: int = 0) -> list[str]:
  """`n` texts of 0 to 119 characters: ASCII, punctuation, accents, CJK, emoji, ligatures."""
  rng = np.random.default_rng(seed)
  alphabet = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,;:!?'\"-_()[]&#<>/\t\n") + list(
    "éèüñçßøåÆŒ中文日本語한국어русскийελληνικά🐱👍🏽✓★’“”…–—½²ﬁＡＢ&amp;"
  )
  return ["".join(rng.choice(alphabet, size=rng.integers(0, 120))) for _ in range(n)]
