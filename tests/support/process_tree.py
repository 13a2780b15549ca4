"""The processes below a pid, read from /proc (what a test that stops a stack checks)."""

from __future__ import annotations

from pathlib import Path


def children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the command may hold spaces
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(root_pid: int) -> set[int]:
    children, found, stack = children_by_parent(), set(), [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def find_descendant(root_pid: int, needle: bytes) -> int:
    """The pid of a descendant of `root_pid` whose command line contains `needle`."""
    for pid in sorted(descendants(root_pid)):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    raise AssertionError(f"no descendant of {root_pid} runs {needle!r}")
