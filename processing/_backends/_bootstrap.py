"""Naming a Kafka-protocol cluster: the ``bootstrap`` address an app is given, checked.

Kept apart from ``kafka.py`` so that checking an address (when an App is built, or
``headwater run`` starts) does not load librdkafka: an app on a data directory never
does.
"""

from __future__ import annotations

import re

from .._errors import ClusterError

#: The environment variable that names a cluster for apps (as it does for the CLI).
BOOTSTRAP_ENV_VAR = "HEADWATER_BOOTSTRAP"

_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def check_bootstrap(bootstrap: object) -> str:
    """Return ``bootstrap`` (``HOST:PORT[,HOST:PORT...]``) if it is well formed.

    :raises ClusterError: naming what is wrong with it.
    """
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise ClusterError(f"bootstrap must be HOST:PORT, got {bootstrap!r}")
    for address in bootstrap.split(","):
        found = _ADDRESS.fullmatch(address.strip())
        if found is None or not 0 < int(found[2]) < 65536:
            raise ClusterError(
                f"invalid bootstrap address {address.strip()!r}: use HOST:PORT (e.g. "
                "127.0.0.1:9092), several separated by commas"
            )
    return bootstrap
