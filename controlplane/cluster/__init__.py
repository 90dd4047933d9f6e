"""Several control-plane replicas on one store: one leader decides, the others serve."""
