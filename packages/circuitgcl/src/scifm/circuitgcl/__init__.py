"""CircuitGCL: graph contrastive learning for circuit parasitics."""
