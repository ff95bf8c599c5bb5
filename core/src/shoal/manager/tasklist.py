"""The rows of ``service ps`` and ``node ps``, built a bounded piece at a time.

The leader answers these on the event loop that also runs its Raft ticks, heartbeats and
dispatcher sessions. Listing 100,000 tasks in one synchronous stretch held that loop for
1.5-2 s (sessions timed out, nodes went Down); here the rows are built ``CHUNK`` tasks at a
time with a yield to the loop between pieces. The stored objects are read-only (the store
replaces, never mutates them), so the list taken at the start stays consistent across yields.
Per row, the node's hostname and the service's name are looked up once per node and service,
and state names come from a table, not a protobuf enum lookup each.

A row is a dict of docker's task fields, or with ``compact`` (what the CLI asks for) a tuple of
only the ``COMPACT_COLUMNS`` its table, ``-q``, ``json`` and templates are made of: half the
reply's bytes (100,000 tasks: 33 -> 17 MB) and 0.6x the handler's time (issue 18 item 2).
With ``pieces`` too (``StreamedRows``), each piece of rows is written to the CLI as soon as it
is built, a ``MARK`` after it, so the CLI reads one piece while the next is built.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from operator import attrgetter
from typing import Any

from shoal import ports, states, yieldingjson
from shoal.looppieces import in_pieces
from shoal.manager import listfilters
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ReadView

#: The fields of a compact row, in its order (the reply names them: ``columns``).
COMPACT_COLUMNS = (
    "ID",
    "ServiceName",
    "Slot",
    "NodeID",
    "Image",
    "Node",
    "DesiredState",
    "State",
    "Timestamp",
    "Error",
    "Ports",
    "CreatedAt",
)

#: Tasks per piece: about 15 ms of work on a quiet core, so the loop is never held long.
CHUNK = 1000

_SLOT = attrgetter("slot")

#: What follows the opening ``[`` of streamed rows and each piece of them: JSON whitespace, so
#: the reply parses as the same value anywhere, and the only raw carriage return in the line
#: (json escapes it inside strings), so a reader finds where each piece ends without parsing.
MARK = "\r"

_STATE_NAMES: dict[int, str] = {int(value): states.name(value) for value in pb.TaskState.values()}


def _state_name(state: int) -> str:
    known = _STATE_NAMES.get(state)
    return known if known is not None else states.name(state)


class Names:
    """Node hostnames and service names, each looked up once per listing."""

    def __init__(self, view: ReadView) -> None:
        self._view = view
        #: Node ID -> hostname, as far as looked up (a loop may read it first, then ask ``host``).
        self.hosts: dict[str, str] = {"": ""}
        self._services: dict[str, str] = {}
        #: One copy of each node ID, service name and image the rows hold: protobuf gives a
        #: new string at every read, and kept rows (``RowCache``) would hold 100,000 of each.
        self.shared: dict[str, str] = {}

    def host(self, node_id: str) -> str:
        found = self.hosts.get(node_id)
        if found is None:
            node = self._view.nodes.get(node_id)
            found = self.hosts[node_id] = node.description.hostname if node else ""
        return found

    def service(self, service_id: str) -> str:
        found = self._services.get(service_id)
        if found is None:
            service = self._view.services.get(service_id)
            found = self._services[service_id] = service.spec.annotations.name if service else ""
        return found


def _ports(task: pb.Task) -> str:
    """A running task's host-mode ports. Many tasks have no endpoint: ``HasField`` says so in
    a fifth of the time ``task.endpoint.ports`` takes to make the empty list's wrappers. The
    others are mostly a VIP service's tasks, each with the service's endpoint spec and no port:
    the list's length says so without ``ps_text``'s generator and join (100,000 such tasks:
    0.22 -> 0.11 s; 13% of a real manager's first listing, py-spy)."""
    if not task.HasField("endpoint"):
        return ""
    listed = task.endpoint.ports
    return ports.ps_text(listed) if listed else ""


#: Per piece of a streamed listing: its new rows that may be kept (task, place in its rows),
#: its rows, their texts (``None`` for a new row) and the piece's text when it holds no kept
#: row (``RowCache.keep_later`` cuts the new rows' texts from it).
_Built = tuple[list[tuple[pb.Task, int]], list[Any], list[Any], str | None]


class RowCache:
    """Compact rows kept from one listing to the next, by task ID with the task's version (the
    store's index of its last write, ``meta.version``) and the hostname each was built from.
    Every write of a task gives it a new version, so a row of the same version on the
    same-named node is still exact: a repeated ``service ps`` of 100,000 tasks reads three
    fields per task instead of building its row (handler and encoding 0.9 -> 0.16 s, issue 18
    item 2). Not the task object itself: kept rows would keep removed tasks alive (a removed
    100,000-task service: 160 MB) until a listing prunes them. Rows are built, and stale ones
    dropped, by the listings themselves and, on the leader, by ``rowwarm.RowWarmer`` when the
    store is quiet (its only work on the write path: a task's ID put in a set). Rows are
    tuples, so a reply's rows can be shared with the next one's."""

    def __init__(self) -> None:
        #: Task ID -> (the task's version, its node's hostname, its row, the row's JSON text).
        self.rows: dict[str, tuple[int, str, tuple[Any, ...], str]] = {}
        #: The keeping of streamed listings' new rows, still under way (``keep_later``).
        self._keeping: set[asyncio.Task[None]] = set()

    def prune(self, view: ReadView) -> None:
        """Drop the rows of tasks no longer in the store once the cache holds a ``CHUNK`` more
        than the store has tasks (a listing never pays for it otherwise; the rows of changed
        tasks are replaced as they are listed)."""
        if len(self.rows) <= len(view.tasks) + CHUNK:
            return
        current = view.tasks.items
        self.rows = {key: entry for key, entry in self.rows.items() if key in current}

    def keep_later(self, pieces: list[_Built], shared: dict[str, str]) -> None:
        """Keep a streamed listing's new rows once its reply is written (``_Built``: per piece,
        the new rows' tasks and places, its rows, its texts, its text): their versions are
        read, their texts cut from their piece's and their strings shared (``shared``: the
        listing's ``Names.shared``) then, a piece at a time, not before the reply's last
        piece (100,000 tasks, a first listing: the per-row encoding and keeping, ~0.35 s of
        the manager's CPU the CLI waited for)."""
        if not pieces:
            return
        keeping = asyncio.get_running_loop().create_task(self._keep(pieces, shared))
        self._keeping.add(keeping)
        keeping.add_done_callback(self._keeping.discard)

    async def _keep(self, pieces: list[_Built], shared: dict[str, str]) -> None:
        kept = self.rows
        encode = yieldingjson.encode
        same = shared.setdefault  # (one copy of each repeated string in the kept rows)
        for index, (built, rows, texts, text) in enumerate(pieces):
            if index:
                await asyncio.sleep(0)
            cut = _row_texts(text, len(rows)) if text is not None else None
            for task, at in built:
                task_id, name, slot, node_id, image, *rest = row = rows[at]
                row_text = texts[at] or (cut[at] if cut is not None else encode(row))
                row = (task_id, same(name, name), slot, same(node_id, node_id), same(image, image), *rest)
                kept[task_id] = (task.meta.version, row[5], row, row_text)

    async def settled(self) -> None:
        """Once the rows of the listings written so far are kept."""
        while self._keeping:
            await asyncio.gather(*self._keeping)


def warm(piece: Sequence[pb.Task], names: Names, cache: RowCache) -> int:
    """Build and keep the rows of the tasks of ``piece`` that ``cache`` holds no current row
    for (``rowwarm.RowWarmer``, between listings), as a plain listing keeps its rows (each
    encoded: 100,000 rows 1.33 s of CPU against 1.49 s encoded as one list, cut and shared
    after, as a streamed listing keeps them). A kept row of a newer version than ``piece``'s
    task (kept by a listing since the piece was taken) stays. Returns how many were built."""
    kept = cache.rows
    # (``_compact_rows`` reuses a current row itself; only a newer one must be kept from it)
    wanted = [t for t in piece if (entry := kept.get(t.id)) is None or entry[0] <= t.meta.version]
    rows: list[Any] = []
    reused = _compact_rows(wanted, names, {}, rows, cache, [])
    return len(rows) - reused


def _compact_rows(
    piece: Sequence[pb.Task],
    names: Names,
    wanted: listfilters.Filters,
    rows: list[Any],
    cache: RowCache | None = None,
    texts: list[Any] | None = None,
    built: list[tuple[pb.Task, int]] | None = None,
) -> int:
    """The compact rows (``COMPACT_COLUMNS``) of the tasks of ``piece`` that match ``wanted``,
    appended to ``rows``: one loop, each field read once, hostnames and state names from dicts
    (no function call per row for them: a tenth of the handler's time at 100,000 tasks); a
    row ``cache`` still holds for the same task version on the same-named node is reused; with
    ``texts``, each row's JSON text is appended to it (kept with the row, encoded once). With
    ``built`` (a streamed reply's), a new row is neither encoded nor kept: ``texts`` gets
    ``None`` for it and ``built`` its task and place in ``rows``, if it may be kept. Returns
    how many rows came from the cache."""
    hosts = names.hosts
    kept = cache.rows if cache is not None else {}
    encode = yieldingjson.encode
    same = names.shared.setdefault  # (one copy of each repeated string in the kept rows)
    state_names = _STATE_NAMES
    running = states.RUNNING
    reused = 0
    later = built is not None  # (strings shared when kept: ``RowCache._keep``)
    for task in piece:
        node_id = task.node_id
        host = hosts.get(node_id)
        if host is None:
            host = names.host(node_id)
        if wanted and not listfilters.task_matches(task, wanted, host):
            continue
        task_id = task.id
        entry = kept.get(task_id)
        meta = task.meta
        if entry is not None and entry[0] == meta.version and entry[1] == host:
            rows.append(entry[2])
            if texts is not None:
                texts.append(entry[3])
            reused += 1
            continue
        own_name = task.service_annotations.name
        name = own_name or names.service(task.service_id)
        image = task.spec.container.image
        status = task.status
        state = status.state
        desired = task.desired_state
        row = (
            task_id,
            name if later else same(name, name),
            task.slot,
            node_id if later else same(node_id, node_id),
            image if later else same(image, image),
            host,
            state_names.get(desired) or _state_name(desired),
            state_names.get(state) or _state_name(state),
            status.timestamp,
            status.err,
            _ports(task) if state == running else "",
            meta.created_at,
        )
        rows.append(row)
        if built is not None:  # encoded with its piece, kept once the reply is written
            if texts is not None:
                texts.append(None)
            if own_name and cache is not None:
                built.append((task, len(rows) - 1))
            continue
        if texts is None:
            continue
        text = encode(row)
        texts.append(text)
        if cache is not None and own_name:
            # (a name looked up from the service could change without the task changing)
            kept[task_id] = (meta.version, host, row, text)
    return reused


def _row(task: pb.Task, service_name: str, host: str) -> dict[str, Any]:
    status = task.status
    state = status.state
    return {
        "ID": task.id,
        "ServiceName": service_name,
        "Slot": task.slot,
        "Image": task.spec.container.image,
        "Node": host,
        "NodeID": task.node_id,
        "DesiredState": _state_name(task.desired_state),
        "State": _state_name(state),
        "Timestamp": status.timestamp,
        "Error": status.err,
        "Message": status.message,
        "Ports": _ports(task) if state == states.RUNNING else "",
        "CreatedAt": task.meta.created_at,
        "JobIteration": task.job_iteration,
        "NetworksAttachments": [
            {"Network": a.network.spec.annotations.name, "Addresses": list(a.addresses)}
            for a in task.networks
        ],
    }


class StreamedRows(yieldingjson.Streamed):
    """A compact ``service ps`` reply written while it is built: ``{"columns": [...], "now": t,
    "rows": [...]}``, the rows ``task_rows`` would give (``in_slot_order``), their text ``CHUNK`` tasks a piece,
    each piece as soon as it is built and followed by ``MARK``. The CLI makes a piece's cells
    while the manager builds the next, instead of waiting for all of them (100,000 tasks,
    first listing: the manager builds for ~0.7 s; issue 18 item 2). ``now`` comes first, so
    the ages can be worked out as the rows come: the clock when the tasks were taken (a
    whole reply's is read after its rows are built, up to that long later)."""

    def __init__(
        self, view: ReadView, tasks: Sequence[pb.Task], wanted: listfilters.Filters, cache: RowCache
    ) -> None:
        self._view = view
        self._tasks = tasks
        self._wanted = wanted
        self._cache = cache
        self._now = time.time()

    async def parts(self) -> AsyncIterator[str]:
        encode = yieldingjson.encode
        yield (
            '{"columns":' + encode(list(COMPACT_COLUMNS)) + ',"now":' + encode(self._now) + ',"rows":[' + MARK
        )
        tasks = in_slot_order(self._tasks)
        names = Names(self._view)
        self._cache.prune(self._view)
        pending: list[_Built] = []
        comma = ""
        async for piece in in_pieces(tasks, CHUNK):
            rows: list[Any] = []
            texts: list[Any] = []
            built: list[tuple[pb.Task, int]] = []
            reused = _compact_rows(piece, names, self._wanted, rows, self._cache, texts, built)
            if not rows:
                continue
            text = _piece_text(rows, texts, reused)
            yield comma + text + MARK
            comma = ","
            if built:
                pending.append((built, rows, texts, None if reused else text))
        self._cache.keep_later(pending, names.shared)
        yield "]}"


def in_slot_order(tasks: Sequence[pb.Task]) -> list[pb.Task]:
    """``tasks`` by slot (the store gives a service's in a set's order), as compact rows are
    listed: the CLI's sorts then find long runs, and its cells, made as the rows come, are
    read in the order they were made (100,000 rows: the CLI's work after the last piece
    0.37-0.46 -> 0.17-0.24 s of CPU; this sort ~0.03 s, one C call). What the CLI prints does
    not depend on it: its order is the CLI's to make, this one only makes it cheaper."""
    return sorted(tasks, key=_SLOT)


def _piece_text(rows: list[Any], texts: list[Any], reused: int) -> str:
    """A piece's rows as JSON, without the brackets: the kept texts joined when all were
    kept, else new rows encoded as one list by one C call (1,000 rows: a third less than one
    call per row), else each new row encoded into ``texts`` and all joined."""
    if reused == len(rows):
        return ",".join(texts)
    if not reused:
        return yieldingjson.encode(rows)[1:-1]
    encode = yieldingjson.encode
    for index, text in enumerate(texts):
        if text is None:
            texts[index] = encode(rows[index])
    return ",".join(texts)


def _row_texts(text: str, count: int) -> list[str] | None:
    """The texts of the ``count`` rows whose list ``_piece_text`` wrote as ``text``, cut from
    it (0.25 -> 0.01 s for 100,000 rows, against encoding each again), or ``None`` when a
    string in them holds ``],[``. Rows are flat lists of strings and numbers: outside its
    strings the text has a ``]`` only where a row ends, so each ``],[`` is either between two
    rows or inside a string, and exactly ``count - 1`` of them means none is inside one."""
    cut = text[1:-1].split("],[")
    if len(cut) != count:
        return None
    return ["[" + inner + "]" for inner in cut]


async def task_rows(
    view: ReadView,
    tasks: Sequence[pb.Task],
    wanted: listfilters.Filters,
    *,
    compact: bool = False,
    cache: RowCache | None = None,
) -> list[Any]:
    """docker's ``service ps`` rows of ``tasks`` that match ``wanted``, by slot (dicts, or compact
    tuples, from and into ``cache`` if given: then as an ``EncodedList``, each row's JSON
    text kept with it), yielding to the event loop after every ``CHUNK`` tasks."""
    names = Names(view)
    rows: list[Any] = []
    texts: list[str] | None = None
    tasks = in_slot_order(tasks)
    if compact and cache is not None:
        cache.prune(view)
        texts = []
    async for piece in in_pieces(tasks, CHUNK):
        if compact:
            _compact_rows(piece, names, wanted, rows, cache, texts)
            continue
        for task in piece:
            host = names.host(task.node_id)
            if not listfilters.task_matches(task, wanted, host):
                continue
            name = task.service_annotations.name or names.service(task.service_id)
            rows.append(_row(task, name, host))
    return rows if texts is None else yieldingjson.EncodedList(rows, texts)
