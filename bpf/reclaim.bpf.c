/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kswapd and direct reclaim, from the vmscan tracepoints.
 *
 * Direct reclaim begin/end are paired in the kernel by thread id, so one
 * record carries the latency (the drsnoop way): half the ring buffer
 * traffic, and no pairing left for user space to get wrong.
 */

struct direct_reclaim_begin_state {
	__u64 ts_ns;
	__u64 gfp_flags;
	__s32 order;
};

/* Bounded: one entry per thread inside direct reclaim at once. */
BPF_HASH(direct_reclaim_begin, __u32, struct direct_reclaim_begin_state, 10240);

TRACEPOINT_PROBE(vmscan, mm_vmscan_wakeup_kswapd)
{
	struct wakeup_kswapd_event *e;

	e = reserve_event(sizeof(*e), EV_WAKEUP_KSWAPD);
	if (!e)
		return 0;
	e->gfp_flags = args->gfp_flags;
	e->nid = args->nid;
	e->zid = args->zid;
	e->order = args->order;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake)
{
	struct kswapd_wake_event *e;

	e = reserve_event(sizeof(*e), EV_KSWAPD_WAKE);
	if (!e)
		return 0;
	e->nid = args->nid;
	e->zid = args->zid;
	e->order = args->order;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_sleep)
{
	struct kswapd_wake_event *e;

	e = reserve_event(sizeof(*e), EV_KSWAPD_SLEEP);
	if (!e)
		return 0;
	e->nid = args->nid;
	e->zid = -1;
	e->order = -1;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct direct_reclaim_begin_state start = {};

	if (!tgid_wanted(id >> 32))
		return 0;
	start.ts_ns = bpf_ktime_get_ns();
	start.gfp_flags = args->gfp_flags;
	start.order = args->order;
	direct_reclaim_begin.update(&tid, &start);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *start, begin;
	struct direct_reclaim_event *e;

	start = direct_reclaim_begin.lookup(&tid);
	if (!start)
		return 0;	/* began before we attached, or filtered out */
	begin = *start;
	direct_reclaim_begin.delete(&tid);

	e = reserve_event(sizeof(*e), EV_DIRECT_RECLAIM);
	if (!e)
		return 0;
	e->delta_ns = e->hdr.ts_ns - begin.ts_ns;
	e->gfp_flags = begin.gfp_flags;
	e->order = begin.order;
	e->nr_reclaimed_pages = args->nr_reclaimed;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
	return 0;
}
