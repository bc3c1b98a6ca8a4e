"""A test's node id without its parameter values: the label the pytest plugin marks.

pytest builds a parametrized test's id from its values (``test_ask[<a prompt>]``); a
prompt, a path or a token must never reach a dump, so each part of the ``[...]`` that
pytest derived from a value becomes that parameter set's index (``test_ask[0]``), and
only ids the test's author wrote (``ids=[...]``, ``pytest.param(..., id=...)``, a
parametrized fixture's ``ids=[...]``) are kept (docs/pytest.md, "Node ids").

pytest keeps one id per ``parametrize()`` call (``callspec._idlist``), each argument's
value (``callspec.params``) and an index per argument (``callspec.indices``), but not
whether an id was written or derived, and the index pytest 9 keeps for a direct
argument is the position in the product of every call, not in its own list. So the
calls are traced back to the ``parametrize`` marks and the fixtures' ``params``/``ids``,
each call's own index is worked out from the product index, and every one is checked
by identity against the value the test receives. Anything that does not trace or does
not check (a ``pytest_generate_tests`` hook, a pytest whose internals moved) gives the
indices pytest holds and no id at all: an index too much is harmless, a value is not.
An ``ids=`` function sees the values, so what it returns counts as derived.
"""

from __future__ import annotations

from collections.abc import Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pytest

_PARAMETER_SET_FIELDS = ("values", "marks", "id")


class _Call:
    """One parametrize() call as the test declared it."""

    __slots__ = ("argnames", "argvalues", "ids", "direct")

    def __init__(self, argnames: tuple[str, ...], argvalues: Sequence[object] | None,
                 ids: object, direct: frozenset[str]) -> None:
        self.argnames = argnames
        self.argvalues = argvalues  # None: not traced
        self.ids = ids if isinstance(ids, Sequence) and not isinstance(ids, str) else ()
        self.direct = direct  # the argnames pytest passes straight to the test

    def values(self, index: int) -> tuple[object, ...] | None:
        """The values of parameter set ``index``, one per argname."""
        if self.argvalues is None or not 0 <= index < len(self.argvalues):
            return None
        value = self.argvalues[index]
        if _is_parameter_set(value):
            return tuple(getattr(value, "values"))  # noqa: B009
        if len(self.argnames) == 1:
            return (value,)
        return tuple(value) if isinstance(value, Sequence) else None

    def written_id(self, index: int) -> object:
        """The id the author wrote for parameter set ``index`` (``HIDDEN_PARAM``
        included), or None when pytest derives it from the values."""
        if self.argvalues is not None and 0 <= index < len(self.argvalues):
            value = self.argvalues[index]
            own = getattr(value, "id", None) if _is_parameter_set(value) else None
            if own is not None:
                return own
        if 0 <= index < len(self.ids) and self.ids[index] is not None:
            return self.ids[index]
        return None


class NodeLabels:
    """``labels(item)``: ``item.nodeid`` with every value-derived parameter id replaced
    by its index. The calls of a test function are traced once, for all its items."""

    def __init__(self) -> None:
        # id(item._fixtureinfo), shared by every item of one function -> (that object,
        # kept alive so the id is not reused; its calls, or None: not traced).
        self._calls: dict[int, tuple[object, list[_Call] | None]] = {}

    def __call__(self, item: pytest.Item) -> str:
        nodeid = item.nodeid
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            return nodeid
        try:
            traced = self._traced(item, nodeid, callspec)
        except Exception:  # internals moved: the indices alone, below
            traced = None
        return traced if traced is not None else _indices_only(nodeid, callspec)

    def _traced(self, item: pytest.Item, nodeid: str, callspec: object) -> str | None:
        idlist = [str(part) for part in getattr(callspec, "_idlist")]  # noqa: B009
        indices: dict[str, int] = dict(getattr(callspec, "indices"))  # noqa: B009
        params: dict[str, object] = dict(getattr(callspec, "params"))  # noqa: B009
        if not idlist:
            return nodeid  # no "[...]": every parameter set's id was hidden
        suffix = f"[{'-'.join(idlist)}]"
        if not nodeid.endswith(suffix):
            return None
        info = getattr(item, "_fixtureinfo", None)
        cached = self._calls.get(id(info)) if info is not None else None
        if cached is None or cached[0] is not info:
            cached = (info, _calls(item, indices))
            if info is not None:
                self._calls[id(info)] = cached
        calls = cached[1]
        if calls is None or [n for c in calls for n in c.argnames] != list(indices):
            return None
        own = _own_indices(calls, indices, params)
        if own is None:
            return None
        hidden = _hidden_param()
        parts: list[tuple[int, object]] = []  # (own index, the id the author wrote or None)
        for call, index in zip(calls, own, strict=True):
            written = call.written_id(index)
            if hidden is None or written is not hidden:  # a hidden id has no part
                parts.append((index, written))
        if len(parts) != len(idlist):
            return None
        shown = [part if written is not None else str(index)
                 for part, (index, written) in zip(idlist, parts, strict=True)]
        return f"{nodeid[: -len(suffix)]}[{'-'.join(shown)}]"


def _calls(item: pytest.Item, indices: dict[str, int]) -> list[_Call] | None:
    """The test's parametrize() calls in the order pytest made them, or None when one
    of its arguments cannot be traced to a mark or a fixture."""
    by_argname: dict[str, _Call] = {}
    for mark in item.iter_markers(name="parametrize"):
        argnames = _argnames(mark.args[0] if mark.args else mark.kwargs.get("argnames"))
        argvalues = mark.args[1] if len(mark.args) > 1 else mark.kwargs.get("argvalues")
        indirect = mark.args[2] if len(mark.args) > 2 else mark.kwargs.get("indirect", False)
        ids = mark.args[3] if len(mark.args) > 3 else mark.kwargs.get("ids")
        if indirect is True:
            direct: frozenset[str] = frozenset()
        elif isinstance(indirect, Sequence) and not isinstance(indirect, str):
            direct = frozenset(argnames) - frozenset(map(str, indirect))
        else:
            direct = frozenset(argnames)
        values = argvalues if isinstance(argvalues, Sequence) else None
        call = _Call(argnames, values, ids, direct)
        for name in argnames:
            by_argname.setdefault(name, call)  # the closest mark wins, as in pytest
    info = getattr(item, "_fixtureinfo", None)
    for name, fixturedefs in (getattr(info, "name2fixturedefs", None) or {}).items():
        if name in by_argname or name not in indices:
            continue
        for fixturedef in reversed(fixturedefs):  # the one pytest parametrizes with
            fixture_params = getattr(fixturedef, "params", None)
            if fixture_params is not None:
                values = fixture_params if isinstance(fixture_params, Sequence) else None
                by_argname[name] = _Call((name,), values, getattr(fixturedef, "ids", None),
                                         frozenset())
                break
    calls: list[_Call] = []
    for name in indices:
        traced = by_argname.get(name)
        if traced is None:
            return None
        if not calls or calls[-1] is not traced:
            calls.append(traced)
    if len(calls) != len({id(call) for call in calls}):
        return None  # one call's argnames apart: not what pytest makes
    return calls


def _own_indices(calls: list[_Call], indices: dict[str, int],
                 params: dict[str, object]) -> list[int] | None:
    """Each call's index in its own list of parameter sets, checked by identity against
    the values the test gets; None when they do not check.

    An indirect argument's index is its own; a direct one's is its position in the
    product of every call (pytest 9), the last call varying fastest. Its own index is
    read from that, or taken as it is (what older versions kept) when that does not
    check.
    """
    sizes = [len(call.argvalues) if call.argvalues is not None else 0 for call in calls]
    own: list[int] = []
    for k, call in enumerate(calls):
        first = call.argnames[0]
        raw = indices.get(first, -1)
        candidates = [raw]
        if first in call.direct and sizes[k]:
            stride = 1
            for size in sizes[k + 1 :]:
                stride *= size
            if stride:
                candidates.insert(0, (raw // stride) % sizes[k])
        for index in candidates:
            values = call.values(index)
            if values is not None and len(values) == len(call.argnames) and all(
                    _same(params.get(name, _MISSING), value)
                    for name, value in zip(call.argnames, values, strict=True)):
                own.append(index)
                break
        else:
            return None
    return own


def _same(given: object, declared: object) -> bool:
    """Is ``given`` the value declared? The same object, or an equal int, str or bytes
    (``range(1000)`` makes a new int each time it is read)."""
    return given is declared or (type(given) is type(declared)
                                 and type(given) in _SCALARS and given == declared)


def _indices_only(nodeid: str, callspec: object) -> str:
    """``base[i-j]`` from pytest's indices alone, no id at all: the fallback."""
    path, sep, names = nodeid.rpartition("::")  # a path may hold "[": test[1].py
    head, bracket, _ = names.partition("[")
    if not bracket:
        return nodeid
    indices = getattr(callspec, "indices", None)
    numbers = list(indices.values()) if isinstance(indices, dict) else []
    distinct = [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1]]
    return f"{path}{sep}{head}[{'-'.join(map(str, distinct)) or '?'}]"


def _argnames(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, Sequence):
        return tuple(str(name) for name in value)
    return ()


def _is_parameter_set(value: object) -> bool:
    # pytest.param()'s type: public only since pytest 9.2, so known by its shape.
    return getattr(type(value), "_fields", None) == _PARAMETER_SET_FIELDS


def _hidden_param() -> object:
    import pytest

    return getattr(pytest, "HIDDEN_PARAM", None)


_MISSING = object()
_SCALARS = (int, str, bytes)
