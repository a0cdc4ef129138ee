"""Models of the Hamiltonian H and overlap S: block families, configuration, fit and evaluation."""
