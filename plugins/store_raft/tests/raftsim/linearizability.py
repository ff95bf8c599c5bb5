"""A Wing & Gong / Lowe style linearizability checker for a key-value register model.

Histories are split per key (a register history is linearizable iff each key's is:
P-compositionality), and each key is searched depth-first over "which operations are
linearized so far, and what value does the register hold", memoizing visited states. An
operation whose outcome is unknown (the client never heard back) may take effect at any
point after its invocation, or never; definitely failed operations are left out.

Times are unique, increasing event stamps from the simulator, so "A returned before B was
invoked" is never ambiguous.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

INFINITY = 1 << 62


@dataclass
class Op:
    id: int
    kind: str  # "w" or "r"
    key: str
    value: int | None  # value written, or value read (None: the key was absent)
    invoke: int
    complete: int = INFINITY  # INFINITY while pending or when the outcome is unknown
    status: str = "pending"  # pending | ok | fail | unknown

    def __str__(self) -> str:
        end = "?" if self.complete == INFINITY else str(self.complete)
        return f"op{self.id} {self.kind}({self.key})={self.value} [{self.invoke}..{end}] {self.status}"


def check_history(ops: list[Op]) -> tuple[bool, str]:
    """(True, "") if the history is linearizable, else (False, the offending key's history)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.status == "ok" or (op.status in ("unknown", "pending") and op.kind == "w"):
            by_key[op.key].append(op)
    for key in sorted(by_key):
        if not check_register(by_key[key]):
            lines = "\n".join(f"  {op}" for op in sorted(by_key[key], key=lambda o: o.invoke))
            return False, f"history of key {key!r} is not linearizable:\n{lines}"
    return True, ""


def check_register(ops: list[Op]) -> bool:
    """Search for a linearization of one register's operations (reads see the last write)."""
    ops = sorted(ops, key=lambda o: o.invoke)
    n = len(ops)
    must = 0  # operations that completed: every linearization contains them
    for i, op in enumerate(ops):
        if op.status == "ok":
            must |= 1 << i
    seen: set[tuple[int, int | None]] = set()
    stack: list[tuple[int, int | None]] = [(0, None)]
    while stack:
        mask, value = stack.pop()
        if mask & must == must:
            return True
        if (mask, value) in seen:
            continue
        seen.add((mask, value))
        # The next operation must have been invoked before every remaining one returned.
        horizon = min(ops[i].complete for i in range(n) if not mask >> i & 1)
        for i in range(n):
            if mask >> i & 1:
                continue
            op = ops[i]
            if op.invoke >= horizon:
                break  # sorted by invocation: none of the rest qualifies either
            if op.kind == "w":
                stack.append((mask | 1 << i, op.value))
            elif op.value == value:
                stack.append((mask | 1 << i, value))
    return False
