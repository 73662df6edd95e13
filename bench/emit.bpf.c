/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Benchmark-only: one wakeup_kswapd-shaped record per getppid() of the
 * generator process (TARG_TGID), so bench/record_throughput.py can drive
 * the real ring buffer -> decoder -> recording -> correlator path at a
 * chosen rate.  Never part of trace-reclaim's own program.
 */
BPF_PERCPU_ARRAY(bench_emitted, __u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
	struct wakeup_kswapd_event *e;
	__u32 zero = 0;
	__u64 *n;

	if (!tgid_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	n = bench_emitted.lookup(&zero);
	if (n)
		(*n)++;
	e = reserve_event(sizeof(*e), EV_WAKEUP_KSWAPD);
	if (!e)
		return 0;
	e->gfp_flags = 0xcc0;
	e->nid = 0;
	e->zid = 2;
	e->order = 0;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
	return 0;
}
