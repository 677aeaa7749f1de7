"""Whole-model timing: inference and training steps of every model, per implementation.

Providers (what a user could run):

- ``reference``: the reference backend, eagerly — the official code's graph;
- ``compiled``: ``torch.compile`` of the reference backend — what PyTorch gives for free;
- ``default``: din_fast's default backend (fused kernels), eagerly;
- ``default+compile``: the default backend under ``torch.compile(fullgraph=True)`` (our ops compile
  without graph breaks);
- ``optimized``: :func:`din_fast.optimize` (inference only).

Used by ``benchmarks/test_models.py`` (pytest-benchmark) and by ``din-fast bench``, which writes
the same JSON layout so ``benchmarks/report.py`` renders both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from din_fast.backends import use_backend

PROVIDERS = ("reference", "compiled", "default", "default+compile", "optimized")
MODES = ("inference", "train")


@dataclass(frozen=True)
class Case:
    """One whole-model measurement: ``batch`` LR inputs of ``size``×``size`` pixels."""

    model: str
    scale: int
    size: int
    mode: str
    provider: str
    batch: int = 1
    device: str = "cpu"

    @property
    def group(self) -> str:
        """Benchmarks of one group time the same work; the size comes last (report.py joins size series)."""
        return f"{self.model} x{self.scale} {self.mode} b{self.batch} {self.size}"

    @property
    def megapixels(self) -> float:
        """Output megapixels per call."""
        return self.batch * (self.size * self.scale) ** 2 / 1e6


def _backend(provider: str) -> str:
    return "reference" if provider in ("reference", "compiled") else "auto"


def build(case: Case) -> Callable[[], object]:
    """A no-argument callable running one inference or training step of ``case`` (not yet warmed up)."""
    from din_fast import create_model, optimize

    if case.provider not in PROVIDERS:
        raise ValueError(f"unknown provider {case.provider!r}; choose from {', '.join(PROVIDERS)}")
    if case.mode not in MODES:
        raise ValueError(f"unknown mode {case.mode!r}; choose from {', '.join(MODES)}")
    if case.provider == "optimized" and case.mode != "inference":
        raise ValueError("the optimized provider is inference only")
    device = torch.device(case.device)
    gen = torch.Generator().manual_seed(0)
    model = create_model(case.model, scale=case.scale).to(device)
    x = torch.rand(case.batch, 3, case.size, case.size, generator=gen).to(device)
    backend = _backend(case.provider)
    if case.provider == "optimized":
        with use_backend(backend):
            fast = optimize(model, x)
        return lambda: fast(x)
    net = model
    if case.provider in ("compiled", "default+compile"):
        net = torch.compile(model, fullgraph=case.provider == "default+compile", dynamic=False)
    if case.mode == "inference":
        model.eval()

        def infer() -> torch.Tensor:
            with use_backend(backend), torch.inference_mode():
                return net(x)

        return infer
    target = torch.rand(case.batch, 3, case.size * case.scale, case.size * case.scale, generator=gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # allocate Adam's state now, so every timed step is alike (a zero-gradient step is a no-op)
    opt.zero_grad(set_to_none=True)
    model.train()

    def train_step() -> torch.Tensor:
        with use_backend(backend):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(net(x), target)
            loss.backward()
            opt.step()
        return loss.detach()

    return train_step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_group(cases: Sequence[Case], rounds: int, warmup: int = 1) -> list[list[float]]:
    """Seconds per call of each case, after ``warmup`` untimed calls each (compilation included there).

    The cases are timed interleaved: each round calls every case once, in an order that rotates between
    rounds, so a drift of the machine's speed (other processes, clock changes) hits every case alike
    instead of whichever case was being timed during it. Timed one case after another, the same build's
    ratios swung by ±30 % between runs on the 2-core VM.
    """
    fns = [build(case) for case in cases]
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in cases]
    for r in range(rounds):
        for k in range(len(cases)):
            i = (r + k) % len(cases)
            _sync(cases[i].device)
            start = time.perf_counter()
            fns[i]()
            _sync(cases[i].device)
            times[i].append(time.perf_counter() - start)
    return times


def _cpu_peak_mib(fn: Callable[[], object]) -> float:
    """Peak of live tensor memory allocated during ``fn()`` on CPU, from the profiler's memory events.

    Each op event carries the bytes it allocated net of what it freed (self), ``[memory]`` events the
    allocations and frees between ops; their running sum in time order is the live memory.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    deltas = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                    for e in prof.events())
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak / 2**20


def peak_memory_mib(case: Case) -> float:
    """Peak memory one warmed-up call allocates beyond the model, inputs and optimiser state (MiB).

    CUDA: ``max_memory_allocated`` around the call. CPU: the torch profiler's allocation events.
    """
    fn = build(case)
    fn()  # warm-up (compilation, lazy state)
    if case.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return _cpu_peak_mib(fn)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(cases: Sequence[Case], rounds: int = 5, memory: bool = False, threads: int | None = None,
        progress: bool = True) -> list[dict]:
    """Time every case; return pytest-benchmark-style records (``group``, ``stats``, ``extra_info``), in
    the order of ``cases``. The cases of one group (the providers of one model, mode and size) are timed
    interleaved (:func:`time_group`)."""
    from tqdm import tqdm

    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case.group, []).append(i)
    records: list[dict | None] = [None] * len(cases)
    with _threads(threads), tqdm(total=len(cases), desc="bench", disable=not progress, unit="case") as bar:
        for members in groups.values():
            group_times = time_group([cases[i] for i in members], rounds)
            for i, times in zip(members, group_times):
                case = cases[i]
                q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
                extra = {**asdict(case), "megapixels": case.megapixels, "threads": torch.get_num_threads()}
                if memory:
                    extra["peak_mib"] = peak_memory_mib(case)
                records[i] = {"name": f"{case.group} [{case.provider}]", "group": case.group,
                              "stats": {"median": statistics.median(times), "iqr": q[2] - q[0],
                                        "min": min(times), "rounds": len(times)},
                              "extra_info": extra}
            bar.update(len(members))
    return [r for r in records if r is not None]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions() -> dict:
    """What the timings depend on besides the CPU: din_fast, torch and Triton versions, the device, the
    torch thread count and whether din_fast's allocator settings are in force (benchmarks/conftest.py
    records the same for pytest-benchmark runs)."""
    import din_fast
    from din_fast import allocator

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only"
    return {"version": din_fast.__version__, "torch": torch.__version__, "triton": triton_version,
            "device": device, "threads": torch.get_num_threads(), "keep_freed_memory": allocator.applied()}


def commit_info() -> dict:
    """The git commit of the din_fast source tree (``id``, ``dirty``), or {} outside a git checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"id": head, "dirty": bool(status.strip())}


def to_json(records: Sequence[dict]) -> dict:
    """A pytest-benchmark-compatible document, so ``benchmarks/report.py`` can render it."""
    return {"machine_info": {"node": platform.node(), "cpu": {"brand_raw": _cpu_name(), "count": os.cpu_count()},
                             "python_version": platform.python_version(), "din_fast": versions()},
            "commit_info": commit_info(), "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "benchmarks": list(records)}


def format_table(records: Sequence[dict]) -> str:
    """A plain-text table: per group, each provider's median and its ratio to reference and compiled."""
    lines = [f"{'group':<34} {'provider':<16} {'median ms':>10} {'×ref':>7} {'×compiled':>10} {'s/MP':>8}"]
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    for group, rows in groups.items():
        base = {r["extra_info"]["provider"]: r["stats"]["median"] for r in rows}
        for r in sorted(rows, key=lambda r: r["stats"]["median"]):
            med = r["stats"]["median"]
            ref = f"{base['reference'] / med:.2f}" if "reference" in base else "–"
            comp = f"{base['compiled'] / med:.2f}" if "compiled" in base else "–"
            per_mp = med / r["extra_info"]["megapixels"]
            lines.append(f"{group:<34} {r['extra_info']['provider']:<16} {med * 1e3:>10.1f} {ref:>7} "
                         f"{comp:>10} {per_mp:>8.3f}")
    return "\n".join(lines)


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(t) for t in text.split(",") if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``din-fast bench``."""
    parser.add_argument("--models", type=_csv(str), default=["defian-s"], help="comma-separated model names")
    parser.add_argument("--scales", type=_csv(int), default=[4])
    parser.add_argument("--sizes", type=_csv(int), default=[48], help="LR input sizes (square)")
    parser.add_argument("--modes", type=_csv(str), default=["inference"], help=f"from {', '.join(MODES)}")
    parser.add_argument("--providers", type=_csv(str), default=["reference", "default", "optimized"],
                        help=f"from {', '.join(PROVIDERS)}")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--memory", action="store_true", help="also measure the peak memory of a call")
    parser.add_argument("--json", default=None, help="write pytest-benchmark-style JSON for benchmarks/report.py")


def run_cli(args: argparse.Namespace) -> int:
    """``din-fast bench``: every combination of the options, skipping optimized training steps."""
    from din_fast.models import list_models

    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(list_models())}")
    for name, values, allowed in (("mode", args.modes, MODES), ("provider", args.providers, PROVIDERS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"unknown {name}(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    cases = [Case(m, s, z, mode, p, args.batch, args.device)
             for m in args.models for s in args.scales for mode in args.modes for z in args.sizes
             for p in args.providers if not (p == "optimized" and mode != "inference")]
    records = run(cases, rounds=args.rounds, memory=args.memory, threads=args.threads)
    print(format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(records), f, indent=1)
        print(f"wrote {args.json}")
    return 0
