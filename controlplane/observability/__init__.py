"""Metrics, the operator overview and logging."""
