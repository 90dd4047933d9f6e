"""The live side of preloading: the policy on wall-clock time, real traffic, APScheduler."""
