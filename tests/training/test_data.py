"""FiFa-Instruct shards -> tensors, on real shards the pipeline wrote (`fifa_shards`)."""

from __future__ import annotations

import random
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from schemas.fifa import CATEGORIES
from schemas.masks import mask_area
from training.data import (
    CLIP_MEAN,
    CLIP_STD,
    IGNORE_INDEX,
    FifaSamples,
    MixedSamples,
    collate,
    encode_conversation,
    open_shards,
    open_table,
    seg_positions,
    worker_init_fn,
)

S, M, N_IMAGE = 224, 128, 196


@pytest.fixture(scope="module")
def shards(fifa_shards):
    return open_shards(fifa_shards)


@pytest.fixture(scope="module")
def examples(shards, fifa_tokenizer):
    return FifaSamples(shards, image_size=S, mask_size=M, tokenizer=fifa_tokenizer, num_image_tokens=N_IMAGE)


def _sample(shards, examples, i) -> tuple[dict, dict]:
    """(the shard row, its sample) behind example i, read the plain way."""
    row = shards[int(examples.rows[i])]
    return row, row["samples"][int(examples.subs[i])]


def _first(examples, shards, predicate) -> int:
    return next(i for i in range(len(examples)) if predicate(*_sample(shards, examples, i)))


# --------------------------------------------------------------------------- reading
def test_the_index_holds_every_sample_and_decodes_no_image(shards, fifa_shards, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded to build the index")

    monkeypatch.setattr(Image, "open", refuse)
    examples = FifaSamples(shards)
    monkeypatch.undo()
    assert len(examples) == sum(len(samples) for samples in shards["samples"]) == 108
    ids = [sample["sample_id"] for samples in shards["samples"] for sample in samples]
    assert [_sample(shards, examples, i)[1]["sample_id"] for i in range(len(examples))] == ids
    monkeypatch.setattr(Image, "open", refuse)
    assert len(FifaSamples(fifa_shards, tasks=["i_loc", "b_loc"])) == sum(
        s["task"] in ("i_loc", "b_loc") for samples in shards["samples"] for s in samples)


def test_the_shards_are_mapped_not_loaded(fifa_shards):
    import pyarrow as pa

    before = pa.total_allocated_bytes()
    table = open_table(fifa_shards)
    dataset = open_shards(fifa_shards)
    assert table.nbytes > 2_000_000  # the crops' PNGs
    assert pa.total_allocated_bytes() - before < 1_000_000  # their buffers are the files' maps
    assert table.num_rows == dataset.num_rows == 12
    assert FifaSamples(table)[7]["sample_id"] == FifaSamples(dataset)[7]["sample_id"]
    # a slice of the table (its arrays keep an offset) indexes and filters its own rows
    part = table.slice(3, 5)
    want = [s["sample_id"] for row in part.column("samples").to_pylist() for s in row if s["task"] in ("det", "i_loc")]
    sliced = FifaSamples(part, tasks=["det", "i_loc"], image_size=32, mask_size=8)
    assert [sliced[i]["sample_id"] for i in range(len(sliced))] == want


def test_without_datasets_the_shards_are_read_by_pyarrow(fifa_shards, shards, monkeypatch):
    """GPU images often lack `datasets`: a spec then goes through `open_table`."""
    import pickle
    import sys

    want = [FifaSamples(shards)[i]["sample_id"] for i in (0, 50, 107)]
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(ImportError):
        open_shards(fifa_shards)
    examples = FifaSamples(fifa_shards)
    assert [examples[i]["sample_id"] for i in (0, 50, 107)] == want
    # a spawned worker gets the spec, not a copy of the table, and maps the files again
    data = pickle.dumps(examples)
    assert len(data) < 100_000
    assert pickle.loads(data)[50]["sample_id"] == want[1]


def test_a_hub_export_folder_reads_the_same(fifa_shards, shards, tmp_path):
    from build_tools.publish.export import export_for_hub

    export_for_hub(fifa_shards, tmp_path / "hub", progress=False)
    assert min(p.name for p in (tmp_path / "hub" / "data" / "default").iterdir()).startswith("train-")
    from_parquet = open_shards(tmp_path / "hub", cache_dir=tmp_path / "cache")
    table = open_table(tmp_path / "hub")
    want = sorted(s["sample_id"] for samples in shards["samples"] for s in samples)
    for source in (from_parquet, table):
        examples = FifaSamples(source)
        assert sorted(examples[i]["sample_id"] for i in range(len(examples))) == want
    with pytest.raises(KeyError):
        open_shards(fifa_shards, split="validation")


def test_an_example_holds_the_crop_and_its_labels(examples, shards):
    i = _first(examples, shards, lambda row, s: s["bbox"] and s["masks"])
    row, sample = _sample(shards, examples, i)
    item = examples[i]
    pixels = item["pixel_values"]
    assert pixels.shape == (3, S, S) and pixels.dtype == torch.float32
    # undo the CLIP normalisation: the crop, resized
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    rgb = (pixels * std + mean).permute(1, 2, 0).numpy()
    crop = row["image"].convert("RGB")  # datasets decodes the PNG
    width, height = crop.size
    want = np.asarray(crop.resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    assert np.abs(rgb - want).max() < 1e-4
    assert item["is_fake"] == int(row["is_fake"]) and item["task"] == sample["task"]
    assert item["category"] == (CATEGORIES.index(row["category"]) if row["is_fake"] else -1)
    assert item["concepts"] == sample["concepts"] and item["sample_id"] == sample["sample_id"]
    assert item["conversations"] == [{"from": t["from"], "value": t["value"]} for t in sample["conversations"]]
    x0, y0, x1, y1 = sample["bbox"]
    assert item["bbox"].tolist() == pytest.approx([x0 * S / width, y0 * S / height, x1 * S / width, y1 * S / height])
    no_box = _first(examples, shards, lambda row, s: s["bbox"] is None)
    assert examples[no_box]["bbox"] is None
    real = _first(examples, shards, lambda row, s: not row["is_fake"])
    assert examples[real]["category"] == -1 and examples[real]["is_fake"] == 0


def test_one_mask_per_seg_with_the_rle_area(examples, shards):
    resized, expected, checked = 0, 0.0, 0
    for i in range(len(examples)):
        _, sample = _sample(shards, examples, i)
        item = examples[i]
        answer = sample["conversations"][-1]["value"]
        assert item["masks"].shape == (answer.count("[SEG]"), M, M) and item["masks"].dtype == torch.bool
        assert len(sample["masks"]) == answer.count("[SEG]")
        assert item["region_masks"].shape == (len(sample["region_masks"]), M, M)
        for mask, rle in zip(item["masks"], sample["masks"], strict=True):
            h, w = rle["size"]
            want = mask_area(rle) * M * M / (h * w)
            got = int(mask.sum())
            if want > 400:  # large enough that the nearest-pixel edges stay small
                assert abs(got - want) <= 0.1 * want
            resized, expected, checked = resized + got, expected + want, checked + 1
    assert checked > 20
    assert resized == pytest.approx(expected, rel=0.05)  # the edges' errors cancel over many masks


# --------------------------------------------------------------------------- tokens and labels
def test_labels_are_the_answer_and_the_image_is_expanded(examples, shards, fifa_tokenizer):
    tok = fifa_tokenizer
    image_id, seg_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("[SEG]")
    for i in range(0, len(examples), 7):
        _, sample = _sample(shards, examples, i)
        item = examples[i]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.shape == labels.shape and ids.dtype == labels.dtype == torch.long
        learnt = labels != IGNORE_INDEX
        assert torch.equal(labels[learnt], ids[learnt])  # labels are the ids where they are not -100
        human, answer = (t["value"] for t in sample["conversations"])
        assert tok.decode(labels[learnt]) == answer + tok.eos_token
        # -100 exactly on bos + the prompt: the learnt part is one run at the end
        start = int(learnt.nonzero()[0])
        assert learnt[start:].all() and not learnt[:start].any()
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        # one <image> became N_IMAGE ids in a row, the rest of the prompt is the template
        where = (ids == image_id).nonzero().flatten()
        assert len(where) == N_IMAGE == human.count("<image>") * N_IMAGE
        assert torch.equal(where, torch.arange(int(where[0]), int(where[0]) + N_IMAGE))
        prompt = torch.cat([ids[1:int(where[0]) + 1], ids[int(where[-1]) + 1:start]])
        assert tok.decode(prompt) == f"USER: {human}\nASSISTANT: "
        # [SEG] is learnt, one id per mask
        assert int((ids[learnt] == seg_id).sum()) == answer.count("[SEG]") == len(item["masks"])


def test_several_turns_learn_every_answer(fifa_tokenizer):
    tok = fifa_tokenizer
    turns = [{"from": "human", "value": "<image>\nIs it real?"}, {"from": "gpt", "value": "It is fake."},
             {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "Here: [SEG]."}]
    ids, labels = encode_conversation(tok, turns, num_image_tokens=4)
    learnt = labels != IGNORE_INDEX
    assert tok.decode(labels[learnt]) == f"It is fake.{tok.eos_token}Here: [SEG].{tok.eos_token}"
    assert tok.decode(ids) == (f"{tok.bos_token}USER: {'<image>' * 4}\nIs it real?\nASSISTANT: It is fake."
                               f"{tok.eos_token}USER: Where?\nASSISTANT: Here: [SEG].{tok.eos_token}")
    with pytest.raises(ValueError):
        encode_conversation(tok, [{"from": "system", "value": "x"}], 4)


def test_seg_positions_point_at_the_state_that_predicts_seg(examples, shards, fifa_tokenizer):
    seg_id = fifa_tokenizer.convert_tokens_to_ids("[SEG]")
    i = _first(examples, shards, lambda row, s: len(s["masks"]) > 2)
    item = examples[i]
    positions = item["seg_positions"]
    assert len(positions) == len(item["masks"]) > 2
    assert (item["input_ids"][positions + 1] == seg_id).all()
    assert int((item["input_ids"] == seg_id).sum()) == len(positions)
    assert (item["labels"][positions + 1] == seg_id).all()  # [SEG] is a learnt target
    assert torch.equal(seg_positions(torch.tensor([7, seg_id, 3, 7, seg_id]), seg_id), torch.tensor([0, 3]))


def test_collate_pads_and_keeps_masks_per_sample(examples, shards, fifa_tokenizer):
    tok = fifa_tokenizer
    seg_id = tok.convert_tokens_to_ids("[SEG]")
    picks = [_first(examples, shards, lambda row, s: s["task"] == "det"),
             _first(examples, shards, lambda row, s: len(s["masks"]) > 2),
             _first(examples, shards, lambda row, s: s["task"] == "b_loc" and s["masks"])]
    items = [examples[i] for i in picks]
    batch = collate(items, pad_id=tok.pad_token_id)
    again = collate(items, pad_id=tok.pad_token_id, seg_id=seg_id)
    lengths = [len(item["input_ids"]) for item in items]
    assert len(set(lengths)) > 1
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, max(lengths))
    for row, (item, n) in enumerate(zip(items, lengths, strict=True)):
        assert torch.equal(batch["input_ids"][row, :n], item["input_ids"])
        assert torch.equal(batch["labels"][row, :n], item["labels"])
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["masks"][row] is item["masks"]
        assert torch.equal(batch["seg_positions"][row], item["seg_positions"])
        assert torch.equal(again["seg_positions"][row], item["seg_positions"])
        assert (batch["input_ids"][row][batch["seg_positions"][row] + 1] == seg_id).all()
    assert batch["pixel_values"].shape == (3, 3, S, S)
    assert [len(m) for m in batch["masks"]] == [0, len(items[1]["masks"]), 1]
    assert batch["has_bbox"].tolist() == [False, False, True]
    assert torch.equal(batch["bbox"][2], items[2]["bbox"]) and not batch["bbox"][0].any()
    assert batch["is_fake"].dtype == batch["category"].dtype == torch.long
    assert batch["task"] == [item["task"] for item in items]


def test_a_dataloader_batches_the_examples(examples, fifa_tokenizer):
    loader = torch.utils.data.DataLoader(examples, batch_size=4, shuffle=False,
                                         collate_fn=partial(collate, pad_id=fifa_tokenizer.pad_token_id))
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 3, S, S) and len(batch["masks"]) == 4


# --------------------------------------------------------------------------- mixing and workers
class _Numbers(torch.utils.data.Dataset):
    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"name": self.name, "i": i}


def test_the_mixture_follows_its_weights_and_its_seed():
    sources = [_Numbers("a", 30), _Numbers("b", 500), _Numbers("c", 7)]
    weights = [0.6, 0.3, 0.1]
    mixed = MixedSamples(sources, weights, seed=3, length=2000)
    draws = [mixed[i] for i in range(len(mixed))]
    share = np.bincount([d["source"] for d in draws], minlength=3) / len(draws)
    assert np.abs(share - weights).max() < 0.05
    assert all(d["name"] == "abc"[d["source"]] for d in draws)
    # same seed, same draws; another seed, other draws
    assert [MixedSamples(sources, weights, seed=3, length=2000).locate(i) for i in range(2000)] == \
        [mixed.locate(i) for i in range(2000)]
    assert [MixedSamples(sources, weights, seed=4, length=2000).locate(i) for i in range(50)] != \
        [mixed.locate(i) for i in range(50)]
    # a small source goes round a whole permutation before it repeats an example
    small = [d["i"] for d in draws if d["source"] == 2]
    assert sorted(small[:7]) == list(range(7)) and sorted(small[7:14]) == list(range(7))
    with pytest.raises(ValueError):
        MixedSamples(sources, [1, 1])


def test_the_mixture_mixes_real_sources(fifa_shards, shards, tmp_path):
    dets = FifaSamples(shards, tasks=["det"], image_size=64, mask_size=16)
    locs = FifaSamples(fifa_shards, tasks=["i_loc", "r_loc", "b_loc"], image_size=64, mask_size=16)
    mixed = MixedSamples([dets, locs], [1, 3], seed=0, length=40)
    items = [mixed[i] for i in range(len(mixed))]
    assert {item["task"] for item in items if item["source"] == 0} == {"det"}
    assert {item["task"] for item in items if item["source"] == 1} <= {"i_loc", "r_loc", "b_loc"}
    assert collate(items[:5], pad_id=0)["source"] == [item["source"] for item in items[:5]]


class _Seeds(torch.utils.data.Dataset):
    """What each worker's RNGs give: numpy, random and torch, and torch's initial seed."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = torch.utils.data.get_worker_info()
        return {"worker": -1 if info is None else info.id, "seed": torch.initial_seed(),
                "numpy": float(np.random.random()), "random": random.random(), "torch": float(torch.rand(()))}


def test_each_worker_seeds_its_rngs_apart():
    loader = torch.utils.data.DataLoader(_Seeds(), batch_size=None, num_workers=2, worker_init_fn=worker_init_fn,
                                         generator=torch.Generator().manual_seed(0))
    first = {}
    for item in loader:
        first.setdefault(item["worker"], item)
    assert sorted(first) == [0, 1]
    a, b = first[0], first[1]
    assert a["seed"] != b["seed"]
    for key in ("numpy", "random", "torch"):
        assert a[key] != b[key], key
    for item in (a, b):  # the worker's numpy and random were seeded from torch's initial seed
        assert item["numpy"] == np.random.RandomState(item["seed"] % 2**32).random_sample()
        assert item["random"] == random.Random(item["seed"] % 2**32).random()
