"""Warm-up built from recorded traffic: generated ``model_warmup``, applied at load, probed."""
