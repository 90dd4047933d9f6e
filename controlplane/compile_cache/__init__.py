"""torch.compile artifacts kept between loads: the store (``store.py``) and what a cold start
costs with and without them (``cold_start.py``)."""
