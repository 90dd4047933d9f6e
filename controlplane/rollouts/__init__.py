"""Version rollouts: a new model version verified, then shifted into traffic in steps."""
