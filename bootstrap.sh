#!/usr/bin/env bash
# Install what trace-reclaim needs on a Debian machine, then run it.
#
#   sudo ./bootstrap.sh trace [ARGS...]   install what is missing, trace live
#   sudo ./bootstrap.sh test  [PYTEST ARGS...]   install what is missing, run
#                                         lint, type checks and every test
#   sudo ./bootstrap.sh test-vm [KERNEL] [PYTEST ARGS...]
#                                         boot KERNEL (default 6.12: Debian's
#                                         newest 6.12; or 6.1, a release, a
#                                         bzImage, a build tree) in QEMU and run
#                                         the attach-plan tier (tests/vm) inside
#
# Idempotent: every step checks before it acts, so a second run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

say() { echo "bootstrap: $*" >&2; }
die() { echo "error: $1" >&2; echo "hint: $2" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "bootstrap.sh installs packages and loads BPF programs: it needs root" \
                           "run it as root: sudo ./bootstrap.sh ${1:-trace}"
command -v apt-get >/dev/null || die "no apt-get: this script sets up Debian (12 or later)" \
                                     "install python3-bpfcc and kernel headers by hand, then run ./trace-reclaim"

release=$(uname -r)
arch=$(dpkg --print-architecture)
apt_updated=""
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$apt_updated" ]; then
        say "apt-get update"
        apt-get update -qq >&2
        apt_updated=1
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $apt_opts "${missing[@]}" >&2
}
apt_opts=""

# bcc's Python bindings come from Debian (PyPI's "bcc" is another project);
# bpftool reads per-program BPF run time for the benchmarks; util-linux has
# mkswap/swapon for the zram workloads.
apt_install python3-bpfcc python3-venv bpftool util-linux

# Kernel headers: bcc compiles every program against them.  Prefer the
# running kernel's; else the nearest version the archive has, linked where
# bcc looks.  Tracepoint programs stay correct with other headers: their
# argument structs come from the live tracefs format files.
headers_ok() { [ -e "/lib/modules/$release/build/include/generated/autoconf.h" ] ||
               [ -e "/lib/modules/$release/build/include/config/auto.conf" ]; }
if ! headers_ok; then
    if apt-cache show "linux-headers-$release" >/dev/null 2>&1 ||
       { [ -z "$apt_updated" ] && apt-get update -qq >&2 && apt_updated=1 &&
         apt-cache show "linux-headers-$release" >/dev/null 2>&1; }; then
        apt_install "linux-headers-$release"
    else
        want=$(echo "$release" | sed -E 's/^([0-9]+)\.([0-9]+).*/\1 \2/')
        flavour=cloud-$arch
        # Nearest major.minor by distance, newest build of it; cloud flavour first.
        best=$(apt-cache pkgnames linux-headers- |
               grep -E "^linux-headers-[0-9]+\.[0-9]+\.[0-9]+.*-($flavour|$arch)\$" |
               grep -v -- "-rt-" |
               awk -v want="$want" -v fl="$flavour" '{
                   split(want, w, " "); v = $0; sub(/^linux-headers-/, "", v)
                   split(v, p, /[.+-]/); d = (w[1]-p[1])*1000 + (w[2]-p[2]); if (d < 0) d = -d
                   pref = index($0, fl) ? 0 : 1
                   printf "%08d %d %s\n", d, pref, $0 }' |
               sort -k1,1n -k2,2n -k3,3Vr | head -n1 | cut -d" " -f3)
        [ -n "$best" ] || die "no linux-headers package in the configured archives" \
                              "add Debian's bookworm-updates or backports to apt sources"
        apt_install "$best"
        ver=${best#linux-headers-}
        common=/usr/src/linux-headers-${ver%-*-*}-common
        [ -d "$common" ] || common=/usr/src/linux-headers-${ver%-*}-common
        mkdir -p "/lib/modules/$release"
        ln -sfn "/usr/src/$best" "/lib/modules/$release/build"
        [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
        say "no headers for $release in the archive: using $best (nearest; see 'trace-reclaim check')"
    fi
fi

# tracefs (bcc reads tracepoint formats there) and debugfs.
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug || true

# The venv: Debian's interpreter with system site packages, so bcc imports.
stamp=.venv/.trace-reclaim-installed
want_stamp=$(cat setup.cfg pyproject.toml | sha256sum | cut -d" " -f1)
if [ ! -x .venv/bin/python ]; then
    say "creating .venv from /usr/bin/python3"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
# gcc and Python's headers: setup.py compiles the report path with mypyc
# (trace_reclaim/native.py); without them it installs interpreted, slower.
apt_install gcc libc6-dev python3-dev
native_status() { .venv/bin/python -c 'import trace_reclaim.native as n; print(n.STATUS)' 2>/dev/null; }
if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ] || [ "$(native_status)" != compiled ]; then
    # Also when the compiled modules are missing or older than their sources
    # (a pull, an edit): the package would run interpreted until rebuilt.
    say "installing Python dependencies into .venv (and compiling the report path)"
    # The build's own requirements (pyproject.toml) into .venv first, then the
    # build in .venv: no throw-away build environment to fetch them into each time.
    .venv/bin/python -m pip install -q --disable-pip-version-check setuptools wheel \
        'mypy>=1.10' types-tabulate >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
        -e '.[test,diff,serve,export]' >&2
    echo "$want_stamp" > "$stamp"
    say "report path: $(native_status)"
fi

cmd=${1:-trace}
[ $# -gt 0 ] && shift
case "$cmd" in
trace)
    exec ./trace-reclaim "$@" ;;
test)
    # tests/unit/test_abi.py compiles bpf/events.h (cc, <linux/types.h>).
    apt_install gcc libc6-dev linux-libc-dev
    # The perf-beside live test counts tracepoints with perf while we trace.
    apt_install linux-perf
    # The serve live test scrapes with a real Prometheus (and lints with its
    # promtool); it starts its own on loopback, never the packaged service.
    apt_opts=--no-install-recommends apt_install prometheus
    say "ruff"
    .venv/bin/ruff check .
    say "mypy (the whole package)"
    .venv/bin/mypy -p trace_reclaim
    say "pytest"
    exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" ;;
test-vm)
    # Every plan (fentry, kprobe, tracepoint) on a kernel that offers them
    # all: trace_reclaim/vm.py boots it with virtme-ng, sharing this machine's
    # root read-only; tests/vm/guest.sh runs tests/vm inside.  QEMU and
    # busybox from Debian, virtme-ng from PyPI into .venv; the kernel image is
    # extracted under /var/cache/trace-reclaim/kernels, its headers installed.
    kernel=${1:-6.12}
    [ $# -gt 0 ] && shift
    [ "$arch" = amd64 ] || die "test-vm boots amd64 kernels only (this is $arch)" \
                              "run it on an x86-64 machine"
    # qemu-system-x86 without its recommends (GUI, audio): the guest runs headless.
    # bpfcc-tools (drsnoop) and bpftrace: the peers counted beside us in the guest;
    # linux-perf: perf stat beside a trace (tests/vm/test_attach_plans.py).
    apt_opts=--no-install-recommends apt_install qemu-system-x86 busybox-static kmod \
        xz-utils e2fsprogs bpfcc-tools bpftrace linux-perf
    if ! .venv/bin/python -c "import virtme_ng" 2>/dev/null; then
        say "installing virtme-ng into .venv"
        .venv/bin/python -m pip install -q --disable-pip-version-check virtme-ng >&2
    fi
    # drgn reads the guest kernel's memory for the ground-truth tests (with
    # the kernel's debug-info vmlinux, fetched by --debug-info below).
    if ! .venv/bin/python -c "import drgn" 2>/dev/null; then
        say "installing drgn into .venv"
        .venv/bin/python -m pip install -q --disable-pip-version-check drgn >&2
    fi
    # The kernel packages are looked up in the apt lists: make sure there are some.
    if [ -z "$apt_updated" ] && [ -z "$(apt-cache pkgnames linux-image- | head -n1)" ]; then
        say "apt-get update"; apt-get update -qq >&2; apt_updated=1
    fi
    say "test-vm: kernel $kernel"
    exec .venv/bin/python -m trace_reclaim.vm run "$kernel" --debug-info --timeout 3600 \
        --env TRACE_RECLAIM_REQUIRE_LIVE=1 -- sh tests/vm/guest.sh "$@" ;;
*)
    die "unknown command: $cmd" "use: sudo ./bootstrap.sh trace [ARGS] | test [PYTEST ARGS] | test-vm [KERNEL]" ;;
esac
