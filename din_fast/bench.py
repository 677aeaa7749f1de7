"""Whole-model timing: inference and training steps of every model, per implementation.

Providers (what a user could run):

- ``reference``: the reference backend, eagerly — the official code's graph;
- ``compiled``: ``torch.compile`` of the reference backend — what PyTorch gives for free;
- ``default``: din_fast's default backend (fused kernels), eagerly;
- ``default+compile``: the default backend under ``torch.compile(fullgraph=True)`` (our ops compile
  without graph breaks);
- ``optimized``: :func:`din_fast.optimize` (inference only).

Peers (what a user could deploy instead; inference, float32, CPU only): ``onnxruntime`` and
``openvino`` run the model's ONNX file (:func:`din_fast.export` at the case's fixed input shape, which
is each runtime's fastest setting) with as many threads as torch has and ONNX Runtime's spinning off
(:mod:`din_fast.deploy.runtimes`); timed interleaved with the others like any provider.

A provider may name its compute dtype, ``name:dtype`` (``default:bfloat16``): reduced precision runs
under ``torch.autocast`` as ``din-fast upscale --dtype`` and ``din-fast train --amp`` do (parameters stay
float32). Used by ``benchmarks/test_models.py`` (pytest-benchmark) and by ``din-fast bench``, which
writes the same JSON layout so ``benchmarks/report.py`` renders both. All three end with the same
comparison (:func:`format_comparison`): each din_fast provider against the reference and against
``torch.compile`` of the reference, with the machine named.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from din_fast.backends import use_backend

PEERS = ("onnxruntime", "openvino")
PROVIDERS = ("reference", "compiled", "default", "default+compile", "optimized") + PEERS
BASELINES = ("reference", "compiled")
MODES = ("inference", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


def short_dtype(name: str) -> str:
    """``bfloat16`` → ``bf16`` (table labels); unknown names unchanged."""
    return _SHORT_DTYPES.get(name, name)


def parse_provider(spec: str) -> tuple[str, str]:
    """``name`` or ``name:dtype`` → (provider, dtype name); float32 when no dtype is given."""
    name, _, dtype = spec.partition(":")
    dtype = dtype or "float32"
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} in provider {spec!r}; choose from {', '.join(DTYPES)}")
    return name, dtype


def allow_recompiles(limit: int = 1024) -> None:
    """Let dynamo keep ``limit`` compiled variants per function, and fail rather than fall back.

    Benchmarks compile one function (a reference op, a model's forward) for several shapes, dtypes and
    grad modes. Past ``recompile_limit`` (8) variants dynamo silently runs the function eagerly, which
    would time the eager reference as "compiled"; with this setting each variant is compiled once and
    reused across cases, and a suite larger than ``limit`` variants fails loudly instead.
    """
    import torch._dynamo.config as config

    config.recompile_limit = max(config.recompile_limit, limit)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, limit)
    config.fail_on_recompile_limit_hit = True


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
    dtype: str = "float32"

    @property
    def label(self) -> str:
        """The provider, with its dtype when it is not float32 (``default bf16``)."""
        return self.provider if self.dtype == "float32" else f"{self.provider} {short_dtype(self.dtype)}"

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

    parse_provider(f"{case.provider}:{case.dtype}")
    if case.mode not in MODES:
        raise ValueError(f"unknown mode {case.mode!r}; choose from {', '.join(MODES)}")
    if case.provider == "optimized" and case.mode != "inference":
        raise ValueError("the optimized provider is inference only")
    device = torch.device(case.device)
    gen = torch.Generator().manual_seed(0)
    model = create_model(case.model, scale=case.scale).to(device)
    x = torch.rand(case.batch, 3, case.size, case.size, generator=gen).to(device)
    if case.provider in PEERS:
        return _peer(case, model, x)
    backend = _backend(case.provider)
    dtype = DTYPES[case.dtype]
    if case.provider == "optimized":
        with use_backend(backend):
            fast = optimize(model, x, dtype=dtype)
        return lambda: fast(x)
    net = model
    if case.provider in ("compiled", "default+compile"):
        allow_recompiles()
        net = torch.compile(model, fullgraph=case.provider == "default+compile", dynamic=False)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if case.mode == "inference":
        model.eval()

        def infer() -> torch.Tensor:
            with use_backend(backend), torch.inference_mode(), autocast:
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
            with autocast:
                out = net(x)
            loss = torch.nn.functional.l1_loss(out.float(), target)
            loss.backward()
            opt.step()
        return loss.detach()

    return train_step


def _peer(case: Case, model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """A peer runtime's inference of ``case`` on ``model``'s ONNX file (exported once per model, scale and
    input shape in a process, into a temporary folder that lives as long as the process)."""
    from din_fast.deploy.exporter import export
    from din_fast.deploy.runtimes import runner

    if case.mode != "inference" or case.dtype != "float32" or case.device != "cpu":
        raise ValueError(f"the {case.provider} provider runs float32 inference on the CPU only")
    key = (case.model, case.scale, case.batch, case.size)
    if key not in _ONNX_FILES:
        if not _ONNX_DIR:
            _ONNX_DIR.append(tempfile.TemporaryDirectory(prefix="din_fast_bench_"))
        path = os.path.join(_ONNX_DIR[0].name, "{}_x{}_b{}_{}.onnx".format(*key))
        _ONNX_FILES[key] = export(model.eval(), path, example=x, dynamic=False)
    run = runner(case.provider, _ONNX_FILES[key], torch.get_num_threads())
    return lambda: run(x)


_ONNX_FILES: dict[tuple[str, int, int, int], str] = {}
_ONNX_DIR: list[tempfile.TemporaryDirectory] = []


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_group(cases: Sequence[Case], rounds: int, warmup: int = 1,
               fns: Sequence[Callable[[], object]] | None = None) -> list[list[float]]:
    """Seconds per call of each case, after ``warmup`` untimed calls each (compilation included there).
    ``fns``: the cases' callables when already built (:func:`build`).

    The cases are timed interleaved: each round calls every case once, in an order that rotates between
    rounds, so a drift of the machine's speed (other processes, clock changes) hits every case alike
    instead of whichever case was being timed during it. Timed one case after another, the same build's
    ratios swung by ±30 % between runs on the 2-core VM.
    """
    fns = list(fns) if fns is not None else [build(case) for case in cases]
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


def peak_memory_mib(case: Case, fn: Callable[[], object] | None = None) -> float:
    """Peak memory one warmed-up call allocates beyond the model, inputs and optimiser state (MiB).

    ``fn``: the case's callable when already built and warmed up (no second compilation).
    CUDA: ``max_memory_allocated`` around the call. CPU: the torch profiler's allocation events.
    """
    if fn is None:
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
            fns = [build(cases[i]) for i in members]
            group_times = time_group([cases[i] for i in members], rounds, fns=fns)
            for i, fn, times in zip(members, fns, group_times):
                case = cases[i]
                q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
                extra = {**asdict(case), "megapixels": case.megapixels, "threads": torch.get_num_threads()}
                if memory:
                    extra["peak_mib"] = peak_memory_mib(case, fn)
                records[i] = {"name": f"{case.group} [{case.label}]", "group": case.group,
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


def machine_info() -> dict:
    """The machine in pytest-benchmark's layout (``node``, ``cpu``, ``python_version``), and :func:`versions`
    under ``din_fast``."""
    return {"node": platform.node(), "cpu": {"brand_raw": _cpu_name(), "count": os.cpu_count()},
            "python_version": platform.python_version(), "din_fast": versions()}


def to_json(records: Sequence[dict]) -> dict:
    """A pytest-benchmark-compatible document, so ``benchmarks/report.py`` can render it."""
    return {"machine_info": machine_info(), "commit_info": commit_info(),
            "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": list(records)}


def machine_name(info: dict) -> str:
    """One line naming what the numbers were taken on: the GPU (if any), the CPU, threads and versions."""
    cpu = info.get("cpu", {})
    din = info.get("din_fast", {})
    host = (f"{cpu.get('brand_raw', '?')} ({cpu.get('count', '?')} logical CPUs, "
            f"{din.get('threads', '?')} torch threads)")
    device = din.get("device", "cpu only")
    where = host if device in ("cpu only", "?") else f"{device} on {host}"
    return f"{where}; torch {din.get('torch', '?')}, din_fast {din.get('version', '?')}"


def record_dtype(record: dict) -> str:
    """The compute dtype of a benchmark record (float32 when it does not say)."""
    return record.get("extra_info", {}).get("dtype") or "float32"


def record_label(record: dict) -> str:
    """The provider of a record, with its dtype when that is not float32 (``default bf16``)."""
    extra = record.get("extra_info", {})
    provider = extra.get("provider", record.get("name", "?"))
    dtype = record_dtype(record)
    return provider if dtype == "float32" else f"{provider} {short_dtype(dtype)}"


@dataclass(frozen=True)
class Comparison:
    """One din_fast provider of one group against the baselines of the same group (seconds).

    The baseline of a row is the one of the row's dtype when the group has it, else the float32 one
    (a bf16 din_fast model against the authors' float32 model); ``*_dtype`` says which was used.
    ``provider`` is None when no din_fast provider ran in the group (all skipped or failed)."""

    group: str
    provider: str | None
    dtype: str
    median: float | None
    reference: float | None
    reference_dtype: str | None
    compiled: float | None
    compiled_dtype: str | None

    def ratio(self, baseline: float | None) -> float | None:
        """How many times faster than ``baseline`` (> 1: din_fast is faster)."""
        if baseline is None or not self.median:
            return None
        return baseline / self.median

    @property
    def vs_reference(self) -> float | None:
        return self.ratio(self.reference)

    @property
    def vs_compiled(self) -> float | None:
        return self.ratio(self.compiled)


def baseline(medians: dict[tuple[str, str], float], name: str,
              dtype: str) -> tuple[float | None, str | None]:
    """The median of baseline ``name`` for a row of ``dtype``: that dtype's when ``medians`` (keyed by
    (provider, dtype)) has it, else float32's; and the dtype used. (None, None) without one."""
    for key in ((name, dtype), (name, "float32")):
        if key in medians:
            return medians[key], key[1]
    return None, None


def compare(records: Sequence[dict]) -> list[Comparison]:
    """Per group (first-seen order), each din_fast provider (fastest first) against the baselines."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r.get("group") or r["name"], []).append(r)
    out: list[Comparison] = []
    for group, rows in groups.items():
        medians = {(r["extra_info"].get("provider"), record_dtype(r)): r["stats"]["median"]
                   for r in rows if r.get("extra_info", {}).get("provider") in BASELINES}
        ours = sorted((r for r in rows if r.get("extra_info", {}).get("provider") not in BASELINES + PEERS),
                      key=lambda r: r["stats"]["median"])
        if not ours:
            ref, ref_dtype = baseline(medians, "reference", "float32")
            comp, comp_dtype = baseline(medians, "compiled", "float32")
            out.append(Comparison(group, None, "float32", None, ref, ref_dtype, comp, comp_dtype))
        for r in ours:
            dtype = record_dtype(r)
            ref, ref_dtype = baseline(medians, "reference", dtype)
            comp, comp_dtype = baseline(medians, "compiled", dtype)
            out.append(Comparison(group, record_label(r), dtype, r["stats"]["median"], ref, ref_dtype, comp,
                                  comp_dtype))
    return out


def format_ms(seconds: float | None) -> str:
    """Seconds as milliseconds with 3 significant-ish digits (``–`` for None)."""
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _baseline_cells(c: Comparison, seconds: float | None, dtype: str | None,
                    ratio: float | None) -> list[str]:
    note = f" ({short_dtype(dtype)})" if dtype and dtype != c.dtype else ""  # a baseline of another dtype
    return [format_ms(seconds) + note, "–" if ratio is None else f"{ratio:.2f}×"]


COMPARISON_HEAD = ("case", "din_fast", "ms", "reference ms", "× reference", "compiled ms", "× compiled")


def comparison_cells(comparisons: Sequence[Comparison]) -> list[list[str]]:
    """The comparison table's cells, one row per :class:`Comparison` (header: COMPARISON_HEAD)."""
    rows = []
    for c in comparisons:
        rows.append([c.group, c.provider or "none ran", format_ms(c.median),
                     *_baseline_cells(c, c.reference, c.reference_dtype, c.vs_reference),
                     *_baseline_cells(c, c.compiled, c.compiled_dtype, c.vs_compiled)])
    return rows


PEER_HEAD = ("case", "din_fast", "ms") + tuple(f"{h} {p}" for p in PEERS for h in ("ms", "×"))


def peer_cells(records: Sequence[dict]) -> list[list[str]]:
    """Per group with a peer runtime (first-seen order), each din_fast provider (fastest first) against
    each peer: the peer's median and peer median / din_fast median (> 1: din_fast is faster). Only
    float32 rows (the peers run float32). Header: PEER_HEAD; no rows without peers."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if record_dtype(r) == "float32":
            groups.setdefault(r.get("group") or r["name"], []).append(r)
    rows = []
    for group, members in groups.items():
        peers = {r["extra_info"]["provider"]: r["stats"]["median"] for r in members
                 if r.get("extra_info", {}).get("provider") in PEERS}
        if not peers:
            continue
        ours = sorted((r for r in members if r.get("extra_info", {}).get("provider") not in BASELINES + PEERS),
                      key=lambda r: r["stats"]["median"])
        for r in ours:
            median = r["stats"]["median"]
            cells = [group, record_label(r), format_ms(median)]
            for peer in PEERS:
                theirs = peers.get(peer)
                cells += [format_ms(theirs), "–" if theirs is None or not median else f"{theirs / median:.2f}×"]
            rows.append(cells)
    return rows


def _table(title: str, note: str, head: Sequence[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"{title}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([title, note, fmt.format(*head)] + [fmt.format(*r) for r in rows])


def format_comparison(records: Sequence[dict], info: dict, markdown: bool = False) -> str:
    """The table every benchmark run ends with: for each group (an op or a model at one shape and mode),
    each din_fast provider's median against the reference and ``torch.compile(reference)`` as ratios
    (baseline median / din_fast median: > 1 is faster), headed by the machine (:func:`machine_name`);
    then, when peer runtimes ran, each din_fast provider against them (:func:`peer_cells`).
    Plain text for terminals (``din-fast bench``, the pytest run), markdown for benchmarks/report.py."""
    title = f"din_fast against the reference and torch.compile(reference) on {machine_name(info)}"
    text = _table(title, "(× = baseline median / din_fast median: > 1 means din_fast is faster)",
                  COMPARISON_HEAD, comparison_cells(compare(records)), markdown)
    peers = peer_cells(records)
    if peers:
        title = f"din_fast against ONNX Runtime and OpenVINO (the model's ONNX file) on {machine_name(info)}"
        text += "\n\n" + _table(title, "(× = runtime median / din_fast median: > 1 means din_fast is faster)",
                                PEER_HEAD, peers, markdown)
    return text


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(t) for t in text.split(",") if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``din-fast bench``."""
    parser.add_argument("--models", type=_csv(str), default=["defian-s"], help="comma-separated model names")
    parser.add_argument("--scales", type=_csv(int), default=[4])
    parser.add_argument("--sizes", type=_csv(int), default=[48], help="LR input sizes (square)")
    parser.add_argument("--modes", type=_csv(str), default=["inference"], help=f"from {', '.join(MODES)}")
    parser.add_argument("--providers", type=_csv(str), default=["reference", "compiled", "default"],
                        help=f"from {', '.join(PROVIDERS)}; NAME:DTYPE runs one in bfloat16 or float16 "
                             "under autocast (default:bfloat16)")
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
    bad = [v for v in args.modes if v not in MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    providers = [parse_provider(p) for p in args.providers]
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    cases = [Case(m, s, z, mode, p, args.batch, args.device, dtype)
             for m in args.models for s in args.scales for mode in args.modes for z in args.sizes
             for p, dtype in providers if not (p == "optimized" and mode != "inference")]
    records = run(cases, rounds=args.rounds, memory=args.memory, threads=args.threads)
    print(format_comparison(records, machine_info()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(records), f, indent=1)
        print(f"wrote {args.json}")
    return 0
