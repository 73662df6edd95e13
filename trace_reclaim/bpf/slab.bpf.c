/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Slab: shrink_slab per shrinker, and per-cache kmem_cache alloc/free counts.
 *
 * mm_shrink_slab_start/end are paired in the kernel by thread into one
 * record.  The reclaim context (direct, memcg, node reclaim) comes from raw
 * tracepoints on the vmscan begin/end events: raw, so they never clash with
 * the reclaim tracer's TRACEPOINT_PROBEs on the same tracepoints in this one
 * program text.
 *
 * kmem_cache_alloc/free fire 100k+ times a second, so they are only
 * counted, per struct kmem_cache pointer, in a per-CPU hash that user space
 * reads once per interval.  The cache name is read once per new pointer,
 * through the offset of kmem_cache.name taken from the running kernel's BTF
 * (never through headers: they are another kernel's).
 *
 * cflags (tracers/slab.py):
 *   KMEM_CACHE_NAME_OFF     byte offset of kmem_cache.name (-1: unknown)
 *   KMEM_CACHE_ALLOC_ARG    index of "struct kmem_cache *s" in the raw
 *   KMEM_CACHE_FREE_ARG     tracepoint arguments (from btf_trace_* protos)
 *   MAX_SLAB_CACHES         bound on caches counted
 *   SLAB_CACHE_ACCOUNTING   attach the kmem raw tracepoints at all
 *   SLAB_LIFECYCLE_FENTRY   fentry/fexit on kmem_cache_destroy/create
 *   SHRINKER_OWNERS         read what each shrinker shrinks; with it,
 *                           shrinker and owner offsets and callback addresses
 *                           (tracers/slab/owners.py lists them)
 */

#ifndef KMEM_CACHE_NAME_OFF
#define KMEM_CACHE_NAME_OFF -1
#endif
#ifndef MAX_SLAB_CACHES
#define MAX_SLAB_CACHES 2048
#endif
#ifndef MAX_SHRINKERS
#define MAX_SHRINKERS 1024
#endif
#ifndef SHRINKER_PRIVATE_DATA_OFF
#define SHRINKER_PRIVATE_DATA_OFF -1
#endif
#ifndef SHRINKER_NAME_OFF
#define SHRINKER_NAME_OFF -1
#endif

struct shrink_slab_start_state {
	__u64 ts_ns;
	__u64 shr;
	__u64 shrink;
	__u64 cache_items;
	__u64 delta;
	__u64 total_scan;
	__s64 nr_deferred;
	__u64 gfp_flags;
	__s32 nid;
	__s32 priority;
};

/* Bounded: one entry per thread inside a shrinker at once. */
BPF_HASH(shrink_slab_start, __u32, struct shrink_slab_start_state, 10240);

struct slab_reclaim_state {
	__u64 ts_ns;
	__u32 context;
	__u32 pad;
};

/* Threads inside direct/memcg/node reclaim now. */
BPF_HASH(slab_reclaim_ctx, __u32, struct slab_reclaim_state, 10240);

/* Every shrinker seen: its callback, so user space can symbolize it live. */
BPF_HASH(slab_shrinkers, __u64, __u64, MAX_SHRINKERS);

#ifdef SHRINKER_OWNERS
/*
 * What each shrinker shrinks, read once per struct shrinker * while
 * do_shrink_slab() holds it (so the owner is alive).  Which struct the
 * owner is comes from the callback: super_cache_scan's is a super_block,
 * ext4_es_scan's an ext4_sb_info (whose super_block names it),
 * zs_shrinker_scan's a zs_pool, jbd2_journal_shrink_scan's a journal_t.
 * Callback addresses and every offset come from user space (kallsyms and
 * the running kernel's BTF); a recipe whose callback or offsets are
 * missing is compiled out and its shrinkers stay function-only.
 *
 * Since Linux 6.7 (commit c42d50aefd17, "mm: shrinker: add infrastructure
 * for dynamically allocating shrinker") a shrinker is allocated apart and
 * points at its owner through private_data; before, it was embedded in the
 * owner (*_EMBED_OFF >= 0: the owner is container_of the shrinker).
 */
static __always_inline __u64 shrinker_owner_ptr(__u64 shr, long embed_off)
{
	__u64 p = 0;

	if (embed_off >= 0)
		return shr - embed_off;
#if SHRINKER_PRIVATE_DATA_OFF >= 0
	bpf_probe_read_kernel(&p, sizeof(p), (void *)(shr + SHRINKER_PRIVATE_DATA_OFF));
#endif
	return p;
}

#ifdef SB_S_ID_OFF
static __always_inline void shrinker_owner_super(struct shrinker_owner *o, __u64 sb)
{
	__u64 type = 0, name = 0;

	if (!sb)
		return;
	o->kind = SHRINKER_OWNER_SUPER;
	bpf_probe_read_kernel(&type, sizeof(type), (void *)(sb + SB_S_TYPE_OFF));
	if (type)
		bpf_probe_read_kernel(&name, sizeof(name), (void *)(type + FS_TYPE_NAME_OFF));
	if (name)
		bpf_probe_read_kernel_str(o->fs_type, sizeof(o->fs_type), (void *)name);
	bpf_probe_read_kernel_str(o->id, sizeof(o->id), (void *)(sb + SB_S_ID_OFF));
	bpf_probe_read_kernel(&o->s_dev, sizeof(o->s_dev), (void *)(sb + SB_S_DEV_OFF));
}
#endif

/* One entry per shrinker; a full map leaves later shrinkers function-only. */
BPF_HASH(slab_shrinker_owners, __u64, struct shrinker_owner, MAX_SHRINKERS);

static __always_inline void shrinker_owner_once(__u64 shr, __u64 shrink)
{
	struct shrinker_owner o = {};
	__u64 owner = 0, p = 0;

	if (slab_shrinker_owners.lookup(&shr))
		return;
#if SHRINKER_NAME_OFF >= 0
	/* Since Linux 6.0 (commit e33c267ab70d, "mm: shrinkers: provide
	 * shrinkers with names"), with CONFIG_SHRINKER_DEBUG only. */
	bpf_probe_read_kernel(&p, sizeof(p), (void *)(shr + SHRINKER_NAME_OFF));
	if (p)
		bpf_probe_read_kernel_str(o.name, sizeof(o.name), (void *)p);
#endif
#ifdef SUPER_CACHE_SCAN
	if (shrink == SUPER_CACHE_SCAN)
		shrinker_owner_super(&o, shrinker_owner_ptr(shr, SB_SHRINK_EMBED_OFF));
#endif
#ifdef EXT4_ES_SCAN
	if (shrink == EXT4_ES_SCAN) {
		owner = shrinker_owner_ptr(shr, EXT4_ES_EMBED_OFF);
		p = 0;
		if (owner)
			bpf_probe_read_kernel(&p, sizeof(p), (void *)(owner + EXT4_SBI_SB_OFF));
		shrinker_owner_super(&o, p);
	}
#endif
#ifdef ZS_SHRINKER_SCAN
	if (shrink == ZS_SHRINKER_SCAN) {
		owner = shrinker_owner_ptr(shr, ZS_POOL_EMBED_OFF);
		p = 0;
		if (owner)
			bpf_probe_read_kernel(&p, sizeof(p), (void *)(owner + ZS_POOL_NAME_OFF));
		if (p) {
			o.kind = SHRINKER_OWNER_ZS_POOL;
			bpf_probe_read_kernel_str(o.id, sizeof(o.id), (void *)p);
		}
	}
#endif
#ifdef JBD2_SHRINK_SCAN
	if (shrink == JBD2_SHRINK_SCAN) {
		owner = shrinker_owner_ptr(shr, JBD2_EMBED_OFF);
		if (owner) {
			o.kind = SHRINKER_OWNER_JOURNAL;
			bpf_probe_read_kernel_str(o.id, sizeof(o.id),
						  (void *)(owner + JBD2_DEVNAME_OFF));
		}
	}
#endif
	slab_shrinker_owners.insert(&shr, &o);
}
#endif /* SHRINKER_OWNERS */

static __always_inline void slab_reclaim_begin(__u32 context)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct slab_reclaim_state st = {};

	st.ts_ns = bpf_ktime_get_ns();
	st.context = context;
	slab_reclaim_ctx.update(&tid, &st);
}

static __always_inline void slab_reclaim_end(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	slab_reclaim_ctx.delete(&tid);
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_begin)
{
	slab_reclaim_begin(SLAB_CTX_DIRECT);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_end)
{
	slab_reclaim_end();
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_begin)
{
	slab_reclaim_begin(SLAB_CTX_MEMCG);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_end)
{
	slab_reclaim_end();
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_node_reclaim_begin)
{
	slab_reclaim_begin(SLAB_CTX_NODE);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_node_reclaim_end)
{
	slab_reclaim_end();
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_shrink_slab_start)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct shrink_slab_start_state st = {};
	__u64 shr = (__u64)args->shr, shrink = (__u64)args->shrink;

	/* kernel threads (kswapd) have tgid == pid and pass tgid_wanted only
	 * when unfiltered; shrinkers run for the whole machine anyway */
	if (!tgid_wanted(id >> 32) || !cgroup_wanted())
		return TP_PASS;
	st.ts_ns = bpf_ktime_get_ns();
	st.shr = shr;
	st.shrink = shrink;
	st.cache_items = args->cache_items;
	st.delta = args->delta;
	st.total_scan = args->total_scan;
	st.nr_deferred = args->nr_objects_to_shrink;
	st.gfp_flags = args->gfp_flags;
	st.nid = args->nid;
	st.priority = args->priority;
	shrink_slab_start.update(&tid, &st);
	slab_shrinkers.update(&shr, &shrink);
#ifdef SHRINKER_OWNERS
	shrinker_owner_once(shr, shrink);
#endif
	return TP_PASS;
}

TRACEPOINT_PROBE(vmscan, mm_shrink_slab_end)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct shrink_slab_start_state *start, begin;
	struct slab_reclaim_state *rc;
	struct shrink_slab_event *e;
	struct task_cgroups cg;

	start = shrink_slab_start.lookup(&tid);
	if (!start)
		return TP_PASS;	/* began before we attached, or filtered out */
	begin = *start;
	shrink_slab_start.delete(&tid);

	e = reserve_event(sizeof(*e), EV_SHRINK_SLAB);
	if (!e)
		return TP_PASS;
	e->delta_ns = e->hdr.ts_ns - begin.ts_ns;
	e->shr = begin.shr;
	e->shrink = begin.shrink;
	e->cache_items = begin.cache_items;
	e->delta = begin.delta;
	e->total_scan = begin.total_scan;
	e->unscanned = args->total_scan;
	e->nr_deferred = begin.nr_deferred;
	e->new_deferred = args->new_scan;
	e->gfp_flags = begin.gfp_flags;
	e->freed = args->retval;
	e->nid = begin.nid;
	e->priority = begin.priority;
	e->context = SLAB_CTX_OTHER;
	e->reclaim_start_ns = 0;
	rc = slab_reclaim_ctx.lookup(&tid);
	if (rc) {
		e->context = rc->context;
		e->reclaim_start_ns = rc->ts_ns;
	}
	cg = current_cgroups();
	e->cgroup_id = cg.cgroup_id;
	e->memcg_id = cg.memcg_id;
	submit_event(e);
	return TP_PASS;
}

#ifdef SLAB_CACHE_ACCOUNTING
#ifndef SLAB_SLOTS_SHIFT
#define SLAB_SLOTS_SHIFT 10
#endif
#define SLAB_SLOTS (1 << SLAB_SLOTS_SHIFT)

struct slab_cache_counts {
	__u64 allocs;
	__u64 frees;
};

struct slab_cache_slot {
	__u64 cache;			/* struct kmem_cache *, 0: free slot */
	__u64 allocs;
	__u64 frees;
};

struct slab_cache_name {
	char name[SLAB_NAME_LEN];
};

/*
 * Counts live in a direct-mapped per-CPU array indexed by a hash of the
 * cache pointer: an array lookup the verifier inlines, where a hash map
 * lookup is a helper call and a jhash (measured: ~45 ns vs ~10 ns marginal
 * per event).  The first cache to use a slot on a CPU owns it for good; a
 * cache that finds its slot owned by another counts in the per-CPU hash.
 * Counts never move between the two, so every counter only grows and user
 * space, which reads the hash and the slots at slightly different times,
 * always sees a consistent, non-decreasing total per cache.  (An earlier
 * version evicted the owner into the hash on a collision: a read that fell
 * between the hash and the slot then missed the evicted counts, and the
 * next read's rebound was counted as new events, tens of thousands of them
 * for two hot caches sharing a slot.)  Counts are cumulative since attach.
 */
BPF_PERCPU_ARRAY(slab_cache_slots, struct slab_cache_slot, SLAB_SLOTS);
BPF_PERCPU_HASH(slab_cache_counts, __u64, struct slab_cache_counts, MAX_SLAB_CACHES);
BPF_HASH(slab_cache_names, __u64, struct slab_cache_name, MAX_SLAB_CACHES);
/* Slots: enum slab_cache_overflow_slot (events.h). */
BPF_PERCPU_ARRAY(slab_cache_overflow, __u64, SLAB_OVERFLOW_NR);

static __always_inline void slab_cache_name_once(__u64 s)
{
	struct slab_cache_name n = {};

	if (slab_cache_names.lookup(&s))
		return;
#if KMEM_CACHE_NAME_OFF >= 0
	{
		const char *p = 0;

		bpf_probe_read_kernel(&p, sizeof(p), (void *)(s + KMEM_CACHE_NAME_OFF));
		if (p)
			bpf_probe_read_kernel_str(n.name, sizeof(n.name), p);
	}
#endif
	slab_cache_names.insert(&s, &n);
}

/* Count in the hash: a cache whose slot another cache owns on this CPU. */
static __always_inline void slab_cache_count_hashed(__u64 s, int is_free)
{
	struct slab_cache_counts zero = {}, *c;
	__u32 k = SLAB_OVERFLOW_UNCOUNTED;
	__u64 *over;

	c = slab_cache_counts.lookup(&s);
	if (!c) {
		slab_cache_counts.insert(&s, &zero);
		c = slab_cache_counts.lookup(&s);
		if (!c) {
			over = slab_cache_overflow.lookup(&k);
			if (over)
				*over += 1;
			return;
		}
		slab_cache_name_once(s);
	}
	if (is_free)
		c->frees++;
	else
		c->allocs++;
}

static __always_inline void slab_cache_count(__u64 s, int is_free)
{
	__u32 slot = (__u32)((s * 0x9E3779B97F4A7C15ULL) >> (64 - SLAB_SLOTS_SHIFT));
	struct slab_cache_slot *e = slab_cache_slots.lookup(&slot);

	if (!e || !s)
		return;
	if (e->cache != s) {
		/*
		 * Claim a free slot atomically: the alloc and free programs are
		 * two programs, and one can interrupt the other on this CPU
		 * (an RCU callback freeing in softirq), so a plain store could
		 * hand a slot already counting for one cache to another.
		 */
		if (e->cache || __sync_val_compare_and_swap(&e->cache, 0, s) != 0) {
			slab_cache_count_hashed(s, is_free);
			return;
		}
		slab_cache_name_once(s);
	}
	if (is_free)
		e->frees++;
	else
		e->allocs++;
}

/* kmem_cache_alloc(call_site, ptr, s, gfp_flags, node) */
RAW_TRACEPOINT_PROBE(kmem_cache_alloc)
{
	if (!ctx->args[1])
		return 0;	/* the tracepoint fires for failed allocations too */
	slab_cache_count(ctx->args[KMEM_CACHE_ALLOC_ARG], 0);
	return 0;
}

/* kmem_cache_free(call_site, ptr, s) */
RAW_TRACEPOINT_PROBE(kmem_cache_free)
{
	slab_cache_count(ctx->args[KMEM_CACHE_FREE_ARG], 1);
	return 0;
}
#endif /* SLAB_CACHE_ACCOUNTING */

/*
 * Exact kmem_cache creation and destruction where fentry or kprobes reach the
 * functions (production kernels; tracers/slab.py picks one per function).
 * Struct pointers are declared void *: the headers bcc includes do not declare
 * struct kmem_cache, and BPF_PROG casts each argument anyway.
 *
 *   create    fexit/kretprobe of the function every creation goes through:
 *             __kmem_cache_create_args since Linux 6.12 (the struct
 *             kmem_cache_args series: "slab: create kmem_cache_create()
 *             compatibility layer", "slab: make kmem_cache_create_usercopy()
 *             static inline"), kmem_cache_create_usercopy before.  A merge
 *             into an existing cache returns that cache: its own name and
 *             refcount (> 1) say so.
 *   destroy   fentry/kprobe kmem_cache_destroy: refcount before it; > 1 only
 *             drops an alias's reference, and the merged cache lives on.
 *   shutdown  fexit/kretprobe __kmem_cache_shutdown: the kernel's own check
 *             that no object is left (0) before the cache is freed.
 *
 * cflags: SLAB_LIFECYCLE (any of these), SLAB_CREATE_{FEXIT,KPROBE}_{ARGS,USERCOPY},
 * SLAB_DESTROY_{FENTRY,KPROBE}, SLAB_SHUTDOWN_{FEXIT,KPROBE},
 * KMEM_CACHE_NAME_OFF and KMEM_CACHE_REFCOUNT_OFF (from BTF; -1 unknown).
 */
#ifndef KMEM_CACHE_REFCOUNT_OFF
#define KMEM_CACHE_REFCOUNT_OFF -1
#endif
#ifdef SLAB_LIFECYCLE
static __always_inline int kmem_cache_refcount(__u64 s)
{
	int ref = -1;

#if KMEM_CACHE_REFCOUNT_OFF >= 0
	bpf_probe_read_kernel(&ref, sizeof(ref), (void *)(s + KMEM_CACHE_REFCOUNT_OFF));
#endif
	return ref;
}

static __always_inline void slab_lifecycle_event(__u32 type, __u64 s, int refcount, int err,
						 const char *requested)
{
	struct kmem_cache_event *e;
	const char *p = 0;

	e = reserve_event(sizeof(*e), type);
	if (!e)
		return;
	e->cache = s;
	e->refcount = refcount;
	e->err = err;
	e->name[0] = 0;
	e->requested[0] = 0;
#if KMEM_CACHE_NAME_OFF >= 0
	bpf_probe_read_kernel(&p, sizeof(p), (void *)(s + KMEM_CACHE_NAME_OFF));
	if (p)
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), p);
#endif
	if (requested)
		bpf_probe_read_kernel_str(e->requested, sizeof(e->requested), requested);
	submit_event(e);
}

static __always_inline void slab_created(__u64 s, const char *requested)
{
	if (s)
		slab_lifecycle_event(EV_KMEM_CACHE_CREATE, s, kmem_cache_refcount(s), 0, requested);
}

static __always_inline void slab_destroying(__u64 s)
{
	if (s)
		slab_lifecycle_event(EV_KMEM_CACHE_DESTROY, s, kmem_cache_refcount(s), 0, 0);
}
#endif

#if defined(SLAB_CREATE_KPROBE_ARGS) || defined(SLAB_CREATE_KPROBE_USERCOPY) || \
	defined(SLAB_SHUTDOWN_KPROBE)
/* A kretprobe has no arguments: the entry kprobe keeps the one it needs per thread. */
BPF_HASH(slab_lifecycle_arg, __u32, __u64, 1024);

static __always_inline int slab_keep_arg(__u64 v)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	slab_lifecycle_arg.update(&tid, &v);
	return 0;
}

static __always_inline __u64 slab_take_arg(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = slab_lifecycle_arg.lookup(&tid), out = 0;

	if (v) {
		out = *v;
		slab_lifecycle_arg.delete(&tid);
	}
	return out;
}
#endif

#if defined(SLAB_CREATE_FEXIT_ARGS)
KRETFUNC_PROBE(__kmem_cache_create_args, const char *name, unsigned int object_size,
	       void *args, slab_flags_t flags, void *ret)
{
	slab_created((__u64)ret, name);
	return 0;
}
#elif defined(SLAB_CREATE_FEXIT_USERCOPY)
KRETFUNC_PROBE(kmem_cache_create_usercopy, const char *name, unsigned int size,
	       unsigned int align, slab_flags_t flags, unsigned int useroffset,
	       unsigned int usersize, void *ctor, void *ret)
{
	slab_created((__u64)ret, name);
	return 0;
}
#elif defined(SLAB_CREATE_KPROBE_ARGS)
int kprobe____kmem_cache_create_args(struct pt_regs *ctx)
{
	return slab_keep_arg(PT_REGS_PARM1(ctx));
}

int kretprobe____kmem_cache_create_args(struct pt_regs *ctx)
{
	slab_created(PT_REGS_RC(ctx), (const char *)slab_take_arg());
	return 0;
}
#elif defined(SLAB_CREATE_KPROBE_USERCOPY)
int kprobe__kmem_cache_create_usercopy(struct pt_regs *ctx)
{
	return slab_keep_arg(PT_REGS_PARM1(ctx));
}

int kretprobe__kmem_cache_create_usercopy(struct pt_regs *ctx)
{
	slab_created(PT_REGS_RC(ctx), (const char *)slab_take_arg());
	return 0;
}
#endif

#if defined(SLAB_DESTROY_FENTRY)
KFUNC_PROBE(kmem_cache_destroy, void *s)
{
	slab_destroying((__u64)s);
	return 0;
}
#elif defined(SLAB_DESTROY_KPROBE)
int kprobe__kmem_cache_destroy(struct pt_regs *ctx)
{
	slab_destroying(PT_REGS_PARM1(ctx));
	return 0;
}
#endif

#if defined(SLAB_SHUTDOWN_FEXIT)
KRETFUNC_PROBE(__kmem_cache_shutdown, void *s, int ret)
{
	slab_lifecycle_event(EV_KMEM_CACHE_SHUTDOWN, (__u64)s, -1, ret, 0);
	return 0;
}
#elif defined(SLAB_SHUTDOWN_KPROBE)
int kprobe____kmem_cache_shutdown(struct pt_regs *ctx)
{
	return slab_keep_arg(PT_REGS_PARM1(ctx));
}

int kretprobe____kmem_cache_shutdown(struct pt_regs *ctx)
{
	__u64 s = slab_take_arg();

	if (s)
		slab_lifecycle_event(EV_KMEM_CACHE_SHUTDOWN, s, -1, (int)PT_REGS_RC(ctx), 0);
	return 0;
}
#endif

/*
 * drop_caches runs, exactly: one event per return of drop_slab(), which
 * drop_caches_sysctl_handler() calls for "echo 2 (or 3) > drop_caches" right
 * before it counts DROP_SLAB.  No tracepoint marks a run: without fexit or
 * kretprobes the slab tracer infers runs from one task's priority-0 shrinker
 * calls outside reclaim (tracers/slab/aggregate.py), a lower bound.
 *
 * cflags: SLAB_DROP_FEXIT or SLAB_DROP_KPROBE.
 */
#if defined(SLAB_DROP_FEXIT) || defined(SLAB_DROP_KPROBE)
static __always_inline void slab_drop_returned(void)
{
	struct drop_slab_event *e = reserve_event(sizeof(*e), EV_DROP_SLAB);

	if (e)
		submit_event(e);
}
#endif

#if defined(SLAB_DROP_FEXIT)
KRETFUNC_PROBE(drop_slab)
{
	slab_drop_returned();
	return 0;
}
#elif defined(SLAB_DROP_KPROBE)
int kretprobe__drop_slab(struct pt_regs *ctx)
{
	slab_drop_returned();
	return 0;
}
#endif
