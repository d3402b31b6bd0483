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
from collections.abc import Callable

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
class ExportPlan:
    """What `plan` found: the run, its subnets, and the version this export will be."""

    train_config: object
    info: data_lib.DatasetInfo
    metrics: dict
    subnets: list
    model_name: str
    version: int
    fresh: bool
    qat_subnet: str | None


def plan(options: ExportOptions) -> ExportPlan:
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
                "train to the end (--resume), or export chosen configs with --config"
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
    return ExportPlan(train_config, info, metrics, chosen, model_name, version, fresh, qat_subnet)


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


def _build(options: ExportOptions, checked: ExportPlan, staging: str, log) -> dict:
    build = _Build(options, checked, staging, log)
    try:
        build.extract()
        build.saved_model()
        build.tflite_files()
        if options.bundle:
            build.bundles()
        if checked.qat_subnet:
            build.quantization_aware()
        return build.manifest()
    finally:
        shutil.rmtree(build.work, ignore_errors=True)


class _Build:
    """The steps of one export, writing into `staging`; state shared through attributes."""

    def __init__(self, options: ExportOptions, checked: ExportPlan, staging: str, log):
        from pss_tf.export.job_data import JobData

        self.options, self.checked, self.staging, self.log = options, checked, staging, log
        self.data = JobData(checked.train_config, checked.info, options.data_dir)
        self.size, self.crop, self.channels = self.data.image_size, options.crop_fraction, checked.info.channels
        self.subnets = checked.subnets
        self.saved_model_dir = serving.serving_path(staging, checked.model_name, checked.version)
        self.tflite_dir = serving.tflite_path(staging, checked.version)
        self.work = tempfile.mkdtemp(dir=staging, prefix=".work-")
        self.entries = {s.name: {**s.to_dict(), "signature": s.name, "accuracy": {}, "tflite": {}} for s in self.subnets}
        self.models, self.signatures, self.bundle_files, self.qat_report = {}, {}, {}, None
        self._representative = None

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.staging)

    def representative(self):
        if self._representative is None:
            self._representative = self.data.representative_images(self.options.representative_examples, self.options.seed)
        return self._representative

    def validation(self):
        """Client-side validation batches (uint8 at S x S), for TFLite accuracy."""
        return self.data.client_batches("val", 256, self.options.eval_examples)

    def extract(self):
        from pss_tf import trainer
        from pss_tf.export import calibrated

        supernet, _, _ = trainer.load_job(self.options.job_dir)
        batches = self.options.calibration_batches or self.checked.train_config.calibration_batches
        self.log(f"calibrating and extracting {len(self.subnets)} subnets ({batches} BN calibration batches each)")
        self.models = calibrated.extract_calibrated(supernet, self.subnets, self.data.calibration_batches(batches))
        if self.options.evaluate:
            for s in self.subnets:
                validation = self.data.validation_batches(self.options.eval_examples)
                self.entries[s.name]["accuracy"]["keras"] = calibrated.keras_top1(self.models[s.name], validation)

    def saved_model(self):
        from pss_tf.export import savedmodel

        functions, self.signatures = savedmodel.signatures(
            self.subnets, self.models, self.channels, self.size, self.crop, list(self.checked.metrics)
        )
        self.log(f"writing the SavedModel ({len(self.signatures)} signatures)")
        savedmodel.save(self.saved_model_dir, self.models.values(), functions)

    def fixed_size_source(self, name: str, subnets) -> str:
        """The TFLite converter's source: per-subnet signatures on S x S images."""
        from pss_tf.export import savedmodel

        path = os.path.join(self.work, name)
        functions, _ = savedmodel.signatures(subnets, self.models, self.channels, self.size, self.crop, fixed_size=True)
        savedmodel.save(path, [self.models[s.name] for s in subnets], functions)
        return path

    def write_tflite(self, name: str, kind: str, content: bytes) -> None:
        from pss_tf.export import tflite

        path = os.path.join(self.tflite_dir, f"{name}_{kind}.tflite")
        _write_bytes(path, content)
        entry = {"file": self.relative(path), "bytes": len(content)}
        if self.options.latency:
            entry["latency_ms"] = tflite.latency_ms(content, self.options.latency_threads)
        self.entries[name]["tflite"][kind] = entry
        if self.options.evaluate:
            self.entries[name]["accuracy"][f"tflite_{kind}"] = tflite.top1(content, self.validation())

    def tflite_files(self):
        from pss_tf.export import tflite

        for s in self.subnets:
            source = self.fixed_size_source(s.name, [s])
            for kind in self.options.tflite_kinds:
                self.log(f"converting {s.name} to TFLite ({kind})")
                representative = self.representative() if kind == "int8" else None
                self.write_tflite(s.name, kind, tflite.convert(source, [s.name], kind, representative))

    def bundles(self):
        from pss_tf.export import tflite

        if not self.options.tflite_kinds:
            return
        names = [s.name for s in self.subnets]
        source = self.fixed_size_source("bundle", self.subnets)
        for kind in self.options.tflite_kinds:
            self.log(f"converting the {kind} bundle of {len(names)} subnets")
            representative = self.representative() if kind == "int8" else None
            content = tflite.convert(source, names, kind, representative)
            path = os.path.join(self.tflite_dir, f"bundle_{kind}.tflite")
            _write_bytes(path, content)
            self.bundle_files[kind] = {"file": self.relative(path), "bytes": len(content), "signatures": names}

    def quantization_aware(self):
        """Fine-tunes one subnet with QAT, converts it to int8, compares it with plain int8."""
        from pss_tf.export import qat, tflite

        options, subnet = self.options, next(s for s in self.subnets if s.name == self.checked.qat_subnet)
        resolution = subnet.config.resolution
        batch_size = options.qat_batch_size or self.checked.train_config.global_batch_size
        steps = options.qat_steps_per_epoch or max(1, data_lib.steps_per_epoch(self.checked.info, batch_size))
        self.log(f"quantization-aware fine-tuning of {subnet.name}: {options.qat_epochs} epochs of {steps} steps")
        quantized = qat.finetune(
            self.models[subnet.name], resolution, self.data.training_batches(batch_size, options.seed),
            options.qat_epochs, steps, options.qat_learning_rate,
        )
        source = os.path.join(self.work, "qat")
        qat.write_saved_model(quantized, subnet.name, resolution, self.channels, self.size, self.crop, source)
        content = tflite.convert(source, [subnet.name], "int8", self.representative())
        self.write_tflite(subnet.name, QAT_KIND, content)
        accuracy = self.entries[subnet.name]["accuracy"]
        with_qat = accuracy.get(f"tflite_{QAT_KIND}")
        if with_qat is None:
            with_qat = tflite.top1(content, self.validation())
        without = accuracy.get("tflite_int8")
        if without is None:
            plain = tflite.convert(self.fixed_size_source("plain", [subnet]), [subnet.name], "int8", self.representative())
            without = tflite.top1(plain, self.validation())
        self.qat_report = {
            "subnet": subnet.name,
            "epochs": options.qat_epochs,
            "steps_per_epoch": steps,
            "batch_size": batch_size,
            "learning_rate": options.qat_learning_rate,
            "int8_top1_without_qat": without,
            "int8_top1_with_qat": with_qat,
            "file": self.entries[subnet.name]["tflite"][QAT_KIND]["file"],
        }

    def manifest(self) -> dict:
        from pss_tf.export import manifest as manifest_lib

        latency = None
        if self.options.latency:
            from pss_tf.latency.measure import device_info, runtime_info

            latency = {
                "batch": 1,
                "threads": self.options.latency_threads,
                "statistic": "median of repeats of the mean invoke time",
                "device": device_info(),
                "runtime": runtime_info(),
            }
        result = manifest_lib.build(
            model_name=self.checked.model_name,
            version=self.checked.version,
            job_dir=os.path.abspath(self.options.job_dir),
            train_config=self.checked.train_config,
            info=self.checked.info,
            image_size=self.size,
            crop_fraction=self.crop,
            metrics=list(self.checked.metrics),
            subnet_entries=[self.entries[s.name] for s in self.subnets],
            signatures=self.signatures,
            saved_model_path=self.relative(self.saved_model_dir),
            bundles=self.bundle_files,
            latency=latency,
            qat=self.qat_report,
        )
        atomic_write_json(os.path.join(self.saved_model_dir, "assets.extra", "pss_manifest.json"), result)
        return result


def _write_bytes(path: str, content: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
