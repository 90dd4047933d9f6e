"""The KServe-v2 gRPC front door: lazy loads, traffic recording, raw pass-through to Triton."""
