"""Data: grain pipelines, sources (built-in, tfds, ArrayRecord), transforms and tokenizers.

Training (the trainer):

    from contrastive import data
    it = data.make_pipeline(config.data, split="train", mesh=mesh)     # per-process batches
    batch = data.to_global(next(it), mesh)          # dict of global jax.Arrays, P(("data","fsdp"))
    it.num_skipped                                  # bad records dropped so far (this process)
    # checkpoint it with the model: grain.checkpoint.CheckpointSave(it) / CheckpointRestore(it)

Evaluation (the evaluator): `make_pipeline(config.data, split=..., training=False)` reads the
split once, in order, unaugmented; every process yields `it.num_batches` batches, the last ones
padded with `mask` False. For the built-in dataset, `split="test"` adds `meaning_id` and
`heldout` (and with `hard_negatives=True` the tokenized negatives); `split="shape"|"colour"|
"count"` are the zero-shot views (`label`), whose class names and prompt templates come from
`labelled_views()`; tokenize prompts with `tokenize(it.tokenizer, texts, max_len)`. Raw records
(captions as text) are `make_source(config.data, split=...)[i]`.

Batch keys (per process, leading dimension `b = batch_size // process_count`):
  image     float32 [b, H, W, 3]   normalized (data.normalization)
  text      int32   [b, max_len]   0 = padding, then the end-of-text id after the tokens
  mask      bool    [b]            False only on padding rows of a finite stream
  index     int32   [b]            position of the record in its source
  label     int32   [b]            data.label_key, or the built-in view's class (-1 elsewhere)
  meaning_id int32  [b]            built-in: canonical meaning (same meaning = correct retrieval)
  heldout   bool    [b]            built-in: shows a held-out (colour, shape) pair
  num_objects int32 [b]            built-in: 1..3
  hard_negatives      int32 [b, 3, max_len]  built-in, with data.hard_negatives: attribute swap,
  hard_negatives_mask bool  [b, 3]           relation swap, attribute change; mask False = none

Config (`config.data`, defaults in `default_config()`): source ("synthetic" | "tfds" |
"arrayrecord" | "xor"), train_split ("train"), eval_split ("test"), image_key ("image"), text_key
("caption"), label_key (None), image_size (64), batch_size (256, GLOBAL), tokenizer ("bytes" |
"words" | "*.model" | "*.json"), max_len (128), num_workers (0), worker_buffer_size (2),
read_threads (1), read_buffer_size (64), seed (0), shuffle (True), normalization ("clip" |
"inception" | "unit"), random_resized_crop (False), crop_scale ((0.9, 1.0)), flip (False),
text_delete_prob (0.0), text_mask_prob (0.0), hard_negatives (False), and per-source blocks:
synthetic (seed 0, train_size 100_000, test_size 2_000, view_size 1_000, num_heldout 8,
min_objects 1, max_objects 3), tfds (name, data_dir), arrayrecord (path), xor (seed 0,
train_size 100_000, test_size 2_000, bits 4, xor_prob 1.0, noise 0.0, jitter False, tokens ()).

Source "xor" (`contrastive.data.xor`, Symile's higher-order construction) has three
modalities instead of image and text: batch keys `a`, `b`, `c` (float32 [b, H, W, 3] images,
or int32 [b, max_len] for those in `xor.tokens`), the bits they show `a_bits`, `b_bits`,
`c_bits` int32 [b, bits] (c = a XOR b), `mask` and `index`; name the towers `a`, `b`, `c`.

Datasets from your own files: `python -m contrastive.data.build --help`.
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
from contrastive.data.sharding import batch_sharding
from contrastive.data.sharding import to_global
from contrastive.data.sources import SOURCES
from contrastive.data.sources import Source
from contrastive.data.sources import iter_captions
from contrastive.data.sources import make_source
from contrastive.data.synthetic import COLOURS
from contrastive.data.synthetic import HARD_NEGATIVE_KINDS
from contrastive.data.synthetic import SHAPES
from contrastive.data.synthetic import LabelledView
from contrastive.data.synthetic import ShapesSource
from contrastive.data.synthetic import labelled_views
from contrastive.data.tokenizers import TOKENIZERS
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
  "COLOURS",
  "HARD_NEGATIVE_KINDS",
  "NORMALIZATIONS",
  "SHAPES",
  "SOURCES",
  "TOKENIZERS",
  "ByteTokenizer",
  "DataIterator",
  "ExampleTransform",
  "HFTokenizer",
  "ImageTextSource",
  "LabelledView",
  "SentencePieceTokenizer",
  "ShapesSource",
  "Source",
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
