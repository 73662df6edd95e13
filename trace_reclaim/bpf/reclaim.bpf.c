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
	__s32 last_priority;		/* of the last LRU shrink seen, or -1 */
	__u32 retries;
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

static __always_inline void emit_kswapd(__u32 type, int nid, int zid, int order)
{
	struct kswapd_wake_event *e = reserve_event(sizeof(*e), type);

	if (!e)
		return;
	e->nid = nid;
	e->zid = zid;
	e->order = order;
	e->pad = 0;
	events.ringbuf_submit(e, 0);
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake)
{
	emit_kswapd(EV_KSWAPD_WAKE, args->nid, args->zid, args->order);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_sleep)
{
	emit_kswapd(EV_KSWAPD_SLEEP, args->nid, -1, -1);
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
	start.last_priority = -1;
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
	e->retries = begin.retries;
	events.ringbuf_submit(e, 0);
	return 0;
}

/*
 * LRU pages scanned and reclaimed, summed in the kernel per reclaimer the
 * way mm/vmscan.c's reclaimer_offset() attributes pgscan_* and pgsteal_*:
 * kswapd, khugepaged, and everyone else ("direct", which includes memcg
 * limit reclaim).  shrink_inactive_list() passes the same nr_scanned and
 * nr_reclaimed to this tracepoint as to those counters.
 */
struct lru_counts {
	__u64 calls;
	__u64 nr_scanned;
	__u64 nr_reclaimed;
};

/* Slots: enum reclaimer (events.h). */
BPF_PERCPU_ARRAY(lru_reclaim, struct lru_counts, RECLAIMER_NR);

static __always_inline __u32 reclaimer(void)
{
	char comm[TASK_COMM_LEN_TR];

	bpf_get_current_comm(&comm, sizeof(comm));
	if (comm[0] == 'k' && comm[1] == 's' && comm[2] == 'w' && comm[3] == 'a' &&
	    comm[4] == 'p' && comm[5] == 'd')
		return RECLAIMER_KSWAPD;
	if (comm[0] == 'k' && comm[1] == 'h' && comm[2] == 'u' && comm[3] == 'g' &&
	    comm[4] == 'e' && comm[5] == 'p' && comm[6] == 'a' && comm[7] == 'g' &&
	    comm[8] == 'e' && comm[9] == 'd')
		return RECLAIMER_KHUGEPAGED;
	return RECLAIMER_DIRECT;
}

/*
 * Also: do_try_to_free_pages() may run its priority loop twice for one
 * begin/end pair ("goto retry" when a pass reclaimed nothing but skipped
 * deactivation or memcg low protection) and counts ALLOCSTALL each time.
 * A pass walks priority DEF_PRIORITY down to 0, so an LRU shrink at a higher
 * priority than the last one, inside one direct reclaim, is a retry.
 */
TRACEPOINT_PROBE(vmscan, mm_vmscan_lru_shrink_inactive)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *st;
	__u32 who = reclaimer();
	struct lru_counts *c = lru_reclaim.lookup(&who);

	if (c) {
		c->calls++;
		c->nr_scanned += args->nr_scanned;
		c->nr_reclaimed += args->nr_reclaimed;
	}
	st = direct_reclaim_begin.lookup(&tid);
	if (!st)
		return 0;
	if (st->last_priority >= 0 && args->priority > st->last_priority)
		st->retries++;
	st->last_priority = args->priority;
	return 0;
}
