"""ACE site-energy potentials: model, configuration, labelled data, fit and core repulsion."""
