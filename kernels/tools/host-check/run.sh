#!/usr/bin/env bash
# Runs the NVRTC kernels (src/nvrtc/*.cu) on the host under a small CUDA emulation (cuda_emu.h:
# one block at a time, threads as std::threads, __syncthreads as a barrier, warp shuffles through
# memory) and compares every kernel, in f32, f16 and bf16, with double-precision loops.
#
# For machines without a GPU: it checks the kernels' indexing, masking, reductions and element
# conversions, not the GPU itself. The only difference from the GPU build is the f16 conversion,
# which uses the compiler's _Float16 (round to nearest even, as the PTX cvt.rn instruction) instead
# of inline PTX. Needs g++ ≥ 12 (C++20, _Float16) and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/plexserve-host-check
mkdir -p "$out"
python3 - "$here/../../src/nvrtc/dtype.cuh" "$out/dtype_host.cuh" <<'PY'
import sys
s = open(sys.argv[1]).read()
s = s.replace('''    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
    return f;''', '''    _Float16 h;
    memcpy(&h, &p->bits, 2);
    return (float)h;''')
s = s.replace('''    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;''', '''    _Float16 h = (_Float16)v;
    memcpy(&p->bits, &h, 2);''')
assert "asm" not in s, "dtype.cuh changed: update the host replacements in run.sh"
open(sys.argv[2], "w").write(s)
PY
g++ -std=c++20 -O2 -pthread -Wno-unknown-pragmas -I "$out" -I "$here" "$here/check.cpp" -o "$out/check"
"$out/check"
