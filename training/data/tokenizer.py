"""The tokenizer: a byte-level BPE built offline from the shards' own text, or a named one.

Two ways to get one, with the same special tokens either way:

* `build_tokenizer(texts)`: for `tiny` configs and the tests.  A byte-level BPE trained with
  `tokenizers` on the given texts (the conversations of the shards a run reads), wrapped as a
  `PreTrainedTokenizerFast`.  Nothing is downloaded.  A run saves it (`save_tokenizer`) beside
  its checkpoints, so `load_tokenizer(run_folder)` gives it back.  The same texts in the same
  order give the same vocabulary and ids: the trainer breaks ties between equally frequent
  merges by the pair itself, not by hash order (checked by the tests across processes).
  FiFa text is templated, so the vocabulary stops well short of `vocab_size` (about 1.3 k
  tokens on the bundled sample's shards, whatever is asked).
* `load_tokenizer(path_or_id)`: a folder a run saved, a local checkpoint of a base LLM, or a
  Hub id (real runs; never in tests).  Special tokens the base tokenizer lacks are added, as
  LISA and GLaMM do; the caller then grows the LM's embeddings to `len(tokenizer)`.

Special tokens (`SPECIAL_TOKENS`), each one id that the text never splits:

    <image>   the image; `training.data.fifa.encode_conversation` expands it to the vision
              encoder's patch count
    [SEG]     one per mask in an answer; the model predicts it, and the hidden state that
              predicts it becomes the mask query
    <p> </p>  around a grounded phrase: "The <p> left upper lip </p> [SEG] looks ..."
    <bbox>    the box a question asks about; the box encoder writes its features here
    <video>   a video (FaceInstruct); expanded to frames x tokens per frame of `<image>` ids

plus `<pad>`, `<s>` (bos), `</s>` (eos) and `<unk>` (`PAD`, `BOS`, `EOS`, `UNK`).

Byte-level BPE round-trips any text exactly (accents, "ΔL", "×", newlines).  A space before
a special token stays its own token ("inside <bbox>" -> "Ġinside", "Ġ", "<bbox>"), so code
must not assume a fixed offset around special tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BOS", "EOS", "IMAGE", "PAD", "SEG", "SPECIAL_TOKENS", "UNK", "VIDEO", "build_tokenizer", "load_tokenizer",
           "save_tokenizer"]

IMAGE, SEG, P_OPEN, P_CLOSE, BBOX, VIDEO = "<image>", "[SEG]", "<p>", "</p>", "<bbox>", "<video>"
SPECIAL_TOKENS = (IMAGE, SEG, P_OPEN, P_CLOSE, BBOX, VIDEO)
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# The built tokenizer's first ids, in this order: <pad> 0, <s> 1, </s> 2, <unk> 3, <image> 4, ...
_BUILT_SPECIALS = (PAD, BOS, EOS, UNK, *SPECIAL_TOKENS)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A byte-level BPE trained on `texts`, as a `PreTrainedTokenizerFast` with bos/eos/pad/unk
    set and every one of `SPECIAL_TOKENS` a single id.  `tok(text)` adds no bos: the chat
    template (`encode_conversation`) places bos and eos itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(_BUILT_SPECIALS):
        raise ValueError(f"vocab_size must hold the 256 bytes and {len(_BUILT_SPECIALS)} special tokens")
    # The special tokens are never split nor merged across: the pre-tokenizer sees the text
    # between them only (they are added tokens of the model, matched before BPE).
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(_BUILT_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_strip_specials(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, extra_special_tokens=list(SPECIAL_TOKENS),
                                   padding_side="right", model_max_length=1 << 20)


def _strip_specials(texts: Iterable[str]) -> Iterable[str]:
    """The pieces of each text between its special tokens, as the tokenizer will see them (it
    matches the special tokens first), so no merge learns a part of one ("<p", "SEG")."""
    for text in texts:
        yield from (piece for piece in _SPECIALS_RE.split(text) if piece)


_SPECIALS_RE = re.compile("|".join(re.escape(t) for t in _BUILT_SPECIALS))


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> Path:
    """Write the tokenizer (tokenizer.json + its config) into `folder`; `load_tokenizer`
    reads it back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def load_tokenizer(path_or_id: str | os.PathLike, *, local_files_only: bool | None = None):
    """A saved or named tokenizer with `SPECIAL_TOKENS` present: a folder (`save_tokenizer`'s,
    or a local base-LLM checkpoint) or a Hub id (real runs only).  Tokens it lacks are added
    as special tokens, and a pad token is added when it has none; the caller grows the LM's
    embeddings to `len(tokenizer)`.  A path that exists is read with `local_files_only`, so
    nothing is fetched for it."""
    from transformers import AutoTokenizer

    if local_files_only is None:
        local_files_only = Path(path_or_id).exists()
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), local_files_only=local_files_only)
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()
               or t not in tokenizer.all_special_tokens]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    return tokenizer
