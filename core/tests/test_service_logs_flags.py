"""``service logs`` flags (issue 17 item 11): ``--since`` values, docker's line layout under
``--timestamps``, ``--details``, ``--no-trunc``, ``--no-resolve``, ``--no-task-ids``, ``--raw``,
and ``-n``. The real-daemon check is in tests/test_cli_parity.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from click.testing import CliRunner
from shoal.cli.logformat import LogFormat, format_line
from shoal.cli.main import cli
from shoal.logtime import SinceError, parse_since, rfc3339_nano, since_param

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10m", NOW - 600),
        ("1h30m", NOW - 5400),
        ("1.5h", NOW - 5400),
        ("300ms", NOW - 0.3),
        ("1136073600", 1136073600.0),
        ("1136073600.5", 1136073600.5),
        ("2013-01-02T13:23:37Z", 1357133017.0),
        ("2013-01-02T13:23:37.123456789Z", 1357133017.123456),
        ("2013-01-02T13:23:37+01:00", 1357129417.0),
        ("2006-01-02Z", 1136160000.0),
    ],
)
def test_since_takes_docker_forms(value: str, expected: float) -> None:
    assert parse_since(value, NOW) == pytest.approx(expected)


def test_since_without_a_zone_is_local_time() -> None:
    assert parse_since("2013-01-02T13:23:37", NOW) == datetime(2013, 1, 2, 13, 23, 37).timestamp()
    assert parse_since("2006-01-02", NOW) == datetime(2006, 1, 2).timestamp()


@pytest.mark.parametrize("value", ["nonsense", "", "10x", "m", "-5m", "1.2.3", "2013-13-45"])
def test_bad_since_names_the_value_and_the_forms(value: str) -> None:
    with pytest.raises(SinceError) as bad:
        parse_since(value, NOW)
    assert f'invalid --since "{value}"' in str(bad.value) and "42m" in str(bad.value)


def test_the_daemon_takes_since_as_epoch_seconds_only() -> None:
    assert since_param(None) == 0.0 and since_param(12.5) == 12.5
    for bad in ("10m", -1, float("nan")):
        with pytest.raises(SinceError):
            since_param(bad)


def test_stamps_have_nine_fraction_digits() -> None:
    assert rfc3339_nano(1410848266.0) == "2014-09-16T06:17:46.000000000Z"
    assert rfc3339_nano(1410848266.25) == "2014-09-16T06:17:46.250000000Z"


ITEM = {
    "Prefix": "web.2.abcdefabcdef@w1",
    "ServiceName": "web",
    "ServiceID": "svc0123456789",
    "Slot": "2",
    "TaskID": "abcdefabcdef0123456789",
    "NodeID": "node0123456789",
    "NodeName": "w1",
    "Line": "hello",
    "Stream": "stdout",
    "Timestamp": 1410848266.0,
}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (LogFormat(), "web.2.abcdefabcdef@w1    | hello"),
        (LogFormat(no_trunc=True), "web.2.abcdefabcdef0123456789@w1    | hello"),
        (LogFormat(no_task_ids=True), "web.2@w1    | hello"),
        (LogFormat(no_resolve=True), "svc0123456789.2.abcdefabcdef@node0123456789    | hello"),
        (LogFormat(raw=True), "hello"),
        (LogFormat(timestamps=True), "2014-09-16T06:17:46.000000000Z web.2.abcdefabcdef@w1    | hello"),
        (
            LogFormat(details=True),
            "web.2.abcdefabcdef@w1    | com.docker.swarm.node.id=node0123456789,"
            "com.docker.swarm.service.id=svc0123456789,com.docker.swarm.task.id=abcdefabcdef0123456789 hello",
        ),
        (LogFormat(raw=True, timestamps=True), "2014-09-16T06:17:46.000000000Z hello"),
    ],
)
def test_lines_are_laid_out_as_docker_does(fmt: LogFormat, expected: str) -> None:
    assert format_line(ITEM, fmt) == expected


def test_a_line_from_an_older_daemon_keeps_its_prefix() -> None:
    old = {"Prefix": "web.1.abc@m1", "Line": "x", "Timestamp": 1.0}
    assert format_line(old, LogFormat(no_trunc=True)) == "web.1.abc@m1    | x"


def test_bad_since_is_one_line_exit_2_before_any_call(tmp_path: object) -> None:
    result = CliRunner().invoke(
        cli, ["-H", "/nonexistent/shoal.sock", "service", "logs", "--since", "nonsense", "web"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and 'invalid --since "nonsense"' in result.output
    assert "Traceback" not in result.output


def test_n_is_tail() -> None:
    result = CliRunner().invoke(cli, ["-H", "/nonexistent/shoal.sock", "service", "logs", "-n", "x", "web"])
    assert result.exit_code == 2 and 'invalid --tail "x"' in result.output
