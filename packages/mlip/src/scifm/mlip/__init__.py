"""Machine-learning interatomic potentials: BAMBOO, PaiNN, SchNet, NequIP; PubChemQCR."""
