"""The pieces of ``ls --watch`` that need no segment: which sessions are gone, how a
row reads, how a frame is cut to the terminal."""

from __future__ import annotations

import os

from watchdog_core.cli import _live, ls


def session(name: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "segment": f"watchdog_core-{name}-1", "uid": os.geteuid(), "user": "me",
        "sessionId": name, "hostPid": 1, "alive": True, "level": "soft", "rss": 64 << 20,
        "limit": 128 << 20, "limitSource": "configured", "ratio": 0.5,
        "growth": 2.0 * (1 << 20), "secondsToLimit": 32.0, "lastRecordAge": 3.0,
        "lastLabel": "tool:shell", "watchdogPid": 2, "watchdogAlive": True,
        "diagnosticsDir": "/tmp",
    }
    row.update(fields)
    return row


def test_a_session_that_went_away_is_gone_for_a_few_refreshes_and_seconds() -> None:
    view = _live.LiveView()
    a, b = session("a"), session("b")
    assert view.refresh([a, b], 0.0) == [a, b]
    shown = view.refresh([b], 1.0)
    assert [r["sessionId"] for r in shown] == ["a", "b"]  # in its place, not at the end
    assert shown[0] == {**a, "gone": True}  # what it last said
    # Kept GONE_SECONDS, however fast the refreshes ...
    for refresh in range(10):
        assert len(view.refresh([b], 1.0 + refresh * 0.1)) == 2
    # ... and GONE_REFRESHES, however slow.
    slow = _live.LiveView()
    slow.refresh([a], 0.0)
    for refresh in range(1, _live.GONE_REFRESHES + 1):
        assert slow.refresh([], refresh * 100.0)[0].get("gone") is True
    assert slow.refresh([], 1000.0) == []
    assert view.refresh([b], 1.0 + _live.GONE_SECONDS + 1) == [b]


def test_a_gone_session_leaves_once_both_its_time_and_refreshes_are_over() -> None:
    view = _live.LiveView()
    view.refresh([session("a")], 0.0)
    kept = [view.refresh([], t) for t in (1.0, 2.0, 3.0, 4.0, 5.5, 6.0)]
    assert [len(rows) for rows in kept] == [1, 1, 1, 1, 1, 0]


def test_a_segment_back_under_its_name_is_shown_as_it_is_now() -> None:
    view = _live.LiveView()
    view.refresh([session("a")], 0.0)
    assert view.refresh([], 1.0)[0]["gone"] is True
    again = session("a", level="normal")
    assert view.refresh([again], 2.0) == [again]


def test_rows_without_a_session_are_not_followed() -> None:
    view = _live.LiveView()
    broken = {"segment": "watchdog_core-x-9", "uid": 0, "user": "root", "error": "bad magic"}
    view.refresh([broken], 0.0)
    assert view.refresh([], 1.0) == []


def test_a_row_of_the_live_view() -> None:
    header, line = ls.session_lines([session("train-7")], _live.WATCH_TABLE)
    assert header.split()[:9] == ["SESSION", "PID", "ALIVE", "LEVEL", "RATIO", "RSS", "MiB",
                                  "LIMIT", "MiB"]
    assert line.split() == ["train-7", "1", "yes", "soft", "0.50", "64", "128", "+2",
                            "MiB/s", "tool:shell,", "3", "s", "ago"]
    gone = ls.session_lines([session("t", gone=True, growth=-3.0 * (1 << 20),
                                     lastLabel=None)], _live.WATCH_TABLE)[1]
    assert gone.split()[2:] == ["gone", "soft", "0.50", "64", "128", "-3", "MiB/s", "3", "s",
                                "ago"]
    quiet = ls.session_lines([session("q", growth=100.0, lastRecordAge=None, lastLabel=None,
                                      level=None, rss=None, limit=None, ratio=None,
                                      uid=os.geteuid() + 1, user="alice")],
                             _live.WATCH_TABLE)[1]
    assert quiet.split()[2:] == ["yes", "-", "-", "-", "-", "flat", "-", "alice"]


def test_a_hostile_label_is_escaped_and_cut() -> None:
    label = "\x1b]0;owned\x07" + "x" * 60
    line = ls.session_lines([session("h", lastLabel=label)], _live.WATCH_TABLE)[1]
    assert "\x1b" not in line and "\x07" not in line
    assert "\\x1b]0;owned\\x07x..., 3 s ago" in line  # 20 characters of it, escaped


def test_the_ls_table_reads_as_it_did() -> None:
    header, line = ls.session_lines([session("train-7", watchdogAlive=False)], ls.LS_TABLE)
    assert header == (f"{'SESSION':<24} {'PID':>7} {'ALIVE':<5} {'LEVEL':<8} "
                      f"{'RSS MiB':>8} {'LIMIT MiB':>9} {'RATIO':>6} {'IDLE s':>7} "
                      f"{'WATCHDOG':>12}  OWNER")
    assert line == (f"{'train-7':<24} {1:>7} {'yes':<5} {'soft':<8} {'64':>8} {'128':>9} "
                    f"{'0.50':>6} {'3':>7} {'2 gone':>12}")


def test_a_frame_is_cut_to_the_terminal() -> None:
    screen = os.terminal_size((10, 24))
    lines = _live.fit(["a" * 20, "\u5bbd" * 8, "e\u0301" * 12, "d"], screen)
    assert lines == ["a" * 10, "\u5bbd" * 5, "e\u0301" * 10, "d"]  # in cells, not characters
    many = _live.fit([str(n) for n in range(10)], os.terminal_size((80, 5)))
    assert many == ["0", "1", "2", "(7 more lines: a taller terminal shows them)"]
