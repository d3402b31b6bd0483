"""Search after training: the best subnet for any budget (PSE-Net's prior-guided evolution).

The core is pure Python and numpy; nothing it imports loads TensorFlow. It starts from the
training records the trainer kept (`pss_tf.run.records.TrainingRecords`).

- `genes.GeneSpace`: a search space's discrete values as integer genes.
- `budget.Budget`: a metric, a budget B and the window [alpha B, B] candidates must fit.
- `expected_loss.ExpectedLoss`: expected loss per resolution and per (stage, channel level).
- `prior.Prior`: per-gene distributions trading that loss against the budget; `prior.seeds`.
- `proposals`: the proposal interface and the uniform and conditional baselines.
- `evolution.EvolutionSearch`: the resumable, cached evolutionary search.

The tool's side (`tools/search.py`) uses TensorFlow and is not imported here:

- `fitness`: held-out top-1 after BN calibration, many configs per call, cached by network.
- `options.SearchOptions`: the tool's flags; `driver`: `plan` (every cheap check) and
  `execute` (the searches, their states, searched.json); `plots`: its figures.
"""

from pss_tf.search.budget import Budget
from pss_tf.search.evolution import EvolutionSearch
from pss_tf.search.expected_loss import ExpectedLoss
from pss_tf.search.genes import GeneSpace, network_key
from pss_tf.search.prior import Prior, seeds
from pss_tf.search.proposals import ConditionalProposal, Proposal, UniformProposal

__all__ = [
    "Budget",
    "ConditionalProposal",
    "EvolutionSearch",
    "ExpectedLoss",
    "GeneSpace",
    "Prior",
    "Proposal",
    "UniformProposal",
    "network_key",
    "seeds",
]
