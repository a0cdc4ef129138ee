"""Model-agnostic tight-binding algebra: Bloch sums, generalized eigen-solves, bands, DOS/PDOS.

Submodules are imported explicitly (``from acehamil.tb.bloch import bloch_sum``,
``from acehamil.tb.eigen import solve``); this package import stays light.
"""
