"""Where the owner of a data directory serves it: the address file beside the lock.

Theory of operation
-------------------
One process owns a data directory at a time, by an exclusive ``flock`` on ``.lock`` (see
``_store.py``). An owner that runs for long (an app, ``headwater broker``) also serves the
directory over the Kafka protocol (``headwater.broker.serve_data_directory``), so that
other processes use the log while it runs instead of waiting for it. It says where in
``.address``, beside the lock::

    {"pid": 4242, "lock": [2049, 131077], "bootstrap": "127.0.0.1:40123"}

its process id, the device and inode of the lock file it holds, and ``HOST:PORT`` for a
Kafka client. The file is written under a temporary name and renamed once the server
listens, so a reader sees a whole record or none; it is removed before the server stops,
and so before the owner lets go of the lock. Only the lock's holder writes it, so one
temporary name does. Nothing is fsynced: a crash makes the file stale anyway.

A stale file is what an owner killed with ``kill -9`` leaves behind. :func:`served_address`
trusts the file only when it is about the lock of now: the lock file is the one recorded
(a copied directory carries the file, not the lock file's identity) and the process that
holds its ``flock`` -- the kernel's lock table, as :func:`~headwater.store.read_holder`
finds it -- is the one recorded. Otherwise the file is ignored; a reader never removes it
(a reading process writes nothing in the directory), the next owner replaces it. A pid
can be reused, so a caller about to connect also checks that the address answers.

Like the holder record, the file is advice: writing it is best effort, and a directory
whose owner could not write it is simply not found served.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._holder import LOCK_FILE, read_holder

ADDRESS_FILE = ".address"
_TMP = ADDRESS_FILE + ".tmp"


@dataclass(frozen=True, slots=True)
class ServedAddress:
    """Where the owner of a data directory serves it.

    :param pid: the owner's process id.
    :param bootstrap: ``HOST:PORT`` to give a Kafka client.
    """

    pid: int
    bootstrap: str


def write_served_address(directory: str | os.PathLike[str], bootstrap: str) -> None:
    """Announce that this process serves ``directory`` at ``bootstrap`` (``HOST:PORT``).

    Call it only while this process holds the directory's lock.

    :raises OSError: if the file cannot be written (nothing is left behind then).
    """
    directory = Path(directory)
    tmp = directory / _TMP
    lock = os.stat(directory / LOCK_FILE)
    record = {"pid": os.getpid(), "lock": [lock.st_dev, lock.st_ino], "bootstrap": bootstrap}
    try:
        tmp.write_bytes(orjson.dumps(record))
        tmp.replace(directory / ADDRESS_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def clear_served_address(directory: str | os.PathLike[str]) -> None:
    """Withdraw this process's announcement (before letting go of the lock); best effort."""
    with contextlib.suppress(OSError):
        (Path(directory) / ADDRESS_FILE).unlink()


def served_address(directory: str | os.PathLike[str]) -> ServedAddress | None:
    """Return where the holder of ``directory``'s lock serves it, if it does.

    ``None`` when there is no address file, or it is stale: about another lock file, or
    another process than the one that holds the lock now (see the module docstring).
    Reads only; safe from any process. Does not connect.
    """
    directory = Path(directory)
    try:
        data = orjson.loads((directory / ADDRESS_FILE).read_bytes())
        lock = os.stat(directory / LOCK_FILE)
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    pid, identity, bootstrap = data.get("pid"), data.get("lock"), data.get("bootstrap")
    if not isinstance(pid, int) or not isinstance(bootstrap, str) or not _is_address(bootstrap):
        return None
    if identity != [lock.st_dev, lock.st_ino]:
        return None
    holder = read_holder(directory)
    if holder is None or holder.pid != pid:
        return None
    return ServedAddress(pid, bootstrap)


def _is_address(text: str) -> bool:
    """Whether ``text`` reads as ``HOST:PORT`` (``[v6]:PORT``) with a port from 1 to 65535."""
    host, colon, port = text.rpartition(":")
    return bool(colon and host.strip("[]") and port.isdigit() and 1 <= int(port) <= 65535)
