/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What reclaim.bpf.c and reclaim_lru.bpf.c share, which may be compiled into
 * different BPF objects: the state of a direct reclaim in flight, the value
 * type of the direct_reclaim_begin map.  (Maps themselves are declared in
 * the files bcc compiles as the main text: it rewrites them only there.)
 */
#ifndef TRACE_RECLAIM_RECLAIM_BPF_H
#define TRACE_RECLAIM_RECLAIM_BPF_H

struct direct_reclaim_begin_state {
	__u64 ts_ns;
	__u64 gfp_flags;
	__s32 order;
	__s32 last_priority;		/* of the last pass or shrink seen, or -1 */
	__u32 retries;
};

#endif /* TRACE_RECLAIM_RECLAIM_BPF_H */
