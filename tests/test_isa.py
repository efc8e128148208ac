"""The compiled core runs on any x86-64: tools/check_baseline_isa.py finds AVX instructions only
inside the per-level (avx2_*/avx512_*) functions of csrc/gemm.cpp, csrc/activations.cpp and
csrc/fma_peak.cpp (checked on the editable build tree when there is one; CI checks the wheel's
build), and the checker itself catches a violation."""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "check_baseline_isa.py"

pytestmark = [
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 only"),
    pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not found"),
]


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_build_tree_has_avx_only_in_per_level_functions():
    build = ROOT / "build"
    if not list(build.glob("_core*.so")):
        pytest.skip("no editable build tree in ./build (CI checks the wheel's build instead)")
    proc = run(build)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all in the avx2/avx512 per-level functions" in proc.stdout


def test_checker_catches_avx_outside_a_per_level_function(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "k.cpp"
    src.write_text("void scale(double* y, const double* x, long n) {\n"
                   "    for (long i = 0; i < n; ++i) y[i] += 2.0 * x[i];\n}\n")
    objdir = tmp_path / "CMakeFiles" / "k.dir"
    objdir.mkdir(parents=True)
    obj = objdir / "k.cpp.o"
    subprocess.run([cxx, "-O3", "-mavx2", "-c", str(src), "-o", str(obj)], check=True)
    proc = run(tmp_path, obj)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "VIOLATION" in proc.stdout and "scale" in proc.stdout
    subprocess.run([cxx, "-O3", "-c", str(src), "-o", str(obj)], check=True)  # baseline
    proc = run(tmp_path, obj)
    assert proc.returncode == 0, proc.stdout + proc.stderr
