"""Data: grain pipelines, sources (built-in, tfds, ArrayRecord, XOR), transforms and tokenizers.

    from contrastive import data
    it = data.make_pipeline(config.data, split="train", mesh=mesh)  # per-process batches
    batch = data.to_global(next(it), mesh)  # dict of global jax.Arrays, P(("data", "fsdp"))

`default_config()` lists every key of `config.data` with its default; docs/data.md describes the
batch keys, the sources (the built-in dataset is `contrastive.data.shapes`), evaluation reads,
your own datasets (`python -m contrastive.data.build --help`) and the tokenizers.
"""

from contrastive.data.config import default_config
from contrastive.data.config import resolve_config
from contrastive.data.pipeline import DataIterator
from contrastive.data.pipeline import make_pipeline
from contrastive.data.pipeline import make_tokenizer
from contrastive.data.pipeline import make_transform
from contrastive.data.records import ImageTextSource
from contrastive.data.records import decode_record
from contrastive.data.records import encode_record
from contrastive.data.shapes import COLOURS
from contrastive.data.shapes import HARD_NEGATIVE_KINDS
from contrastive.data.shapes import SHAPES
from contrastive.data.shapes import LabelledView
from contrastive.data.shapes import ShapesSource
from contrastive.data.shapes import labelled_views
from contrastive.data.sharding import batch_sharding
from contrastive.data.sharding import to_global
from contrastive.data.sources import SOURCES
from contrastive.data.sources import Source
from contrastive.data.sources import iter_captions
from contrastive.data.sources import make_source
from contrastive.data.tokenizer_specs import TOKENIZERS
from contrastive.data.tokenizers import ByteTokenizer
from contrastive.data.tokenizers import HFTokenizer
from contrastive.data.tokenizers import SentencePieceTokenizer
from contrastive.data.tokenizers import Tokenizer
from contrastive.data.tokenizers import WordTokenizer
from contrastive.data.tokenizers import detokenize
from contrastive.data.tokenizers import tokenize
from contrastive.data.tokenizers import train_bpe
from contrastive.data.transforms import NORMALIZATIONS
from contrastive.data.transforms import ExampleTransform

__all__ = [
  "ByteTokenizer",
  "COLOURS",
  "DataIterator",
  "ExampleTransform",
  "HARD_NEGATIVE_KINDS",
  "HFTokenizer",
  "ImageTextSource",
  "LabelledView",
  "NORMALIZATIONS",
  "SHAPES",
  "SOURCES",
  "SentencePieceTokenizer",
  "ShapesSource",
  "Source",
  "TOKENIZERS",
  "Tokenizer",
  "WordTokenizer",
  "batch_sharding",
  "decode_record",
  "default_config",
  "detokenize",
  "encode_record",
  "iter_captions",
  "labelled_views",
  "make_pipeline",
  "make_source",
  "make_tokenizer",
  "make_transform",
  "resolve_config",
  "to_global",
  "tokenize",
  "train_bpe",
]
