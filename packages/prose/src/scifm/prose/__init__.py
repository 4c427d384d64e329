"""Prose: transferable normalizing-flow Boltzmann sampler for peptides."""
