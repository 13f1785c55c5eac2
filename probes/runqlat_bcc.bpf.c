// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency per cgroup for the bcc backend (probes/bcc.py): runqlat.bpf.c's fallback
 * path, written against tracepoint fields only, because BCC compiles against whatever kernel
 * headers the node has (Debian's 6.1 headers serve a 6.18 kernel here), so no struct offset
 * can be trusted. Same histogram scheme and map value as runqlat.bpf.c (runqlat.h).
 *
 * A wait starts at sched_wakeup/sched_wakeup_new, or at a sched_switch whose `prev` stays
 * runnable (prev_state 0, or the "preempted" bit TASK_REPORT_MAX read from tracefs at start).
 * It ends when the task is switched in. Tracepoint fields cannot say which cgroup `next` is in,
 * so the wait is stashed per CPU and accounted at the *next* sched_switch on that CPU, where
 * `prev` is that same task and is `current`: the helpers then name its cgroup (v2) or process
 * (v1, folded into cgroups by user space).
 *
 * Set by the loader (-D): HIER, MAX_KEYS, START_ENTRIES, PARENT_ENTRIES, TASK_REPORT_MAX.
 */
#include "runqlat.h"

struct rq_stash {
	u32 pid;
	u32 pad;
	u64 delta;
};

BPF_HASH(start, u32, u64, START_ENTRIES);  /* tid -> runnable since (ns) */
BPF_F_TABLE("percpu_hash", u64, struct rq_hist, hists, MAX_KEYS, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(stash, struct rq_stash, 1);
BPF_ARRAY(zero, struct rq_hist, 1);        /* insert source: too large for the stack */
BPF_PERCPU_ARRAY(stats, u64, RQ_STAT_MAX);
#if HIER == RQ_HIER_V1_CPU
BPF_F_TABLE("lru_hash", u32, u32, parents, PARENT_ENTRIES, 0); /* child pid -> parent tgid */
#endif

static __always_inline void count_stat(u32 which)
{
	u64 *v = stats.lookup(&which);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* A wakeup of a task that is still queued (woken while preempted on its way to sleep) does not
 * restart its wait: keep the older stamp, as the scheduler keeps sched_info.last_queued. */
static __always_inline void mark_woken(u32 pid, u64 now)
{
	if (pid) /* the idle task never waits */
		start.insert(&pid, &now);
}

/* Runs in the context of the task that waited: it is `prev` of this sched_switch. */
static __always_inline void account_wait(u64 delta)
{
	struct rq_hist *h, *z;
	u32 zk = 0;
#if HIER == RQ_HIER_V2
	u64 key = bpf_get_current_cgroup_id();
#else
	u64 key = bpf_get_current_pid_tgid() >> 32;
#endif

	if (!key) {
		count_stat(RQ_STAT_NO_CGROUP);
		return;
	}
	h = hists.lookup(&key);
	if (!h) {
		z = zero.lookup(&zk);
		if (!z)
			return;
		hists.insert(&key, z);
		h = hists.lookup(&key);
		if (!h) {
			count_stat(RQ_STAT_MAP_FULL);
			return;
		}
	}
	/* No holder split: tracepoint fields cannot flag kernel threads, nor (v1) cgroups. */
	rq_hist_add(h, delta, RQ_HELD_SAME);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
	mark_woken(args->pid, bpf_ktime_get_ns());
	return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
	mark_woken(args->pid, bpf_ktime_get_ns());
	return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
	u32 zk = 0, prev = args->prev_pid, next = args->next_pid;
	long state = args->prev_state;
	u64 now = bpf_ktime_get_ns(), *since;
	struct rq_stash *st = stash.lookup(&zk);

	if (!st)
		return 0;
	if (st->pid) {
		/* The task switched in last time on this CPU is leaving it now, as current. */
		if (st->pid == prev)
			account_wait(st->delta);
		else
			count_stat(RQ_STAT_NO_CGROUP);
		st->pid = 0;
	}
	/* Preempted (or woken before it could sleep): still on the run queue, so it waits again.
	 * Going to sleep: drop a stamp left by a wakeup that found it running. */
	if (!prev) /* the idle task never waits */
		;
	else if (state == 0 || state >= TASK_REPORT_MAX)
		start.update(&prev, &now);
	else
		start.delete(&prev);
	if (!next)
		return 0;
	since = start.lookup(&next);
	if (!since)
		return 0;
	st->delta = now - *since;
	st->pid = next;
	start.delete(&next);
	return 0;
}
#if HIER == RQ_HIER_V1_CPU

/* A process that starts and exits between two reads is never seen in /proc: user space gives
 * its waits to the cgroup of its parent. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 child = args->child_pid, parent = bpf_get_current_pid_tgid() >> 32;

	parents.update(&child, &parent);
	return 0;
}
#endif
