/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Event records that cross from the kernel to trace-reclaim's Python side.
 *
 * Every record starts with struct event_header.  Fields are fixed width and
 * carry their unit in the name.  Python decodes these with struct formats in
 * tracers/NAME.py; tests/test_events_h.py checks that both sides agree on sizes
 * and type numbers, so change them together.
 *
 * Type numbers are grouped per tracer (reclaim 1-15, vmalloc 16-31,
 * slab 32-47, oom/compaction 48-63) and never reused: a recording keeps them.
 */
#ifndef TRACE_RECLAIM_EVENTS_H
#define TRACE_RECLAIM_EVENTS_H

#define TASK_COMM_LEN_TR 16
#define MAX_EVENT_TYPES 64

enum event_type {
	/* reclaim: kswapd and direct reclaim (tracers/reclaim.py) */
	EV_WAKEUP_KSWAPD = 1,		/* vmscan:mm_vmscan_wakeup_kswapd */
	EV_KSWAPD_WAKE = 2,		/* vmscan:mm_vmscan_kswapd_wake */
	EV_KSWAPD_SLEEP = 3,		/* vmscan:mm_vmscan_kswapd_sleep */
	EV_DIRECT_RECLAIM = 4,		/* direct_reclaim_begin .. _end, one record */
	/* vmalloc (tracers/vmalloc.py) */
	EV_ALLOC_VMAP_AREA = 16,	/* vmalloc:alloc_vmap_area (+ fentry request) */
	EV_FREE_VMAP_AREA = 17,		/* vmalloc:free_vmap_area_noflush */
	EV_PURGE_VMAP_AREA = 18,	/* vmalloc:purge_vmap_area_lazy */
	EV_VMALLOC_PAGE_ALLOC = 19,	/* kmem:mm_page_alloc, huge order, armed task */
	EV_KMALLOC_LARGE = 20,		/* kmem:kmalloc failed (ptr 0): kvmalloc size */
	/* slab (tracers/slab.py) */
	EV_SHRINK_SLAB = 32,		/* mm_shrink_slab_start .. _end, one record */
	EV_KMEM_CACHE_CREATE = 33,	/* fexit __kmem_cache_create_args (SLAB_LIFECYCLE_FENTRY) */
	EV_KMEM_CACHE_DESTROY = 34,	/* fentry kmem_cache_destroy (SLAB_LIFECYCLE_FENTRY) */
	/* oom and compaction (tracers/oom.py) */
	EV_MARK_VICTIM = 48,		/* oom:mark_victim */
	EV_COMPACTION = 49,		/* mm_compaction_begin .. _end, one record */
	EV_RECLAIM_RETRY_ZONE = 50,	/* oom:reclaim_retry_zone */
	EV_COMPACT_RETRY = 51,		/* oom:compact_retry */
};

struct event_header {
	__u64 ts_ns;			/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 type;			/* enum event_type */
	__u32 pid;			/* thread id */
	__u32 tgid;			/* process id */
	__u32 cpu;
	char comm[TASK_COMM_LEN_TR];
};					/* 40 bytes */

struct wakeup_kswapd_event {
	struct event_header hdr;
	__u64 gfp_flags;
	__s32 nid;
	__s32 zid;
	__s32 order;
	__u32 pad;
};

struct kswapd_wake_event {
	struct event_header hdr;
	__s32 nid;
	__s32 zid;			/* -1 for kswapd_sleep */
	__s32 order;
	__u32 pad;
};

struct direct_reclaim_event {
	struct event_header hdr;	/* hdr.ts_ns is the end; start = end - delta */
	__u64 delta_ns;
	__u64 gfp_flags;
	__u64 nr_reclaimed_pages;
	__s32 order;
	__u32 retries;			/* do_try_to_free_pages() passes restarted */
};

/* oom:mark_victim; sizes in kB as the tracepoint gives them */
struct mark_victim_event {
	struct event_header hdr;	/* the task that chose the victim */
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	__u64 pgtables_kb;
	__u32 victim_pid;
	__u32 uid;
	__s32 oom_score_adj;
	__u32 pad;
	char victim_comm[TASK_COMM_LEN_TR];
};

/* compact_zone(): mm_compaction_begin .. mm_compaction_end of one thread */
struct compaction_event {
	struct event_header hdr;	/* hdr.ts_ns is the end */
	__u64 delta_ns;
	__u64 zone_start_pfn;
	__u64 zone_end_pfn;
	__u64 migrate_pfn;
	__u64 free_pfn;
	__s32 status;			/* enum compact_result */
	__u32 sync;
};

/* oom:reclaim_retry_zone: should_reclaim_retry() looking at one zone */
struct reclaim_retry_zone_event {
	struct event_header hdr;
	__u64 reclaimable_pages;
	__u64 available_pages;
	__u64 min_wmark_pages;
	__s32 nid;
	__s32 zid;
	__s32 order;
	__s32 no_progress_loops;
	__u32 wmark_check;
	__u32 pad;
};

/* oom:compact_retry: should_compact_retry() */
struct compact_retry_event {
	struct event_header hdr;
	__s32 order;
	__s32 priority;
	__s32 result;
	__s32 retries;
	__s32 max_retries;
	__u32 retry;
};

/* vmalloc: flags of struct alloc_vmap_area_event */
#define VMAP_EV_ARMED		1	/* huge attempt: its page allocs are watched */
#define VMAP_EV_EXACT		2	/* requested_bytes/vm_flags from fentry/kprobe */
#define VMAP_EV_ARM_FULL	4	/* huge attempt, but the arm table was full */

struct alloc_vmap_area_event {
	struct event_header hdr;
	__u64 addr;			/* va_start */
	__u64 size_bytes;		/* mapped size, guard page included */
	__u64 align_bytes;
	__u64 vstart;
	__u64 vend;
	__u64 requested_bytes;		/* VMAP_EV_EXACT only, else 0 */
	__u64 vm_flags;			/* VMAP_EV_EXACT only, else 0 */
	__s32 stack_id;			/* kernel stack; < 0: -errno, not recorded */
	__s32 failed;
	__u32 flags;			/* VMAP_EV_* */
	__u32 pad;
};

struct free_vmap_area_event {
	struct event_header hdr;
	__u64 addr;			/* va_start */
	__u64 nr_lazy_pages;
	__u64 nr_lazy_max_pages;
};

struct purge_vmap_area_event {
	struct event_header hdr;
	__u64 start;
	__u64 end;
	__u32 nr_purged;
	__u32 pad;
};

/* One huge-order page allocation by a task while its huge vmalloc is armed. */
struct vmalloc_page_alloc_event {
	struct event_header hdr;
	__u64 area_addr;		/* va_start of the armed area */
	__u64 gfp_flags;
	__u32 order;
	__s32 failed;			/* 1: no page (pfn -1) */
	__u32 index;			/* huge pages seen before this one */
	__u32 expected;			/* huge pages the area needs */
};

/* kmalloc that returned NULL for a large size: kvmalloc's first try. */
struct kmalloc_large_event {
	struct event_header hdr;
	__u64 bytes_req;
	__u64 bytes_alloc;
	__u64 gfp_flags;
	__s32 node;
	__u32 pad;
};

/* Which reclaim ran a shrinker (shrink_slab_event.context). */
enum slab_reclaim_context {
	SLAB_CTX_OTHER = 0,		/* kswapd (by comm), drop_caches, ... */
	SLAB_CTX_DIRECT = 1,		/* inside mm_vmscan_direct_reclaim_begin/end */
	SLAB_CTX_MEMCG = 2,		/* inside mm_vmscan_memcg_reclaim_begin/end */
	SLAB_CTX_NODE = 3,		/* inside mm_vmscan_node_reclaim_begin/end */
};

#define SLAB_NAME_LEN 40

struct shrink_slab_event {
	struct event_header hdr;	/* hdr.ts_ns is the end; start = end - delta */
	__u64 delta_ns;
	__u64 shr;			/* struct shrinker * */
	__u64 shrink;			/* its scan_objects callback */
	__u64 cache_items;		/* freeable: count_objects() at start */
	__u64 delta;			/* new scan work from this call */
	__u64 total_scan;		/* asked to scan, at start */
	__s64 unscanned;		/* total_scan left at end */
	__s64 nr_deferred;		/* deferred work taken at start */
	__s64 new_deferred;		/* deferred work left at end */
	__u64 gfp_flags;
	__s32 freed;			/* retval: objects freed */
	__s32 nid;
	__s32 priority;
	__u32 context;			/* enum slab_reclaim_context */
	__u64 reclaim_start_ns;		/* when that reclaim began (0: unknown) */
};

struct kmem_cache_event {
	struct event_header hdr;
	__u64 cache;			/* struct kmem_cache * */
	char name[SLAB_NAME_LEN];
};

/* What a shrinker's private data was read as (shrinker_owner.kind). */
enum shrinker_owner_kind {
	SHRINKER_OWNER_NONE = 0,	/* function only (or shrinker->name alone) */
	SHRINKER_OWNER_SUPER = 1,	/* struct super_block: s_type->name, s_id, s_dev */
	SHRINKER_OWNER_ZS_POOL = 2,	/* struct zs_pool: name */
	SHRINKER_OWNER_JOURNAL = 3,	/* journal_t: j_devname */
};

#define SHRINKER_NAME_LEN 32
#define SHRINKER_ID_LEN 56

/*
 * What one struct shrinker * shrinks, read once in the kernel
 * (slab_shrinker_owners, keyed by the pointer) and read from user space
 * each interval; not a ring buffer record.
 */
struct shrinker_owner {
	__u32 kind;			/* enum shrinker_owner_kind */
	__u32 s_dev;			/* super_block.s_dev (MKDEV: major << 20 | minor) */
	char name[SHRINKER_NAME_LEN];	/* shrinker->name (CONFIG_SHRINKER_DEBUG) */
	char fs_type[SHRINKER_NAME_LEN];	/* s_type->name */
	char id[SHRINKER_ID_LEN];	/* s_id, zs_pool.name or j_devname */
};

#endif /* TRACE_RECLAIM_EVENTS_H */
