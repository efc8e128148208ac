"""rnnkit against a NumPy loop, PyTorch and JAX on the workloads of issue 3 (W1-W3, the Elman
network) and issue 5 (W2-GRU, W2-LSTM, W2-LSTM2: W2 with GRU/LSTM layers), in one command.

    python benchmarks/run.py                       # W1-W3, W2-GRU, W2-LSTM (several minutes)
    python benchmarks/run.py --quick               # fewer epochs (a few minutes)
    python benchmarks/run.py --workloads W1,W2 --threads 1 --epochs 5
    python benchmarks/run.py --workloads W2-LSTM2  # the two-layer LSTM: only when asked for
    python benchmarks/run.py --runs 3              # three runs; then issue 3's targets in each

For each workload (benchmarks/workloads.py) and thread count, every implementation
(benchmarks/impls.py: rnnkit C++, the rnnkit reference, and PyTorch and JAX when installed)
runs in its own worker process (benchmarks/worker.py) from the same initial weights on the same
data. The first epoch is the warm-up and the correctness check: its losses must agree across
implementations (relative 1e-9 in float64, 1e-3 in float32) or the run fails. Then the timed
epochs run interleaved, one process at a time, in a rotating order, so that a busy machine
slows every implementation alike; each epoch is timed inside its worker. The report (stdout, in
markdown) gives per workload and thread count the seconds per epoch (median, min, max), each
peer's time over rnnkit's, GFLOP/s (issue 3's count), the fraction of the FMA peak measured by
rnnkit._core._fma_peak_gflops, then the whole-process wall time and peak memory of
examples/sine_wave.py --no-plot and of its PyTorch twin, and the issue's targets. Progress goes
to stderr. Exit status 1 if the losses disagree or an implementation fails.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import impls  # noqa: E402
import workloads  # noqa: E402
from worker import PREFIX  # noqa: E402

# timed epochs after the warm-up: (full, quick)
DEFAULT_EPOCHS = {"W1": (20, 5), "W2": (7, 2), "W3": (3, 1),
                  "W2-GRU": (5, 1), "W2-LSTM": (5, 1), "W2-LSTM2": (3, 1)}
# the workloads run without --workloads: issue 3's and the one-layer GRU and LSTM of issue 5
# (W2-LSTM2, three times W2-LSTM's work, only when asked for)
DEFAULT_WORKLOADS = "W1,W2,W3,W2-GRU,W2-LSTM"
# Above one thread, the pause before each timed epoch: the previous implementation's idle
# threads stop spinning in it (OpenBLAS's spin for about 0.1 s after each call; OpenMP and
# XLA's pools more briefly) and would otherwise take the core from the next one's threads.
SETTLE_SECONDS = 0.3
# seconds of timed epochs each implementation gets per workload and thread count: (full, quick);
# the reference (a Python loop) gets less. An implementation whose first epoch already takes
# longer than its budget is timed by that first epoch alone.
BUDGET = (40.0, 6.0)
REFERENCE_BUDGET = (15.0, 3.0)


def import_core():
    """rnnkit._core, imported with fd 1 pointed at stderr: an editable install's rebuild check
    prints there, and stdout is kept for the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        from rnnkit import _core
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    return _core


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def thread_env(threads: int) -> Dict[str, str]:
    """The environment that limits every library to `threads` threads (read at import)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "RNNKIT_NUM_THREADS"):
        env[var] = str(threads)
    flags = env.get("XLA_FLAGS", "")
    if threads == 1:   # (what holds XLA to one core is the pinning: worker.pin)
        flags += " --xla_cpu_multi_thread_eigen=false"
    env["XLA_FLAGS"] = flags.strip()
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


# ---------------------------------------------------------------------------- workers
class Worker:
    def __init__(self, impl: str, workload: str, threads: int, tiny: bool):
        self.impl = impl
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--impl", impl,
               "--workload", workload, "--threads", str(threads)] + (["--tiny"] if tiny else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=thread_env(threads))

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                msg = json.loads(line[len(PREFIX):])
                if "error" in msg:
                    raise RuntimeError(f"{self.impl} worker failed:\n{msg['error']}")
                return msg
        self.stderr.seek(0)
        raise RuntimeError(f"{self.impl} worker exited ({self.proc.wait()}):\n"
                           + self.stderr.read()[-3000:])

    def epoch(self) -> dict:
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def rel_diff(a: Dict[str, float], b: Dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in b)


def rel_norm(a: List[float], b: List[float]) -> float:
    """|a - b| / |b|: how far apart two update fingerprints (impls.update_fingerprint) are."""
    x, y = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(x - y) / max(float(np.linalg.norm(y)), 1e-300))


def run_session(name: str, threads: int, impl_names: List[str], epochs: int, budget: float,
                quick: bool, tiny: bool) -> dict:
    """One workload at one thread count: warm-up/check epoch, then interleaved timed epochs."""
    w = workloads.get_workload(name, tiny=tiny)
    out = {"workload": name, "threads": threads, "flops": w.flops_per_epoch(),
           "dtype": w.dtype, "impls": {}, "notes": [], "errors": []}
    workers: Dict[str, Worker] = {}
    for impl in impl_names:
        if not impls.implements(impl, name):
            continue
        why = impls.available(impl)
        if why:
            out["notes"].append(f"{impls.LABELS[impl]} skipped: {why}")
            continue
        workers[impl] = Worker(impl, name, threads, tiny)

    def fail(impl: str, exc: Exception) -> None:             # report a failed worker, go on
        out["errors"].append(f"{name} {threads} threads: {exc}")
        log("FAILED: " + out["errors"][-1])
        workers.pop(impl).close()
        out["impls"].pop(impl, None)

    try:
        for impl, wk in list(workers.items()):
            try:
                ready = wk.receive()
            except RuntimeError as exc:
                fail(impl, exc)
                continue
            out["impls"][impl] = {"setup_seconds": ready["setup_seconds"],
                                  "compile_seconds": ready["compile_seconds"], "times": [],
                                  "cpu": []}
            out["notes"] += [n for n in ready["notes"] if n not in out["notes"]]
        # first epoch: warm-up and the agreement check
        for impl, wk in list(workers.items()):
            try:
                msg = wk.epoch()
            except RuntimeError as exc:
                fail(impl, exc)
                continue
            r = out["impls"][impl]
            r["first_seconds"], r["first_cpu"] = msg["seconds"], msg["cpu_seconds"]
            r["losses"], r["update"] = msg["losses"], msg.get("update")
            log(f"  {name} {threads}t {impl:9s} first epoch {msg['seconds']:.4f} s  "
                f"losses {msg['losses']}")
        base = "rnnkit" if "rnnkit" in out["impls"] else next(iter(out["impls"]), None)
        out["base"] = base

        def mismatch(what: str) -> None:
            out["errors"].append(f"{name} {threads} threads: {what}")
            log("MISMATCH: " + out["errors"][-1])

        for impl, r in out["impls"].items():
            r["rel_diff"] = rel_diff(r["losses"], out["impls"][base]["losses"])
            if r["rel_diff"] > w.tolerance:
                mismatch(f"first-epoch losses of {impl} differ from {base}'s by a relative "
                         f"{r['rel_diff']:.2e} > {w.tolerance:g}: {r['losses']} vs "
                         f"{out['impls'][base]['losses']}")
            # In float64 (W1) the parameters' first-epoch update must agree too: the losses
            # move too little at lr 1e-4 to show, say, another truncation (3e-9). In float32
            # Adam rounds differently from one library to the next (a gradient near 0 sets
            # the sign of a whole lr step), so there the losses are the check.
            ref_update = out["impls"][base].get("update")
            if w.dtype == "float64" and r.get("update") and ref_update:
                r["update_rel_diff"] = rel_norm(r["update"], ref_update)
                if r["update_rel_diff"] > w.tolerance:
                    mismatch(f"the first epoch's parameter update of {impl} differs from "
                             f"{base}'s by a relative {r['update_rel_diff']:.2e} > "
                             f"{w.tolerance:g}")
        # how many timed epochs each gets: as many as asked, within its time budget
        counts = {}
        for impl in workers:
            r = out["impls"][impl]
            first = r["first_seconds"]
            limit = min(budget, REFERENCE_BUDGET[quick]) if impl == "reference" else budget
            counts[impl] = min(epochs, int(limit // max(first, 1e-9)))
            if counts[impl] == 0:                       # too slow: its first epoch is the time
                r["times"], r["cpu"], r["first_only"] = [first], [r["first_cpu"]], True
                out["notes"].append(
                    f"{name}, {threads} thread(s): {impls.LABELS[impl]} timed by its first epoch "
                    f"only ({first:.2f} s, over its budget of {limit:g} s); marked *")
            elif counts[impl] < epochs:
                out["notes"].append(
                    f"{name}, {threads} thread(s): {impls.LABELS[impl]} ran {counts[impl]} timed "
                    f"epoch(s), not {epochs} (an epoch takes {first:.2f} s; budget {limit:g} s)")
        epochs = max(counts.values(), default=0)
        order = list(workers)
        for rep in range(epochs):
            shift = rep % len(order)
            ran = {}
            for impl in order[shift:] + order[:shift]:
                r = out["impls"].get(impl)
                if r is not None and len(r["times"]) < counts[impl]:
                    if threads > 1 and not tiny:
                        time.sleep(SETTLE_SECONDS)
                    try:
                        msg = workers[impl].epoch()
                    except RuntimeError as exc:
                        fail(impl, exc)
                        continue
                    r["times"].append(msg["seconds"])
                    r["cpu"].append(msg["cpu_seconds"])
                    ran[impl] = msg["seconds"]
            log(f"  {name} {threads}t rep {rep + 1}/{epochs}: " + "  ".join(
                f"{impl} {ran[impl]:.4f}" for impl in order if impl in ran))
    finally:
        for wk in workers.values():
            wk.close()
    return out


# ---------------------------------------------------------------------------- FMA peak
def fma_peaks(thread_counts: List[int], seconds: float, trials: int,
              peaks: Optional[Dict[str, Dict[int, float]]] = None) -> Dict[str, Dict[int, float]]:
    """GFLOP/s of the FMA loop per precision and thread count: the best of `trials` runs and
    of the `peaks` measured before, if given (a peak is what the machine can do; a busy or
    slow moment only lowers a run, and would inflate every "% FMA peak" judged against it)."""
    _core = import_core()
    best: Dict[str, Dict[int, float]] = {}
    for dtype in ("float32", "float64"):
        best[dtype] = {}
        for n in thread_counts:
            runs = [_core._fma_peak_gflops(dtype, seconds, n) for _ in range(trials)]
            best[dtype][n] = max(runs + ([peaks[dtype][n]] if peaks else []))
            log(f"  FMA peak {dtype} {n} thread(s): {max(runs):.1f} GFLOP/s "
                f"(best so far {best[dtype][n]:.1f})")
    return best


# ---------------------------------------------------------------------------- whole process
def editable_rebuild() -> bool:
    """True if rnnkit is a scikit-build-core editable install that rebuilds on import."""
    import rnnkit

    return type(rnnkit.__spec__.loader).__module__.startswith("_editable")


def stage_installed_copy(tmp: str) -> str:
    """A plain copy of the installed package (its Python files and the built _core), for
    running the example as a regular (non-editable) install would."""
    import rnnkit
    from rnnkit import _core

    dest = os.path.join(tmp, "rnnkit")
    src = os.path.join(ROOT, "python", "rnnkit")
    if not os.path.isdir(src):
        src = os.path.dirname(rnnkit.__file__)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(_core.__file__, dest)
    # byte-compiled, as `pip install` leaves a package (else every run compiles the sources,
    # about 50 ms, and PYTHONDONTWRITEBYTECODE would keep it from being cached)
    compileall.compile_dir(dest, quiet=1)
    return tmp


def measure_process(cmd: List[str], env: Optional[Dict[str, str]] = None) -> dict:
    """Wall time and peak resident memory of one child process (os.wait4 gives the child's
    own rusage, as resource.getrusage(RUSAGE_CHILDREN) would if it were the only child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, cwd=ROOT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rmse = next((line.split(":")[1].strip() for line in output.splitlines()
                 if line.startswith("validation RMSE")), "?")
    return {"wall": wall, "maxrss_mib": usage.ru_maxrss / 1024.0, "status": proc.returncode,
            "rmse": rmse, "output_tail": output[-1500:]}


def clean_python(tmp: str) -> Tuple[List[str], str]:
    """The interpreter for the whole-process runs, and how it starts: a throwaway venv's
    python (no pip) starts with `site`, as any installed Python does, but reads none of this
    environment's .pth files (an editable install's rebuild hook, or whatever else lies in
    site-packages: here a sandbox's certifi hook costs 50-60 ms a start); the packages come
    from PYTHONPATH, whose .pth files are not read. Where no venv can be made, `python -S`
    (no site at all) for every row alike."""
    venv = os.path.join(tmp, "venv")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True,
                       capture_output=True, timeout=120)
        return [os.path.join(venv, "bin", "python")], "a clean venv's python"
    except (OSError, subprocess.SubprocessError):
        return [sys.executable, "-S"], "python -S"


def whole_process(quick: bool) -> List[dict]:
    """The first example's whole process (and PyTorch's twin), each row the median of 3 runs
    by wall time (1 with --quick), every row with the same interpreter (clean_python) and the
    installed packages on PYTHONPATH; an editable rnnkit as a plain staged copy of it."""
    import site

    rows = []
    repeats = 1 if quick else 3
    example = [os.path.join(ROOT, "examples", "sine_wave.py"), "--no-plot"]
    with tempfile.TemporaryDirectory() as tmp:
        python, how = clean_python(tmp)
        packages = site.getsitepackages()
        staged = [stage_installed_copy(tmp)] if editable_rebuild() else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(staged + packages))
        copy = "installed copy" if staged else "installed"
        runs = [(f"rnnkit: examples/sine_wave.py --no-plot ({copy}, {how})", python + example),
                ("rnnkit: imports only (numpy, rnnkit._core)",
                 python + ["-c", "import numpy, rnnkit._core"])]
        if impls.available("torch") is None:
            runs.append(("PyTorch: benchmarks/sine_wave_torch.py",
                         python + [os.path.join(HERE, "sine_wave_torch.py")]))
            runs.append(("PyTorch: imports only (numpy, torch)",
                         python + ["-c", "import numpy, torch"]))
        for label, cmd in runs:
            results = [measure_process(cmd, env) for _ in range(repeats)]
            ok = sorted((r for r in results if r["status"] == 0), key=lambda r: r["wall"])
            row = ok[(len(ok) - 1) // 2] if ok else results[0]    # the median (lower middle)
            row["label"], row["runs"] = label, repeats
            if row["status"] != 0:
                log(f"  {label} exited with status {row['status']}:\n{row['output_tail']}")
            log(f"  {label}: {row['wall']:.2f} s, {row['maxrss_mib']:.0f} MiB "
                f"(median of {len(ok)})")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- report
def fmt_s(x: float) -> str:
    return f"{x:.4f}" if x < 10 else f"{x:.2f}"


def summarize(session: dict, peaks: Dict[str, Dict[int, float]]) -> None:
    rn = session["impls"].get("rnnkit")
    rn_median = statistics.median(rn["times"]) if rn and rn["times"] else None
    for impl, r in session["impls"].items():
        times = r["times"]
        if not times:
            continue
        r["median"], r["min"], r["max"] = statistics.median(times), min(times), max(times)
        r["gflops"] = session["flops"] / r["median"] / 1e9
        peak = peaks.get(session["dtype"], {}).get(session["threads"])
        r["peak_fraction"] = r["gflops"] / peak if peak else None
        r["ratio"] = r["median"] / rn_median if rn_median else None
        r["cpu_per_wall"] = sum(r["cpu"]) / sum(times)


def report(args, run: dict, heading: str = "") -> str:
    """One run's report (measure()'s result) as markdown."""
    sessions, peaks, processes = run["sessions"], run["peaks"], run["processes"]
    started, load_before, notes = run["started"], run["load_before"], run["notes"]
    import rnnkit
    from rnnkit import _core

    lines = []
    versions = [f"rnnkit {rnnkit.__version__}", f"numpy {np.__version__}"]
    for mod in ("torch", "jax", "jaxlib"):
        if impls.available(mod) is None:                  # the version without the import
            try:
                versions.append(f"{mod} {importlib.metadata.version(mod)}")
            except importlib.metadata.PackageNotFoundError:
                pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    command = " ".join(["python benchmarks/run.py"] + list(args.argv))
    lines.append(f"## rnnkit benchmark: `{command}`{heading}")
    lines.append("")
    lines.append(f"{cpu}, {os.cpu_count()} logical CPUs, FMA loop on {_core._fma_peak_isa()}; "
                 f"Python {platform.python_version()}; {', '.join(versions)}. "
                 f"Load average {load_before[0]:.2f} before, "
                 f"{load_after[0]:.2f} after; total {time.perf_counter() - started:.0f} s.")
    lines.append("")
    lines.append("| workload | threads | implementation | s/epoch median | min | max | epochs "
                 "| time / rnnkit | GFLOP/s | % FMA peak | CPU/wall | loss rel. diff |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in sessions:
        for impl in impls.IMPLS:
            r = s["impls"].get(impl)
            if not r or "median" not in r:
                continue
            ratio = ("1 (base)" if impl == "rnnkit" else
                     f"{r['ratio']:.2f}×" if r["ratio"] else "–")
            frac = f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] else "–"
            lines.append(
                f"| {s['workload']} {s['dtype']} | {s['threads']} | {impls.LABELS[impl]} | "
                f"{fmt_s(r['median'])} | {fmt_s(r['min'])} | {fmt_s(r['max'])} | "
                f"{len(r['times'])}{'*' if r.get('first_only') else ''} | {ratio} | "
                f"{r['gflops']:.2f} | {frac} | {r['cpu_per_wall']:.2f} | {r['rel_diff']:.1e} |")
    lines.append("")
    lines.append(f"FMA peak (GFLOP/s, the best of the runs: {1 if args.quick else 3} before the "
                 "first workload, one after each): " + "; ".join(
        f"{dtype} " + ", ".join(f"{n} thread{'s' if n > 1 else ''} {v:.1f}"
                                for n, v in by_n.items())
        for dtype, by_n in peaks.items()) + ".")
    lines.append("")
    if processes:
        repeats = processes[0]["runs"]
        lines.append(f"| whole process (first example: 25 epochs, imports included; median of "
                     f"{repeats} run{'s' if repeats > 1 else ''}) | wall s | peak RSS MiB "
                     f"| validation RMSE |")
        lines.append("|---|---|---|---|")
        for p in processes:
            rmse = p["rmse"] if p["rmse"] != "?" else "–"
            status = "" if p["status"] == 0 else f" (exit status {p['status']})"
            lines.append(f"| {p['label']}{status} | {p['wall']:.2f} | {p['maxrss_mib']:.0f} "
                         f"| {rmse} |")
        lines.append("")
    targets = target_lines(sessions, processes)
    if targets:
        lines.append("Targets of issue 3 (medians, ratios from this run):")
        lines.append("")
        lines += targets
        lines.append("")
    all_notes = list(notes)
    for s in sessions:
        all_notes += [n for n in s["notes"] if n not in all_notes]
    if all_notes:
        lines.append("Notes:")
        lines.append("")
        lines += [f"- {n}" for n in all_notes]
    return "\n".join(lines)


def target_results(sessions: List[dict]) -> List[dict]:
    """Each of issue 3's ratio and peak targets that this run measured: its label (`what`),
    its place in workloads.TARGETS (`order`), the value reached (`shown`) and whether it is
    met."""
    by_key = {(s["workload"], s["threads"]): s for s in sessions}
    out = []
    for order, (wl, peer, goal, threads) in enumerate(workloads.TARGETS):
        s = by_key.get((wl, threads))
        rn = s and s["impls"].get("rnnkit")
        if not rn or "median" not in rn:
            continue
        if peer == "peak":
            if rn.get("peak_fraction") is None:
                continue
            got = rn["peak_fraction"]
            out.append({"what": f"{wl}, {threads} thread(s): rnnkit at ≥ {100 * goal:.0f}% of "
                                f"the FMA peak", "order": order, "shown": f"{100 * got:.1f}%",
                        "met": got >= goal})
        else:
            r = s["impls"].get(peer)
            if not r or "median" not in r:
                continue
            got = r["median"] / rn["median"]
            # the fraction of the FMA peak that rnnkit would run at if its epoch took the
            # time the target allows (the peer's median / goal): above 100%, no implementation
            # of the workload's FLOPs meets the target against this run's peer
            pf = rn.get("peak_fraction")
            out.append({"what": f"{wl}, {threads} thread(s): rnnkit ≥ {goal:g}× faster than "
                                f"{impls.LABELS[peer]}", "order": order,
                        "shown": f"{got:.2f}×", "met": got >= goal,
                        "needs": None if pf is None else pf * goal / got,
                        "needs_s": r["median"] / goal})
    return out


def process_target(processes: List[dict]) -> Optional[dict]:
    """The first example's target (whole process, imports included: ≤ 0.5 s, ≤ 80 MiB), from
    the installed copy's run (the first row), if it was measured."""
    if not processes:
        return None
    p = processes[0]
    met = p["status"] == 0 and p["wall"] <= 0.5 and p["maxrss_mib"] <= 80
    return {"what": "first example, whole process: ≤ 0.5 s and ≤ 80 MiB",
            "order": len(workloads.TARGETS),
            "shown": f"{p['wall']:.2f} s, {p['maxrss_mib']:.0f} MiB", "met": met}


def all_targets(sessions: List[dict], processes: List[dict]) -> List[dict]:
    first = process_target(processes)
    return target_results(sessions) + ([first] if first else [])


def needs_text(t: dict) -> str:
    """What a ratio target asks of rnnkit in this run: the epoch time the peer's median allows
    and, where the FMA peak was measured, that time's fraction of the peak."""
    if "needs_s" not in t:
        return ""
    peak = f", {100 * t['needs']:.0f}% of the FMA peak" if t.get("needs") is not None else ""
    return f" (needs ≤ {fmt_s(t['needs_s'])} s/epoch{peak})"


def target_lines(sessions: List[dict], processes: List[dict]) -> List[str]:
    return [f"- {t['what']}: {t['shown']} — {'met' if t['met'] else 'NOT met'}{needs_text(t)}"
            for t in all_targets(sessions, processes)]


def runs_table(runs: List[dict]) -> List[str]:
    """Issue 3's targets in each of several runs of the whole benchmark, side by side, in the
    order of workloads.TARGETS; "–" where a run did not measure one (a failed worker), and
    "met in" counts the runs that measured it. For a ratio target, the last column gives the
    fraction of the FMA peak that meeting it asks of rnnkit in each run (needs_text)."""
    rows: Dict[str, dict] = {}
    for i, run in enumerate(runs):
        for t in all_targets(run["sessions"], run["processes"]):
            row = rows.setdefault(t["what"], {"order": t["order"], "cells": [None] * len(runs)})
            row["cells"][i] = t
    lines = ["| target (bold: met) | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
             + " | met in | needs (% of FMA peak) |", "|---|" + "---|" * len(runs) + "---|---|"]
    for what, row in sorted(rows.items(), key=lambda item: item[1]["order"]):
        measured = [t for t in row["cells"] if t is not None]
        shown = ["–" if t is None else f"**{t['shown']}**" if t["met"] else t["shown"]
                 for t in row["cells"]]
        met = sum(t["met"] for t in measured)
        needs = [t and t.get("needs") for t in row["cells"]]
        needs_shown = ("–" if all(n is None for n in needs) else
                       " / ".join("–" if n is None else f"{100 * n:.0f}%" for n in needs))
        lines.append(f"| {what} | " + " | ".join(shown) + f" | {met} of {len(measured)} "
                     f"| {needs_shown} |")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer timed epochs, shorter FMA loop")
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS,
                   help=f"comma-separated, of {','.join(workloads.WORKLOADS)} "
                        f"(default {DEFAULT_WORKLOADS})")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--epochs", type=int, default=None,
                   help="timed epochs after the warm-up, for every workload (default W1 20, "
                        "W2 7, W3 3, W2-GRU and W2-LSTM 5, W2-LSTM2 3; --quick: 5, 2, 1, 1, 1)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed epochs per implementation, workload and thread count "
                        f"(default {BUDGET[0]:g}, --quick {BUDGET[1]:g}; the reference at most "
                        f"{REFERENCE_BUDGET[0]:g} / {REFERENCE_BUDGET[1]:g})")
    p.add_argument("--impls", default=",".join(impls.IMPLS),
                   help="comma-separated subset of " + ",".join(impls.IMPLS))
    p.add_argument("--no-process", action="store_true",
                   help="skip the whole-process runs of the first example")
    p.add_argument("--tiny", action="store_true",
                   help="shrunken workloads (for the tests: checks agreement, times nothing real)")
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--runs", type=int, default=1,
                   help="run the whole benchmark this many times, each run's table in turn, "
                        "then issue 3's targets in every run side by side (the machine's "
                        "speed varies from minute to minute)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.runs < 1:
        p.error(f"--runs must be at least 1, got {args.runs}")
    import_core()
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    for n in names:
        workloads.get_workload(n)                         # unknown names fail here
    thread_counts = [int(t) for t in args.threads.split(",")]
    impl_names = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = set(impl_names) - set(impls.IMPLS)
    if unknown:
        p.error(f"unknown implementations {sorted(unknown)}; expected some of {impls.IMPLS}")

    runs: List[dict] = []
    try:
        for i in range(args.runs):
            if args.runs > 1:
                log(f"run {i + 1} of {args.runs}")
            run = measure(args, names, thread_counts, impl_names)
            runs.append(run)
            heading = f" (run {i + 1} of {args.runs})" if args.runs > 1 else ""
            print(report(args, run, heading))
            if i + 1 < args.runs:
                print()
            sys.stdout.flush()
    finally:   # a run cut short (Ctrl-C) still leaves the side-by-side table of those done
        if args.runs > 1 and runs:
            print(f"\n## Issue 3's targets in each of the {len(runs)} runs\n")
            print("\n".join(runs_table(runs)))
    errors = [e for run in runs for e in run["errors"]]
    if args.json:
        with open(args.json, "w") as f:
            dump = [{key: run[key] for key in ("sessions", "peaks", "processes", "errors")}
                    for run in runs]
            json.dump({**dump[-1], "runs": dump, "errors": errors}, f, indent=1, default=str)
    if errors:
        print("\nFAILED:\n" + "\n".join(errors), file=sys.stderr)
        return 1
    return 0


def measure(args, names: List[str], thread_counts: List[int], impl_names: List[str]) -> dict:
    """One run of the whole benchmark: the FMA peaks, every workload at every thread count,
    and the whole-process runs of the first example."""
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (0.0,)
    notes: List[str] = []
    if args.tiny:
        notes.append("--tiny: shrunken workloads, the figures mean nothing")
    log("FMA peak ...")
    peak_seconds = 0.1 if args.tiny else 0.25
    peaks = fma_peaks(thread_counts, peak_seconds, 1 if args.quick else 3)
    sessions = []
    for name in names:
        epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[name][args.quick]
        for n in thread_counts:
            log(f"{workloads.get_workload(name, tiny=args.tiny).describe()}; {n} thread(s)")
            budget = args.budget if args.budget is not None else BUDGET[args.quick]
            sessions.append(run_session(name, n, impl_names, epochs, budget, args.quick,
                                        args.tiny))
        log("FMA peak, again ...")                      # the best over the whole run
        peaks = fma_peaks(thread_counts, peak_seconds, 1, peaks)
    for s in sessions:
        summarize(s, peaks)
    for name in names:                                    # rnnkit: same result at any threads
        firsts = [s["impls"]["rnnkit"]["losses"] for s in sessions
                  if s["workload"] == name and "rnnkit" in s["impls"]]
        if len(firsts) > 1:
            same = all(f == firsts[0] for f in firsts)
            notes.append(f"{name}: rnnkit's first-epoch losses at {args.threads} threads are "
                         + ("bitwise identical" if same else "NOT identical"))
    processes = [] if args.no_process else (log("whole process ...") or whole_process(args.quick))
    return {"sessions": sessions, "peaks": peaks, "processes": processes, "notes": notes,
            "errors": [e for s in sessions for e in s["errors"]], "started": started,
            "load_before": load_before}


if __name__ == "__main__":
    sys.exit(main())
