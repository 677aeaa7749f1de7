"""``din-fast upscale INPUT... -o OUTPUT``: super-resolve image files and folders.

Inputs are files or folders (a folder's images in sorted order). The output is a file when there is one
input file, otherwise a folder (created if needed) that receives each image under its own name. The
format is kept unless ``--format`` says otherwise (or, for one output file, its extension does); see
``din_fast.io.images`` for grey, alpha, 16-bit and EXIF handling. Every file is written to a temporary name
and renamed, so a failure never leaves a partial output; temporary files that a killed run left in an
output folder are deleted by the next run into it.

One image that cannot be read, is too small or too large for the model, or cannot be written does not
stop the others: each failure is reported with the file and the reason, the summary counts written and
failed images, and the exit status is 1 when any failed (``--fail-fast`` stops at the first failure).
Images above ``--max-pixels`` are refused from their header, before they are decoded.

Distributed: under ``torchrun --nproc_per_node N``, rank ``r`` of ``N`` processes images ``r, r+N, ...``
of the sorted list (so each image is written exactly once), on GPU ``LOCAL_RANK`` when CUDA is there;
rank 0 prints the summary of all ranks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from din_fast.backends import BACKENDS
from din_fast.io.images import DEFAULT_MAX_PIXELS, FORMATS

__all__ = ["Job", "add_arguments", "check_options", "describe_failure", "plan", "run_cli", "run_model",
           "select_device", "shard"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FORMAT_NAMES = {ext.lstrip("."): name for ext, name in FORMATS.items()}  # --format's choices
# side of the square input that ``run_model`` tries to tell "too small for the model" from other errors
_PROBE_SIDE = 16


@dataclass(frozen=True)
class Job:
    """One image to upscale: where it comes from, where it goes, and the format to write."""

    source: Path
    target: Path
    format: str | None  # None: the input's own format (or PNG for formats we do not write)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``din-fast upscale``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True,
                        help="output file (one input file) or folder (several inputs, or a folder)")
    parser.add_argument("--model", default=None, help="registered model name (default: the packaged model)")
    parser.add_argument("--scale", type=int, default=None,
                        help="upscaling factor (default: the weights' scale; 4 for the packaged model)")
    parser.add_argument("--weights", default=None,
                        help="din_fast .safetensors file or an official checkpoint (needs --model, --scale)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (auto: CUDA if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="compute dtype; float16 / bfloat16 (autocast) need a GPU")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in input pixels (default: whole image, tiled automatically if it "
                             "does not fit in memory)")
    parser.add_argument("--tile-overlap", type=int, default=16, help="context pixels around each tile")
    parser.add_argument("--self-ensemble", action="store_true", help="x8 flip/rotate ensemble (DIN+)")
    parser.add_argument("--backend", default=None, choices=BACKENDS, help="fused-op implementation")
    parser.add_argument("--format", default=None, choices=sorted(FORMAT_NAMES), help="output image format")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    add_batch_arguments(parser)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``din-fast upscale`` and ``din-fast eval`` share about failures and image sizes."""
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first image that fails (default: report it and go on)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS}), read "
                             "from the file's header before decoding")


def plan(inputs: list[str], output: str, fmt: str | None = None) -> list[Job]:
    """The jobs for ``inputs`` → ``output`` (module doc). Creates nothing; raises ValueError for an output
    that cannot be told apart, two inputs with the same output name, or an output that is an input."""
    from din_fast.io.images import EXTENSION, find_images, format_for

    images = find_images(inputs)
    out = Path(output)
    to_folder = (len(images) > 1 or any(Path(i).is_dir() for i in inputs) or out.is_dir()
                 or output.endswith(("/", os.sep)))
    if not to_folder:
        ext_fmt = format_for(out)
        if fmt is not None and out.suffix and ext_fmt != fmt:  # x.gif with --format png: a PNG named .gif
            raise ValueError(f"--format {fmt.lower()} contradicts the output name {out}")
        if fmt is None and ext_fmt is None:
            raise ValueError(f"cannot tell the output format from {out}: give it an image extension "
                             f"({', '.join(sorted(EXTENSION.values()))}) or pass --format")
        jobs = [Job(images[0], out, fmt or ext_fmt)]
    else:
        jobs = []
        for image in images:
            own = format_for(image)
            target_fmt = fmt or own or "PNG"
            name = image.name if own == target_fmt else image.stem + EXTENSION[target_fmt]
            jobs.append(Job(image, out / name, target_fmt))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.target.resolve() == job.source.resolve():
            raise ValueError(f"output {job.target} would overwrite its input; choose another output")
        other = seen.setdefault(job.target.resolve(), job.source)
        if other != job.source:
            raise ValueError(f"{other} and {job.source} would both be written to {job.target}")
    return jobs


def select_device(name: str) -> torch.device:
    """``--device``: auto (CUDA device LOCAL_RANK if CUDA is available, else CPU), cpu, cuda, cuda:N."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available (torch {torch.__version__}, "
                         f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def _world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """The jobs of ``rank``: every ``world``-th one starting at ``rank`` (disjoint, together all)."""
    return jobs[rank::world]


def check_options(args: argparse.Namespace) -> None:
    """ValueError for ``--tile`` / ``--tile-overlap`` / ``--max-pixels`` values that cannot work (before
    anything is loaded); shared by ``din-fast upscale`` and ``din-fast eval``."""
    from din_fast.inference.tiling import check_tiling

    check_tiling(args.tile, args.tile_overlap, ("--tile", "--tile-overlap"))
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be positive, got {args.max_pixels}")


def describe_failure(exc: BaseException, path: Path) -> str:
    """One line saying why ``path`` failed, naming it once."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return reason if str(path) in reason else f"{path}: {reason}"


def _accepts(model: torch.nn.Module, side: int) -> bool:
    """Whether ``model`` runs on a ``side`` x ``side`` input without a ValueError (an argument check)."""
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad():
            model(x)
    except ValueError:
        return False
    return True


def run_model(model: torch.nn.Module, name: str, source: Path, x: torch.Tensor, **upscale_options) -> torch.Tensor:
    """``din_fast.upscale(model, x, ...)`` for the image of file ``source``, whose errors say what is wrong
    with the file: an argument check that fails on this image but not on a 16 x 16 one means the image is
    too small for the model; a NaN in the result is reported as the model's."""
    from din_fast.inference.tiling import upscale

    try:
        y = upscale(model, x, **upscale_options)
    except ValueError as exc:
        h, w = x.shape[-2:]
        if min(h, w) < _PROBE_SIDE and _accepts(model, _PROBE_SIDE):
            raise ValueError(f"{source}: the {w}x{h} image is too small for the model {name} "
                             f"({' '.join(str(exc).split())})") from exc
        raise
    if torch.isnan(y).any():
        raise ValueError(f"{source}: the model's output holds NaN values (the image is finite)")
    return y


def _upscale_file(model: torch.nn.Module, name: str, job: Job, args: argparse.Namespace,
                  tile_bar) -> tuple[float, float]:
    """Upscale one file; returns (input, output) megapixels."""
    from din_fast.io.degrade import imresize
    from din_fast.io.images import read_image, write_image

    image = read_image(job.source, max_pixels=args.max_pixels)

    def progress(done: int, total: int) -> None:
        tile_bar.total = total
        tile_bar.n = done
        tile_bar.refresh()

    tile_bar.reset()
    y = run_model(model, name, job.source, image.rgb, tile=args.tile, overlap=args.tile_overlap,
                  ensemble=args.self_ensemble, progress=progress)
    alpha = None
    if image.alpha is not None:  # bicubic (MATLAB imresize) on the alpha plane, kept within [0, 1]
        alpha = imresize(image.alpha, model.scale).clamp(0, 1)
    try:
        write_image(job.target, y, alpha, grey=image.grey, bits=image.bits, format=job.format or image.format,
                    icc_profile=image.icc_profile)
    except OSError as exc:
        raise OSError(f"cannot write {job.target}: {exc.strerror or exc}") from exc
    h, w = image.rgb.shape[-2:]
    return h * w / 1e6, y.shape[-2] * y.shape[-1] / 1e6


def prepare_output_folder(folder: Path) -> None:
    """Create ``folder`` if needed, check that it is writable, and delete the temporary files a killed
    run left in it (``din_fast.io.atomic``)."""
    from din_fast.io.atomic import remove_stale_temporaries

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder} is not writable")
    removed = remove_stale_temporaries(folder)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left in {folder} by an interrupted run", file=sys.stderr)


def run_cli(args: argparse.Namespace) -> int:
    """``din-fast upscale``: plan, load the model, upscale this rank's images, print a summary."""
    from tqdm import tqdm

    from din_fast.backends import use_backend
    from din_fast.inference.optimize import optimize
    from din_fast.models.pretrained import resolve_model

    check_options(args)
    device = select_device(args.device)
    dtype = DTYPES[args.dtype]
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(f"--dtype {args.dtype} needs a CUDA device (the CPU path runs in float32)")
    jobs = plan(args.inputs, args.output, FORMAT_NAMES[args.format] if args.format else None)
    model = resolve_model(args.model, args.scale, args.weights).to(device)  # before creating any folder
    rank, world = _world()
    for folder in sorted({job.target.parent for job in jobs}):
        prepare_output_folder(folder)  # on every rank: each rank's own temporary files are locked

    group = False
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # only the summary's small CPU reductions go through it
            group = True
    try:
        fast = optimize(model, dtype=dtype)
        mine = shard(jobs, rank, world)
        stats = torch.zeros(4, dtype=torch.float64)  # written, failed, input MP, output MP
        quiet = None if rank == 0 else True  # bars on a terminal (None: tqdm decides), from rank 0 only
        start = time.perf_counter()
        with use_backend(args.backend) if args.backend else nullcontext(), \
                tqdm(total=len(mine), unit="img", disable=quiet, position=0) as image_bar, \
                tqdm(unit="tile", disable=quiet, leave=False, position=1) as tile_bar:
            for job in mine:
                image_bar.set_postfix_str(job.source.name)
                try:
                    mp_in, mp_out = _upscale_file(fast, model.model_name, job, args, tile_bar)
                except Exception as exc:
                    if args.fail_fast or getattr(args, "debug", False):
                        raise
                    tqdm.write(f"din-fast upscale: error: {describe_failure(exc, job.source)}", file=sys.stderr)
                    stats[1] += 1
                else:
                    stats += torch.tensor([1.0, 0.0, mp_in, mp_out], dtype=torch.float64)
                image_bar.update()
        seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if rank == 0:
            n, failed, mp_in, mp_out = stats.tolist()
            secs = seconds.item()
            ranks = f" on {world} processes" if world > 1 else ""
            print(f"upscaled {int(n)} image(s) x{model.scale} with {model.model_name} on {device}{ranks}: "
                  f"{mp_in:.3f} MP in, {mp_out:.3f} MP out, {secs:.2f} s "
                  f"({secs / max(mp_out, 1e-12):.3f} s per output megapixel)")
            print(f"{int(n)} written, {int(failed)} failed")
    finally:
        if group:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 1 if stats[1] > 0 else 0

