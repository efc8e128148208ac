"""Check that rnnkit's compiled core runs on any x86-64: no AVX/AVX2/AVX-512 instruction outside
the functions compiled for those instruction sets, which run only where the CPU has them (the
per-level functions ``avx2_*`` / ``avx512_*`` of csrc/gemm.cpp, csrc/activations.cpp,
csrc/optim.cpp, csrc/network.cpp and csrc/fma_peak.cpp, dispatched at run time, and any GCC
target clone).

    python tools/check_baseline_isa.py BUILD_DIR [CORE_SO]

BUILD_DIR is a CMake build tree of the package (``pip install -Cbuild-dir=build ...`` or
``pip wheel . -Cbuild-dir=/tmp/wheelbuild``), CORE_SO the built extension (default: the
``_core*.so`` in BUILD_DIR, or that of the installed package). With objdump (binutils):

1. every object file of the build is disassembled with its symbols, and every instruction that
   needs AVX or later (a VEX/EVEX-encoded ``v...`` mnemonic, or a ymm/zmm/mask register) must
   lie in a per-level function: one named ``avx2_...`` or ``avx512_...``, or a target clone
   (a name ending in ``.avx2`` or ``.avx512f``);
2. the extension itself (stripped of local symbols, so its functions cannot be named) must hold
   no more such instructions than those functions: the link added none (it may drop the code
   of functions nothing calls).

Prints a summary; exits 1 on a violation, 2 when it cannot check (no objdump, no objects).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

CLONE_SUFFIXES = (".avx2", ".avx512f")
# a function compiled for one instruction-set level: `...::avx512_tiled<float>(...)`
# (objdump -C demangles: `void rnnkit::(anonymous namespace)::avx512_tiled<float>(float*, ...)`,
# `f(double*, long) [clone .avx512f]`)
LEVEL_FUNCTION = re.compile(r"::(avx2|avx512)_\w+[<(]|\[clone \.(avx2|avx512f)\]")


def is_level_function(func: str) -> bool:
    return func.endswith(CLONE_SUFFIXES) or bool(LEVEL_FUNCTION.search(func))
# v-mnemonics that are not AVX (VMX and old segment-verify instructions)
NOT_AVX = {"verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmxoff", "vmxon", "vmread",
           "vmwrite", "vmptrld", "vmptrst", "vmclear", "vmfunc"}
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
INSN = re.compile(r"^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$")
WIDE_REG = re.compile(r"%(ymm|zmm)\d+|%k[0-7]\b")


def needs_avx(mnemonic: str, operands: str) -> bool:
    m = mnemonic.split(".")[0]
    return (m.startswith("v") and m not in NOT_AVX) or bool(WIDE_REG.search(operands))


def avx_by_function(path: str) -> Dict[str, int]:
    """{function (or section label): count of AVX-or-later instructions} of one binary."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", path], check=True,
                         capture_output=True, text=True).stdout
    counts: Dict[str, int] = {}
    func = "?"
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            func = m.group(1)
            continue
        m = INSN.match(line)
        if m and needs_avx(m.group(1), m.group(2)):
            counts[func] = counts.get(func, 0) + 1
    return counts


def check(build_dir: str, core_so: str) -> Tuple[List[str], int, int]:
    """Returns (violations, AVX instructions in per-level functions, those in the extension)."""
    objects = sorted(glob.glob(os.path.join(build_dir, "CMakeFiles", "**", "*.o"),
                               recursive=True))
    if not objects:
        raise FileNotFoundError(f"no object files under {build_dir}/CMakeFiles")
    violations: List[str] = []
    in_levels = 0
    for obj in objects:
        for func, n in avx_by_function(obj).items():
            if is_level_function(func):
                in_levels += n
            else:
                violations.append(f"{os.path.relpath(obj, build_dir)}: {func}: {n} AVX "
                                  "instruction(s) outside a per-level function")
    in_so = sum(avx_by_function(core_so).values())
    if in_so > in_levels:
        violations.append(f"{core_so}: {in_so} AVX instructions, but the objects' per-level "
                          f"functions hold only {in_levels}: the link added some")
    return violations, in_levels, in_so


def main(argv: List[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    if shutil.which("objdump") is None:
        print("objdump not found (install binutils): cannot check", file=sys.stderr)
        return 2
    build_dir = argv[0]
    if len(argv) == 2:
        core_so = argv[1]
    else:
        found = glob.glob(os.path.join(build_dir, "_core*.so"))
        if not found:
            print(f"no _core*.so in {build_dir}; pass its path", file=sys.stderr)
            return 2
        core_so = found[0]
    try:
        violations, in_levels, in_so = check(build_dir, core_so)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"cannot check: {exc}", file=sys.stderr)
        return 2
    for v in violations:
        print(f"VIOLATION: {v}")
    print(f"{in_so} AVX-or-later instructions in {os.path.basename(core_so)}, all in the "
          f"avx2/avx512 per-level functions ({in_levels}); baseline x86-64 elsewhere"
          if not violations else f"{len(violations)} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
