"""The host's figures read from /proc agree with psutil's, which the watchdog no longer
loads to read them."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from watchdog_core._sampling import HostProbe, split_cmdline


def test_dump_figures_agree_with_psutil() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; x = b'a' * (20 << 20); "
                              "sys.stdin.read()", "--flag", "two words"],
                             stdin=subprocess.PIPE)
    try:
        process = psutil.Process(child.pid)
        deadline = time.monotonic() + 30  # a guard against hanging, not a timing claim
        while process.memory_info().rss < 20 << 20:  # until the child holds its 20 MiB
            assert time.monotonic() < deadline
            time.sleep(0.01)
        probe = HostProbe(child.pid)
        ours = probe.expensive_sample()
        uss = process.memory_full_info().uss
        cpu = sum(process.cpu_times()[:2])
        assert ours["uss"] is not None and abs(ours["uss"] - uss) < 1 << 20
        assert ours["fds"] == process.num_fds()
        assert ours["cpuSeconds"] is not None and abs(ours["cpuSeconds"] - cpu) < 0.05
        assert probe.cmdline() == process.cmdline()
    finally:
        child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()


def test_a_rewritten_title_is_split_into_words_as_psutil_splits_it() -> None:
    assert split_cmdline("a\0b c\0") == ["a", "b c"]
    assert split_cmdline("worker: serve --token x") == ["worker:", "serve", "--token", "x"]
    assert split_cmdline("one arg\0") == ["one", "arg"]
    assert split_cmdline("") == []
