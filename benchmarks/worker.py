"""One implementation of one workload at one thread count, in its own process, driven by
benchmarks/run.py over stdin/stdout: so that each library gets its thread settings before it
is imported (XLA reads XLA_FLAGS once, OpenBLAS OPENBLAS_NUM_THREADS once), and so that no
library's thread pool competes with another's while an epoch is being timed.

    python benchmarks/worker.py --impl torch --workload W2 --threads 1 [--tiny]

The parent sets the thread environment variables (see run.py: thread_env). The worker builds
the data, the initial weights and the implementation, then answers one JSON line, prefixed
with PREFIX, to each command on stdin:

    (start)  {"ready": true, "setup_seconds": s, "compile_seconds": s|null, "notes": [...]}
    epoch    {"seconds": wall, "cpu_seconds": process CPU time, "losses": {...}}, and after
             the first epoch (the check) "update": impls.update_fingerprint of its parameters
    quit     (exits)

An exception is answered with {"error": "<traceback>"} and ends the worker. Timing is taken
here, around the epoch call only, so the pipe costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PREFIX = "@@bench "


def reply(obj) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def pin(threads: int) -> None:
    """Below the machine's CPU count, restrict the process to the first `threads` CPUs it may
    use: the one reliable way to hold XLA to that many threads (jax-ml/jax#1539), applied to
    every implementation alike so that all run on the same cores."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])


def set_threads(impl: str, threads: int):
    """Apply the thread count in-process where a library has a call for it; return notes."""
    notes = []
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
    if impl == "rnnkit":
        import rnnkit

        if hasattr(rnnkit, "set_num_threads"):
            rnnkit.set_num_threads(threads)
        else:
            notes.append("rnnkit threads: not supported yet (no rnnkit.set_num_threads)")
    allowed = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)
    if impl == "jax" and threads > allowed:
        notes.append(f"jax: XLA uses every allowed core, fewer than {threads}")
    return notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        pin(args.threads)
        notes = set_threads(args.impl, args.threads)
        import impls
        import workloads

        w = workloads.get_workload(args.workload, tiny=args.tiny)
        weights = workloads.initial_weights(w)
        train, val = workloads.make_data(w)
        run = impls.make(args.impl, w, weights, train, val)
        reply({"ready": True, "setup_seconds": time.perf_counter() - t0,
               "compile_seconds": getattr(run, "compile_seconds", None), "notes": notes})
        first = True
    except Exception:  # noqa: BLE001 - reported to the parent, which says which worker failed
        reply({"error": traceback.format_exc()})
        return 1
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "epoch":
            reply({"error": f"unknown command {command!r}"})
            return 1
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            losses = run.epoch()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            answer = {"seconds": seconds, "cpu_seconds": cpu, "losses": losses}
            if first:   # the check epoch (untimed): what it did to the parameters
                answer["update"] = impls.update_fingerprint(weights, run.weights())
                first = False
            reply(answer)
        except Exception:  # noqa: BLE001
            reply({"error": traceback.format_exc()})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
