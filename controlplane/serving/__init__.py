"""The serving core: one inference path behind ports, whatever the front door.

The gRPC and HTTP front doors (``controlplane/gateway``) only convert: bytes to request
facts and back, our statuses to theirs. Everything a request goes through -- admission to a
replica (or its model's one load within the deadline), the router, the send on the replica's
upstream, one retry where the replica was unreachable or being removed, and the record of
its outcome -- is here, against small ports (``ports.py``) that the fleet and the traffic
recorder implement in the control process and a gateway worker implements over its pipe.
"""
