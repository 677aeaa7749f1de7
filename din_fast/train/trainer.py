r"""Trainer: ``din-fast train`` / ``python -m din_fast.train`` / ``torchrun -m din_fast.train``.

Objective and optimiser (DIN journal eq. 20 and §3.5): ``L = mean |model(LR) − HR|`` over the batch,
Adam (β = (0.9, 0.999), ε = 1e-8 by default; the journal used β₂ = 0.99), learning rate ``learning_rate``
multiplied by ``gamma`` every ``step_size`` steps (``schedule="step"``) or at each of ``milestones``
(``"multistep"``), optional gradient-norm clipping, autocast (bf16 or fp16 with loss scaling) on GPU.

Run directory (``out``)::

    config.yaml        the resolved configuration (defaults ← --config file ← flags)
    last.safetensors   weights of the newest complete checkpoint (din_fast.load_model reads it)
    best.safetensors   weights with the best validation Y-PSNR so far (when validating)
    state.pt           resume state: model, optimiser, scheduler, grad scaler, step, RNG states, sampler
                       position, best PSNR, elapsed seconds; self-contained, so a kill between the two
                       writes is harmless; plain data and tensors only, read with weights_only=True
                       (din_fast.train.resume_state), so a planted state.pt cannot run code
    log.csv            step, loss (mean over the logging interval), learning rate, val PSNR, elapsed s
    plot.png           loss and validation PSNR against the step

Every file is written to a temporary name and renamed, so a run killed at any moment leaves the last
complete checkpoint. The data stream is a pure function of ``(seed, sample number)`` (din_fast.train.data),
so ``--resume`` continues exactly where the checkpoint was taken: on CPU with a fixed seed a resumed
run reaches the same weights as an uninterrupted one.

Fine-tuning: ``--init WEIGHTS`` starts a new run from a din_fast weights file of the same model,
copying every tensor whose name and shape match (an x2 model's body for an x3 or x4 run: only the
upsampler and output layers that differ keep their seeded initialisation). ``--resume`` ignores it.

Distributed: under torchrun (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel (NCCL
on GPU, gloo on CPU); ``batch`` is the per-process batch, rank ``r`` takes the ``r``-th chunk of each
global batch (``StepSampler``), the logged loss is the mean over all ranks, and only rank 0 validates,
logs and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from din_fast.inference.metrics import psnr, quantize
from din_fast.io.atomic import atomic_path
from din_fast.models.blocks import SRModel
from din_fast.models.native import save_model
from din_fast.models.registry import create_model
from din_fast.train.data import DEFAULT_CACHE_BYTES, SRDataset, StepSampler, load_validation_pairs
from din_fast.train.resume_state import STATE_FORMAT, load_state, rng_state, save_state, set_rng_state

__all__ = ["TrainConfig", "TrainResult", "train", "init_from", "load_config", "add_arguments", "config_from_args",
           "main"]

SCHEDULES = ("none", "step", "multistep")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Everything that defines a training run (the fields of config.yaml; flags use dashes)."""

    model: str = "din"
    scale: int = 4
    hr: str | None = None          # HR (target) image folder
    lr: str | None = None          # LR (input) folder; None: degrade HR on the fly
    val: str | None = None         # validation HR folder
    val_lr: str | None = None      # validation LR folder; None: degrade the validation HR
    out: str | None = None         # run directory
    degradation: str = "BI"        # BI | BD | DN
    noise_sigma: float = 30.0      # DN noise std, 0-255 scale
    steps: int = 1000              # total optimiser steps (a resumed run continues up to this)
    batch: int = 16                # per-process batch
    patch: int = 48                # LR patch side
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "step"         # none | step | multistep
    step_size: int = 200_000
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    grad_clip: float | None = None  # max gradient norm
    amp: bool = False
    amp_dtype: str = "bf16"        # bf16 | fp16
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 100
    workers: int = 2
    cache_gb: float = DEFAULT_CACHE_BYTES / 2**30
    augment: bool = True
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    model_args: dict[str, Any] = field(default_factory=dict)
    init: str | None = None        # din_fast weights file to start from (fine-tuning; not on --resume)
    resume: bool = False

    def validate(self) -> None:
        """Raise ValueError for a configuration that cannot run (missing folders, bad numbers)."""
        if not self.hr:
            raise ValueError("the HR (target) image folder is required (--hr)")
        if not self.out:
            raise ValueError("the run directory is required (--out)")
        for name in ("steps", "batch", "patch", "scale", "step_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("val_every", "ckpt_every", "workers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (self.learning_rate > 0 and self.eps > 0 and self.gamma > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate, eps and gamma must be positive and weight_decay non-negative")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}; got {self.amp_dtype!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip!r}")


@dataclass
class TrainResult:
    """What ``train`` returns: the trained (unwrapped) model and where the run stands."""

    model: SRModel
    step: int
    loss: float | None
    best_psnr: float | None
    run_dir: Path


# ------------------------------------------------------------------------------------- configuration
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Normalise a value read from YAML/JSON or a flag to the field's type."""
    if value is None:
        return None
    if name == "betas":
        return tuple(float(b) for b in value)
    if name == "milestones":
        return [int(m) for m in value]
    if name == "model_args":
        if not isinstance(value, dict):
            raise ValueError(f"model_args must be a mapping, got {value!r}")
        return dict(value)
    default = _FIELDS[name].default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) or name == "grad_clip":
        return float(value)
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON configuration file into a dict of TrainConfig fields (dashes allowed)."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ValueError(f"{path}: unknown option {key!r}; known: {', '.join(sorted(_FIELDS))}")
        out[name] = _coerce(name, value)
    return out


def _parse_model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the trainer's flags; unset flags stay absent so that a config file can supply them."""
    S = argparse.SUPPRESS
    a = parser.add_argument
    a("--config", default=S, help="YAML or JSON file of options (flags override it)")
    a("--model", default=S, help="registered model name (din, defian-s, din-derain, ...)")
    a("--scale", type=int, default=S, help="SR factor (1 for the restoration models)")
    a("--hr", default=S, help="folder of HR / target images")
    a("--lr", default=S, help="folder of LR / input images (default: degrade HR on the fly)")
    a("--val", default=S, help="folder of validation HR images")
    a("--val-lr", default=S, help="folder of validation LR images")
    a("--out", default=S, help="run directory")
    a("--resume", action="store_true", default=S, help="continue the run in --out from its last checkpoint")
    a("--init", default=S, metavar="WEIGHTS",
      help="start from this din_fast weights file: every parameter whose name and shape match is copied "
           "(e.g. an x2 model's body for x3 or x4); the rest keep their seeded initialisation")
    a("--degradation", choices=("BI", "BD", "DN"), default=S, help="on-the-fly LR degradation (BI)")
    a("--noise-sigma", type=float, default=S, help="DN noise std on the 0-255 scale (30)")
    a("--steps", type=int, default=S, help="total optimiser steps (1000)")
    a("--batch", type=int, default=S, help="batch per process (16)")
    a("--patch", type=int, default=S, help="LR patch side (48)")
    a("--learning-rate", type=float, default=S, help="Adam learning rate (1e-4)")
    a("--betas", type=float, nargs=2, default=S, metavar=("B1", "B2"), help="Adam betas (0.9 0.999)")
    a("--eps", type=float, default=S, help="Adam epsilon (1e-8)")
    a("--weight-decay", type=float, default=S, help="Adam weight decay (0)")
    a("--schedule", choices=SCHEDULES, default=S, help="learning-rate schedule (step)")
    a("--step-size", type=int, default=S, help="steps between decays for --schedule step (200000)")
    a("--milestones", type=int, nargs="+", default=S, help="decay steps for --schedule multistep")
    a("--gamma", type=float, default=S, help="decay factor (0.5)")
    a("--grad-clip", type=float, default=S, help="clip the gradient norm to this value")
    a("--amp", action="store_true", default=S, help="mixed precision (GPU only)")
    a("--amp-dtype", choices=tuple(AMP_DTYPES), default=S, help="autocast dtype (bf16)")
    a("--val-every", type=int, default=S, help="validate every N steps (1000; 0: only at the end)")
    a("--ckpt-every", type=int, default=S, help="checkpoint every N steps (1000; 0: only at the end)")
    a("--log-every", type=int, default=S, help="log the mean loss every N steps (100)")
    a("--workers", type=int, default=S, help="DataLoader worker processes (2)")
    a("--cache-gb", type=float, default=S, help="keep decoded images in memory up to this size (8)")
    a("--no-augment", dest="augment", action="store_false", default=S, help="no flips / rotations")
    a("--seed", type=int, default=S, help="seed of the initialisation and the data stream (0)")
    a("--device", default=S, help="auto, cpu, cuda or cuda:N (auto)")
    a("--model-arg", dest="model_args", action="append", type=_parse_model_arg, default=S, metavar="KEY=VALUE",
      help="model constructor override, e.g. channels=8 (repeatable)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve defaults ← saved run config (with --resume) ← --config file ← explicit flags."""
    flags = {k: v for k, v in vars(args).items() if k in _FIELDS}
    if "model_args" in flags:
        flags["model_args"] = dict(flags["model_args"])
    if "betas" in flags:
        flags["betas"] = tuple(flags["betas"])
    values: dict[str, Any] = {}
    file_values = load_config(args.config) if getattr(args, "config", None) else {}
    out = flags.get("out", file_values.get("out"))
    if flags.get("resume", file_values.get("resume", False)):
        if not out:
            raise ValueError("--resume needs the run directory (--out)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"nothing to resume: {saved} does not exist")
        values.update(load_config(saved))
    values.update(file_values)
    values.update(flags)
    config = TrainConfig(**values)
    config.validate()
    return config


# ---------------------------------------------------------------------------------------- helpers
def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_from(model: SRModel, path: str | os.PathLike) -> list[str]:
    """Copy into ``model`` every tensor of the din_fast weights file ``path`` whose name and shape match
    (same model family; the scale may differ). Returns the names of ``model``'s tensors left as they were.

    Raises:
        ValueError: ``path`` is for another model, or no tensor matches.
    """
    from din_fast.models.native import load_model

    source = load_model(str(path))
    if source.model_name != model.model_name:
        raise ValueError(f"--init {path}: weights of {source.model_name}, but this run trains {model.model_name}")
    theirs, ours = source.state_dict(), model.state_dict()
    matched = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if not matched:
        raise ValueError(f"--init {path}: no tensor matches {model.model_name} x{model.scale} {model.config}")
    model.load_state_dict(matched, strict=False)
    return sorted(ours.keys() - matched.keys())


def _model_identity(model: SRModel) -> dict[str, Any]:
    return {"name": model.model_name, "scale": model.scale, "config": model.config}


class _Log:
    """log.csv (append, truncated to the resumed step) and plot.png; rank 0 only."""

    COLUMNS = ("step", "loss", "learning_rate", "val_psnr", "elapsed_s")

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.path, self.plot_path = run_dir / "log.csv", run_dir / "plot.png"
        rows = []
        if start_step > 0 and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.rows = rows

    def write(self, step: int, loss: float | None, learning_rate: float, val_psnr: float | None, elapsed: float) -> None:
        row = {"step": step, "loss": "" if loss is None else repr(loss), "learning_rate": repr(learning_rate),
               "val_psnr": "" if val_psnr is None else repr(val_psnr), "elapsed_s": f"{elapsed:.3f}"}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.COLUMNS).writerow(row)
        self.rows.append({k: str(v) for k, v in row.items()})

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        loss = [(int(r["step"]), float(r["loss"])) for r in self.rows if r["loss"]]
        val = [(int(r["step"]), float(r["val_psnr"])) for r in self.rows if r["val_psnr"]]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        if loss:
            axes[0].plot(*zip(*loss))
        axes[0].set(xlabel="step", ylabel="L1 loss", title="training loss")
        if val:
            axes[1].plot(*zip(*val), marker="o")
        axes[1].set(xlabel="step", ylabel="Y-PSNR (dB)", title="validation")
        fig.tight_layout()
        with atomic_path(self.plot_path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)


@torch.no_grad()
def validate(model: SRModel, pairs: list[tuple[str, torch.Tensor, np.ndarray]], device: torch.device,
             autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Mean Y-PSNR (din_fast.inference.metrics.psnr, border ``scale`` cropped, none at scale 1) over whole
    images."""
    was_training = model.training
    model.eval()
    values = []
    for _, lr, hr in pairs:
        with autocast if autocast is not None else contextlib.nullcontext():
            sr = model(lr.to(device))
        values.append(psnr(quantize(sr.float()), hr, crop_border=model.scale if model.scale > 1 else 0))
    model.train(was_training)
    return float(np.mean(values))


# -------------------------------------------------------------------------------------------- train
def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) the training described by ``config``; see the module doc. Returns on rank 0 and
    on every other rank with that rank's model (identical weights under DDP)."""
    config.validate()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(config.device, local_rank)
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(config, device, rank, world_size)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, device: torch.device, rank: int, world_size: int) -> TrainResult:
    main_rank = rank == 0
    run_dir = Path(config.out)
    state_path = run_dir / "state.pt"
    if config.amp and device.type != "cuda":
        raise ValueError("--amp (mixed precision) needs a CUDA device")
    if not config.resume and state_path.exists():
        raise ValueError(f"{run_dir} already holds a run (state.pt); pass --resume or choose another --out")
    if config.resume and not state_path.is_file():
        raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")

    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = create_model(config.model, config.scale, **config.model_args)
    if config.init and not config.resume:
        kept = init_from(model, config.init)
        if main_rank and kept:
            print(f"din-fast train: --init {config.init}: {len(kept)} tensor(s) keep their initialisation "
                  f"({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})", file=sys.stderr)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=tuple(config.betas),
                                 eps=config.eps, weight_decay=config.weight_decay)
    if config.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
    elif config.schedule == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones, config.gamma)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    amp_dtype = AMP_DTYPES[config.amp_dtype]
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and amp_dtype == torch.float16)

    step, best_psnr, global_batch = 0, None, config.batch * world_size
    next_sample, elapsed_before = 0, 0.0
    if config.resume:
        state = load_state(state_path)
        ours, theirs = _model_identity(model), state["model_identity"]
        if ours != theirs:
            raise ValueError(f"{state_path} is a checkpoint of {theirs['name']} x{theirs['scale']} "
                             f"{theirs['config']}, but this run builds {ours['name']} x{ours['scale']} "
                             f"{ours['config']}: resume with the same --model, --scale and --model-arg")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], device)
        step, best_psnr, next_sample = state["step"], state["best_psnr"], state["next_sample"]
        elapsed_before = float(state["elapsed_s"])
        if state["global_batch"] != global_batch and main_rank:
            warnings.warn(f"global batch changed from {state['global_batch']} to {global_batch}: the data "
                          f"stream continues at sample {next_sample}", stacklevel=2)

    dataset = SRDataset(config.hr, config.scale, config.patch, lr_dir=config.lr, degradation=config.degradation,
                        noise_sigma=config.noise_sigma, augment=config.augment, seed=config.seed,
                        cache_bytes=int(config.cache_gb * 2**30))
    val_pairs = (load_validation_pairs(config.val, config.scale, config.val_lr, config.degradation,
                                       config.noise_sigma, config.seed) if config.val and main_rank else None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch, sampler=StepSampler(config.batch, next_sample, rank, world_size),
        num_workers=config.workers, pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
        drop_last=True)

    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp*"):  # din_fast.io.atomic temporaries left by a run killed mid-write
            stale.unlink()
        saved = {**dataclasses.asdict(config), "betas": list(config.betas), "resume": False}
        with atomic_path(run_dir / "config.yaml") as tmp:
            Path(tmp).write_text(yaml.safe_dump(saved, sort_keys=False))
        log = _Log(run_dir, step)
        if dataset.skipped:
            print(f"din-fast train: skipped {len(dataset.skipped)} unreadable image(s)", file=sys.stderr)

    net = model
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=config.amp)

    def checkpoint() -> None:
        extra = {"step": step, "train": {"degradation": config.degradation, "patch": config.patch}}
        save_model(model, str(run_dir / "last.safetensors"), extra=extra)
        save_state(state_path, {
            "format": STATE_FORMAT, "step": step, "model_identity": _model_identity(model),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(device), "next_sample": next_sample,
            "global_batch": global_batch, "best_psnr": best_psnr, "elapsed_s": elapsed()})
        log.plot()

    from tqdm import tqdm

    bar = tqdm(total=config.steps, initial=step, disable=not main_rank, desc="train", unit="step",
               dynamic_ncols=True, file=sys.stderr)
    start_time, loss_sum, loss_count, last_loss = time.perf_counter(), torch.zeros((), device=device), 0, None

    def elapsed() -> float:
        """Training seconds of the whole run, the resumed-from runs' included."""
        return elapsed_before + time.perf_counter() - start_time
    it = iter(loader)
    model.train()
    try:
        while step < config.steps:
            lr_batch, hr_batch = next(it)
            lr_batch = lr_batch.to(device, non_blocking=True)
            hr_batch = hr_batch.to(device, non_blocking=True)
            with autocast:
                sr = net(lr_batch)
            loss = F.l1_loss(sr.float(), hr_batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            learning_rate = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            next_sample += global_batch
            loss_sum += loss.detach()
            loss_count += 1
            bar.update(1)

            final = step == config.steps
            do_log = step % config.log_every == 0 or final
            val_step = bool(config.val) and ((config.val_every and step % config.val_every == 0) or final)
            do_val = val_step and main_rank
            if do_log:
                if world_size > 1:
                    dist.all_reduce(loss_sum)
                last_loss = loss_sum.item() / (loss_count * world_size)
                loss_sum.zero_()
                loss_count = 0
                bar.set_postfix(loss=f"{last_loss:.4f}")
            val_psnr = None
            if do_val:
                val_psnr = validate(model, val_pairs, device, autocast)
                bar.set_postfix(loss=f"{last_loss:.4f}" if last_loss is not None else "-", psnr=f"{val_psnr:.2f}")
                if best_psnr is None or val_psnr > best_psnr:
                    best_psnr = val_psnr
                    save_model(model, str(run_dir / "best.safetensors"), extra={"step": step, "val_psnr": val_psnr})
            if main_rank and (do_log or val_psnr is not None):
                log.write(step, last_loss if do_log else None, learning_rate, val_psnr, elapsed())
            if main_rank and ((config.ckpt_every and step % config.ckpt_every == 0) or final):
                checkpoint()
            if world_size > 1 and (val_step or final):
                dist.barrier()  # the other ranks wait for rank 0's validation / last checkpoint
    finally:
        bar.close()
        del it
    return TrainResult(model=model, step=step, loss=last_loss, best_psnr=best_psnr, run_dir=run_dir)


# ---------------------------------------------------------------------------------------------- CLI
def run_cli(args: argparse.Namespace) -> int:
    """``din-fast train``: resolve the configuration, train, print where the weights are."""
    config = config_from_args(args)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        best = "" if result.best_psnr is None else f", best val Y-PSNR {result.best_psnr:.2f} dB"
        loss = "" if result.loss is None else f", loss {result.loss:.4f}"
        print(f"trained {config.model} x{config.scale} to step {result.step}{loss}{best}: "
              f"{result.run_dir / 'last.safetensors'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m din_fast.train`` (and so of ``torchrun -m din_fast.train``)."""
    parser = argparse.ArgumentParser(prog="python -m din_fast.train", description="Train a din_fast model.")
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
