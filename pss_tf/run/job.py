"""The job directory: the one reader and writer of what a training run leaves.

    run.json              the run's TrainConfig (written once the run has started)
    sampler_<metric>.npz  the conditional samplers' caches
    checkpoints/          model, optimizer, step, pools and every random state
    pools.json            the pools and their step, rewritten atomically at every checkpoint
    records.json          the lowest training losses seen, with their subnets (the search's prior)
    evaluations.json      per-epoch validation results
    winners.json          one entry per pool winner, written at the end
    tensorboard/          scalars

Training writes through `JobDir`; export, search and the tools open a finished
(or stopped) run with `Job`, which also rebuilds its metrics, its data settings
(optionally from a moved data directory) and its trained supernet. What the
tools add to a run (searched.json, finetuned.json) is read by `pss_tf.run.outputs`.
"""

from __future__ import annotations

import functools
import logging
import os

from pss_tf.errors import ConfigError
from pss_tf.io_utils import atomic_write_json, read_json
from pss_tf.run import compat
from pss_tf.run.config import IMPORTED_KEY, INIT_SOURCE, TrainConfig
from pss_tf.run.metrics import metrics_for_run
from pss_tf.space.config import SubnetConfig

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
POOLS_FILE = "pools.json"
WINNERS_FILE = "winners.json"
EVALUATIONS_FILE = "evaluations.json"
RECORDS_FILE = "records.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


class JobDir:
    """Paths and files of one job directory."""

    def __init__(self, path: str):
        if not path:
            raise ConfigError("job_dir", "required")
        self.path = os.fspath(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def run_file(self) -> str:
        return self.file(RUN_FILE)

    @property
    def checkpoints_dir(self) -> str:
        return self.file(CHECKPOINTS_DIR)

    @property
    def tensorboard_dir(self) -> str:
        return self.file(TENSORBOARD_DIR)

    @property
    def pools_file(self) -> str:
        return self.file(POOLS_FILE)

    @property
    def records_file(self) -> str:
        return self.file(RECORDS_FILE)

    def sampler_cache(self, metric: str) -> str:
        return self.file(f"sampler_{metric}.npz")

    def holds_run(self) -> bool:
        return os.path.exists(self.run_file)

    # --- run.json ---------------------------------------------------------------

    def read_run_config(self) -> TrainConfig:
        if not self.holds_run():
            raise ConfigError("job_dir", f"{self.path} holds no training run ({RUN_FILE} is missing)")
        return TrainConfig.from_dict(read_json(self.run_file, RUN_FILE))

    def write_run_config(self, run_config: TrainConfig, provenance: dict | None = None) -> None:
        """Writes run.json: the run_config, and `provenance` records beside it
        (`{IMPORTED_KEY: ...}` for an imported run, `{INIT_SOURCE: ...}` for a warm start)."""
        data = run_config.to_dict()
        data.update(provenance or {})
        atomic_write_json(self.run_file, data)

    def _provenance(self, key: str) -> dict | None:
        if not self.holds_run():
            return None
        data = read_json(self.run_file, RUN_FILE)
        return data.get(key) if isinstance(data, dict) else None

    def read_imported(self) -> dict | None:
        """run.json's record of where an imported run came from, or None for a run pss_tf trained."""
        return self._provenance(IMPORTED_KEY)

    def read_init_source(self) -> dict | None:
        """The source a warm-started run began from (path, step, checkpoint, sha256), or None."""
        return self._provenance(INIT_SOURCE)

    def check_start(self, run_config: TrainConfig) -> None:
        """Refuses to mix two runs in one directory; checks a resumed run matches.

        Leaves the directory untouched either way.
        """
        if self.holds_run():
            if not run_config.runtime.resume:
                raise ConfigError(
                    "job_dir",
                    f"{self.path} holds another run ({RUN_FILE}); continue it with `resume` or choose a new directory",
                )
            previous = self.read_run_config()
            changed = run_config.differences(previous)
            if changed:
                old, new = previous.leaf_values(), run_config.leaf_values()
                raise ConfigError(
                    "resume",
                    f"settings differ from the run in {self.path}: "
                    + ", ".join(f"{k} (was {old[k]!r}, now {new[k]!r})" for k in changed),
                )
        elif run_config.runtime.resume:
            raise ConfigError("resume", f"{self.path} holds no run to resume ({RUN_FILE} is missing)")
        elif os.path.isdir(self.path) and os.listdir(self.path):
            raise ConfigError("job_dir", f"{self.path} exists and is not empty; choose a new directory")

    # --- results ----------------------------------------------------------------

    def write_pools(self, pools, step: int) -> None:
        """The pools as of checkpoint `step` (PoolManager's JSON plus the step)."""
        atomic_write_json(self.pools_file, {**pools.to_dict(), "step": int(step)})

    def write_evaluations(self, evaluations: list) -> None:
        atomic_write_json(self.file(EVALUATIONS_FILE), evaluations)

    def read_evaluations(self) -> list[dict]:
        """The per-epoch validation results (evaluations.json), oldest first; [] before the first."""
        path = self.file(EVALUATIONS_FILE)
        if not os.path.exists(path):
            return []
        evaluations = read_json(path, EVALUATIONS_FILE)
        if not isinstance(evaluations, list):
            raise ConfigError("job_dir", f"{path}: expected a list of per-epoch results")
        return evaluations

    def write_winners(self, entries: list) -> None:
        atomic_write_json(self.file(WINNERS_FILE), entries)

    def read_winners(self) -> list[tuple[dict, SubnetConfig]]:
        """The entries of winners.json with their configs parsed."""
        path = self.file(WINNERS_FILE)
        if not os.path.exists(path):
            raise ConfigError(
                "job_dir", f"{self.path} has no {WINNERS_FILE} (the run has not finished); train it to the end first"
            )
        entries = compat.winner_entries(read_json(path, WINNERS_FILE), self.read_run_config().space.model)
        return [(e, SubnetConfig.from_dict(e["config"])) for e in entries]

    def latest_checkpoint(self) -> str | None:
        import tensorflow as tf

        return tf.train.latest_checkpoint(self.checkpoints_dir)


# --- an opened run ----------------------------------------------------------------


class Job:
    """A training run opened for export, search or inspection.

    Args:
        path: the job directory.
        data_dir: where the run's data lives now, if it moved since training;
            every pipeline of the opened run reads from there.
    """

    def __init__(self, path: str, data_dir: str | None = None):
        self.dir = JobDir(path)
        self.run_config = self.dir.read_run_config()
        self.data = self.run_config.data_settings().with_data_dir(data_dir)

    @property
    def path(self) -> str:
        return self.dir.path

    @functools.cached_property
    def info(self):
        """The dataset's description; checks that the data is readable.

        An imported run (tools/import_release.py) whose data is not at hand
        still opens: its supernet, metrics and winners need only the
        checkpoint's class count, RGB images. Whatever reads images then
        reports the data's own error.
        """
        try:
            return self.data.info
        except ConfigError as e:
            imported = self.dir.read_imported()
            if not imported or "num_classes" not in imported:
                raise
            from pss_tf.data.splits import DatasetInfo

            logger.warning("%s: %s; using the imported checkpoint's %d classes", self.path, e, imported["num_classes"])
            return DatasetInfo(self.data.dataset, int(imported["num_classes"]), 3, 0, 0)

    @functools.cached_property
    def space(self):
        return self.run_config.search_space()

    @functools.cached_property
    def metrics(self) -> dict:
        return metrics_for_run(self.run_config, self.info.num_classes, self.info.channels)

    def cost_kwargs(self) -> dict:
        """What MACs and parameter counts of this run's subnets depend on besides the config."""
        return dict(
            num_classes=self.info.num_classes, small_input=self.run_config.space.small_input, in_channels=self.info.channels
        )

    def winners(self) -> list[tuple[dict, SubnetConfig]]:
        return self.dir.read_winners()

    def pools(self):
        """The run's pools (`PoolManager`) as of its last checkpoint."""
        from pss_tf.sampling.pools import PoolManager

        path = self.dir.pools_file
        if not os.path.exists(path):
            raise ConfigError(
                "job_dir", f"{self.path} has no {POOLS_FILE} (no checkpoint was saved); train the run first"
            )
        try:
            return PoolManager.load(path)
        except ValueError as e:
            raise ConfigError("job_dir", str(e)) from None

    def records(self):
        """The training records (`pss_tf.run.records.TrainingRecords`) as of the last checkpoint."""
        from pss_tf.run.records import TrainingRecords

        path = self.dir.records_file
        if not os.path.exists(path):
            raise ConfigError(
                "job_dir",
                f"{self.path} has no training records ({RECORDS_FILE}): the run was trained by a version of pss_tf "
                f"that did not record its subnets' losses. Train it again (or a new run) with this version, or "
                f"search without them (`init` uniform or conditional)",
            )
        try:
            return TrainingRecords.load(path)
        except ValueError as e:
            raise ConfigError("job_dir", f"{e}; train the run again to rewrite it") from None

    def restore_supernet(self, calibrate_for=None, calibration_batches: int | None = None):
        """The trained supernet, weights from the latest checkpoint.

        The BN statistics are whatever the last calibration left: calibrate each
        subnet before evaluating or exporting it. `calibrate_for` (a SubnetConfig)
        does so here, on the run's calibration batches (`calibration_batches`, default
        the run's number). An imported release checkpoint's statistics are those of
        the subnet the release calibrated last (its min net): until a calibration, the
        supernet warns (`UncalibratedStatisticsWarning`) whenever a subnet runs in inference.
        """
        import tensorflow as tf

        latest = self.dir.latest_checkpoint()
        if latest is None:
            raise ConfigError("job_dir", f"{self.path} has no checkpoint")
        from pss_tf.models.supernet import supernet_for_run

        supernet = supernet_for_run(self.run_config, self.info)
        tf.train.Checkpoint(model=supernet).restore(latest).expect_partial().assert_existing_objects_matched()
        imported = self.dir.read_imported()
        if imported:
            supernet.uncalibrated_statistics = (
                f"{self.path} was imported from a PSS-Net release checkpoint, whose BN statistics are those of the "
                "subnet the release calibrated last (the min net; wider channels hold mean 0 and variance 1)"
            )
        if calibrate_for is not None:
            from pss_tf.data.settings import calibration_stream

            batches = calibration_batches or self.run_config.evaluation.calibration_batches
            supernet.calibrate_bn(calibration_stream(self.run_config, self.data), calibrate_for, batches)
        return supernet
