/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The reclaim tracer's in-kernel counts: LRU pages scanned and reclaimed per
 * reclaimer, and (where nothing exact attaches) a direct reclaim's retries,
 * inferred.  Programs that only count, into maps user space samples, never
 * records: so they may attach after tracing has begun, compiled into the
 * object after the first (ReclaimTracer.later_source; the report checks
 * them against /proc/vmstat from their own attach on).  Apart from
 * reclaim.bpf.c, they name its maps as that object's (MAPS_EXTERN); in one
 * object with it, they follow it.
 */
#ifndef OBJECT_RECLAIM
#ifndef MAPS_EXTERN
#error "reclaim_lru.bpf.c needs reclaim.bpf.c in this object or an earlier one"
#endif
#include "reclaim.bpf.h"
SHARED_MAP("hash", __u32, struct direct_reclaim_begin_state, direct_reclaim_begin, 10240);
#ifdef RECLAIM_MEMCG_LRU
SHARED_MAP("hash", __u32, __u8, memcg_reclaiming, 10240);
#endif
#endif /* !OBJECT_RECLAIM */

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
 * A direct reclaim's retries, inferred where no exact probe attaches
 * (reclaim.bpf.c has those): do_try_to_free_pages() may run its priority
 * loop more than once for one begin/end pair and counts ALLOCSTALL each
 * time.  An LRU shrink or a shrink_slab() at a higher priority than the last
 * one, inside one direct reclaim, is a retry.  Both are needed: a pass of the
 * multi-gen LRU that evicts nothing emits no LRU event, but a pass calls
 * shrink_slab() with its priority (seen: 95 retries of 113 stalls under
 * hugetlb allocation, 3 of them visible in the LRU events alone).  A pass
 * with nothing to evict and no shrinker with anything freeable
 * (do_shrink_slab() returns before mm_shrink_slab_start) emits nothing and
 * is missed, as is a retry before these programs attached: a lower bound.
 */
#if defined(RECLAIM_PASS_FENTRY) || defined(RECLAIM_PASS_KPROBE)
#define direct_reclaim_inferred(priority) do { } while (0)
#else
static __always_inline void direct_reclaim_inferred(int priority)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct direct_reclaim_begin_state *st = direct_reclaim_begin.lookup(&tid);

	if (!st)
		return;
	if (st->last_priority >= 0 && priority > st->last_priority)
		st->retries++;
	st->last_priority = priority;
}
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
