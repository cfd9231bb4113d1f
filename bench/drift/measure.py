"""Runs a command; writes its wall time, peak RSS and exit status to a JSON file.

Usage: python3 bench/drift/measure.py RESULT.json COMMAND [ARGS...]

On Linux a process's peak RSS (ru_maxrss from wait4) starts from the RSS of the process it was forked from, so
bench/drift/run.py, which holds the generated data, starts each timed command through this small launcher: the
command's figure is then its own (never below this launcher's few MiB).
"""

import json
import os
import sys
import time


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump({"wall_seconds": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "exit": code}, f)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
