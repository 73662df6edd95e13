#!/bin/sh
# In a guest: flip the static keys of five kmem tracepoints (text_poke_bp on
# kmalloc/kfree) for DUR seconds while two loops keep both vCPUs in kmalloc
# and kfree.  Prints "flips: N" and the number of oopses in the kernel log.
# tests/vmhost/test_tcg_coherence.py runs it; multi-threaded TCG (QEMU 7.2)
# oopses on a stale int3 within seconds.
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
T=/sys/kernel/tracing/events/kmem
end=$(( $(cut -d. -f1 /proc/uptime) + ${DUR:-120} ))
( while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do cat /proc/self/status >/dev/null; ls /proc >/dev/null; done ) &
( while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do cat /proc/self/maps >/dev/null; ls /sys/kernel >/dev/null; done ) &
n=0
while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do
  for e in kmalloc kfree kmem_cache_alloc kmem_cache_free mm_page_alloc; do echo 1 > $T/$e/enable; done
  for e in kmalloc kfree kmem_cache_alloc kmem_cache_free mm_page_alloc; do echo 0 > $T/$e/enable; done
  n=$((n+1))
done
wait
echo "flips: $n"
echo "oopses: $(dmesg | grep -c -i oops)"
