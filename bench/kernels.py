"""Which CPU kernels a benchmark's TensorFlow and PyTorch run, and emulating an AVX2-only CPU on a larger one.

TensorFlow's x86 wheel turns its oneDNN kernels on by default only on CPUs with
AVX-512 VNNI/BF16/AMX-class features; elsewhere (AVX2-only CPUs such as AMD's
Zen 2) its Eigen kernels run. The Eigen code of the wheel is compiled the same
for every CPU, but its matrix products (convolutions included) call oneDNN's
sgemm, which picks its code by the CPU at run time; oneDNN's own kernels do
too. So on an AVX-512 host the kernel paths of an AVX2-only CPU are reached
with environment variables of the benchmark's process:

    native        this host's default: oneDNN kernels, every ISA the CPU has
    eigen_avx2    TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX2
                  (emulated: TensorFlow's default on an AVX2-only CPU)
    onednn_avx2   TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=AVX2
                  (emulated: oneDNN kernels on an AVX2-only CPU)
    eigen         TF_ENABLE_ONEDNN_OPTS=0 (Eigen with this host's sgemm)

and PyTorch (the release's step) as on an AVX2-only CPU with
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2.
Emulation reaches the same code, not the same chip: clock, caches and memory
stay this host's. `probe` checks in a fresh process that a setting took effect
(oneDNN's ISA and the kernel that ran a convolution, from ONEDNN_VERBOSE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Every variable a setting may set; a child process gets none of them from its parent
# except those its setting sets.
CONTROLLED = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
              "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_VERBOSE", "PSS_TF_ONEDNN")

TORCH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

SETTINGS = {
    "native": {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "torch": {}, "emulated": False,
               "what": "this host's kernels: oneDNN with every ISA the CPU has"},
    "eigen_avx2": {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "torch": TORCH_AVX2,
                   "emulated": True, "what": "emulated AVX2-only CPU, TensorFlow's default there: Eigen kernels"},
    "onednn_avx2": {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "torch": TORCH_AVX2,
                    "emulated": True, "what": "emulated AVX2-only CPU with TensorFlow's oneDNN kernels"},
    "eigen": {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "torch": {}, "emulated": False,
              "what": "this host with TensorFlow's Eigen kernels"},
}

# Variable that tells a child benchmark process which setting it runs under.
CHILD_VARIABLE = "PSS_BENCH_KERNELS"


def parse(names: str) -> list[str]:
    """`native,eigen_avx2` -> a list of known setting names, or SystemExit naming the flag."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SETTINGS]
    if unknown or not chosen:
        raise SystemExit(f"--kernels: unknown setting(s) {unknown or names!r}; choose from {sorted(SETTINGS)}")
    return chosen


def environment(name: str, side: str = "tensorflow") -> dict:
    """This process's environment with the setting's variables for `side` (tensorflow or torch) and no others."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env.update(SETTINGS[name][side])
    env[CHILD_VARIABLE] = name
    return env


_TF_PROBE = r"""
import json, tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
x = tf.random.uniform([4, 16, 16, 8]); w = tf.random.uniform([3, 3, 8, 16])
y, _, _ = tf.compat.v1.nn.fused_batch_norm(tf.nn.conv2d(x, w, 1, "SAME"), tf.ones([16]), tf.zeros([16]),
                                          is_training=True)
float(tf.reduce_sum(y))
print("PROBE " + json.dumps({"onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()), "tensorflow": tf.__version__}))
"""

_TORCH_PROBE = r"""
import json, torch
x = torch.rand(4, 8, 16, 16)
torch.nn.Conv2d(8, 16, 3, padding=1)(x).sum().backward()
torch.nn.Linear(64, 10)(torch.rand(4, 64)).sum().backward()
print("PROBE " + json.dumps({"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "torch": torch.__version__}))
"""


def _verbose_facts(stdout: str) -> dict:
    """oneDNN's ISA and the implementation names of the convolutions it ran, from ONEDNN_VERBOSE lines."""
    facts = {"onednn_isa": None, "onednn_convolution": [], "onednn_gemm_calls": 0}
    for line in stdout.splitlines():
        fields = line.split(",")
        if line.startswith("MKL_VERBOSE oneMKL") and " for " in line:  # PyTorch's BLAS, with its ISA
            facts["mkl"] = line.split(" for ", 1)[1].split(" enabled processors")[0].split(", Lnx")[0].strip()
        if not line.startswith("onednn_verbose"):
            continue
        if ",info,cpu,isa:" in line:
            facts["onednn_isa"] = line.split("isa:", 1)[1].strip()
        elif ",exec,cpu,convolution," in line:
            impl = fields[fields.index("convolution") + 1]
            if impl not in facts["onednn_convolution"]:
                facts["onednn_convolution"].append(impl)
        elif ",exec,cpu,gemm_api," in line:
            facts["onednn_gemm_calls"] += 1
    return facts


def probe(name: str, side: str = "tensorflow", python: str = sys.executable) -> dict:
    """What kernels run under setting `name`, seen from a fresh process of `python`."""
    env = environment(name, side)
    env["ONEDNN_VERBOSE"] = "1"
    if side == "torch":
        env["MKL_VERBOSE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    code = _TF_PROBE if side == "tensorflow" else _TORCH_PROBE
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"kernel probe ({name}, {side}) failed:\n{done.stderr[-2000:]}")
    found = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    return {**json.loads(found[len("PROBE "):]), **_verbose_facts(done.stdout)}


def describe(name: str) -> dict:
    """The setting's record for a benchmark's JSON."""
    setting = SETTINGS[name]
    return {"name": name, "what": setting["what"], "emulated": setting["emulated"],
            "tensorflow_env": setting["tensorflow"], "torch_env": setting["torch"]}


def current() -> dict:
    """The setting this process runs under (set by a parent benchmark), with the variables as seen here
    and whether TensorFlow's oneDNN kernels are on (imports TensorFlow)."""
    from pss_tf import cpu_kernels

    seen = {k: os.environ[k] for k in CONTROLLED if k in os.environ}
    return {"name": os.environ.get(CHILD_VARIABLE), "env_seen": seen,
            "onednn_enabled": cpu_kernels.kernels_in_use()["onednn"]}


def run_json(command: list[str], env: dict) -> dict:
    """Runs a benchmark command that prints one JSON object; the object, or SystemExit with its stderr's tail."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def run_each(names: list[str], script: str, child_argv: list[str]) -> dict:
    """{setting: its record, its probe and the JSON of `script` run once under it}, one after another."""
    records = {}
    for name in names:
        print(f"kernels: {name}", file=sys.stderr, flush=True)
        records[name] = {**describe(name), "tensorflow_probe": probe(name),
                         "run": run_json([sys.executable, script, *child_argv], environment(name))}
    return records


def without_flags(argv: list[str], *flags: str) -> list[str]:
    """`argv` less every `--flag=value` / `--flag value` of the given flags."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out
