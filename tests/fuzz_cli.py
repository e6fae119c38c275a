#!/usr/bin/env python3
"""Mutation fuzzing of plexserve's input files through the CLI.

Each run takes a shipped file (instance, plan, spec, profile), applies one to three edits of the
kind a hand-edited file suffers (a key deleted, an array element dropped or repeated, a value of
another type, a number scaled, negated or huge) and runs the command that reads it. Every run
must exit 0, 2 (bad input: one error line) or 3 (infeasible), print no panic, stay within 6 GB
of address space and finish within 60 s. The `flags-*` targets instead run a shipped file with a
command-line flag set to an extreme or malformed value (a refused flag may print clap's usage
hint). `serve`: exit with an error, or still be serving after 3 s. Failing inputs are kept beside the log.

Usage: tests/fuzz_cli.py BIN RUNS SEED [TARGET...]   (e.g. target/release/plexserve 400 1)
Runs one process at a time on CPU 0, single-threaded, niced; same seed, same inputs."""
import json, os, random, subprocess, sys, tempfile, copy

BIN = os.path.abspath(sys.argv[1]); N = int(sys.argv[2]); SEED = int(sys.argv[3])
ONLY = sys.argv[4:]
R = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEP = os.getcwd()
rng = random.Random(SEED)

def absolutize(node, base):
    """Trace paths relative to the original file, made absolute so the mutated copy finds them."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("path", "files") or k == "file":
                if isinstance(v, str): node[k] = os.path.normpath(os.path.join(base, v))
                elif isinstance(v, list): node[k] = [os.path.normpath(os.path.join(base, x)) if isinstance(x, str) else x for x in v]
            else: absolutize(v, base)
    elif isinstance(node, list):
        for v in node: absolutize(v, base)
    return node

def load(p): return absolutize(json.load(open(os.path.join(R, p))), os.path.dirname(os.path.join(R, p)))

TARGETS = {
  "paper-solve": ("instances/paper/s1-maf1.json", lambda f, d: ["solve", f, "--placer", rng.choice(["sr", "mp-greedy-2", "alpaserve"]), "--time-limit-s", "5", "-o", d + "/p.json"]),
  "compare": ("instances/tiny/two-test-models.json", lambda f, d: ["compare", f, "--placers", "sr,mp-greedy-2", "--sweep", rng.choice(["rate_scale=0.5,1", "slo_scale=1,2", "cv_scale=1,4"]), "-o", d]),
  "llm-azure": ("instances/llm/azure-code-qwen32b-long.json", lambda f, d: ["llm", "compare", f, "--placers", rng.choice(["tp-static:tp=2", "tp-dynamic:tp=4,policy=long", "tp-hybrid:tp=4,big=1"]), "--sweep", "rate_scale=0.1", "-o", d]),
  "llm-synth": ("instances/llm/muxserve-synthetic.json", lambda f, d: ["llm", "compare", f, "--placers", rng.choice(["spatial", "muxserve", "temporal"]), "--sweep", "rate_scale=0.25", "-o", d]),
  # name: (base file, argv builder(tmpfile) )
  "solve": ("instances/tiny/two-test-models.json", lambda f, d: ["solve", f, "--placer", rng.choice(["sr", "alpaserve", "plexserve", "mp-greedy-2", "milp", "exhaustive"]), "--time-limit-s", "5", "-o", d + "/p.json"]),
  "simulate-inst": ("instances/tiny/two-test-models.json", lambda f, d: ["simulate", f, "--plan", R + "/instances/tiny/two-test-models.plan.json"]),
  "simulate-plan": ("instances/tiny/two-test-models.plan.json", lambda f, d: ["simulate", R + "/instances/tiny/two-test-models.json", "--plan", f]),
  # A server that starts serves until stopped: for these, still running at SERVE_S is a pass.
  "serve-plan": ("instances/tiny/two-test-models.plan.json", lambda f, d: ["serve", R + "/instances/tiny/two-test-models.json", "--plan", f, "--listen", "127.0.0.1:0"]),
  "serve-inst": ("instances/tiny/two-test-models.json", lambda f, d: ["serve", f, "--plan", R + "/instances/tiny/two-test-models.plan.json", "--listen", "127.0.0.1:0"]),
  "llm-sim-inst": ("instances/llm/tiny-two-7b.json", lambda f, d: ["llm", "simulate", f, "--plan", R + "/instances/llm/tiny-two-7b.plan.json"]),
  "llm-sim-plan": ("instances/llm/tiny-two-7b.plan.json", lambda f, d: ["llm", "simulate", R + "/instances/llm/tiny-two-7b.json", "--plan", f]),
  "llm-solve": ("instances/llm/tiny-two-7b.json", lambda f, d: ["llm", "solve", f, "--placer", rng.choice(["muxserve", "spatial", "temporal", "plexserve-llm", "tp-static", "tp-dynamic:tp=2"]), "-o", d + "/p.json"]),
  "llm-tpo": ("instances/llm/tiny-two-7b.json", lambda f, d: ["llm", "tp-overhead", f]),
  "profile": ("instances/specs/tiny-gpt.json", lambda f, d: ["profile", "--model", f, "--device", rng.choice(["analytic:a100-80gb", "analytic:v100-16gb"]), "-o", d + "/p.json"]),
  "partition": ("instances/layers/toy-transformer.profile.json", lambda f, d: ["partition", f, "--model", "toy-12l", "--devices", "4", "--memory-budget-gib", "16"]),
  "instance": ("instances/layers/toy-transformer.profile.json", lambda f, d: ["instance", "--profile", f, "--devices", "4", "--memory-budget-gib", "16", "--total-rate", "5", "--duration-s", "5"]),
}

# Flag values: numbers out of range, huge, tiny, not numbers at all.
FLAG_VALUES = ["0", "-1", "1", "0.5", "1e300", "-1e300", "1e-300", "nan", "inf", "18446744073709551616",
               "4294967296", "abc", "", "1,2", "1e9"]

def fv():
    return rng.choice(FLAG_VALUES)

TINY, TINY_PLAN = R + "/instances/tiny/two-test-models.json", R + "/instances/tiny/two-test-models.plan.json"
LLM_TINY = R + "/instances/llm/tiny-two-7b.json"
TOY = R + "/instances/layers/toy-transformer.profile.json"
# Commands with one or two flags set to a random value (the file is the shipped one, unmutated).
FLAG_TARGETS = {
  "flags-solve": lambda d: ["solve", TINY, "--placer", rng.choice(["sr", "milp", "alpaserve"]), "-o", d + "/p.json",
                            rng.choice(["--time-limit-s", "--threads", "--seed"]), fv()],
  "flags-placer": lambda d: ["solve", TINY, "--placer", rng.choice(["milp", "plexserve", "sr"]) + ":" +
                             rng.choice(["gap", "mip_time_s", "max_groups", "beam", "iters", "k"]) + "=" + fv(), "-o", d + "/p.json"],
  "flags-compare": lambda d: ["compare", TINY, "--placers", "sr", "--sweep",
                              rng.choice(["devices", "rate_scale", "cv_scale", "slo_scale", "models"]) + "=" + fv(), "-o", d],
  "flags-llm": lambda d: ["llm", "compare", LLM_TINY, "--placers", rng.choice(["spatial", "muxserve", "tp-static"]),
                          rng.choice(["--sweep", "--goodput-level", "--goodput-resolution", "--grid"]),
                          rng.choice(["rate_scale=", "alpha=", ""]) + fv(), "-o", d],
  "flags-llm-search": lambda d: ["llm", rng.choice(["solve", "compare"]), LLM_TINY, "--placers" if rng.random() < 0.5 else "--placer",
                                 rng.choice(["spatial", "plexserve-llm"]), rng.choice(["--threads", "--time-limit-s", "--seed"]), fv(),
                                 "-o", d + "/o"],
  "flags-instance": lambda d: ["instance", "--profile", TOY, "--devices", "4", "--memory-budget-gib", "16", "--total-rate", "5",
                               rng.choice(["--devices", "--memory-budget-gib", "--total-rate", "--alpha", "--cv", "--duration-s",
                                           "--slo-scale", "--seed", "--copies"]), fv()],
  "flags-partition": lambda d: ["partition", TOY, "--model", "toy-12l", "--devices", "4", "--memory-budget-gib", "16",
                                rng.choice(["--devices", "--pp", "--tp", "--memory-budget-gib"]), fv()],
  "flags-profile": lambda d: ["profile", "--model", R + "/instances/specs/tiny-gpt.json", "--device",
                              rng.choice(["analytic:a100-80gb", "analytic:" + fv(), "cuda:" + fv()]), "-o", d + "/p.json",
                              rng.choice(["--warmup", "--repeats", "--link-gb-per-s", "--link-latency-us", "--dtype", "--threads"]), fv()],
}

VALUES = [0, -1, 1, 2, 3, 0.5, -0.5, 1e-300, 1e300, -1e300, 2**63, 2**64, 10**12, 1e9, 4096, 65536,
          "", "x", None, True, [], {}, [0], [-1], [1e300]]

def paths(node, pre=()):
    yield pre
    if isinstance(node, dict):
        for k, v in node.items(): yield from paths(v, pre + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]): yield from paths(v, pre + (i,))

def get(node, path):
    for p in path: node = node[p]
    return node

def mutate(doc):
    doc = copy.deepcopy(doc)
    ps = [p for p in paths(doc) if p]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        p = rng.choice(ps); parent = get(doc, p[:-1]); k = p[-1]
        try:
            cur = parent[k]
        except (KeyError, IndexError, TypeError):
            continue
        op = rng.random()
        if op < 0.15 and isinstance(parent, dict):
            del parent[k]
        elif op < 0.25 and isinstance(parent, list):
            parent.insert(k, copy.deepcopy(cur))
        elif op < 0.32 and isinstance(parent, list):
            del parent[k]
        elif op < 0.5 and isinstance(cur, (int, float)) and not isinstance(cur, bool):
            parent[k] = rng.choice([cur * 10, cur * 1000, -cur, cur + 1, cur - 1, cur / 3, int(cur) * 2**20])
        else:
            parent[k] = copy.deepcopy(rng.choice(VALUES))
        ps = [p for p in paths(doc) if p] or ps
    return doc

SERVE_S = 3

def run(argv, d):
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    serving = argv[0] == "serve"
    try:
        out = subprocess.run(["taskset", "-c", "0", "nice", "-n", "19", "prlimit", "--as=6000000000", BIN] + argv,
                             capture_output=True, timeout=SERVE_S if serving else 60, env=env, cwd=d)
        return out.returncode, out.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return (0 if serving else "timeout"), (e.stderr or b"").decode(errors="replace")

bad = 0
names = ONLY or list(TARGETS) + list(FLAG_TARGETS)
for i in range(N):
    name = names[i % len(names)]
    with tempfile.TemporaryDirectory() as d:
        if name in FLAG_TARGETS:
            doc, a = {"argv": None}, FLAG_TARGETS[name](d)
            doc["argv"] = a
        else:
            base, argv = TARGETS[name]
            doc = mutate(load(base))
            f = os.path.join(d, "in.json")
            json.dump(doc, open(f, "w"))
            a = argv(f, d)
        rc, err = run(a, d)
        ok = rc in (0, 2, 3) and "panicked" not in err
        # A bad file gets one line; a bad flag gets clap's error with a usage hint.
        if rc == 2 and name not in FLAG_TARGETS and len([l for l in err.splitlines() if l.strip()]) != 1:
            ok = False; err = "MULTILINE ERROR:\n" + err
        if not ok:
            bad += 1
            keep = os.path.join(KEEP, f"fuzz-fail-{SEED}-{i}-{name}.json")
            json.dump(doc, open(keep, "w"), indent=1)
            print(f"FAIL {name} rc={rc} argv={a[:1] + a[2:]} kept={keep}\n  {err.strip()[:600]}", flush=True)
print(f"done: {N} runs, {bad} failures", flush=True)
