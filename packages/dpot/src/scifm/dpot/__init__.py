"""DPOT: auto-regressive denoising operator transformer for PDEs."""
