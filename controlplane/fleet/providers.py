"""Every provider the settings use, by kind (the registry ``membership.py`` starts from).

Apart from ``provider.py`` so that the providers' shared parts (the protocol, ``attach``)
import nothing of the kinds built on them: ``kubernetes.py`` uses them, and is imported here
only when ``[kubernetes]`` is enabled (its client is loaded where it is used).
"""

from __future__ import annotations

from controlplane.config import Settings
from controlplane.fleet.provider import KINDS, ConfiguredProvider, Provider


def providers(settings: Settings) -> dict[str, Provider]:
    """The configured kinds (``embedded``, ``static``), and ``kubernetes`` when enabled."""
    found: dict[str, Provider] = {kind: ConfiguredProvider(settings, kind) for kind in KINDS}
    if settings.kubernetes.enabled:
        from controlplane.fleet.kubernetes import KubernetesProvider

        found["kubernetes"] = KubernetesProvider(settings)
    return found
