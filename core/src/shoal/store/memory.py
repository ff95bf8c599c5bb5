"""The kernel's in-memory object store: read views, write transactions, watches.

Every manager holds the whole cluster state in memory. Writes are transactions: a function
reads the current state through a ``Tx`` and records creates/updates/deletes; the collected
actions become one ``StoreBatch`` entry that the store provider commits (durably, replicated).
Only when the provider applies the committed entry (``apply``) does the in-memory state change
and do watchers hear about it, so every manager applies exactly the same sequence.

Writers are serialised by a lock held across the proposal. That keeps transactions simple
(what a ``Tx`` reads cannot change under it) at the cost of one commit in flight at a time;
callers that write a lot batch their changes into one transaction (the scheduler driver and
the dispatcher's status flush do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from sys import intern
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from google.protobuf.message import DecodeError

from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreProvider, StoreUnavailable

log = logging.getLogger("shoal.store")

Obj = pb.Cluster | pb.Node | pb.Service | pb.Task | pb.Secret | pb.Config | pb.Network
T = TypeVar("T")
R = TypeVar("R")
L = TypeVar("L", bound="ApplyListener")
ObjT = TypeVar("ObjT", pb.Cluster, pb.Node, pb.Service, pb.Task, pb.Secret, pb.Config, pb.Network)

KINDS: tuple[str, ...] = ("cluster", "node", "service", "task", "secret", "config", "network")
_KIND_OF_TYPE: dict[type, str] = {
    pb.Cluster: "cluster",
    pb.Node: "node",
    pb.Service: "service",
    pb.Task: "task",
    pb.Secret: "secret",
    pb.Config: "config",
    pb.Network: "network",
}

CREATE = pb.StoreAction.CREATE
UPDATE = pb.StoreAction.UPDATE
DELETE = pb.StoreAction.DELETE


def kind_of(obj: Obj) -> str:
    return _KIND_OF_TYPE[type(obj)]


@dataclass(slots=True)
class Event:
    """One committed change. ``old`` is the object before (None on create); ``obj`` after
    (for a delete, the deleted object). Read-only by convention, not frozen: every manager
    makes one per change it applies (five per task started), and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) cost three times as much."""

    action: int
    kind: str
    obj: Any
    old: Any = None
    index: int = 0


#: A group commit takes no more transactions once it holds this many changes (a transaction is
#: never split, so an entry holds fewer than this plus the last transaction's changes).
MAX_GROUP_CHANGES = 1000


class Conflict(Exception):
    """A transaction tried to create an object that exists, or change one that does not."""


class Table(Generic[ObjT]):
    """All objects of one kind, by ID. Objects handed out must be treated as read-only."""

    def __init__(self) -> None:
        self.items: dict[str, ObjT] = {}

    def get(self, object_id: str) -> ObjT | None:
        return self.items.get(object_id)

    def all(self) -> Iterator[ObjT]:
        return iter(list(self.items.values()))

    def __len__(self) -> int:
        return len(self.items)


class ReadView:
    """Committed state plus secondary indexes (tasks by service and by node)."""

    def __init__(self) -> None:
        self.clusters: Table[pb.Cluster] = Table()
        self.nodes: Table[pb.Node] = Table()
        self.services: Table[pb.Service] = Table()
        self.tasks: Table[pb.Task] = Table()
        self.secrets: Table[pb.Secret] = Table()
        self.configs: Table[pb.Config] = Table()
        self.networks: Table[pb.Network] = Table()
        self.tasks_by_service: dict[str, set[str]] = {}
        self.tasks_by_node: dict[str, set[str]] = {}
        #: Kind -> table, looked up for every change applied.
        self._tables: dict[str, Table[Any]] = {kind: getattr(self, kind + "s") for kind in KINDS}

    def table(self, kind: str) -> Table[Any]:
        return self._tables[kind]

    def cluster(self) -> pb.Cluster | None:
        for cluster in self.clusters.items.values():
            return cluster
        return None

    def service_tasks(self, service_id: str) -> list[pb.Task]:
        return [self.tasks.items[t] for t in self.tasks_by_service.get(service_id, ())]

    def node_tasks(self, node_id: str) -> list[pb.Task]:
        return [self.tasks.items[t] for t in self.tasks_by_node.get(node_id, ())]

    def service_by_name(self, name: str) -> pb.Service | None:
        for service in self.services.items.values():
            if service.spec.annotations.name == name:
                return service
        return None

    # ------------------------------------------------------------------ mutation (apply only)

    def put(self, kind: str, obj: Any) -> Any:
        items = self._tables[kind].items
        object_id = obj.id
        old = items.get(object_id)
        if old is None:
            # One str per ID, shared by the table, the task indexes and the leader's indexes
            # that intern it too (a message's ``id`` is a new str at every read: a task's ID
            # was held three times here, ~150 bytes per task, and once more by the reaper). An
            # update keeps the table's key and most leave the indexes alone: not interned.
            object_id = intern(object_id)
        items[object_id] = obj
        if kind == "task":
            if old is None:
                self._index_task(obj, object_id)
            elif old.service_id != obj.service_id:
                self._unindex_task(old)
                self._index_task(obj, intern(object_id))
            elif old.node_id != obj.node_id:  # a placement: the service's index stays
                if old.node_id:
                    _index_discard(self.tasks_by_node, old.node_id, object_id)
                if obj.node_id:
                    _index_add(self.tasks_by_node, obj.node_id, intern(object_id))
            # Most task changes (a status, the desired state) leave both indexes alone.
        return old

    def remove(self, kind: str, object_id: str) -> Any:
        old = self._tables[kind].items.pop(object_id, None)
        if kind == "task" and old is not None:
            self._unindex_task(old)
        return old

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def _index_task(self, task: pb.Task, task_id: str) -> None:
        _index_add(self.tasks_by_service, task.service_id, task_id)
        if task.node_id:
            _index_add(self.tasks_by_node, task.node_id, task_id)

    def _unindex_task(self, task: pb.Task) -> None:
        _index_discard(self.tasks_by_service, task.service_id, task.id)
        if task.node_id:
            _index_discard(self.tasks_by_node, task.node_id, task.id)


def _index_add(index: dict[str, set[str]], key: str, object_id: str) -> None:
    ids = index.get(key)
    if ids is None:  # not ``setdefault(key, set())``: a set made and dropped per task indexed
        ids = index[key] = set()
    ids.add(object_id)


def _index_discard(index: dict[str, set[str]], key: str, object_id: str) -> None:
    """Take ``object_id`` out of ``key``'s set, keeping no empty set."""
    ids = index.get(key)
    if ids is not None:
        ids.discard(object_id)
        if not ids:
            del index[key]


class _OverlayTable(Generic[ObjT]):
    """A table as committed, overlaid with changes of transactions batched before this one."""

    def __init__(self, base: Table[ObjT], kind: str, changes: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self._base: Table[ObjT] = base
        self._kind = kind
        self._changes = changes

    def get(self, object_id: str) -> ObjT | None:
        change = self._changes.get((self._kind, object_id))
        if change is not None:
            found: ObjT | None = None if change[0] == DELETE else change[1]
            return found
        return self._base.get(object_id)

    @property
    def items(self) -> dict[str, ObjT]:
        merged = dict(self._base.items)
        for (kind, object_id), (action, obj) in self._changes.items():
            if kind != self._kind:
                continue
            if action == DELETE:
                merged.pop(object_id, None)
            else:
                merged[object_id] = obj
        return merged

    def all(self) -> Iterator[ObjT]:
        return iter(list(self.items.values()))

    def __len__(self) -> int:
        return len(self.items)


class _OverlayView:
    """The committed view plus the changes of the transactions batched before this one, so a
    transaction in a group commit sees exactly what it would have seen run alone after them."""

    def __init__(self, base: ReadView, changes: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self._base = base
        self._changes = changes
        self.clusters: _OverlayTable[pb.Cluster] = _OverlayTable(base.clusters, "cluster", changes)
        self.nodes: _OverlayTable[pb.Node] = _OverlayTable(base.nodes, "node", changes)
        self.services: _OverlayTable[pb.Service] = _OverlayTable(base.services, "service", changes)
        self.tasks: _OverlayTable[pb.Task] = _OverlayTable(base.tasks, "task", changes)
        self.secrets: _OverlayTable[pb.Secret] = _OverlayTable(base.secrets, "secret", changes)
        self.configs: _OverlayTable[pb.Config] = _OverlayTable(base.configs, "config", changes)
        self.networks: _OverlayTable[pb.Network] = _OverlayTable(base.networks, "network", changes)
        self._tables: dict[str, _OverlayTable[Any]] = {kind: getattr(self, kind + "s") for kind in KINDS}

    def table(self, kind: str) -> Any:
        return self._tables[kind]

    def cluster(self) -> pb.Cluster | None:
        for cluster in self.clusters.all():
            return cluster
        return None

    def _tasks_where(self, base: list[pb.Task], match: Callable[[pb.Task], bool]) -> list[pb.Task]:
        changed = {oid for kind, oid in self._changes if kind == "task"}
        result = [t for t in base if t.id not in changed]
        for (kind, _), (action, obj) in self._changes.items():
            if kind == "task" and action != DELETE and match(obj):
                result.append(obj)
        return result

    def service_tasks(self, service_id: str) -> list[pb.Task]:
        return self._tasks_where(self._base.service_tasks(service_id), lambda t: t.service_id == service_id)

    def node_tasks(self, node_id: str) -> list[pb.Task]:
        return self._tasks_where(self._base.node_tasks(node_id), lambda t: t.node_id == node_id)

    def service_by_name(self, name: str) -> pb.Service | None:
        for service in self.services.all():
            if service.spec.annotations.name == name:
                return service
        return None


class Tx:
    """A write transaction: reads see committed state overlaid with this transaction's changes."""

    def __init__(self, view: ReadView | _OverlayView, store: ObjectStore | None = None) -> None:
        self._view = view
        #: The store it commits to (None for a transaction made by hand, in a test): what its
        #: readers derive from the committed view (``ObjectStore.derived``) is found there.
        self.store = store
        self._changes: dict[tuple[str, str], tuple[int, Any]] = {}

    # reads
    def get(self, kind: str, object_id: str) -> Any:
        change = self._changes.get((kind, object_id))
        if change is not None:
            return None if change[0] == DELETE else change[1]
        return self._view.table(kind).get(object_id)

    def node(self, node_id: str) -> pb.Node | None:
        return self.get("node", node_id)  # type: ignore[no-any-return]

    def service(self, service_id: str) -> pb.Service | None:
        return self.get("service", service_id)  # type: ignore[no-any-return]

    def task(self, task_id: str) -> pb.Task | None:
        return self.get("task", task_id)  # type: ignore[no-any-return]

    def cluster(self) -> pb.Cluster | None:
        for (kind, _), (action, obj) in self._changes.items():
            if kind == "cluster" and action != DELETE:
                return obj  # type: ignore[no-any-return]
        return self._view.cluster()

    @property
    def view(self) -> ReadView:
        """The state under this transaction (does not include its own changes): committed
        state, plus the changes of transactions committed in the same group before it."""
        return self._view  # type: ignore[return-value] # an _OverlayView reads like a ReadView

    def group_changes(self) -> Iterator[tuple[str, int, Any]]:
        """(kind, action, object) of each change the transactions batched before this one in
        its group made (what ``view`` holds beyond the committed view); for a delete, the
        object deleted. Empty when the transaction runs against the committed view."""
        view = self._view
        if isinstance(view, _OverlayView):
            for (kind, _), (action, obj) in view._changes.items():
                yield kind, action, obj

    def own_changes(self, kind: str) -> dict[str, Any]:
        """This transaction's own changes of ``kind``, by ID: the object written, or None for
        one it deleted (what ``view`` does not hold yet)."""
        return {
            object_id: None if action == DELETE else obj
            for (changed_kind, object_id), (action, obj) in self._changes.items()
            if changed_kind == kind
        }

    # writes
    def create(self, obj: Obj) -> None:
        kind = kind_of(obj)
        object_id = obj.id
        if self.get(kind, object_id) is not None:
            raise Conflict(f"{kind} {object_id} already exists")
        now = time.time()
        meta = obj.meta  # reached once: every task the orchestrator makes comes through here
        meta.created_at = meta.created_at or now
        meta.updated_at = now
        self._changes[(kind, object_id)] = (CREATE, obj)

    def update(self, obj: Obj) -> None:
        """Record ``obj`` as the new version. Pass a copy, never an object from a view."""
        kind = kind_of(obj)
        key = (kind, obj.id)
        previous = self._changes.get(key)
        # What ``get`` would answer, without building the key again (every placement and
        # status written goes through here).
        exists = (
            previous[0] != DELETE if previous is not None else self._view.table(kind).get(key[1]) is not None
        )
        if not exists:
            raise Conflict(f"{kind} {obj.id} does not exist")
        obj.meta.updated_at = time.time()
        action = CREATE if previous is not None and previous[0] == CREATE else UPDATE
        self._changes[key] = (action, obj)

    def delete(self, kind: str, object_id: str) -> None:
        existing = self.get(kind, object_id)
        if existing is None:
            return
        previous = self._changes.get((kind, object_id))
        if previous is not None and previous[0] == CREATE:
            del self._changes[(kind, object_id)]
            return
        self._changes[(kind, object_id)] = (DELETE, existing)

    def __len__(self) -> int:
        return len(self._changes)

    def batch(self) -> pb.StoreBatch:
        batch = pb.StoreBatch()
        for (kind, _), (action, obj) in self._changes.items():
            store_action = batch.actions.add(kind=action)
            getattr(store_action, kind).CopyFrom(obj)
        return batch


#: A store provider's optional ``submit(entry)``: ``propose``'s work done at once, returning the
#: future ``propose`` would await (or raising what ``propose`` would raise).
Submit = Callable[[bytes], "asyncio.Future[int]"]


@dataclass(frozen=True)
class _Proposal:
    """A group's entry as proposed, the (action, kind, object) of each change it holds, and its
    writers with their transactions' results."""

    entry: bytes
    built: list[tuple[int, str, Any]]
    writers: list[tuple[asyncio.Future[Any], Any]]


def _answer(writers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Resolve each writer still waiting with its transaction's result."""
    for fut, result in writers:
        if not fut.done():
            fut.set_result(result)


def _fail(writers: list[tuple[asyncio.Future[Any], Any]], exc: BaseException) -> None:
    """Fail each writer still waiting with ``exc``."""
    for fut, _ in writers:
        if not fut.done():
            fut.set_exception(exc)


def _actions_of(batch: pb.StoreBatch) -> list[tuple[int, str, Any]]:
    """(action, kind, object) of each change of ``batch`` (an action naming no object, from a
    newer version, is left out)."""
    return [
        (action.kind, kind, getattr(action, kind))
        for action in batch.actions
        if (kind := action.WhichOneof("target")) is not None
    ]


#: Objects a listener's ``restoring`` visits per step of ``ObjectStore.restore_steps``.
RESTORED_PER_STEP = 1000
#: What ``RestoringListener.restoring`` returns: the steps, then how to put the result in place.
Restoring = Generator[None, None, Callable[[], None]]


def visit_in_steps(
    objects: Iterable[T], visit: Callable[[T], None], per_step: int = RESTORED_PER_STEP
) -> Iterator[None]:
    """Call ``visit`` on each of ``objects``, a step (a yield) every ``per_step``."""
    for count, obj in enumerate(objects, 1):
        visit(obj)
        if count % per_step == 0:
            yield


def finish(steps: Generator[None, None, R]) -> R:
    """Run ``steps`` to its end at once; what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def visit_in_pieces(
    pending: set[str], table: Table[ObjT], visit: Callable[[ObjT], None], per_step: int
) -> None:
    """Call ``visit`` on the table's object of each ID in ``pending``, taking each ID out as it
    goes, ``per_step`` per loop step: how an index kept by the applies is built over a loaded
    store without holding the loop (the applies meanwhile skip the IDs still pending; the
    view's version of each is visited when its turn comes)."""
    items = table.items
    while pending:
        for _ in range(min(per_step, len(pending))):
            obj = items.get(pending.pop())
            if obj is not None:
                visit(obj)
        if pending:
            await asyncio.sleep(0)


#: The ``StoreSnapshot`` field of each kind, in field-number order: the order the message's
#: own encoding writes them in, so the slices of ``ObjectStore.snapshot_slices`` joined are
#: the bytes of one ``StoreSnapshot`` holding everything (protobuf reads concatenated
#: messages as one whose repeated fields hold every piece's elements, in order).
_SNAPSHOT_FIELDS: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((kind, kind + "s") for kind in KINDS),
        key=lambda pair: pb.StoreSnapshot.DESCRIPTOR.fields_by_name[pair[1]].number,
    )
)
#: Objects per piece of ``ObjectStore.snapshot_slices``: 1,000 tasks are ~2-4 ms to encode.
SNAPSHOT_SLICE_OBJECTS = 1000


def _encode_slices(captured: list[tuple[str, list[Any]]], per_slice: int) -> Iterator[bytes]:
    """One ``StoreSnapshot`` of at most ``per_slice`` objects of one kind at a time, encoded
    (a generator: nothing is encoded until the caller asks for the next piece)."""
    for field, objects in captured:
        for start in range(0, len(objects), per_slice):
            piece = pb.StoreSnapshot()
            getattr(piece, field).extend(objects[start : start + per_slice])
            yield piece.SerializeToString()


def _snapshot_pieces(data: bytes, per_piece: int) -> Iterator[pb.StoreSnapshot]:
    """``data`` (a ``StoreSnapshot``) parsed a piece of at most ``per_piece`` objects at a time:
    the bytes of consecutive objects are a ``StoreSnapshot`` of their own, so each piece is
    parsed as one once the scan found where it ends (parsing 100,000 tasks at once is 20-70 ms
    of the loop). A field that is not an object (none is, today) ends the scan: the rest is
    parsed whole. Truncated data raises ``DecodeError``, as parsing it whole does."""
    pos = start = count = 0
    end = len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            if key & 7 != 2:  # not length-delimited
                pos = end
                break
            size, pos = _varint(data, pos)
            pos += size
            count += 1
            if count == per_piece:
                yield pb.StoreSnapshot.FromString(data[start:pos])
                start, count = pos, 0
    except IndexError:
        raise DecodeError("truncated store snapshot") from None
    if start < end:
        yield pb.StoreSnapshot.FromString(data[start:])


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def copy(obj: ObjT) -> ObjT:
    """A mutable copy of a stored object, to change and pass to ``Tx.update``."""
    clone = type(obj)()
    clone.CopyFrom(obj)
    return clone


class EventQueue:
    """A watch's FIFO of events: what it uses of ``asyncio.Queue`` (unbounded), at a fraction
    of the cost per event. Every change is put into several watches' queues on every manager
    (the orchestrator's, the scheduler's, the assignment feed's, the observers'...), and
    ``asyncio.Queue.put_nowait`` with its bookkeeping of unfinished tasks and getters was the
    largest single cost of publishing a change."""

    def __init__(self) -> None:
        self._items: deque[Event] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()

    def put_nowait(self, event: Event) -> None:
        self._items.append(event)
        if self._getters:
            self._wake_next()

    async def get(self) -> Event:
        items = self._items
        while not items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if items and not getter.cancelled():
                    self._wake_next()  # woken and then cancelled: pass the wake-up on
                raise
        return items.popleft()

    def _wake_next(self) -> None:
        """Wake the longest-waiting getter still waiting (cancelled ones are dropped here)."""
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def get_nowait(self) -> Event:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def take_all(self) -> list[Event]:
        """Every event queued, oldest first, leaving none."""
        events = list(self._items)
        self._items.clear()
        return events

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Watch:
    """A queue of committed events, optionally filtered by kind and by a predicate."""

    def __init__(
        self, store: ObjectStore, kinds: Iterable[str] | None, where: Callable[[Event], bool] | None = None
    ) -> None:
        self._store = store
        self.kinds = frozenset(kinds) if kinds is not None else None
        #: Events it is false for are never queued: its owner is not even woken for them.
        self.where = where
        self.queue = EventQueue()
        #: Events up to this index were applied before the watch began: its owner reads them
        #: from the view, so they are not delivered (they may still be on their way).
        self.since = store.applied_index

    def wants(self, event: Event) -> bool:
        return (self.kinds is None or event.kind in self.kinds) and (self.where is None or self.where(event))

    async def get(self) -> Event:
        return await self.queue.get()

    def drain(self) -> list[Event]:
        """Every event already queued, without waiting."""
        return self.queue.take_all()

    def close(self) -> None:
        self._store._unregister(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ApplyListener(Protocol):
    """Told of every committed change as it is applied, before ``apply`` returns: what it
    derives from the view (an index, a running total) is never behind the view, unlike a
    ``Watch``, which hears of changes two loop turns later."""

    def applied(self, events: list[Event]) -> None:
        """``events`` were just applied to the view (in commit order)."""

    def restored(self) -> None:
        """The whole view was replaced (a snapshot): rebuild from it."""


@runtime_checkable
class RestoringListener(ApplyListener, Protocol):
    """A listener that rebuilds in steps (``ObjectStore.restore_steps``): its walk of the
    snapshot's objects yields the loop between pieces instead of holding it (each listener's
    walk of 100,000 tasks was 60-350 ms of a follower's loop, in the last step of an install)."""

    def restoring(self, view: ReadView) -> Restoring:
        """Build from ``view`` (a snapshot's, not in place yet) what ``restored`` would, a
        piece per step, and return how to put it in place: that runs when the view is put in
        place, so until then readers see the old view and the old index together."""


class ObjectStore:
    """The state machine the store provider drives, and the API the kernel reads and writes."""

    def __init__(self) -> None:
        self.view = ReadView()
        self.provider: StoreProvider | None = None
        self.applied_index = 0
        self._pending: list[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        #: The open watches, by the kind they want (``None``: every kind), so an event is
        #: offered only to the watches of its kind: a thousand sessions watch nodes, and each of
        #: 50,000 task events used to be checked against every one of them on the leader's
        #: loop. The only registry: ``_watches`` is derived from it.
        self._watches_by_kind: dict[str | None, set[Watch]] = {}
        self._unpublished: list[Event] = []
        #: The entry this store is proposing and the (action, kind, object) of each change of
        #: the batch it was serialised from: when the provider applies that very entry (on the
        #: leader, the bytes it was handed), those objects are applied as they are instead of
        #: parsing the bytes back into the same objects (each change applied on the leader
        #: cost a parse, and a wrapper of each action to reach its object).
        #: With them, the writers of that batch and their transactions' results: ``apply`` answers
        #: them as it applies the entry, rather than the group commit on a later loop turn.
        self._proposed: _Proposal | None = None
        self._listeners: list[ApplyListener] = []
        self._derived: dict[Callable[[ObjectStore], Any], ApplyListener] = {}

    @property
    def _watches(self) -> set[Watch]:
        """Every open watch (for tests and diagnostics: delivery goes by kind)."""
        return set().union(*self._watches_by_kind.values())

    def listen(self, listener: ApplyListener) -> Callable[[], None]:
        """Tell ``listener`` of every change as it is applied; returns how to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def derived(self, make: Callable[[ObjectStore], L]) -> L:
        """The store's one ``make(self)``: an index built from the view on first use and kept
        by every apply from then on (``listen``), for code that has a transaction and no
        component of its own to hold one (the networks' address books)."""
        found = self._derived.get(make)
        if found is None:
            found = self._derived[make] = make(self)
            found.restored()
            self.listen(found)
        return found  # type: ignore[return-value] # the one make() built, keyed by make

    # ------------------------------------------------------------------ StateMachine

    def apply(self, index: int, entry: bytes) -> None:
        proposed = self._proposed
        writers: list[tuple[asyncio.Future[Any], Any]] = []
        if proposed is not None and proposed.entry is entry:
            self._proposed = None
            actions = proposed.built  # what the bytes parse to, built by ``_run_group``
            writers = proposed.writers
        else:
            actions = _actions_of(pb.StoreBatch.FromString(entry))
        events = []
        for action, kind, obj in actions:
            if action == DELETE:
                old = self.view.remove(kind, obj.id)
                if old is not None:
                    events.append(Event(DELETE, kind, old, old, index))
                continue
            obj.meta.version = index
            old = self.view.put(kind, obj)
            events.append(Event(CREATE if old is None else UPDATE, kind, obj, old, index))
        self.applied_index = index
        if not events:
            _answer(writers)
            return
        for listener in self._listeners:
            listener.applied(events)
        # Watchers hear of the change three loop turns later. The writers of this entry are
        # answered now (turn 0): their coroutines resume, and their answers go out, on turn 1;
        # the watches' predicates run on turn 3 and their reactions (orchestrators, sessions)
        # after it. Run earlier, the predicates of every watch were on the write's path, just
        # before the answer (about 30 us for a node write).
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._publish(events)
            _answer(writers)
            return
        if not self._unpublished:
            loop.call_soon(loop.call_soon, loop.call_soon, self._publish_applied)
        self._unpublished.extend(events)
        _answer(writers)

    def _publish_applied(self) -> None:
        events, self._unpublished = self._unpublished, []
        self._publish(events)

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_slices())

    def snapshot_slices(self, per_slice: int = SNAPSHOT_SLICE_OBJECTS) -> Iterator[bytes]:
        """``snapshot()``'s bytes in pieces of at most ``per_slice`` objects each, so a store
        provider can encode a large store between other work on the loop (100,000 tasks are
        0.2-0.6 s of encoding). The state is the one applied when this is called, however many
        applies run before the last piece is taken: each table's objects are listed now (~2 ms
        for 100,000), and a stored object is never changed in place (an apply stores a new
        one; ``Tx.update`` is given a copy), so what the list holds stays as it was."""
        view = self.view
        captured = [(field, list(view.table(kind).items.values())) for kind, field in _SNAPSHOT_FIELDS]
        return _encode_slices(captured, per_slice)

    def restore(self, index: int, data: bytes) -> None:
        for _ in self.restore_steps(index, data):
            pass

    def restore_steps(
        self, index: int, data: bytes, per_step: int = SNAPSHOT_SLICE_OBJECTS
    ) -> Generator[None, None, None]:
        """``restore`` a step at a time, so a store provider can install a large snapshot
        between other work on the loop (100,000 tasks are 0.3-0.7 s of restoring): each step
        puts at most ``per_step`` objects into a new view, each listener that can
        (``RestoringListener``) rebuilds from it a piece per step, aside, and the last step puts
        that view and those rebuilds in place and tells the other listeners. Until then
        readers see the state before the snapshot, whole (view and indexes); a generator
        dropped before its end changes nothing."""
        view = ReadView()
        for piece in _snapshot_pieces(data, per_step):
            for kind, field in _SNAPSHOT_FIELDS:
                for obj in getattr(piece, field):
                    view.put(kind, obj)
            yield
        built: dict[int, tuple[ApplyListener, Callable[[], None]]] = {}
        for listener in list(self._listeners):
            if isinstance(listener, RestoringListener):
                built[id(listener)] = (listener, (yield from listener.restoring(view)))
        self.view.__dict__.update(view.__dict__)  # the same view, its tables replaced (as ``clear``)
        self.applied_index = index
        for listener in self._listeners:
            ready = built.get(id(listener))
            if ready is not None and ready[0] is listener:
                ready[1]()
            else:  # one that rebuilds at once, or that started listening during the steps
                listener.restored()

    # ------------------------------------------------------------------ writes

    async def update(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a transaction and commit what it recorded.

        Transactions run one at a time, in call order, each seeing every earlier one. Those
        that arrive while a commit is in flight are run together as one group, each against
        the state the ones before it left, and committed as ONE store entry: one fsync and one
        replication round for the whole group (group commit); a group takes no more
        transactions once it holds ``MAX_GROUP_CHANGES`` changes. A transaction that raises is
        left out of the group; if the commit fails, every transaction of the group fails
        with ``StoreUnavailable`` and nothing of it changed.

        A write that finds no commit in flight and none waiting has nothing to be grouped
        with: when the provider can propose without awaiting (``submit``), its transaction
        runs and is proposed at once, in the caller's loop turn, not on the turn after, when
        the group commit's task would start. Writers are answered as their entry is applied.
        """
        if self.provider is None:
            raise StoreUnavailable("this node is not a manager of a swarm")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fn, fut))
        if self._committer is None or self._committer.done():
            submit: Submit | None = getattr(self.provider, "submit", None)
            first = self._propose_group(submit) if submit is not None and len(self._pending) == 1 else None
            if first is not None or self._pending:
                self._committer = loop.create_task(self._commit_groups(first), name="store-group-commit")
        return await fut  # type: ignore[no-any-return]

    def _run_group(self) -> _Proposal | None:
        """Run the pending transactions (up to the group's bound; the rest stay pending) and
        build their entry; None when none of them changed anything (those are answered)."""
        group, self._pending = self._pending, []
        changes: dict[tuple[str, str], tuple[int, Any]] = {}
        done: list[tuple[asyncio.Future[Any], Any]] = []
        for position, (fn, fut) in enumerate(group):
            if len(changes) >= MAX_GROUP_CHANGES:
                # The rest go first in the next group: one entry of every write that came
                # in meanwhile held every manager's loop while it was built, replicated and
                # applied (thousands of changes under load: seconds, and an election).
                self._pending[:0] = group[position:]
                break
            if fut.cancelled():
                continue
            tx = Tx(_OverlayView(self.view, changes) if changes else self.view, self)
            try:
                result = fn(tx)
            except BaseException as exc:
                fut.set_exception(exc)
                continue
            changes.update(tx._changes)
            done.append((fut, result))
        if not changes:
            _answer(done)
            return None
        batch = pb.StoreBatch()
        add = batch.actions.add
        built: list[tuple[int, str, Any]] = []
        for (kind, _), (action, obj) in changes.items():
            stored = getattr(add(kind=action), kind)
            stored.CopyFrom(obj)
            built.append((action, kind, stored))
        return _Proposal(batch.SerializeToString(), built, done)

    def _propose_group(self, submit: Submit) -> tuple[_Proposal, asyncio.Future[int]] | None:
        """Run the pending group and hand its entry to ``submit`` now; the proposal and the
        future of its commit, or None when there was nothing to propose or the provider
        refused it at once (its writers then have the error)."""
        proposal = self._run_group()
        if proposal is None:
            return None
        self._proposed = proposal
        try:
            return proposal, submit(proposal.entry)
        except Exception as exc:
            self._proposed = None
            _fail(proposal.writers, exc)
            return None

    async def _commit_groups(self, first: tuple[_Proposal, asyncio.Future[int]] | None = None) -> None:
        """Commit groups until none is pending; ``first``: a group ``update`` proposed already."""
        if first is not None:
            await self._committed(first[0], first[1])
        while self._pending:
            proposal = self._run_group()
            if proposal is None:
                continue
            self._proposed = proposal
            assert self.provider is not None
            await self._committed(proposal, self.provider.propose(proposal.entry))

    async def _committed(self, proposal: _Proposal, commit: Awaitable[int]) -> None:
        """Wait for ``proposal``'s commit: its writers were answered as it was applied (see
        ``apply``); if it failed, they have the error."""
        try:
            await commit
        except BaseException as exc:
            _fail(proposal.writers, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._proposed = None  # applied by now, or to be parsed if ever it is
        _answer(proposal.writers)  # a provider that applied other bytes than the ones proposed

    # ------------------------------------------------------------------ watches

    def watch(
        self, kinds: Iterable[str] | None = None, *, where: Callable[[Event], bool] | None = None
    ) -> Watch:
        """Start receiving events committed from now on (use as a context manager): those of
        ``kinds`` (all if None) for which ``where`` is true (all if None)."""
        watch = Watch(self, kinds, where)
        for kind in watch.kinds if watch.kinds is not None else (None,):
            self._watches_by_kind.setdefault(kind, set()).add(watch)
        return watch

    def _unregister(self, watch: Watch) -> None:
        for kind in watch.kinds if watch.kinds is not None else (None,):
            watches = self._watches_by_kind.get(kind)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches_by_kind[kind]

    def _publish(self, events: list[Event]) -> None:
        """Queue the events, in commit order, for each watch that wants them and began before
        them; a watch is only looked at for the kinds it watches."""
        by_kind = self._watches_by_kind
        of_kind: dict[str, list[Event]] = {}
        for event in events:
            of_kind.setdefault(event.kind, []).append(event)
        candidates = set(by_kind.get(None, ()))
        for kind in of_kind:
            candidates.update(by_kind.get(kind, ()))
        for watch in candidates:
            if watch.kinds is None:
                mine = events
            else:
                present = [kind for kind in watch.kinds if kind in of_kind]
                mine = (
                    of_kind[present[0]] if len(present) == 1 else [e for e in events if e.kind in watch.kinds]
                )
            where, since, put = watch.where, watch.since, watch.queue.put_nowait
            for event in mine:
                if event.index > since and (where is None or where(event)):
                    put(event)
