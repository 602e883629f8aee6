"""``headwater topics``: create, list, describe, delete, and bad input to them."""

from __future__ import annotations

from pathlib import Path

from headwater.store import TopicConfig

from .helpers import Headwater, assert_error, env_without_data, run_headwater


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
