"""``headwater topics``: create, list, describe, delete, and bad input to them."""

from __future__ import annotations

from pathlib import Path

from headwater.store import TopicConfig, setting_keys

from .helpers import Headwater, Log, assert_error, env_without_data, run_headwater


def test_create_list_describe_delete(hw: Headwater, data: Path) -> None:
    created = hw("topics", "create", "clicks", "--partitions", "3", "-c", "durability=always")
    assert created.returncode == 0, created.stderr
    assert "created topic 'clicks' with 3 partition(s)" in created.stderr
    assert hw("topics", "create", "views").returncode == 0

    listed = hw("topics", "list")
    assert listed.returncode == 0
    rows = [line for line in listed.stdout.splitlines() if "clicks" in line or "views" in line]
    assert len(rows) == 2
    assert "always" in rows[0] and " 3 " in rows[0]

    described = hw("topics", "describe", "clicks")
    assert described.returncode == 0, described.stderr
    out = described.stdout
    for word in ("durability", "always", "log_start_offset", "high_watermark", "segments"):
        assert word in out
    assert sum(1 for line in out.splitlines() if line.startswith("│ ") and "│ 0 " in line) >= 3

    # The config on disk is what was asked for.
    config = TopicConfig.from_json((data / "clicks" / "topic.json").read_bytes())
    assert (config.partitions, str(config.durability)) == (3, "always")

    deleted = hw("topics", "delete", "clicks")
    assert deleted.returncode == 0
    assert not (data / "clicks").exists()
    assert_error(hw("topics", "describe", "clicks"), "unknown topic 'clicks'")


def test_bad_input_creates_nothing(hw: Headwater, data: Path) -> None:
    assert_error(hw("topics", "create", "t", "-c", "retention.ms=soon"), "retention.ms", "'soon'")
    assert_error(hw("topics", "create", "t", "-c", "colour=blue"), "unknown config key 'colour'")
    assert_error(hw("topics", "create", "t", "-c", "novalue"), "KEY=VALUE", status=2)
    assert_error(hw("topics", "frobnicate"), "No such command", status=2)
    assert_error(hw("topics", "describe", "t"), "no data directory")
    assert not data.exists()
    # An existing topic is left as it was.
    assert hw("topics", "create", "t", "-p", "2").returncode == 0
    assert_error(hw("topics", "create", "t", "-p", "5"), "already exists")
    assert TopicConfig.from_json((data / "t" / "topic.json").read_bytes()).partitions == 2


def test_data_dir_from_environment_group_and_command(tmp_path: Path) -> None:
    env = {**env_without_data(), "HEADWATER_DATA": str(tmp_path / "from-env")}
    assert run_headwater(None, "topics", "create", "a", env=env).returncode == 0
    assert (tmp_path / "from-env" / "a").is_dir()
    # --data on the group wins over the environment, and a command's own over the group's.
    args = ["produce", "a", "--data", str(tmp_path / "from-env")]
    produced = run_headwater(tmp_path / "elsewhere", *args, input='{"x": 1}\n', env=env)
    assert produced.stdout == "0:0\n"
    assert_error(
        run_headwater(tmp_path / "elsewhere", "consume", "a", env=env), "no data directory"
    )


def test_internal_topics_are_refused_with_the_reason(hw: Headwater, data: Path) -> None:
    reserved = "names starting with '__' are reserved for headwater's internal topics"
    for name in ("__consumer_offsets", "__mine"):
        assert_error(hw("topics", "create", name), f"cannot create topic '{name}'", reserved)
    # A group's commit makes the offsets topic; then nobody but headwater may touch it.
    assert hw("topics", "create", "t").returncode == 0
    assert hw("produce", "t", input='{"n": 1}\n').returncode == 0
    assert hw("consume", "t", "--group", "g").returncode == 0
    offsets = data / "__consumer_offsets" / "topic.json"
    before = offsets.read_bytes()
    produced = hw("produce", "__consumer_offsets", input='{"offset": 0}\n')
    line = assert_error(produced, "cannot append to topic '__consumer_offsets'", reserved)
    assert "records" not in line  # refused before any input was read
    assert_error(hw("topics", "delete", "__consumer_offsets"), "cannot delete", reserved)
    assert_error(
        hw("topics", "alter", "__consumer_offsets", "-c", "cleanup.policy=delete"),
        "cannot change the configuration of topic '__consumer_offsets'",
        reserved,
    )
    assert offsets.read_bytes() == before
    described = hw("groups", "describe", "g")
    assert described.returncode == 0 and described.stderr == ""  # no undecodable records
    consumed = hw("consume", "__consumer_offsets", "--show-meta")  # reading stays allowed
    assert consumed.returncode == 0 and '\\"g\\"' in consumed.stdout


def test_names_colliding_on_dot_and_underscore_are_refused(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "page.views").returncode == 0
    assert_error(
        hw("topics", "create", "page_views"),
        "topic 'page_views' collides with existing topic 'page.views'",
    )
    assert not (data / "page_views").exists()


def test_alter_changes_settings_and_keeps_records(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "t", "-p", "2", "-c", "retention.ms=60000").returncode == 0
    assert hw("produce", "t", input='{"n": 1}\n').returncode == 0
    altered = hw("topics", "alter", "t", "-c", "max.message.bytes=4096", "-c", "retention.ms=")
    assert altered.returncode == 0, altered.stderr
    assert "max_message_bytes 1048588 -> 4096" in altered.stderr
    assert "retention_ms 60000 -> 604800000" in altered.stderr  # KEY= sets the default
    config = TopicConfig.from_json((data / "t" / "topic.json").read_bytes())
    assert (config.partitions, config.max_message_bytes, config.retention_ms) == (
        2,
        4096,
        604800000,
    )
    assert hw("consume", "t").stdout == '{"n":1}\n'
    assert_error(hw("topics", "alter", "t", "-c", "partitions=3"), "not a topic setting")
    assert_error(hw("topics", "alter", "t"), "at least one --config", status=2)
    assert_error(hw("topics", "alter", "nope", "-c", "retention.ms=1"), "unknown topic 'nope'")
    assert TopicConfig.from_json((data / "t" / "topic.json").read_bytes()) == config


def test_partitions_is_not_offered_as_a_config_key(hw: Headwater, data: Path) -> None:
    line = assert_error(hw("topics", "create", "t", "-c", "colour=blue"), "unknown config key")
    known = line.partition("known keys: ")[2].split(", ")
    assert known == setting_keys()
    assert "partitions" not in known and "retention.ms" in known
    assert_error(hw("topics", "create", "t", "-c", "partitions=3"), "--partitions", status=2)
    for command in ("create", "alter"):
        helped = hw("topics", command, "--help")
        keys = " ".join(helped.stdout.split()).partition("Keys: ")[2]
        assert "retention.ms" in keys and "partitions" not in keys
    described = hw("topics", "create", "u", "-p", "3")
    assert described.returncode == 0
    settings = hw("topics", "describe", "u").stdout
    assert "│ partitions " in settings  # shown as a property of the topic


def test_create_alter_describe_delete_on_every_log(log: Log, name: str) -> None:
    created = log("topics", "create", name, "-p", "2", "-c", "retention.ms=60000")
    assert created.returncode == 0, created.stderr
    altered = log("topics", "alter", name, "-c", "retention.ms=120000")
    assert altered.returncode == 0, altered.stderr
    described = log("topics", "describe", name)
    assert described.returncode == 0, described.stderr
    (retention,) = [
        line.split("│")[2].strip()
        for line in described.stdout.splitlines()
        if line.split("│")[1:2] and line.split("│")[1].strip() in ("retention_ms", "retention.ms")
    ]
    assert retention == "120000"
    assert name in log("topics", "list").stdout
    assert log("topics", "delete", name).returncode == 0
    assert name not in log("topics", "list").stdout


def test_what_is_not_a_topic_stays_out_of_the_way(hw: Headwater, data: Path) -> None:
    # A data directory inside this one (as `make run` once left in ./headwater-data), and a
    # folder of someone's notes: neither is a topic, and neither stops topics being made.
    inner = data / "inner"
    assert run_headwater(inner, "topics", "create", "x").returncode == 0
    (data / "notes").mkdir()
    (data / "notes" / "todo.txt").write_text("keep me")

    listed = hw("topics", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""
    assert listed.stderr.splitlines() == [
        f"{inner} is a data directory of its own, not a topic; its topics: "
        f"headwater --data {inner} topics list",
        f"no topics in {data}",
    ]
    assert_error(
        hw("topics", "create", "inner"),
        f"cannot create topic 'inner': {inner} already exists and is a data directory of its "
        "own, not a topic; move it away or pick another name",
    )
    assert_error(hw("topics", "create", "notes"), "is not a topic (it has no topic.json)")
    assert (data / "notes" / "todo.txt").read_text() == "keep me"

    assert hw("topics", "create", "t").returncode == 0
    assert hw("produce", "t", input='{"n":1}\n').returncode == 0
    assert hw("consume", "t").stdout == '{"n":1}\n'
    listed = hw("topics", "list")
    assert [line.split()[1] for line in listed.stdout.splitlines() if "│ t " in line] == ["t"]
    assert "x" in run_headwater(inner, "topics", "list").stdout  # the inner one is untouched
