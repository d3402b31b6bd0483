"""A training run's contract: what it is told, what it records, and every reader of its directory.

    config    `TrainConfig`: the run's settings in groups, one flag per leaf, run.json's form
    modes     the training modes a run may name, and what each asks of the other settings
    metrics   the resource metrics a run may name, each declared once (unit, labels, targets, table)
    job       the job directory: `JobDir` (what training writes) and `Job` (a run opened to be used)
    records   `TrainingRecords`: the lowest training losses, with their subnets (records.json)
    outputs   what the tools leave in a run: searched.json, finetuned.json and its weights
    compat    the readers of what pss_tf 0.1 wrote

Training, export, search, fine-tuning and the release's importer read and write
runs only through this package. Nothing here imports TensorFlow at import time.
"""
