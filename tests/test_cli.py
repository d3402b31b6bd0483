"""How every tool starts (pss_tf.cli): a bare --flagfile name found in configs/, path
flags with `~` and $VARIABLES expanded, TensorFlow's native log lines kept off stderr
unless --verbosity asks for them (pss_tf.native_logs)."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from support import ROOT, run_tool, subprocess_env

from pss_tf import cli, config_flags, native_logs
from pss_tf.errors import ConfigError
from pss_tf.export.options import ExportOptions
from pss_tf.finetune.options import FinetuneOptions
from pss_tf.search.options import SearchOptions
from pss_tf.run.config import TrainConfig

# Lines an export printed on stderr before the filter (TensorFlow 2.20, tools/export.py on the smoke run).
LOADER = b"I0000 00:00:1796614360.123456   10981 loader.cc:220] Reading SavedModel from: /tmp/tmpabc"
CONVERTER = b"W0000 00:00:1796614361.654321   10981 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format."
CUINIT = b"E0000 00:00:1796614358.469388   10981 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
FATAL = b"F0000 00:00:1796614358.469388   10981 op_kernel.cc:1] Check failed: shape"
PYTHON_WARNING = b"W1207 03:32:46.932145 140175900773248 file_utils.py:394] Variant folder has no dataset_info.json"
NATIVE_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\.(cc|h):\d+\]", re.M)


# --- --flagfile ------------------------------------------------------------------


def test_a_bare_flagfile_name_not_in_the_current_directory_is_read_from_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mbv1 = os.path.join(cli.CONFIGS, "mbv1.flags")
    assert cli.resolve_flagfiles(["tool", "--flagfile=mbv1.flags", "--job_dir=x"]) == [
        "tool", f"--flagfile={mbv1}", "--job_dir=x"
    ]
    assert "reading" in capsys.readouterr().err
    # The flag's other spelling, and the name without its extension.
    assert cli.resolve_flagfiles(["tool", "--flagfile", "mbv1"]) == ["tool", f"--flagfile={mbv1}"]


def test_a_flagfile_that_exists_where_it_is_given_is_read_as_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli.resolve_flagfiles(["tool", "--flagfile=configs/smoke.flags"]) == ["tool", "--flagfile=configs/smoke.flags"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mbv1.flags").write_text("--epochs=1\n")  # A file of the same name here wins over configs/.
    assert cli.resolve_flagfiles(["tool", "--flagfile=mbv1.flags"]) == ["tool", "--flagfile=mbv1.flags"]
    assert capsys.readouterr().err == ""


def test_a_flagfile_found_nowhere_is_refused_listing_the_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no such file: .*mbv3\.flags.*configs are .*mbv1\.flags, .*smoke\.flags") as e:
        cli.resolve_flagfiles(["tool", "--flagfile=mbv3.flags"])
    assert e.value.field == "flagfile"
    assert cli.configs() == sorted(n for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".flags"))


# --- path flags --------------------------------------------------------------------


def test_path_flags_expand_home_and_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PSS_DATA", "/data/sets")
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    flag_values(["tool", "--job_dir=~/runs/a", "--data_dir=$PSS_DATA/tfds", "--init_from=${PSS_DATA}/run"])
    config = config_flags.from_flags(TrainConfig, flag_values)
    assert config.job_dir == f"{tmp_path}/runs/a"
    assert config.data.data_dir == "/data/sets/tfds"
    assert config.warm_start.init_from == "/data/sets/run"

    flag_values = flags.FlagValues()
    config_flags.define_flags(ExportOptions, flag_values)
    flag_values(["tool", "--job_dir=~/runs/a", "--export_dir=~/exports", "--container_dir=~/models"])
    options = config_flags.from_flags(ExportOptions, flag_values)
    assert (options.job_dir, options.export_dir) == (f"{tmp_path}/runs/a", f"{tmp_path}/exports")
    assert options.subnets.container_dir == "~/models"  # a path inside the server's container, not here


def test_a_list_of_paths_expands_each(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    flag_values = flags.FlagValues()
    config_flags.DEFINE_path_list("job_dirs", None, "runs", flag_values)
    config_flags.DEFINE_path("out", "pareto.png", "plot", flag_values)
    flag_values(["tool", "--job_dirs=~/a,/b,~/c"])
    assert flag_values.job_dirs == [f"{tmp_path}/a", "/b", f"{tmp_path}/c"]
    assert flag_values.out == "pareto.png"


@pytest.mark.parametrize("options", [TrainConfig, ExportOptions, SearchOptions, FinetuneOptions])
def test_every_file_or_directory_option_is_a_path(options):
    for leaf in config_flags.leaves(options):
        names_a_path = re.search(r"(_dir|_lut|_luts|^out|^init_from)$", leaf.name) and leaf.name != "container_dir"
        assert leaf.is_path == bool(names_a_path), leaf.name


def test_import_release_reads_a_checkpoint_given_under_home(tmp_path):
    from release_support import release_file

    home = tmp_path / "home"
    home.mkdir()
    release_file(home, "mbv2")
    result = run_tool("import_release.py", "--checkpoint=~/mbv2.pt", "--job_dir=~/run",
                      env=subprocess_env(HOME=str(home)))
    # The MobileNetV2 fixture has latency pools: read, it asks for the release's tables.
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: --release_luts: " in result.stderr and "no such file" not in result.stderr
    assert not (home / "run").exists() and not (tmp_path / "~").exists()


# --- TensorFlow's native log lines -------------------------------------------------------


def test_verbosity_chooses_the_least_severe_native_line_shown():
    assert [native_logs.min_severity(v) for v in (None, -3, -2, -1, 0, 1)] == ["F", "F", "E", "W", "I", "I"]
    assert native_logs.tf_cpp_min_log_level("F") == "3" and native_logs.tf_cpp_min_log_level("I") == "0"


def test_the_filter_drops_native_lines_below_the_threshold_and_nothing_else():
    for line in (LOADER, CONVERTER, CUINIT):
        assert native_logs.filter_line(line, "F") is None
    assert native_logs.filter_line(FATAL, "F") == FATAL
    assert native_logs.filter_line(CUINIT, "E") == CUINIT and native_logs.filter_line(CONVERTER, "E") is None
    assert native_logs.filter_line(LOADER, "I") == LOADER
    assert native_logs.filter_line(PYTHON_WARNING, "F") == PYTHON_WARNING  # Python's logs are not native lines
    for banner in (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                   b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."):
        assert native_logs.filter_line(banner, "F") is None and native_logs.filter_line(banner, "I") == banner
    bar = b"\rexporting:  50%|#####     | 3/6"
    assert native_logs.filter_line(bar + LOADER, "F") == bar  # a log line written after a progress bar's text
    assert native_logs.filter_line(b"error: --job_dir: no such run", "F") == b"error: --job_dir: no such run"


def _filtered(tmp_path, verbosity, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from pss_tf import native_logs
        native_logs.filter_stderr({verbosity})
        w = lambda data: os.write(2, data)
    """) + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, env=subprocess_env(), timeout=60)


def test_a_filtered_stderr_passes_everything_else_in_order(tmp_path):
    body = f"""
        w({LOADER!r} + b"\\n")
        w(b"\\rprogress 1/2")
        w(b"\\rprogress 2/2\\n")
        print("a tool's message", file=sys.stderr)
        w({CUINIT!r} + b"\\n" + {PYTHON_WARNING!r} + b"\\n")
        print("the summary")
        w(b"error: the last line")
    """
    quiet = _filtered(tmp_path, None, body)
    assert quiet.returncode == 0
    assert quiet.stdout == b"the summary\n"
    assert quiet.stderr == b"\rprogress 1/2\rprogress 2/2\na tool's message\n" + PYTHON_WARNING + b"\nerror: the last line"
    loud = _filtered(tmp_path, 0, body)
    assert loud.stderr.startswith(LOADER) and CUINIT in loud.stderr
    assert _filtered(tmp_path, -2, body).stderr.count(b"cuInit") == 1


def test_a_crashing_tool_still_delivers_its_fatal_line(tmp_path):
    result = _filtered(tmp_path, None, f"""
        w({LOADER!r} + b"\\n" + {FATAL!r} + b"\\n")
        os.abort()
    """)
    assert result.returncode != 0 and result.stderr == FATAL + b"\n"


# --- ending without the interpreter's teardown ----------------------------------------


def _tool(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Runs a tool script ending with `cli.run(main, skip_teardown=True)`; `body` defines main."""
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent("""
        import atexit, os, sys
        from pss_tf import cli
        MARKS = os.environ["MARKS"]

        def mark(name, _open=open, _join=os.path.join, _marks=MARKS):  # Bound now: teardown clears globals.
            _open(_join(_marks, name), "w").close()

        class TornDown:
            def __del__(self, _mark=mark):
                _mark("torn_down")

        KEPT = TornDown()  # A module global: destroyed only by the interpreter's teardown.
    """) + textwrap.dedent(body) + "\ncli.run(main, skip_teardown=True)\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=subprocess_env(MARKS=str(tmp_path)), timeout=60)


def test_a_tool_ending_without_teardown_runs_atexit_flushes_and_keeps_its_status(tmp_path):
    result = _tool(tmp_path, """
        def main(argv):
            atexit.register(mark, "atexit")
            sys.stdout.write("buffered, no newline")  # A pipe: block-buffered, not yet written.
            sys.stderr.write("error: the last line")
            return 3
    """)
    assert result.returncode == 3
    assert result.stdout == "buffered, no newline"
    assert result.stderr.endswith("error: the last line")  # Through the native-log filter, drained at exit.
    assert (tmp_path / "atexit").exists()
    assert not (tmp_path / "torn_down").exists()  # The teardown was skipped.


def test_a_tool_returning_none_exits_0_and_one_raising_ends_as_usual(tmp_path):
    assert _tool(tmp_path, "def main(argv):\n    return None\n").returncode == 0
    raised = _tool(tmp_path, "def main(argv):\n    raise RuntimeError('boom')\n")
    assert raised.returncode == 1 and "RuntimeError: boom" in raised.stderr
    assert (tmp_path / "torn_down").exists()  # A failure keeps the usual exit, teardown included.


# --- through the tools ----------------------------------------------------------------


@pytest.mark.slow
def test_the_design_cards_command_from_the_project_root_reaches_the_data_check(tmp_path):
    """`python tools/train.py --flagfile=mbv1.flags`: configs/mbv1.flags is read, `~` in
    --data_dir is the user's home, and no native log line reaches the user."""
    env = subprocess_env(HOME=str(tmp_path))
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    result = run_tool("train.py", "--flagfile=mbv1.flags", f"--job_dir={tmp_path / 'run'}", "--data_dir=~/tfds", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("flags: reading configs/mbv1.flags (mbv1.flags is not in")
    assert f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {tmp_path}/tfds/downloads/manual" in result.stderr
    assert not NATIVE_LINE.search(result.stderr) and "absl::InitializeLog" not in result.stderr
    assert not (tmp_path / "run").exists()

    loud = run_tool("train.py", "--flagfile=mbv1.flags", f"--job_dir={tmp_path / 'run'}", "--data_dir=~/tfds",
                    "--verbosity=0", env=env)
    assert loud.returncode == 2 and "cudart_stub.cc" in loud.stderr and NATIVE_LINE.search(loud.stderr)


@pytest.mark.slow
def test_an_unknown_flagfile_is_refused_by_the_tool(tmp_path):
    result = run_tool("export.py", "--flagfile=mbv3.flags", f"--job_dir={tmp_path}", f"--export_dir={tmp_path / 'x'}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --flagfile: no such file: mbv3.flags")
    assert "smoke.flags" in result.stderr and not (tmp_path / "x").exists()


def test_no_tool_imports_tensorflow_before_its_flags_are_parsed():
    """The native-log filter starts once flags are parsed; a tool importing TensorFlow at
    module level would print its start-up lines before it."""
    for tool in sorted(os.listdir(os.path.join(ROOT, "tools"))):
        if not tool.endswith(".py"):
            continue
        code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'tests')!r}); from support import load_script; "
                f"load_script({os.path.join(ROOT, 'tools', tool)!r}, 'tool'); print('tensorflow' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                                timeout=120)
        assert result.stdout.strip() == "False", (tool, result.stderr[-2000:])


# --- the tools' help and checks, from the declarations ------------------------------


def test_describe_subnet_reports_both_parameter_counts_and_takes_its_help_from_the_registry():
    from pss_tf.space import architectures

    result = run_tool("describe_subnet.py", "--model=resnet50")
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    assert json.loads(result.stdout)["params"] == {"trainable": 25_557_032, "all_weights": 25_610_152}
    wider = json.loads(run_tool("describe_subnet.py", "--model=mobilenet_v2_1.5x").stdout)
    assert wider["params"] == {"trainable": 6_858_152, "all_weights": 6_909_528}
    help_text = " ".join(run_tool("describe_subnet.py", "--helpshort").stdout.split())
    for model in architectures.MODEL_NAMES:
        genes = architectures.get_architecture(model).num_stages
        assert model in help_text and f"{genes} for {model}" in help_text
    assert "8 for mobilenet_v2," in help_text and "<model>_<w>x" in help_text


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "mobilenet_v3_large_layerwise"])
def test_describe_subnet_counts_what_the_extracted_mobilenet_v3_holds(model):
    """A random subnet of a small-input grey 10-class space: the tool's channels, MACs and both
    parameter counts are the extracted Keras model's (its weights, its convs' channels)."""
    import json
    import random

    import numpy as np

    from pss_tf import SearchSpace, SubnetConfig, build_supernet
    from pss_tf.space.cost import count_flops

    config = SearchSpace(model, 24, 32, 4, 0.35, 1.0).random_config(random.Random(7))
    result = run_tool("describe_subnet.py", f"--config={config.to_json()}", "--num_classes=10", "--small_input",
                      "--in_channels=1")
    assert result.returncode == 0, result.stderr[-2000:]
    described = json.loads(result.stdout)
    supernet = build_supernet(model, num_classes=10, small_input=True, in_channels=1)
    extracted = supernet.extract(config, resize=False)
    trainable = sum(int(np.prod(w.shape)) for w in extracted.trainable_weights)
    assert described["params"] == {"trainable": trainable, "all_weights": extracted.count_params()}
    assert SubnetConfig.from_dict(described["config"]) == config and described["channels"] == list(config.channels)
    assert described["mflops"] == round(count_flops(config, num_classes=10, small_input=True, in_channels=1), 4)
    # The widest 1x1 conv of the extracted model has the widest channel count described.
    widest = max(l.filters for l in extracted.layers if type(l).__name__ == "Conv2D")
    assert widest == max(described["channels"])


@pytest.mark.parametrize("flag, message", [
    ("--repeats=0", "--repeats: must be an int of at least 1, got 0"),
    ("--channel_step=12", "--channel_step: must be 0 or a positive multiple of 8, got 12"),
    ("--min_repeat_s=0", "--min_repeat_s: must be a positive number"),
])
def test_build_lut_refuses_values_outside_their_declared_ranges(tmp_path, flag, message):
    result = run_tool("build_lut.py", f"--out={tmp_path / 't.json'}", flag)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "t.json").exists()
