"""Boot a stock kernel in a VM and run a command inside it.

The attach plans that distribution kernels get (fentry, kprobes, headers that
match) cannot be tried on a machine whose own kernel refuses them; a VM gives
them a real kernel.  The VM is virtme-ng (``vng``) on QEMU: the guest runs the
chosen kernel with the host's root filesystem shared read-only over 9p, so
the checkout, its .venv and the host's bcc are the guest's too; the command's
output comes back through a read-write directory shared the same way.

Kernels (``resolve``):
  ``6.1``, ``6.12``          Debian's newest build of that series in the apt
                             lists, generic ``-amd64`` flavour (the cloud
                             flavour has no 9p)
  ``6.12.117+deb12-amd64``   that Debian release
  a file                     a bzImage (modules wherever vng finds them)
  a directory                a kernel build tree (arch/x86/boot/bzImage)

A Debian kernel is prepared once into ``CACHE/RELEASE`` (``prepare``): its
image package is downloaded and extracted, never installed; the modules
virtme-ng's initramfs loads are decompressed (its busybox insmod cannot read
``.ko.xz``) and ``depmod -b`` indexes them; the matching ``linux-headers``
package is installed on the host and linked as ``lib/modules/RELEASE/build``
and ``source``, where bcc looks inside the guest.

Acceleration: KVM when the host lets a stock kernel run under it, else QEMU's
TCG emulation (``vng --disable-kvm``), 10-50x slower, in its single-threaded
mode (see TCG_OPTS).  KVM is tried first
and a failure is seen within seconds (QEMU exits, or the guest never starts
the command); it is then remembered until the host reboots.  Which one ran
is said on stderr.  The VM is always torn down: on timeout, on Ctrl-C, on
any error.  One VM at a time per host (an flock in the cache directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from trace_reclaim.env import UserError

__all__ = ["Kernel", "Result", "resolve", "prepare", "run", "why_failed", "crashed_while_booting",
           "CACHE_ENV",
           "DEFAULT_CACHE",
           "debian_candidates", "bzimage_release"]

CACHE_ENV = "TRACE_RECLAIM_KERNEL_CACHE"
DEFAULT_CACHE = "/var/cache/trace-reclaim/kernels"
# What virtme-ng's initramfs loads (virtme/virtmods.py): the 9p root, the
# virtio transports and console.  Their dependencies come with them.
VIRTME_MODULES = ("fs-9p", "virtio:d00000009v00001AF4", "virtio:d00000003v00001AF4",
                  "virtio_pci", "virtio_mmio", "unix", "i8042", "atkbd")
KVM_START_TIMEOUT_S = 90.0   # a KVM guest starts its command in a few seconds
# Multi-threaded TCG (QEMU's default for an x86 guest) does not keep code that
# one vCPU patches coherent for the other: when the kernel flips a static key
# or places a kprobe (text_poke_bp: int3, sync_core IPIs, then the new bytes),
# the other vCPU can still run its stale translation.  Measured here, QEMU 7.2,
# 6.12 guest, 2 vCPUs, tracepoints enabled and disabled in a loop while both
# vCPUs call kmalloc/kfree: "Oops: int3" in kfree and a panic within seconds
# (it ended a CI run of the tier); with thread=single, 547 rounds in 150 s and
# no oops.  A stale translation also runs without a probe just attached, which
# loses events.  One host thread runs all vCPUs in turn: slower, but exact.
TCG_OPTS = "-accel tcg,thread=single"
TCG_START_TIMEOUT_S = 600.0  # emulated boot: ~40 s here, but the host may be busy
BOOT_CRASH_RETRIES = 1       # see crashed_while_booting()
# A boot whose console said the kernel crashed (a soft lockup, an oops) and
# then said nothing more for this long is over: it is ended then, not at the
# start limit (a soft lockup in udev once held a TCG boot until the limit).
# A soft lockup alone is not enough: an emulated CPU starved by a busy host
# reports one and boots on, so the console must also have gone quiet.
CRASH_SILENCE_S = 90.0
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Kernel:
    """A bootable kernel: its image and where its modules and headers are."""

    release: str                 # what uname -r says in the guest
    image: str                   # bzImage / vmlinuz
    root: Optional[str] = None   # directory holding lib/modules/RELEASE (shared read-only)
    kdir: Optional[str] = None   # a kernel build tree, booted with its own modules
    origin: str = ""             # "Debian linux-image-... 6.12.117-1~deb12u1", a path


@dataclass
class Result:
    """The guest command's outcome, and how the VM ran."""

    returncode: Optional[int]    # None: the command never finished (crash, timeout)
    stdout: str
    stderr: str
    accel: str                   # "kvm" or "tcg"
    boot_s: Optional[float]      # host seconds from QEMU start to the command's start
    wall_s: float
    timed_out: bool = False
    console: str = ""            # vng/QEMU/kernel console output (last 64 KiB)
    notes: List[str] = field(default_factory=list)


# -- running host tools ------------------------------------------------------
def _run(argv: Sequence[str], what: str, hint: str, cwd: Optional[str] = None,
         ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"{what}: {argv[0]} is not installed", hint) from None
    if r.returncode not in ok:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise UserError(f"{what} failed (exit {r.returncode}): " + " / ".join(tail), hint)
    return r


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE


@contextlib.contextmanager
def _flock(path: str, what: str, log: Log) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"vm: waiting for {what} ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- which kernel ------------------------------------------------------------
def _natural(s: str) -> List[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def debian_candidates(series: str, pkgnames: Sequence[str]) -> List[Tuple[str, str]]:
    """(release, image package) of the generic amd64 builds of ``series``, newest first.

    Debian names them linux-image-6.1.0-57-amd64 (bookworm's 6.1) and
    linux-image-6.12.117+deb12-amd64 (its 6.12 backport); a release whose
    signed package is not (yet) there has only the -unsigned one.
    """
    pat = re.compile(rf"linux-image-({re.escape(series)}\.\d+(?:-\d+|\.\d+)?(?:\+deb\d+)?"
                     r"-amd64)(-unsigned)?")
    best: Dict[str, str] = {}
    for name in pkgnames:
        m = pat.fullmatch(name)
        if not m:
            continue
        rel = m.group(1)
        if rel not in best or not m.group(2):   # the signed package, when there is one
            best[rel] = name
    return sorted(best.items(), key=lambda kv: _natural(kv[0]), reverse=True)


def _apt_show(pkg: str) -> bool:
    r = subprocess.run(["apt-cache", "show", pkg], capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def _debian_newest(series: str) -> Tuple[str, str]:
    r = _run(["apt-cache", "pkgnames", f"linux-image-{series}."], "apt-cache pkgnames",
             "run apt-get update (bootstrap.sh does)", ok=(0, 1))
    for rel, pkg in debian_candidates(series, r.stdout.split()):
        if _apt_show(f"linux-headers-{rel}"):
            return rel, pkg
    raise UserError(f"no Debian linux-image-{series}.*-amd64 with matching headers in "
                    "the apt lists",
                    "run apt-get update; Debian 12 has 6.1 in bookworm and 6.12 in "
                    "bookworm-backports / bookworm-updates")


def bzimage_release(path: str) -> Optional[str]:
    """The release string an x86 bzImage carries (boot protocol 2.00+ header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x210)
            if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
                return None
            off = int.from_bytes(head[0x20E:0x210], "little") + 0x200
            f.seek(off)
            text = f.read(256)
    except OSError:
        return None
    rel = text.split(b" ", 1)[0].split(b"\0", 1)[0].decode("ascii", "replace")
    return rel or None


def _rootfs_of(image: str, release: str) -> Optional[str]:
    """The directory above ``image`` holding lib/modules/RELEASE (vng's rule)."""
    d = os.path.dirname(os.path.abspath(image))
    while d != "/":
        if os.path.isdir(os.path.join(d, "lib/modules", release)):
            return d
        d = os.path.dirname(d)
    return None


def resolve(spec: str, log: Log = _stderr, debug_info: bool = False) -> Kernel:
    """Turn ``spec`` into a bootable Kernel, preparing a Debian one if needed.

    ``debug_info``: a Debian kernel's debug-info vmlinux too (for drgn); a
    build tree has its own vmlinux.
    """
    if os.path.isdir(spec):
        image = os.path.join(spec, "arch/x86/boot/bzImage")
        if not os.path.isfile(image):
            raise UserError(f"{spec} is a directory without arch/x86/boot/bzImage",
                            "give a built kernel tree (make bzImage modules), a bzImage, "
                            "or a Debian series such as 6.12")
        rel_file = os.path.join(spec, "include/config/kernel.release")
        try:
            with open(rel_file) as f:
                rel = f.read().strip()
        except OSError:
            rel = bzimage_release(image) or ""
        return Kernel(rel, image, kdir=os.path.abspath(spec), origin=os.path.abspath(spec))
    if os.path.isfile(spec):
        found = bzimage_release(spec)
        if found is None:
            raise UserError(f"{spec} is not an x86 bzImage (no HdrS boot header)",
                            "give a vmlinuz/bzImage, a build tree or a Debian series")
        return Kernel(found, os.path.abspath(spec), root=_rootfs_of(spec, found),
                      origin=os.path.abspath(spec))
    if re.fullmatch(r"\d+\.\d+", spec):
        rel, pkg = _debian_newest(spec)
        return prepare(rel, pkg, log=log, debug_info=debug_info)
    if re.fullmatch(r"\d+\.\d+\.[\w.+-]+-amd64", spec):
        pkg = f"linux-image-{spec}"
        if not _apt_show(pkg):
            pkg += "-unsigned"
            if not _apt_show(pkg):
                raise UserError(f"no Debian package linux-image-{spec}[-unsigned]",
                                "run apt-get update, or give a series such as 6.12")
        return prepare(spec, pkg, log=log, debug_info=debug_info)
    raise UserError(f"unknown kernel {spec!r}",
                    "give a Debian series (6.1, 6.12), a Debian release "
                    "(6.12.117+deb12-amd64), a bzImage or a kernel build tree")


# -- preparing a Debian kernel -------------------------------------------------
def _installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                       text=True)
    return "install ok installed" in r.stdout


def _apt_install(pkgs: Sequence[str], log: Log) -> None:
    missing = [p for p in pkgs if not _installed(p)]
    if not missing:
        return
    log(f"vm: installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *missing], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise UserError(f"apt-get install {' '.join(missing)} failed: "
                        + " / ".join(r.stderr.strip().splitlines()[-3:]),
                        "run apt-get update, and run as root")


def _headers_common(release: str) -> Optional[str]:
    """The -common headers directory linux-headers-RELEASE depends on."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", f"linux-headers-{release}"],
                       capture_output=True, text=True)
    for dep in r.stdout.split(","):
        name = dep.strip().split(" ", 1)[0]
        if name.startswith("linux-headers-") and name.endswith("-common"):
            d = "/usr/src/" + name
            if os.path.isdir(d):
                return d
    return None


def _decompress_boot_modules(root: str, release: str) -> int:
    """Decompress the modules virtme's initramfs loads, with their dependencies."""
    done = 0
    for alias in VIRTME_MODULES:
        r = subprocess.run(["modprobe", "-d", root, "-S", release, "--show-depends", alias],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[0] != "insmod":
                continue
            path = parts[1]
            tool = {".xz": ["xz", "-d", "-f"], ".zst": ["zstd", "-d", "-f", "-q", "--rm"],
                    ".gz": ["gzip", "-d", "-f"]}.get(os.path.splitext(path)[1])
            if tool and os.path.exists(path):
                _run([*tool, path], f"decompressing {path}", "install xz-utils / zstd")
                done += 1
    return done


def _debug_vmlinux(release: str, image_pkg: str, moddir: str, log: Log) -> None:
    """Put the debug-info vmlinux of Debian's ``image_pkg`` at MODDIR/vmlinux.

    Where drgn looks for it (/lib/modules/RELEASE/vmlinux in the guest).  The
    ``-dbg`` package is ~1 GB; only the one file is taken out of it (tar stops
    at it) and the package is deleted.
    """
    dest = os.path.join(moddir, "vmlinux")
    if os.path.isfile(dest):
        return
    t0 = time.monotonic()
    pkg = f"{image_pkg}-dbg"
    dl = os.path.join(moddir, ".download-dbg")
    shutil.rmtree(dl, ignore_errors=True)
    os.makedirs(dl)
    try:
        log(f"vm: fetching the debug-info vmlinux from {pkg} (for drgn)")
        _run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", pkg],
             f"apt-get download {pkg}", "run apt-get update; check the apt sources", cwd=dl)
        debs = [os.path.join(dl, f) for f in os.listdir(dl) if f.endswith(".deb")]
        member = f"./usr/lib/debug/boot/vmlinux-{release}"
        # tar --occurrence stops reading at the file; dpkg-deb then sees a
        # closed pipe, which is expected: the file is checked instead.
        subprocess.run(f"dpkg-deb --fsys-tarfile {shlex.quote(debs[0])} | "
                       f"tar -x -C {shlex.quote(dl)} --occurrence=1 {shlex.quote(member)}",
                       shell=True, capture_output=True)
        got = os.path.join(dl, member)
        if not os.path.isfile(got):
            raise UserError(f"{pkg} has no {member[1:]}",
                            "drgn needs the kernel's debug info; check the package")
        os.replace(got, dest)
    finally:
        shutil.rmtree(dl, ignore_errors=True)
    log(f"vm: debug-info vmlinux ready in {time.monotonic() - t0:.0f}s")


def prepare(release: str, image_pkg: str, log: Log = _stderr,
            cache: Optional[str] = None, debug_info: bool = False) -> Kernel:
    """Download, extract and set up Debian's ``image_pkg`` (idempotent).

    ``debug_info`` also fetches the debug-info vmlinux drgn reads
    (``_debug_vmlinux``).
    """
    if not release.endswith("-amd64"):
        raise UserError(f"{release}: only amd64 kernels boot here",
                        "use the generic -amd64 flavour")
    base = cache or cache_dir()
    d = os.path.join(base, release)
    image = os.path.join(d, "boot", f"vmlinuz-{release}")
    moddir = os.path.join(d, "lib/modules", release)
    stamp = os.path.join(d, ".prepared")
    headers = f"linux-headers-{release}"
    with _flock(os.path.join(base, ".prepare.lock"), "another kernel preparation", log):
        if not (os.path.exists(stamp) and os.path.isfile(image)):
            t0 = time.monotonic()
            log(f"vm: preparing {image_pkg} in {d}")
            shutil.rmtree(d, ignore_errors=True)
            dl = os.path.join(d, ".download")
            os.makedirs(dl)
            # Root downloads into a root-owned directory: no _apt sandbox user.
            _run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", image_pkg],
                 f"apt-get download {image_pkg}", "run apt-get update; check the apt sources",
                 cwd=dl)
            debs = [os.path.join(dl, f) for f in os.listdir(dl) if f.endswith(".deb")]
            if len(debs) != 1:
                raise UserError(f"apt-get download {image_pkg} gave {len(debs)} packages",
                                "remove " + dl + " and try again")
            _run(["dpkg-deb", "-x", debs[0], d], f"dpkg-deb -x {debs[0]}",
                 "is the disk full? (the extracted kernel takes ~500 MB)")
            shutil.rmtree(dl)
            if not os.path.isfile(image):
                raise UserError(f"{image_pkg} has no boot/vmlinuz-{release}",
                                "give the image package of the generic -amd64 flavour")
            _run(["depmod", "-b", d, release], "depmod", "install kmod")
            n = _decompress_boot_modules(d, release)
            _run(["depmod", "-b", d, release], "depmod", "install kmod")
            log(f"vm: extracted {release} ({n} boot modules decompressed) in "
                f"{time.monotonic() - t0:.0f}s")
        # The headers live on the host (the guest sees the host's /usr/src).
        _apt_install([headers], log)
        build = f"/usr/src/{headers}"
        if not os.path.isdir(build):
            raise UserError(f"{headers} is installed but {build} is missing",
                            f"apt-get install --reinstall {headers}")
        for name, target in (("build", build), ("source", _headers_common(release))):
            link = os.path.join(moddir, name)
            if target and os.path.realpath(link) != target:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
                os.symlink(target, link)
        with open(stamp, "w") as f:
            f.write(f"{image_pkg}\n")
        if debug_info:
            _debug_vmlinux(release, image_pkg.removesuffix("-unsigned"), moddir, log)
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", headers],
                             capture_output=True, text=True).stdout.strip()
    return Kernel(release, image, root=d, origin=f"Debian {image_pkg} {version}".strip())


# -- booting -----------------------------------------------------------------
def _vng() -> str:
    """The vng executable: next to this interpreter (the .venv) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "vng")
    found = here if os.access(here, os.X_OK) else shutil.which("vng")
    if not found:
        raise UserError("virtme-ng (vng) is not installed",
                        "run sudo ./bootstrap.sh test-vm, or pip install virtme-ng "
                        "into the .venv")
    return found


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _kvm_known_bad(cache: str) -> Optional[str]:
    """Why KVM failed earlier since this host booted, or None."""
    try:
        with open(os.path.join(cache, ".kvm-unusable")) as f:
            boot, _, why = f.read().partition("\n")
    except OSError:
        return None
    return why.strip() if boot == _boot_id() else None


def _remember_kvm_bad(cache: str, why: str) -> None:
    with contextlib.suppress(OSError):
        os.makedirs(cache, exist_ok=True)
        with open(os.path.join(cache, ".kvm-unusable"), "w") as f:
            f.write(f"{_boot_id()}\n{why}\n")


def _kill_group(proc: subprocess.Popen) -> None:
    """End vng and QEMU (their own process group), TERM first."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _read(path: str, limit: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            if limit:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _Emit:
    def __init__(self, stream: Callable[[str, str], None], name: str) -> None:
        self.stream, self.name = stream, name

    def __call__(self, text: str) -> None:
        self.stream(self.name, text)


class _Tail(threading.Thread):
    """Pass what the guest writes to a shared file on to ``emit`` as it comes."""

    def __init__(self, path: str, emit: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.path, self.emit = path, emit
        self.stop = threading.Event()
        self.pos = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except OSError:
            return
        if chunk:
            self.pos += len(chunk)
            self.emit(chunk.decode("utf-8", "replace"))

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.poll()
        self.poll()


def _script(out: str, command: str, cwd: str, env: Dict[str, str]) -> str:
    lines = ["# written by trace_reclaim.vm; runs as the guest's command",
             f"cat /proc/uptime > {shlex.quote(out)}/started",
             f"cd {shlex.quote(cwd)} || exit 125"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [f"( {command}\n) > {shlex.quote(out)}/stdout 2> {shlex.quote(out)}/stderr",
              f"echo $? > {shlex.quote(out)}/status.tmp",
              f"mv {shlex.quote(out)}/status.tmp {shlex.quote(out)}/status"]
    return "\n".join(lines) + "\n"


def _vng_argv(kernel: Kernel, out: str, accel: str, memory: str, cpus: int,
              rodirs: Sequence[str], rwdirs: Sequence[str] = ()) -> List[str]:
    argv = [_vng(), "--run", kernel.kdir or kernel.image, "--force-9p",
            "--memory", memory, "--cpus", str(cpus), "--rwdir", out,
            # The guest kernel's log on the console (the file Result.console
            # reads): an OOM or a panic that ends the guest says so there.
            "--verbose"]
    if accel == "tcg":
        argv += ["--disable-kvm", f"--qemu-opts={TCG_OPTS}"]
    # vng mounts a tmpfs over /var/cache (and other places) in the guest:
    # a kernel prepared under it must be shared explicitly.
    if kernel.root and kernel.root != "/":
        argv += ["--rodir", kernel.root]
    for d in rodirs:
        argv += ["--rodir", d]
    for d in rwdirs:
        argv += ["--rwdir", d]
    argv += ["--exec", f"sh {shlex.quote(os.path.join(out, 'run.sh'))}"]
    return argv


def _boot_once(kernel: Kernel, out: str, accel: str, memory: str, cpus: int,
               timeout: Optional[float], rodirs: Sequence[str],
               stream: Optional[Callable[[str, str], None]],
               rwdirs: Sequence[str] = ()) -> Result:
    for name in ("started", "status", "stdout", "stderr", "console"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    argv = _vng_argv(kernel, out, accel, memory, cpus, rodirs, rwdirs)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(argv[0]) + os.pathsep + env.get("PATH", "")
    t0 = time.monotonic()
    start_limit = KVM_START_TIMEOUT_S if accel == "kvm" else TCG_START_TIMEOUT_S
    tails = []
    if stream is not None:
        for name in ("stdout", "stderr"):
            tails.append(_Tail(os.path.join(out, name), _Emit(stream, name)))
    with open(os.path.join(out, "console"), "wb") as console:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:   # a bad shebang, a missing interpreter, not executable
            raise UserError(f"cannot run {argv[0]}: {e.strerror or e}",
                            "reinstall virtme-ng: sudo ./bootstrap.sh test-vm, or "
                            "pip install --force-reinstall virtme-ng into the .venv"
                            ) from None
        for t in tails:
            t.start()
        started: Optional[float] = None
        timed_out = False
        quiet = _CrashSilence(os.path.join(out, "console"))
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if started is None and os.path.exists(os.path.join(out, "started")):
                    started = now - t0
                if started is None and (now - t0 > start_limit or quiet.over(now)):
                    break
                if timeout is not None and now - t0 > timeout:
                    timed_out = True
                    break
                time.sleep(0.2)
        finally:  # Ctrl-C, errors, timeouts: the VM never outlives us
            _kill_group(proc)
            for t in tails:
                t.stop.set()
                t.join(5)
    if started is None and os.path.exists(os.path.join(out, "started")):
        started = time.monotonic() - t0
    status = _read(os.path.join(out, "status")).strip()
    return Result(returncode=int(status) if status.lstrip("-").isdigit() else None,
                  stdout=_read(os.path.join(out, "stdout")),
                  stderr=_read(os.path.join(out, "stderr")),
                  accel=accel, boot_s=started, wall_s=time.monotonic() - t0,
                  timed_out=timed_out, console=_read(os.path.join(out, "console"), 65536))


class _CrashSilence:
    """Whether a booting guest's console said it crashed, then went quiet
    for CRASH_SILENCE_S (checked every few seconds, from the file's size)."""

    def __init__(self, path: str, silence_s: float = CRASH_SILENCE_S) -> None:
        self.path, self.silence_s = path, silence_s
        self.size = -1
        self.grew_at = 0.0
        self.crashed = False
        self.checked_at = 0.0

    def over(self, now: float) -> bool:
        if now - self.checked_at < 2.0:
            return False
        self.checked_at = now
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return False
        if size != self.size:
            self.size, self.grew_at = size, now
            self.crashed = self.crashed or any(w in _read(self.path, 65536) for w in _CRASH)
            return False
        return self.crashed and now - self.grew_at >= self.silence_s


# Kernel log lines that say why a guest ended (the first one is the cause).
_FATAL = ("Kernel panic", "Out of memory", "invoked oom-killer", "BUG:", "Oops:",
          "general protection fault", "watchdog: BUG")
# Those that say the kernel itself failed (not that it ran out of memory).
_CRASH = ("Kernel panic", "BUG:", "Oops:", "general protection fault", "watchdog: BUG")


def crashed_while_booting(res: Result) -> bool:
    """The guest kernel panicked or oopsed before the command started.

    Emulated boots (TCG) do this, rarely: a double fault in the allocator
    while init opened its first files, 13 s into a boot, once in several
    dozen.  A crash after the command started is the command's result and is
    never retried.
    """
    return res.boot_s is None and not res.timed_out and any(
        w in res.console for w in _CRASH)


def why_failed(res: Result) -> str:
    """Say why the guest command did not finish, from the console.

    The kernel's own words when it said why (a panic, an oops, the OOM
    killer), else the console's last line.
    """
    lines = [ln.strip() for ln in res.console.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if any(w in ln for w in _FATAL)]
    last = fatal[0] if fatal else lines[-1] if lines else "no output"
    if res.boot_s is None:
        return f"the guest did not start the command within {res.wall_s:.0f}s ({last[:120]})"
    return last[:160]


def run(kernel: Kernel, command: str, *, cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None, memory: str = "3G", cpus: int = 2,
        timeout: Optional[float] = None, accel: str = "auto",
        rodirs: Sequence[str] = (), rwdirs: Sequence[str] = (), log: Log = _stderr,
        stream: Optional[Callable[[str, str], None]] = None,
        keep: bool = False) -> Result:
    """Boot ``kernel``, run the shell ``command`` in ``cwd`` inside, tear it down.

    ``stream(name, text)`` receives the command's stdout/stderr as the guest
    writes them.  ``accel`` is "auto" (KVM, falling back to TCG), "kvm" or
    "tcg".  ``timeout`` bounds the whole run (boot included).  ``rwdirs``
    are shared read-write (the rest of the host's root is read-only).
    """
    if accel not in ("auto", "kvm", "tcg"):
        raise UserError(f"unknown acceleration {accel!r}", "use auto, kvm or tcg")
    cache = cache_dir()
    cwd = os.path.abspath(cwd or os.getcwd())
    notes: List[str] = []
    tries: List[str]
    if accel == "auto":
        bad = _kvm_known_bad(cache)
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            tries = ["tcg"]
            notes.append("KVM: /dev/kvm is not usable")
        elif bad:
            tries = ["tcg"]
            notes.append(f"KVM failed earlier since this host booted: {bad}")
        else:
            tries = ["kvm", "tcg"]
    else:
        tries = [accel]
    with _flock(os.path.join(cache, ".vm.lock"), "another VM to finish", log):
        out = tempfile.mkdtemp(prefix="trace-reclaim-vm-", dir="/tmp")
        os.chmod(out, 0o755)
        try:
            with open(os.path.join(out, "run.sh"), "w") as f:
                f.write(_script(out, command, cwd, env or {}))
            res: Optional[Result] = None
            i, reboots = 0, 0
            while True:
                acc = tries[i]
                name = "KVM" if acc == "kvm" else "QEMU TCG emulation"
                why = f" ({notes[-1]})" if acc == "tcg" and notes else ""
                log(f"vm: booting {kernel.release} with {name}{why}, {memory}, {cpus} CPUs")
                res = _boot_once(kernel, out, acc, memory, cpus, timeout, rodirs, stream,
                                 rwdirs)
                res.notes = notes
                if res.boot_s is not None or res.timed_out:
                    break
                reason = why_failed(res)
                if acc == "kvm" and i + 1 < len(tries):
                    notes.append(f"KVM: {reason}")
                    _remember_kvm_bad(cache, reason)
                    i += 1
                    continue
                if reboots < BOOT_CRASH_RETRIES and crashed_while_booting(res):
                    # The guest kernel died before our command ran, so
                    # nothing of ours is to blame and nothing was measured:
                    # boot it again, and say so.
                    reboots += 1
                    notes.append(f"the guest kernel crashed while booting ({reason}); "
                                 "booted again")
                    log(f"vm: {notes[-1]}")
                    continue
                break
            assert res is not None
            if res.boot_s is not None:
                log(f"vm: {kernel.release} ({res.accel}): command started after "
                    f"{res.boot_s:.0f}s, VM ran {res.wall_s:.0f}s, "
                    + ("timed out" if res.timed_out else
                       f"exit {res.returncode}" if res.returncode is not None
                       else "the command did not finish"))
            return res
        finally:
            if keep:
                log(f"vm: kept {out}")
            else:
                shutil.rmtree(out, ignore_errors=True)


# -- command line: python -m trace_reclaim.vm ---------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    """``prepare KERNEL`` or ``run KERNEL [options] -- COMMAND...``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m trace_reclaim.vm",
                                description="Boot a stock kernel in a VM (virtme-ng) "
                                            "and run a command inside it.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="fetch and set up a kernel; print its image path")
    pp.add_argument("kernel")
    rp = sub.add_parser("run", help="boot KERNEL and run COMMAND in this directory",
                        usage="%(prog)s KERNEL [options] -- COMMAND...")
    rp.add_argument("kernel")
    rp.add_argument("--memory", "-m", default="3G")
    rp.add_argument("--cpus", "-p", type=int, default=2)
    rp.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    rp.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    rp.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the guest command's environment")
    for q in (pp, rp):
        q.add_argument("--debug-info", action="store_true",
                       help="also fetch a Debian kernel's debug-info vmlinux (for drgn)")
    argv = list(sys.argv[1:] if argv is None else argv)
    command: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    args = p.parse_args(argv)

    def _terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt   # run()'s finally tears the VM down

    # SIGTERM's default action would end this process with QEMU left running
    # in its own session.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        kernel = resolve(args.kernel, debug_info=args.debug_info)
        if args.cmd == "prepare":
            print(f"{kernel.release} {kernel.image} {kernel.origin}")
            return 0
        cmd = command
        if not cmd:
            raise UserError("no command to run", "add -- COMMAND")
        env = {}
        for kv in args.env:
            k, sep, v = kv.partition("=")
            if not sep or not k:
                raise UserError(f"--env {kv!r} is not NAME=VALUE", "e.g. --env FOO=1")
            env[k] = v

        def stream(name: str, text: str) -> None:
            (sys.stdout if name == "stdout" else sys.stderr).write(text)
            (sys.stdout if name == "stdout" else sys.stderr).flush()

        res = run(kernel, " ".join(shlex.quote(c) for c in cmd) if len(cmd) > 1 else cmd[0],
                  env=env, memory=args.memory, cpus=args.cpus, timeout=args.timeout,
                  accel=args.accel, stream=stream)
        if res.returncode is None:
            sys.stderr.write(res.console[-4000:])
            raise UserError(f"the VM ended before the command finished: {why_failed(res)}",
                            "see the console output above; try a longer --timeout")
        return res.returncode
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (the VM was stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
