"""The offline tokenizer: special tokens stay whole, text round-trips, the build is
deterministic, and a saved or base tokenizer loads back with every special token."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests import REPO
from training.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_every_special_token_is_one_id_and_stays_whole(fifa_tokenizer):
    tok = fifa_tokenizer
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tok.unk_token_id not in ids
    assert {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token} == {BOS, EOS, PAD, UNK}
    named = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id]
    assert None not in named and len(set(named + ids)) == len(named) + len(ids)
    encoded = _ids(tok, "a [SEG] b <image>")
    tokens = tok.convert_ids_to_tokens(encoded)
    assert tokens.count("[SEG]") == 1 and tokens.count("<image>") == 1
    assert encoded.count(tok.convert_tokens_to_ids("[SEG]")) == 1
    for token, token_id in zip(SPECIAL_TOKENS, ids, strict=True):
        for text in (token, f"x{token}y", f"the {token} and {token}."):  # glued to words too
            got = _ids(tok, text)
            assert got.count(token_id) == text.count(token), (text, tok.convert_ids_to_tokens(got))
    # no merge learnt a piece of a special token
    pieces = [t for t in tok.get_vocab() if t not in tok.all_special_tokens]
    assert not [t for t in pieces if "SEG" in t or "bbox" in t or ("image" in t and "<" in t)]
    assert "[SEG]" in tok.all_special_tokens and "<bbox>" in tok.all_special_tokens


def test_text_round_trips_exactly(fifa_tokenizer, fifa_texts):
    tok = fifa_tokenizer
    odd = "The <p> Right Iris </p> [SEG] is lighter (ΔL +16.8) × 2,\n  inside <bbox>. Ünïcödé 🙂"
    for text in [odd, *fifa_texts]:
        assert tok.decode(_ids(tok, text)) == text
    assert "[SEG]" in tok.decode(_ids(tok, "[SEG]"))


def test_the_build_is_deterministic_within_and_across_processes(fifa_texts, tmp_path):
    first, second = build_tokenizer(fifa_texts), build_tokenizer(fifa_texts)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert first.get_vocab() == second.get_vocab()
    sample = fifa_texts[len(fifa_texts) // 2]
    assert _ids(first, sample) == _ids(second, sample)
    # Another process hashes with other seeds: the vocabulary must not depend on them.
    (tmp_path / "texts.json").write_text(json.dumps(fifa_texts))
    script = ("import hashlib, json, sys\n"
              "from training.data.tokenizer import build_tokenizer\n"
              "tok = build_tokenizer(json.load(open(sys.argv[1])))\n"
              "print(hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest())\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "texts.json")], cwd=REPO,
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert result.stdout.split()[-1] == hashlib.sha256(first.backend_tokenizer.to_str().encode()).hexdigest()


def test_vocab_size_caps_the_vocabulary(fifa_texts):
    small = build_tokenizer(fifa_texts, vocab_size=300)
    assert len(small) <= 300
    assert small.decode(_ids(small, fifa_texts[0])) == fifa_texts[0]
    with pytest.raises(ValueError):
        build_tokenizer(fifa_texts, vocab_size=100)


def test_a_saved_tokenizer_loads_back_the_same(fifa_tokenizer, fifa_texts, tmp_path):
    folder = save_tokenizer(fifa_tokenizer, tmp_path / "tok")
    loaded = load_tokenizer(folder)
    assert len(loaded) == len(fifa_tokenizer)
    assert loaded.get_vocab() == fifa_tokenizer.get_vocab()
    assert loaded.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == fifa_tokenizer.convert_tokens_to_ids(
        list(SPECIAL_TOKENS))
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        fifa_tokenizer.bos_token_id, fifa_tokenizer.eos_token_id, fifa_tokenizer.pad_token_id)
    for text in fifa_texts[:50]:
        assert _ids(loaded, text) == _ids(fifa_tokenizer, text)


def test_a_base_tokenizer_gets_the_missing_special_tokens(fifa_texts, tmp_path):
    """What a real run does with a base LLM's tokenizer (a local folder here: nothing is
    downloaded): the FiFa tokens and a pad token are added, each one id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(fifa_texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "</s>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                             show_progress=False))
    base = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>")
    base.save_pretrained(str(tmp_path / "base"))
    assert len(_ids(base, "[SEG]")) > 1  # the base splits it

    tok = load_tokenizer(tmp_path / "base")
    assert len(tok) == len(base) + len(SPECIAL_TOKENS) + 1  # + the pad token
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    for token in SPECIAL_TOKENS:
        assert _ids(tok, f"a {token} b").count(tok.convert_tokens_to_ids(token)) == 1
    again = save_tokenizer(tok, tmp_path / "grown")
    assert load_tokenizer(again).get_vocab() == tok.get_vocab()  # nothing more to add
