"""Latency lookup tables, the latency predictor and multi-metric training.

Real LiteRT measurements only build a handful of tiny blocks; the rest uses
tables filled by `_fake_ms`, a MAC count in disguise, which is all the
predictor, the sampler and the trainer need to be tested.
"""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT, SMOKE_FLAGS, run_tool, subprocess_env

from pss_tf import SearchSpace, SubnetConfig
from pss_tf.errors import ConfigError
from pss_tf.latency import (
    LatencyMetric,
    LatencyTable,
    SpaceSpec,
    Variant,
    space_variants,
    subnet_variants,
)
from pss_tf.latency.build import build_table, busy_check
from pss_tf.latency.grid import grid_variants, interpolate
from pss_tf.latency.predictor import load_latency_metric
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.space.targets import TargetGrid

# configs/smoke.flags: MobileNetV1, small-input stem, 24..32 px, widths 0.35..0.5, 4 classes.
SMOKE_SPEC = SpaceSpec(SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5), True, 3, 4)
# Eleven blocks: one resolution, one width.
TINY_SPEC = SpaceSpec(SearchSpace("mobilenet_v1", 16, 16, 8, 0.25, 0.25), True, 3, 4)
FAKE_OVERHEAD_MS = 0.002


def _fake_ms(v: Variant) -> float:
    out = v.output_size
    if v.kind == "stem":
        macs = 9 * v.cin * v.cout * out * out
    elif v.kind == "resnet_stem":
        macs = 49 * v.cin * v.cout * out * out
    elif v.kind == "max_pool":
        macs = 9 * v.cin * out * out
    elif v.kind == "bottleneck":
        project = 0 if v.residual else v.cin * v.cout * out * out
        macs = v.cin * v.hidden * v.size * v.size + 9 * v.hidden * v.hidden2 * out * out + v.hidden2 * v.cout * out * out
        macs += project
    elif v.kind == "head":
        macs = v.size * v.size * v.cin + (v.cin * v.hidden + v.hidden * v.cout if v.activation else v.cin * v.cout)
    elif v.kind == "pointwise":
        macs = v.cin * v.cout * out * out
    else:
        expand = v.cin * v.hidden * v.size * v.size if v.expand else 0
        macs = expand + 9 * v.hidden * out * out + v.hidden * v.cout * out * out
    return FAKE_OVERHEAD_MS + 0.001 + macs * 1e-7


def _setup(threads=2, version="0.0-test", channel_step=0):
    return {
        "unit": "ms",
        "device": {"cpu": "test"},
        "runtime": {"name": "ai-edge-litert", "version": version},
        "threads": threads,
        "channel_step": channel_step,
    }


def _fake_table(path, spec=SMOKE_SPEC, **setup):
    result = build_table(str(path), spec, _setup(**setup), _fake_ms, lambda: FAKE_OVERHEAD_MS, progress=False)
    assert not result.interrupted
    return result.table


# --- variants -------------------------------------------------------------------


def test_variant_keys_round_trip_and_reject_garbage():
    v = Variant("inverted_residual", 14, 64, 64, 384, 1, residual=True)
    assert v.key == "inverted_residual+add/14x14/64-384-64/s1"
    assert Variant.from_key(v.key) == v
    # Inner widths of their own: a bottleneck's two, and an expand conv its widths do not tell.
    bottleneck = Variant("bottleneck", 56, 64, 256, 32, 1, False, hidden2=16)
    assert bottleneck.key == "bottleneck/56x56/64-32.16-256/s1"
    expanded = Variant("inverted_residual", 14, 48, 24, 48, 1, expand=True)
    assert expanded.key == "inverted_residual+expand/14x14/48-48-24/s1"
    assert Variant("inverted_residual", 14, 48, 24, 48, 1).key == "inverted_residual/14x14/48-48-24/s1"
    for v in (bottleneck, expanded):
        assert Variant.from_key(v.key) == v
    for bad in ("separable/14/64-64-64/s1", "conv/14x14/1-1-1/s1", "separable/14x14/64-64/s1",
                "bottleneck/56x56/64-32-256/s1", "separable/14x14/64-64.8-64/s1", "separable+more/14x14/64-64-64/s1"):
        with pytest.raises(ValueError):
            Variant.from_key(bad)


@pytest.mark.parametrize("model", [
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v2_layerwise", "resnet50", "resnet50_layerwise",
    "mobilenet_v3_small", "mobilenet_v3_large_layerwise",
])
def test_space_variants_are_exactly_what_subnets_use(model):
    # Two widths per stage: random configs soon use every variant the space has.
    space = SearchSpace(model, 24, 32, 8, 0.4, 0.5, decimals=1)
    expected = set(space_variants(space, True, 3, 10))
    rng = random.Random(0)
    used = set()
    for _ in range(3000):
        used.update(subnet_variants(space.random_config(rng), True, 3, 10))
    assert used == expected


def test_subnet_variants_follow_the_architecture():
    config = SubnetConfig.uniform("mobilenet_v1", 224, 1.0)
    keys = [v.key for v in subnet_variants(config)]
    assert keys[0] == "stem/224x224/3-3-32/s2"
    assert keys[1] == "separable/112x112/32-32-64/s1"
    assert keys[-2] == "separable/7x7/1024-1024-1024/s1"
    assert keys[-1] == "head/7x7/1024-1024-1000/s1"
    assert len(keys) == 15


# --- building tables --------------------------------------------------------------


def test_interrupted_build_resumes_where_it_stopped(tmp_path):
    path = str(tmp_path / "lut.json")
    calls = []

    def measure(v):
        calls.append(v.key)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # Stop after this block.
        if len(calls) == 5:
            raise KeyboardInterrupt  # A second, impatient Ctrl-C: stop at once.
        return _fake_ms(v)

    first = build_table(path, TINY_SPEC, _setup(), measure, lambda: FAKE_OVERHEAD_MS, progress=False)
    assert first.interrupted and first.measured_now == 3
    saved = LatencyTable.load(path)
    assert len(saved.measured) == 3 and saved.invoke_overhead_ms == FAKE_OVERHEAD_MS

    second = build_table(path, TINY_SPEC, _setup(), measure, lambda: 1 / 0, progress=False)
    assert second.interrupted and second.measured_now == 1
    assert len(LatencyTable.load(path).measured) == 4

    third = build_table(path, TINY_SPEC, _setup(), measure, lambda: 1 / 0, progress=False)
    assert not third.interrupted and third.measured_now == 11 - 4
    order = [v.key for v in space_variants(TINY_SPEC.space, True, 3, 4)]
    assert calls[:4] + calls[5:] == order and calls[4] == order[4]
    final = LatencyTable.load(path)
    assert len(final.measured) == 11 and not final.missing(space_variants(TINY_SPEC.space, True, 3, 4))
    assert {k: final.measured[k] for k in saved.measured} == saved.measured


def test_blocks_timed_while_another_job_started_are_timed_again(tmp_path):
    # busy() answers before and after each block: the second block's first
    # timing overlaps another job, so it is timed again.
    answers = iter([False, False, False, True, False, False] + [False] * 100)
    calls = []

    def measure(v):
        calls.append(v.key)
        return _fake_ms(v)

    result = build_table(str(tmp_path / "lut.json"), TINY_SPEC, _setup(), measure, None, progress=False,
                         limit=3, busy=lambda: next(answers))
    assert result.measured_now == 3
    assert calls[1] == calls[2] and len(calls) == 4
    with pytest.raises(ValueError, match="wait_while_running: "):
        busy_check("tools/(train")
    assert busy_check("") is None
    assert busy_check("no-such-process-[x]yz")() is False


def test_passes_are_spread_over_a_chunk_and_the_fastest_is_kept(tmp_path):
    calls = []

    def measure(v):
        calls.append(v.key)
        return _fake_ms(v) * (1 + calls.count(v.key) % 3)  # Passes 1, 2, 3 read 2x, 3x, 1x.

    result = build_table(str(tmp_path / "lut.json"), TINY_SPEC, _setup(), measure, progress=False, passes=3, chunk=4)
    order = [v.key for v in space_variants(TINY_SPEC.space, True, 3, 4)]
    assert calls[:12] == order[:4] * 3  # One pass over the chunk, then the next.
    assert len(calls) == 33 and result.measured_now == 11
    for v in space_variants(TINY_SPEC.space, True, 3, 4):
        assert result.table.measured[v.key] == pytest.approx(_fake_ms(v), abs=1e-6)


def test_build_refuses_to_mix_set_ups(tmp_path):
    path = str(tmp_path / "lut.json")
    _fake_table(path, TINY_SPEC)
    with pytest.raises(ValueError, match="threads"):
        build_table(path, TINY_SPEC, _setup(threads=1), _fake_ms, progress=False)
    with pytest.raises(ValueError, match="runtime"):
        build_table(path, TINY_SPEC, _setup(version="9.9"), _fake_ms, progress=False)


@pytest.mark.slow
def test_build_lut_tool_measures_a_tiny_space_with_litert(tmp_path):
    """The CI build: real conversions and timings, interrupted by --limit, resumed."""
    out = tmp_path / "tiny.json"
    command = [
        sys.executable, os.path.join(ROOT, "tools", "build_lut.py"), f"--out={out}", f"--space={TINY_SPEC}",
        "--threads=1", "--repeats=2", "--warmup_s=0.002", "--min_repeat_s=0.001", "--noprogress",
    ]
    env = subprocess_env(TF_CPP_MIN_LOG_LEVEL="3")
    stopped = subprocess.run(command + ["--limit=4"], capture_output=True, text=True, env=env, timeout=600)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "resume" in stopped.stderr
    assert len(LatencyTable.load(out).measured) == 4
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["measured_now"] == 7 and summary["missing"] == 0
    table = LatencyTable.load(out)
    assert table.threads == 1 and table.runtime["version"] and table.header["device"]["cpu"]
    assert all(ms > 0 for ms in table.measured.values())
    assert table.invoke_overhead_ms > 0
    # Predictions from a real table: the sum of its entries minus all but one overhead.
    metric = LatencyMetric("mobilenet_v1", TargetGrid(0, 1, 0.01), table, 4, True, 3)
    config = TINY_SPEC.space.max_config()
    expected = sum(table.measured[v.key] for v in subnet_variants(config, True, 3, 4)) - 14 * table.invoke_overhead_ms
    assert metric.value(config) == pytest.approx(expected)
    # A different thread count or runtime is refused by a second build and flagged on use.
    bad = subprocess.run(command[:-1] + ["--threads=2", "--noprogress"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "threads" in bad.stderr
    assert table.compatibility(runtime_version="0.0", threads=2) == [
        f"measured with ai-edge-litert {table.runtime['version']}, not 0.0",
        "measured with 1 thread(s), not 2",
    ]
    assert table.compatibility(runtime_version=table.runtime["version"], threads=1) == []


# --- validation -----------------------------------------------------------------


def test_missing_block_is_named_with_the_command_that_measures_it(tmp_path):
    path = str(tmp_path / "lut.json")
    _fake_table(path, TINY_SPEC)
    # A wider space than the table was built for.
    space = SearchSpace("mobilenet_v1", 16, 16, 8, 0.25, 0.5)
    with pytest.raises(ValueError) as error:
        load_latency_metric(path, "mobilenet_v1", space, num_classes=4, small_input=True)
    message = str(error.value)
    assert message.startswith("latency_cpu_lut: ")
    assert "has no entry for block stem/16x16/3-3-" in message and "more)" in message
    assert f"python tools/build_lut.py --out={path} --space=model=mobilenet_v1,min_resolution=16" in message
    assert "max_width=0.5" in message and "small_input=true" in message and "--threads=2" in message
    # That command's --space text reads back as the same spec.
    spec_text = message.split("--space=")[1].split()[0]
    assert SpaceSpec.parse(spec_text) == SpaceSpec(space, True, 3, 4)


@pytest.mark.parametrize(
    "text, match",
    [
        ("min_resolution", "expected key=value"),
        ("model=mobilenet_v1,depth=3", "unknown key"),
        ("min_width=0.5", "name the model"),
        ("model=mobilenet_v1,min_resolution=200,max_resolution=100", "min_resolution"),
        ("model=mobilenet_v1,small_input=maybe", "small_input"),
        ("model=mobilenet_v1,num_classes=0", "positive"),
    ],
)
def test_bad_space_text_names_the_problem(text, match):
    with pytest.raises(ValueError, match=f"space: .*{match}"):
        SpaceSpec.parse(text)


@pytest.mark.parametrize(
    "content, match",
    [
        ("[]", "not a latency table"),
        ('{"format": "pss_tf.latency_table", "version": 99}', "version"),
        ('{"format": "pss_tf.latency_table", "version": 1, "device": {}, "runtime": {}}', "threads"),
        (
            '{"format": "pss_tf.latency_table", "version": 1, "device": {}, "runtime": {}, "threads": 2,'
            ' "measured": {"separable/4x4/8-8-8/s1": -1}}',
            "not a latency",
        ),
        (
            '{"format": "pss_tf.latency_table", "version": 1, "device": {}, "runtime": {}, "threads": 2,'
            ' "measured": {"sep/4/8/s1": 1.0}}',
            "not a block variant key",
        ),
    ],
)
def test_malformed_tables_are_rejected(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        LatencyTable.load(path)


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="latency_cpu_lut: .*no such file.*build_lut"):
        load_latency_metric(str(tmp_path / "none.json"), "mobilenet_v1", SMOKE_SPEC.space)


# --- the predictor --------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_table(tmp_path_factory):
    return _fake_table(tmp_path_factory.mktemp("lut") / "smoke.json")


def test_prediction_is_the_sum_of_blocks_minus_repeated_overheads(smoke_table):
    metric = LatencyMetric("mobilenet_v1", TargetGrid(0, 2, 0.1), smoke_table, 4, True, 3)
    config = SMOKE_SPEC.space.random_config(random.Random(1))
    blocks = subnet_variants(config, True, 3, 4)
    expected = sum(_fake_ms(v) for v in blocks) - (len(blocks) - 1) * FAKE_OVERHEAD_MS
    assert metric.value(config) == pytest.approx(expected, abs=1e-5)  # Tables keep 6 decimals.


def test_vectorised_values_equal_scalar_values(smoke_table):
    metric = LatencyMetric("mobilenet_v1", TargetGrid(0, 2, 0.1), smoke_table, 4, True, 3)
    resolutions, widths = SMOKE_SPEC.space.sample_arrays(np.random.default_rng(0), 500)
    vectorised = metric.values(resolutions, widths)
    scalar = [metric.value(SubnetConfig("mobilenet_v1", int(r), tuple(w))) for r, w in zip(resolutions, widths)]
    np.testing.assert_allclose(vectorised, scalar, rtol=1e-12)
    # Outside the table, both name the missing block.
    with pytest.raises(ValueError, match="no entry for block"):
        metric.values(np.array([64]), widths[:1])
    with pytest.raises(ValueError, match="no entry for block"):
        metric.value(SubnetConfig.uniform("mobilenet_v1", 64, 0.5))


def test_latency_metric_drives_the_conditional_sampler(smoke_table, tmp_path):
    metric = LatencyMetric("mobilenet_v1", TargetGrid(0.45, 1.2, 0.15), smoke_table, 4, True, 3)
    sampler = ConditionalSampler.build(SMOKE_SPEC.space, metric, num_samples=20_000, seed=0)
    assert len(sampler.targets) >= 4
    rng = np.random.default_rng(0)
    for target in sampler.targets:
        for _ in range(5):
            config = sampler.sample(target, rng)
            assert metric.target(config) == target and SMOKE_SPEC.space.contains(config)
    # The cache is keyed by the table's contents: another table rebuilds it.
    cache = tmp_path / "sampler.npz"
    sampler.save(cache)
    assert ConditionalSampler.load(cache, metric).targets == sampler.targets
    other = LatencyTable(smoke_table.header, {k: 2 * v for k, v in smoke_table.measured.items()})
    changed = LatencyMetric("mobilenet_v1", metric.grid, other, 4, True, 3)
    with pytest.raises(ValueError, match="built for metric"):
        ConditionalSampler.load(cache, changed)


def test_coarse_table_interpolates_between_grid_widths(tmp_path):
    space = SearchSpace("mobilenet_v1", 32, 32, 8, 0.5, 1.0)
    spec = SpaceSpec(space, True, 3, 10)
    needed = space_variants(space, True, 3, 10)
    measured = grid_variants(space, 32, True, 3, 10)
    assert len(measured) < len(needed) / 3
    table = _fake_table(tmp_path / "coarse.json", spec, channel_step=32)
    assert set(table.measured) == {v.key for v in measured}
    assert not table.missing(needed)
    # The fake latency is bilinear in (cin, cout) for separable blocks: exact.
    for v in needed:
        if v.kind == "separable":
            assert table.get(v) == pytest.approx(_fake_ms(v), abs=1e-5)
    # No extrapolation beyond the measured widths.
    assert interpolate({"separable/8x8/64-64-64/s1": 1.0}, [Variant("separable", 8, 72, 72, 72)]) == {}


@pytest.mark.parametrize("model", ["mobilenet_v2_layerwise", "resnet50", "resnet50_layerwise"])
def test_spaces_with_inner_widths_predict_from_their_own_blocks(tmp_path, model):
    """Layer-wise spaces and ResNet-50: every block's inner widths are keys of their own,
    predictions are the sum of the blocks, vectorised as scalar, and a coarse table
    interpolates what it did not measure."""
    space = SearchSpace(model, 24, 32, 8, 0.2, 0.5, width_bins=10)
    spec = SpaceSpec(space, True, 3, 10)
    table = _fake_table(tmp_path / "exact.json", spec)
    metric = LatencyMetric(model, TargetGrid(0, 2, 0.1), table, 10, True, 3)
    rng = random.Random(0)
    configs = [space.random_config(rng) for _ in range(40)]
    for config in configs[:5]:
        blocks = subnet_variants(config, True, 3, 10)
        expected = sum(_fake_ms(v) for v in blocks) - (len(blocks) - 1) * FAKE_OVERHEAD_MS
        assert metric.value(config) == pytest.approx(expected, abs=1e-4)
    resolutions = np.array([c.resolution for c in configs])
    widths = np.array([c.widths for c in configs])
    np.testing.assert_allclose(metric.values(resolutions, widths), [metric.value(c) for c in configs], rtol=1e-12)
    if model.startswith("resnet"):
        assert {v.kind for v in subnet_variants(configs[0], True, 3, 10)} >= {"resnet_stem", "bottleneck"}
    coarse = _fake_table(tmp_path / "coarse.json", spec, channel_step=16)
    needed = space_variants(space, True, 3, 10)
    assert len(coarse.measured) < len(needed) and not coarse.missing(needed)
    # The fake latency is multilinear in independent widths, so layer-wise interpolation is exact up to
    # the tables' 6 decimals; a ResNet stage's one multiplier scales inner widths that multiply (9 x h x h):
    # interpolating along that one multiplier errs, 30% at most here.
    worst = max(abs(coarse.get(v) / _fake_ms(v) - 1) for v in needed)
    assert worst < (0.35 if model == "resnet50" else 1e-3)



def test_blocks_with_inner_widths_build_as_extraction_writes_them():
    from pss_tf.latency.measure import block_model

    bottleneck = block_model(Variant("bottleneck", 8, 16, 32, 8, 2, False, hidden2=4))
    assert bottleneck.output_shape == (1, 4, 4, 32)
    assert sorted(tuple(layer.kernel.shape) for layer in bottleneck.layers if hasattr(layer, "kernel")) == [
        (1, 1, 4, 32), (1, 1, 16, 8), (1, 1, 16, 32), (3, 3, 8, 4),
    ]
    expanded = block_model(Variant("inverted_residual", 8, 16, 16, 16, 1, True, expand=True))
    assert sum(type(layer).__name__ == "Conv2D" for layer in expanded.layers) == 2  # expand and project
    plain = block_model(Variant("inverted_residual", 8, 16, 16, 16, 1, True))
    assert sum(type(layer).__name__ == "Conv2D" for layer in plain.layers) == 1
    assert block_model(Variant("max_pool", 8, 16, 16, 16, 2)).output_shape == (1, 4, 4, 16)
    stem = block_model(Variant("resnet_stem", 16, 3, 8, 3, 2))
    assert [layer.kernel.shape for layer in stem.layers if hasattr(layer, "kernel")] == [(7, 7, 3, 8)]


# --- multi-metric training ---------------------------------------------------------


@pytest.mark.slow
def test_multi_metric_smoke_run_has_winners_of_both_metrics(tmp_path, smoke_table):
    lut = tmp_path / "smoke_lut.json"
    smoke_table.save(lut)
    job = tmp_path / "multi"
    result = run_tool(
        "train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job}", "--noprogress", "--metrics=flops,latency_cpu",
        "--flops_targets=6,10,4", "--latency_cpu_targets=0.45,1.05,0.3", f"--latency_cpu_lut={lut}", "--epochs=1",
        "--steps_per_epoch=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(job / "sampler_latency_cpu.npz")
    winners = json.load(open(job / "winners.json"))
    assert {w["metric"] for w in winners} == {"flops", "latency_cpu"}
    metric = LatencyMetric("mobilenet_v1", TargetGrid(0.45, 1.05, 0.3), smoke_table, 4, True, 3)
    for entry in winners:
        if entry["metric"] == "latency_cpu":
            config = SubnetConfig.from_dict(entry["config"])
            assert entry["value"] == pytest.approx(metric.value(config))
            assert metric.target(config) == entry["target"]
            assert entry["name"] == f"latency_cpu_{entry['target']:g}ms".replace(".", "p")

    # The export serves both metric types: a signature per winner and an adaptive one per metric.
    out = tmp_path / "export"
    result = run_tool(
        "export.py", f"--job_dir={job}", f"--export_dir={out}", "--tflite_kinds=float32", "--nobundle",
        "--noevaluate", "--nolatency",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import tensorflow as tf

    manifest = json.load(open(out / "manifest.json"))
    (version,) = os.listdir(out / "serving" / "pss_mobilenet_v1")
    loaded = tf.saved_model.load(str(out / "serving" / "pss_mobilenet_v1" / version))
    names = {w["name"] for w in winners}
    assert set(loaded.signatures) == names | {"serving_default", "adaptive", "adaptive_flops", "adaptive_latency_cpu"}
    assert {s["name"] for s in manifest["subnets"]} == names
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8))
    for name in names:
        outputs = loaded.signatures[name](images=images)
        assert outputs["probabilities"].shape == (2, 4)
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1, rtol=1e-5)
        assert os.path.isfile(out / "tflite" / version / f"{name}_float32.tflite")
    # A latency budget picks the largest latency winner that fits it.
    latency = sorted((w for w in winners if w["metric"] == "latency_cpu"), key=lambda w: w["value"])
    chosen = loaded.signatures["adaptive_latency_cpu"](images=images, budget=tf.constant(latency[0]["value"] + 1e-4))
    assert chosen["subnet_name"].numpy()[0].decode() == latency[0]["name"]
    alone = loaded.signatures[latency[0]["name"]](images=images)
    np.testing.assert_allclose(chosen["probabilities"], alone["probabilities"], atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "latency_cpu_lut: required"),
        ({"latency_cpu_lut": "/nonexistent/lut.json"}, "latency_cpu_lut: /nonexistent/lut.json: no such file"),
        ({"latency_cpu_lut": "TINY"}, "latency_cpu_lut: the latency table"),
        ({"metrics": ("flops",), "latency_cpu_lut": "TINY"}, "latency_cpu is not in `metrics`"),
    ],
)
def test_bad_latency_flags_fail_before_training(tmp_path, overrides, message):
    from support import smoke_config

    from pss_tf.training.trainer import Trainer

    tiny = tmp_path / "tiny.json"
    _fake_table(tiny, TINY_SPEC)  # Lacks most of the smoke space.
    overrides = {k: str(tiny) if v == "TINY" else v for k, v in overrides.items()}
    overrides.setdefault("metrics", ("flops", "latency_cpu"))
    job = tmp_path / "job"
    with pytest.raises(ConfigError) as error:
        Trainer(smoke_config(job, **overrides))
    assert message in str(error.value)
    assert error.value.field == "latency_cpu_lut"
    assert not os.path.exists(job / "run.json")


# --- MobileNetV3's variants -------------------------------------------------------


def test_mobilenet_v3_table_predicts_the_sum_of_its_blocks(tmp_path):
    """Squeeze-and-excite, 5x5 and hard-swish blocks and a head with a hidden layer are
    variants like any other: a table covering the space predicts every subnet."""
    spec = SpaceSpec(SearchSpace("mobilenet_v3_small", 24, 32, 8, 0.5, 1.0, width_bins=2), True, 3, 4)
    table = _fake_table(tmp_path / "mbv3.json", spec)
    metric = LatencyMetric("mobilenet_v3_small", TargetGrid(0, 10, 0.1), table, 4, True, 3)
    rng = random.Random(0)
    for _ in range(5):
        config = spec.space.random_config(rng)
        variants = subnet_variants(config, True, 3, 4)
        assert any("+se" in v.key for v in variants) and variants[-1].key.startswith("head+hs/")
        expected = sum(table.measured[v.key] for v in variants) - (len(variants) - 1) * table.invoke_overhead_ms
        assert expected == pytest.approx(sum(_fake_ms(v) for v in variants) - (len(variants) - 1) * FAKE_OVERHEAD_MS, abs=1e-4)
        assert metric.value(config) == pytest.approx(expected)


def test_mobilenet_v3_block_variants_convert_with_hard_swish_and_run_under_litert():
    from pss_tf.latency.measure import _interpreter_class, block_model, to_tflite

    config = SubnetConfig.uniform("mobilenet_v3_small", 16, 0.5)
    chosen = {}
    for v in subnet_variants(config, True, 3, 4):
        chosen.setdefault((v.kind, v.options, v.residual), v)
    assert len(chosen) >= 6
    for v in chosen.values():
        content = to_tflite(block_model(v))
        interpreter = _interpreter_class()(model_content=content)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        if v.activation == "hard_swish" or v.kind == "head":
            assert "HARD_SWISH" in ops, v.key
        interpreter.allocate_tensors()
        interpreter.invoke()
        out = interpreter.get_output_details()[0]["shape"]
        assert out[-1] == v.cout and (v.kind == "head" or out[1] == v.output_size), v.key
