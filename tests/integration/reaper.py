"""The parent most hosts have: start the command and reap it the moment it exits.

``python reaper.py CMD ...`` runs CMD as its child with ``subprocess.Popen(...).wait()``
(stdin, stdout and stderr inherited) and exits with its status the way a shell reports
it: the exit code, or 128 + N when signal N killed it. The watchdog of a host started
this way loses every race for the zombie, as it does under a shell, systemd or a
container runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys

if __name__ == "__main__":
    code = subprocess.Popen(sys.argv[1:]).wait()
    if os.getpid() == 1:
        # The init of a pid namespace, as `docker run --init` gives a container: reap
        # the orphans (the host's watchdog) until none is left, then end the namespace.
        while True:
            try:
                os.wait()
            except ChildProcessError:
                break
    sys.exit(128 - code if code < 0 else code)
