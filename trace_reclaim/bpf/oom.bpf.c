/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the page allocator did at the end of its slow path: compaction runs,
 * the reclaim and compaction retry decisions, and the OOM victim.
 *
 * mm_compaction_begin/end are paired per thread in the kernel, like direct
 * reclaim, so one record carries the run's latency and result.  All four
 * events are rare next to vmscan's: they fire only when reclaim is failing.
 */

struct compaction_begin_state {
	__u64 ts_ns;
};

/* Bounded: one entry per thread inside compact_zone() at once. */
BPF_HASH(compaction_begin, __u32, struct compaction_begin_state, 10240);

TRACEPOINT_PROBE(oom, mark_victim)
{
	struct mark_victim_event *e;
	struct task_cgroups cg;

	e = reserve_event(sizeof(*e), EV_MARK_VICTIM);
	if (!e)
		return TP_PASS;
	e->total_vm_kb = args->total_vm;
	e->anon_rss_kb = args->anon_rss;
	e->file_rss_kb = args->file_rss;
	e->shmem_rss_kb = args->shmem_rss;
	e->pgtables_kb = args->pgtables;
	e->victim_pid = args->pid;
	e->uid = args->uid;
	e->oom_score_adj = args->oom_score_adj;
	e->pad = 0;
	__builtin_memset(e->victim_comm, 0, sizeof(e->victim_comm));
	TP_DATA_LOC_READ_STR(e->victim_comm, comm, sizeof(e->victim_comm));
	cg = current_cgroups();
	e->cgroup_id = cg.cgroup_id;
	e->memcg_id = cg.memcg_id;
	submit_event(e);
	return TP_PASS;
}

TRACEPOINT_PROBE(compaction, mm_compaction_begin)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct compaction_begin_state start = {};

	start.ts_ns = bpf_ktime_get_ns();
	compaction_begin.update(&tid, &start);
	return TP_PASS;
}

TRACEPOINT_PROBE(compaction, mm_compaction_end)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct compaction_begin_state *start;
	struct compaction_event *e;
	__u64 begin_ns;

	start = compaction_begin.lookup(&tid);
	if (!start)
		return TP_PASS;	/* began before we attached */
	begin_ns = start->ts_ns;
	compaction_begin.delete(&tid);

	e = reserve_event(sizeof(*e), EV_COMPACTION);
	if (!e)
		return TP_PASS;
	e->delta_ns = e->hdr.ts_ns - begin_ns;
	e->zone_start_pfn = args->zone_start;
	e->zone_end_pfn = args->zone_end;
	e->migrate_pfn = args->migrate_pfn;
	e->free_pfn = args->free_pfn;
	e->status = args->status;
	e->sync = args->sync;
	submit_event(e);
	return TP_PASS;
}

TRACEPOINT_PROBE(oom, reclaim_retry_zone)
{
	struct reclaim_retry_zone_event *e;

	e = reserve_event(sizeof(*e), EV_RECLAIM_RETRY_ZONE);
	if (!e)
		return TP_PASS;
	e->reclaimable_pages = args->reclaimable;
	e->available_pages = args->available;
	e->min_wmark_pages = args->min_wmark;
	e->nid = args->node;
	e->zid = args->zone_idx;
	e->order = args->order;
	e->no_progress_loops = args->no_progress_loops;
	e->wmark_check = args->wmark_check;
	e->pad = 0;
	submit_event(e);
	return TP_PASS;
}

TRACEPOINT_PROBE(oom, compact_retry)
{
	struct compact_retry_event *e;

	e = reserve_event(sizeof(*e), EV_COMPACT_RETRY);
	if (!e)
		return TP_PASS;
	e->order = args->order;
	e->priority = args->priority;
	e->result = args->result;
	e->retries = args->retries;
	e->max_retries = args->max_retries;
	e->retry = args->ret;
	submit_event(e);
	return TP_PASS;
}
