"""Which CPU kernels TensorFlow runs: oneDNN's on every x86 CPU, chosen when pss_tf is imported.

TensorFlow's x86 wheel turns its oneDNN kernels on by default only on CPUs with
AVX-512 VNNI, BF16 or AMX-class features; on AVX2-only CPUs (AMD's EPYC Zen 2,
most cloud and CI hosts) its Eigen kernels run. Held to AVX2, oneDNN took a
MobileNetV1 PSS step 3-9% and a plain step 16-24% less time than Eigen, and does
not depend on glibc's malloc settings as Eigen does (docs/PERFORMANCE.md, "CPU
kernels"; measured by emulating an AVX2 CPU on an AVX-512 one). TensorFlow reads its switch,
`TF_ENABLE_ONEDNN_OPTS`, once, when it is imported, so `prefer_onednn` (run by
`import pss_tf`) sets it to 1 before then. It leaves alone a value the user set (either way), a process
with `PSS_TF_ONEDNN=0`, and CPUs that are not x86. If TensorFlow was imported
before pss_tf it is too late: that is logged once and recorded.

Both kernel libraries compute the same functions in float32 with different
summation orders; results agree to rounding, not bit for bit.

The shape training batch norm hands oneDNN is chosen here too
(`flat_batch_norm`): held to AVX2, oneDNN's forward-training kernel runs about
3.6 times faster on (N * H * W, 1, 1, C) views of the maps than on (N, H, W, C),
while on AVX-512 the flat view costs 12% more and under Eigen it changes nothing
(docs/PERFORMANCE.md, "Batch norm on AVX2").
"""

from __future__ import annotations

import logging
import os
import platform
import sys

TF_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
OPT_OUT_VARIABLE = "PSS_TF_ONEDNN"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")
# How training batch norm's fused kernel sees the maps (`--batch_norm_kernel`).
BATCH_NORM_KERNELS = ("auto", "nhwc", "flat")
# The CPU flags of oneDNN's AVX-512 code (its "avx512_core" ISA), and the
# ONEDNN_MAX_CPU_ISA values that hold it below them.
_AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
_ISAS_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")

logger = logging.getLogger(__name__)

_decision: dict | None = None


def decide(environ, machine: str, tensorflow_imported: bool, onednn_already_on: bool = False) -> dict:
    """{"set": whether to set TF_ENABLE_ONEDNN_OPTS=1, "reason": why}; changes nothing."""
    machine = machine.lower()
    if environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return {"set": False, "reason": f"{OPT_OUT_VARIABLE}=0: TensorFlow's own default"}
    if TF_VARIABLE in environ:
        return {"set": False, "reason": f"{TF_VARIABLE}={environ[TF_VARIABLE]} set by the user"}
    if machine not in X86_MACHINES:
        return {"set": False, "reason": f"not an x86 CPU ({machine}): TensorFlow's own default"}
    if tensorflow_imported:
        state = "its oneDNN kernels are on anyway" if onednn_already_on else "too late to turn on its oneDNN kernels"
        return {"set": False, "reason": f"TensorFlow was imported before pss_tf: {state}", "too_late": True,
                "onednn_already_on": onednn_already_on}
    return {"set": True, "reason": f"pss_tf's default on x86: {TF_VARIABLE}=1"}


def prefer_onednn() -> dict:
    """Applies `decide` to this process once (at `import pss_tf`); later calls return the first record."""
    global _decision
    if _decision is not None:
        return dict(_decision)
    imported = sys.modules.get("tensorflow") is not None  # None: a process that blocks its import.
    decision = decide(os.environ, platform.machine(), imported, imported and _onednn_enabled())
    if decision["set"]:
        os.environ[TF_VARIABLE] = "1"
    elif decision.get("too_late") and not decision["onednn_already_on"]:
        logger.warning(
            "TensorFlow was imported before pss_tf, so its oneDNN kernels stay off (its Eigen kernels train "
            "slower): import pss_tf first, or set %s=1.", TF_VARIABLE,
        )
    _decision = decision
    return dict(decision)


def _onednn_enabled() -> bool:
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def kernels_in_use() -> dict:
    """What TensorFlow runs in this process (imports TensorFlow): for logs and run records."""
    record = {"onednn": _onednn_enabled(), TF_VARIABLE: os.environ.get(TF_VARIABLE)}
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        record["ONEDNN_MAX_CPU_ISA"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    record["pss_tf_default"] = prefer_onednn()
    return record


def describe() -> str:
    """One line for a log: which kernels run and why."""
    record = kernels_in_use()
    library = "oneDNN" if record["onednn"] else "Eigen"
    isa = f", ONEDNN_MAX_CPU_ISA={record['ONEDNN_MAX_CPU_ISA']}" if "ONEDNN_MAX_CPU_ISA" in record else ""
    return f"TensorFlow CPU kernels: {library}{isa} ({record['pss_tf_default']['reason']})"


def batch_norm_decision(choice: str, onednn: bool, machine: str, cpu_flags, isa_cap: str | None) -> dict:
    """{"flat": whether batch norm's kernel gets flat views, "reason": why}, for
    `choice` (one of `BATCH_NORM_KERNELS`); `cpu_flags` are /proc/cpuinfo's (None:
    unknown). auto: flat where oneDNN runs x86 code below AVX-512, where it pays."""
    if choice not in BATCH_NORM_KERNELS:
        raise ValueError(f"batch_norm_kernel: expected one of {list(BATCH_NORM_KERNELS)}, got {choice!r}")
    if choice != "auto":
        return {"flat": choice == "flat", "reason": f"batch_norm_kernel={choice}"}
    if not onednn or machine.lower() not in X86_MACHINES:
        return {"flat": False, "reason": "auto: oneDNN's x86 kernels do not run here"}
    if isa_cap and isa_cap.upper() in _ISAS_BELOW_AVX512:
        return {"flat": True, "reason": f"auto: oneDNN held to {isa_cap.upper()} (ONEDNN_MAX_CPU_ISA)"}
    if cpu_flags is None:
        return {"flat": False, "reason": "auto: the CPU's instruction sets are unknown"}
    if all(flag in cpu_flags for flag in _AVX512_CORE_FLAGS):
        return {"flat": False, "reason": "auto: the CPU has AVX-512"}
    return {"flat": True, "reason": "auto: a CPU without AVX-512"}


def _cpu_flags() -> frozenset | None:
    """The first processor's flags in /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def flat_batch_norm(choice: str = "auto") -> dict:
    """`batch_norm_decision` for this process (imports TensorFlow)."""
    return batch_norm_decision(
        choice, _onednn_enabled(), platform.machine(), _cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA")
    )
