"""Evolutionary search for the fittest subnet within a budget window.

The loop of BCNet and SPOS (settings of the design note, section 8): a
population of candidates that fit [alpha B, B] is evaluated; the best
`parents` candidates seen so far are kept; the next population is `mutations`
mutated parents plus `crossovers` children of two parents, topped up with fresh
proposals. Every candidate must be new: a network already evaluated in an
earlier generation is never proposed again (BCNet's rule), so evaluations go to
unseen subnets. Where candidates come from (the initial population and the
values of mutated genes) is the `Proposal`'s business: uniform, the
conditional sampler, or the prior.

Evaluating a subnet is the expensive part (BN calibration plus a held-out pass),
hence:

* the fitness is cached by network (`identity="network"`: two multipliers that
  give the same channel counts build the same subnet) or by config;
* `batch_fitness` receives a whole generation's new candidates at once, so a
  caller can evaluate several subnets in one pass;
* the search is resumable: `state()` is JSON and `from_state` continues exactly
  where it stopped. The state is committed at generation boundaries, but the
  cache keeps every evaluation as soon as it is made, so a search interrupted in
  the middle of a generation redoes that generation's proposals (same random
  numbers) without re-evaluating what it had already evaluated.

Candidate generation: a mutation or crossover slot is retried until the child
is new and fits the window, at most `max_tries` times the number of slots in
all; slots still empty, and the initial population after seeds, are filled with
fresh proposal draws (at most `max_tries` rounds). If even those cannot fill the
population (the window holds few networks and most are seen), the generation
runs with fewer candidates and its history entry says so (`size`).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from pss_tf import checks
from pss_tf.search.genes import network_key
from pss_tf.search.proposals import Proposal
from pss_tf.space.config import SubnetConfig

_FORMAT = "pss_tf.search.evolution"
_VERSION = 1
IDENTITIES = ("network", "config")

Fitness = Callable[[SubnetConfig], float]
BatchFitness = Callable[[list[SubnetConfig]], Sequence[float]]


class Evaluation(NamedTuple):
    config: SubnetConfig
    fitness: float
    generation: int


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True)


def _check_fitness(value, config: SubnetConfig) -> float:
    if not checks.is_finite_number(value):
        raise ValueError(f"fitness: returned {value!r} for {config}; fitness must be a finite number")
    return float(value)


class EvolutionSearch:
    """Maximises a caller's fitness over the subnets of `proposal`'s space and budget.

    Args:
        proposal: source of the initial population and of mutated genes; its
            `space` and `budget` are the search's.
        fitness: config -> float, higher is better. Give this or `batch_fitness`.
        batch_fitness: list of configs -> list of floats, called once per
            generation with the generation's new candidates.
        seeds: configs placed first in the initial population (e.g. pool members,
            `pss_tf.search.prior.seeds`); those outside the window are dropped.
        population, generations, parents, mutations, crossovers, gene_prob:
            BCNet's settings. `generations` counts evaluated populations, the
            initial one included.
        max_tries: attempts per child slot before the fallback (see module doc).
        identity: "network" caches and deduplicates by (resolution, channels),
            "config" by the config itself.
        seed: seed of the search's numpy Generator; the search is deterministic
            given it, the proposal and the fitness.
    """

    def __init__(
        self,
        proposal: Proposal,
        fitness: Fitness | None = None,
        *,
        batch_fitness: BatchFitness | None = None,
        seeds: Iterable[SubnetConfig] = (),
        population: int = 80,
        generations: int = 40,
        parents: int = 10,
        mutations: int = 40,
        crossovers: int = 40,
        gene_prob: float = 0.1,
        max_tries: int = 10,
        identity: str = "network",
        seed: int = 0,
    ):
        if not isinstance(proposal, Proposal):
            raise ValueError(f"proposal: must implement the Proposal interface, got {type(proposal).__name__}")
        if (fitness is None) == (batch_fitness is None):
            raise ValueError("fitness: give exactly one of fitness (config -> float) and batch_fitness (list -> list)")
        for name, function in (("fitness", fitness), ("batch_fitness", batch_fitness)):
            if function is not None and not callable(function):
                raise ValueError(f"{name}: must be callable, got {type(function).__name__}")
        if identity not in IDENTITIES:
            raise ValueError(f"identity: must be one of {IDENTITIES}, got {identity!r}")
        self.settings = {
            "population": checks.integer("population", population, 1, error=ValueError),
            "generations": checks.integer("generations", generations, 1, error=ValueError),
            "parents": checks.integer("parents", parents, 1, error=ValueError),
            "mutations": checks.integer("mutations", mutations, 0, error=ValueError),
            "crossovers": checks.integer("crossovers", crossovers, 0, error=ValueError),
            "gene_prob": checks.probability("gene_prob", gene_prob, error=ValueError),
            "max_tries": checks.integer("max_tries", max_tries, 1, error=ValueError),
            "identity": identity,
            "seed": checks.integer("seed", seed, 0, error=ValueError),
        }
        self.proposal = proposal
        self.space = proposal.space
        self.genes = proposal.genes
        self.budget = proposal.budget
        self._fitness = fitness
        self._batch_fitness = batch_fitness
        self._key = network_key if identity == "network" else (lambda config: config)

        self.seeds: list[SubnetConfig] = []
        self.dropped_seeds = 0
        keys = set()
        for i, config in enumerate(seeds):
            try:
                self.genes.encode(config)
            except ValueError as e:
                raise ValueError(f"seeds[{i}]: {e}") from None
            if not self.budget.contains(config):
                self.dropped_seeds += 1
            elif self._key(config) not in keys:
                keys.add(self._key(config))
                self.seeds.append(config)

        self._rng = np.random.default_rng(self.settings["seed"])
        self._rng_state = copy.deepcopy(self._rng.bit_generator.state)
        self.generation = 0
        self.population: list[SubnetConfig] = []
        self.parents: list[SubnetConfig] = []
        self.history: list[dict] = []
        self._cache: dict = {}  # key -> Evaluation, in evaluation order.
        self._seen: set = set()  # Keys of the committed generations' candidates.

    # Reading.

    @property
    def done(self) -> bool:
        return self.generation >= self.settings["generations"]

    @property
    def evaluations(self) -> int:
        """Distinct subnets evaluated so far (the fitness is never called twice for one)."""
        return len(self._cache)

    @property
    def cache(self) -> dict[SubnetConfig, float]:
        """Fitness of every evaluated config, in evaluation order (a copy)."""
        return {e.config: e.fitness for e in self._cache.values()}

    def fitness_of(self, config: SubnetConfig) -> float | None:
        """The cached fitness of `config` (or of a config of the same network), if any."""
        entry = self._cache.get(self._key(config))
        return None if entry is None else entry.fitness

    @property
    def best(self) -> tuple[SubnetConfig, float] | None:
        """The fittest config evaluated so far and its fitness (None before generation 0)."""
        if not self.parents:
            return None
        return self.parents[0], self.fitness_of(self.parents[0])

    # Running.

    def run(self, on_generation: Callable[["EvolutionSearch", dict], None] | None = None):
        """Runs the remaining generations; `on_generation(search, entry)` after each
        (to advance a progress bar, or to save `state()`). Returns `best`."""
        while not self.done:
            entry = self.step()
            if on_generation is not None:
                on_generation(self, entry)
        return self.best

    def step(self) -> dict:
        """Proposes, evaluates and selects one generation; returns its history entry."""
        if self.done:
            raise RuntimeError(f"search: all {self.settings['generations']} generations are done")
        # Start from the committed random state, so a generation interrupted
        # earlier (in this process or another) is redone with the same numbers.
        self._rng.bit_generator.state = copy.deepcopy(self._rng_state)
        generation = self.generation
        if generation == 0:
            population, filled = self._initial()
        else:
            population, filled = self._offspring()
        if not population:
            raise RuntimeError(
                f"search: generation {generation} found no new subnet in [{self.budget.low:g}, "
                f"{self.budget.high:g}] {self.budget.metric.name}; every reachable one may be evaluated already"
            )
        fitnesses = self._evaluate(population, generation)

        candidates = self.parents + population
        scores = [self.fitness_of(c) for c in self.parents] + fitnesses
        # Stable sort: equal fitness keeps incumbents first, then population order.
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        parents = [candidates[i] for i in order[: self.settings["parents"]]]
        best = parents[0]
        entry = {
            "generation": generation,
            "best_fitness": self.fitness_of(best),
            "best_config": best.to_dict(),
            "mean_fitness": math.fsum(fitnesses) / len(fitnesses),
            "evaluations": self.evaluations,
            "size": len(population),
            "filled": filled,
        }
        # Commit.
        self.population = population
        self.parents = parents
        self._seen.update(self._key(c) for c in population)
        self.history.append(entry)
        self.generation += 1
        self._rng_state = copy.deepcopy(self._rng.bit_generator.state)
        return entry

    def _admissible(self, config: SubnetConfig, keys: set) -> bool:
        key = self._key(config)
        return key not in keys and key not in self._seen and self.budget.contains(config)

    def _fill(self, chosen: list[SubnetConfig], keys: set, size: int) -> int:
        """Tops `chosen` up to `size` with fresh proposal draws; returns how many it added."""
        added = 0
        for _ in range(self.settings["max_tries"]):
            if len(chosen) >= size:
                break
            for config in self.proposal.sample(self._rng, size - len(chosen)):
                if not self.budget.contains(config):
                    raise RuntimeError(f"proposal: {self.proposal.name} drew {config} outside {self.budget}")
                if self._admissible(config, keys) and len(chosen) < size:
                    chosen.append(config)
                    keys.add(self._key(config))
                    added += 1
        return added

    def _initial(self) -> tuple[list[SubnetConfig], int]:
        size = self.settings["population"]
        chosen = self.seeds[:size]
        keys = {self._key(c) for c in chosen}
        return chosen, self._fill(chosen, keys, size)

    def _offspring(self) -> tuple[list[SubnetConfig], int]:
        rng, parents, settings = self._rng, self.parents, self.settings
        parent_genes = [self.genes.encode(p) for p in parents]
        children: list[SubnetConfig] = []
        keys: set = set()

        def breed(count: int, make) -> None:
            made = 0
            for _ in range(settings["max_tries"] * count):
                if made == count:
                    return
                child = make()
                if self._admissible(child, keys):
                    children.append(child)
                    keys.add(self._key(child))
                    made += 1

        def mutate() -> SubnetConfig:
            parent = parents[int(rng.integers(len(parents)))]
            return self.proposal.mutate(parent, settings["gene_prob"], rng)

        def crossover() -> SubnetConfig:
            if len(parents) > 1:
                i, j = rng.choice(len(parents), size=2, replace=False)
            else:
                i = j = 0
            take_first = rng.random(self.genes.num_genes) < 0.5
            return self.genes.decode(np.where(take_first, parent_genes[int(i)], parent_genes[int(j)]))

        breed(settings["mutations"], mutate)
        breed(settings["crossovers"], crossover)
        return children, self._fill(children, keys, settings["population"])

    def _evaluate(self, population: list[SubnetConfig], generation: int) -> list[float]:
        todo = [c for c in population if self._key(c) not in self._cache]
        if todo and self._batch_fitness is not None:
            values = list(self._batch_fitness(list(todo)))
            if len(values) != len(todo):
                raise ValueError(f"batch_fitness: returned {len(values)} values for {len(todo)} configs")
            values = [_check_fitness(v, c) for v, c in zip(values, todo)]
            for config, value in zip(todo, values):
                self._cache[self._key(config)] = Evaluation(config, value, generation)
        else:
            for config in todo:
                # Cached at once: an interruption keeps what was evaluated so far.
                value = _check_fitness(self._fitness(config), config)
                self._cache[self._key(config)] = Evaluation(config, value, generation)
        return [self.fitness_of(c) for c in population]

    # Persistence.

    def state(self) -> dict:
        """The search as JSON-serialisable data, as of the last completed generation
        plus every evaluation made since."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "settings": dict(self.settings),
            "proposal": self.proposal.to_dict(),
            "space": self.space.to_dict(),
            "budget": self.budget.to_dict(),
            "seeds": [c.to_dict() for c in self.seeds],
            "generation": self.generation,
            "population": [c.to_dict() for c in self.population],
            "parents": [c.to_dict() for c in self.parents],
            "rng": copy.deepcopy(self._rng_state),
            "cache": [
                {"config": e.config.to_dict(), "fitness": e.fitness, "generation": e.generation}
                for e in self._cache.values()
            ],
            "history": copy.deepcopy(self.history),
        }

    @classmethod
    def from_state(
        cls,
        state: dict,
        proposal: Proposal,
        fitness: Fitness | None = None,
        *,
        batch_fitness: BatchFitness | None = None,
    ) -> "EvolutionSearch":
        """Continues a search from `state()`.

        `proposal` must describe itself (`to_dict`) exactly as the one the state
        was searched with: same kind, space and budget, and for a prior the same
        fitted distributions. The fitness is the caller's to keep the same.
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT or state.get("version") != _VERSION:
            found = (state.get("format"), state.get("version")) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state: not a version {_VERSION} {_FORMAT} state (found {found})")
        missing = {
            "settings",
            "proposal",
            "space",
            "budget",
            "seeds",
            "generation",
            "population",
            "parents",
            "rng",
            "cache",
            "history",
        } - set(state)
        if missing:
            raise ValueError(f"state: missing field(s) {sorted(missing)}")
        if not isinstance(proposal, Proposal):
            raise ValueError(f"proposal: must implement the Proposal interface, got {type(proposal).__name__}")
        described = state["proposal"] if isinstance(state["proposal"], dict) else {}
        for field, theirs, mine in (
            ("proposal", described.get("name"), proposal.name),
            ("space", state["space"], proposal.space.to_dict()),
            ("budget", state["budget"], proposal.budget.to_dict()),
            ("proposal description", described, proposal.to_dict()),
        ):
            # Exact: a prior fitted to other records would draw other candidates.
            if _canonical(theirs) != _canonical(mine):
                raise ValueError(f"proposal: the state was searched with {field} {theirs}, not {mine}")
        try:
            seeds = [SubnetConfig.from_dict(c) for c in state["seeds"]]
            search = cls(proposal, fitness, batch_fitness=batch_fitness, seeds=seeds, **state["settings"])
            generation = checks.integer("generation", state["generation"], 0, error=ValueError)
            search.population = [SubnetConfig.from_dict(c) for c in state["population"]]
            search.parents = [SubnetConfig.from_dict(c) for c in state["parents"]]
            for item in state["cache"]:
                config = SubnetConfig.from_dict(item["config"])
                fitness_value = _check_fitness(item["fitness"], config)
                generation_found = checks.integer("generation", item["generation"], 0, error=ValueError)
                entry = Evaluation(config, fitness_value, generation_found)
                search._cache[search._key(config)] = entry
                if entry.generation < generation:
                    search._seen.add(search._key(config))
            search._rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"state: {e}") from None
        if len(state["history"]) != generation or any(
            search.fitness_of(c) is None for c in search.parents + search.population
        ):
            raise ValueError("state: history, parents and cache disagree with the generation")
        search.generation = generation
        search.history = copy.deepcopy(state["history"])
        search._rng_state = copy.deepcopy(search._rng.bit_generator.state)
        return search

    def __repr__(self) -> str:
        return (
            f"EvolutionSearch({self.proposal.name}, {self.budget}, generation {self.generation}/"
            f"{self.settings['generations']}, {self.evaluations} evaluations)"
        )
