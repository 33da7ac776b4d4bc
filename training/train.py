"""Train a model of `training/models/` on FiFa-Instruct or FaceInstruct shards.

    python training/train.py --config training/configs/fifa_mllm/tiny.yaml --data OUT [--data OUT2 ...] \\
        [--weights 1,1] [--output_dir runs/NAME] [--max_steps N] [--resume] [section.key=value ...]
    torchrun --nproc_per_node G training/train.py ...        # DDP (train.strategy=fsdp for FSDP)

One loop for every model, top to bottom: config -> tokenizer -> data -> model -> optimizer
and schedule -> steps (gradient accumulation, clipping, bf16 autocast on GPU; two passes per
step under SAM) -> `metrics.jsonl` and the console -> checkpoints (safetensors, the config,
the tokenizer and the trainer state: optimizer, schedule, RNG states, data position).  What
differs per model (its data, batches, loss normalisers, tokenizer texts) is its `Recipe`
(`training/models/__init__.py`), looked up by `model.name`.

**Data order** is a function of the seed and the step alone: the examples are one stream (a
permutation of the mixture per epoch); optimizer step s, micro-batch m takes the stream's
block number s*grad_accum + m of batch_size*world examples, and rank r its r-th slice.  So a
run resumed at step k sees exactly what the uninterrupted run saw, and N processes with
batch b see what one process with batch N*b sees.

**Resume** (`--resume`): the newest checkpoint in `--output_dir`; training continues to the
new `--max_steps`; `metrics.jsonl` keeps its lines up to the checkpoint's step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import RunConfig, load_config

CHECKPOINTS = "checkpoints"


# --- setup --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--config", required=True, help="a YAML config, e.g. training/configs/fifa_mllm/tiny.yaml")
    parser.add_argument("--data", action="append", default=[],
                        help="a pipeline output folder, a Hub Parquet export folder or a Hub id (repeat to mix)")
    parser.add_argument("--weights", default=None, help="sampling weights of the --data sources, e.g. 3,1")
    parser.add_argument("--output_dir", default=None, help="where the run writes (default: the config's)")
    parser.add_argument("--max_steps", type=int, default=None, help="optimizer steps to train to")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output_dir")
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unknown argument {bad[0]} (overrides are section.key=value)")
    return args, rest


def resolve_config(args: argparse.Namespace, overrides: list[str]) -> RunConfig:
    config = load_config(args.config, overrides)
    if args.data:
        config.data.data = list(args.data)
    if args.weights:
        config.data.weights = [float(w) for w in args.weights.split(",")]
    if args.output_dir:
        config.train.output_dir = args.output_dir
    if args.max_steps is not None:
        config.train.max_steps = args.max_steps
    if not config.data.data:
        raise SystemExit("train.py: give the training data with --data (a pipeline output folder)")
    if config.data.weights and len(config.data.weights) != len(config.data.data):
        raise SystemExit(f"train.py: {len(config.data.weights)} --weights for {len(config.data.data)} --data")
    return config


class Dist:
    """The process group under torchrun (gloo on CPU, nccl on GPU), or one process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def norms(self, batch: dict, counts) -> dict[str, float]:
        """What each loss divides by: the batch's `counts(batch)` summed over the processes
        and divided by their number (`Recipe.counts`); one all-reduce per micro-batch."""
        local = counts(batch)
        if self.world == 1:
            return local
        import torch.distributed as dist

        t = torch.tensor(list(local.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(local, t.tolist(), strict=True)}

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenizer_for(config: RunConfig, out: Path, dist: Dist):
    """The config's tokenizer; else that of the `train.init_from` checkpoint; else the run's
    own (`OUT/tokenizer`, built by rank 0 from the shards' text the first time and saved, so
    a resumed run and every rank use the same); None for a model that reads no text."""
    from training.data.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer
    from training.models import recipe

    texts_of = recipe(config.model.name).texts
    if texts_of is None:
        return None
    if config.data.tokenizer:
        return load_tokenizer(config.data.tokenizer)
    if config.train.init_from:  # the weights' own tokenizer: their embedding rows are its ids
        started = checkpoint_folder(config.train.init_from) / "tokenizer"
        if started.is_dir():
            return load_tokenizer(str(started))
    folder = out / "tokenizer"
    if dist.main and not folder.is_dir():
        texts = (t for spec in config.data.data for t in texts_of(spec, config.data.split))
        save_tokenizer(build_tokenizer(texts, config.data.vocab_size), folder)
    dist.barrier()
    return load_tokenizer(str(folder))


def dataset_for(config: RunConfig, tokenizer):
    from training.data.fifa import MixedSamples
    from training.models import recipe

    make = recipe(config.model.name).dataset
    sources = [make(config, tokenizer, spec, config.data.split, True) for spec in config.data.data]
    return MixedSamples(sources, config.data.weights or None, seed=config.train.seed)


def model_for(config: RunConfig, tokenizer):
    from training.models import recipe

    return recipe(config.model.name).build(config, tokenizer)


def optimizer_for(config: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW or SGD (`train.optimizer`), inside SAM when `train.sam` (training/optim.py)."""
    t = config.train
    base, options = ((torch.optim.AdamW, {"betas": tuple(t.betas)}) if t.optimizer == "adamw"
                     else (torch.optim.SGD, {"momentum": t.momentum}))
    if t.sam:
        from training.optim import SAM

        return SAM(params, base, rho=t.sam_rho, lr=t.lr, weight_decay=t.weight_decay, **options)
    return base(params, lr=t.lr, weight_decay=t.weight_decay, **options)


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder itself, or a run folder's newest checkpoint; SystemExit naming the
    folder when there is none."""
    folder = Path(path)
    if (folder / "model.safetensors").is_file():
        return folder
    found = latest_checkpoint(folder)
    if found is None:
        raise SystemExit(f"no checkpoint in {folder} (a run folder or a checkpoints/step-N folder)")
    return found


def load_weights(model, path: str) -> Path:
    """The weights of a run folder (its newest checkpoint) or a checkpoint folder, strictly:
    `train.init_from`, e.g. Face-LLaVA's stage 2 starting from its stage-1 run."""
    folder = checkpoint_folder(path)
    load_weights_file(unwrap(model), folder / "model.safetensors")
    return folder


# --- data order ------------------------------------------------------------------------------


class StepBatches(torch.utils.data.Sampler):
    """The index lists of this rank's micro-batches from optimizer step `start` on (see the
    module: a function of the seed and the step)."""

    def __init__(self, size: int, batch: int, world: int, rank: int, accum: int, seed: int, start: int, stop: int):
        self.size, self.batch, self.world, self.rank = size, batch, world, rank
        self.accum, self.seed, self.start, self.stop = accum, seed, start, stop

    def _epoch(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0xDA7A, epoch]).permutation(self.size)

    def __iter__(self):
        block = self.batch * self.world
        cache: dict[int, np.ndarray] = {}
        for micro in range(self.start * self.accum, self.stop * self.accum):
            first = micro * block + self.rank * self.batch
            indices = []
            for pos in range(first, first + self.batch):
                epoch, offset = divmod(pos, self.size)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = self._epoch(epoch)
                indices.append(int(cache[epoch][offset]))
            yield indices

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum


# --- schedule, checkpoints -------------------------------------------------------------------


def lr_lambda(config: RunConfig):
    t = config.train

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / max(1, t.warmup_steps)
        progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if (p / "trainer_state.pt").is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, config: RunConfig, tokenizer) -> Path:
    folder = out / CHECKPOINTS / f"step-{step:07d}"
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(unwrap(model), tmp / "model.safetensors")
    config.dump(tmp / "config.yaml")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "data_position": step}, tmp / "trainer_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    kept = sorted((out / CHECKPOINTS).glob("step-*"), key=lambda p: p.name)
    for old in kept[:-config.train.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def save_weights(model, path: Path) -> None:
    """The model's weights as safetensors, each shared tensor once (a tied LM head, SAM's
    shared positional encoding): `safetensors.torch.save_model`."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights_file(model, path: Path) -> None:
    """`save_weights`' file into the model, strictly (a shared tensor's other names are
    filled by the sharing itself)."""
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True)


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> int:
    load_weights_file(unwrap(model), folder / "model.safetensors")
    state = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["random"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])


def unwrap(model):
    return getattr(model, "module", model)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            out[key] = [v.to(device) for v in value]
        else:
            out[key] = value
    return out


# --- the run --------------------------------------------------------------------------------------


def train(argv: list[str] | None = None) -> Path:
    """The recipe; returns the output folder."""
    args, overrides = parse_args(argv)
    config = resolve_config(args, overrides)
    dist = Dist()
    t = config.train
    out = Path(t.output_dir)
    resume = latest_checkpoint(out) if args.resume else None
    if args.resume and resume is None and dist.main:
        print(f"train.py: no checkpoint in {out / CHECKPOINTS}; starting from step 0", file=sys.stderr)
    if not args.resume and latest_checkpoint(out) is not None:
        raise SystemExit(f"train.py: {out} holds checkpoints: pass --resume to continue, or another --output_dir")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        config.dump(out / "config.yaml")
    dist.barrier()
    seed_everything(t.seed)
    tokenizer = tokenizer_for(config, out, dist)
    dataset = dataset_for(config, tokenizer)
    model = model_for(config, tokenizer)
    if t.init_from and not resume:
        started = load_weights(model, t.init_from)
        if dist.main:
            print(f"train.py: weights from {started}", file=sys.stderr)
    model = model.to(dist.device)
    if dist.world > 1:
        model = wrap_distributed(model, config, dist)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    start = load_checkpoint(resume, model, optimizer, scheduler) if resume else 0
    metrics_path = out / "metrics.jsonl"
    if dist.main:
        _keep_metrics_until(metrics_path, start)

    from training.data.fifa import worker_init_fn
    from training.models import recipe

    spec = recipe(config.model.name)
    sampler = StepBatches(len(dataset), t.batch_size, dist.world, dist.rank, t.grad_accum, t.seed, start, t.max_steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.data.num_workers, worker_init_fn=worker_init_fn,
        collate_fn=lambda b: spec.collate(b, tokenizer))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (t.bf16 and dist.device.type == "cuda") \
        else torch.autocast("cpu", enabled=False)
    batches = iter(loader)
    model.train()
    for step in range(start, t.max_steps):
        began = time.perf_counter()
        # SAM passes over the step's batches twice, so it keeps them (on the CPU side).
        micro_batches = [next(batches) for _ in range(t.grad_accum)] if t.sam \
            else (next(batches) for _ in range(t.grad_accum))
        sums = _accumulate(model, micro_batches, t.grad_accum, dist, spec.counts, autocast)
        if t.sam:
            # SAM: climb to the sharpest nearby point along this gradient, take the gradient
            # of the same batches there, come back and step with it.
            optimizer.first_step(zero_grad=True)
            _accumulate(model, micro_batches, t.grad_accum, dist, spec.counts, autocast)
        norm = torch.nn.utils.clip_grad_norm_(params, t.clip_grad) if t.clip_grad else None
        lr = optimizer.param_groups[0]["lr"]
        if t.sam:
            optimizer.second_step()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        seconds = time.perf_counter() - began
        record = {"step": done, **{k: dist.mean(v) for k, v in sums.items()}, "lr": lr,
                  "grad_norm": None if norm is None else float(norm),
                  "samples_per_s": t.batch_size * t.grad_accum * dist.world / seconds}
        if dist.main and (done % t.log_every == 0 or done == t.max_steps):
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            parts = " ".join(f"{k} {v:.3f}" for k, v in sums.items() if k != "loss")
            print(f"step {done}/{t.max_steps}  loss {record['loss']:.4f}  {parts}  lr {lr:.2e}  "
                  f"{record['samples_per_s']:.1f} samples/s", flush=True)
        if done % t.checkpoint_every == 0 or done == t.max_steps:
            if dist.main:
                save_checkpoint(out, done, model, optimizer, scheduler, config, tokenizer)
            dist.barrier()
    dist.close()
    return out


def _accumulate(model, micro_batches, n: int, dist: Dist, counts, autocast) -> dict[str, float]:
    """Forward and backward over the step's `n` micro-batches (gradients summed, DDP's
    all-reduce on the last one); the mean loss and loss parts."""
    sums: dict[str, float] = {}
    for micro, batch in enumerate(micro_batches):
        batch = to_device(batch, dist.device)
        sync = micro == n - 1 or dist.world == 1
        context = model.no_sync() if (not sync and hasattr(model, "no_sync")) else _nullcontext()
        with context, autocast:
            output = model(batch, dist.norms(batch, counts))
            (output.loss / n).backward()
        sums["loss"] = sums.get("loss", 0.0) + float(output.loss.detach()) / n
        for name, value in output.parts.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) / n
    return sums


def wrap_distributed(model, config: RunConfig, dist: Dist):
    if config.train.strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, device_id=dist.device if dist.device.type == "cuda" else None,
                                        use_orig_params=True)
    from torch.nn.parallel import DistributedDataParallel

    # The model lets every parameter take part in every step (FifaMLLM.forward), so no
    # search for unused ones is needed.
    return DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)


def _keep_metrics_until(path: Path, step: int) -> None:
    """A resumed run rewrites what an interrupted one logged past its checkpoint."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    train()
