"""Conversations -> token ids and labels, the same for every model that reads text.

**Chat template** (`encode_conversation`), Vicuna-v1 style, one `USER`/`ASSISTANT` exchange
per turn pair, bos first, eos after each answer::

    <s>USER: <image>\\nIs this face real?\\nASSISTANT: The image shows signs of forgery; it is fake.</s>

The pieces are tokenised one by one (prompt pieces, then each answer), so the boundary
between what is masked and what is learnt is exact.  Labels are -100 everywhere but on the
answers and their eos.  The visual placeholders become runs of the `<image>` id as long as
the vision side's token count: `<image>` -> `num_image_tokens` copies (e.g. (224/16)² =
196), `<video>` -> `num_video_tokens` copies (frames x tokens per frame), so `input_ids`
line up with the sequence the LM sees and a model splices its visual features into every
`<image>` position.  `[SEG]` stays one token inside the answer: it is predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from training.data.tokenizer import EOS, IMAGE, VIDEO

IGNORE_INDEX = -100


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_conversation(tokenizer, conversations: Sequence[Mapping[str, str]], num_image_tokens: int,
                        num_video_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) of a LLaVA-style conversation ([{"from": "human"|"gpt", "value"}]),
    in the template of the module docstring: labels are the ids on each answer and its eos,
    -100 elsewhere; each `<image>` id becomes `num_image_tokens` copies of itself, each
    `<video>` `num_video_tokens` copies of the `<image>` id (a ValueError when not given)."""
    if num_image_tokens < 1:
        raise ValueError("num_image_tokens must be at least 1")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO)
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    for turn in conversations:
        role, value = turn["from"], turn["value"]
        if role == "human":
            prompt = []
            for token in _encode(tokenizer, f"USER: {value}\nASSISTANT: "):
                if token == image_id:
                    prompt.extend([image_id] * num_image_tokens)
                elif token == video_id:
                    if not num_video_tokens:
                        raise ValueError("a <video> in the prompt, and no num_video_tokens")
                    prompt.extend([image_id] * num_video_tokens)
                else:
                    prompt.append(token)
            ids += prompt
            labels += [IGNORE_INDEX] * len(prompt)
        elif role == "gpt":
            answer = _encode(tokenizer, value) + [eos_id]
            ids += answer
            labels += answer
        else:
            raise ValueError(f"unknown role {role!r} (expected 'human' or 'gpt')")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def seg_positions(input_ids: torch.Tensor, seg_id: int) -> torch.Tensor:
    """Positions p of a 1-D sequence whose next token is `[SEG]` (LISA: the state that
    predicts [SEG] becomes the mask query)."""
    return torch.nonzero(input_ids[1:] == seg_id).flatten()


def prompt_ids(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The tokens before the first answer token (what a model answers by generation)."""
    answer = (labels != IGNORE_INDEX).nonzero()
    return input_ids[: int(answer[0]) if len(answer) else len(input_ids)]


def pad_tokens(sequences: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, attention_mask) of (ids, labels) pairs, right-padded with `pad_id`
    and -100."""
    length = max(len(ids) for ids, _ in sequences)
    ids_out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels_out = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, (ids, labels) in enumerate(sequences):
        n = len(ids)
        ids_out[i, :n], labels_out[i, :n], attention[i, :n] = ids, labels, 1
    return ids_out, labels_out, attention
