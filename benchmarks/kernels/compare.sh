#!/usr/bin/env bash
# Before and after, for the C++ core, on a machine whose speed moves from minute to minute:
# builds the kernels' static library of two git revisions (each in a temporary worktree, with
# the repository's CMakeLists: Release, the same flags as pip's build), links this tree's
# benchmarks/kernels/kernels.cpp against each (with that revision's headers), and runs the two
# drivers in turn, ROUNDS times, pinned to one CPU. Only rounds that alternate see the same
# minutes; a difference smaller than the spread of each side's times is not one.
#
#   bash benchmarks/kernels/compare.sh f1d7f26 HEAD 8 epoch W2
#   bash benchmarks/kernels/compare.sh HEAD~1 HEAD 10 w1-train
#
# Prints each round's last line of both drivers, then per revision its times sorted and their
# median: the first time on the driver's last line (a number followed by s, ms or us). For
# `shapes`, whose last lines are fractions, read the rounds' lines instead. RNNKIT_CPU (default
# 1) is the CPU the drivers run on. Needs git, cmake, ninja or make, pybind11 (as the build
# does) and a C++17 compiler.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 REV_A REV_B ROUNDS DRIVER_ARGS... (e.g. $0 HEAD~1 HEAD 8 epoch W2)" >&2
    exit 2
fi
rev_a=$1 rev_b=$2 rounds=$3
shift 3
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cpu="${RNNKIT_CPU:-1}"
work="$(mktemp -d)"
cleanup() {
    for side in a b; do
        git -C "$root" worktree remove --force "$work/$side" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
pybind11_dir="$(python -m pybind11 --cmakedir)"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

for side in a b; do
    rev=$rev_a
    [ "$side" = b ] && rev=$rev_b
    git -C "$root" worktree add --quiet --detach "$work/$side" "$rev"
    echo "building $rev ..." >&2
    cmake -S "$work/$side" -B "$work/$side/build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$pybind11_dir" >"$work/$side.log" 2>&1 ||
        { cat "$work/$side.log" >&2; exit 1; }
    cmake --build "$work/$side/build" --target rnnkit_kernels >>"$work/$side.log" 2>&1 ||
        { cat "$work/$side.log" >&2; exit 1; }
    "${CXX:-g++}" -std=c++17 -O3 -Wall -Wextra -I"$work/$side/csrc" "$here/kernels.cpp" \
        "$work/$side/build/librnnkit_kernels.a" -lpthread -o "$work/$side/driver"
done

for round in $(seq "$rounds"); do
    for side in a b; do
        line="$(taskset -c "$cpu" "$work/$side/driver" "$@" | tail -n 1)"
        echo "$side $line" >>"$work/lines"
        echo "round $round, $side: $line"
    done
done

# the first "<number> <unit>" of each line, in seconds
awk -v a="$rev_a" -v b="$rev_b" '
    {
        side = $1; t = ""
        for (i = 2; i < NF; ++i)
            if ($i ~ /^[0-9.]+$/ && ($(i + 1) ~ /^(s|ms|us),?$/)) {
                unit = $(i + 1); sub(/,$/, "", unit)
                t = $i * (unit == "ms" ? 1e-3 : unit == "us" ? 1e-6 : 1); break
            }
        if (t != "") times[side] = times[side] " " t
    }
    END {
        for (side in times) {
            n = split(times[side], v, " ")
            for (i = 1; i <= n; ++i)        # insertion sort: a handful of rounds
                for (j = i; j > 1 && v[j] < v[j - 1]; --j) { x = v[j]; v[j] = v[j - 1]; v[j - 1] = x }
            median = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            printf "%s (%s): median %.6g s over %d rounds; sorted:", side, side == "a" ? a : b, median, n
            for (i = 1; i <= n; ++i) printf " %.6g", v[i]
            printf "\n"
        }
    }' "$work/lines" | sort
