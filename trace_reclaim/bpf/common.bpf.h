/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by every tracer (joined before the tracer files, not #included:
 * see bpf_source() in trace_reclaim/session.py): the one ring buffer all records go through, the
 * per-type count of records the ring buffer had no room for, and the header
 * fill.  Tunables arrive as -D cflags from trace_reclaim/session.py:
 *   RINGBUF_PAGES  ring buffer size in pages (power of two)
 *   TARG_TGID      only this process (0: all); kernel threads are never filtered
 *   NEED_PT_REGS   a kprobe plan was chosen (some -D..._KPROBE...): its
 *                  programs read struct pt_regs (PT_REGS_PARM1, PT_REGS_SP)
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

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef TARG_TGID
#define TARG_TGID 0
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* Records lost because the ring buffer was full, per event type. */
BPF_PERCPU_ARRAY(lost_events, __u64, MAX_EVENT_TYPES);

static __always_inline int tgid_wanted(__u32 tgid)
{
	return TARG_TGID == 0 || tgid == TARG_TGID;
}

static __always_inline void count_lost(__u32 type)
{
	__u64 *n = lost_events.lookup(&type);

	if (n)
		(*n)++;
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
