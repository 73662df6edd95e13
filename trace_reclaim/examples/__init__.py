"""Workloads that make the running kernel produce reclaim, vmalloc and slab events.

Each module is importable (``from examples import pressure``) and runnable
(``python3 examples/pressure.py --help``).  Every workload puts back what it
changes in the kernel (sysctls, hugetlb ballast, zram devices, swap) on every
exit path Python can see: normal return, exception, SIGINT and SIGTERM
(``_restore.py``).  SIGKILL cannot be caught; after one, undo by hand:
``echo 0 > /proc/sys/vm/nr_hugepages``, ``swapoff /dev/zramN``,
``echo 1 > /sys/block/zramN/reset``, ``echo N > /sys/class/zram-control/hot_remove``.
"""
