"""``--format`` templates: what the subset runs, and a one-line refusal for what it cannot."""

from __future__ import annotations

import pytest
from shoal.cli.output import apply_template, check_template

FIELDS = ("ID", "Name", "Replicas")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{", "unclosed action"),
        ("{{.Name", "unclosed action"),
        ("{{.Nope}}", 'no field "Nope"'),
        ("{{.Name}} {{json .Nope}}", 'no field "Nope"'),
        ("{{if .Name}}x{{end}}", "unsupported template action"),
        ("{{.}}", "json ."),
    ],
)
def test_bad_templates_are_refused_in_one_line(
    template: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        check_template(template, FIELDS)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: invalid --format") and reason in err


def test_good_templates_run() -> None:
    item = {"ID": "abc", "Name": "web", "Replicas": "1/1"}
    for template in ("{{.Name}}", "{{ .ID }}\t{{json .Replicas}}", "{{json .}}", "plain }} text"):
        check_template(template, FIELDS)
    assert apply_template("{{.Name}}:{{json .Replicas}}", item) == 'web:"1/1"'
