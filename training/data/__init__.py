"""Shards -> tensors: the tokenizer (`tokenizer`), conversations as tokens (`text`), FiFa-Instruct
examples and batches (`fifa`), FaceInstruct ones (`faceinstruct`), self-blended images (`sbi`)."""

from training.data.fifa import (
    CLIP_MEAN,
    CLIP_STD,
    FifaSamples,
    MixedSamples,
    collate,
    conversation_texts,
    open_shards,
    open_table,
    worker_init_fn,
)
from training.data.text import IGNORE_INDEX, encode_conversation, seg_positions
from training.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, load_tokenizer, save_tokenizer

__all__ = ["CLIP_MEAN", "CLIP_STD", "IGNORE_INDEX", "SPECIAL_TOKENS", "FifaSamples", "MixedSamples", "build_tokenizer",
           "collate", "conversation_texts", "encode_conversation", "load_tokenizer", "open_shards", "open_table",
           "save_tokenizer", "seg_positions", "worker_init_fn"]
