/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by every tracer (joined before the tracer files, not #included:
 * see bpf_source() in trace_reclaim/objects.py): the one ring buffer all records go through, the
 * per-type count of records the ring buffer had no room for, and the header
 * fill.  Tunables arrive as -D cflags from trace_reclaim/objects.py:
 *   RINGBUF_PAGES  ring buffer size in pages (power of two)
 *   TARG_TGID      only this process (0: all); kernel threads are never filtered
 *   CG_TASK_CGROUPS_OFF, CG_CSS_SET_SUBSYS_OFF, CG_MEMORY_CGRP_ID,
 *   CG_CSS_CGROUP_OFF, CG_CGROUP_KN_OFF, CG_KERNFS_ID_OFF
 *                  offsets from the running kernel's BTF for current_memcg_id()
 *                  (tracers/memcg.py; absent: memcg ids are 0)
 *   CGROUP_FILTER  -c/--cgroup given: only tasks in cgroup_filter's cgroups
 *   NEED_PT_REGS   a kprobe plan was chosen (some -D..._KPROBE...): its
 *                  programs read struct pt_regs (PT_REGS_PARM1, PT_REGS_SP)
 *   MAPS_EXPORT    this object is the first of several (record and live
 *                  attach the reclaim programs first, the rest after): it
 *                  owns the shared maps below and exports them by name
 *   MAPS_EXTERN    a later object: the shared maps are the first object's
 *                  (bcc resolves them by name in its in-process table store),
 *                  so every record goes through one ring buffer and every
 *                  loss into one count
 */
#ifndef TRACE_RECLAIM_COMMON_BPF_H
#define TRACE_RECLAIM_COMMON_BPF_H

/*
 * bcc parses every header included here on each start, on top of the ones
 * its helpers.h always includes: <linux/sched.h> alone more than doubled the
 * compile time (bench/attach_time.py).  Tracepoint and fentry programs need
 * nothing more; kprobe programs need struct pt_regs.
 */
#ifdef NEED_PT_REGS
#include <uapi/linux/ptrace.h>
#endif
#include "events.h"

/*
 * What every TRACEPOINT_PROBE returns, on every path.  A classic tracepoint
 * runs its BPF programs in perf_trace_run_bpf_submit(), and only if they
 * return non-zero does the event go on to the perf events open on that
 * tracepoint: returning 0, as bcc's tools do, hides it from `perf stat`,
 * `perf record` and `perf trace -e vmscan:*` for as long as we trace.  Our own
 * perf events, through which the programs attach, are disabled once attached
 * (objects.quiet_own_perf_events), so an event nobody else listens to costs
 * nothing more than before.  Raw tracepoint, fentry and kprobe programs'
 * return values decide nothing of the kind.
 */
#define TP_PASS 1

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef TARG_TGID
#define TARG_TGID 0
#endif

#ifdef MAPS_EXTERN
/* BPF_RINGBUF_OUTPUT's map type, declared as another object's (bcc 0.26 has no macro). */
struct events_table_t {
	int key;
	u32 leaf;
	int (*ringbuf_output) (void *, u64, u64);
	void *(*ringbuf_reserve) (u64);
	void (*ringbuf_discard) (void *, u64);
	void (*ringbuf_submit) (void *, u64);
	u32 max_entries;
};
__attribute__((section("maps/extern"))) struct events_table_t events;
#define SHARED_MAP(_type, _key, _leaf, _name, _size) \
	BPF_TABLE("extern", _key, _leaf, _name, _size)
#else
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#define SHARED_MAP(_type, _key, _leaf, _name, _size) \
	BPF_TABLE(_type, _key, _leaf, _name, _size)
#endif
#ifdef MAPS_EXPORT
/* What BPF_TABLE_PUBLIC adds: the name, visible to the later objects. */
#define EXPORT_MAP(_name) \
	__attribute__((section("maps/export"))) struct _name##_table_t __##_name
EXPORT_MAP(events);
#else
#define EXPORT_MAP(_name) struct _name##_table_t
#endif
/* Records lost because the ring buffer was full, per event type. */
SHARED_MAP("percpu_array", int, __u64, lost_events, MAX_EVENT_TYPES);
EXPORT_MAP(lost_events);

static __always_inline int tgid_wanted(__u32 tgid)
{
	return TARG_TGID == 0 || tgid == TARG_TGID;
}

/*
 * The id of the memory cgroup the current task charges to:
 * task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id, at offsets the
 * running kernel's BTF gives (never from headers of another version).
 * On a hybrid hierarchy (memory controller on cgroup v1) this is the v1
 * memory cgroup, which bpf_get_current_cgroup_id() does not give: that
 * returns the task's cgroup v2 id.  On cgroup v2 it is the nearest cgroup
 * with the memory controller enabled, i.e. the memcg charged.  Read under
 * the tracepoint's RCU read side; a racing migration gives the old or the
 * new cgroup, both valid kernfs nodes.
 */
static __always_inline __u64 current_memcg_id(void)
{
#ifdef CG_TASK_CGROUPS_OFF
	char *task = (char *)bpf_get_current_task();
	char *cset = 0, *css = 0, *cgrp = 0, *kn = 0;
	__u64 id = 0;

	bpf_probe_read_kernel(&cset, sizeof(cset), task + CG_TASK_CGROUPS_OFF);
	if (!cset)
		return 0;
	bpf_probe_read_kernel(&css, sizeof(css),
			      cset + CG_CSS_SET_SUBSYS_OFF + 8 * CG_MEMORY_CGRP_ID);
	if (!css)
		return 0;
	bpf_probe_read_kernel(&cgrp, sizeof(cgrp), css + CG_CSS_CGROUP_OFF);
	if (!cgrp)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), cgrp + CG_CGROUP_KN_OFF);
	if (!kn)
		return 0;
	bpf_probe_read_kernel(&id, sizeof(id), kn + CG_KERNFS_ID_OFF);
	return id;
#else
	return 0;
#endif
}

/* Cgroup ids seen in attributed records, for user space to name (value unused). */
SHARED_MAP("hash", __u64, __u64, cgroup_seen, 4096);
EXPORT_MAP(cgroup_seen);
SHARED_MAP("hash", __u64, __u64, memcg_seen, 4096);
EXPORT_MAP(memcg_seen);
#ifdef CGROUP_FILTER
/*
 * -c/--cgroup: the ids (and their descendants') user space filled in, one
 * map per hierarchy: kernfs ids are per hierarchy, so a v1 memory cgroup and
 * an unrelated cgroup v2 can share a number.  Only then: every map declared
 * is one more the compile builds and bcc sets up (bench/attach_time.py).
 */
SHARED_MAP("hash", __u64, __u8, cgroup_filter, 4096);
EXPORT_MAP(cgroup_filter);
SHARED_MAP("hash", __u64, __u8, memcg_filter, 4096);
EXPORT_MAP(memcg_filter);
#endif

struct task_cgroups {
	__u64 cgroup_id;
	__u64 memcg_id;
};

/* The current task's cgroup ids; remembered for naming. */
static __always_inline struct task_cgroups current_cgroups(void)
{
	struct task_cgroups cg;
	__u64 one = 1;

	cg.cgroup_id = bpf_get_current_cgroup_id();
	cg.memcg_id = current_memcg_id();
	cgroup_seen.update(&cg.cgroup_id, &one);
	memcg_seen.update(&cg.memcg_id, &one);
	return cg;
}

/* -c/--cgroup: whether the current task's cgroup (either id) was asked for. */
static __always_inline int cgroup_wanted(void)
{
#ifdef CGROUP_FILTER
	__u64 id = bpf_get_current_cgroup_id();

	if (cgroup_filter.lookup(&id))
		return 1;
	id = current_memcg_id();
	return memcg_filter.lookup(&id) != 0;
#else
	return 1;
#endif
}

static __always_inline void count_lost(__u32 type)
{
	__u64 *n = lost_events.lookup(&type);

	if (n)
		(*n)++;
}

/*
 * Submit a reserved record, waking the reader only for every WAKEUP_EVERY-th
 * record on this CPU.  The reader polls at least every 100 ms and drains what
 * is there, so rare records need no wakeup; waking it on every record makes
 * the producer pay for the reader's wakeup (irq_work, try_to_wake_up()) each
 * time the reader is idle, which for rare events such as kswapd's is almost
 * every time: 11-18 us per kswapd wake/sleep record measured here, against
 * ~0.3 us for records that found the reader awake.  A burst still wakes it
 * long before the buffer fills (WAKEUP_EVERY records per CPU, a few KiB).
 * (bpf_ringbuf_query() would allow a fill-level test, but bcc 0.26 has no
 * accessor for the ring buffer map's pointer.)
 */
#define WAKEUP_EVERY 64

SHARED_MAP("percpu_array", int, __u32, unwoken, 1);
EXPORT_MAP(unwoken);

static __always_inline void submit_event(void *e)
{
	__u32 zero = 0;
	__u32 *n = unwoken.lookup(&zero);
	__u64 flags = BPF_RB_FORCE_WAKEUP;

	if (n && ++(*n) < WAKEUP_EVERY)
		flags = BPF_RB_NO_WAKEUP;
	else if (n)
		*n = 0;
	events.ringbuf_submit(e, flags);
}

/* Reserve a record of @size and fill its header; count a loss on failure. */
static __always_inline void *reserve_event(__u32 size, __u32 type)
{
	struct event_header *hdr = events.ringbuf_reserve(size);
	__u64 id = bpf_get_current_pid_tgid();

	if (!hdr) {
		count_lost(type);
		return 0;
	}
	hdr->ts_ns = bpf_ktime_get_ns();
	hdr->type = type;
	hdr->pid = (__u32)id;
	hdr->tgid = id >> 32;
	hdr->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(&hdr->comm, sizeof(hdr->comm));
	return hdr;
}

#endif /* TRACE_RECLAIM_COMMON_BPF_H */
