#!/usr/bin/env python3
"""Do an operator's per-preparation levels repeat across processes?

Reads two or more `placement --dump` outputs (one per process, same --sets, same spec) and,
for the operators between 1 us and 0.1 ms, compares each operator's level per set (the mean of
its two passes, log scale, minus the operator's own mean and minus the set's common mode, the
median over all operators, which removes the machine's drift) between the processes. With
`setarch x86_64 -R` the processes allocate every buffer of set s at the same virtual address,
so if the virtual placement (offset within a page, 4 KiB aliasing, L1 set) decided the level,
the set patterns would correlate about as much as the placement share of their variance.

    python3 placement_levels.py A.txt B.txt [C.txt ...]
"""
import math
import statistics as st
import sys
from collections import defaultdict


def load(path):
    # op SPEC INDEX SET PASS MEDIAN MIN P10 P25 OP...
    d = defaultdict(dict)
    for line in open(path):
        if line.startswith("op "):
            p = line.split()
            d[int(p[2])][(int(p[3]), int(p[4]))] = math.log(float(p[5]))
    return d


def corr(x, y):
    mx, my = st.mean(x), st.mean(y)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / (sx * sy) if sx * sy > 0 else 0.0


runs = [load(f) for f in sys.argv[1:]]
if len(runs) < 2:
    sys.exit("usage: placement_levels.py DUMP1 DUMP2 [DUMP...]")
sets = max(s for s, _ in runs[0][0]) + 1
ops = [i for i in sorted(runs[0]) if 1e-6 < math.exp(runs[0][i][(0, 0)]) < 1e-4]
norm = []
for r in runs:
    dev = {(i, k): v - st.mean(r[i].values()) for i in ops for k, v in r[i].items()}
    common = {k: st.median(dev[(i, k)] for i in ops) for k in r[ops[0]]}
    norm.append({ik: v - common[ik[1]] for ik, v in dev.items()})
ranges, within, cors, shares = [], [], [], []
for n in norm:
    level_var, noise_var = 0.0, 0.0
    for i in ops:
        a = [n[(i, (s, 0))] for s in range(sets)]
        b = [n[(i, (s, 1))] for s in range(sets)]
        lv = [(x + y) / 2 for x, y in zip(a, b)]
        ranges.append(max(lv) - min(lv))
        within.append(st.mean(abs(x - y) for x, y in zip(a, b)))
        level_var += st.variance(lv)
        # What pass-to-pass noise alone gives the mean of two passes.
        noise_var += sum((x - y) ** 2 for x, y in zip(a, b)) / sets / 4
    shares.append((level_var - noise_var) / level_var)
for i in ops:
    pats = [[(n[(i, (s, 0))] + n[(i, (s, 1))]) / 2 for s in range(sets)] for n in norm]
    cors += [corr(pats[x], pats[y]) for x in range(len(pats)) for y in range(x + 1, len(pats))]
print(
    f"{len(ops)} operators, {sets} sets, {len(runs)} processes: set levels range median "
    f"{st.median(ranges) * 100:.2f} %, passes within a set |a-b| median {st.median(within) * 100:.2f} %"
)
print(
    "placement share of the set levels' variance per process (the correlation expected if the "
    "levels repeated): " + " ".join(f"{s:.2f}" for s in shares)
)
print(f"correlation of the set patterns between processes: mean {st.mean(cors):+.2f}, median {st.median(cors):+.2f}")
