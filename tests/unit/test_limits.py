"""Limit discovery from fixture cgroup v1/v2 trees and /proc files (docs/pressure.md)."""

from __future__ import annotations

from pathlib import Path

from watchdog_core import _limits

V1_UNLIMITED = "9223372036854771712"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, *, leaf_max: str, parent_max: str, leaf_current: int = 100 << 20,
            parent_current: int = 150 << 20) -> None:
    write(root, "proc/42/cgroup", "0::/user.slice/app.scope\n")
    write(root, "proc/42/mountinfo",
          "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    base = "sys/fs/cgroup/user.slice"
    write(root, f"{base}/memory.max", parent_max + "\n")
    write(root, f"{base}/memory.current", f"{parent_current}\n")
    write(root, f"{base}/memory.stat", "anon 1\ninactive_file 0\n")
    write(root, f"{base}/app.scope/memory.max", leaf_max + "\n")
    write(root, f"{base}/app.scope/memory.current", f"{leaf_current}\n")
    write(root, f"{base}/app.scope/memory.stat", f"anon 5\ninactive_file {20 << 20}\n")


def test_v2_leaf_limit_and_working_set(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf_max=str(200 << 20), parent_max="max")
    (pair,) = _limits.cgroup_pairs(str(tmp_path), 42)
    assert pair.source == "cgroup-v2"
    assert pair.limit == 200 << 20
    assert pair.usage == (100 - 20) << 20  # current minus inactive_file
    assert pair.detail == "/user.slice/app.scope"


def test_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf_max=str(1 << 30), parent_max=str(160 << 20))
    (pair,) = _limits.cgroup_pairs(str(tmp_path), 42)
    assert pair.limit == 160 << 20
    assert pair.usage == 150 << 20  # the ancestor's own working set
    assert pair.detail == "/user.slice"


def test_v2_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf_max="max", parent_max="max")
    assert _limits.cgroup_pairs(str(tmp_path), 42) == []


def v1_tree(root: Path, *, limit: str, hierarchical: str, mount_root: str = "/") -> None:
    write(root, "proc/42/cgroup", "12:pids:/x\n4:memory:/docker/abc\n1:name=systemd:/x\n")
    write(root, "proc/42/mountinfo",
          f"40 30 0:35 {mount_root} /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup "
          "rw,memory\n"
          "41 30 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n")
    directory = "sys/fs/cgroup/memory" + ("/docker/abc" if mount_root == "/" else "")
    write(root, f"{directory}/memory.limit_in_bytes", limit + "\n")
    write(root, f"{directory}/memory.usage_in_bytes", f"{300 << 20}\n")
    write(root, f"{directory}/memory.stat",
          f"cache 1\nhierarchical_memory_limit {hierarchical}\ntotal_inactive_file {50 << 20}\n")


def test_v1_limit_and_unlimited_sentinel(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=str(512 << 20), hierarchical=V1_UNLIMITED)
    (pair,) = _limits.cgroup_pairs(str(tmp_path), 42)
    assert (pair.source, pair.limit, pair.usage) == ("cgroup-v1", 512 << 20, 250 << 20)


def test_v1_hierarchical_limit_of_an_ancestor(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=V1_UNLIMITED, hierarchical=str(400 << 20))
    (pair,) = _limits.cgroup_pairs(str(tmp_path), 42)
    assert pair.limit == 400 << 20


def test_v1_unlimited_everywhere(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=V1_UNLIMITED, hierarchical=V1_UNLIMITED)
    assert _limits.cgroup_pairs(str(tmp_path), 42) == []


def test_v1_container_view_where_the_mount_root_is_the_cgroup(tmp_path: Path) -> None:
    """Inside a container the mount's root is the container's own cgroup."""
    v1_tree(tmp_path, limit=str(256 << 20), hierarchical=V1_UNLIMITED, mount_root="/docker/abc")
    (pair,) = _limits.cgroup_pairs(str(tmp_path), 42)
    assert pair.limit == 256 << 20


def test_hybrid_mounts_report_both(tmp_path: Path) -> None:
    v1_tree(tmp_path, limit=str(512 << 20), hierarchical=V1_UNLIMITED)
    write(tmp_path, "proc/42/cgroup",
          "4:memory:/docker/abc\n0::/user.slice/app.scope\n")
    mountinfo = (tmp_path / "proc/42/mountinfo").read_text()
    write(tmp_path, "proc/42/mountinfo",
          mountinfo + "30 23 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    write(tmp_path, "sys/fs/cgroup/unified/user.slice/app.scope/memory.max", f"{128 << 20}\n")
    write(tmp_path, "sys/fs/cgroup/unified/user.slice/app.scope/memory.current", f"{64 << 20}\n")
    pairs = {p.source: p for p in _limits.cgroup_pairs(str(tmp_path), 42)}
    assert pairs["cgroup-v2"].limit == 128 << 20
    assert pairs["cgroup-v1"].limit == 512 << 20


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    assert _limits.cgroup_pairs(str(tmp_path), 42) == []


def test_rlimits_only_finite_soft_limits(tmp_path: Path) -> None:
    write(tmp_path, "proc/42/limits",
          "Limit                     Soft Limit           Hard Limit           Units\n"
          "Max data size             unlimited            unlimited            bytes\n"
          "Max address space         1073741824           unlimited            bytes\n"
          "Max open files            1024                 4096                 files\n")
    assert _limits.rlimits(str(tmp_path), 42) == {"as": 1 << 30, "nofile": 1024}


def test_meminfo_and_psi(tmp_path: Path) -> None:
    write(tmp_path, "proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert _limits.meminfo(str(tmp_path)) == {"MemTotal": 16_000_000 * 1024,
                                              "MemAvailable": 8_000_000 * 1024}
    write(tmp_path, "proc/pressure/memory",
          "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\n"
          "full avg10=0.25 avg60=0.00 avg300=0.00 total=1\n")
    assert _limits.psi_memory(str(tmp_path / "proc/pressure/memory")) == {"some": 1.5,
                                                                          "full": 0.25}
    assert _limits.psi_memory(str(tmp_path / "missing")) == {}


def test_the_tightest_pair_wins_and_names_its_source() -> None:
    info = {"MemTotal": 16 << 30, "MemAvailable": 8 << 30}
    cg = [_limits.LimitPair("cgroup-v2", 300 << 20, 400 << 20)]
    e = _limits.limit_pairs(rss=100 << 20, vms=900 << 20, data=50 << 20, configured=1 << 30,
                            info=info, cgroups=cg, limits={"as": 1 << 30})
    assert e.source == "rlimit-as" and e.limit == 1 << 30  # 0.88 beats cgroup's 0.75
    e = _limits.limit_pairs(rss=100 << 20, vms=1, data=1, configured=120 << 20, info=info,
                            cgroups=cg, limits={})
    assert e.source == "configured" and round(e.ratio, 3) == round(100 / 120, 3)


def test_available_memory_counts_other_processes() -> None:
    """A small host on a machine that others have nearly filled is under pressure."""
    e = _limits.limit_pairs(rss=100 << 20, vms=0, data=0, configured=None,
                            info={"MemTotal": 16 << 30, "MemAvailable": 20 << 20},
                            cgroups=[], limits={})
    assert e.source == "available" and e.ratio > 0.8


def test_this_machine_is_read_without_error() -> None:
    """The real /proc and /sys of the machine the tests run on."""
    pairs = _limits.cgroup_pairs("/", "self")
    assert all(p.limit > 0 and p.usage >= 0 for p in pairs)
    info = _limits.meminfo()
    assert info["MemTotal"] > 0


def test_cgroup_v2_memory_pressure_file(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf_max="max", parent_max="max")
    write(tmp_path, "sys/fs/cgroup/user.slice/app.scope/memory.pressure",
          "some avg10=12.50 avg60=0.00 avg300=0.00 total=1\n")
    layout = (_limits.cgroup_membership(str(tmp_path), 42), _limits.mounts(str(tmp_path), 42))
    path = _limits.cgroup_psi_path(str(tmp_path), layout)
    assert path is not None and path.endswith("app.scope/memory.pressure")
    assert _limits.psi_memory(path) == {"some": 12.5}
