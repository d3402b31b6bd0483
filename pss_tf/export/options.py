"""What `tools/export.py` is told: the export's options, in groups, one flag per leaf.

Validation raises `ConfigError` naming the field; everything that needs the
run itself (its winners, its space, the export directory) is checked by
`exporter.plan`.
"""

from __future__ import annotations

import dataclasses
import os
import re

from pss_tf import config_flags
from pss_tf.config_flags import group, option
from pss_tf.errors import ConfigError

# The TFLite files a subnet can have (pss_tf.export.tflite makes them); here so that
# tools/export.py declares its flags without importing TensorFlow.
KINDS = ("float32", "dynamic_range", "int8")

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class SubnetChoice:
    """Which subnets the export holds, and under what name and version."""

    config: tuple[str, ...] = option(
        (), help="A SubnetConfig as JSON to export (repeatable); must lie in the run's space.", repeated=True
    )
    winners: bool | None = option(None, help="Export the run's winners (default: yes, unless config is given).")
    model_name: str | None = option(None, help="TF Serving model name (default: pss_<model>, e.g. pss_mobilenet_v1).")
    searched: bool = option(
        False, help="Also export the subnets tools/search.py found (searched.json in searched_dir), beside the winners."
    )
    searched_dir: str = option("", help="Where searched.json is (default: JOB_DIR/search).", path=True)
    finetuned: bool = option(
        False,
        help="Export the fine-tuned weights of the subnets tools/finetune.py trained (finetuned.json in "
        "finetuned_dir) where they validated at least as well as the inherited ones; fine-tuned subnets not "
        "otherwise chosen join the export.",
    )
    finetuned_dir: str = option("", help="Where finetuned.json is (default: JOB_DIR/finetune).", path=True)
    finetuned_always: bool = option(
        False,
        help="With finetuned: carry the fine-tuned weights even where they validated below the inherited ones "
        "(default: keep the better; the manifest's weights_choice names which, with both accuracies).",
    )
    new_version: bool = option(False, help="Add the next version to an existing export instead of refusing it.")
    container_dir: str = option("/models", help="Where the server mounts export_dir (models.config).")

    def validate(self) -> None:
        if self.model_name is not None and not _MODEL_NAME.match(self.model_name):
            raise ConfigError("model_name", f"letters, digits, '_', '.' and '-' only, got {self.model_name!r}")
        if not self.container_dir.startswith("/"):
            raise ConfigError("container_dir", f"must be an absolute path, got {self.container_dir!r}")


@dataclasses.dataclass(frozen=True)
class TfliteOptions:
    """The TFLite files written beside the SavedModel."""

    tflite_kinds: tuple[str, ...] = option(KINDS, help="TFLite files per subnet (empty: none).", choices=KINDS)
    bundle: bool = option(True, help="Also write one multi-signature .tflite per kind holding every subnet.")
    representative_examples: int = option(200, help="Training images that calibrate the int8 conversion.", minimum=1)


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """How the exported subnets are calibrated, evaluated and timed."""

    calibration_batches: int = option(0, help="BN calibration batches per subnet (0: the run's setting).", minimum=0)
    evaluate: bool = option(True, help="Measure Keras and TFLite top-1 on the validation split.")
    eval_examples: int = option(
        0, help="Validation examples to evaluate on (0: all); a seeded draw with every class its share.", minimum=0
    )
    latency: bool = option(True, help="Time every .tflite file (batch 1) on this machine.")
    latency_threads: int = option(1, help="Interpreter threads for the latency measurements.", minimum=1)


@dataclasses.dataclass(frozen=True)
class QatOptions:
    """Quantization-aware fine-tuning of one subnet before an extra int8 conversion."""

    qat: bool = option(False, help="Quantization-aware fine-tuning of one subnet before an extra int8 conversion.")
    qat_subnet: str | None = option(None, help="The subnet to fine-tune (default: the largest).")
    qat_epochs: int = option(2, help="QAT epochs.", minimum=1)
    qat_steps_per_epoch: int = option(0, help="QAT steps per epoch (0: one pass over the training split).", minimum=0)
    qat_learning_rate: float = option(1e-3, help="QAT learning rate (SGD, momentum 0.9).", above=0.0)
    qat_batch_size: int = option(0, help="QAT batch size (0: the run's global_batch_size).", minimum=0)

    def validate(self) -> None:
        if self.qat_subnet and not self.qat:
            raise ConfigError("qat_subnet", "given without `qat`")


@dataclasses.dataclass(frozen=True)
class ExportOptions(config_flags.Declared):
    """Everything `tools/export.py` is told (one flag per leaf field)."""

    job_dir: str = option("", help="Training run to export (tools/train.py's job_dir).", required=True, path=True)
    export_dir: str = option(
        "", help="Output directory; must be new or empty unless new_version.", required=True, path=True
    )
    data_dir: str | None = option(None, help="The run's data, if it moved since training.", path=True)
    seed: int = option(0, help="Seed of the representative and QAT data.", minimum=0)
    subnets: SubnetChoice = group(SubnetChoice)
    tflite: TfliteOptions = group(TfliteOptions)
    checks: CheckOptions = group(CheckOptions)
    quantization: QatOptions = group(QatOptions)

    def validate(self) -> None:
        config_flags.check_declared(self)  # Every field's kind, choices and range; job_dir, export_dir given.
        if os.path.abspath(self.export_dir) == os.path.abspath(self.job_dir):
            raise ConfigError("export_dir", "must differ from `job_dir`")
        for part in (self.subnets, self.quantization):
            part.validate()  # What involves several fields.

