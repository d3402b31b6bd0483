"""pss_tf.cpu_kernels: importing pss_tf turns TensorFlow's oneDNN kernels on, unless the user chose.

The switch belongs to the process (TensorFlow reads it once, at import), so
each case runs in a fresh interpreter and reports the variable and, after
importing TensorFlow, whether its oneDNN kernels are on.
"""

import json
import logging
import os
import platform
import subprocess
import sys

import pytest

from pss_tf import cpu_kernels

X86 = platform.machine().lower() in cpu_kernels.X86_MACHINES

_PROBE = r"""
import json, os, sys
import logging
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(message)s")
if "tensorflow_first" in sys.argv:
    import tensorflow
import pss_tf
from pss_tf import cpu_kernels
seen = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
print(json.dumps({"variable": seen, "decision": cpu_kernels.prefer_onednn(), "in_use": cpu_kernels.kernels_in_use(),
                  "line": cpu_kernels.describe()}))
"""


def _probe(*argv, **variables):
    environ = {k: v for k, v in os.environ.items()
               if k not in (cpu_kernels.TF_VARIABLE, cpu_kernels.OPT_OUT_VARIABLE, "ONEDNN_MAX_CPU_ISA")}
    environ.update(variables)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(cpu_kernels.__file__)))
    environ["PYTHONPATH"] = root + os.pathsep + environ.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=environ, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout), done.stderr


@pytest.mark.skipif(not X86, reason="the default applies on x86 CPUs")
def test_importing_pss_tf_turns_onednn_on():
    result, log = _probe()
    assert result["variable"] == "1"
    assert result["decision"] == {"set": True, "reason": "pss_tf's default on x86: TF_ENABLE_ONEDNN_OPTS=1"}
    assert result["in_use"]["onednn"] is True
    assert result["line"].startswith("TensorFlow CPU kernels: oneDNN (")
    assert "LOG" not in log


def test_the_users_choice_is_kept():
    result, _ = _probe(TF_ENABLE_ONEDNN_OPTS="0")
    assert result["variable"] == "0"
    assert result["decision"] == {"set": False, "reason": "TF_ENABLE_ONEDNN_OPTS=0 set by the user"}
    assert result["in_use"]["onednn"] is False  # TensorFlow's Eigen kernels, as asked
    assert result["line"] == "TensorFlow CPU kernels: Eigen (TF_ENABLE_ONEDNN_OPTS=0 set by the user)"


def test_opting_out_leaves_tensorflows_default():
    result, _ = _probe(PSS_TF_ONEDNN="0")
    assert result["variable"] is None
    assert result["decision"] == {"set": False, "reason": "PSS_TF_ONEDNN=0: TensorFlow's own default"}


@pytest.mark.skipif(not X86, reason="the default applies on x86 CPUs")
def test_tensorflow_imported_first_is_reported():
    result, _ = _probe("tensorflow_first")
    assert result["variable"] is None  # nothing set: TensorFlow has read it already
    assert result["decision"]["set"] is False
    assert result["decision"]["too_late"] is True
    assert result["decision"]["onednn_already_on"] is result["in_use"]["onednn"]
    assert result["decision"]["reason"].startswith("TensorFlow was imported before pss_tf")


@pytest.fixture
def fresh_decision(monkeypatch):
    """prefer_onednn as in a process that has not decided yet; the real decision restored after."""
    monkeypatch.setattr(cpu_kernels, "_decision", None)
    monkeypatch.delenv(cpu_kernels.TF_VARIABLE, raising=False)
    monkeypatch.delenv(cpu_kernels.OPT_OUT_VARIABLE, raising=False)
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")


def test_too_late_with_eigen_running_warns_once(fresh_decision, monkeypatch, caplog):
    import tensorflow  # noqa: F401  (imported before the decision)

    monkeypatch.setattr(cpu_kernels, "_onednn_enabled", lambda: False)  # as on an AVX2-only CPU
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        first = cpu_kernels.prefer_onednn()
        again = cpu_kernels.prefer_onednn()
    assert first == again
    assert first["too_late"] is True and first["onednn_already_on"] is False
    assert cpu_kernels.TF_VARIABLE not in os.environ
    warnings = [r for r in caplog.records if r.name == cpu_kernels.__name__]
    assert len(warnings) == 1
    assert "import pss_tf first, or set TF_ENABLE_ONEDNN_OPTS=1" in warnings[0].getMessage()


def test_too_late_with_onednn_already_on_is_quiet(fresh_decision, monkeypatch, caplog):
    import tensorflow  # noqa: F401

    monkeypatch.setattr(cpu_kernels, "_onednn_enabled", lambda: True)  # as on an AVX-512 VNNI CPU
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        decision = cpu_kernels.prefer_onednn()
    assert decision["reason"] == "TensorFlow was imported before pss_tf: its oneDNN kernels are on anyway"
    assert not [r for r in caplog.records if r.name == cpu_kernels.__name__]


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le"])
def test_other_cpus_keep_tensorflows_default(machine):
    environ = {}
    decision = cpu_kernels.decide(environ, machine, tensorflow_imported=False)
    assert decision == {"set": False, "reason": f"not an x86 CPU ({machine}): TensorFlow's own default"}
    assert environ == {}


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_cpus_get_onednn_when_nothing_else_decides(machine):
    assert cpu_kernels.decide({}, machine, tensorflow_imported=False)["set"] is True
    assert cpu_kernels.decide({"PSS_TF_ONEDNN": "1"}, machine, tensorflow_imported=False)["set"] is True
    assert cpu_kernels.decide({"TF_ENABLE_ONEDNN_OPTS": "1"}, machine, tensorflow_imported=False)["set"] is False


AVX512_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"})
AVX2_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.mark.parametrize(
    "onednn, machine, flags, cap, flat, reason",
    [
        (True, "x86_64", AVX2_FLAGS, None, True, "auto: a CPU without AVX-512"),
        (True, "x86_64", AVX512_FLAGS, None, False, "auto: the CPU has AVX-512"),
        (True, "x86_64", AVX512_FLAGS, "avx2", True, "auto: oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA)"),
        (True, "x86_64", AVX512_FLAGS, "AVX512_CORE", False, "auto: the CPU has AVX-512"),
        (True, "x86_64", AVX512_FLAGS - {"avx512bw"}, None, True, "auto: a CPU without AVX-512"),  # AVX-512F alone
        (True, "x86_64", None, None, False, "auto: the CPU's instruction sets are unknown"),
        (False, "x86_64", AVX2_FLAGS, None, False, "auto: oneDNN's x86 kernels do not run here"),
        (True, "aarch64", frozenset(), None, False, "auto: oneDNN's x86 kernels do not run here"),
    ],
)
def test_auto_batch_norm_kernel_is_flat_where_onednn_runs_below_avx512(onednn, machine, flags, cap, flat, reason):
    assert cpu_kernels.batch_norm_decision("auto", onednn, machine, flags, cap) == {"flat": flat, "reason": reason}


@pytest.mark.parametrize("choice, flat", [("nhwc", False), ("flat", True)])
def test_an_explicit_batch_norm_kernel_is_kept_everywhere(choice, flat):
    for onednn, flags in ((True, AVX2_FLAGS), (True, AVX512_FLAGS), (False, None)):
        decision = cpu_kernels.batch_norm_decision(choice, onednn, "x86_64", flags, None)
        assert decision == {"flat": flat, "reason": f"batch_norm_kernel={choice}"}
    with pytest.raises(ValueError, match="batch_norm_kernel"):
        cpu_kernels.batch_norm_decision("nchw", True, "x86_64", AVX2_FLAGS, None)


_BATCH_NORM_PROBE = r"""
import json
import pss_tf
from pss_tf import cpu_kernels
print(json.dumps(cpu_kernels.flat_batch_norm("auto")))
"""


@pytest.mark.skipif(not X86, reason="oneDNN's x86 kernels")
def test_this_process_decides_from_its_cpu_and_onednns_isa_cap():
    """The decision reads the real CPU's flags and ONEDNN_MAX_CPU_ISA (a fresh process each)."""
    def probe(**variables):
        environ = {k: v for k, v in os.environ.items() if k not in (cpu_kernels.TF_VARIABLE, "ONEDNN_MAX_CPU_ISA")}
        environ.update(variables, TF_CPP_MIN_LOG_LEVEL="2")
        root = os.path.dirname(os.path.dirname(os.path.abspath(cpu_kernels.__file__)))
        environ["PYTHONPATH"] = root + os.pathsep + environ.get("PYTHONPATH", "")
        done = subprocess.run([sys.executable, "-c", _BATCH_NORM_PROBE], env=environ, capture_output=True, text=True,
                              check=True)
        return json.loads(done.stdout)

    flags = cpu_kernels._cpu_flags()
    has_avx512 = flags is not None and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    assert probe()["flat"] is (flags is not None and not has_avx512)
    assert probe(ONEDNN_MAX_CPU_ISA="AVX2") == {"flat": True, "reason": "auto: oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA)"}
    assert probe(TF_ENABLE_ONEDNN_OPTS="0", ONEDNN_MAX_CPU_ISA="AVX2") == {
        "flat": False, "reason": "auto: oneDNN's x86 kernels do not run here"}
