"""The host side: ``start_watchdog()`` and the handle's hot path (README, docs/design.md).

Performance rules (docs/performance.md, measured by benchmarks/run.py):

* ``record``, the recorder and ``mark`` take no lock, make no syscall and log
  nothing: a slot index comes from ``next(itertools.count())`` (atomic under the
  GIL), values are carried forward in one list, and one ``struct.pack_into``
  writes the slot between two 8-byte sequence stores.
* Types are checked with one C-level ``set.issuperset(map(type, ...))``; anything
  unusual (int/float subclasses, numpy scalars, floats in an int column, ints
  beyond int64) drops to a slow path that fixes the layout and retries.
* A stopped, forked or disabled handle keeps the same code path but writes into
  private scratch memory, so the hot path never checks a flag and never raises
  because the watchdog died.

Only stdlib modules load here; psutil, pydantic and filelock belong to the
watchdog process and the CLI.
"""

from __future__ import annotations

import os
import struct
import sys
import time
import warnings

from . import _config, _procfs, _reader, _ring, _writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

    from ._levels import PressureLevel
    from ._lifecycle import HostHooks
    from ._spawn import WatchdogProcess

_HEADER_WORDS = _ring.HEADER_WORDS
_SLOT_WORDS = _ring.SLOT_WORDS
_KIND_RECORD = _ring.KIND_RECORD
_KIND_MARK = _ring.KIND_MARK
_LABEL_CACHE_SIZE = 256

_current: Watchdog | None = None
_fork_hook_installed = False


def _bind_record(w: _writer.RingWriter) -> Callable[..., None]:
    """Build the handle's ``record``: a closure, so a call pays no method binding and
    reads the writer's fixed parts from cells (docs/performance.md)."""
    counter = w.counter
    slot_count = w.slot_count
    header_words, slot_words, kind = _HEADER_WORDS, _SLOT_WORDS, _KIND_RECORD

    def record(**stats: int | float) -> None:
        """Record numeric session stats; one ring slot with the full current state.

        Values are ints (stored as int64, exact) or floats (float64, NaN and infinities
        included: stored and shown, never refused); bools count as ints. A non-number
        raises ``TypeError``, a 33rd distinct name ``ValueError``.
        """
        i = next(counter)
        s = header_words + (i % slot_count) * slot_words
        words = w.words
        words[s] = 2 * i + 1
        pack, mask, count, columns = w.layout
        names = tuple(stats)
        if names == columns:
            # These names are every column, in order: pack straight from the arguments
            # (struct checks the types) and carry them forward only once that worked.
            try:
                pack(w.buf, (s << 3) + 8, mask, count, kind, *stats.values())
                w.last = stats  # the carried state, unpacked only when a slow path needs it
            except struct.error:
                w.write_checked(s, i, names, tuple(stats.values()), kind)
        else:
            w.write_checked(s, i, names, tuple(stats.values()), kind)
        words[s] = 2 * i + 2

    return record


class Watchdog:
    """Handle of one watched session, returned by :func:`start_watchdog`.

    All methods are safe to call after :meth:`stop`, after the watchdog died, in a
    forked child, or on a disabled handle: they then do nothing (``dump`` returns
    ``None``).
    """

    def __init__(self, config: _config.SessionConfig, writer: _writer.RingWriter,
                 shm_name: str | None, process: WatchdogProcess | None,
                 disabled_reason: str | None = None) -> None:
        self.session_id = config.session_id
        # The folder dumps go to: the one asked for, or the fallback start_watchdog()
        # chose and warned about (docs/design.md, "Where files go").
        self.diagnostics_dir = config.diagnostics_dir
        # No folder at all could be used; start_watchdog() has said so once.
        self._dir_refused = False
        self.shm_name = shm_name
        self.disabled_reason = disabled_reason
        self._config = config
        self._w = writer
        self.record: Callable[..., None] = _bind_record(writer)
        self._process = process
        self._pid = os.getpid()
        self._stopped = False
        self._labels: dict[str, bytes] = {}
        self._hooks: HostHooks | None = None

    # -- hot path ----------------------------------------------------------------------

    def recorder(self, *names: str) -> Callable[..., None]:
        """A fast recorder for fixed stat names: ``rec = wd.recorder("a", "b"); rec(1, 2)``.

        The layout is decided here, once (structlog's lesson); each call then writes
        one slot, exactly like ``record(a=1, b=2)``. Fastest when its names are all the
        session's stats, in the order they were first recorded.
        """
        if not names:
            raise ValueError("recorder() needs at least one stat name")
        if len(set(names)) != len(names):
            raise ValueError(f"recorder() got a stat name twice: {names!r}")
        w = self._w
        w.columns_for(names)
        count = len(names)
        owns_from_zero = w.runs.get(names) == (0, count)
        slot_count = w.slot_count
        counter = w.counter
        header_words, slot_words, kind = _HEADER_WORDS, _SLOT_WORDS, _KIND_RECORD

        def record_positional(*new: int | float) -> None:
            i = next(counter)
            s = header_words + (i % slot_count) * slot_words
            words = w.words
            words[s] = 2 * i + 1
            pack, mask, n, _ = w.layout
            if owns_from_zero and n == count:
                try:  # as in record(): struct checks types and count, values follow
                    pack(w.buf, (s << 3) + 8, mask, n, kind, *new)
                    w.last = new
                except struct.error:
                    w.write_checked(s, i, names, new, kind)
            else:
                w.write_checked(s, i, names, new, kind)
            words[s] = 2 * i + 2

        return record_positional

    def mark(self, label: str) -> None:
        """Say what the host is doing now (``"tool:shell"``); the dump's ``lastActivity``.

        Labels are cut to 256 UTF-8 bytes. Choose them yourself: they land in dumps.
        """
        raw = self._labels.get(label)
        if raw is None:
            if not isinstance(label, str):
                raise TypeError(f"mark() takes a str label, got {type(label).__name__}")
            raw = _ring.encode_label(label)
            if len(self._labels) < _LABEL_CACHE_SIZE:
                self._labels[label] = raw
        w = self._w
        w.commit(_KIND_MARK, raw)
        w.set_label(raw)

    # -- reading the watchdog's status -------------------------------------------------

    @property
    def level(self) -> PressureLevel:
        """The pressure level the watchdog last graded (a memory read)."""
        from ._levels import PressureLevel

        status = _reader.read_status(self._w.buf, self._w.words) if self._w.attached else None
        return PressureLevel.from_name(status.level) if status else PressureLevel.NORMAL

    def status(self) -> dict[str, object] | None:
        """The watchdog's last status block: level, ratio, rss, heapLimit, limitSource,
        growthBytesPerSecond, secondsToLimit (bytes, seconds); None before its first
        sample."""
        if not self._w.attached:
            return None
        status = _reader.read_status(self._w.buf, self._w.words)
        return status.as_dict() if status else None

    def status_line(self, *, always: bool = False) -> str:
        """The status for a status bar, such as ``mem 1.3 GiB / 2.0 GiB (65%) +40 MiB/min,
        ~14 min to limit``; "" at the normal level unless ``always``, and before the
        watchdog's first sample. A memory read and a format: cheap enough for every turn."""
        from ._statusline import render

        status = _reader.read_status(self._w.buf, self._w.words) if self._w.attached else None
        return render(status, always=always)

    @property
    def watchdog_alive(self) -> bool:
        """True while the watchdog process runs (and reaps it once it has exited)."""
        return self._process is not None and self._w.attached and self._process.alive()

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None and not self._stopped and self._w.attached

    # -- actions -----------------------------------------------------------------------

    def dump(self, reason: str = "manual", timeout: float = 10.0) -> Path | None:
        """Ask the watchdog for a dump now; returns its path.

        ``None`` when no dump can be written: a disabled or stopped handle, a dead
        watchdog, or no answer within ``timeout`` seconds (the file may still appear).
        """
        if not isinstance(reason, str):
            raise ValueError(f"reason must be a str, got {reason!r}")
        if not self.watchdog_alive or self._process is None:
            return None
        w = self._w
        w.set_request_reason(reason)
        request = int(w.words[_ring.W_REQUEST]) + 1
        w.words[_ring.W_REQUEST] = request
        self._process.wake()
        deadline = time.monotonic() + timeout
        while int(w.words[_ring.W_REQUEST_DONE]) < request:
            if time.monotonic() >= deadline or not self._process.alive():
                return None
            time.sleep(0.002)
        name = _reader.read_dump_name(w.buf)
        if not name:
            return None
        from pathlib import Path

        return Path(self.diagnostics_dir) / name

    def report_to_sentry(self, dsn: str | None = None) -> bool:
        """Have the watchdog report to Sentry from now on (docs/sentry.md): to ``dsn``,
        else to the host's own Sentry client as it is configured now (for a host that
        calls ``sentry_sdk.init()`` after ``start_watchdog()``), else to ``$SENTRY_DSN``.
        True once the watchdog has been told; False for a disabled or stopped handle,
        or when no DSN is found (one RuntimeWarning says so)."""
        from ._sentry_host import FRAME, check_dsn, encode, settings

        if dsn is not None:
            dsn = check_dsn(dsn, "dsn")
        if not self.enabled or self._process is None:
            return False
        found = settings(dsn, True, self._config.sentry_pressure, os.environ)
        if found is None:
            return False
        self._config.sentry = found  # a restarted watchdog is told at its spawn
        if self._process.ctl_fd < 0 or not self.watchdog_alive:
            return False  # a restarted one will be told
        # A watchdog that died since has no reader on the pipe: the write would raise
        # SIGPIPE, which a host that restored its default action would die of.
        import signal

        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        try:  # one write under PIPE_BUF: never interleaved with a wake-up byte
            os.write(self._process.ctl_fd, FRAME + encode(found).encode() + b"\n")
        except OSError:
            return False
        finally:
            _drop_pending_sigpipe(blocked)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """End the session cleanly: no postmortem, the watchdog exits, the segment
        is removed. Idempotent."""
        global _current
        if self._stopped:
            return
        self._stopped = True
        if _current is self:
            _current = None
        if os.getpid() != self._pid:  # a forked child: the parent's session is not ours
            return
        w, hooks = self._w, self._hooks
        if w.attached:
            w.set_flag(_ring.FLAG_STOPPED)
        if hooks is not None:
            hooks.quiesce(timeout)  # no heartbeat, no restart, no stack signal asked for
        process = self._process
        if process is not None:
            process.close_channel()
            if not process.wait(timeout):
                process.reap_later()  # it is finishing: no zombie once it has
        if hooks is not None:
            # Only once the watchdog has gone: one still running could send the stack
            # signal after the handler came down, and the host would die of it.
            hooks.uninstall()
        if self.shm_name is not None:
            from ._shm import unlink_segment

            unlink_segment(self.shm_name, w.lock_fd)  # before detach(): while we hold it
        w.detach()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.stop()
        # With an exception the session stays open: if it ends the host, the
        # excepthook names it and the watchdog writes the postmortem; if it is
        # caught further out, the host's later exit decides.

    # -- process lifecycle ---------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """In a forked child: write nothing more into the parent's ring (docs/design.md)."""
        global _current
        if _current is self:
            _current = None
        self._stopped = True
        if self._hooks is not None:
            self._hooks.after_fork_in_child()
        if self._process is not None:
            self._process.close_channel()  # our copy of the write end: EOF stays the parent's
            self._process.disown()
        self._w.detach()

def _run_offer() -> str | None:
    """The ring ``watchdog-core run`` made for this very process, if it offered one:
    the variable is inherited by every descendant, and only the pid it names may
    take it (docs/run.md)."""
    pid, _, name = os.environ.get("WATCHDOG_CORE_RUN_OFFER", "").partition(":")
    return name if name and pid == str(os.getpid()) else None


def _join_run(config: _config.SessionConfig, name: str) -> Watchdog | None:
    """Write into the ring ``run`` holds for us instead of starting a session of our
    own: one session, one file, with ``run``'s exact exit status in it. None when the
    offer cannot be taken (gone, taken already, not ours): a session of our own then."""
    from . import _shm, _spawn

    try:
        mapping = _shm.open_segment(name, writable=True)
    except (OSError, ValueError):
        return None
    try:
        header = _reader.RingImage(memoryview(mapping))
    except (OSError, ValueError):
        mapping.close()
        return None
    with header:
        ours = header.host_pid == os.getpid()
        slots, theirs, directory = header.slot_count, header.config, header.diagnostics_dir
        session_id, watchdog_pid = header.session_id, header.watchdog_pid
    writer = _writer.RingWriter(mapping, slots)
    if not ours or writer.words[_ring.W_JOINED] or watchdog_pid != os.getppid():
        writer.detach()
        return None
    # Limits from both sides apply, the tightest winning; what only a Python host can
    # do (hangs, the stack signal, extras) is ours.
    limits = [x for x in (theirs.memory_limit, config.memory_limit) if x]
    merged = _ring.RingConfig(
        min(theirs.soft, config.soft), min(theirs.hard, config.hard),
        min(theirs.critical, config.critical), min(limits) if limits else None,
        theirs.dump_cooldown, theirs.max_dumps,
        config.hang_after or theirs.hang_after, config.idle_after or theirs.idle_after,
        True, config.large_history_share, config.stack_signal,
        theirs.max_files, theirs.max_bytes, config.extras)
    writer.buf[_ring.CONFIG_AT : _ring.CONFIG_AT + _ring.CONFIG.size] = merged.pack()
    writer.words[_ring.W_JOINED] = os.getpid()  # last: run re-reads the config now
    config.session_id, config.diagnostics_dir = session_id, directory
    config.restart = False  # run is our parent: nobody to restart
    handle = Watchdog(config, writer, name, _spawn.ParentWatchdog(watchdog_pid))
    from ._lifecycle import HostHooks

    handle._hooks = HostHooks(handle)
    try:
        handle._hooks.install()
    except Exception:  # as in start_watchdog(): never raise for the host's environment
        handle.stop()
        return None
    return handle


def _after_fork_in_child() -> None:
    if _current is not None:
        _current._after_fork_in_child()


def _host_identity() -> tuple[int, str]:
    """(start time in clock ticks since boot, boot id): with the pid, they name this
    process uniquely across pid reuse and reboots. Zeros where /proc is missing."""
    ticks = 0
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        pass
    return ticks, _procfs.boot_id()


def _disabled(config: _config.SessionConfig, reason: str, *, warn: bool = True) -> Watchdog:
    if warn:
        warnings.warn(f"watchdog-core disabled: {reason}", RuntimeWarning, stacklevel=3)
    return Watchdog(config, _writer.RingWriter(None, 16), None, None, disabled_reason=reason)


def start_watchdog(
    *,
    session_id: str | None = None,
    diagnostics_dir: str | os.PathLike[str] | None = None,
    interval: float = 0.25,
    memory_limit: int | str | None = None,
    soft: float = 0.50,
    hard: float = 0.65,
    critical: float = 0.80,
    ring_slots: int = 4096,
    max_dumps_per_session: int = 3,
    dump_cooldown: float = 30.0,
    suggestion: str | dict[str, str] | None = None,
    on_pressure: Callable[..., object] | None = None,
    hang_after: float | None = None,
    idle_after: float | None = None,
    include_children: bool = False,
    catch_sigterm: bool = False,
    restart: bool = True,
    stack_signal: int | None = None,
    large_history_share: float = 0.25,
    max_files: int | None = None,
    max_bytes: int | str | None = None,
    extras: tuple[str, ...] | list[str] = (),
    tracemalloc_frames: int | None = None,
    prometheus_textfile_dir: str | os.PathLike[str] | None = None,
    sentry_dsn: str | None = None,
    sentry_reports: bool = False,
    sentry_pressure: bool = False,
) -> Watchdog:
    """Start watching this process; returns the :class:`Watchdog` handle.

    Idempotent within a process: a repeat call returns the running handle, with one
    ``RuntimeWarning`` naming the arguments it ignored when they differ from the first
    call's (an argument left at its default differs from nothing).

    ``session_id`` defaults to the program's name and 6 random hex characters
    (``agent-4f3a2c``). Dumps go to ``diagnostics_dir``, else ``$WATCHDOG_CORE_DIR``,
    else ``$XDG_STATE_HOME/watchdog-core/diagnostics``; a folder refused as unsafe
    (a symlink, another user's, writable by group or others) or unusable gives way to a
    private ``watchdog-core-{uid}`` folder inside it, then to the default state folder,
    with one ``RuntimeWarning`` saying why and where dumps go (``wd.diagnostics_dir``).
    ``memory_limit`` is bytes or a size string, at least 16 MiB.
    ``hang_after``/``idle_after`` (seconds) turn on the
    unresponsive dump; ``catch_sigterm`` notes a SIGTERM in the ring before dying of
    it; ``restart`` starts a new watchdog if the first dies (at most 3 times);
    ``stack_signal`` (default SIGUSR2, 0 for none) is the signal on which the host
    dumps its threads' stacks; ``large_history_share`` is the share of RSS above which
    ``estimatedHistoryBytes`` is a risk; ``max_files``/``max_bytes`` bound the
    directory (default 100 dump sets, 256 MiB, or WATCHDOG_CORE_MAX_FILES/_BYTES).
    ``extras`` (any of ``"stacks"``, ``"tracemalloc"``) asks the host, once per session
    and after the first critical dump is on disk, for every thread's stack and, while
    tracemalloc traces, the top 50 allocation sites, in files beside that dump;
    ``tracemalloc_frames=N`` (1-100; 0 or None: not started) starts tracemalloc with
    N frames unless it traces already (docs/design.md, "Telling the host").
    ``prometheus_textfile_dir`` (else ``$WATCHDOG_CORE_PROMETHEUS_DIR``) has the
    watchdog keep the session's metrics in a ``.prom`` file there for node_exporter's
    textfile collector (docs/fleet.md).
    ``sentry_dsn`` (or ``sentry_reports=True``: the host's own Sentry client's DSN, else
    ``$SENTRY_DSN``; or ``WATCHDOG_CORE_SENTRY=1``) has the watchdog report to Sentry
    what the host's SDK cannot: deaths by signal and hangs, and with
    ``sentry_pressure=True`` hard and critical dumps (docs/sentry.md).
    Bad arguments raise ``ValueError`` naming the
    argument; an environment that cannot host a watchdog (no shared memory, a full
    ``/dev/shm``, an unsupported platform, ``WATCHDOG_CORE_DISABLE=1``) gives a
    disabled handle and one ``RuntimeWarning``, never an exception.
    """
    global _current, _fork_hook_installed
    arguments = dict(locals())  # exactly the parameters: nothing else is bound yet
    # Checked first, even when a session runs: a bad argument is a bug to hear about.
    config = _config.SessionConfig(
        session_id=session_id, diagnostics_dir=diagnostics_dir, interval=interval,
        memory_limit=memory_limit, soft=soft, hard=hard, critical=critical,
        ring_slots=ring_slots, max_dumps_per_session=max_dumps_per_session,
        dump_cooldown=dump_cooldown, suggestion=suggestion,
        on_pressure=on_pressure,
        hang_after=hang_after, idle_after=idle_after, include_children=include_children,
        catch_sigterm=catch_sigterm, restart=restart, stack_signal=stack_signal,
        large_history_share=large_history_share, max_files=max_files, max_bytes=max_bytes,
        extras=extras, tracemalloc_frames=tracemalloc_frames,
        prometheus_textfile_dir=prometheus_textfile_dir,
        sentry_dsn=sentry_dsn, sentry_reports=sentry_reports, sentry_pressure=sentry_pressure,
    )
    if _current is not None and not _current._stopped and _current._pid == os.getpid():
        ignored = _config.differing_arguments(_current._config.arguments, arguments,
                                              start_watchdog.__kwdefaults__ or {})
        if ignored:
            verb = "differs" if len(ignored) == 1 else "differ"
            warnings.warn(
                f"watchdog-core: already watching this process (session "
                f"{_current.session_id}); start_watchdog() returned that handle and ignored "
                f"{', '.join(ignored)}, which {verb} from the first call's (stop() it first "
                "to start another session)", RuntimeWarning, stacklevel=2)
        return _current
    config.arguments = arguments
    if os.environ.get("WATCHDOG_CORE_DISABLE", "") not in ("", "0"):
        return _disabled(config, "WATCHDOG_CORE_DISABLE is set", warn=False)
    if not sys.platform.startswith(("linux", "darwin")):
        return _disabled(config, f"platform {sys.platform} is not supported")
    offer = _run_offer()
    if offer is not None:
        joined = _join_run(config, offer)
        if joined is not None:
            if config.tracemalloc_frames:
                _start_tracemalloc(config.tracemalloc_frames)
            _current = joined
            return joined
    if os.getpid() == 1:
        # Measured (docs/design.md): an init that exits with its child, as tini and
        # `docker run --init` do, does not save the watchdog either.
        warnings.warn(
            "watchdog-core: this process is PID 1 of its container: when it exits, the "
            "kernel kills everything left in the container, the watchdog included, "
            "before a postmortem is written (under an init that exits with its child, "
            "such as tini or `docker run --init`, too). Make `watchdog-core run` the "
            "entrypoint instead, e.g. `watchdog-core run -- python app.py`: it is a "
            "proper init, passes signals on, writes the postmortem and exits with the "
            "program's status, and this session joins it (docs/run.md)",
            RuntimeWarning, stacklevel=2,
        )
    # Where dumps go is settled here, before the ring header (which carries the folder
    # for the watchdog and for orphan recovery) is written: docs/design.md, "Where
    # files go".
    from ._safedir import choose_dir

    requested = config.diagnostics_dir
    chosen, refusals = choose_dir(requested, _config.state_diagnostics_dir(os.environ))
    if chosen is None:
        warnings.warn(f"watchdog-core: no dumps will be written: {'; '.join(refusals)}",
                      RuntimeWarning, stacklevel=2)
    else:
        config.diagnostics_dir = chosen
        if refusals:
            warnings.warn(f"watchdog-core: {'; '.join(refusals)}; dumps go to {chosen}",
                          RuntimeWarning, stacklevel=2)

    if config.sentry_dsn is not None or config.sentry_reports:
        from ._sentry_host import settings

        config.sentry = settings(config.sentry_dsn, config.sentry_reports,
                                 config.sentry_pressure, os.environ)
    from . import _shm, _spawn

    host_pid = os.getpid()
    try:
        shm_name, mapping, lock_fd = _shm.create_segment(
            config.session_id, host_pid, _ring.ring_size(config.ring_slots))
    except (OSError, ValueError) as exc:
        return _disabled(config, "cannot create shared memory segment "
                         f"{_shm.segment_name(config.session_id, host_pid)}: {exc}")
    writer = _writer.RingWriter(mapping, config.ring_slots)
    writer.lock_fd = lock_fd
    ticks, boot_id = _host_identity()
    try:
        writer.init_header(
            session_id=config.session_id, host_pid=host_pid, host_start_ticks=ticks,
            created_unix_ns=time.time_ns(), created_mono_ns=time.monotonic_ns(),
            interval=config.interval, boot_id=boot_id,
            diagnostics_dir=config.diagnostics_dir,
            config=config.ring_config(),
            features=_ring.FEATURE_LOCKS if _shm.LOCKS else 0,
        )
        process = _spawn.spawn_watchdog(shm_name, config)
    except Exception as exc:  # never a segment (or its lock) left behind by a failed start
        _shm.unlink_segment(shm_name, writer.lock_fd)
        writer.detach()
        return _disabled(config, f"cannot start the watchdog process: {exc}")
    handle = Watchdog(config, writer, shm_name, process)
    handle._dir_refused = chosen is None
    from ._lifecycle import HostHooks

    handle._hooks = HostHooks(handle)
    try:
        handle._hooks.install()
    except Exception as exc:  # start_watchdog() never raises for the host's environment
        # A thread limit, a host that broke something we rely on: whatever it was, the
        # watchdog and the segment must not outlive the attempt. stop() ends the
        # watchdog, removes the segment and undoes the part of install() that was done.
        handle.stop()
        return _disabled(config, f"cannot install the session's hooks: {exc!r}")
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True
    if config.tracemalloc_frames:
        _start_tracemalloc(config.tracemalloc_frames)
    _current = handle
    return handle


def _drop_pending_sigpipe(blocked: set[int | signal.Signals]) -> None:
    """Unblock SIGPIPE as it was, discarding one our write raised meanwhile."""
    import signal

    if signal.SIGPIPE not in blocked:
        if signal.SIGPIPE in signal.sigpending():
            signal.sigtimedwait({signal.SIGPIPE}, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _start_tracemalloc(frames: int) -> None:
    """Start tracing allocations with ``frames`` frames, unless the host traces already
    (its own limit stays). Left on at stop(): the host may use it by then. Through the C
    module: ``tracemalloc`` itself imports re, enum, pickle (docs/performance.md)."""
    import _tracemalloc

    if not _tracemalloc.is_tracing():
        _tracemalloc.start(frames)
