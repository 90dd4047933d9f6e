"""warmctl: a warm-up control plane for NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
