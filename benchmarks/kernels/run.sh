#!/usr/bin/env bash
# Builds benchmarks/kernels/kernels.cpp against a build tree's static library of the C++ core
# and runs it (see kernels.cpp for what each command times). The build tree is the one an
# editable install makes:
#   pip install --no-build-isolation -Cbuild-dir=build -e .
#   bash benchmarks/kernels/run.sh chain              # or w1-train, w1-eval, epoch W3, shapes
# RNNKIT_BUILD_DIR names another build tree; RNNKIT_CPU pins the run to that CPU (taskset).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${RNNKIT_BUILD_DIR:-$root/build}"
lib="$build/librnnkit_kernels.a"
if [ ! -f "$lib" ]; then
    echo "no $lib: build the core first (pip install --no-build-isolation -Cbuild-dir=build -e .)" >&2
    exit 1
fi
exe="$build/rnnkit_kernel_bench"
if [ ! -x "$exe" ] || [ "$exe" -ot "$lib" ] || [ "$exe" -ot "$here/kernels.cpp" ]; then
    "${CXX:-g++}" -std=c++17 -O3 -Wall -Wextra -I"$root/csrc" \
        "$here/kernels.cpp" "$lib" -lpthread -o "$exe"
fi
if [ -n "${RNNKIT_CPU:-}" ]; then
    exec taskset -c "$RNNKIT_CPU" "$exe" "$@"
fi
exec "$exe" "$@"
