"""Sampling plans of the H/S fit: which centres each training structure contributes.

Sampling is per structure and seeded: :class:`Sampling` gives structure ``k``
its own generator, the fit's generator advanced past the draws of structures
``0..k-1`` (known from a counting pass), so each structure's sample depends
only on ``(seed, pass, k)`` — the same numbers a serial loop over one shared
generator draws, whatever the order in which structures are visited.

Stratified sampling (``[fit] keep_bonds_within`` R > 0, :class:`Rates`): every off-site centre (bond) shorter
than R is kept and the longer ones of its family are sampled at the rate that keeps the expected total at the
cap; a kept short bond's rows are weighted by that rate, so the sums estimate the full data set's (each bond
counts 1 / its keep probability, scaled by the long bonds' rate) with far less sampling noise in the short
bonds, whose blocks are the largest (one draw per centre either way, so the draws do not move).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Suffix of the count of an off-site family's bonds shorter than ``keep_within`` (:func:`centre_counts`).
SHORT = "|short"


class Rates(dict):
    """Keep probability of a centre per family, ``{family.name: float}``, and the stratification.

    Attributes
    ----------
    keep_within : float
        Å.  Off-site centres (bonds) shorter than this are kept with probability 1 and weighted by
        their family's rate (:func:`sampled_centres`); 0 = plain sampling (a plain dict is the same).

    Examples
    --------
    >>> r = Rates({"offsite/14-14": 0.25}, keep_within=2.7)
    >>> r["offsite/14-14"], r.keep_within, dict(r)
    (0.25, 2.7, {'offsite/14-14': 0.25})
    """

    def __init__(self, rates=(), keep_within: float = 0.0):
        super().__init__(rates)
        keep_within = float(keep_within)
        if not 0.0 <= keep_within < float("inf"):
            raise ValueError(f"keep_within must be finite and >= 0 Å, got {keep_within}")
        self.keep_within = keep_within

    def __reduce__(self):  # pickled with its attribute (tasks on Dask workers)
        return (Rates, (dict(self), self.keep_within))


def keep_within_of(rates) -> float:
    """The stratification radius of ``rates`` (Å; 0 for a plain dict)."""
    return float(getattr(rates, "keep_within", 0.0))


@dataclass(frozen=True, eq=False)
class Sampling:
    """Which centres the structures of one pass contribute.

    Attributes
    ----------
    rates : Rates {family.name: float}
        Keep probability of a centre, ``min(1, max_blocks_per_type / count)``; with ``keep_within``
        R > 0, of an off-site family's bonds of at least R: ``min(1, max(cap - n_short, cap / 2) / n_long)``.
    state : dict
        State of the fit's PCG64 generator at the start of the pass.
    offsets : ndarray of int, shape (n_structures + 1,)
        Draws (64-bit steps) before each structure; ``offsets[-1]`` is the pass total.
    """

    rates: dict
    state: dict
    offsets: np.ndarray

    @classmethod
    def plan(cls, counts: list, cap: int, rng: np.random.Generator, keep_within: float = 0.0) -> "Sampling":
        """Rates from the per-structure centre counts and the generator position of each structure.

        Advances ``rng`` past the pass's draws (the next pass starts there).

        Parameters
        ----------
        counts : list of dict {family.name: int}
            Centres of each family in each structure (:func:`centre_counts`); keys ending in
            :data:`SHORT` count an off-site family's bonds shorter than ``keep_within``.
        cap : int
            ``max_blocks_per_type``.
        rng : numpy.random.Generator
            PCG64-backed (``numpy.random.default_rng``).
        keep_within : float
            Å; > 0: stratified (every bond shorter than this kept, :class:`Rates`); the counts must
            then carry the :data:`SHORT` counts of every off-site family.
        """
        if not isinstance(rng.bit_generator, np.random.PCG64):
            raise TypeError("per-structure sampling needs a PCG64 generator (numpy.random.default_rng)")
        totals = {}
        for c in counts:
            for name, n in c.items():
                totals[name] = totals.get(name, 0) + n
        rates = Rates({k: min(1.0, cap / v) if v else 1.0 for k, v in totals.items() if not k.endswith(SHORT)},
                      keep_within)
        if keep_within > 0:
            for name in rates:
                if name + SHORT in totals:  # an off-site family: its long bonds fill what the short ones leave
                    n_short = totals[name + SHORT]
                    n_long = totals[name] - n_short
                    rates[name] = min(1.0, max(cap - n_short, cap / 2) / n_long) if n_long > 0 else 1.0
        draws = [sum(n for name, n in c.items() if not name.endswith(SHORT) and rates[name] < 1.0) for c in counts]
        offsets = np.concatenate([[0], np.cumsum(draws)]).astype(np.int64)
        state = rng.bit_generator.state
        rng.bit_generator.advance(int(offsets[-1]))
        return cls(rates, state, offsets)

    def rng(self, k: int) -> np.random.Generator:
        """The generator of structure ``k`` of the pass."""
        bg = np.random.PCG64()
        bg.state = self.state
        bg.advance(int(self.offsets[k]))
        return np.random.Generator(bg)
