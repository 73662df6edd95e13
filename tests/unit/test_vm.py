"""trace_reclaim.vm's pure parts and the --attach cap of the probe (no VM, no root)."""

from __future__ import annotations

import os
import sys
import struct

import pytest

from trace_reclaim import vm
from trace_reclaim.env import UserError
from trace_reclaim.probe import Probe

PKGNAMES = """
linux-image-6.1.0-56-amd64 linux-image-6.1.0-56-amd64-unsigned linux-image-6.1.0-56-cloud-amd64
linux-image-6.1.0-57-amd64-unsigned linux-image-6.1.0-57-rt-amd64-unsigned
linux-image-6.1.0-57-amd64-dbg linux-image-6.1.0-9-amd64
linux-image-6.12.117+deb12-amd64 linux-image-6.12.117+deb12-cloud-amd64
linux-image-6.12.115+deb12-amd64 linux-image-6.12.9+deb12-amd64
""".split()


def test_debian_candidates_newest_generic_first():
    got = vm.debian_candidates("6.1", PKGNAMES)
    # 6.12 is not 6.1; cloud/rt/dbg flavours are not generic; -57 only unsigned
    assert got == [("6.1.0-57-amd64", "linux-image-6.1.0-57-amd64-unsigned"),
                   ("6.1.0-56-amd64", "linux-image-6.1.0-56-amd64"),
                   ("6.1.0-9-amd64", "linux-image-6.1.0-9-amd64")]
    got = vm.debian_candidates("6.12", PKGNAMES)
    assert [r for r, _p in got] == ["6.12.117+deb12-amd64", "6.12.115+deb12-amd64",
                                    "6.12.9+deb12-amd64"]


def test_bzimage_release_from_the_boot_header(tmp_path):
    img = bytearray(0x1000)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x20E, 0x600 - 0x200)
    img[0x600:0x640] = b"6.12.117+deb12-amd64 (debian-kernel@lists.debian.org) #1\0"
    p = tmp_path / "vmlinuz"
    p.write_bytes(bytes(img))
    assert vm.bzimage_release(str(p)) == "6.12.117+deb12-amd64"
    p.write_bytes(bytes(0x1000))
    assert vm.bzimage_release(str(p)) is None


def test_resolve_rejects_what_it_cannot_boot(tmp_path):
    with pytest.raises(UserError, match="unknown kernel"):
        vm.resolve("not-a-kernel")
    with pytest.raises(UserError, match="without arch/x86/boot/bzImage"):
        vm.resolve(str(tmp_path))
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 0x300)
    with pytest.raises(UserError, match="not an x86 bzImage"):
        vm.resolve(str(junk))


def test_the_guest_script_quotes_and_reports_status(tmp_path):
    text = vm._script("/tmp/out dir", "pytest -k 'a b'", "/work/x y", {"A": "1 2"})
    lines = text.splitlines()
    assert lines[1] == "cat /proc/uptime > '/tmp/out dir'/started"
    assert "cd '/work/x y' || exit 125" in lines
    assert "export A='1 2'" in lines
    assert "( pytest -k 'a b'" in text
    assert text.rstrip().endswith("'/tmp/out dir'/status")


def test_run_refuses_unknown_acceleration():
    with pytest.raises(UserError, match="unknown acceleration"):
        vm.run(vm.Kernel("6.12", "/nonexistent"), "true", accel="xen")


def test_kvm_failure_is_remembered_for_this_boot_only(tmp_path):
    d = str(tmp_path)
    assert vm._kvm_known_bad(d) is None
    vm._remember_kvm_bad(d, "qemu exited 255")
    assert vm._kvm_known_bad(d) == "qemu exited 255"
    with open(os.path.join(d, ".kvm-unusable"), "w") as f:
        f.write("another-boot\nqemu exited 255\n")
    assert vm._kvm_known_bad(d) is None


class _FS:
    def path(self, p):
        return "/nonexistent" + p

    def try_read(self, p):
        return None


@pytest.mark.parametrize("cap,fentry,kprobe", [
    ("fentry", None, None), ("kprobe", "forced", None), ("tracepoint", "forced", "forced")])
def test_attach_cap_leaves_the_better_mechanisms_unused(cap, fentry, kprobe, monkeypatch):
    monkeypatch.delenv("TRACE_RECLAIM_ATTACH", raising=False)
    p = Probe(_FS(), None, cap)
    fe, kp = p.fentry, p.kprobes
    assert ("forced" in fe[1]) == (fentry == "forced"), fe
    assert ("forced" in kp[1]) == (kprobe == "forced"), kp
    if fentry == "forced":
        assert fe == (False, f"not used: --attach {cap} (forced)")
        assert p.tracing_attach("kmem_cache_destroy")[1] == fe[1]


def test_attach_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRACE_RECLAIM_ATTACH", "tracepoint")
    assert Probe(_FS()).attach == "tracepoint"
    monkeypatch.setenv("TRACE_RECLAIM_ATTACH", "uprobe")
    with pytest.raises(UserError, match="unknown attach mechanism 'uprobe'"):
        Probe(_FS())


def test_vng_argv_shares_the_kernel_and_the_output_directories(monkeypatch):
    monkeypatch.setattr(vm, "_vng", lambda: "vng")
    k = vm.Kernel("6.12.117+deb12-amd64", "/c/6.12/boot/vmlinuz", root="/c/6.12")
    argv = vm._vng_argv(k, "/tmp/out", "tcg", "3G", 2, ["/ro"], ["/data/base"])
    assert argv[:3] == ["vng", "--run", "/c/6.12/boot/vmlinuz"]
    assert "--disable-kvm" in argv and "--force-9p" in argv
    # Emulated vCPUs run in one host thread: code the guest patches (static
    # keys, kprobes) is seen by every vCPU at once.
    assert "--qemu-opts=-accel tcg,thread=single" in argv
    assert "--verbose" in argv      # the kernel's log reaches the console file
    pairs = list(zip(argv, argv[1:]))
    assert ("--rwdir", "/tmp/out") in pairs and ("--rwdir", "/data/base") in pairs
    assert ("--rodir", "/c/6.12") in pairs and ("--rodir", "/ro") in pairs
    assert argv[-2] == "--exec" and argv[-1].endswith("run.sh")
    kvm = vm._vng_argv(k, "/tmp/out", "kvm", "3G", 2, [])
    assert "--disable-kvm" not in kvm and not any("thread=single" in a for a in kvm)


def test_run_kernel_reruns_the_command_in_the_vm(tmp_path, monkeypatch):
    """``run --kernel``: the same run, without --kernel, in the guest; DIR shared."""
    import io

    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    seen = {}
    kernel = vm.Kernel("6.1.0-57-amd64", "/c/vmlinuz", root="/c")

    def fake_run(k, command, **kw):
        seen.update(kernel=k, command=command, **kw)
        kw["stream"]("stdout", "guest out\n")
        return vm.Result(returncode=0, stdout="", stderr="", accel="tcg", boot_s=30.0,
                         wall_s=90.0)

    monkeypatch.setattr(vm, "resolve", lambda spec, log=None, debug_info=False: kernel)
    monkeypatch.setattr(vm, "run", fake_run)
    out, err = io.StringIO(), io.StringIO()
    d = tmp_path / "base"
    rc = cli.main(["run", "pressure", "-n", "2", "-o", str(d), "--param", "seconds=5",
                   "--sysctl", "vm.watermark_scale_factor=100", "--kernel", "6.1"],
                  Environment(stdout=out, stderr=err, is_root=lambda: False))
    assert rc == 0, err.getvalue()
    assert d.is_dir() and seen["rwdirs"] == [str(d)] and seen["kernel"] is kernel
    cmd = seen["command"]
    assert " -m trace_reclaim run pressure -n 2 -o " + str(d) in cmd
    assert "--param seconds=5 --sysctl vm.watermark_scale_factor=100" in cmd
    assert "--kernel" not in cmd and out.getvalue() == "guest out\n"
    monkeypatch.setattr(vm, "run", lambda k, c, **kw: vm.Result(
        returncode=None, stdout="", stderr="", accel="tcg", boot_s=None, wall_s=600.0,
        console="Kernel panic - not syncing\n"))
    err = io.StringIO()
    rc = cli.main(["run", "pressure", "-n", "1", "-o", str(d), "--kernel", "6.1"],
                  Environment(stdout=io.StringIO(), stderr=err))
    assert rc != 0 and "error: the VM (6.1.0-57-amd64) ended" in err.getvalue()
    assert "Kernel panic" in err.getvalue() and "Traceback" not in err.getvalue()


def test_a_vng_that_cannot_execute_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    """vng installed with a shebang whose interpreter is gone (a moved .venv):
    Popen's OSError becomes error:/hint:, exit 1, and the VM's directory goes."""
    import glob
    import io

    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    fake = tmp_path / "vng"
    fake.write_text("#!/nonexistent/venv/bin/python\nprint('never')\n")
    fake.chmod(0o755)
    monkeypatch.setattr(vm, "_vng", lambda: str(fake))
    monkeypatch.setenv(vm.CACHE_ENV, str(tmp_path / "cache"))
    kernel = vm.Kernel("6.1.0-57-amd64", "/c/vmlinuz", root="/c")
    before = set(glob.glob("/tmp/trace-reclaim-vm-*"))
    with pytest.raises(UserError, match=r"cannot run .*/vng: No such file"):
        vm.run(kernel, "true", accel="tcg", log=lambda m: None)
    monkeypatch.setattr(vm, "resolve", lambda spec, log=None, debug_info=False: kernel)
    err = io.StringIO()
    rc = cli.main(["run", "vmalloc-huge", "-n", "1", "-o", str(tmp_path / "out"),
                   "--kernel", "6.1"], Environment(stdout=io.StringIO(), stderr=err))
    assert rc == 1, err.getvalue()
    lines = err.getvalue().splitlines()
    assert any(ln.startswith("error: cannot run ") for ln in lines), lines
    assert any(ln.startswith("hint: reinstall virtme-ng") for ln in lines), lines
    assert "Traceback" not in err.getvalue()
    assert set(glob.glob("/tmp/trace-reclaim-vm-*")) <= before
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert vm.main(["run", "6.1", "--accel", "tcg", "--", "true"]) == 1
    assert "error: cannot run " in err.getvalue() and "hint: " in err.getvalue()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "vm-died"])
def test_run_kernel_sets_aside_what_the_guest_did_not_finish(tmp_path, monkeypatch, how):
    """The VM ends in run 2 of 2: run 1's recording stays, run 2's becomes
    .incomplete (the guest's runner never got to rename it), no traceback."""
    import io

    from trace_reclaim import cli
    from trace_reclaim.env import Environment
    from trace_reclaim.examples import _restore

    d = tmp_path / "new"
    d.mkdir()
    (d / "old.trc").write_bytes(b"kept: not this VM's")
    kernel = vm.Kernel("6.1.0-57-amd64", "/c/vmlinuz", root="/c")

    def fake_run(k, command, **kw):
        kw["log"]("vm: booting 6.1.0-57-amd64 with QEMU TCG emulation, 3G, 2 CPUs")
        for i in (1, 2):
            p = d / f"vmalloc-huge-{i}.trc"
            kw["stream"]("stderr", f"run: vmalloc-huge run {i} of 2: recording to {p}\n")
            p.write_bytes(b"x")
            if i == 1:
                kw["stream"]("stderr", "run: vmalloc-huge run 1 of 2: done in 3.0 s\n")
        if how == "ctrl-c":
            raise KeyboardInterrupt
        if how == "sigterm":
            raise _restore.Terminated(15)
        return vm.Result(returncode=None, stdout="", stderr="", accel="tcg", boot_s=30.0,
                         wall_s=90.0, console="Kernel panic - not syncing\n")

    monkeypatch.setattr(vm, "resolve", lambda spec, log=None, debug_info=False: kernel)
    monkeypatch.setattr(vm, "run", fake_run)
    err = io.StringIO()
    rc = cli.main(["run", "vmalloc-huge", "-n", "2", "-o", str(d), "--kernel", "6.1"],
                  Environment(stdout=io.StringIO(), stderr=err))
    assert rc == {"ctrl-c": 130, "sigterm": 143, "vm-died": 1}[how], err.getvalue()
    assert sorted(os.listdir(d)) == ["old.trc", "vmalloc-huge-1.trc",
                                     "vmalloc-huge-2.trc.incomplete"]
    text = err.getvalue()
    assert "Traceback" not in text
    if how == "vm-died":
        assert "error: the VM (6.1.0-57-amd64) ended before the runs finished (1 of 2 done)" \
            in text
    else:
        assert "error: interrupted after 1 of 2 runs; the VM (6.1.0-57-amd64) was stopped" \
            in text


def test_the_guest_gets_what_the_workload_needs(tmp_path):
    """zram loaded for anon; for pressure an ext4 file system whose holes go
    through the page cache (the guest's /var/tmp is tmpfs), unless the user
    gave a directory."""
    from trace_reclaim.commands import run

    argv = ["/py", "-m", "trace_reclaim", "run", "pressure", "-n", "1", "-o", "/d x"]
    cmd = run._guest_setup("pressure", ["seconds=5"], argv)
    lines = cmd.splitlines()
    assert lines[0] == "modprobe -q zram 2>/dev/null"
    assert any("mkfs.ext4 -q -F /tmp/trace-reclaim-ext4/img" in ln and
               "mount -o loop" in ln and "exit 1" in ln for ln in lines)
    assert lines[-1] == ("exec /py -m trace_reclaim run pressure -n 1 -o '/d x' "
                         "--param directory=/tmp/trace-reclaim-ext4/mnt")
    cmd = run._guest_setup("pressure", ["directory=/mnt/disk"], argv)
    assert "mkfs" not in cmd and "directory=/tmp" not in cmd
    cmd = run._guest_setup("anon", [], argv[:4] + ["anon"])
    assert cmd.splitlines() == ["modprobe -q zram 2>/dev/null",
                                "exec /py -m trace_reclaim run anon"]


def test_run_kernel_interrupted_while_waiting_for_the_vm_lock(tmp_path, monkeypatch):
    import io

    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    def fake_run(k, command, **kw):
        kw["log"]("vm: waiting for another VM to finish (/c/.vm.lock)")
        raise KeyboardInterrupt

    monkeypatch.setattr(vm, "resolve", lambda spec, log=None, debug_info=False:
                        vm.Kernel("6.1.0-57-amd64", "/c/vmlinuz", root="/c"))
    monkeypatch.setattr(vm, "run", fake_run)
    err = io.StringIO()
    rc = cli.main(["run", "anon", "-n", "2", "-o", str(tmp_path / "d"), "--kernel", "6.1"],
                  Environment(stdout=io.StringIO(), stderr=err))
    assert rc == 130
    assert "error: interrupted after 0 of 2 runs; no VM had started" in err.getvalue()
    assert os.listdir(tmp_path / "d") == []


def test_why_failed_names_the_kernels_reason_before_the_last_line():
    log = ("[   97.1] python3 invoked oom-killer: gfp_mask=0x140cca, order=0\n"
           "[   97.2] Mem-Info:\n"
           "[   97.9] Out of memory: Killed process 212 (python3)\n"
           "[   98.0] virtme-init: exiting\n")
    res = vm.Result(returncode=None, stdout="", stderr="", accel="tcg", boot_s=17.0,
                    wall_s=98.0, timed_out=False, console=log)
    assert "invoked oom-killer" in vm.why_failed(res)
    res.console = "[ 5.0] booted\n[ 6.0] last words\n"
    assert vm.why_failed(res) == "[ 6.0] last words"
    res.console = ""
    assert vm.why_failed(res) == "no output"


_PANIC = ("[ 12.93] Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI\n"
          "[ 12.94] Kernel panic - not syncing: Fatal exception in interrupt\n")


@pytest.mark.parametrize("outcomes,boots,rc", [
    # A crash while booting: booted once more, and the second boot counts.
    ([(None, _PANIC), (20.0, "")], 2, 0),
    # It crashes again: no third boot, the crash is the result.
    ([(None, _PANIC), (None, _PANIC)], 2, None),
    # A crash after the command started is the command's result: never rebooted.
    ([(20.0, _PANIC)], 1, None),
    # A guest that ended before the command without crashing: not rebooted either.
    ([(None, "[ 3.0] virtme-init: cannot mount /\n")], 1, None),
])
def test_a_guest_kernel_crash_before_the_command_boots_once_more(
        tmp_path, monkeypatch, outcomes, boots, rc):
    monkeypatch.setenv(vm.CACHE_ENV, str(tmp_path))
    seen = []

    def fake_boot(kernel, out, acc, *a, **kw):
        boot_s, console = outcomes[len(seen)]
        seen.append(acc)
        done = boot_s is not None and not console
        return vm.Result(returncode=0 if done else None, stdout="", stderr="", accel=acc,
                         boot_s=boot_s, wall_s=30.0, console=console)

    monkeypatch.setattr(vm, "_boot_once", fake_boot)
    logged = []
    res = vm.run(vm.Kernel("6.12.117+deb12-amd64", "/c/vmlinuz"), "true", accel="tcg",
                 log=logged.append)
    assert seen == ["tcg"] * boots and res.returncode == rc
    said = [n for n in res.notes if "crashed while booting" in n]
    assert len(said) == boots - 1
    if said:
        assert "Oops: double fault" in said[0] and any(said[0] in ln for ln in logged)


_LOCKUP = "[ 283.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [systemd-udevd:91]\n"


def _console_at(silence, path, t, text):
    """Append ``text`` to the console and ask at time ``t`` whether the boot is over."""
    if text:
        with open(path, "a") as f:
            f.write(text)
    return silence.over(t)


def test_a_crashed_boot_is_over_once_its_console_goes_quiet(tmp_path):
    console = tmp_path / "console"
    console.write_text("[ 1.0] Linux version 6.12\n")
    quiet = vm._CrashSilence(str(console), silence_s=90.0)
    assert not _console_at(quiet, console, 10.0, "")
    # A soft lockup, and the boot goes on: not over while the console moves.
    assert not _console_at(quiet, console, 20.0, _LOCKUP)
    assert not _console_at(quiet, console, 100.0, "[ 300.0] udevd: settled\n")
    # Then silence: over 90 s after the last line, not before.
    assert not _console_at(quiet, console, 188.0, "")
    assert _console_at(quiet, console, 190.0, "")


def test_a_quiet_console_without_a_crash_waits_for_the_start_limit(tmp_path):
    console = tmp_path / "console"
    console.write_text("[ 1.0] Linux version 6.12\n[ 9.0] Run /init as init process\n")
    quiet = vm._CrashSilence(str(console), silence_s=90.0)
    assert not _console_at(quiet, console, 5.0, "")
    for t in (100.0, 300.0, 590.0):   # an emulated boot may just be slow
        assert not _console_at(quiet, console, t, "")
