"""Plots validation top-1 against the metric for the winners of one or more runs.

    python tools/plot_pareto.py --job_dirs=runs/fmnist_pss,runs/fmnist_uniform --out=docs/fmnist_pareto.png

Each run is labelled by its sampler (or --labels). `--table` also prints a
Markdown table of the winners, one row per target, one column per run.
"""

from absl import flags

from pss_tf import cli
from pss_tf.config_flags import DEFINE_path, DEFINE_path_list
from pss_tf.errors import ConfigError
from pss_tf.run.job import JobDir
from pss_tf.run.metrics import metric_class

FLAGS = flags.FLAGS
DEFINE_path_list("job_dirs", None, "Job directories with a winners.json.")
flags.DEFINE_list("labels", None, "A legend label per job directory (default: the run's sampler).")
DEFINE_path("out", "pareto.png", "PNG file to write.")
flags.DEFINE_string("metric", "flops", "Which metric type's winners to plot.")
flags.DEFINE_bool("table", True, "Print a Markdown table of the winners.")
flags.DEFINE_string("title", None, "Plot title.")

def _runs():
    labels = FLAGS.labels or []
    if labels and len(labels) != len(FLAGS.job_dirs):
        raise ConfigError("labels", "give one label per `job_dirs` entry")
    runs = []
    for i, job_dir in enumerate(FLAGS.job_dirs):
        try:
            entries = JobDir(job_dir).read_winners()
        except ConfigError as e:
            raise ConfigError("job_dirs", e.message) from None
        winners = [entry for entry, _ in entries if entry["metric"] == FLAGS.metric]
        if not winners:
            raise ConfigError("metric", f"{job_dir} has no {FLAGS.metric} winners")
        if any("val_top1" not in w for w in winners):
            raise ConfigError(
                "job_dirs",
                f"{job_dir}'s winners were not validated (a release checkpoint imported without data): import it "
                "again with --data_dir to validate them (tools/import_release.py)",
            )
        label = labels[i] if labels else JobDir(job_dir).read_run_config().sampling.subnet_sampler
        runs.append((label, sorted(winners, key=lambda w: w["value"])))
    return runs


def _plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for (label, winners), marker in zip(runs, "osd^v<>"):
        front = [w for w in winners if w["pareto"]]
        line = ax.plot(
            [w["value"] for w in front], [100 * w["val_top1"] for w in front], marker=marker, label=f"{label} (front)"
        )[0]
        others = [w for w in winners if not w["pareto"]]
        if others:  # Winners a cheaper winner beats: hollow, off the line.
            ax.scatter(
                [w["value"] for w in others], [100 * w["val_top1"] for w in others], marker=marker,
                facecolors="none", edgecolors=line.get_color(), label=f"{label} (not on the front)",
            )
    ax.set_xlabel(f"{FLAGS.metric} ({metric_class(FLAGS.metric).unit})")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(FLAGS.title or "Pool winners: accuracy against cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from pss_tf.io_utils import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")


def _table(runs) -> str:
    targets = sorted({w["target"] for _, winners in runs for w in winners})
    header = "| target | " + " | ".join(f"{label} value | {label} top-1" for label, _ in runs) + " |"
    # A winner off the Pareto front (a cheaper winner is at least as accurate) is marked with a dagger.
    lines = [header, "|" + "---|" * (1 + 2 * len(runs))]
    for target in targets:
        cells = []
        for _, winners in runs:
            match = [w for w in winners if w["target"] == target]
            mark = "" if not match or match[0]["pareto"] else " †"
            cells += [f"{match[0]['value']:.2f}", f"{100 * match[0]['val_top1']:.2f}{mark}"] if match else ["", ""]
        lines.append(f"| {target:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    try:
        if not FLAGS.job_dirs:
            raise ConfigError("job_dirs", "name at least one job directory")
        runs = _runs()
    except ConfigError as e:
        return cli.error(e)
    _plot(runs, FLAGS.out)
    if FLAGS.table:
        print(_table(runs))
    print(f"wrote {FLAGS.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
