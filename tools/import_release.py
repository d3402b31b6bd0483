"""Imports a PSS-Net release checkpoint (chenbong/PSS-Net train.py's checkpoint_NNN.pt) as a pss_tf run.

    python tools/import_release.py --checkpoint=checkpoint_249.pt --job_dir=runs/pss_mbv1_f
    python tools/import_release.py --checkpoint=checkpoint_249.pt --job_dir=runs/pss_mbv1_m \\
        --release_luts=PSS-Net/scripts/lut --data_dir=~/tensorflow_datasets

Writes a new job directory that tools/export.py, tools/search.py, tools/plot_pareto.py
and pss_tf.run.job.Job read as a trained run: run.json (the release's recipe, symmetric
padding, an `imported` record with the file's SHA-256), the supernet's checkpoint,
pools.json and winners.json. The file is read without PyTorch and without running
anything it names. With --data_dir (TFDS imagenet2012, or an ImageFolder with train/
and val/) the top 5 of every pool are BN-calibrated and validated, as the release picks
its winners; without, each pool's top-scored member is written unvalidated. See
docs/RELEASE_WEIGHTS.md.
"""

from absl import flags

from pss_tf import cli
from pss_tf.config_flags import DEFINE_path
from pss_tf.errors import ConfigError

FLAGS = flags.FLAGS
DEFINE_path("checkpoint", None, "The release's checkpoint_NNN.pt.")
DEFINE_path("job_dir", None, "The new job directory (refused if it exists).")
DEFINE_path("data_dir", None, "ImageNet: an ImageFolder with train/ and val/, or where TFDS keeps "
                    "imagenet2012. Given: validate the top_k of every pool. Not given: top-scored winners, unvalidated.")
flags.DEFINE_string("dataset", None, "Override the dataset the run reads (default: imagefolder when data_dir has "
                    "train/ and val/, else imagenet2012).")
DEFINE_path("release_luts", None, "The release's scripts/lut directory: needed for latency pools (-C, -G, -M).")
flags.DEFINE_integer("top_k", 5, "Members of every pool validated with --data_dir (the release: 5).")
flags.DEFINE_integer("calibration_batches", 0, "BN calibration batches per validated subnet (0: the recipe's 9).")


def main(argv):
    del argv
    from pss_tf.release.importer import import_release

    try:
        if not FLAGS.checkpoint:
            raise ConfigError("checkpoint", "required: the release's checkpoint_NNN.pt")
        import_release(
            FLAGS.checkpoint, FLAGS.job_dir, data_dir=FLAGS.data_dir, dataset=FLAGS.dataset,
            release_luts=FLAGS.release_luts, top_k=FLAGS.top_k,
            calibration_batches=FLAGS.calibration_batches or None, log=cli.timed_printer(),
        )
    except ConfigError as e:
        return cli.error(e)
    return 0


if __name__ == "__main__":
    cli.run(main)
