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
import shutil
import tempfile
from collections.abc import Callable

from pss_tf.errors import ConfigError
from pss_tf.export import serving
from pss_tf.export import subnets as subnets_lib
from pss_tf.export.options import ExportOptions
from pss_tf.io_utils import atomic_write_json
from pss_tf.run.job import Job
from pss_tf.run.outputs import finetuned_subnets, load_weights, searched_subnets

logger = logging.getLogger(__name__)

QAT_KIND = "int8_qat"


@dataclasses.dataclass
class ExportResult:
    export_dir: str
    model_name: str
    version: int
    manifest: dict


@dataclasses.dataclass
class ExportPlan:
    """What `plan` found: the run, its subnets, and the version this export will be."""

    job: Job
    subnets: list
    model_name: str
    version: int
    fresh: bool
    qat_subnet: str | None


def plan(options: ExportOptions) -> ExportPlan:
    """Every check that needs no model: raises ConfigError naming the field to fix."""
    options.validate()
    job = Job(options.job_dir, options.data_dir)
    job.info  # Checks the (possibly moved) data before anything is built.
    choice = options.subnets
    configs = [subnets_lib.parse_config(text, job.space) for text in choice.config]
    include_winners = choice.winners if choice.winners is not None else not configs
    winners = None
    if include_winners:
        winners = job.winners()
        if not winners:
            raise ConfigError("job_dir", f"{job.path} lists no winners (every pool was empty)")
    searched = searched_subnets(job, choice.searched_dir) if choice.searched else None
    finetuned = finetuned_subnets(job, choice.finetuned_dir) if choice.finetuned else None
    chosen = subnets_lib.select(winners, configs, job.metrics, job.cost_kwargs(), searched, finetuned,
                                choice.finetuned_always)
    qat_subnet = None
    if options.quantization.qat:
        names = [s.name for s in chosen]
        qat_subnet = options.quantization.qat_subnet or subnets_lib.largest(chosen, next(iter(job.metrics))).name
        if qat_subnet not in names:
            raise ConfigError("qat_subnet", f"{qat_subnet!r} is not exported; choose one of {names}")
        from pss_tf.export.qat import import_tfmot, unsupported

        missing = unsupported(job.run_config.space.model)
        if missing:
            raise ConfigError("qat", f"{job.run_config.space.model} has {' and '.join(missing)} layers, which "
                              "tensorflow-model-optimization's tf_keras quantization cannot rebuild; export without --qat")

        try:
            import_tfmot()
        except ImportError as e:
            raise ConfigError("qat", str(e)) from None
    model_name = choice.model_name or f"pss_{job.run_config.space.model}"
    version = serving.plan_version(options.export_dir, choice.new_version)
    fresh = not (os.path.isdir(options.export_dir) and os.listdir(options.export_dir))
    return ExportPlan(job, chosen, model_name, version, fresh, qat_subnet)


def export(options: ExportOptions, log: Callable[[str], None] = logger.info) -> ExportResult:
    """Exports the subnets of a run (see the module docstring); returns the manifest."""
    checked = plan(options)
    staging = serving.staging_dir(options.export_dir, checked.fresh)
    try:
        manifest = _build(options, checked, staging, log)
        serving.commit(
            staging, options.export_dir, checked.model_name, checked.version, manifest,
            options.subnets.container_dir, checked.fresh,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"exported version {checked.version} of {checked.model_name} to {os.path.abspath(options.export_dir)}")
    return ExportResult(os.path.abspath(options.export_dir), checked.model_name, checked.version, manifest)


def _build(options: ExportOptions, checked: ExportPlan, staging: str, log) -> dict:
    """The export's stages in order, each given what the ones before it made."""
    build = _Build(options, checked, staging, log)
    try:
        extracted = build.extract()
        signatures = build.saved_model(extracted.models)
        build.tflite_files(extracted.models)
        bundles = build.bundles(extracted.models) if options.tflite.bundle else {}
        qat_report = build.quantization_aware(extracted) if checked.qat_subnet else None
        return build.manifest(signatures, bundles, qat_report)
    finally:
        shutil.rmtree(build.work, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class _Extracted:
    """What extraction gives the later stages: the restored supernet, and per subnet
    name its standalone Keras model and the (calibrated) weights it was built from."""

    supernet: object
    models: dict
    weights: dict


class _Build:
    """The stages of one export, writing into `staging`.

    Each stage takes what it needs from the stages before it as arguments and
    returns what it made; `entries` (the manifest's per-subnet records) is the
    one thing they add to together.
    """

    def __init__(self, options: ExportOptions, checked: ExportPlan, staging: str, log):
        from pss_tf.export.client_data import ClientData

        self.options, self.checked, self.staging, self.log = options, checked, staging, log
        self.job = checked.job
        self.client_data = ClientData(self.job.data)
        self.subnets = checked.subnets
        self.saved_model_dir = serving.serving_path(staging, checked.model_name, checked.version)
        self.tflite_dir = serving.tflite_path(staging, checked.version)
        self.work = tempfile.mkdtemp(dir=staging, prefix=".work-")
        self.entries = {s.name: {**s.to_dict(), "signature": s.name, "accuracy": {}, "tflite": {}} for s in self.subnets}
        self._representative = None

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.staging)

    def representative(self):
        if self._representative is None:
            self._representative = self.client_data.representative_images(
                self.options.tflite.representative_examples, self.options.seed
            )
        return self._representative

    def validation(self):
        """Client-side validation batches (uint8 at S x S), for TFLite accuracy."""
        return self.client_data.batches("val", 256, self.options.checks.eval_examples)

    def extract(self) -> _Extracted:
        """Calibrates each subnet on the batches training evaluated it with, then extracts it."""
        from pss_tf.training.evaluation import evaluate_model, make_evaluator

        checks = self.options.checks
        supernet = self.job.restore_supernet()
        evaluator = make_evaluator(supernet, self.job.run_config, self.job.data, checks.calibration_batches or None)
        self.log(
            f"calibrating and extracting {len(self.subnets)} subnets "
            f"({evaluator.calibration_batches} BN calibration batches each)"
        )
        models, weights = {}, {}
        for s in self.subnets:
            if s.finetuned_weights:  # Trained as the standalone model: its own BN statistics.
                weights[s.name] = load_weights(s.finetuned_weights)
            else:
                evaluator.calibrate(s.config)
                weights[s.name] = supernet.subnet_weights(s.config)
            models[s.name] = supernet.extract(s.config, name=s.name, weights=weights[s.name])
        if checks.evaluate:
            batch_size = self.job.run_config.evaluation.eval_batch_size
            for s in self.subnets:
                validation = self.job.data.validation(batch_size, checks.eval_examples)
                s.measured_top1 = evaluate_model(models[s.name], validation).top1
                self.entries[s.name]["accuracy"]["keras"] = s.measured_top1
        return _Extracted(supernet, models, weights)

    def saved_model(self, models: dict) -> dict:
        """Writes the SavedModel of every subnet's signature; returns the signatures."""
        from pss_tf.export import savedmodel

        functions, signatures = savedmodel.signatures(self.subnets, models, self.job.data, list(self.job.metrics))
        for metric in self.job.metrics:
            front = {s.name for s in subnets_lib.candidates(self.subnets, metric)}
            for s in self.subnets:
                self.entries[s.name].setdefault("pareto_front", {})[metric] = s.name in front
        self.log(f"writing the SavedModel ({len(signatures)} signatures)")
        savedmodel.save(self.saved_model_dir, models.values(), functions)
        return signatures

    def fixed_size_source(self, name: str, subnets, models: dict) -> str:
        """The TFLite converter's source: per-subnet signatures on S x S images."""
        from pss_tf.export import savedmodel

        path = os.path.join(self.work, name)
        functions, _ = savedmodel.signatures(subnets, models, self.job.data, fixed_size=True)
        savedmodel.save(path, [models[s.name] for s in subnets], functions)
        return path

    def write_tflite(self, name: str, kind: str, content: bytes) -> None:
        from pss_tf.export import tflite

        path = os.path.join(self.tflite_dir, f"{name}_{kind}.tflite")
        _write_bytes(path, content)
        entry = {"file": self.relative(path), "bytes": len(content)}
        checks = self.options.checks
        if checks.latency:
            entry["latency_ms"] = tflite.latency_ms(content, checks.latency_threads)
        self.entries[name]["tflite"][kind] = entry
        if checks.evaluate:
            self.entries[name]["accuracy"][f"tflite_{kind}"] = tflite.top1(content, self.validation())

    def tflite_files(self, models: dict) -> None:
        from pss_tf.export import tflite

        for s in self.subnets:
            source = self.fixed_size_source(s.name, [s], models)
            for kind in self.options.tflite.tflite_kinds:
                self.log(f"converting {s.name} to TFLite ({kind})")
                representative = self.representative() if kind == "int8" else None
                self.write_tflite(s.name, kind, tflite.convert(source, [s.name], kind, representative))

    def bundles(self, models: dict) -> dict:
        """One multi-signature .tflite per kind; returns their manifest entries by kind."""
        from pss_tf.export import tflite

        kinds = self.options.tflite.tflite_kinds
        files = {}
        if not kinds:
            return files
        names = [s.name for s in self.subnets]
        source = self.fixed_size_source("bundle", self.subnets, models)
        for kind in kinds:
            self.log(f"converting the {kind} bundle of {len(names)} subnets")
            representative = self.representative() if kind == "int8" else None
            content = tflite.convert(source, names, kind, representative)
            path = os.path.join(self.tflite_dir, f"bundle_{kind}.tflite")
            _write_bytes(path, content)
            files[kind] = {"file": self.relative(path), "bytes": len(content), "signatures": names}
        return files

    def quantization_aware(self, extracted: _Extracted) -> dict:
        """Fine-tunes one subnet with QAT, converts it to int8, compares it with plain int8;
        returns the manifest's report."""
        from pss_tf.export import qat, tflite

        options, subnet = self.options.quantization, next(s for s in self.subnets if s.name == self.checked.qat_subnet)
        batch_size = options.qat_batch_size or self.job.run_config.optimization.global_batch_size
        steps = options.qat_steps_per_epoch or max(1, self.job.data.steps_per_epoch(batch_size))
        self.log(f"quantization-aware fine-tuning of {subnet.name}: {options.qat_epochs} epochs of {steps} steps")
        rebuilt = qat.rebuild(extracted.supernet, subnet.config, extracted.weights[subnet.name])
        quantized = qat.finetune(
            rebuilt, subnet.config.resolution, self.job.data.training(batch_size, self.options.seed),
            options.qat_epochs, steps, options.qat_learning_rate,
        )
        source = os.path.join(self.work, "qat")
        qat.write_saved_model(quantized, subnet.name, subnet.config.resolution, self.job.data, source)
        content = tflite.convert(source, [subnet.name], "int8", self.representative())
        self.write_tflite(subnet.name, QAT_KIND, content)
        accuracy = self.entries[subnet.name]["accuracy"]
        with_qat = accuracy.get(f"tflite_{QAT_KIND}")
        if with_qat is None:
            with_qat = tflite.top1(content, self.validation())
        without = accuracy.get("tflite_int8")
        if without is None:
            source = self.fixed_size_source("plain", [subnet], extracted.models)
            plain = tflite.convert(source, [subnet.name], "int8", self.representative())
            without = tflite.top1(plain, self.validation())
        return {
            "subnet": subnet.name,
            "epochs": options.qat_epochs,
            "steps_per_epoch": steps,
            "batch_size": batch_size,
            "learning_rate": options.qat_learning_rate,
            "int8_top1_without_qat": without,
            "int8_top1_with_qat": with_qat,
            "file": self.entries[subnet.name]["tflite"][QAT_KIND]["file"],
        }

    def manifest(self, signatures: dict, bundles: dict, qat_report: dict | None) -> dict:
        from pss_tf.export import manifest as manifest_lib

        checks = self.options.checks
        latency = None
        if checks.latency:
            from pss_tf.latency.measure import device_info, runtime_info

            latency = {
                "batch": 1,
                "threads": checks.latency_threads,
                "statistic": "median of repeats of the mean invoke time",
                "device": device_info(),
                "runtime": runtime_info(),
            }
        result = manifest_lib.build(
            model_name=self.checked.model_name,
            version=self.checked.version,
            job=self.job,
            subnet_entries=[self.entries[s.name] for s in self.subnets],
            signatures=signatures,
            saved_model_path=self.relative(self.saved_model_dir),
            bundles=bundles,
            latency=latency,
            qat=qat_report,
        )
        atomic_write_json(os.path.join(self.saved_model_dir, "assets.extra", "pss_manifest.json"), result)
        return result


def _write_bytes(path: str, content: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
