"""Run one workload; print ``wall_s maxrss_kib returncode cpu_s busy_s`` on stdout.

measure.py starts this tiny process between the harness and each workload.
Linux charges a child's ``ru_maxrss`` with the peak RSS of whatever process
spawned it (``posix_spawn``/``vfork`` exec records the parent's high-water
mark), so a workload started straight from the harness, which has generated
data, would report the harness's peak. Started from here, the floor is this
process's ~9 MiB. ``cpu_s`` is the workload's user+system time, ``busy_s`` the
whole machine's busy CPU time over the same span (from /proc/stat), so the
harness can tell how much CPU other processes took. Keep the imports to os,
sys and time.
"""

import os
import sys
import time


def busy_seconds() -> float:
    """Busy CPU time of the whole machine since boot (0.0 where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    argv = sys.argv[1:]
    devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]  # stdout: data nobody reads
    busy0 = busy_seconds()
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=devnull)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    busy = busy_seconds() - busy0
    rc = os.waitstatus_to_exitcode(status)
    print(f"{wall:.6f} {usage.ru_maxrss} {rc} {usage.ru_utime + usage.ru_stime:.3f} {busy:.3f}")


if __name__ == "__main__":
    main()
