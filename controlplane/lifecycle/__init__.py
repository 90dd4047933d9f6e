"""Model lifecycle on one Triton instance: cold -> loading -> warming -> ready -> unloading."""
