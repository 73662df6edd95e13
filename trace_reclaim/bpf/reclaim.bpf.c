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

#ifdef RECLAIM_MEMCG_LRU
/*
 * Threads inside memcg reclaim now (value unused); bounded like the others.
 * A thread that starts global reclaim (direct, or kswapd's balance_pgdat())
 * is in no memcg reclaim: its entry goes, so one whose end came before that
 * program was attached is not counted as memcg for long.
 */
BPF_HASH(memcg_reclaiming, __u32, __u8, 10240);

static __always_inline void memcg_reclaim_enter(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u8 one = 1;

	memcg_reclaiming.update(&tid, &one);
}

static __always_inline void memcg_reclaim_leave(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	memcg_reclaiming.delete(&tid);
}

/*
 * One object probes a tracepoint once: where memcg.bpf.c is in this object,
 * its programs on these tracepoints call memcg_reclaim_enter/leave().
 */
#ifndef OBJECT_MEMCG
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin)
{
	memcg_reclaim_enter();
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end)
{
	memcg_reclaim_leave();
	return TP_PASS;
}

#ifdef RECLAIM_MEMCG_SOFTLIMIT_LRU
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_softlimit_reclaim_begin)
{
	memcg_reclaim_enter();
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_softlimit_reclaim_end)
{
	memcg_reclaim_leave();
	return TP_PASS;
}
#endif
#endif /* !OBJECT_MEMCG */
#endif /* RECLAIM_MEMCG_LRU */

TRACEPOINT_PROBE(vmscan, mm_vmscan_wakeup_kswapd)
{
	struct wakeup_kswapd_event *e;

	e = reserve_event(sizeof(*e), EV_WAKEUP_KSWAPD);
	if (!e)
		return TP_PASS;
	e->gfp_flags = args->gfp_flags;
	e->nid = args->nid;
	e->zid = args->zid;
	e->order = args->order;
	e->pad = 0;
	submit_event(e);
	return TP_PASS;
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
	submit_event(e);
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake)
{
#ifdef RECLAIM_MEMCG_LRU
	memcg_reclaim_leave();	/* balance_pgdat() follows: global reclaim */
#endif
	emit_kswapd(EV_KSWAPD_WAKE, args->nid, args->zid, args->order);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_sleep)
{
	emit_kswapd(EV_KSWAPD_SLEEP, args->nid, -1, -1);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct direct_reclaim_begin_state start = {};

#ifdef RECLAIM_MEMCG_LRU
	memcg_reclaim_leave();	/* try_to_free_pages(): global reclaim */
#endif
	if (!tgid_wanted(id >> 32) || !cgroup_wanted())
		return TP_PASS;
	start.ts_ns = bpf_ktime_get_ns();
	start.gfp_flags = args->gfp_flags;
	start.order = args->order;
	start.last_priority = -1;
	direct_reclaim_begin.update(&tid, &start);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *start, begin;
	struct direct_reclaim_event *e;
	struct task_cgroups cg;

	start = direct_reclaim_begin.lookup(&tid);
	if (!start)
		return TP_PASS;	/* began before we attached, or filtered out */
	begin = *start;
	direct_reclaim_begin.delete(&tid);

	e = reserve_event(sizeof(*e), EV_DIRECT_RECLAIM);
	if (!e)
		return TP_PASS;
	e->delta_ns = e->hdr.ts_ns - begin.ts_ns;
	e->gfp_flags = begin.gfp_flags;
	e->order = begin.order;
	e->nr_reclaimed_pages = args->nr_reclaimed;
	e->retries = begin.retries;
	cg = current_cgroups();
	e->cgroup_id = cg.cgroup_id;
	e->memcg_id = cg.memcg_id;
	submit_event(e);
	return TP_PASS;
}

/*
 * LRU pages scanned and reclaimed, summed in the kernel per reclaimer the
 * way mm/vmscan.c's reclaimer_offset() attributes pgscan_* and pgsteal_*:
 * kswapd, khugepaged, and everyone else ("direct").  shrink_inactive_list()
 * passes the same nr_scanned and nr_reclaimed to mm_vmscan_lru_shrink_inactive
 * as to those counters, but counts them only for global reclaim
 * (!cgroup_reclaim(sc)): memcg reclaim, a cgroup reclaiming its own pages at
 * its limit (try_to_free_mem_cgroup_pages()) or over its v1 soft limit
 * (mem_cgroup_shrink_node(), from kswapd too), is in no /proc/vmstat counter
 * (only in the cgroup's memory.stat).  With RECLAIM_MEMCG_LRU the threads
 * inside it are known (memcg_reclaiming, kept at the memcg reclaim
 * tracepoints) and their pages go to "memcg"; without it they are in "direct".
 *
 * The multi-gen LRU (CONFIG_LRU_GEN, /sys/kernel/mm/lru_gen/enabled) reclaims
 * in evict_folios() instead, which since Linux 6.7 (commit 8c2214fc9a47,
 * "mm: multi-gen LRU: reuse some legacy trace events") emits the same
 * mm_vmscan_lru_shrink_inactive with the pages it reclaimed (pgsteal_*), but
 * counts pgscan_* as the folios scan_folios() isolated: the nr_taken of its
 * mm_vmscan_lru_isolate (its nr_scanned there is folios looked at).  Both
 * sums are kept; tracers/reclaim.py reports the one the running LRU counts.
 */
struct lru_counts {
	__u64 calls;
	__u64 nr_scanned;		/* mm_vmscan_lru_shrink_inactive nr_scanned */
	__u64 nr_reclaimed;		/* mm_vmscan_lru_shrink_inactive nr_reclaimed */
	__u64 nr_taken;			/* mm_vmscan_lru_isolate nr_taken, inactive lists */
};

/* Slots: enum reclaimer (events.h). */
BPF_PERCPU_ARRAY(lru_reclaim, struct lru_counts, RECLAIMER_NR);

static __always_inline __u32 reclaimer(void)
{
	char comm[TASK_COMM_LEN_TR];
#ifdef RECLAIM_MEMCG_LRU
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (memcg_reclaiming.lookup(&tid))
		return RECLAIMER_MEMCG;	/* kswapd's soft limit reclaim too */
#endif

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
 * Also: do_try_to_free_pages() may run its priority loop more than once for
 * one begin/end pair ("goto retry" when a pass reclaimed nothing but skipped
 * deactivation or memcg low protection) and counts ALLOCSTALL each time.
 *
 * RECLAIM_PASS_FENTRY / RECLAIM_PASS_KPROBE: exact.  The loop calls
 * vmpressure_prio(gfp, memcg, priority) once per priority of every pass
 * (not for proactive reclaim, which is never direct), and the priority only
 * falls within a pass (lru_gen's set_initial_priority() may lower it at the
 * first one): a call at a priority no lower than the last, inside one direct
 * reclaim, starts another pass.
 *
 * Otherwise, inferred from the tracepoints: an LRU shrink or a shrink_slab()
 * at a higher priority than the last one, inside one direct reclaim, is a
 * retry.  Both are needed: a pass of the multi-gen LRU that evicts nothing
 * emits no LRU event, but a pass calls shrink_slab() with its priority (seen:
 * 95 retries of 113 stalls under hugetlb allocation, 3 of them visible in the
 * LRU events alone).  A pass with nothing to evict and no shrinker with
 * anything freeable (do_shrink_slab() returns before mm_shrink_slab_start)
 * emits nothing and is missed: a lower bound.
 */
static __always_inline void direct_reclaim_priority(int priority, int pass_start)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *st = direct_reclaim_begin.lookup(&tid);

	if (!st)
		return;
	if (st->last_priority >= 0 &&
	    (priority > st->last_priority || (pass_start && priority == st->last_priority)))
		st->retries++;
	st->last_priority = priority;
}

#if defined(RECLAIM_PASS_FENTRY)
KFUNC_PROBE(vmpressure_prio, unsigned int gfp, void *memcg, int prio)
{
	direct_reclaim_priority(prio, 1);
	return 0;
}
#elif defined(RECLAIM_PASS_KPROBE)
int kprobe__vmpressure_prio(struct pt_regs *ctx)
{
	direct_reclaim_priority((int)PT_REGS_PARM3(ctx), 1);
	return 0;
}
#endif

#if defined(RECLAIM_PASS_FENTRY) || defined(RECLAIM_PASS_KPROBE)
#define direct_reclaim_inferred(priority) do { } while (0)
#else
#define direct_reclaim_inferred(priority) direct_reclaim_priority(priority, 0)
#endif

TRACEPOINT_PROBE(vmscan, mm_vmscan_lru_shrink_inactive)
{
	__u32 who = reclaimer();
	struct lru_counts *c = lru_reclaim.lookup(&who);

	if (c) {
		c->calls++;
		c->nr_scanned += args->nr_scanned;
		c->nr_reclaimed += args->nr_reclaimed;
	}
	direct_reclaim_inferred(args->priority);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_lru_isolate)
{
	__u32 who;
	struct lru_counts *c;

	/* LRU_INACTIVE_ANON (0) and LRU_INACTIVE_FILE (2): the lists pgscan counts */
	if (args->lru != 0 && args->lru != 2)
		return TP_PASS;
	who = reclaimer();
	c = lru_reclaim.lookup(&who);
	if (c)
		c->nr_taken += args->nr_taken;
	return TP_PASS;
}

#if defined(RECLAIM_SHRINK_PRIORITY_ARG) && !defined(RECLAIM_PASS_FENTRY) && \
	!defined(RECLAIM_PASS_KPROBE)
/*
 * mm_shrink_slab_start's priority (a raw tracepoint: slab.bpf.c has the
 * TRACEPOINT_PROBE on it); the argument index is checked in the running
 * kernel's BTF by tracers/reclaim.py.
 */
RAW_TRACEPOINT_PROBE(mm_shrink_slab_start)
{
	direct_reclaim_inferred((int)ctx->args[RECLAIM_SHRINK_PRIORITY_ARG]);
	return 0;
}
#endif
