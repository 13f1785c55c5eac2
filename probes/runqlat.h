/* Shared by both BPF programs (runqlat.bpf.c and the bcc backend's text, which includes this
 * file) and mirrored by probes/model.py: map layouts and the histogram's slot scheme. */
#ifndef RUNQSCALE_RUNQLAT_H
#define RUNQSCALE_RUNQLAT_H

/* Four sub-buckets per power of two (slot width <= 25 % of its lower bound): 0-3 ns are slots
 * 0-3, then slot = 4 * (msb - 1) + next two bits. 128 slots reach 2^33 ns (~8.6 s); longer waits
 * land in the last slot. */
#define RQ_SUB_BITS 2
#define RQ_SLOTS 128

/* What held the CPU longest while a task waited (runqlat.bpf.c holder_of(), from the CPU's
 * last few holders), as an approximation of what it waited behind: the wait's nanoseconds go
 * to that class. Waits
 * behind the own cgroup's tasks (or an idle CPU: its quota) call for a resize, waits behind
 * other cgroups for spreading or scaling out. */
enum rq_holder {
	RQ_HELD_SAME = 0,   /* a task of the waiter's own cgroup: it is oversubscribed */
	RQ_HELD_OTHER = 1,  /* a user task of another cgroup: a neighbour */
	RQ_HELD_KERNEL = 2, /* a kernel thread */
	RQ_HELD_IDLE = 3,   /* nobody: the waiter was throttled by its quota, or waking up */
	RQ_HOLDERS = 4,
};

struct rq_hist {
	__u64 slots[RQ_SLOTS]; /* the count is their sum: one add fewer per event */
	__u64 sum_ns;
	__u64 held_ns[RQ_HOLDERS]; /* sum_ns split by enum rq_holder */
};

/* Set by the loader in .rodata before load: the kernel side has no runtime config lookups. */
struct rq_config {
	__u32 hierarchy;  /* RQ_HIER_V2: cgroup2 ids; RQ_HIER_V1_CPU: ids in the v1 cpu hierarchy */
	__u32 sched_info; /* 1: read the scheduler's own enqueue stamp (CONFIG_SCHED_INFO) */
	__u32 slots;      /* slot_hists entries per CPU id (the slots, rounded up to 8) */
	__u32 pad;
};

#define RQ_NO_SLOT 0xFFFFFFFFu /* a cgroup without a histogram slot (runqlat.bpf.c) */

#define RQ_HIER_V2 0
#define RQ_HIER_V1_CPU 1

/* Exceptional events only: the common path touches no counter (events = sum of slots). */
enum rq_stat {
	RQ_STAT_MAP_FULL = 0,  /* waits dropped because the per-cgroup map was full */
	RQ_STAT_NO_CGROUP = 1, /* waits whose task had no cgroup in the chosen hierarchy */
	RQ_STAT_SLOTTED = 2,   /* cgroups given a histogram slot (cgroup_slot inserts) */
	RQ_STAT_MAX = 3,
};

/* The slot of a wait of `ns` nanoseconds (probes/model.py slot_of does the same in Python). */
static __always_inline __u32 rq_log2(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 slot_of(__u64 ns)
{
	__u32 msb, slot;

	if (ns < (1 << RQ_SUB_BITS))
		return ns;
	msb = rq_log2(ns);
	slot = ((msb - 1) << RQ_SUB_BITS) + ((ns >> (msb - RQ_SUB_BITS)) & ((1 << RQ_SUB_BITS) - 1));
	return slot < RQ_SLOTS ? slot : RQ_SLOTS - 1;
}

/* One wait into this CPU's copy of a cgroup's histogram (a slot's copy for this CPU, or a
 * per-CPU hash value; summed over CPUs by user space): plain adds, no atomics and no cache line
 * shared between CPUs. Only sched_switch programs write it, and they run with interrupts off,
 * so nothing interleaves. */
static __always_inline void rq_hist_add(struct rq_hist *h, __u64 delta, __u32 holder)
{
	__u32 slot = slot_of(delta);

	/* Keep the mask: clang proves slot < RQ_SLOTS and drops it, the verifier cannot. */
	asm volatile("" : "+r"(slot));
	h->slots[slot & (RQ_SLOTS - 1)] += 1;
	h->sum_ns += delta;
	h->held_ns[holder & (RQ_HOLDERS - 1)] += delta;
}

#endif
