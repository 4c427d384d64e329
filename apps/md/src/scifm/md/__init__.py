"""sci-fm MD app: rollouts through the ASE calculator (NVE/NVT/NPT), property analysis, electrolyte boxes,
cluster extraction for labelling, committee uncertainty, ensemble distillation and density alignment."""
