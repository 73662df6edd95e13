/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one description of everything that crosses from the kernel to
 * trace-reclaim's Python side: event records, their type numbers, and the
 * slots of the maps user space reads.  The BPF programs include this file;
 * Python parses it (trace_reclaim/abi.py) and takes every number, struct
 * format and offset from it, so there is no second copy to update.
 * tests/unit/test_abi.py compiles it and checks every size, offset and value
 * against the parsed layouts and the registered decoders.
 *
 * Every record starts with struct event_header.  Fields are fixed width
 * (__u8..__s64, char arrays) and carry their unit in the name; a field named
 * pad only fills a hole, is written as 0 and is not decoded.  abi.py rejects
 * any other construct rather than guess its layout.
 *
 * Type numbers are grouped per tracer (EV_*_FIRST below) and never reused:
 * a recording keeps them.
 */
#ifndef TRACE_RECLAIM_EVENTS_H
#define TRACE_RECLAIM_EVENTS_H

#define TASK_COMM_LEN_TR 16

/* The first type number of each tracer's group; lost_events has MAX_EVENT_TYPES slots. */
#define EV_RECLAIM_FIRST 1
#define EV_VMALLOC_FIRST 16
#define EV_SLAB_FIRST 32
#define EV_OOM_FIRST 48
#define EV_MEMCG_FIRST 56
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
	EV_KMEM_CACHE_CREATE = 33,	/* fexit/kretprobe of the cache creation function */
	EV_KMEM_CACHE_DESTROY = 34,	/* fentry/kprobe kmem_cache_destroy */
	EV_KMEM_CACHE_SHUTDOWN = 35,	/* fexit/kretprobe __kmem_cache_shutdown */
	EV_DROP_SLAB = 36,		/* fexit/kretprobe drop_slab(): one drop_caches run */
	/* oom and compaction (tracers/oom.py) */
	EV_MARK_VICTIM = 48,		/* oom:mark_victim */
	EV_COMPACTION = 49,		/* mm_compaction_begin .. _end, one record */
	EV_RECLAIM_RETRY_ZONE = 50,	/* oom:reclaim_retry_zone */
	EV_COMPACT_RETRY = 51,		/* oom:compact_retry */
	/* memcg limit reclaim (tracers/memcg.py) */
	EV_MEMCG_RECLAIM = 56,		/* memcg_reclaim_begin .. _end (or softlimit), one record */
	EV_CGROUP_MKDIR = 57,		/* cgroup:cgroup_mkdir: names a short-lived cgroup's id */
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
	/* Appended later: older recordings end here (struct_decoder's since=). */
	__u64 cgroup_id;		/* bpf_get_current_cgroup_id(): cgroup v2 */
	__u64 memcg_id;			/* the memory cgroup charged (current_memcg_id()) */
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
	/* Appended later, of the killing task (a memcg OOM kills in its own memcg) */
	__u64 cgroup_id;
	__u64 memcg_id;
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
	__u64 caller;			/* VMAP_EV_EXACT only: vm_struct.caller */
	/* Appended later: older recordings end here */
	__u64 cgroup_id;
	__u64 memcg_id;
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
	__u32 nr_purged;		/* VMALLOC_PURGED_UNKNOWN: not seen (before 6.2) */
	__u32 pad;
};

/* nr_purged of a purge seen at __purge_vmap_area_lazy(), which keeps the count local. */
#define VMALLOC_PURGED_UNKNOWN	0xffffffff

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
	/* Appended later: older recordings end here.  Of the task running the
	 * shrinker: kswapd's is the root; memcg reclaim's is the limited task's. */
	__u64 cgroup_id;
	__u64 memcg_id;
};

struct kmem_cache_event {
	struct event_header hdr;
	__u64 cache;			/* struct kmem_cache * */
	__s32 refcount;			/* create: after it; destroy: before it; -1 unknown */
	__s32 err;			/* shutdown: __kmem_cache_shutdown() (0: was empty) */
	char name[SLAB_NAME_LEN];	/* kmem_cache.name: a merged cache's own name */
	char requested[SLAB_NAME_LEN];	/* create: the name asked for (an alias's) */
};

/* One drop_slab() returned: "echo 2 (or 3) > /proc/sys/vm/drop_caches" ran every
 * shrinker; the kernel counts DROP_SLAB right after.  ts_ns is the return. */
struct drop_slab_event {
	struct event_header hdr;
};

/* Which function reclaimed a memory cgroup (memcg_reclaim_event.kind). */
enum memcg_reclaim_kind {
	MEMCG_RECLAIM_LIMIT = 0,	/* try_to_free_mem_cgroup_pages(): over max/high/limit */
	MEMCG_RECLAIM_SOFTLIMIT = 1,	/* mem_cgroup_shrink_node(): v1 soft limit, by kswapd */
};

/*
 * One memcg reclaim: mm_vmscan_memcg_reclaim_begin .. _end (or the softlimit
 * pair), paired per thread in the kernel.  The tracepoints carry no memcg:
 * the ids are the reclaiming task's, and caller*_ip, the first return
 * addresses above try_to_free_mem_cgroup_pages(), say which limit made it
 * reclaim (try_charge_memcg: max/limit_in_bytes; reclaim_high /
 * mem_cgroup_handle_over_high: memory.high; memory_reclaim: proactive;
 * memory_max_write / mem_cgroup_resize_max: a limit being lowered).
 */
struct memcg_reclaim_event {
	struct event_header hdr;	/* hdr.ts_ns is the end; start = end - delta */
	__u64 delta_ns;
	__u64 gfp_flags;
	__u64 nr_reclaimed_pages;
	__u64 cgroup_id;		/* bpf_get_current_cgroup_id(): cgroup v2 */
	__u64 memcg_id;			/* the task's memory cgroup (current_memcg_id()) */
	__u64 caller0_ip;		/* kernel stack frames 1..3 (0: unknown) */
	__u64 caller1_ip;
	__u64 caller2_ip;
	__s32 order;
	__u32 kind;			/* enum memcg_reclaim_kind */
};

#define CGROUP_PATH_LEN 256

/* cgroup:cgroup_mkdir, so a cgroup removed before user space looked is still named. */
struct cgroup_mkdir_event {
	struct event_header hdr;
	__u64 id;			/* kernfs node id: what the records' ids are */
	__s32 root;			/* hierarchy id (/proc/cgroups; 0: cgroup v2) */
	__s32 level;
	char path[CGROUP_PATH_LEN];	/* inside its hierarchy, cut at the length */
};

/*
 * Map slots user space reads by index.  Each enum lists slots 0..N-1 and
 * then PREFIX_NR, the map's size; Python names a slot by its member name,
 * lower case without the prefix (abi.slots()).
 */

/*
 * lru_reclaim (reclaim.bpf.c): LRU pages scanned and reclaimed per reclaimer,
 * split the way mm/vmscan.c's reclaimer_offset() splits pgscan_* and pgsteal_*.
 */
enum reclaimer {
	RECLAIMER_KSWAPD = 0,
	RECLAIMER_DIRECT = 1,		/* everyone else (global reclaim) */
	RECLAIMER_KHUGEPAGED = 2,
	/*
	 * Memcg reclaim (cgroup_reclaim(sc): a cgroup's limit, memory.high,
	 * memory.reclaim, a v1 soft limit), by whoever runs it: /proc/vmstat
	 * counts none of it.  In "direct" when the plan cannot tell it apart.
	 */
	RECLAIMER_MEMCG = 3,
	RECLAIMER_NR = 4,
};

/* vmalloc_stats (vmalloc.bpf.c): why tasks were armed and disarmed. */
enum vmalloc_stat {
	VS_ARMED = 0,
	VS_ARM_FULL = 1,
	VS_DISARM_DONE = 2,
	VS_DISARM_FAILED = 3,
	VS_DISARM_FREE = 4,
	VS_DISARM_REARM = 5,
	VS_DISARM_TIMEOUT = 6,
	VS_DISARM_MISSES = 7,
	VS_PAGE_MISSES = 8,
	VS_STACK_ERRORS = 9,		/* get_stackid() failed */
	VS_EXACT_STALE = 10,		/* a fentry/kprobe request too old to match */
	VS_AREA_ARGS_MISSING = 11,	/* kretprobe alloc_vmap_area without its entry */
	VS_NR = 12,
};

/* slab_cache_overflow (slab.bpf.c) */
enum slab_cache_overflow_slot {
	SLAB_OVERFLOW_UNCOUNTED = 0,	/* alloc/free events lost: slab_cache_counts full */
	SLAB_OVERFLOW_NR = 1,
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
