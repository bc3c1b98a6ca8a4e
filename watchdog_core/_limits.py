"""The limits a host can die of: cgroup v2/v1, rlimits, RAM, MemAvailable, PSI (docs/pressure.md).

Everything is read from files under a ``root`` (``/`` in production, a fixture
tree in tests), so every rule is tested against real-looking cgroup v1/v2 trees
and /proc files. Missing files mean "no such limit", never an error: a host in
an environment without cgroups must not crash the watchdog.
"""

from __future__ import annotations

import os

from . import _procfs

UNLIMITED = 1 << 62  # cgroup v1 says "unlimited" as 9223372036854771712; anything above is too


class LimitPair:
    """One (usage, limit) pair: the host dies when usage reaches limit."""

    __slots__ = ("source", "usage", "limit", "detail")

    def __init__(self, source: str, usage: int, limit: int, detail: str = "") -> None:
        self.source, self.usage, self.limit, self.detail = source, usage, limit, detail

    @property
    def ratio(self) -> float:
        return self.usage / self.limit if self.limit > 0 else 0.0

    def __repr__(self) -> str:
        return f"LimitPair({self.source!r}, usage={self.usage}, limit={self.limit})"


class EffectiveLimit:
    """The tightest of all pairs: the one with the highest usage/limit ratio."""

    __slots__ = ("pairs", "winner")

    def __init__(self, pairs: list[LimitPair]) -> None:
        self.pairs = pairs
        self.winner = max(pairs, key=lambda p: p.ratio) if pairs else None

    @property
    def ratio(self) -> float:
        return self.winner.ratio if self.winner else 0.0

    @property
    def source(self) -> str:
        return self.winner.source if self.winner else "none"

    @property
    def limit(self) -> int | None:
        return self.winner.limit if self.winner else None

    @property
    def usage(self) -> int:
        return self.winner.usage if self.winner else 0


def _read(path: str) -> str | None:
    return _procfs.read_text(path)  # kept open: no allocation per sample (see _procfs)


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED or value <= 0 else value


def _stat_fields(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value.split()[0])
        except (ValueError, IndexError):
            continue
    return out


MEMINFO_KEYS = frozenset({"MemTotal", "MemAvailable", "SwapTotal", "SwapFree"})


def meminfo(root: str = "/", keys: frozenset[str] = MEMINFO_KEYS) -> dict[str, int]:
    """The wanted fields of /proc/meminfo, in bytes."""
    out = {}
    for line in (_read(os.path.join(root, "proc/meminfo")) or "").splitlines():
        key, _, rest = line.partition(":")
        if key not in keys:
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


class Mount:
    __slots__ = ("root", "point", "fstype", "options")

    def __init__(self, root: str, point: str, fstype: str, options: set[str]) -> None:
        self.root, self.point, self.fstype, self.options = root, point, fstype, options


def mounts(root: str = "/", pid: int | str = "self") -> list[Mount]:
    """cgroup mounts from /proc/<pid>/mountinfo."""
    text = _read(os.path.join(root, f"proc/{pid}/mountinfo"))
    if text is None:
        text = _read(os.path.join(root, "proc/self/mountinfo")) or ""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] in ("cgroup", "cgroup2"):
            out.append(Mount(_unescape(fields[3]), _unescape(fields[4]), tail[0],
                             set(tail[2].split(","))))
    return out


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\")


def cgroup_dir(root: str, mount: Mount, cgroup_path: str) -> str | None:
    rel = os.path.relpath(cgroup_path, mount.root) if mount.root != "/" else cgroup_path
    if rel.startswith(".."):
        rel = "/"  # the host's cgroup is outside this mount's view: the mount root is ours
    candidate = os.path.normpath(os.path.join(root, mount.point.lstrip("/"), rel.lstrip("/")))
    base = os.path.normpath(os.path.join(root, mount.point.lstrip("/")))
    if os.path.isdir(candidate):
        return candidate
    return base if os.path.isdir(base) else None


def cgroup_membership(root: str = "/", pid: int | str = "self") -> dict[str, str]:
    """{"v2": path} and/or {"v1": path} of the memory controller from /proc/<pid>/cgroup."""
    out: dict[str, str] = {}
    for line in (_read(os.path.join(root, f"proc/{pid}/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            out["v2"] = path
        elif "memory" in controllers.split(","):
            out["v1"] = path
    return out


class CgroupLimit:
    """A finite memory limit of one cgroup directory; usage is read separately."""

    __slots__ = ("source", "directory", "limit", "detail")

    def __init__(self, source: str, directory: str, limit: int, detail: str) -> None:
        self.source, self.directory, self.limit, self.detail = source, directory, limit, detail

    def usage(self) -> LimitPair:
        """Working set now: usage minus inactive file cache (what the kubelet evicts on)."""
        memory = cgroup_memory(self.directory, v2=self.source == "cgroup-v2")
        return LimitPair(self.source, memory[0] if memory else 0, self.limit, self.detail)


def cgroup_memory(directory: str, *, v2: bool) -> tuple[int, int] | None:
    """(working set, anonymous memory) of one cgroup now, bytes: its usage less the
    inactive file cache; None when the usage cannot be read."""
    stat = _stat_fields(_read(os.path.join(directory, "memory.stat")))
    raw = _read(os.path.join(directory, "memory.current" if v2 else "memory.usage_in_bytes"))
    try:
        current = int(raw) if raw is not None else None
    except ValueError:
        current = None
    if current is None:
        return None
    if v2:
        inactive, anon = stat.get("inactive_file", 0), stat.get("anon")
    else:
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        anon = stat.get("total_rss", stat.get("rss"))
    working = max(0, current - inactive)
    return working, anon if anon is not None else working


def cgroup_limits(root: str = "/", pid: int | str = "self",
                  layout: tuple[dict[str, str], list[Mount]] | None = None
                  ) -> list[CgroupLimit]:
    """Every finite memory limit over the host: cgroup v2 ``memory.max`` of its cgroup
    and each ancestor; cgroup v1 ``memory.limit_in_bytes`` or, for ancestors, the
    ``hierarchical_memory_limit`` of memory.stat (the "unlimited" sentinel ignored)."""
    membership, all_mounts = layout or (cgroup_membership(root, pid), mounts(root, pid))
    out: list[CgroupLimit] = []
    if "v2" in membership:
        mount = next((m for m in all_mounts if m.fstype == "cgroup2"), None)
        if mount is not None:
            out.extend(_v2_limits(root, mount, membership["v2"]))
    if "v1" in membership:
        mount = next((m for m in all_mounts if m.fstype == "cgroup" and "memory" in m.options),
                     None)
        if mount is not None:
            limit = _v1_limit(root, mount, membership["v1"])
            if limit is not None:
                out.append(limit)
    return out


def cgroup_pairs(root: str = "/", pid: int | str = "self",
                 layout: tuple[dict[str, str], list[Mount]] | None = None,
                 limits: list[CgroupLimit] | None = None) -> list[LimitPair]:
    """Working set against limit for the host's memory cgroup(s), one pair per version:
    among a cgroup v2 host's ancestors the tightest (highest ratio) is kept."""
    if limits is None:
        limits = cgroup_limits(root, pid, layout)
    best: dict[str, LimitPair] = {}
    for limit in limits:
        pair = limit.usage()
        if pair.source not in best or pair.ratio > best[pair.source].ratio:
            best[pair.source] = pair
    return list(best.values())


def _v2_limits(root: str, mount: Mount, path: str) -> list[CgroupLimit]:
    leaf = cgroup_dir(root, mount, path)
    if leaf is None:
        return []
    top = os.path.normpath(os.path.join(root, mount.point.lstrip("/")))
    out = []
    directory = leaf
    while True:
        limit = _read_int(os.path.join(directory, "memory.max"))
        if limit is not None:
            rel = "/" + os.path.relpath(directory, top).lstrip(".")
            out.append(CgroupLimit("cgroup-v2", directory, limit, rel))
        if directory == top or len(directory) <= len(top):
            return out
        directory = os.path.dirname(directory)


def _v1_limit(root: str, mount: Mount, path: str) -> CgroupLimit | None:
    directory = cgroup_dir(root, mount, path)
    if directory is None:
        return None
    stat = _stat_fields(_read(os.path.join(directory, "memory.stat")))
    limits = [
        value
        for value in (_read_int(os.path.join(directory, "memory.limit_in_bytes")),
                      stat.get("hierarchical_memory_limit"))
        if value is not None and 0 < value < UNLIMITED
    ]
    if not limits:
        return None
    top = os.path.normpath(os.path.join(root, mount.point.lstrip("/")))
    rel = "/" + os.path.relpath(directory, top).lstrip(".")
    return CgroupLimit("cgroup-v1", directory, min(limits), rel)


def cgroup_psi_path(root: str, layout: tuple[dict[str, str], list[Mount]]) -> str | None:
    """The host's cgroup v2 ``memory.pressure`` file, if it has one."""
    membership, all_mounts = layout
    mount = next((m for m in all_mounts if m.fstype == "cgroup2"), None)
    if "v2" not in membership or mount is None:
        return None
    leaf = cgroup_dir(root, mount, membership["v2"])
    if leaf is None or leaf == os.path.normpath(os.path.join(root, mount.point.lstrip("/"))):
        return None  # the root cgroup's file is the machine's: /proc/pressure says it
    path = os.path.join(leaf, "memory.pressure")
    return path if os.path.exists(path) else None


def cgroup_v1_memory_dir(root: str = "/", pid: int | str = "self") -> str | None:
    """The host's v1 memory cgroup directory (for OOM counters), or None."""
    membership = cgroup_membership(root, pid)
    mount = next((m for m in mounts(root, pid) if m.fstype == "cgroup" and "memory" in
                  m.options), None)
    if "v1" not in membership or mount is None:
        return None
    return cgroup_dir(root, mount, membership["v1"])


def rlimits(root: str = "/", pid: int | str = "self") -> dict[str, int]:
    """Finite soft limits from /proc/<pid>/limits: {"as": bytes, "data": bytes}."""
    names = {"Max address space": "as", "Max data size": "data", "Max open files": "nofile"}
    out: dict[str, int] = {}
    for line in (_read(os.path.join(root, f"proc/{pid}/limits")) or "").splitlines():
        for label, key in names.items():
            if line.startswith(label):
                soft = line[len(label) :].split()[0]
                if soft.isdigit() and 0 < int(soft) < UNLIMITED:
                    out[key] = int(soft)
    return out


def psi_memory(path: str) -> dict[str, float]:
    """``{"some": avg10, "full": avg10}`` from a PSI file; {} where there is none."""
    out: dict[str, float] = {}
    for line in (_read(path) or "").splitlines():
        kind, *fields = line.split()
        for field in fields:
            key, _, value = field.partition("=")
            if key == "avg10":
                try:
                    out[kind] = float(value)
                except ValueError:
                    pass
    return out


def limit_pairs(*, rss: int, vms: int, data: int, configured: int | None,
                info: dict[str, int], cgroups: list[LimitPair],
                limits: dict[str, int]) -> EffectiveLimit:
    """Combine every pair of docs/pressure.md; the highest ratio wins."""
    pairs = []
    if configured:
        pairs.append(LimitPair("configured", rss, configured))
    if info.get("MemTotal"):
        pairs.append(LimitPair("ram", rss, info["MemTotal"]))
    if "MemAvailable" in info:
        pairs.append(LimitPair("available", rss, rss + info["MemAvailable"]))
    pairs.extend(cgroups)
    if "as" in limits:
        pairs.append(LimitPair("rlimit-as", vms, limits["as"]))
    if "data" in limits:
        pairs.append(LimitPair("rlimit-data", data, limits["data"]))
    return EffectiveLimit(pairs)
