"""MD rollouts and property analysis through the ASE calculator."""
