"""One export of a training run: every artefact, built aside, then moved into place.

`export(options)` first does every cheap check (the run, its winners, the
configs, the export directory), so bad input fails before a model is built
and leaves everything as it was. It then calibrates and extracts each subnet,
writes the serving SavedModel and the TFLite files into a staging folder,
measures them, optionally fine-tunes one subnet for int8 with quantization-
aware training, writes the manifest and only then commits the staging folder
(`serving.commit`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from typing import Callable

from pss_tf import data as data_lib
from pss_tf.export import serving
from pss_tf.export import subnets as subnets_lib
from pss_tf.export.tflite import KINDS, check_kinds
from pss_tf.io_utils import atomic_write_json, read_json

logger = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
QAT_KIND = "int8_qat"


@dataclasses.dataclass
class ExportOptions:
    """Everything `tools/export.py` is told; see its flags for the meaning of each."""

    job_dir: str
    export_dir: str
    model_name: str | None = None
    new_version: bool = False
    configs: tuple[str, ...] = ()
    winners: bool | None = None  # None: the winners unless configs are given
    tflite_kinds: tuple[str, ...] = KINDS
    bundle: bool = True
    representative_examples: int = 200
    calibration_batches: int = 0  # 0: the run's --calibration_batches
    crop_fraction: float = data_lib.DEFAULT_CROP_FRACTION
    evaluate: bool = True
    eval_examples: int = 0  # 0: the whole validation split
    latency: bool = True
    latency_threads: int = 1
    qat: bool = False
    qat_subnet: str | None = None  # None: the largest subnet
    qat_epochs: int = 2
    qat_steps_per_epoch: int = 0  # 0: one pass over the training split
    qat_learning_rate: float = 1e-3
    qat_batch_size: int = 0  # 0: the run's --global_batch_size
    container_dir: str = "/models"
    data_dir: str | None = None
    seed: int = 0

    def validate(self) -> None:
        if not self.job_dir:
            raise ValueError("--job_dir: required")
        if not self.export_dir:
            raise ValueError("--export_dir: required")
        if os.path.abspath(self.export_dir) == os.path.abspath(self.job_dir):
            raise ValueError("--export_dir: must differ from --job_dir")
        if self.model_name is not None and not _MODEL_NAME.match(self.model_name):
            raise ValueError(f"--model_name: letters, digits, '_', '.' and '-' only, got {self.model_name!r}")
        try:
            check_kinds(self.tflite_kinds)
        except ValueError as e:
            raise ValueError(str(e)) from None
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"--crop_fraction: must lie in (0, 1], got {self.crop_fraction}")
        if not self.container_dir.startswith("/"):
            raise ValueError(f"--container_dir: must be an absolute path, got {self.container_dir!r}")
        for name in ("representative_examples", "latency_threads", "qat_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("calibration_batches", "eval_examples", "qat_steps_per_epoch", "qat_batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: must be >= 0, got {getattr(self, name)}")
        if not self.qat_learning_rate > 0:
            raise ValueError(f"--qat_learning_rate: must be positive, got {self.qat_learning_rate}")
        if self.qat_subnet and not self.qat:
            raise ValueError("--qat_subnet: given without --qat")


@dataclasses.dataclass
class ExportResult:
    export_dir: str
    model_name: str
    version: int
    manifest: dict


@dataclasses.dataclass
class _Plan:
    """The outcome of the cheap checks."""

    train_config: object
    info: data_lib.DatasetInfo
    metrics: dict
    subnets: list
    model_name: str
    version: int
    fresh: bool
    qat_subnet: str | None


def plan(options: ExportOptions) -> _Plan:
    """Every check that needs no model: raises ValueError naming the flag to fix."""
    from pss_tf import trainer
    from pss_tf.train_config import TrainConfig

    options.validate()
    run_file = os.path.join(options.job_dir, trainer.RUN_FILE)
    if not os.path.exists(run_file):
        raise ValueError(f"--job_dir: {options.job_dir} holds no training run ({trainer.RUN_FILE} is missing)")
    train_config = TrainConfig.from_dict(read_json(run_file, trainer.RUN_FILE))
    info = data_lib.check_dataset(
        train_config.dataset,
        options.data_dir or train_config.data_dir,
        synthetic=data_lib.SyntheticSpec(
            num_classes=train_config.synthetic_classes,
            num_train=train_config.synthetic_train_examples,
            num_val=train_config.synthetic_val_examples,
        ),
    )
    space = train_config.search_space()
    configs = [subnets_lib.parse_config(text, space) for text in options.configs]
    include_winners = options.winners if options.winners is not None else not configs
    winners = None
    if include_winners:
        path = os.path.join(options.job_dir, trainer.WINNERS_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"--job_dir: {options.job_dir} has no {trainer.WINNERS_FILE} (the run has not finished); "
                "train to the end (--resume), or export chosen configs with --config and --nowinners"
            )
        winners = trainer.load_winners(options.job_dir)
        if not winners:
            raise ValueError(f"--job_dir: {path} lists no winners (every pool was empty)")
    metrics = trainer.make_metrics(train_config, info, space)
    cost_kwargs = dict(num_classes=info.num_classes, small_input=train_config.small_input, in_channels=info.channels)
    chosen = subnets_lib.select(winners, configs, metrics, cost_kwargs)
    qat_subnet = None
    if options.qat:
        names = [s.name for s in chosen]
        qat_subnet = options.qat_subnet or subnets_lib.largest(chosen, next(iter(metrics))).name
        if qat_subnet not in names:
            raise ValueError(f"--qat_subnet: {qat_subnet!r} is not exported; choose one of {names}")
        from pss_tf.export.qat import import_tfmot

        try:
            import_tfmot()
        except ImportError as e:
            raise ValueError(str(e)) from None
    model_name = options.model_name or f"pss_{train_config.model}"
    version = serving.plan_version(options.export_dir, options.new_version)
    fresh = not (os.path.isdir(options.export_dir) and os.listdir(options.export_dir))
    return _Plan(train_config, info, metrics, chosen, model_name, version, fresh, qat_subnet)


def export(options: ExportOptions, log: Callable[[str], None] = logger.info) -> ExportResult:
    """Exports the subnets of a run (see the module docstring); returns the manifest."""
    checked = plan(options)
    staging = serving.staging_dir(options.export_dir, checked.fresh)
    try:
        manifest = _build(options, checked, staging, log)
        serving.commit(
            staging, options.export_dir, checked.model_name, checked.version, manifest,
            options.container_dir, checked.fresh,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"exported version {checked.version} of {checked.model_name} to {os.path.abspath(options.export_dir)}")
    return ExportResult(os.path.abspath(options.export_dir), checked.model_name, checked.version, manifest)


def _build(options: ExportOptions, checked: _Plan, staging: str, log) -> dict:
    from pss_tf.export import calibrated, savedmodel, tflite
    from pss_tf.export import manifest as manifest_lib
    from pss_tf.export.job_data import JobData

    config, info, subnets = checked.train_config, checked.info, checked.subnets
    metric_names = list(checked.metrics)
    data = JobData(config, info, options.data_dir)
    size, crop = data.image_size, options.crop_fraction

    supernet, _, _ = calibrated.load_supernet(options.job_dir)
    num_batches = options.calibration_batches or config.calibration_batches
    log(f"calibrating and extracting {len(subnets)} subnets ({num_batches} BN calibration batches each)")
    models = calibrated.extract_calibrated(supernet, subnets, data.calibration_batches(num_batches))
    entries = {s.name: {**s.to_dict(), "signature": s.name, "accuracy": {}, "tflite": {}} for s in subnets}
    if options.evaluate:
        for s in subnets:
            entries[s.name]["accuracy"]["keras"] = calibrated.keras_top1(
                models[s.name], data.validation_batches(options.eval_examples)
            )

    saved_model_dir = serving.serving_path(staging, checked.model_name, checked.version)
    functions, signatures = savedmodel.signatures(subnets, models, info.channels, size, crop, metric_names)
    log(f"writing the SavedModel ({len(signatures)} signatures)")
    savedmodel.save(saved_model_dir, models.values(), functions)

    tflite_dir = serving.tflite_path(staging, checked.version)
    os.makedirs(tflite_dir, exist_ok=True)
    relative = lambda path: os.path.relpath(path, staging)  # noqa: E731
    bundles, qat_report = {}, None
    kinds = tuple(options.tflite_kinds)
    needs_representative = "int8" in kinds or checked.qat_subnet
    representative = data.representative_images(options.representative_examples, options.seed) if needs_representative else None
    evaluation = (lambda: data.client_batches("val", 256, options.eval_examples)) if options.evaluate else None
    work = tempfile.mkdtemp(dir=staging, prefix=".work-")
    if kinds:
        for s in subnets:
            source = _fixed_size_saved_model(os.path.join(work, s.name), [s], models, info.channels, size, crop)
            for kind in kinds:
                log(f"converting {s.name} to TFLite ({kind})")
                content = tflite.convert(source, [s.name], kind, representative)
                entries[s.name]["tflite"][kind] = _write_tflite(
                    content, os.path.join(tflite_dir, f"{s.name}_{kind}.tflite"), relative, options
                )
                if evaluation:
                    entries[s.name]["accuracy"][f"tflite_{kind}"] = tflite.top1(content, evaluation())
        if options.bundle:
            names = [s.name for s in subnets]
            source = _fixed_size_saved_model(os.path.join(work, "bundle"), subnets, models, info.channels, size, crop)
            for kind in kinds:
                log(f"converting the {kind} bundle of {len(names)} subnets")
                content = tflite.convert(source, names, kind, representative)
                path = os.path.join(tflite_dir, f"bundle_{kind}.tflite")
                _write_bytes(path, content)
                bundles[kind] = {"file": relative(path), "bytes": len(content), "signatures": names}
    if checked.qat_subnet:
        qat_report = _quantization_aware(options, checked, models, data, representative, tflite_dir, work, entries, relative, log)
    shutil.rmtree(work)

    latency = {"batch": 1, "threads": options.latency_threads, "statistic": "median of repeats of the mean invoke time"}
    if options.latency:
        from pss_tf.latency.measure import device_info, runtime_info

        latency.update(device=device_info(), runtime=runtime_info())
    result = manifest_lib.build(
        model_name=checked.model_name,
        version=checked.version,
        job_dir=os.path.abspath(options.job_dir),
        train_config=config,
        info=info,
        image_size=size,
        crop_fraction=crop,
        metrics=metric_names,
        subnet_entries=[entries[s.name] for s in subnets],
        signatures=signatures,
        saved_model_path=relative(saved_model_dir),
        bundles=bundles,
        latency=latency if options.latency else None,
        qat=qat_report,
    )
    atomic_write_json(os.path.join(saved_model_dir, "assets.extra", "pss_manifest.json"), result)
    return result


def _fixed_size_saved_model(path: str, subnets, models, channels: int, image_size: int, crop_fraction: float) -> str:
    """The TFLite converter's source: per-subnet signatures on S x S images."""
    from pss_tf.export import savedmodel

    functions, _ = savedmodel.signatures(subnets, models, channels, image_size, crop_fraction, fixed_size=True)
    savedmodel.save(path, [models[s.name] for s in subnets], functions)
    return path


def _write_bytes(path: str, content: bytes) -> None:
    with open(path, "wb") as f:
        f.write(content)


def _write_tflite(content: bytes, path: str, relative, options: ExportOptions) -> dict:
    from pss_tf.export import tflite

    _write_bytes(path, content)
    entry = {"file": relative(path), "bytes": len(content)}
    if options.latency:
        entry["latency_ms"] = tflite.latency_ms(content, options.latency_threads)
    return entry


def _quantization_aware(options, checked, models, data, representative, tflite_dir, work, entries, relative, log) -> dict:
    """Fine-tunes one subnet with QAT, converts it to int8 and compares it with plain int8."""
    from pss_tf.export import qat, tflite

    config = checked.train_config
    subnet = next(s for s in checked.subnets if s.name == checked.qat_subnet)
    resolution = subnet.config.resolution
    batch_size = options.qat_batch_size or config.global_batch_size
    steps = options.qat_steps_per_epoch or max(1, data_lib.steps_per_epoch(checked.info, batch_size))
    log(f"quantization-aware fine-tuning of {subnet.name}: {options.qat_epochs} epochs of {steps} steps")
    quantized = qat.finetune(
        models[subnet.name], resolution, data.training_batches(batch_size, options.seed),
        options.qat_epochs, steps, options.qat_learning_rate,
    )
    source = os.path.join(work, "qat")
    qat.write_saved_model(quantized, subnet.name, resolution, checked.info.channels, data.image_size, options.crop_fraction, source)
    content = tflite.convert(source, [subnet.name], "int8", representative)
    entries[subnet.name]["tflite"][QAT_KIND] = _write_tflite(
        content, os.path.join(tflite_dir, f"{subnet.name}_{QAT_KIND}.tflite"), relative, options
    )
    evaluation = lambda: data.client_batches("val", 256, options.eval_examples)  # noqa: E731
    with_qat = tflite.top1(content, evaluation())
    entries[subnet.name]["accuracy"][f"tflite_{QAT_KIND}"] = with_qat
    without = entries[subnet.name]["accuracy"].get("tflite_int8")
    if without is None:
        plain = _fixed_size_saved_model(
            os.path.join(work, "plain"), [subnet], models, checked.info.channels, data.image_size, options.crop_fraction
        )
        without = tflite.top1(tflite.convert(plain, [subnet.name], "int8", representative), evaluation())
    return {
        "subnet": subnet.name,
        "epochs": options.qat_epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": options.qat_learning_rate,
        "int8_top1_without_qat": without,
        "int8_top1_with_qat": with_qat,
        "file": entries[subnet.name]["tflite"][QAT_KIND]["file"],
    }
