/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kswapd and direct reclaim, from the vmscan tracepoints: what must be
 * attached for tracing to begin.  The LRU page counts and the inferred
 * retries are in reclaim_lru.bpf.c, which attaches with the next object
 * (ReclaimTracer.later_source).
 *
 * Direct reclaim begin/end are paired in the kernel by thread id, so one
 * record carries the latency (the drsnoop way): half the ring buffer
 * traffic, and no pairing left for user space to get wrong.
 */
#include "reclaim.bpf.h"

/*
 * Bounded: one entry per thread inside direct reclaim at once.  Shared:
 * reclaim_lru.bpf.c counts the retries of the direct reclaims in it.
 */
SHARED_MAP("hash", __u32, struct direct_reclaim_begin_state, direct_reclaim_begin, 10240);
EXPORT_MAP(direct_reclaim_begin);

#ifdef RECLAIM_MEMCG_LRU
/*
 * Threads inside memcg reclaim now (value unused); bounded like the others.
 * A thread that starts global reclaim (direct, or kswapd's balance_pgdat())
 * is in no memcg reclaim: its entry goes, so one whose end came before that
 * program was attached is not counted as memcg for long.  Kept here, from
 * the start, for reclaim_lru.bpf.c's reclaimer().
 */
SHARED_MAP("hash", __u32, __u8, memcg_reclaiming, 10240);
EXPORT_MAP(memcg_reclaiming);

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
 * A direct reclaim's retries, exactly (RECLAIM_PASS_FENTRY or _KPROBE, where
 * the kernel lets us): do_try_to_free_pages() may run its priority loop more
 * than once for one begin/end pair ("goto retry" when a pass reclaimed
 * nothing but skipped deactivation or memcg low protection) and counts
 * ALLOCSTALL each time.  The loop calls vmpressure_prio(gfp, memcg,
 * priority) once per priority of every pass (not for proactive reclaim,
 * which is never direct), and the priority only falls within a pass
 * (lru_gen's set_initial_priority() may lower it at the first one): a call
 * at a priority no lower than the last, inside one direct reclaim, starts
 * another pass.  Attached first with the records it completes, so
 * "exact" holds for every stall traced.  Otherwise reclaim_lru.bpf.c infers
 * them, a lower bound.
 */
#if defined(RECLAIM_PASS_FENTRY) || defined(RECLAIM_PASS_KPROBE)
static __always_inline void direct_reclaim_pass(int priority)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *st = direct_reclaim_begin.lookup(&tid);

	if (!st)
		return;
	if (st->last_priority >= 0 && priority >= st->last_priority)
		st->retries++;
	st->last_priority = priority;
}
#endif

#if defined(RECLAIM_PASS_FENTRY)
KFUNC_PROBE(vmpressure_prio, unsigned int gfp, void *memcg, int prio)
{
	direct_reclaim_pass(prio);
	return 0;
}
#elif defined(RECLAIM_PASS_KPROBE)
int kprobe__vmpressure_prio(struct pt_regs *ctx)
{
	direct_reclaim_pass((int)PT_REGS_PARM3(ctx));
	return 0;
}
#endif
