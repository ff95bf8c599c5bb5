"""The fleet's session traces round-trip through the file a benchmark reads (issue 18)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shoal.agent.sessiontrace import SessionTrace
from shoal.hollow.traces import read_traces, write_traces


def _node(hostname: str, *events: str) -> Any:
    trace = SessionTrace()
    for event in events:
        trace.record(event, "m1:2377", "detail")
    return SimpleNamespace(profile=SimpleNamespace(hostname=hostname), agent=SimpleNamespace(trace=trace))


def test_each_process_writes_its_nodes_and_the_reader_joins_them(tmp_path: Path) -> None:
    write_traces(tmp_path / "trace-0.json", [_node("hollow-00000", "try", "opened")])
    write_traces(tmp_path / "trace-1.json", [_node("hollow-00001", "try", "deferred", "try", "opened")])
    (tmp_path / "trace-2.json").write_text("{not json")  # a process killed while writing
    traces = read_traces(tmp_path)
    assert sorted(traces) == ["hollow-00000", "hollow-00001"]
    assert [event for _, event, _, _ in traces["hollow-00001"]] == ["try", "deferred", "try", "opened"]
    at, _, manager, detail = traces["hollow-00000"][0]
    assert at > 0 and manager == "m1:2377" and detail == "detail"
    assert (tmp_path / "trace-0.json").stat().st_mode & 0o777 == 0o600


def test_a_trace_keeps_only_the_latest_steps() -> None:
    trace = SessionTrace(length=3)
    for number in range(5):
        trace.record(f"step-{number}")
    assert [event for _, event, _, _ in trace.as_rows()] == ["step-2", "step-3", "step-4"]
