"""Models that evaluate H/S blocks (:mod:`.hamiltonian`) and site energies (:mod:`.potential`)."""
