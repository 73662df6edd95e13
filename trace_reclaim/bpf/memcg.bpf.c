/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Memory cgroup (memcg) reclaim: a cgroup over its limit reclaiming its own
 * pages, which /proc/vmstat's allocstall_* and pgsteal_* never count
 * (shrink_inactive_list() counts those vm events only when
 * !cgroup_reclaim(sc)).
 *
 * try_to_free_mem_cgroup_pages() fires mm_vmscan_memcg_reclaim_begin/end;
 * mem_cgroup_shrink_node() (v1 soft limit, from kswapd and direct reclaim)
 * fires mm_vmscan_memcg_softlimit_reclaim_begin/end.  Both pairs are matched
 * per thread in the kernel into one record, as direct reclaim is.  The
 * tracepoints carry no memcg, so the record carries the reclaiming task's
 * cgroup ids and the return addresses above the tracepoint: user space
 * names the caller, which says the limit (try_charge_memcg: memory.max or
 * limit_in_bytes; reclaim_high: memory.high; memory_reclaim: proactive).
 */

#define MEMCG_CALLER_FRAMES 4

struct memcg_reclaim_begin_state {
	__u64 ts_ns;
	__u64 gfp_flags;
	__u64 ips[MEMCG_CALLER_FRAMES];
	__s32 order;
	__u32 kind;
};

/* The callers seen (value unused): symbolized live by tracers/memcg.py. */
BPF_HASH(memcg_callers, __u64, __u8, 256);

/* Bounded: one entry per thread inside memcg reclaim at once, per kind. */
BPF_HASH(memcg_reclaim_begin, __u32, struct memcg_reclaim_begin_state, 10240);
BPF_HASH(memcg_softlimit_begin, __u32, struct memcg_reclaim_begin_state, 10240);

static __always_inline void memcg_note_caller(__u64 ip)
{
	__u8 one = 1;

	if (ip)
		memcg_callers.update(&ip, &one);
}

static __always_inline int memcg_begin(void *ctx, int order, __u64 gfp, __u32 kind)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct memcg_reclaim_begin_state st = {};

#if defined(RECLAIM_MEMCG_LRU) && defined(OBJECT_RECLAIM)
	/* reclaim.bpf.c's bracket: one program per tracepoint in an object */
	if (kind == MEMCG_RECLAIM_LIMIT)
		memcg_reclaim_enter();
#ifdef RECLAIM_MEMCG_SOFTLIMIT_LRU
	else
		memcg_reclaim_enter();
#endif
#endif
	if (!tgid_wanted(id >> 32) || !cgroup_wanted())
		return 0;
	st.ts_ns = bpf_ktime_get_ns();
	st.gfp_flags = gfp;
	st.order = order;
	st.kind = kind;
	/* frame 0 is the function holding the tracepoint; 1.. its callers */
	bpf_get_stack(ctx, st.ips, sizeof(st.ips), 0);
	memcg_note_caller(st.ips[1]);
	memcg_note_caller(st.ips[2]);
	memcg_note_caller(st.ips[3]);
	/* bcc rewrites map calls by name only: one call per map */
	if (kind == MEMCG_RECLAIM_SOFTLIMIT)
		memcg_softlimit_begin.update(&tid, &st);
	else
		memcg_reclaim_begin.update(&tid, &st);
	return 0;
}

static __always_inline int memcg_end(__u32 kind, __u64 nr_reclaimed)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct memcg_reclaim_begin_state *start, begin;
	struct memcg_reclaim_event *e;
	struct task_cgroups cg;

#if defined(RECLAIM_MEMCG_LRU) && defined(OBJECT_RECLAIM)
	memcg_reclaim_leave();
#endif

	if (kind == MEMCG_RECLAIM_SOFTLIMIT)
		start = memcg_softlimit_begin.lookup(&tid);
	else
		start = memcg_reclaim_begin.lookup(&tid);
	if (!start)
		return 0;	/* began before we attached, or filtered out */
	begin = *start;
	if (kind == MEMCG_RECLAIM_SOFTLIMIT)
		memcg_softlimit_begin.delete(&tid);
	else
		memcg_reclaim_begin.delete(&tid);

	e = reserve_event(sizeof(*e), EV_MEMCG_RECLAIM);
	if (!e)
		return 0;
	e->delta_ns = e->hdr.ts_ns - begin.ts_ns;
	e->gfp_flags = begin.gfp_flags;
	e->nr_reclaimed_pages = nr_reclaimed;
	cg = current_cgroups();
	e->cgroup_id = cg.cgroup_id;
	e->memcg_id = cg.memcg_id;
	e->caller0_ip = begin.ips[1];
	e->caller1_ip = begin.ips[2];
	e->caller2_ip = begin.ips[3];
	e->order = begin.order;
	e->kind = begin.kind;
	submit_event(e);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin)
{
	memcg_begin(args, args->order, args->gfp_flags, MEMCG_RECLAIM_LIMIT);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end)
{
	memcg_end(MEMCG_RECLAIM_LIMIT, args->nr_reclaimed);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_softlimit_reclaim_begin)
{
	memcg_begin(args, args->order, args->gfp_flags, MEMCG_RECLAIM_SOFTLIMIT);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_softlimit_reclaim_end)
{
	memcg_end(MEMCG_RECLAIM_SOFTLIMIT, args->nr_reclaimed);
	return TP_PASS;
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	struct cgroup_mkdir_event *e;

	e = reserve_event(sizeof(*e), EV_CGROUP_MKDIR);
	if (!e)
		return TP_PASS;
	e->id = args->id;
	e->root = args->root;
	e->level = args->level;
	__builtin_memset(e->path, 0, sizeof(e->path));
	TP_DATA_LOC_READ_STR(e->path, path, sizeof(e->path));
	submit_event(e);
	return TP_PASS;
}
