"""Fine-tuning and retraining extracted subnets (`tools/finetune.py`).

`options` (what the tool is told), `training` (one extracted model trained on
the run's data, resumable; re-initialisation; weights files), `driver` (plan
every check, then fine-tune each subnet; finetuned.json).
"""
