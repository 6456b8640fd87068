"""Pure graph functions over {node: set(dependencies)}: cycles, order, selections (--from/--until/--only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None. Dependencies naming unknown nodes are ignored."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = grey
        stack.append(n)
        for d in sorted(deps[n]):
            if d not in color:
                continue
            if color[d] == grey:
                return stack[stack.index(d):] + [d]
            if color[d] == white:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[n] = black
        return None

    for n in sorted(deps):
        if color[n] == white:
            found = visit(n)
            if found:
                return found
    return None


def topo_order(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies first; ties broken by declaration order (stable, so plans are reproducible)."""
    order: list[str] = []
    done: set[str] = set()
    names = list(deps)

    def visit(n: str) -> None:
        if n in done:
            return
        for d in sorted(deps[n], key=names.index):
            visit(d)
        done.add(n)
        order.append(n)

    for n in names:
        visit(n)
    return order


def ancestors(deps: Mapping[str, Iterable[str]], node: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps[node])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps[n])
    return seen


def descendants(deps: Mapping[str, Iterable[str]], node: str) -> set[str]:
    kids: dict[str, set[str]] = {n: set() for n in deps}
    for n, ds in deps.items():
        for d in ds:
            kids[d].add(n)
    return ancestors(kids, node)


def select(deps: Mapping[str, Iterable[str]], *, from_: str | None = None, until: str | None = None,
           only: str | None = None, force: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """Which stages may execute and which must execute even when cached.

    Returns (runnable, forced). Stages outside `runnable` are only read from the cache: if one is not cached,
    the plan cannot proceed past it.
    - until S: S and its ancestors.       - only S: S alone (its inputs must be cached).
    - from S: S and its descendants are re-executed; ancestors come from the cache or run if missing.
    - force S: S is re-executed even when cached.
    """
    runnable = set(deps)
    forced = set(force)
    if until is not None:
        runnable &= ancestors(deps, until) | {until}
    if only is not None:
        runnable &= {only}
    if from_ is not None:
        forced |= descendants(deps, from_) | {from_}
    return runnable, forced & runnable
