"""A real Apache Kafka broker for the tests: fetched with Maven, run as a single KRaft node.

:func:`kafka_jars` collects the broker's jars (``pom.xml`` beside this file names the one
artifact) into a cache folder outside the checkout (``$HEADWATER_KAFKA_CACHE``, else
``~/.cache/headwater/apache-kafka-<version>``, with Maven's local repository inside it),
so only the first run on a machine downloads them. :class:`KafkaProcess` formats a fresh
data directory and starts ``kafka.Kafka`` on 127.0.0.1 (any free ports), ready once it
answers a Kafka ApiVersions request. Kafka cannot run where Java is missing, or where
the jars are not cached and Maven Central cannot be reached: :class:`KafkaUnavailableError`
says which, for the tests to be skipped with that reason.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import tenacity

KAFKA_VERSION = "4.1.0"
#: Named in full: by its prefix alone (``dependency:``) Maven looks the plugin up first,
#: and without a network says only that no such plugin exists.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:2.8"
POM = Path(__file__).with_name("pom.xml")
CACHE_ENV_VAR = "HEADWATER_KAFKA_CACHE"
# What mvn says when it cannot download (as opposed to a mistake in the pom).
_NETWORK_SIGNS = (
    "Could not transfer",
    "Unknown host",
    "UnknownHostException",
    "Connection refused",
    "Network is unreachable",
    "Connect timed out",
    "connect timed out",
    "Could not resolve",
    "No route to host",
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class KafkaUnavailableError(Exception):
    """Kafka cannot run here: the message says why (Java missing, Maven Central unreachable)."""


def cache_dir() -> Path:
    """Return the folder that holds the broker's jars and Maven's repository."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "headwater" / f"apache-kafka-{KAFKA_VERSION}"


def kafka_jars(timeout_s: float = 600.0) -> Path:
    """Return the folder of the broker's jars, fetching them with Maven the first time.

    :raises KafkaUnavailableError: if Java or Maven is missing, or Maven Central cannot be
        reached.
    :raises RuntimeError: if Maven fails otherwise (that is a bug to fix, not a skip).
    """
    if shutil.which("java") is None:
        raise KafkaUnavailableError("Java is missing (no `java` on PATH): Apache Kafka cannot run")
    root = cache_dir()
    lib = root / "lib"
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailableError("Maven is missing (no `mvn` on PATH) to fetch Apache Kafka")
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f"lib.{os.getpid()}.tmp"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-B", "-q", "-f", str(POM), f"-Dmaven.repo.local={root / 'm2'}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        shutil.rmtree(partial, ignore_errors=True)
        found = [line for line in output.splitlines() if any(s in line for s in _NETWORK_SIGNS)]
        if found:
            line = _ANSI.sub("", found[0]).removesuffix(" -> [Help 1]").strip()
            cause = ": ".join(line.rsplit(": ", 2)[-2:])  # what the connection met
            raise KafkaUnavailableError(
                f"Maven Central cannot be reached to fetch Apache Kafka ({cause})"
            )
        raise RuntimeError(f"mvn failed ({result.returncode}):\n{output}")
    (partial / ".complete").touch()
    try:
        partial.rename(lib)
    except OSError:  # another process got there first: theirs is as good
        shutil.rmtree(partial, ignore_errors=True)
    return lib


class _ExitedError(RuntimeError):
    """Kafka exited while starting (its log, with a no-op logger, rarely says why)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (a UUID, base64 without padding).

    Never one that starts with ``-`` (one in 64 would): ``kafka-storage format -t -Xy...``
    takes it for an option and fails with "no --cluster-id", as Kafka's own generator
    avoids too.
    """
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


#: The broker's settings. The retention check waits a day (it would run 30 s after the
#: start, then every five minutes): the tests write records stamped far in the past (event
#: times from 0, fixed dates), and the check deletes such a topic's records, the active
#: segment's too, whichever test is reading them then. Topics keep Kafka's default
#: configs, which some tests describe.
_PROPERTIES = """\
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.initial.task.delay.ms=86400000
log.retention.check.interval.ms=86400000
auto.create.topics.enable=false
"""


class ApacheKafka:
    """An Apache Kafka broker the tests use: ``bootstrap`` is its ``HOST:PORT``;
    ``process`` the :class:`KafkaProcess` if the tests started it."""

    def __init__(self, bootstrap: str, process: KafkaProcess | None = None) -> None:
        self.bootstrap = bootstrap
        self.process = process


class KafkaProcess:
    """A single-node KRaft Apache Kafka broker in a subprocess, in ``folder``.

    :param heap: the JVM's heap limit.
    :param quick_start: trade the JIT's peak speed for a faster, lighter start (tests).
    """

    def __init__(
        self,
        folder: Path,
        *,
        heap: str = "768m",
        quick_start: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.heap = heap
        self.quick_start = quick_start
        #: Broker settings added to the test defaults (``server.properties`` lines).
        self.settings = dict(settings or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the broker's output goes."""
        return self.folder / "kafka.log"

    def log(self) -> str:
        """What the broker has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _java(self, lib: Path, *args: str) -> list[str]:
        options = [f"-Xmx{self.heap}", "-XX:+UseSerialGC"]
        if self.quick_start:
            options += ["-XX:TieredStopAtLevel=1", "-Xss512k"]
        return ["java", *options, "-cp", f"{lib}/*", *args]

    def start(self, timeout_s: float = 90.0, attempts: int = 3) -> KafkaProcess:
        """Format a fresh data directory, start the broker and wait until it answers.

        The ports are found free and then handed to Kafka, so another process may take one
        in between, and Kafka exits without saying why: a broker that exits while starting
        is started again on new ports, up to ``attempts`` times.

        :raises KafkaUnavailableError: as :func:`kafka_jars`.
        :raises RuntimeError: if the broker exits or does not answer in time.
        """
        lib = kafka_jars()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_ExitedError),
            stop=tenacity.stop_after_attempt(attempts),
            reraise=True,
        )
        return retrying(self._start, lib, timeout_s)

    def _start(self, lib: Path, timeout_s: float) -> KafkaProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        shutil.rmtree(data, ignore_errors=True)  # a failed attempt's formatted directory
        self.log_path.unlink(missing_ok=True)
        self.port = _free_port()
        properties = self.folder / "server.properties"
        extra = "".join(f"{name}={value}\n" for name, value in self.settings.items())
        properties.write_text(
            _PROPERTIES.format(port=self.port, controller_port=_free_port(), data=data) + extra
        )
        formatted = subprocess.run(
            self._java(lib, "kafka.tools.StorageTool", "format", "--standalone",
                       "-t", _cluster_id(), "-c", str(properties)),
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if formatted.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format failed:\n{formatted.stdout}{formatted.stderr}"
            )
        return self._run(lib, timeout_s)

    def restart(self, timeout_s: float = 90.0) -> KafkaProcess:
        """Start the broker again on its data and ports (after :meth:`kill`, a crash:
        Kafka recovers its logs and its coordinators' state) and wait until it answers.

        :raises RuntimeError: if the broker exits or does not answer in time.
        """
        return self._run(kafka_jars(), timeout_s)

    def _run(self, lib: Path, timeout_s: float) -> KafkaProcess:
        properties = self.folder / "server.properties"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._java(lib, "kafka.Kafka", str(properties)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise _ExitedError(
                    f"Kafka exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            if self._answers():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Kafka did not answer within {timeout_s} s:\n{self.log()[-4000:]}")

    def _answers(self) -> bool:
        """Whether the broker answers ApiVersions (a connect alone succeeds earlier)."""
        from headwater.broker import ApiKey, RequestHeader, decode_response, encode_request

        header = RequestHeader(ApiKey.API_VERSIONS, 3, 1, "headwater-tests")
        body = {"client_software_name": "headwater-tests", "client_software_version": "1"}
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"".join(encode_request(header, body)))
                size = int.from_bytes(_read_exactly(sock, 4), "big")
                response = decode_response(header, _read_exactly(sock, size))
        except OSError:
            return False
        return bool(response.get("error_code") == 0)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the broker and wait for it (SIGKILL after ``timeout_s``); return its status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the broker and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("Kafka closed the connection")
        data += chunk
    return bytes(data)
