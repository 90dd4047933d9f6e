"""A fleet of Triton instances under one control plane: providers, one runtime per
instance, replica placement, routing, failover and draining."""
