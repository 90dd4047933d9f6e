"""Model lifecycle on one Triton instance: cold -> loading -> warming -> ready -> unloading,
reached through a narrow Triton port (``port.py``), every transition checked against the table
in ``states.py``."""
