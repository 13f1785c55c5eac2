// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency per cgroup, aggregated in the kernel.
 *
 * A task's wait runs from the moment it becomes runnable (wakeup, new task, or preempted while
 * still runnable) to the moment it is switched in. The wait is added to the histogram of the
 * cgroup of the task that waited (`next` at switch-in), never to that of the task that was
 * running when it was woken (the waker), which is what bcc's `runqlat -c` measures by mistake.
 *
 * Fast path (CONFIG_SCHED_INFO, which distribution kernels enable through TASK_DELAY_ACCT): the
 * scheduler already stamps every enqueue in task->sched_info.last_queued with its run-queue
 * clock and sums waits in task->sched_info.run_delay. One program on sched_switch reads both
 * against rq->clock, so there are no wakeup hooks, and the result is by construction the
 * kernel's own run_delay accounting (/proc/<pid>/schedstat), including waits split by
 * migrations between CPUs.
 *
 * Fallback (no sched_info): stamp the start in task-local storage from wakeup/wakeup_new and
 * preempting switches, like libbpf-tools' runqlat, but without a hash insert/delete per event.
 *
 * Task storage is never created under the run-queue lock: before 6.4 the kernel allocates it
 * with kmalloc(GFP_ATOMIC), which can wake kswapd (or a memcg worker) and so take a run-queue
 * lock again. Every task gets its storage where no scheduler lock is held: at fork
 * (sched_process_fork, before the child is first woken) and, for tasks that existed before the
 * probe, from a task iterator the loader runs once after attaching; the scheduler hooks only
 * look it up.
 *
 * Per-cgroup histograms live in an array of per-CPU copies ("slots"; each CPU updates its
 * own). A cgroup gets a slot at its first wait, popped from a stack of free slots that user
 * space fills at load and refills as cgroups die; each task caches (cgroup id, slot) in its task
 * storage, so the common switch reaches its histogram with no hash lookup. When the slots run
 * out, a cgroup's histogram goes to a per-CPU hash instead (one lookup per wait, as before
 * stop 28).
 *
 * RQ_ABLATE_HOLDERS / _HASH / _TASK_STORAGE / _SLOTS: benchmark-only builds that drop one part
 * of the fast path each (probes/bench_breakdown.py measures what each part costs per switch;
 * _SLOTS sends every wait through the hash, as before stop 28); the product is never built
 * with them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "runqlat.h"

#define TASK_RUNNING 0
#define PF_KTHREAD 0x00200000 /* include/linux/sched.h; a #define, so not in vmlinux.h */

const volatile struct rq_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} runnable_since SEC(".maps");

/* The overflow for cgroups without a slot. Per CPU like the slots: each CPU adds to its own
 * copy (no atomics, no cache line bouncing between CPUs on every switch); user space sums the
 * copies. Entries are allocated on first use only. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192); /* the loader may change it before load */
	__type(key, __u64);        /* cgroup id (kernfs node id = inode of the cgroup directory) */
	__type(value, struct rq_hist);
} hists SEC(".maps");

/* The slotted histograms: one copy per possible CPU id, CPU-major in one mmapable array (entry
 * cpu * cfg.slots + slot, cfg.slots rounded up so each CPU's copies are whole cache lines; each
 * CPU updates its own copy, as in a per-CPU array, and user space reads every copy in place
 * through its mapping: no syscall and no copy per read). The loader sizes it to CPU ids x
 * cfg.slots, preallocated, so it is bounded by a memory budget. Unlike a per-CPU array it is
 * one allocation, not NUMA-local per CPU (not measured on a multi-socket host). With it: the slot
 * of each slotted cgroup, and the free slots (a stack: freed low slots are reused first, so the
 * used range stays compact for the reader). Only programs take slots; only user space frees
 * them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 256); /* the loader sets it */
	__type(key, __u32);
	__type(value, struct rq_hist);
} slot_hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256); /* = slot_hists' */
	__type(key, __u64);   /* cgroup id */
	__type(value, __u64); /* its slot */
} cgroup_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 256); /* = slot_hists' */
	__type(value, __u32);
} free_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RQ_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Per CPU: the last RQ_RING holders of this CPU, for holder_of(). */
#define RQ_RING 4
#define RQ_WHO_IDLE 0
#define RQ_WHO_KERNEL 1
struct rq_holders {
	__u64 since;          /* when the current holder got the CPU */
	__u64 cur;            /* the current holder, as in who[] (noted when it was switched in,
			       * where its cgroup is looked up anyway for its wait) */
	__u64 pos;            /* ring position of the next entry */
	__u64 who[RQ_RING];   /* a user task's struct cgroup * (compared, never dereferenced),
			       * or RQ_WHO_IDLE / RQ_WHO_KERNEL */
	__u64 until[RQ_RING]; /* when it left the CPU */
	__u64 held[RQ_RING];  /* for how long it had held it */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rq_holders);
} holders SEC(".maps");

#ifdef RQ_ABLATE_HASH
struct { /* one histogram for every cgroup: the per-cgroup hash lookup's cost, measured */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rq_hist);
} ablated_hist SEC(".maps");
#endif

static struct rq_hist zero_hist; /* .bss: too large for the 512-byte BPF stack */

static __always_inline void count_stat(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* Direct BTF loads (faulting loads, no helper calls) along task->cgroups->...: the task's
 * cgroup in the measured hierarchy, or NULL. */
static __always_inline struct cgroup *cgroup_of(struct task_struct *t)
{
	struct css_set *cs = t->cgroups;
	struct cgroup_subsys_state *css;
	int cpu_id;

	if (!cs)
		return 0;
	if (cfg.hierarchy == RQ_HIER_V2)
		return cs->dfl_cgrp;
	/* v1: the cpu controller's hierarchy, where CFS quotas and shares apply. */
	cpu_id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	if (cpu_id < 0 || cpu_id >= CGROUP_SUBSYS_COUNT)
		return 0;
	css = cs->subsys[cpu_id];
	return css ? css->cgroup : 0;
}

/* Called at every switch, with this CPU's ring: the current holder (prev) leaves the CPU now
 * and `next` (of cgroup `cgrp`) gets it. */
static __always_inline void note_holder(struct rq_holders *r, struct task_struct *next,
					struct cgroup *cgrp, __u64 now)
{
	__u32 i = r->pos & (RQ_RING - 1);

	r->who[i] = r->cur;
	r->until[i] = now;
	r->held[i] = now - r->since;
	r->since = now;
	r->pos++;
	if (!next->pid)
		r->cur = RQ_WHO_IDLE;
	else if (next->flags & PF_KTHREAD)
		r->cur = RQ_WHO_KERNEL;
	else
		r->cur = (__u64)cgrp;
}

/* What kept a task of `cgrp` waiting from `since` until now: of this CPU's last RQ_RING
 * holders, the one that held it longest during the wait. The last holder alone would be
 * mostly the short tasks that preempt (kernel threads, wakers), not what the wait was spent
 * behind; a wait longer than RQ_RING slices is judged by its end. */
static __always_inline __u32 holder_of(struct rq_holders *r, struct cgroup *cgrp, __u64 since)
{
	__u32 last = (r->pos - 1) & (RQ_RING - 1);
	__u64 best = 0, who = r->who[last], in;
	int i;

	/* The common case, exactly: the holder that just left had the CPU for the whole wait, so
	 * no earlier one can have held it longer. */
	if (r->until[last] - r->held[last] <= since)
		goto judge;
#pragma unroll
	for (i = 0; i < RQ_RING; i++) {
		if (r->until[i] <= since)
			continue;
		in = r->until[i] - since;
		if (in > r->held[i])
			in = r->held[i];
		if (in > best) {
			best = in;
			who = r->who[i];
		}
	}
judge:
	if (who == RQ_WHO_IDLE)
		return RQ_HELD_IDLE;
	if (who == RQ_WHO_KERNEL)
		return RQ_HELD_KERNEL;
	return who == (__u64)cgrp ? RQ_HELD_SAME : RQ_HELD_OTHER;
}

static __always_inline struct rq_holders *this_cpu_holders(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&holders, &zero);
}

/* The hash path: this CPU's copy of the cgroup's histogram in `hists`, created on its first
 * wait (the only insert it will ever need: from a program, it sets this CPU's copy and zeroes
 * the others). */
static __always_inline struct rq_hist *hashed_hist(__u64 cgid)
{
	struct rq_hist *h;

	h = bpf_map_lookup_elem(&hists, &cgid);
	if (h)
		return h;
	bpf_map_update_elem(&hists, &cgid, &zero_hist, BPF_NOEXIST);
	return bpf_map_lookup_elem(&hists, &cgid);
}

/* The cgroup's slot: the one it has, else one popped from the free stack (user space zeroed
 * it), else RQ_NO_SLOT (all taken: the hash path). */
static __always_inline __u32 slot_for(__u64 cgid)
{
	__u64 *have, v;
	__u32 slot;

	have = bpf_map_lookup_elem(&cgroup_slot, &cgid);
	if (have)
		return *have;
	if (bpf_map_pop_elem(&free_slots, &slot))
		return RQ_NO_SLOT;
	v = slot;
	if (bpf_map_update_elem(&cgroup_slot, &cgid, &v, BPF_NOEXIST)) {
		/* Another CPU slotted this cgroup first: give ours back and use its slot. */
		bpf_map_push_elem(&free_slots, &slot, 0);
		have = bpf_map_lookup_elem(&cgroup_slot, &cgid);
		return have ? *have : RQ_NO_SLOT;
	}
	/* After the insert: a reader that sees this count unchanged may keep its copy of
	 * cgroup_slot (it catches up one read later at worst). */
	count_stat(RQ_STAT_SLOTTED);
	return slot;
}

/* Per task (fast path): the run_delay already accounted and the histogram slot of the cgroup
 * it was last seen in, so a switch usually needs no per-cgroup lookup at all. */
struct rq_task {
	__u64 seen; /* sched_info.run_delay + 1 after the last wait accounted; 0 = never seen */
	__u64 cgid; /* the cgroup `slot` belongs to; 0 = nothing cached */
	__u32 slot; /* its slot in slot_hists, or RQ_NO_SLOT: its histogram is in the hash */
	__u32 pad;
};

/* This CPU's copy of the histogram of cgroup `cgid`, through the task's cache `c` (NULL on
 * the fallback path, which keeps no cache). */
static __always_inline struct rq_hist *hist_of(__u64 cgid, struct rq_task *c)
{
	__u32 slot;

#ifdef RQ_ABLATE_HASH
	return bpf_map_lookup_elem(&ablated_hist, &(__u32){0}); /* no per-cgroup lookup at all */
#endif
#ifdef RQ_ABLATE_SLOTS
	return hashed_hist(cgid);
#endif
	if (c && c->cgid == cgid) {
		slot = c->slot;
	} else {
		slot = slot_for(cgid);
		if (c) {
			c->cgid = cgid;
			c->slot = slot;
		}
	}
	if (slot == RQ_NO_SLOT)
		return hashed_hist(cgid);
	slot += bpf_get_smp_processor_id() * cfg.slots; /* this CPU's copy (cfg.slots: a stride) */
	return bpf_map_lookup_elem(&slot_hists, &slot);
}

/* A task of `cgrp` waited `delta` ns until `now` and is being switched in (`r`: this CPU's
 * holders; `c`: the task's slot cache, or NULL). */
static __always_inline void account_wait(struct cgroup *cgrp, __u64 delta, __u64 now,
					 struct rq_holders *r, struct rq_task *c)
{
	struct rq_hist *h;
	__u64 cgid;

	cgid = cgrp ? cgrp->kn->id : 0; /* kernfs node id = inode of the cgroup directory */
	if (!cgid) {
		count_stat(RQ_STAT_NO_CGROUP);
		return;
	}
	h = hist_of(cgid, c);
	if (!h) {
		count_stat(RQ_STAT_MAP_FULL);
		return;
	}
#ifdef RQ_ABLATE_HOLDERS
	rq_hist_add(h, delta, RQ_HELD_SAME);
#else
	/* A zero wait adds no nanoseconds to any holder's share: no need to find one. */
	rq_hist_add(h, delta, delta ? holder_of(r, cgrp, now - delta) : RQ_HELD_SAME);
#endif
}

/* ---- fast path: the scheduler's own run-queue accounting ---- */

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rq_task);
} run_delay_seen SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(rq_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct rq_holders *r = this_cpu_holders();
	struct cgroup *cgrp;
	struct cfs_rq *cfs;
	__u64 queued, now, segment = 0, total, delta;
	struct rq_task *seen;

	/* This CPU's rq, reached through a cfs_rq (set for tasks of every class by set_task_rq();
	 * the per-CPU `runqueues` symbol is not in kallsyms without KALLSYMS_ALL); next is idle
	 * only when prev is not. rq->clock was updated by __schedule() just before this tracepoint. */
	cfs = next->pid ? next->se.cfs_rq : prev->se.cfs_rq;
	if (!cfs || !r)
		return 0;
	now = cfs->rq->clock;
	cgrp = next->pid ? cgroup_of(next) : 0;
#ifndef RQ_ABLATE_HOLDERS
	note_holder(r, next, cgrp, now);
#endif
	if (!next->pid)
		return 0;
	/* The current queued segment; sched_info_arrive() adds it to run_delay right after this
	 * tracepoint. When the wakeup and this switch fall in one rq-clock update (typically a
	 * wakeup onto an idle CPU) the kernel accounts 0: that is still a wait event, or
	 * percentiles of mostly-sleeping services would be computed over contended waits only. */
	queued = next->sched_info.last_queued;
	if (queued && now > queued)
		segment = now - queued;
	total = next->sched_info.run_delay + segment;

	/* A waiting task moved between CPUs (load balancing, affinity changes) has its earlier
	 * queued segments folded into run_delay at dequeue and is restamped on the new CPU, so the
	 * whole wait is run_delay's growth since this task last ran. */
#ifdef RQ_ABLATE_TASK_STORAGE
	seen = 0; /* every wait is its last queued segment: waits split by migration are cut */
#else
	seen = bpf_task_storage_get(&run_delay_seen, next, 0, 0); /* created at fork / seed */
#endif
	if (seen && seen->seen) {
		delta = total - (seen->seen - 1);
		if (!queued && !delta)
			return 0; /* switched in without having queued: no wait happened */
	} else {
		if (!queued)
			return 0;
		delta = segment; /* first sighting: only the current segment is known */
	}
	if (seen)
		seen->seen = total + 1;
	account_wait(cgrp, delta, now, r, seen);
	return 0;
}

/* ---- fallback: stamps in task-local storage ---- */

static __always_inline void mark_runnable(struct task_struct *t, __u64 now)
{
	__u64 *since;

	if (!t->pid) /* the idle task never waits */
		return;
	since = bpf_task_storage_get(&runnable_since, t, 0, 0); /* created at fork / seed */
	if (since)
		*since = now;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(rq_wakeup, struct task_struct *p)
{
	mark_runnable(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(rq_wakeup_new, struct task_struct *p)
{
	mark_runnable(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(rq_switch_stamped, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns(), *since;
	struct rq_holders *r = this_cpu_holders();
	struct cgroup *cgrp = next->pid ? cgroup_of(next) : 0;

	if (!r)
		return 0;
	note_holder(r, next, cgrp, now);

	/* Preempted (or woken before it could sleep): still on the run queue, so it waits again. */
	if (preempt || prev_state == TASK_RUNNING)
		mark_runnable(prev, now);
	since = bpf_task_storage_get(&runnable_since, next, 0, 0);
	if (!since || !*since)
		return 0;
	account_wait(cgrp, now - *since, now, r, 0);
	*since = 0;
	return 0;
}

/* ---- task storage, created outside the scheduler ---- */

/* The storage the chosen program set reads (cfg is constant at load: the other branch is
 * dead code to the verifier). */
static __always_inline void create_storage(struct task_struct *t)
{
	if (cfg.sched_info)
		bpf_task_storage_get(&run_delay_seen, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	else
		bpf_task_storage_get(&runnable_since, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/* Every new task and thread, in kernel_clone() before wake_up_new_task(): no rq lock held. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(rq_fork, struct task_struct *parent, struct task_struct *child)
{
	create_storage(child);
	return 0;
}

/* Run once by the loader after the programs above are attached: every task alive then. */
SEC("iter/task")
int rq_seed(struct bpf_iter__task *ctx)
{
	struct task_struct *t = ctx->task;

	if (t)
		create_storage(t);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
