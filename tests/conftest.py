"""Settings and fixtures of the whole suite.

The hypothesis profiles are registered once, here. Property tests check behaviour, never
speed: an example that takes long because the machine is busy (CI has two shared cores)
must not fail the test, so no profile has a deadline, and the health check that times
data generation is off. ``ci`` also replays the same examples on every run (a failure
there is reproducible, not a flake) and prints the blob that reproduces a failing
example. Choose with ``HYPOTHESIS_PROFILE``; by default ``ci`` when the ``CI`` variable
is set, ``default`` otherwise.

``apache_kafka`` is a real Apache Kafka broker for the tests that run against one:
started once per session, on first use (``tests/apache_kafka/running.py`` fetches it
with Maven into a cache outside the checkout), or the one named in
``$HEADWATER_TEST_KAFKA``. Where Java is missing or Maven Central cannot be reached
(and the jars are not cached), those tests are skipped, and the summary says why. A
session is one process: under pytest-xdist each worker process that runs such a test
starts a broker of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# pytest puts tests/ on sys.path (it holds no __init__.py), so its packages import by name.
from apache_kafka.running import ApacheKafka, KafkaProcess, KafkaUnavailableError
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", settings.get_profile("default"), derandomize=True, database=None, print_blob=True
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)


@pytest.fixture
def env_without_cramjam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose Python processes cannot import cramjam.

    As for a user who installed headwater without the ``compression`` extra, without
    uninstalling anything: a ``sitecustomize`` on ``PYTHONPATH`` sets
    ``sys.modules["cramjam"] = None`` at start-up, which makes ``import cramjam`` fail.
    """
    folder = tmp_path_factory.mktemp("without-cramjam")
    (folder / "sitecustomize.py").write_text(
        "import sys\n\nsys.modules['cramjam'] = None  # `import cramjam` raises ImportError\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["PYTHONPATH"] = str(folder)
    return env


#: The address of a running Apache Kafka broker to use instead of starting one.
KAFKA_ENV_VAR = "HEADWATER_TEST_KAFKA"


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """A single-node Apache Kafka broker for the session; skips where it cannot run."""
    named = os.environ.get(KAFKA_ENV_VAR)
    if named:
        yield ApacheKafka(named)
        return
    process = KafkaProcess(tmp_path_factory.mktemp("apache-kafka"))
    try:
        process.start()
    except KafkaUnavailableError as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")
    try:
        _load_group_coordinator(process.bootstrap)
        yield ApacheKafka(process.bootstrap, process)
    finally:
        process.kill()  # its data is the session's to throw away: no clean shutdown (5 s)


def _load_group_coordinator(bootstrap: str) -> None:
    """Return once a fresh Kafka serves consumer groups: the first group request has it
    create and load ``__consumer_offsets``, which a cluster in service has long done.

    Until the coordinator has loaded, the broker answers with errors a client retries
    (not the coordinator, coordinator loading or not available); librdkafka passes some
    of them through ``committed``, so they are retried here until a minute has passed.
    """
    import confluent_kafka as ck
    import tenacity

    not_ready = {
        ck.KafkaError.NOT_COORDINATOR,
        ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        ck.KafkaError.COORDINATOR_NOT_AVAILABLE,
        ck.KafkaError._TIMED_OUT,
    }

    def coordinator_not_ready(exc: BaseException) -> bool:
        return isinstance(exc, ck.KafkaException) and exc.args[0].code() in not_ready

    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "headwater-tests"})
    try:
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(coordinator_not_ready),
            stop=tenacity.stop_after_delay(60),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1),
            reraise=True,
        ):
            with attempt:
                consumer.committed([ck.TopicPartition("headwater-tests", 0)], timeout=60)
    finally:
        consumer.close()
