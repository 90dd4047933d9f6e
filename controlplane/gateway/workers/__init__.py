"""Gateway worker processes: both front doors served by several processes on shared ports.

``supervisor.py`` (in the control process) starts and replaces them and serves their pipe;
``process.py`` is a worker's main; ``protocol.py`` what crosses the pipe; ``replicas.py`` and
``link.py`` the serving core's ports in a worker; ``forward.py`` the server-wide calls a
worker hands to the control process.
"""
