"""One call on a lent GPU machine: build, test, sanitize and measure din_fast, and report it all.

    bash scripts/gpu_check.sh OUT_DIR                   # on the GPU machine (H100/H200, 16 cores, no network)
    bash scripts/gpu_check.sh --dry-run OUT_DIR         # the same pipeline on CPU with tiny shapes (CI)
    bash scripts/gpu_check.sh --stages ops,models OUT_DIR   # a second call: only these stages

Stages, with their time boxes (each runs in its own processes; a stage that fails or overruns its box
is stopped and recorded, and the next one starts; time a stage leaves unused passes to the next; the
boxes of stages that run at the same time count once, 480 s in all):

    environment   15  device, driver, versions (nvidia-smi, nvcc, compute-sanitizer, torch, triton)
    build        145  pip install --no-build-isolation --no-deps -e . with MAX_JOBS = all cores (a GPU is
                      visible, so torch builds for it: no TORCH_CUDA_ARCH_LIST); which kernels loaded
    tests         60  tests/test_gpu_kernels.py (every cuda and triton kernel against float64 on the
                      device, float32/float16/bfloat16) and the CUDA-graph test     } at the same time
    sanitizer     60  compute-sanitizer memcheck (cuda + triton) and racecheck (cuda) over a small
                      forward + backward call of every kernel                      }
    bandwidth     10  device-to-device copy (bytes read + written) and bf16 matmul rate: the ceilings
    ops          110  op benchmarks at the GPU shapes of issues 3 and 4 (asyca, dwc_sum, mshf, dac_gate,
                      dilated_encdec; reference, triton, cuda, then torch.compile(reference); float32
                      and bfloat16), with each kernel's share of the copy bandwidth
    models       110  din and defian-l x4 at 256²: float32 reference, bfloat16 default and optimized, then
                      bfloat16 torch.compile; the convolution FLOP floor (conv FLOPs / matmul rate)
    train         30  din-fast train --amp, 60 steps of din: the loss falls, the checkpoint loads  } same
    upscale       30  din-fast upscale of the sample in bfloat16 against float32 (PSNR)           } time

OUT_DIR receives four files: gpu-check.md (the report; commit it as benchmarks/RESULTS-gpu.md),
gpu-check.json (everything in it, machine-readable), gpu-check.log (every command's output, clipped to
200 kB per command) and benchmarks.json (the op and model benchmarks in pytest-benchmark's layout, for
benchmarks/report.py). The report is rewritten after every stage, so a run that is killed keeps what it
finished. The exit status is 1 when a stage failed or ran out of time. ``--box STAGE=SECONDS`` changes a
box, ``--stages`` runs a subset (e.g. a second call on the still-warm machine, whose build is kept).

``--dry-run`` runs every stage on the CPU with tiny shapes (and thrice the boxes) so the pipeline cannot
rot; what needs a GPU is skipped and the report says so: the build is checked with ``pip install
--dry-run`` (CI has built the extension), the GPU tests skip, the sanitizer's calls run on the C++
kernels without compute-sanitizer, the op benchmark times dwc_sum only, the model benchmark defian-s
without the compiled provider, training runs a tiny defian-s without --amp, the upscale runs float32 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # din_fast from this checkout, installed or not
PY = sys.executable
_LOG_LOCK = threading.Lock()  # stages of one group append to gpu-check.log from their threads

#: Ops with GPU targets in issues 3 (asyca, dwc_sum: 70 % of copy bandwidth at B=8, C=64, 256²) and 4
#: (mshf, dac_gate at B=16; dilated_encdec), benchmarked in this order.
BENCH_OPS = ("asyca", "dwc_sum", "mshf", "dac_gate", "dilated_encdec")
BANDWIDTH_TARGET = 0.7
#: The dry run checks that the pipeline works, not how fast: a loaded CI machine gets thrice the boxes.
DRY_RUN_BOX_SCALE = 3


@dataclass
class Stage:
    """One time-boxed stage: ``run(ctx)`` returns its results (a dict) or raises StageFailed."""

    name: str
    box: float
    run: Callable[[Context], dict]
    group: int = 0
    status: str = "not run"
    seconds: float = 0.0
    note: str = ""
    results: dict = field(default_factory=dict)


class StageFailed(Exception):
    """A stage's check failed; the message says what, the results gathered so far are kept."""

    def __init__(self, message: str, results: dict | None = None) -> None:
        super().__init__(message)
        self.results = results or {}


class StageTimeout(StageFailed):
    pass


@dataclass
class Context:
    out: Path
    work: Path
    dry_run: bool
    deadline: float = 0.0

    @property
    def log(self) -> Path:
        return self.out / "gpu-check.log"

    def remaining(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def sh(self, name: str, cmd: Sequence[str], env: dict | None = None, timeout: float | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` (its own process group) with its output appended to gpu-check.log under a header;
        stop the whole group at the stage's deadline. Returns the process with ``stdout`` read back."""
        limit = min(timeout or self.remaining(), self.remaining())
        part = self.work / f"{_file_name(name)}.out"
        full_env = {**os.environ, **(env or {})}
        start = time.monotonic()
        with open(part, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(list(cmd), cwd=ROOT, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                _stop(proc)
                rc, timed_out = proc.returncode, True
        text = part.read_text(errors="replace")
        with _LOG_LOCK, open(self.log, "a") as log:
            log.write(f"\n===== {name} ({time.monotonic() - start:.1f} s, exit {rc}"
                      f"{', stopped at its time limit' if timed_out else ''}) =====\n{_clip(text)}\n")
        result = subprocess.CompletedProcess(cmd, rc, text, "")
        if timed_out:
            raise StageTimeout(f"`{name}` stopped after {limit:.0f} s (its time box)")
        if check and rc != 0:
            raise StageFailed(f"`{name}` exited with {rc}: {_last_line(text)}")
        return result

    def worker(self, name: str, *args: str, env: dict | None = None, check: bool = True,
               prefix: Sequence[str] = (), label: str | None = None) -> dict:
        """Run ``_worker NAME`` of this script in a fresh process (optionally under ``prefix``, e.g.
        compute-sanitizer) and return the JSON it wrote, with the process's ``exit_code``."""
        result_file = self.work / f"{_file_name(label or name)}.json"
        result_file.unlink(missing_ok=True)
        cmd = [*prefix, PY, str(Path(__file__).resolve()), "_worker", name, str(result_file), *args]
        if self.dry_run:
            cmd.append("--dry-run")
        proc = self.sh(label or name, cmd, env=env, check=check)
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        return {**result, "exit_code": proc.returncode}


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _clip(text: str, limit: int = 200_000) -> str:
    if len(text) <= limit:
        return text
    return text[:limit // 4] + "\n[... clipped ...]\n" + text[-3 * limit // 4:]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# ----------------------------------------------------------------------------------------------- stages
def stage_environment(ctx: Context) -> dict:
    info = ctx.worker("environment")
    tools = {}
    for tool, args in (("nvidia-smi", ["--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                       "power.limit,compute_mode", "--format=csv,noheader"]),
                       ("nvcc", ["--version"]), ("compute-sanitizer", ["--version"])):
        path = shutil.which(tool)
        if path is None:
            tools[tool] = "not found"
            continue
        out = ctx.sh(tool, [path, *args], timeout=20, check=False)
        printed = out.stdout.split("\n", 1)[1].strip().splitlines()  # after the "$ command" line
        tools[tool] = printed[-1] if out.returncode == 0 and printed else "failed"
    info["tools"] = tools
    return info


def stage_build(ctx: Context) -> dict:
    jobs = str(os.cpu_count() or 1)
    cmd = [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    if ctx.dry_run:
        cmd.append("--dry-run")  # resolves and prepares the metadata; CI has built the extension already
    ctx.sh("pip install", cmd, env={"MAX_JOBS": jobs})
    kernels = ctx.worker("kernels")
    kernels["max_jobs"] = int(jobs)
    if kernels.get("load_error"):
        raise StageFailed(f"din_fast._C does not load: {kernels['load_error']}", kernels)
    if not ctx.dry_run and kernels.get("cuda_available") and not kernels.get("cuda_kernels"):
        raise StageFailed("din_fast._C loaded but registered no CUDA kernel", kernels)
    return kernels


GPU_TESTS = ("tests/test_gpu_kernels.py", "tests/test_fast_inference.py::test_cuda_graph_replay_equals_eager")


def stage_tests(ctx: Context) -> dict:
    files = GPU_TESTS
    junit = ctx.work / "tests.xml"
    proc = ctx.sh("pytest (GPU tests)", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                                         f"--junitxml={junit}", *files], check=False)
    results = _junit_summary(junit) if junit.exists() else {}
    results["files"] = list(files)
    if ctx.dry_run:
        results["note"] = "dry run: the GPU tests skip without a GPU"
    if proc.returncode != 0:
        raise StageFailed(f"{results.get('failed', '?')} failed, {results.get('errors', '?')} errors: "
                          f"{', '.join(results.get('failures', [])[:5])}", results)
    return results


def _junit_summary(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failures = [f"{c.get('classname', '')}::{c.get('name')}" for s in suites for c in s
                if c.find("failure") is not None or c.find("error") is not None]
    return {"tests": counts["tests"], "failed": counts["failures"], "errors": counts["errors"],
            "skipped": counts["skipped"],
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failures": failures}


def stage_sanitizer(ctx: Context) -> dict:
    if ctx.dry_run:
        calls = ctx.worker("kernel_calls", "--impls", "cpp")
        return {"calls": calls.get("calls", []), "note": "dry run: compute-sanitizer needs a GPU; the kernel "
                "calls ran on the C++ CPU kernels without it"}
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        raise StageFailed("compute-sanitizer not found on PATH")
    results: dict = {}
    problems = []
    # Without the caching allocator every tensor is its own cudaMalloc, so an access past a tensor's end
    # lands outside any allocation and memcheck sees it (inside a cached block it would not).
    env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    for tool, impls in (("memcheck", "cuda,triton"), ("racecheck", "cuda")):
        prefix = [sanitizer, "--tool", tool, "--error-exitcode", "99", "--print-limit", "20"]
        try:
            calls = ctx.worker("kernel_calls", "--impls", impls, env=env, check=False, prefix=prefix,
                               label=tool)
        except StageTimeout as exc:
            raise StageFailed(f"{tool}: {exc}", results) from exc
        text = (ctx.work / f"{_file_name(tool)}.out").read_text(errors="replace")
        summary = [ln.strip(" =") for ln in text.splitlines() if re.search(r"(ERROR|RACECHECK) SUMMARY", ln)]
        counts = [int(n) for ln in summary for n in re.findall(r"SUMMARY: (\d+)", ln)]
        raised = [c for c in calls.get("calls", []) if c.get("error")]
        results[tool] = {"impls": impls, "summary": summary, "calls": calls.get("calls", []),
                         "exit_code": calls["exit_code"]}
        if calls["exit_code"] != 0 or any(counts) or raised or not calls.get("calls"):
            problems.append(f"{tool}: exit {calls['exit_code']}, {'; '.join(summary) or 'no summary'}"
                            f"{f', {len(raised)} calls raised' if raised else ''}")
    if problems:
        raise StageFailed(" | ".join(problems), results)
    return results


def stage_bandwidth(ctx: Context) -> dict:
    return ctx.worker("bandwidth")


def _bench_env(ctx: Context, records: Path, **extra: str) -> dict:
    env = {"DIN_FAST_BENCH_RECORDS": str(records), **extra}
    if ctx.dry_run:
        env.update(DIN_FAST_BENCH_TINY="1", DIN_FAST_BENCH_ROUNDS="2")
    return env


def stage_ops(ctx: Context) -> dict:
    records = ctx.work / "ops.jsonl"
    ops = BENCH_OPS[1:2] if ctx.dry_run else BENCH_OPS
    out = {"ops": list(ops), "note": f"dry run: {', '.join(ops)} only, at 8x8" if ctx.dry_run else ""}
    # The kernels first (issues 3 and 4's bandwidth targets need only them and the reference), then the
    # compilations, so a compile that overruns the box leaves every kernel measured.
    passes = ("reference,cpp,triton,cuda", "compiled")
    with _keeping(out, records):
        for i, providers in enumerate(passes):
            ctx.sh(f"op benchmarks {i + 1} of {len(passes)}",
                   [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
                    *(f"benchmarks/test_op_{op}.py" for op in ops)],
                   env=_bench_env(ctx, records, DIN_FAST_BENCH_OP_PROVIDERS=providers))
    return out


def stage_models(ctx: Context) -> dict:
    records = ctx.work / "models.jsonl"
    if ctx.dry_run:
        passes = [dict(DIN_FAST_BENCH_MODELS="defian-s",
                       DIN_FAST_BENCH_PROVIDERS="reference,default,optimized")]
    else:  # the compilations last, so a compile that overruns the box leaves the eager numbers measured
        passes = [dict(DIN_FAST_BENCH_PROVIDERS="reference,default:bfloat16,optimized:bfloat16"),
                  dict(DIN_FAST_BENCH_PROVIDERS="compiled:bfloat16")]
    out: dict = {"note": "dry run: defian-s at 8x8 without the compiled provider (minutes of CPU compile)"
                 if ctx.dry_run else ""}
    with _keeping(out, records):
        for i, extra in enumerate(passes):
            ctx.sh(f"model benchmarks {i + 1} of {len(passes)}",
                   [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
                    "benchmarks/test_models.py"], env=_bench_env(ctx, records, **extra))
        cases = sorted({tuple(r["extra_info"][k] for k in ("model", "scale", "size", "batch"))
                        for r in _read_records(records)})
        out["flops"] = ctx.worker("flops", json.dumps(cases)).get("flops", [])
    return out


@contextlib.contextmanager
def _keeping(out: dict, records: Path) -> Iterator[None]:
    """Put the benchmark records written so far into ``out``, also when the stage fails or overruns."""
    try:
        yield
    except StageFailed as exc:
        out["records"] = _read_records(records)
        exc.results = out
        raise
    out["records"] = _read_records(records)


def stage_train(ctx: Context) -> dict:
    result = ctx.worker("train", check=False)
    if not result.get("ok"):
        raise StageFailed(result.get("problem", "the training worker wrote no result"), result)
    return result


def stage_upscale(ctx: Context) -> dict:
    result = ctx.worker("upscale", check=False)
    if not result.get("ok"):
        raise StageFailed(result.get("problem", "the upscale worker wrote no result"), result)
    return result


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Stage groups run one after another; the stages of a group run at the same time. Boxes in seconds.
def make_stages() -> list[list[Stage]]:
    return [[Stage("environment", 15, stage_environment)],
            [Stage("build", 145, stage_build)],
            [Stage("tests", 60, stage_tests), Stage("sanitizer", 60, stage_sanitizer)],
            [Stage("bandwidth", 10, stage_bandwidth)],
            [Stage("ops", 110, stage_ops)],
            [Stage("models", 110, stage_models)],
            [Stage("train", 30, stage_train), Stage("upscale", 30, stage_upscale)]]


def run_group(ctx: Context, group: list[Stage], end: float) -> None:
    """Run the stages of one group (threads: each stage waits on its own subprocesses) until ``end``."""
    import threading

    def one(stage: Stage) -> None:
        sub = Context(ctx.out, ctx.work / stage.name, ctx.dry_run, deadline=end)
        sub.work.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            stage.results = stage.run(sub)
            stage.status = "ok"
        except StageTimeout as exc:
            stage.status, stage.note, stage.results = "timeout", str(exc), exc.results
        except StageFailed as exc:
            stage.status, stage.note, stage.results = "failed", str(exc), exc.results
        except Exception as exc:  # a bug in this script must not cost the later stages
            stage.status, stage.note = "failed", f"{type(exc).__name__}: {exc}"
        stage.seconds = time.monotonic() - start
        if stage.status == "ok" and stage.results.get("note"):
            stage.note = stage.results["note"]

    threads = [threading.Thread(target=one, args=(s,)) for s in group]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------------------------------------- report
def _records_doc(stages: dict[str, Stage], env: dict) -> dict:
    from din_fast.bench import commit_info, machine_info

    records = [r for name in ("ops", "models") for r in stages[name].results.get("records", [])]
    return {"machine_info": machine_info(), "commit_info": commit_info(),
            "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": records, "environment": env}


def bandwidth_rows(records: list[dict], copy_bytes_per_s: float | None) -> list[list[str]]:
    """Per din_fast kernel benchmark: the bandwidth it reaches (min_bytes / median) and its share of the
    measured copy bandwidth (issues 3 and 4: ≥ 70 % at their GPU shapes)."""
    rows = []
    for r in records:
        extra = r.get("extra_info", {})
        if extra.get("provider") not in ("cuda", "triton", "cpp") or not extra.get("min_bytes"):
            continue
        rate = extra["min_bytes"] / r["stats"]["median"]
        if copy_bytes_per_s:
            share = rate / copy_bytes_per_s
            verdict = f"{share:.0%} ({'met' if share >= BANDWIDTH_TARGET else 'missed'})"
        else:
            verdict = "–"
        rows.append([r["group"], extra["provider"], f"{rate / 1e9:.0f}", verdict])
    return rows


def gpu_preference(records: list[dict]) -> dict[str, list[str]]:
    """For ``backends.GPU_PREFERENCE``: per op, cuda and triton ordered by their summed medians over the
    groups where both ran (float32 and bfloat16, forward and forward+backward)."""
    by_group: dict[str, dict[str, float]] = {}
    for r in records:
        extra = r.get("extra_info", {})
        if extra.get("provider") in ("cuda", "triton"):
            by_group.setdefault(r["group"], {"op": extra["op"]})[extra["provider"]] = r["stats"]["median"]
    totals: dict[str, dict[str, float]] = {}
    for group in by_group.values():
        if "cuda" in group and "triton" in group:
            t = totals.setdefault(group["op"], {"cuda": 0.0, "triton": 0.0})
            t["cuda"] += group["cuda"]
            t["triton"] += group["triton"]
    return {op: sorted(t, key=t.get) for op, t in sorted(totals.items())}


def flop_rows(flops: list[dict], records: list[dict], matmul_flops_per_s: float | None) -> list[list[str]]:
    """Per model case: conv FLOPs per call, the floor (FLOPs / matmul rate), the fastest din_fast time
    and its multiple of the floor (issue 8: within 2×)."""
    from din_fast.bench import BASELINES, format_ms, record_label

    def key(extra: dict) -> tuple:
        return tuple(extra.get(k) for k in ("model", "scale", "size", "batch"))

    rows = []
    for f in flops:
        ours = [r for r in records if r["extra_info"].get("provider") not in BASELINES
                and key(r["extra_info"]) == key(f) and r["extra_info"].get("mode") == "inference"]
        floor = f["flops"] / matmul_flops_per_s if matmul_flops_per_s else None
        best = min(ours, key=lambda r: r["stats"]["median"]) if ours else None
        fastest = "–" if best is None else f"{format_ms(best['stats']['median'])} ({record_label(best)})"
        rows.append([f"{f['model']} x{f['scale']} b{f['batch']} {f['size']}²", f"{f['flops'] / 1e9:.1f}",
                     format_ms(floor), fastest,
                     "–" if floor is None or best is None else f"{best['stats']['median'] / floor:.1f}×"])
    return rows


def _table(head: Sequence[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _header(stages: dict[str, Stage], args: argparse.Namespace, started: str, total: float) -> list[str]:
    from din_fast.bench import machine_info, machine_name

    env = stages["environment"].results
    device = env.get("device") or "no GPU"
    commit = env.get("commit", {})
    tools = "; ".join(f"{k}: {v}" for k, v in env.get("tools", {}).items())
    return [f"# GPU check{' (dry run on CPU)' if args.dry_run else ''}: {device}", "",
            "Written by `scripts/gpu_check.sh`; do not edit by hand. "
            "Ratios: baseline median / din_fast median (> 1: din_fast is faster).", "",
            f"- machine: {machine_name(machine_info())}",
            f"- device: {env.get('device_detail', device)}; {tools}",
            f"- python {env.get('python', '?')}, torch {env.get('torch', '?')} "
            f"(CUDA {env.get('torch_cuda', '?')}), triton {env.get('triton', '?')}",
            f"- commit {commit.get('id', '?')}{' with local changes' if commit.get('dirty') else ''}; "
            f"taken {started}; {total:.0f} s of the {budget(stages):.0f} s budget",
            f"- command: `bash scripts/gpu_check.sh {' '.join(args.argv)}`"]


def budget(stages: dict[str, Stage]) -> float:
    """The stages' time: the largest box of each group of stages that run at the same time."""
    groups: dict[int, float] = {}
    for s in stages.values():
        if not s.status.startswith("skipped"):
            groups[s.group] = max(groups.get(s.group, 0.0), s.box)
    return sum(groups.values())


def _ceilings(bw: dict) -> list[str]:
    if not bw.get("copy_bytes_per_s"):
        return ["(not measured)"]
    return [f"- copy: {bw['copy_bytes_per_s'] / 1e9:.0f} GB/s (device to device, bytes read + written, "
            f"{bw['copy_mib']} MiB buffers, median of {bw['repeats']})",
            f"- matmul: {bw['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s ({bw['matmul_dtype']}, "
            f"{bw['matmul_n']}³, median of {bw['repeats']})"]


def _ops_section(ops: list[dict], info: dict, copy: float | None) -> list[str]:
    from din_fast.bench import format_comparison

    if not ops:
        return ["(no op benchmark finished)"]
    lines = [format_comparison(ops, info, markdown=True), "",
             "Bandwidth of the din_fast kernels (fewest bytes a call must move ÷ median) against the copy "
             f"bandwidth; target {BANDWIDTH_TARGET:.0%} at the issues' GPU shapes:", ""]
    lines += _table(("case", "kernel", "GB/s", "share of copy"), bandwidth_rows(ops, copy))
    pref = gpu_preference(ops)
    if pref:
        entries = ", ".join(f'"{op}": {tuple(v)!r}' for op, v in pref.items())
        lines += ["", "Suggested `backends.GPU_PREFERENCE` (faster first, summed over dtypes and modes):", "",
                  "```python", f"GPU_PREFERENCE = {{{entries}}}", "```"]
    return lines


def _models_section(models: dict, info: dict, matmul: float | None) -> list[str]:
    from din_fast.bench import format_comparison

    if not models.get("records"):
        return ["(no model benchmark finished)"]
    lines = [format_comparison(models["records"], info, markdown=True)]
    if models.get("flops"):
        lines += ["", "Convolution FLOP floor (conv and matmul FLOPs of one call ÷ the measured matmul "
                  "rate); issue 8: the bf16 fused path within 2× of it:", ""]
        lines += _table(("case", "GFLOP per call", "floor ms", "fastest din_fast ms", "× floor"),
                        flop_rows(models["flops"], models["records"], matmul))
    return lines


def _checks_section(stages: dict[str, Stage]) -> list[str]:
    lines = []
    tests = stages["tests"].results
    if tests:
        failing = f"; failing: {', '.join(tests['failures'])}" if tests.get("failures") else ""
        lines.append(f"- tests ({', '.join(tests.get('files', []))}): {tests.get('passed', '?')} passed, "
                     f"{tests.get('failed', '?')} failed, {tests.get('errors', '?')} errors, "
                     f"{tests.get('skipped', '?')} skipped{failing}")
    san = stages["sanitizer"].results
    for tool in ("memcheck", "racecheck"):
        if tool in san:
            lines.append(f"- {tool} over {len(san[tool]['calls'])} kernel calls ({san[tool]['impls']}): "
                         f"{'; '.join(san[tool]['summary']) or 'no summary printed'}")
    if "calls" in san:
        lines.append(f"- kernel calls without the sanitizer: {len(san['calls'])}")
    train = stages["train"].results
    if train.get("command"):
        lines.append(f"- train: `{train['command']}`: loss {train.get('first_loss')} → "
                     f"{train.get('last_loss')} over {train.get('steps')} steps, "
                     f"{train.get('seconds_per_step')} s per step with start-up; "
                     f"checkpoint loads and runs: {train.get('checkpoint_loads')}")
    if stages["upscale"].results.get("summary"):
        lines.append(f"- upscale: {stages['upscale'].results['summary']}")
    return lines or ["(none ran)"]


def render(stages: dict[str, Stage], args: argparse.Namespace, started: str, total: float) -> str:
    """The report: header, stage table, ceilings, op and model comparisons, checks, failures."""
    from din_fast.bench import machine_info

    info = machine_info()
    bw = stages["bandwidth"].results
    lines = _header(stages, args, started, total) + ["", "## Stages", ""]
    lines += _table(("stage", "status", "seconds", "box s", "note"),
                    [[s.name, s.status, f"{s.seconds:.0f}", f"{s.box:.0f}", s.note.replace("|", "/")]
                     for s in stages.values()])
    lines += ["", "## Ceilings", ""] + _ceilings(bw)
    lines += ["", "## Ops", ""] + _ops_section(stages["ops"].results.get("records", []), info,
                                                 bw.get("copy_bytes_per_s"))
    lines += ["", "## Models", ""] + _models_section(stages["models"].results, info,
                                                      bw.get("matmul_flops_per_s"))
    lines += ["", "## Tests, sanitizer, training, upscale", ""] + _checks_section(stages)
    failed = [s for s in stages.values() if s.status in ("failed", "timeout")]
    if failed:
        lines += ["", "## Failures", ""]
        for s in failed:
            lines += [f"### {s.name}: {s.status}", "", s.note, ""]
            tail = _stage_tail(args, s.name)
            if tail:
                lines += ["```", tail, "```", ""]
    return "\n".join(lines) + "\n"


def _stage_tail(args: argparse.Namespace, name: str, lines: int = 25) -> str:
    work = Path(args.work) / name
    outs = sorted(work.glob("*.out"), key=lambda p: p.stat().st_mtime) if work.exists() else []
    if not outs:
        return ""
    return "\n".join(outs[-1].read_text(errors="replace").splitlines()[-lines:])


def write_report(stages: dict[str, Stage], args: argparse.Namespace, started: str, total: float) -> None:
    out = Path(args.out)
    env = stages["environment"].results
    doc = {"dry_run": args.dry_run, "started": started, "seconds": total, "command": args.argv,
           "stages": {name: {k: v for k, v in asdict(s).items() if k != "run"} for name, s in stages.items()}}
    try:
        report = render(stages, args, started, total)
    except Exception as exc:  # the JSON still says everything; the markdown says why it is short
        report = (f"# GPU check\n\nThe report could not be rendered ({type(exc).__name__}: {exc}); "
                  "gpu-check.json has the results.\n")
    for name, text in (("gpu-check.json", json.dumps(doc, indent=1, default=str)),
                       ("benchmarks.json", json.dumps(_records_doc(stages, env), indent=1, default=str)),
                       ("gpu-check.md", report)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# --------------------------------------------------------------------------------------------- workers
def worker_environment(dry_run: bool) -> dict:
    import platform

    import torch

    from din_fast.bench import commit_info

    out = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "commit": commit_info()}
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = p.name
        l2_mib = getattr(p, "L2_cache_size", 0) / 2**20
        out["device_detail"] = (f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                                f"{p.total_memory / 2**30:.0f} GiB, L2 {l2_mib:.0f} MiB")
    elif not dry_run:
        raise RuntimeError("torch sees no CUDA device (use --dry-run on a machine without a GPU)")
    return out


def worker_kernels(dry_run: bool) -> dict:
    import torch

    import din_fast.ops  # noqa: F401  (registers the ops)
    from din_fast import _extension, backends

    out = {"cuda_available": torch.cuda.is_available(), "load_error": None if _extension.has_ops() else
           str(_extension.load_error())}
    impls = {op: backends.implementations(op) for op in backends.op_names()}
    out["implementations"] = impls
    out["cuda_kernels"] = [op for op, i in impls.items() if i["cuda"] == "built"]
    out["cpp_kernels"] = [op for op, i in impls.items() if i["cpp"] == "built"]
    return out


def worker_kernel_calls(dry_run: bool, impls: str) -> dict:
    """A small forward + backward of every kernel of ``impls`` (float32, float16, bfloat16 on CUDA)."""
    import torch

    import din_fast
    from din_fast import backends, ops

    sys.path.insert(0, str(ROOT / "tests"))
    from op_inputs import ARGS, GPU_SHAPES, flat, rebuild, requiring_grad

    device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
    dtypes = (torch.float32, torch.float16, torch.bfloat16) if device == "cuda" else (torch.float32,)
    calls = []
    for op in backends.op_names():
        if op not in ARGS:  # dense_block: no kernel of its own (its cpp one chains conv3x3's, called here)
            continue
        for impl in impls.split(","):
            for dtype in dtypes:
                if impl == "triton" and dtype != torch.float32:
                    continue  # Triton compiles per dtype; one is enough for the sanitizer
                if backends.unavailable_reason(op, impl, device, dtype) is not None:
                    continue
                call = {"op": op, "impl": impl, "dtype": str(dtype).removeprefix("torch.")}
                try:
                    gen = torch.Generator().manual_seed(0)
                    args = ARGS[op](**GPU_SHAPES[op], generator=gen)
                    args = requiring_grad(rebuild(args, [t.to(device, dtype) for t in flat(args)]))
                    with din_fast.use_backend(impl):
                        out = getattr(ops, op)(*args)
                        torch.autograd.grad(out, flat(args), torch.ones_like(out))
                    if device == "cuda":
                        torch.cuda.synchronize()
                except Exception as exc:  # recorded: the sanitizer stage fails on it
                    call["error"] = f"{type(exc).__name__}: {exc}"[:500]
                calls.append(call)
    return {"device": device, "calls": calls}


def _median_time(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    import statistics

    import torch

    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_bandwidth(dry_run: bool) -> dict:
    """Copy bandwidth (bytes read + written) over buffers much larger than L2, and the bf16 (CPU:
    float32) matmul rate, on random data."""
    import torch

    cuda = torch.cuda.is_available() and not dry_run
    device = "cuda" if cuda else "cpu"
    mib = 1024 if cuda else 64
    src = torch.rand(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    repeats = 20 if cuda else 5
    copy = _median_time(lambda: dst.copy_(src), repeats, cuda)
    n = 8192 if cuda else 512
    dtype = torch.bfloat16 if cuda else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    mm = _median_time(lambda: a @ b, repeats, cuda)
    return {"copy_bytes_per_s": 2 * mib * 2**20 / copy, "copy_mib": mib, "matmul_flops_per_s": 2 * n**3 / mm,
            "matmul_n": n, "matmul_dtype": str(dtype).removeprefix("torch."), "repeats": repeats}


def worker_flops(dry_run: bool, cases_json: str) -> dict:
    """Convolution and matmul FLOPs of one reference-backend forward of each (model, scale, size, batch)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from din_fast import create_model, use_backend

    device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
    out = []
    for model_name, scale, size, batch in json.loads(cases_json):
        model = create_model(model_name, scale=scale).to(device).eval()
        x = torch.rand(batch, 3, size, size, device=device)
        with use_backend("reference"), torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
        out.append({"model": model_name, "scale": scale, "size": size, "batch": batch,
                    "flops": counter.get_total_flops()})
    return {"flops": out}


def _training_images(folder: Path, count: int = 6, side: int = 256) -> None:
    """HR images for the short training run: the packaged sample, enlarged, flipped and rotated."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sample = Image.open(ROOT / "din_fast" / "assets" / "sample.png").convert("RGB").resize((side, side),
                                                                                         Image.BICUBIC)
    for i in range(count):
        image = sample.rotate(90 * (i % 4))
        if i >= 4:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        image.save(folder / f"{i:04d}.png")


def worker_train(dry_run: bool) -> dict:
    """``din-fast train`` for a few dozen steps; the loss must fall and the checkpoint must load and run."""
    import csv

    import torch

    from din_fast import load_model

    work = Path(tempfile.mkdtemp(prefix="din-fast-train-"))
    _training_images(work / "hr")
    cmd = [PY, "-m", "din_fast", "train", "--model", "defian-s" if dry_run else "din", "--scale", "4",
           "--hr", str(work / "hr"), "--out", str(work / "run"), "--val-every", "0", "--ckpt-every", "0",
           "--workers", "0", "--seed", "0", "--learning-rate", "5e-4"]
    if dry_run:
        cmd += ["--device", "cpu", "--steps", "12", "--batch", "2", "--patch", "16", "--log-every", "2",
                "--model-arg", "channels=16", "--model-arg", "modules=1"]
    else:
        cmd += ["--device", "cuda", "--amp", "--steps", "60", "--batch", "8", "--patch", "48",
                "--log-every", "5"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    print(proc.stdout[-20000:], proc.stderr[-20000:], sep="\n")
    shown = " ".join(c if " " not in c else repr(c) for c in cmd[2:]).replace(str(work), "TMP")
    result: dict = {"command": f"din-fast {shown.removeprefix('din_fast ')}", "seconds": seconds}
    if proc.returncode != 0:
        return {**result, "ok": False, "problem": f"din-fast train exited with {proc.returncode}: "
                f"{_last_line(proc.stderr or proc.stdout)}"}
    with open(work / "run" / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
    steps = int(cmd[cmd.index("--steps") + 1])
    result.update(steps=steps, losses=losses, seconds_per_step=round(seconds / steps, 3),
                  first_loss=round(losses[0], 4) if losses else None,
                  last_loss=round(losses[-1], 4) if losses else None)
    k = max(1, len(losses) // 3)
    falls = len(losses) >= 2 and sum(losses[-k:]) / k < sum(losses[:k]) / k
    try:
        model = load_model(str(work / "run" / "last.safetensors"))
        device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
        with torch.inference_mode():
            y = model.to(device)(torch.rand(1, 3, 16, 16, device=device))
        result["checkpoint_loads"] = bool(y.shape == (1, 3, 64, 64) and torch.isfinite(y).all())
    except Exception as exc:  # recorded as the problem
        result["checkpoint_loads"] = False
        result["load_error"] = f"{type(exc).__name__}: {exc}"
    shutil.rmtree(work, ignore_errors=True)
    problems = [p for p, bad in (("the loss did not fall", not falls),
                                 ("the checkpoint did not load and run", not result["checkpoint_loads"]))
                if bad]
    return {**result, "ok": not problems, "problem": "; ".join(problems)}


def worker_upscale(dry_run: bool) -> dict:
    """``din-fast upscale`` of the sample in float32 and bfloat16 on the GPU; PSNR between the two."""
    import numpy as np
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="din-fast-upscale-"))
    sample = ROOT / "din_fast" / "assets" / "sample.png"
    device = "cpu" if dry_run else "cuda"
    outputs, seconds = {}, {}
    for dtype in ("float32",) if dry_run else ("float32", "bfloat16"):
        target = work / f"sample_x4_{dtype}.png"
        cmd = [PY, "-m", "din_fast", "upscale", str(sample), "-o", str(target), "--device", device,
               "--dtype", dtype]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds[dtype] = round(time.monotonic() - start, 2)
        print(proc.stdout[-5000:], proc.stderr[-5000:], sep="\n")
        if proc.returncode != 0:
            return {"ok": False, "problem": f"upscale --dtype {dtype} exited with {proc.returncode}: "
                    f"{_last_line(proc.stderr or proc.stdout)}", "seconds": seconds}
        outputs[dtype] = np.asarray(Image.open(target).convert("RGB"), dtype=np.float64)
    shutil.rmtree(work, ignore_errors=True)
    size = outputs["float32"].shape
    if dry_run:
        return {"ok": size[:2] == (512, 512), "seconds": seconds, "problem": "" if size[:2] == (512, 512) else
                f"output size {size}", "summary": f"dry run: float32 on CPU only ({size[1]}x{size[0]}); "
                "--dtype bfloat16 needs a CUDA device"}
    mse = float(((outputs["float32"] - outputs["bfloat16"]) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    ok = psnr >= 35  # bf16 rounding of the activations; a wrong kernel gives far less
    return {"ok": ok, "psnr_bf16_vs_fp32": psnr, "seconds": seconds,
            "problem": "" if ok else f"bfloat16 output only {psnr:.1f} dB from float32 (expected ≥ 35 dB)",
            "summary": f"sample x4 in bfloat16 vs float32: PSNR {psnr:.1f} dB (≥ 35 expected); seconds per "
                       f"command (with start-up) {seconds}"}


WORKERS = {"environment": worker_environment, "kernels": worker_kernels, "kernel_calls": worker_kernel_calls,
           "bandwidth": worker_bandwidth, "flops": worker_flops, "train": worker_train,
           "upscale": worker_upscale}


def run_worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py _worker")
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("result", type=Path)
    parser.add_argument("args", nargs="*")
    parser.add_argument("--impls", default=None)
    parser.add_argument("--dry-run", action="store_true")
    a = parser.parse_args(argv)
    kwargs = {"impls": a.impls} if a.impls else {}
    result = WORKERS[a.name](a.dry_run, *a.args, **kwargs)
    a.result.write_text(json.dumps(result, indent=1, default=str))
    return 0


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return run_worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for gpu-check.md, gpu-check.json, gpu-check.log, benchmarks.json")
    parser.add_argument("--dry-run", action="store_true", help="the same pipeline on CPU with tiny shapes")
    names = [s.name for g in make_stages() for s in g]
    parser.add_argument("--stages", default=",".join(names),
                        help=f"comma-separated subset of {', '.join(names)}")
    parser.add_argument("--box", action="append", default=[], metavar="STAGE=SECONDS",
                        help="change a stage's time box (repeatable)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    args.argv = argv
    wanted = args.stages.split(",")
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    boxes = {}
    for item in args.box:
        name, _, seconds = item.partition("=")
        if name not in names or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--box {item!r}: expected STAGE=SECONDS with a stage from {', '.join(names)}")
        boxes[name] = float(seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or tempfile.mkdtemp(prefix="gpu-check-")
    (out / "gpu-check.log").write_text(f"gpu_check {' '.join(argv)}\n")
    groups = make_stages()
    stages = {s.name: s for g in groups for s in g}
    for i, group in enumerate(groups):
        for s in group:
            s.group = i
            s.box *= DRY_RUN_BOX_SCALE if args.dry_run else 1
    for name, seconds in boxes.items():
        stages[name].box = seconds
    ctx = Context(out, Path(args.work), args.dry_run)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    end = t0
    for group in groups:
        todo = [s for s in group if s.name in wanted]
        for s in group:
            if s.name not in wanted:
                s.status = "skipped (not in --stages)"
        if not todo:
            continue
        # The group may run until the previous group's end plus its box: time an earlier group left unused
        # passes on. At least half its box even when the previous group overran (its processes take a few
        # seconds to stop).
        box = max(s.box for s in todo)
        end = max(end + box, time.monotonic() + box / 2)
        print(f"[gpu_check] {', '.join(s.name for s in todo)}: until +{end - t0:.0f} s", flush=True)
        run_group(ctx, todo, end)
        for s in todo:
            print(f"[gpu_check] {s.name}: {s.status} in {s.seconds:.0f} s {s.note}", flush=True)
        write_report(stages, args, started, time.monotonic() - t0)
    write_report(stages, args, started, time.monotonic() - t0)
    print((out / "gpu-check.md").read_text().split("## Ops", 1)[0])
    return 0 if all(s.status in ("ok",) or s.status.startswith("skipped") for s in stages.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
