"""Create a memory cgroup of our own for a workload, and always remove it.

``memory_cgroup(name)`` makes ``trace-reclaim-test-<pid>-<name>`` at the root
of the hierarchy the memory controller is on (cgroup v1 ``memory`` on a
hybrid machine, else cgroup v2), yields a ``Cgroup`` to set limits on, start
or attach child processes in and read counters from, and on every exit path
(return, exception, Ctrl-C, SIGTERM) kills the tasks inside, waits for them
and removes the directory.

Safety rules, which the code enforces rather than documents:

- Only directories named ``trace-reclaim-test-*`` are created, written to or
  removed; ``Cgroup`` refuses any other path.
- Only tasks we started (``popen``) or named ourselves (``attach`` of a child
  pid) are moved in; the calling process itself is never moved (moving it
  back out would mean writing a cgroup that is not ours).
- Nothing outside our directory is written, with one opt-in exception for
  throwaway VM guests: on cgroup v2 a child has memory.* files only when the
  root's ``cgroup.subtree_control`` has ``+memory``.  If it does not,
  ``memory_cgroup`` refuses unless ``enable_v2_memory=True`` (the VM tier),
  which adds it and removes it again at exit.

After SIGKILL nothing can run; ``remove_stale()`` removes empty cgroups of
ours whose creating process is gone.
"""

import contextlib
import errno
import os
import re
import signal
import subprocess
import time

from trace_reclaim import cgroupfs
from trace_reclaim.examples import _proc, _restore

__all__ = ["PREFIX", "Cgroup", "memory_cgroup", "remove_stale", "find_memory_mount"]

PREFIX = "trace-reclaim-test-"
_NAME_RX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_OURS_RX = re.compile(r"^%s(\d+)-" % re.escape(PREFIX))


def find_memory_mount(version=None):
    """Return the CgroupMount the memory controller is on (optionally of ``version``).

    Raise WorkloadError with a hint when there is none.
    """
    mounts = cgroupfs.cgroup_mounts()
    if version == cgroupfs.V2:
        m = cgroupfs.unified_mount(mounts)
        if m is None:
            raise _restore.WorkloadError("no cgroup2 hierarchy is mounted",
                                         "mount -t cgroup2 none /sys/fs/cgroup")
        return m
    m = cgroupfs.memory_mount(mounts)
    if m is None or (version is not None and m.version != version):
        where = " on cgroup v%d" % version if version else ""
        raise _restore.WorkloadError(
            "the memory controller is not mounted%s" % where,
            "check /proc/cgroups and /proc/self/mountinfo; CONFIG_MEMCG must be on")
    return m


def _is_ours(path):
    return os.path.basename(path.rstrip("/")).startswith(PREFIX)


class Cgroup:
    """A cgroup directory we created: its path, version, tasks and counters."""

    def __init__(self, path, version, mount):
        if not _is_ours(path):
            raise ValueError("refusing a cgroup that is not ours: %s" % path)
        self.path = path
        self.version = version
        self.mount = mount
        self.children = []   # Popen objects we started inside

    # -- identity -------------------------------------------------------------
    @property
    def rel(self):
        """The path inside its hierarchy ("/trace-reclaim-test-..."), as /proc/PID/cgroup shows."""
        return "/" + os.path.relpath(self.path, self.mount)

    @property
    def id(self):
        """The cgroup id (kernfs node id = directory inode on 64-bit)."""
        return os.stat(self.path).st_ino

    # -- writes, our directory only --------------------------------------------
    def _write(self, name, value):
        _proc.write_value(os.path.join(self.path, name), value)

    def set_limit(self, nbytes):
        """Set the hard limit: v1 memory.limit_in_bytes, v2 memory.max."""
        self._write("memory.limit_in_bytes" if self.version == cgroupfs.V1 else "memory.max",
                    int(nbytes))

    def set_high(self, nbytes):
        """Set v2 memory.high (throttling limit); v1 has none."""
        if self.version != cgroupfs.V2:
            raise _restore.WorkloadError("memory.high exists on cgroup v2 only",
                                         "use set_limit() on cgroup v1")
        self._write("memory.high", int(nbytes))

    def set_low(self, nbytes):
        """Set v2 memory.low (best-effort protection)."""
        if self.version != cgroupfs.V2:
            raise _restore.WorkloadError("memory.low exists on cgroup v2 only",
                                         "use a cgroup v2 machine")
        self._write("memory.low", int(nbytes))

    def set_swappiness(self, value):
        """Set v1 memory.swappiness (v2 uses the global vm.swappiness)."""
        if self.version == cgroupfs.V1:
            self._write("memory.swappiness", int(value))

    def attach(self, pid):
        """Move task ``pid`` (a child we started, never ourselves) into this cgroup."""
        if pid == os.getpid():
            raise ValueError("refusing to move the calling process into a test cgroup")
        self._write("cgroup.procs", int(pid))

    def popen(self, argv, **kwargs):
        """Start ``argv`` inside this cgroup (it joins before exec); return the Popen.

        The child writes its own pid to cgroup.procs between fork and exec,
        so it never allocates outside.  It is killed at exit if still running.
        """
        procs = os.path.join(self.path, "cgroup.procs")

        def join():
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")   # "0" is the writing task itself
            finally:
                os.close(fd)
        p = subprocess.Popen(argv, preexec_fn=join, **kwargs)
        self.children.append(p)
        return p

    # -- reads -----------------------------------------------------------------
    def pids(self):
        """The processes inside (cgroup.procs)."""
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def counters(self):
        """Snapshot memory accounting (see cgroupfs.read_memory_counters)."""
        return cgroupfs.read_memory_counters(self.path, self.version)

    # -- teardown --------------------------------------------------------------
    def kill_all(self, timeout=10.0):
        """SIGKILL every task inside and wait until the cgroup is empty.

        v2 has cgroup.kill (since Linux 5.14, "cgroup: introduce
        cgroup.kill"), which also catches tasks forking at that moment; v1
        loops over cgroup.procs until it stays empty.
        """
        kill_file = os.path.join(self.path, "cgroup.kill")
        if self.version == cgroupfs.V2 and os.path.exists(kill_file):
            _proc.write_value(kill_file, 1)
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for p in self.children:
                if p.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=0.05)
            if not pids:
                break
            if time.monotonic() > deadline:
                raise OSError(errno.EBUSY, "tasks still in %s: %s" % (self.path, pids))
            time.sleep(0.02)
        for p in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))

    def remove(self, timeout=10.0):
        """Kill the tasks inside and rmdir; EBUSY (a dying task) is retried."""
        if not os.path.isdir(self.path):
            return
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _enable_v2_memory(r, mount):
    """Add +memory to the cgroup2 root's subtree_control; undo at exit (VM guests)."""
    ctl = os.path.join(mount.path, "cgroup.subtree_control")
    with open(ctl) as f:
        if "memory" in f.read().split():
            return
    r.undo("-memory in %s" % ctl, _proc.write_value, ctl, "-memory")
    _proc.write_value(ctl, "+memory")


@contextlib.contextmanager
def memory_cgroup(name, version=None, limit_bytes=None, high_bytes=None,
                  enable_v2_memory=False, log=None):
    """Create our memory cgroup ``trace-reclaim-test-<pid>-<name>``; yield a Cgroup.

    ``version`` None picks the hierarchy the memory controller is on.
    ``limit_bytes`` sets the hard limit (v1 limit_in_bytes, v2 memory.max),
    ``high_bytes`` v2 memory.high.  At exit, on every path: tasks inside are
    killed and reaped, the directory removed (and +memory undone if added).
    """
    _restore.require_root()
    if not _NAME_RX.match(name):
        raise ValueError("cgroup name must match %s: %r" % (_NAME_RX.pattern, name))
    with _restore.Restorer(log=log) as r:
        mount = find_memory_mount(version)
        if mount.version == cgroupfs.V2 and "memory" not in mount.controllers:
            raise _restore.WorkloadError(
                "cgroup v2 at %s has no memory controller" % mount.path,
                "the memory controller is bound to cgroup v1 here; use version=None")
        if mount.version == cgroupfs.V2:
            with open(os.path.join(mount.path, "cgroup.subtree_control")) as f:
                enabled = "memory" in f.read().split()
            if not enabled:
                if not enable_v2_memory:
                    raise _restore.WorkloadError(
                        "the cgroup2 root does not delegate memory to its children",
                        "on a throwaway VM pass enable_v2_memory=True (--enable-v2-memory)")
                _enable_v2_memory(r, mount)
        path = os.path.join(mount.path, "%s%d-%s" % (PREFIX, os.getpid(), name))
        cg = Cgroup(path, mount.version, mount.path)
        # Registered before mkdir so a signal between the two still removes it.
        r.undo("rmdir %s" % path, cg.remove)
        os.mkdir(path)
        if limit_bytes is not None:
            cg.set_limit(limit_bytes)
        if high_bytes is not None:
            cg.set_high(high_bytes)
        yield cg


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(log=None):
    """Remove empty ``trace-reclaim-test-<pid>-*`` cgroups whose <pid> is gone.

    Return the paths removed.  Non-empty ones are left alone (something is
    still running in them: look before killing).
    """
    removed = []
    for m in cgroupfs.cgroup_mounts():
        if not (("memory" in m.controllers) or m.version == cgroupfs.V2):
            continue
        try:
            names = os.listdir(m.path)
        except OSError:
            continue
        for n in names:
            match = _OURS_RX.match(n)
            if not match or _pid_alive(int(match.group(1))):
                continue
            path = os.path.join(m.path, n)
            try:
                os.rmdir(path)
                removed.append(path)
                if log:
                    log("removed stale %s" % path)
            except OSError:
                continue
    return removed
