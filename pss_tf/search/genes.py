"""The discrete values of a search space, as integer genes.

A config's genome is one resolution index plus one width *code* per stage: the
multiplier's position among the space's `width_values` (`decimals`-place values or bins). Mutation,
crossover and the prior all work on these integers, so every config they make
lies on the space's grid and compares equal to the configs the space itself draws.

Many width codes give the same channel count (`make_divisible` rounds to
multiples of 8), so they are the same network. A stage's distinct channel counts
are its *levels*; each level has a canonical code, the thinnest multiplier that
gives it. `network_key` names the network a config builds, which the search uses
to avoid evaluating one network twice under two spellings.
"""

from __future__ import annotations

import numpy as np

from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace, SubnetConfig, make_divisible_array

# A multiplier within this of a grid value is on the grid (binary floats of
# decimal literals differ from code / 10**decimals in the last bit at most).
_ON_GRID_TOLERANCE = 1e-9


def network_key(config: SubnetConfig) -> tuple:
    """What a config builds: model, resolution and active channels per stage.

    Two configs with equal keys are the same subnet of the supernet (only the
    first k channels of every weight are used), so they have the same accuracy
    and the same cost.
    """
    return (config.model, config.resolution, config.channels)


class GeneSpace:
    """Integer encoding of a `SearchSpace`.

    Attributes:
        space: the space encoded.
        resolutions: (R,) the space's resolutions; gene 0 indexes them.
        width_values: (V,) the multipliers on the grid; genes 1.. index them.
        levels: per gene, its distinct channel counts in increasing order (tuples: the
            counts of the groups it scales, one but in ResNet-50's stage-wise space).
        level_of_code: (stages, V) the level index of every width code.
        canonical_codes: per stage, the smallest code of every level.
        sizes: number of values of every gene, resolution first (R, V, V, ...).
    """

    def __init__(self, space: SearchSpace):
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space: must be a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.resolutions = np.asarray(space.resolutions, dtype=np.int64)
        self._scale = space.width_scale
        self.width_values = space.width_values
        if not len(self.width_values):
            raise ValueError(
                f"space: no multiple of 1/{self._scale} lies in [{space.min_width}, {space.max_width}]"
            )
        self._code_offset = int(round(self.width_values[0] * self._scale))
        arch = architectures.get_architecture(space.model)
        base = np.asarray(arch.base_channels, dtype=np.float64)
        channels = make_divisible_array(base[:, None] * self.width_values[None, :])  # (groups, codes)
        self.num_stages = space.num_stages
        self.levels = []
        self.canonical_codes = []
        self.level_of_code = np.zeros((self.num_stages, len(self.width_values)), dtype=np.int64)
        for s in range(self.num_stages):
            # A gene's level is the channels of every group it scales (one, or a
            # ResNet stage's inner and output groups). Channels never decrease with
            # the multiplier, so the first index of each unique row is its thinnest code.
            rows = channels[list(arch.groups_of(s))].T
            levels, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            self.levels.append([tuple(int(c) for c in row) for row in levels])
            self.canonical_codes.append(first.astype(np.int64))
            self.level_of_code[s] = inverse.reshape(-1)
        self.sizes = (len(self.resolutions),) + (len(self.width_values),) * self.num_stages

    @property
    def num_genes(self) -> int:
        return 1 + self.num_stages

    def level_sizes(self) -> tuple[int, ...]:
        """Number of levels of every gene, resolution first."""
        return (len(self.resolutions),) + tuple(len(levels) for levels in self.levels)

    # Configs <-> genes.

    def encode(self, config: SubnetConfig) -> np.ndarray:
        """The genes (1 + stages,) of `config`, which must lie on the space's grid."""
        problems = self.space.violations(config) if isinstance(config, SubnetConfig) else ["not a SubnetConfig"]
        if problems:
            raise ValueError(f"config: {config} is outside the search space: {'; '.join(problems)}")
        genes = np.empty(self.num_genes, dtype=np.int64)
        genes[0] = int(np.searchsorted(self.resolutions, config.resolution))
        widths = np.asarray(config.widths, dtype=np.float64)
        codes = np.rint(widths * self._scale).astype(np.int64) - self._code_offset
        codes = np.clip(codes, 0, len(self.width_values) - 1)
        off = np.abs(self.width_values[codes] - widths) > _ON_GRID_TOLERANCE
        if off.any():
            stage = int(np.flatnonzero(off)[0])
            raise ValueError(
                f"config: widths[{stage}] = {widths[stage]!r} of {config} is not a multiple of "
                + (f"1/{self.space.width_bins} (width_bins)" if self.space.width_bins
                   else f"10**-{self.space.decimals} (the space's decimals)")
            )
        genes[1:] = codes
        return genes

    def decode(self, genes) -> SubnetConfig:
        """The config of one genome."""
        genes = np.asarray(genes)
        return SubnetConfig(
            self.space.model,
            int(self.resolutions[genes[0]]),
            tuple(float(w) for w in self.width_values[genes[1:]]),
        )

    def arrays(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resolutions (n,) and widths (n, stages) of genomes (n, 1 + stages), for `Metric.values`."""
        genes = np.asarray(genes, dtype=np.int64)
        return self.resolutions[genes[:, 0]], self.width_values[genes[:, 1:]]

    def levels_of(self, genes: np.ndarray) -> np.ndarray:
        """Level indices (n, 1 + stages) of genomes (n, 1 + stages); resolution levels are its index."""
        genes = np.asarray(genes, dtype=np.int64)
        out = np.empty_like(genes)
        out[:, 0] = genes[:, 0]
        for s in range(self.num_stages):
            out[:, 1 + s] = self.level_of_code[s, genes[:, 1 + s]]
        return out

    def genes_of_levels(self, levels: np.ndarray) -> np.ndarray:
        """Canonical genomes (n, 1 + stages) of level indices (n, 1 + stages)."""
        levels = np.asarray(levels, dtype=np.int64)
        out = np.empty_like(levels)
        out[:, 0] = levels[:, 0]
        for s in range(self.num_stages):
            out[:, 1 + s] = self.canonical_codes[s][levels[:, 1 + s]]
        return out

    def level_of(self, config: SubnetConfig) -> np.ndarray | None:
        """Level indices (1 + stages,) of any config of this model, or None when its
        resolution or channel counts are not ones the space can make."""
        if config.model != self.space.model:
            return None
        out = np.empty(self.num_genes, dtype=np.int64)
        position = int(np.searchsorted(self.resolutions, config.resolution))
        if position >= len(self.resolutions) or self.resolutions[position] != config.resolution:
            return None
        out[0] = position
        groups = architectures.get_architecture(config.model).groups_of
        for s, levels in enumerate(self.levels):
            channels = tuple(config.channels[g] for g in groups(s))
            if channels not in levels:
                return None
            out[1 + s] = levels.index(channels)
        return out

    def __repr__(self) -> str:
        return f"GeneSpace({self.space.model}, levels={self.level_sizes()})"
