"""Recording what traffic really sends: requests, usage per minute, shapes, payload samples."""
