/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmalloc areas and their huge (PMD) mappings, from the vmalloc and kmem
 * tracepoints.
 *
 * alloc_vmap_area fires BEFORE the area's pages are allocated.  An area
 * allocated with huge alignment (VMALLOC_HUGE_BYTES: __vmalloc_node_range
 * rounded size and align up to PMD_SIZE because the caller opted in with
 * VM_ALLOW_HUGE_VMAP) "arms" its task: the task's next huge-order page
 * allocations (kmem:mm_page_alloc, order VMALLOC_HUGE_ORDER) are that area's
 * pages, and a NULL page is the failure that makes vmalloc fall back to
 * 4 KiB pages.  Every other page allocation in the system is rejected by a
 * single array lookup (vmalloc_nr_armed == 0) before anything else runs.
 *
 * Disarm rules (a task has at most one armed area):
 *   - the area got all (size - guard) / HUGE pages it needs;
 *   - a huge-order allocation failed (vm_area_alloc_pages() stops there);
 *   - the task frees the armed area (free_vmap_area_noflush);
 *   - the task arms another huge area (replaces this one);
 *   - VMALLOC_MAX_MISSES other page allocations by the task while armed;
 *   - VMALLOC_ARM_TIMEOUT_NS passed (checked at the task's next page
 *     allocation, and swept from user space every interval).
 * A nested vmalloc (vmalloc's own page-pointer array, allocated after the
 * area and before its pages) has small alignment, so it does not disarm.
 *
 * Tunables (-D cflags from tracers/vmalloc.py):
 *   VMALLOC_HUGE_ORDER, VMALLOC_HUGE_BYTES, VMALLOC_PAGE_BYTES  PMD geometry
 *   VMALLOC_KMALLOC_MIN   smallest failed kmalloc reported (kvmalloc sizes)
 *   VMALLOC_RAW_TP        mm_page_alloc and kmalloc as raw tracepoints
 *                         (TP_PROTO checked in BTF by tracers/vmalloc.py)
 *   VMALLOC_FENTRY_NOPROF / VMALLOC_FENTRY / VMALLOC_KPROBE_NOPROF /
 *   VMALLOC_KPROBE        exact request size, vm_flags and caller from the
 *                         entry of __vmalloc_node_range_noprof (6.10+) or
 *                         __vmalloc_node_range (older)
 */

#ifndef VMALLOC_HUGE_ORDER
#define VMALLOC_HUGE_ORDER 9
#endif
#ifndef VMALLOC_HUGE_BYTES
#define VMALLOC_HUGE_BYTES (2ULL << 20)
#endif
#ifndef VMALLOC_PAGE_BYTES
#define VMALLOC_PAGE_BYTES 4096ULL
#endif
#ifndef VMALLOC_KMALLOC_MIN
#define VMALLOC_KMALLOC_MIN 4097
#endif
#ifndef VMALLOC_MAX_ARMED
#define VMALLOC_MAX_ARMED 1024
#endif
#ifndef VMALLOC_MAX_MISSES
#define VMALLOC_MAX_MISSES 1024
#endif
#ifndef VMALLOC_ARM_TIMEOUT_NS
#define VMALLOC_ARM_TIMEOUT_NS 10000000000ULL	/* tracers/vmalloc: ARM_TIMEOUT_NS */
#endif
#ifndef VMALLOC_STACKS
#define VMALLOC_STACKS 2048
#endif


struct vmalloc_arm {
	__u64 addr;
	__u64 ts_ns;
	__u32 expected;
	__u32 seen;
	__u32 misses;
	__u32 pad;
};

/* Bounded: one entry per task inside a huge vmalloc at the same moment. */
BPF_HASH(vmalloc_armed, __u32, struct vmalloc_arm, VMALLOC_MAX_ARMED);
/* Number of entries in vmalloc_armed: the mm_page_alloc fast-path gate. */
BPF_ARRAY(vmalloc_nr_armed, __u64, 1);
/* Slots: enum vmalloc_stat (events.h), why tasks were armed and disarmed. */
BPF_PERCPU_ARRAY(vmalloc_stats, __u64, VS_NR);
/* Kernel stacks of alloc_vmap_area; symbolized live by tracers/vmalloc.py. */
BPF_STACK_TRACE(vmalloc_stacks, VMALLOC_STACKS);

static __always_inline void vmalloc_stat(__u32 idx)
{
	__u64 *n = vmalloc_stats.lookup(&idx);

	if (n)
		(*n)++;
}

static __always_inline void vmalloc_nr_armed_add(__s64 delta)
{
	__u32 zero = 0;
	__u64 *n = vmalloc_nr_armed.lookup(&zero);

	if (n)
		__sync_fetch_and_add(n, delta);
}

static __always_inline void vmalloc_disarm(__u32 tid, __u32 why)
{
	/* Only the delete that succeeded moves the gate: user space sweeps too. */
	if (vmalloc_armed.delete(&tid) == 0) {
		vmalloc_nr_armed_add(-1);
		vmalloc_stat(why);
	}
}

/* Arm @tid for the area at @addr; return 0, or -1 when the table is full. */
static __always_inline int vmalloc_arm(__u32 tid, __u64 addr, __u64 size)
{
	struct vmalloc_arm st = {};
	struct vmalloc_arm *old;

	st.addr = addr;
	st.ts_ns = bpf_ktime_get_ns();
	st.expected = size / VMALLOC_HUGE_BYTES;	/* the guard page rounds off */
	old = vmalloc_armed.lookup(&tid);
	if (old) {
		*old = st;
		vmalloc_stat(VS_DISARM_REARM);
		vmalloc_stat(VS_ARMED);
		return 0;
	}
	if (vmalloc_armed.insert(&tid, &st) != 0) {
		vmalloc_stat(VS_ARM_FULL);
		return -1;
	}
	vmalloc_nr_armed_add(1);
	vmalloc_stat(VS_ARMED);
	return 0;
}

#if defined(VMALLOC_FENTRY_NOPROF) || defined(VMALLOC_FENTRY) || \
	defined(VMALLOC_KPROBE_NOPROF) || defined(VMALLOC_KPROBE)
#define VMALLOC_EXACT 1
/* The request of the __vmalloc_node_range call whose area comes next. */
struct vmalloc_request {
	__u64 ts_ns;
	__u64 size;
	__u64 vm_flags;
	__u64 caller;
};
BPF_HASH(vmalloc_requests, __u32, struct vmalloc_request, VMALLOC_MAX_ARMED);
/* Every caller seen (the value is unused): symbolized live by tracers/vmalloc.py. */
BPF_HASH(vmalloc_callers, __u64, __u8, VMALLOC_STACKS);

static __always_inline int vmalloc_request_enter(__u64 size, __u64 vm_flags, __u64 caller)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct vmalloc_request req = {};

	if (!tgid_wanted(id >> 32))
		return 0;
	req.ts_ns = bpf_ktime_get_ns();
	req.size = size;
	req.vm_flags = vm_flags;
	req.caller = caller;
	vmalloc_requests.update(&tid, &req);
	return 0;
}
#endif

/*
 * __vmalloc_node_range(size, align, start, end, gfp_mask, prot, vm_flags, node,
 * caller): caller is the call site /proc/vmallocinfo shows (vm_struct.caller).
 *
 * prot is a pgprot_t: a one-word struct, passed like an unsigned long; BPF_PROG
 * casts each context word to the parameter type, which a struct cannot take.
 * caller is a const void *, which the verifier does not let a program read
 * from the context directly ("arg8 type UNKNOWN is not a struct"): it comes
 * through bpf_get_func_arg() (since 5.17), which reads the trampoline's copy.
 * The trampoline takes 9 arguments only since Linux 6.5 (commit 473e3150e30a,
 * "bpf, x86: allow function arguments up to 12 for TRACING"); tracers/vmalloc.py
 * tries the attach first and takes the kprobe where it is refused.
 */
#if defined(VMALLOC_FENTRY_NOPROF) || defined(VMALLOC_FENTRY)
static __always_inline int vmalloc_fentry(unsigned long long *ctx, __u64 size, __u64 vm_flags)
{
	__u64 caller = 0;

	bpf_get_func_arg(ctx, 8, &caller);
	return vmalloc_request_enter(size, vm_flags, caller);
}
#endif
#if defined(VMALLOC_FENTRY_NOPROF)
/* Since 6.10 (commit 88ae5fb755b0, "mm: vmalloc: enable memory allocation profiling") */
KFUNC_PROBE(__vmalloc_node_range_noprof, unsigned long size, unsigned long align,
	    unsigned long start, unsigned long end, gfp_t gfp_mask, unsigned long prot,
	    unsigned long vm_flags)
{
	return vmalloc_fentry(ctx, size, vm_flags);
}
#elif defined(VMALLOC_FENTRY)
KFUNC_PROBE(__vmalloc_node_range, unsigned long size, unsigned long align,
	    unsigned long start, unsigned long end, gfp_t gfp_mask, unsigned long prot,
	    unsigned long vm_flags)
{
	return vmalloc_fentry(ctx, size, vm_flags);
}
#elif defined(VMALLOC_KPROBE_NOPROF) || defined(VMALLOC_KPROBE)
/*
 * vm_flags, node and caller are arguments 7-9: on the stack above the return
 * address at function entry (x86-64 SysV), where the kprobe fires.
 */
static __always_inline int vmalloc_kprobe_enter(struct pt_regs *ctx)
{
	__u64 vm_flags = 0, caller = 0;

#ifdef __x86_64__
	bpf_probe_read_kernel(&vm_flags, sizeof(vm_flags), (void *)(PT_REGS_SP(ctx) + 8));
	bpf_probe_read_kernel(&caller, sizeof(caller), (void *)(PT_REGS_SP(ctx) + 24));
#endif
	return vmalloc_request_enter(PT_REGS_PARM1(ctx), vm_flags, caller);
}
#if defined(VMALLOC_KPROBE_NOPROF)
int kprobe____vmalloc_node_range_noprof(struct pt_regs *ctx)
{
	return vmalloc_kprobe_enter(ctx);
}
#else
int kprobe____vmalloc_node_range(struct pt_regs *ctx)
{
	return vmalloc_kprobe_enter(ctx);
}
#endif
#endif

/* An area alloc_vmap_area() returned (or failed to find): arm, then report it. */
static __always_inline int vmalloc_area(void *ctx, __u64 addr, __u64 size, __u64 align,
					__u64 vstart, __u64 vend, int failed)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct alloc_vmap_area_event *e;
	__u32 flags = 0;
	struct task_cgroups cg;

	if (!tgid_wanted(id >> 32) || !cgroup_wanted())
		return 0;
	/*
	 * A huge attempt: __vmalloc_node_range rounded align and size to
	 * PMD_SIZE (plus the guard page).  An explicit 2 MiB alignment without
	 * VM_ALLOW_HUGE_VMAP looks the same here; it simply gets no huge-order
	 * page allocations and user space says so.
	 */
	if (!failed && align >= VMALLOC_HUGE_BYTES && size >= VMALLOC_HUGE_BYTES &&
	    (size & (VMALLOC_HUGE_BYTES - 1)) <= VMALLOC_PAGE_BYTES) {
		if (vmalloc_arm(tid, addr, size) == 0)
			flags |= VMAP_EV_ARMED;
		else
			flags |= VMAP_EV_ARM_FULL;
	}

	e = reserve_event(sizeof(*e), EV_ALLOC_VMAP_AREA);
	if (!e)
		return 0;
	e->addr = addr;
	e->size_bytes = size;
	e->align_bytes = align;
	e->vstart = vstart;
	e->vend = vend;
	e->failed = failed;
	e->requested_bytes = 0;
	e->vm_flags = 0;
	e->caller = 0;
#ifdef VMALLOC_EXACT
	{
		struct vmalloc_request *req = vmalloc_requests.lookup(&tid);

		if (req) {
			if (e->hdr.ts_ns - req->ts_ns < VMALLOC_ARM_TIMEOUT_NS) {
				__u64 caller = req->caller;
				__u8 one = 1;

				e->requested_bytes = req->size;
				e->vm_flags = req->vm_flags;
				e->caller = caller;
				if (caller)
					vmalloc_callers.update(&caller, &one);
				flags |= VMAP_EV_EXACT;
			} else {
				vmalloc_stat(VS_EXACT_STALE);
			}
			/* One area per call; a fallback retry reuses the first's. */
			vmalloc_requests.delete(&tid);
		}
	}
#endif
	e->stack_id = vmalloc_stacks.get_stackid(ctx, 0);
	if (e->stack_id < 0)
		vmalloc_stat(VS_STACK_ERRORS);
	e->flags = flags;
	e->pad = 0;
	cg = current_cgroups();
	e->cgroup_id = cg.cgroup_id;
	e->memcg_id = cg.memcg_id;
	submit_event(e);
	return 0;
}

/* An area on its way to the lazy-free list (its address space is reused later). */
static __always_inline int vmalloc_area_freed(__u64 addr, __u64 nr_lazy, __u64 nr_lazy_max)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct free_vmap_area_event *e;
	struct vmalloc_arm *st;

	st = vmalloc_armed.lookup(&tid);
	if (st && st->addr == addr)
		vmalloc_disarm(tid, VS_DISARM_FREE);

	/* Not filtered by TARG_TGID: an area is often freed by another task. */
	e = reserve_event(sizeof(*e), EV_FREE_VMAP_AREA);
	if (!e)
		return 0;
	e->addr = addr;
	e->nr_lazy_pages = nr_lazy;
	e->nr_lazy_max_pages = nr_lazy_max;
	submit_event(e);
	return 0;
}

static __always_inline int vmalloc_purged(__u64 start, __u64 end, __u32 nr_purged)
{
	struct purge_vmap_area_event *e;

	e = reserve_event(sizeof(*e), EV_PURGE_VMAP_AREA);
	if (!e)
		return 0;
	e->start = start;
	e->end = end;
	e->nr_purged = nr_purged;
	e->pad = 0;
	submit_event(e);
	return 0;
}

#if defined(VMALLOC_AREA_FEXIT) || defined(VMALLOC_AREA_KPROBE)
/*
 * Before Linux 6.2 there are no vmalloc tracepoints: the same three events
 * come from the functions they were later placed in.  alloc_vmap_area(size,
 * align, vstart, vend, node, gfp_mask) returns the area or an ERR_PTR (its
 * tracepoint fires at its end, so its exit is the same moment);
 * free_vmap_area_noflush(va) and __purge_vmap_area_lazy(start, end) at
 * entry and exit.  tracers/vmalloc checks the prototypes in BTF.  Not known
 * here: the lazy-page counts of a free and how many areas a purge freed
 * (the kernel keeps them in locals); the purge says so with
 * VMALLOC_PURGED_UNKNOWN.
 */
#ifndef VMAP_AREA_VA_START_OFF
#define VMAP_AREA_VA_START_OFF 0
#endif

static __always_inline __u64 vmap_area_start(__u64 va)
{
	__u64 start = 0;

	bpf_probe_read_kernel(&start, sizeof(start), (void *)(va + VMAP_AREA_VA_START_OFF));
	return start;
}

static __always_inline int vmalloc_area_returned(void *ctx, __u64 ret, __u64 size, __u64 align,
						 __u64 vstart, __u64 vend)
{
	/* IS_ERR_VALUE(): the top 4095 values are -errno. */
	int failed = ret == 0 || ret >= (__u64)-4095;

	return vmalloc_area(ctx, failed ? ret : vmap_area_start(ret), size, align, vstart,
			    vend, failed);
}
#endif

#if defined(VMALLOC_AREA_FEXIT)
KRETFUNC_PROBE(alloc_vmap_area, unsigned long size, unsigned long align, unsigned long vstart,
	       unsigned long vend, int node, gfp_t gfp_mask, void *ret)
{
	return vmalloc_area_returned(ctx, (__u64)ret, size, align, vstart, vend);
}

KFUNC_PROBE(free_vmap_area_noflush, void *va)
{
	return vmalloc_area_freed(vmap_area_start((__u64)va), 0, 0);
}

KRETFUNC_PROBE(__purge_vmap_area_lazy, unsigned long start, unsigned long end, bool ret)
{
	return vmalloc_purged(start, end, VMALLOC_PURGED_UNKNOWN);
}
#elif defined(VMALLOC_AREA_KPROBE)
struct vmalloc_area_args {
	__u64 size;
	__u64 align;
	__u64 vstart;
	__u64 vend;
};
/* A kretprobe has no arguments: the entry keeps them per thread (bounded). */
BPF_HASH(vmalloc_area_args, __u32, struct vmalloc_area_args, VMALLOC_MAX_ARMED);

int kprobe__alloc_vmap_area(struct pt_regs *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct vmalloc_area_args a = {};

	a.size = PT_REGS_PARM1(ctx);
	a.align = PT_REGS_PARM2(ctx);
	a.vstart = PT_REGS_PARM3(ctx);
	a.vend = PT_REGS_PARM4(ctx);
	vmalloc_area_args.update(&tid, &a);
	return 0;
}

int kretprobe__alloc_vmap_area(struct pt_regs *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct vmalloc_area_args *a = vmalloc_area_args.lookup(&tid);
	struct vmalloc_area_args copy;

	if (!a) {
		vmalloc_stat(VS_AREA_ARGS_MISSING);
		return 0;
	}
	copy = *a;
	vmalloc_area_args.delete(&tid);
	return vmalloc_area_returned(ctx, PT_REGS_RC(ctx), copy.size, copy.align, copy.vstart,
				     copy.vend);
}

int kprobe__free_vmap_area_noflush(struct pt_regs *ctx)
{
	return vmalloc_area_freed(vmap_area_start(PT_REGS_PARM1(ctx)), 0, 0);
}

/* Reported at entry: the kretprobe would add a probe for no more facts. */
int kprobe____purge_vmap_area_lazy(struct pt_regs *ctx)
{
	return vmalloc_purged(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), VMALLOC_PURGED_UNKNOWN);
}
#else
TRACEPOINT_PROBE(vmalloc, alloc_vmap_area)
{
	vmalloc_area(args, args->addr, args->size, args->align, args->vstart, args->vend,
		     args->failed);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmalloc, free_vmap_area_noflush)
{
	vmalloc_area_freed(args->va_start, args->nr_lazy, args->nr_lazy_max);
	return TP_PASS;
}

TRACEPOINT_PROBE(vmalloc, purge_vmap_area_lazy)
{
	vmalloc_purged(args->start, args->end, args->npurged);
	return TP_PASS;
}
#endif

/* A page allocation by an armed task (slow path: something is armed). */
static __always_inline int vmalloc_page_alloc(int ok, __u32 order, __u64 gfp_flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct vmalloc_page_alloc_event *e;
	struct vmalloc_arm *st;
	__u64 addr;
	__u32 index, expected;

	st = vmalloc_armed.lookup(&tid);
	if (!st)
		return 0;
	if (bpf_ktime_get_ns() - st->ts_ns > VMALLOC_ARM_TIMEOUT_NS) {
		vmalloc_disarm(tid, VS_DISARM_TIMEOUT);
		return 0;
	}
	if (order != VMALLOC_HUGE_ORDER) {
		vmalloc_stat(VS_PAGE_MISSES);
		if (++st->misses >= VMALLOC_MAX_MISSES)
			vmalloc_disarm(tid, VS_DISARM_MISSES);
		return 0;
	}
	addr = st->addr;
	index = st->seen++;
	expected = st->expected;
	if (!ok)
		vmalloc_disarm(tid, VS_DISARM_FAILED);
	else if (index + 1 >= expected)
		vmalloc_disarm(tid, VS_DISARM_DONE);

	e = reserve_event(sizeof(*e), EV_VMALLOC_PAGE_ALLOC);
	if (!e)
		return 0;
	e->area_addr = addr;
	e->gfp_flags = gfp_flags;
	e->order = order;
	e->failed = !ok;
	e->index = index;
	e->expected = expected;
	submit_event(e);
	return 0;
}

static __always_inline int vmalloc_kmalloc(__u64 bytes_req, __u64 bytes_alloc,
					   __u64 gfp_flags, int node)
{
	struct kmalloc_large_event *e;

	if (!tgid_wanted(bpf_get_current_pid_tgid() >> 32) || !cgroup_wanted())
		return 0;
	e = reserve_event(sizeof(*e), EV_KMALLOC_LARGE);
	if (!e)
		return 0;
	e->bytes_req = bytes_req;
	e->bytes_alloc = bytes_alloc;
	e->gfp_flags = gfp_flags;
	e->node = node;
	e->pad = 0;
	submit_event(e);
	return 0;
}

#ifdef VMALLOC_RAW_TP
/*
 * TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags,
 *          int migratetype), checked in the running kernel's BTF.
 * A raw tracepoint skips building the trace record for every allocation.
 */
RAW_TRACEPOINT_PROBE(mm_page_alloc)
{
	__u32 zero = 0;
	__u64 *armed = vmalloc_nr_armed.lookup(&zero);

	if (!armed || !*armed)
		return 0;
	return vmalloc_page_alloc(ctx->args[0] != 0, (__u32)ctx->args[1], ctx->args[2]);
}

/*
 * TP_PROTO(unsigned long call_site, const void *ptr, size_t bytes_req,
 *          size_t bytes_alloc, gfp_t gfp_flags, int node)
 */
RAW_TRACEPOINT_PROBE(kmalloc)
{
	if (ctx->args[1] != 0 || ctx->args[2] < VMALLOC_KMALLOC_MIN)
		return 0;
	return vmalloc_kmalloc(ctx->args[2], ctx->args[3], ctx->args[4], (int)ctx->args[5]);
}
#else
TRACEPOINT_PROBE(kmem, mm_page_alloc)
{
	__u32 zero = 0;
	__u64 *armed = vmalloc_nr_armed.lookup(&zero);

	if (!armed || !*armed)
		return TP_PASS;
	vmalloc_page_alloc(args->pfn != (unsigned long)-1, args->order, args->gfp_flags);
	return TP_PASS;
}

TRACEPOINT_PROBE(kmem, kmalloc)
{
	if (args->ptr != 0 || args->bytes_req < VMALLOC_KMALLOC_MIN)
		return TP_PASS;
	vmalloc_kmalloc(args->bytes_req, args->bytes_alloc, args->gfp_flags, args->node);
	return TP_PASS;
}
#endif
