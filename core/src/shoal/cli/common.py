"""Calling the daemon from a command: one request, a one-line error on refusal."""

from __future__ import annotations

from typing import Any

import click

from shoal.cli.errors import fail
from shoal.client import Client, ClientError

INPUT_ERRORS = {"INVALID_ARGUMENT", "ALREADY_EXISTS", "NOT_FOUND"}


def client(ctx: click.Context) -> Client:
    return Client(ctx.find_root().params.get("host"))


def call(ctx: click.Context, method: str, **params: Any) -> Any:
    """Call the daemon; a refusal becomes ``Error: <message>`` and a non-zero exit."""
    try:
        return client(ctx).call(method, **params)
    except ClientError as exc:
        fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
