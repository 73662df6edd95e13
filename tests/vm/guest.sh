#!/bin/sh
# The vm tier, inside the guest that `bootstrap.sh test-vm` boots
# (trace_reclaim/vm.py): says which kernel this is, then runs tests/vm.
# The checkout is the host's, shared read-only: nothing is written into it.
export PYTHONDONTWRITEBYTECODE=1
up=$(cut -d' ' -f1 /proc/uptime)
echo "guest: Linux $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, command started at uptime ${up}s"
# A BPF compile under emulation takes minutes (tests/livetools.py's Trace).
export TRACE_RECLAIM_READY_TIMEOUT=900
base=/var/tmp/trace-reclaim-vm-pytest
rm -rf "$base"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --capture=sys --basetemp="$base" \
    -m vm -rfEP --durations=0 tests/vm "$@"
