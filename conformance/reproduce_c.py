"""The C of `vmaflags reproduce` (reproduce.py): a standalone program with KTAP output, and a
kselftest_harness.h test, from one Program (steps, the model's predictions, the refutation).

Both are straight-line code: per step the syscall the script language names (SCRIPT.md), then
the observation executor.c makes (return value, PR_GET_THP_DISABLE, THP_enabled, the arena's
VMAs from smaps) compared with the model's.  Only the helpers a trace uses are emitted, so a
reproducer reads short; they follow executor.c's way of doing each thing (cited), without its
script parser, fork server or fast /proc reader.
"""
from __future__ import annotations

import errno
import re
import textwrap

from vmaflags.model.errno import SIGBUS, SIGSEGV
from vmaflags.model.observe import Observation
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, Execve, Fork, Khugepaged,
                                     Madvise, Mmap, Munmap, PrctlGet, PrctlSet, Syscall, Touch,
                                     UffdClose, UffdCopy, UffdRegister, UffdUnregister)

from .reproduce import Check, Program, ReproduceError

# errno names a kernel may answer (executor.c's table): for messages only, values compare as
# numbers
ERRNOS = ("EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF",
          "ECHILD", "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "EBUSY", "EEXIST", "EXDEV",
          "ENODEV", "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY",
          "EFBIG", "ENOSPC", "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM", "ERANGE", "EDEADLK",
          "ENAMETOOLONG", "ENOSYS", "ELOOP", "EOVERFLOW", "EOPNOTSUPP", "ECANCELED",
          "EHWPOISON", "ENODATA", "ETIMEDOUT")

_ADVICE_MACROS = {14: "MADV_HUGEPAGE", 15: "MADV_NOHUGEPAGE", 25: "MADV_COLLAPSE",
                  MADV_CLR_HUGEPAGE: "MADV_CLR_HUGEPAGE"}


# --- values ---------------------------------------------------------------------------------

def c_ret(ret: int) -> str:
    """A return value of the model as a C expression: 0, 3, -EINVAL, VF_SIGNALLED(SIGBUS)."""
    if ret == SIGBUS:
        return "VF_SIGNALLED(SIGBUS)"
    if ret == SIGSEGV:
        return "VF_SIGNALLED(SIGSEGV)"
    if ret < 0:
        name = errno.errorcode.get(-ret)
        return f"-{name}" if name else str(ret)
    return str(ret)


def c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_ulong(v: int) -> str:
    v &= (1 << 64) - 1
    return f"{v:#x}UL" if v > 9 else str(v)


def c_thp(o: Observation) -> str:
    return "-1" if o.thp is None else str(o.thp)


# --- the steps ------------------------------------------------------------------------------

def call(sc: Syscall) -> str:
    """The C expression that performs a step (not fork or execve) and yields its result."""
    t = type(sc)
    if t in (Mmap, Munmap, Touch, UffdUnregister, UffdCopy):
        fn = {Mmap: "vf_mmap", Munmap: "vf_munmap", Touch: "vf_touch",
              UffdUnregister: "vf_uffd_unregister", UffdCopy: "vf_uffd_copy"}[t]
        return f"{fn}({sc.off:#x}, {sc.len:#x})"
    if t is Madvise:
        adv = _ADVICE_MACROS.get(sc.advice, str(sc.advice))
        return f"vf_madvise({sc.off:#x}, {sc.len:#x}, {adv})"
    if t in (PrctlSet, PrctlGet):
        args = [c_ulong(a) for a in (sc.a2, sc.a3, sc.a4, sc.a5)]
        if sc.a3 == 2:
            args[1] = "PR_THP_DISABLE_EXCEPT_ADVISED"
        op = "PR_SET_THP_DISABLE" if t is PrctlSet else "PR_GET_THP_DISABLE"
        return f"vf_prctl({op}, {', '.join(args)})"
    if t is UffdRegister:
        modes = [m for m, on in (("UFFDIO_REGISTER_MODE_MISSING", sc.missing),
                                 ("UFFDIO_REGISTER_MODE_WP", sc.wp)) if on]
        return f"vf_uffd_register({sc.off:#x}, {sc.len:#x}, {' | '.join(modes) or '0'})"
    if t is UffdClose:
        return "vf_uffd_close()"
    if t is Khugepaged:
        return f"vf_khugepaged({sc.ms})"
    raise ReproduceError(f"no C for step {sc.text()!r}")


def needs(p: Program) -> set[str]:
    """The helper sections the trace uses."""
    kinds = {type(s) for pr in p.processes for s in pr.script.steps}
    out = {t.__name__.lower() for t in kinds}
    if kinds & {UffdRegister, UffdUnregister, UffdCopy, UffdClose}:
        out.add("uffd")  # the header
    if p.probes:
        out.add("fresh")
    return out


# --- the C text -----------------------------------------------------------------------------

HEAD = r"""#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
@UFFD_INCLUDE@
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
/* MADV_CLR_HUGEPAGE as @CLR_WHERE@ */
#define MADV_CLR_HUGEPAGE @CLR@
#ifndef PR_SET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#endif
#ifndef PR_GET_THP_DISABLE
#define PR_GET_THP_DISABLE 42
#endif
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#if !defined(__NR_memfd_create) && defined(__x86_64__)
#define __NR_memfd_create 319
#elif !defined(__NR_memfd_create) && defined(__aarch64__)
#define __NR_memfd_create 279
#endif

/* The arena: @ARENA@ PMD blocks at executor.c's fixed, PMD-aligned address (below the heap,
 * libraries and stack). */
#define ARENA_BASE 0x100000000000UL
#define PMD_SIZE (2UL << 20)
#define ARENA_LEN (@ARENA@ * PMD_SIZE)
#define THP_ENABLED "/sys/kernel/mm/transparent_hugepage/enabled"
#define THP_MODE "@SYSFS@" /* the mode the trace runs under */

/* A touch whose write raised a signal, as the model encodes it (vmaflags.model.errno). */
#define VF_SIGNALLED(sig) (-1000L - (sig))

#define VF_RECORDS @RECORDS@

/* One observation, as conformance/executor.c report() makes it (SCRIPT.md "Executor output"). */
struct vf_obs {
	long ret;		/* the step's result: >= 0, -errno, or VF_SIGNALLED() */
	long get;		/* prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), or -errno */
	int thp;		/* THP_enabled of /proc/self/status; -1 without that line */
	int seen, ok;
	char vmas[4096];	/* the arena's VMAs, START-END:FLAGS:ELIG:AHP,... */
};

/* Every check's and probe's observation, shared by this program's processes. */
static struct vf_obs *vf_rec;

/* The VMAs of smaps that meet [lo, hi), at offsets from lo, as executor.c observe_vmas()
 * prints them: FLAGS the subset of hg nh um uw that VmFlags shows ("-" for none), ELIG the
 * THPeligible value and AHP the AnonHugePages kB ("-" where smaps has no such line). */
static void vf_smaps(unsigned long lo, unsigned long hi, char *out, size_t cap)
{
	static const char *const names[] = {"hg", "nh", "um", "uw"};
	FILE *f = fopen("/proc/self/smaps", "re");
	char *line = NULL, elig[16], ahp[24], fl[16];
	unsigned long s, e, vs = 0, ve = 0;
	unsigned flags = 0;
	size_t n = 0, len = 0;
	int in = 0, last = 0, i;

	out[0] = 0;
	if (!f) {
		snprintf(out, cap, "?");
		return;
	}
	while (!last) {
		int header = 0;

		if (getline(&line, &n, f) <= 0)
			last = 1;
		else if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f'))
			header = sscanf(line, "%lx-%lx", &s, &e) == 2;
		if ((header || last) && in && len < cap) {
			for (fl[0] = 0, i = 0; i < 4; i++)
				if (flags & (1u << i))
					snprintf(fl + strlen(fl), sizeof(fl) - strlen(fl), "%s%s",
						 fl[0] ? "+" : "", names[i]);
			len += snprintf(out + len, cap - len, "%s%s0x%lx-0x%lx:%s:%s:%s",
					len ? "," : "", vs < lo ? "-" : "", vs < lo ? lo - vs : vs - lo,
					ve - lo, fl[0] ? fl : "-", elig, ahp);
		}
		if (header) {
			in = s < hi && e > lo;
			if (s >= hi)
				break;
			vs = s, ve = e, flags = 0;
			strcpy(elig, "-");
			strcpy(ahp, "-");
		} else if (in && !last && !strncmp(line, "VmFlags:", 8)) {
			char *save, *tok;

			for (tok = strtok_r(line + 8, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
				for (i = 0; i < 4; i++)
					if (!strcmp(tok, names[i]))
						flags |= 1u << i;
		} else if (in && !last && !strncmp(line, "THPeligible:", 12)) {
			sscanf(line + 12, "%15s", elig);
		} else if (in && !last && !strncmp(line, "AnonHugePages:", 14)) {
			sscanf(line + 14, "%23s", ahp);
		}
	}
	free(line);
	fclose(f);
}

static int vf_thp_enabled(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	int v = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "THP_enabled: %d", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static struct vf_obs *vf_observe(int record, long ret)
{
	struct vf_obs *o = &vf_rec[record];
	long g = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);

	o->ret = ret;
	o->get = g < 0 ? -errno : g;
	o->thp = vf_thp_enabled();
	vf_smaps(ARENA_BASE, ARENA_BASE + ARENA_LEN, o->vmas, sizeof(o->vmas));
	o->seen = 1;
	return o;
}

/*
 * The arena as executor.c setup_arena() places it: reserved with a PMD of PROT_NONE guard on
 * either side (MAP_FIXED_NOREPLACE; before 4.17 a hint, taken only if the range is free),
 * then emptied, so every mmap of the trace lands at the offset the model gives it and nothing
 * else of this process can merge with it.
 */
static int vf_setup_arena(void)
{
	size_t len = ARENA_LEN + 2 * PMD_SIZE;
	void *want = (void *)(ARENA_BASE - PMD_SIZE);
	void *p = mmap(want, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

	if (p != want) {
		fprintf(stderr, "cannot reserve the arena at %#lx: %s\n", ARENA_BASE - PMD_SIZE,
			p == MAP_FAILED ? strerror(errno) : "the address is taken");
		return -1;
	}
	return munmap((void *)ARENA_BASE, ARENA_LEN);
}

/* NULL when THP `enabled` is the trace's mode, else why the trace cannot run here.  Read
 * only: this program never writes sysfs. */
static const char *vf_sysfs_differs(char *why, size_t n)
{
	char buf[128] = "", *l, *r;
	FILE *f = fopen(THP_ENABLED, "re");

	if (!f || !fgets(buf, sizeof(buf), f)) {
		snprintf(why, n, "no THP here: cannot read %s (%s)", THP_ENABLED, strerror(errno));
		if (f)
			fclose(f);
		return why;
	}
	fclose(f);
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!r) {
		snprintf(why, n, "cannot read the mode from %s", THP_ENABLED);
		return why;
	}
	*r = 0;
	if (!strcmp(l + 1, THP_MODE))
		return NULL;
	snprintf(why, n, "THP enabled is [%s], the trace runs under [%s]; this program does "
		 "not change it (as root: echo %s > %s)", l + 1, THP_MODE, THP_MODE, THP_ENABLED);
	return why;
}

@RECORDS_C@
/*
 * Keep an mm of our own on khugepaged's list while the trace runs (executor.c serve_keeper(),
 * conformance/khugepaged.py): registering into an empty list wakes khugepaged at once
 * (__khugepaged_enter), and it could collapse a PMD between a step and its observation,
 * where the model collapses only at `khugepaged` steps.
 */
static pid_t vf_keeper(void)
{
	pid_t parent = getpid(), pid;
	int ready[2];
	char c, *p;

	if (pipe(ready))
		return -1;
	pid = fork();
	if (pid != 0) {
		close(ready[1]);
		while (pid > 0 && read(ready[0], &c, 1) < 0 && errno == EINTR)
			;
		close(ready[0]);
		return pid;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	p = mmap(NULL, 2 * PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		p = (char *)(((uintptr_t)p + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
		p[0] = 1; /* an anon_vma first: khugepaged takes only VMAs that have one */
		madvise(p, PMD_SIZE, MADV_HUGEPAGE);
	}
	if (write(ready[1], "", 1) < 0)
		_exit(1);
	for (;;)
		pause();
}

static void vf_keeper_stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}
"""

# A result as the executor prints it: for messages (the standalone program) and facts.
RET_TEXT = r"""
static const struct {
	int num;
	const char *name;
} vf_errnos[] = {
@ERRNOS@
};

static const char *vf_ret_text(long r, char *buf, size_t n)
{
	size_t i;

	if (r == VF_SIGNALLED(SIGBUS))
		return "SIGBUS";
	if (r == VF_SIGNALLED(SIGSEGV))
		return "SIGSEGV";
	if (r == VF_SIGNALLED(SIGALRM))
		return "TIMEOUT";
	for (i = 0; r < 0 && i < sizeof(vf_errnos) / sizeof(vf_errnos[0]); i++)
		if (vf_errnos[i].num == -r) {
			snprintf(buf, n, "-%s", vf_errnos[i].name);
			return buf;
		}
	snprintf(buf, n, r < 0 ? "-E%ld" : "%ld", r < 0 ? -r : r);
	return buf;
}

"""

# Per step kind: the helper, emitted when a trace uses it.
SECTIONS = {
    "mmap": r"""
static long vf_mmap(unsigned long off, unsigned long len)
{
	void *p = mmap((char *)ARENA_BASE + off, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	return p == MAP_FAILED ? -errno : 0;
}
""",
    "munmap": r"""
static long vf_munmap(unsigned long off, unsigned long len)
{
	return munmap((char *)ARENA_BASE + off, len) ? -errno : 0;
}
""",
    "madvise": r"""
static long vf_madvise(unsigned long off, unsigned long len, int advice)
{
	return madvise((char *)ARENA_BASE + off, len, advice) ? -errno : 0;
}
""",
    "prctl": r"""
static long vf_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
		     unsigned long a5)
{
	long r = prctl(option, a2, a3, a4, a5);

	return r < 0 ? -errno : r;
}
""",
    "uffd_state": r"""
static int vf_uffd = -1; /* the process's userfaultfd, once a uffd step opened it */
static int vf_uffd_nosigbus; /* it lacks UFFD_FEATURE_SIGBUS (before 4.14) */
""",
    "touch": r"""
static sigjmp_buf vf_touch_env;
static volatile sig_atomic_t vf_touching;

static void vf_on_fault(int sig)
{
	if (vf_touching) {
		vf_touching = 0;
		siglongjmp(vf_touch_env, sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Write one byte to each page of the range, in address order (executor.c do_touch()): 0, or
 * the signal the first failing write raised (SIGBUS from a userfaultfd-armed hole, SIGSEGV);
 * the rest of the range is not touched.  Without UFFD_FEATURE_SIGBUS (before 4.14) a fault in
 * an armed hole would wait for a handler that is us: a timer makes it TIMEOUT.
 */
static long vf_touch(unsigned long off, unsigned long len)
{
	static volatile char *volatile addr;
	static volatile uintptr_t stop;
	struct sigaction sa;
	long page = sysconf(_SC_PAGESIZE);
	int sig;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = vf_on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	addr = (volatile char *)(ARENA_BASE + off);
	stop = ARENA_BASE + off + len;
	sig = sigsetjmp(vf_touch_env, 1);
	if (sig) {
		setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
		return VF_SIGNALLED(sig);
	}
	if (vf_uffd >= 0 && vf_uffd_nosigbus)
		setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {2, 0}}, NULL);
	vf_touching = 1;
	while ((uintptr_t)addr < stop) {
		*addr = 1;
		addr = (volatile char *)(((uintptr_t)addr & ~(uintptr_t)(page - 1)) + page);
	}
	vf_touching = 0;
	setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
	return 0;
}
""",
    "uffd_base": r"""
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_SIGBUS
#define UFFD_FEATURE_SIGBUS (1 << 7)
#endif
#ifndef UFFDIO_REGISTER_MODE_WP
#define UFFDIO_REGISTER_MODE_WP ((__u64)1 << 1)
#endif
#if !defined(__NR_userfaultfd) && defined(__x86_64__)
#define __NR_userfaultfd 323
#elif !defined(__NR_userfaultfd) && defined(__aarch64__)
#define __NR_userfaultfd 282
#endif

static int vf_uffd_try(int flags, __u64 features)
{
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	int fd = syscall(__NR_userfaultfd, flags), e;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* An ioctl on the process's userfaultfd, opened on first use with UFFD_FEATURE_SIGBUS and
 * falling back as executor.c uffd_open() does: no UFFD_USER_MODE_ONLY before 5.11, no
 * UFFD_FEATURE_SIGBUS before 4.14. */
static long vf_uffd_ioctl(unsigned long req, void *arg)
{
	int flags = O_CLOEXEC | O_NONBLOCK, fd = vf_uffd;

	if (fd < 0) {
		fd = vf_uffd_try(flags | UFFD_USER_MODE_ONLY, UFFD_FEATURE_SIGBUS);
		if (fd == -EINVAL)
			fd = vf_uffd_try(flags, UFFD_FEATURE_SIGBUS);
		vf_uffd_nosigbus = fd == -EINVAL;
		if (fd == -EINVAL) {
			fd = vf_uffd_try(flags | UFFD_USER_MODE_ONLY, 0);
			if (fd == -EINVAL)
				fd = vf_uffd_try(flags, 0);
		}
		if (fd < 0)
			return fd;
		vf_uffd = fd;
	}
	return ioctl(fd, req, arg) ? -errno : 0;
}
""",
    "uffd_register": r"""
static long vf_uffd_register(unsigned long off, unsigned long len, __u64 mode)
{
	struct uffdio_register reg = {.range = {.start = ARENA_BASE + off, .len = len},
				      .mode = mode};

	return vf_uffd_ioctl(UFFDIO_REGISTER, &reg);
}
""",
    "uffd_unregister": r"""
static long vf_uffd_unregister(unsigned long off, unsigned long len)
{
	struct uffdio_range rng = {.start = ARENA_BASE + off, .len = len};

	return vf_uffd_ioctl(UFFDIO_UNREGISTER, &rng);
}
""",
    "uffd_copy": r"""
/* UFFDIO_COPY from a page-cache source (executor.c pattern_open(): a read-only memfd
 * mapping, so the source neither faults anonymous pages nor registers with khugepaged);
 * page i holds 0x5a ^ i. */
static long vf_uffd_copy(unsigned long off, unsigned long len)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t need = len ? (len + page - 1) & ~(page - 1) : (size_t)page, at = 0;
	struct uffdio_copy cp = {.dst = ARENA_BASE + off, .len = len};
	int fd = syscall(__NR_memfd_create, "vmaflags-pattern", 1 /* MFD_CLOEXEC */);
	char *chunk = malloc(page);
	void *src = MAP_FAILED;
	long r = -ENOMEM;

	for (; fd >= 0 && chunk && at < need; at += page) {
		memset(chunk, 0x5a ^ (int)((at / page) & 0xff), page);
		if (pwrite(fd, chunk, page, at) != page)
			break;
	}
	if (fd >= 0 && at == need)
		src = mmap(NULL, need, PROT_READ, MAP_SHARED, fd, 0);
	if (src != MAP_FAILED) {
		cp.src = (uintptr_t)src;
		r = vf_uffd_ioctl(UFFDIO_COPY, &cp);
		munmap(src, need);
	}
	free(chunk);
	if (fd >= 0)
		close(fd);
	return r;
}
""",
    "uffd_close": r"""
static long vf_uffd_close(void)
{
	int r = 0;

	if (vf_uffd >= 0)
		r = close(vf_uffd);
	vf_uffd = -1;
	return r ? -errno : 0;
}
""",
    "khugepaged": r"""
#define FULL_SCANS "/sys/kernel/mm/transparent_hugepage/khugepaged/full_scans"

static long vf_full_scans(void)
{
	FILE *f = fopen(FULL_SCANS, "re");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/*
 * Wait until khugepaged/full_scans has grown by 2: khugepaged went over every registered mm,
 * ours too, at least once (executor.c do_khugepaged(), the selftest's wait_for_scan()); at
 * most ms milliseconds (0: 20 s).  -ETIMEDOUT when it did not: with the default tuning (a pass
 * every 10 s over 4096 pages) two passes can take minutes.  Without the counter, sleep.
 */
static long vf_khugepaged(unsigned long ms)
{
	struct timespec ts = {0, 5000000L};
	long start = vf_full_scans();
	unsigned long waited;

	if (!ms)
		ms = 20000;
	if (start < 0) {
		ts.tv_sec = ms / 1000;
		ts.tv_nsec = (ms % 1000) * 1000000L;
		nanosleep(&ts, NULL);
		return 0;
	}
	for (waited = 0; waited < ms; waited += 5) {
		nanosleep(&ts, NULL);
		if (vf_full_scans() >= start + 2)
			return 0;
	}
	return -ETIMEDOUT;
}
""",
    "fresh": r"""
/* The VmFlags (hg nh um uw) of a fresh anonymous mapping, made now outside the arena and
 * unmapped again: what a VMA after MADV_CLR_HUGEPAGE is claimed to equal. */
static void vf_fresh(int record)
{
	long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct vf_obs *o = &vf_rec[record];
	char *flags;

	strcpy(o->vmas, "?");
	if (p != MAP_FAILED) {
		vf_smaps((unsigned long)p, (unsigned long)p + page, o->vmas, sizeof(o->vmas));
		munmap(p, page);
	}
	flags = strchr(o->vmas, ':');
	if (flags) {
		memmove(o->vmas, flags + 1, strlen(flags + 1) + 1);
		*strchrnul(o->vmas, ':') = 0;
	}
	o->seen = 1;
}
""",
}

# The properties a fact asserts, computed as reproduce.prop() computes them from the model's.
PROP_C = r"""
enum { VF_GET, VF_RET, VF_MAPPED, VF_FLAGS, VF_HG, VF_NH, VF_BOUNDARY, VF_ELIGIBLE,
       VF_PMD_THP, VF_FRESH };

/* A property of a recorded observation, as text (reproduce.py prop()). */
static const char *vf_prop(int record, int prop, unsigned long at, char *buf, size_t n)
{
	const struct vf_obs *o = &vf_rec[record];
	unsigned long s, e, lo = at * PMD_SIZE, hi = lo + PMD_SIZE;
	char flags[16], elig[16], ahp[24];
	const char *v;
	int boundary = 0;

	if (!o->seen)
		return "(not observed)";
	if (prop == VF_GET || prop == VF_RET)
		return vf_ret_text(prop == VF_GET ? o->get : o->ret, buf, n);
	if (prop == VF_FRESH)
		return o->vmas;
	for (v = o->vmas; *v; v = strchrnul(v, ','), v += *v == ',') {
		if (sscanf(v, "0x%lx-0x%lx:%15[^:]:%15[^:]:%23[^,]", &s, &e, flags, elig, ahp) != 5)
			return "(unreadable)";
		boundary |= s == at || e == at;
		if (prop == VF_PMD_THP && s <= lo && hi <= e)
			return strtol(ahp, NULL, 10) >= 2048 ? "huge" : "not huge";
		if (prop == VF_BOUNDARY || prop == VF_PMD_THP || at < s || at >= e)
			continue;
		if (prop == VF_MAPPED)
			return "mapped";
		if (prop == VF_FLAGS)
			snprintf(buf, n, "%s", flags);
		else if (prop == VF_ELIGIBLE)
			snprintf(buf, n, "%s", elig);
		else /* VF_HG, VF_NH: the flag, or "no" it */
			snprintf(buf, n, "%s%s", strstr(flags, prop == VF_HG ? "hg" : "nh") ? "" : "no ",
				 prop == VF_HG ? "hg" : "nh");
		return buf;
	}
	if (prop == VF_BOUNDARY)
		return boundary ? "VMA boundary" : "no VMA boundary";
	return prop == VF_PMD_THP ? "not huge" : "unmapped";
}
"""

# step kind (reproduce_c.needs) -> its helper's section, where the names differ
SECTION_OF = {"prctlset": "prctl", "prctlget": "prctl", "uffdregister": "uffd_register",
              "uffdunregister": "uffd_unregister", "uffdcopy": "uffd_copy",
              "uffdclose": "uffd_close"}

PROP_ENUM = {"get": "VF_GET", "ret": "VF_RET", "mapped": "VF_MAPPED", "flags": "VF_FLAGS",
             "hg": "VF_HG", "nh": "VF_NH", "boundary": "VF_BOUNDARY",
             "eligible": "VF_ELIGIBLE", "pmd_thp": "VF_PMD_THP", "fresh": "VF_FRESH"}


RECORDS = r"""
/* The shared records: mapped before the processes fork, so that every one writes into them. */
static int vf_records(void)
{
	vf_rec = mmap(NULL, VF_RECORDS * sizeof(*vf_rec), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return vf_rec == MAP_FAILED ? -1 : 0;
}
"""

# With an execve step the records are a memfd, which the new image maps again.
RECORDS_EXECVE = r"""
static int vf_records_fd = -1;

/* The shared records: a memfd mapped before the processes fork, so that every one writes
 * into them, and handed to an exec'ed image by its number (vf_execve()). */
static int vf_records(void)
{
	size_t len = VF_RECORDS * sizeof(*vf_rec);

	vf_records_fd = syscall(__NR_memfd_create, "vmaflags-records", 0);
	if (vf_records_fd < 0 || ftruncate(vf_records_fd, len))
		return -1;
	vf_rec = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, vf_records_fd, 0);
	return vf_rec == MAP_FAILED ? -1 : 0;
}
"""


def _library(p: Program, kself: bool) -> str:
    need = needs(p)
    where = (f"era {p.era.id} has it (eras.Era.clr_hugepage)" if p.era.clr_hugepage is not None
             else f"kernel-patch/ numbers it; era {p.era.id} has none (EINVAL)")
    errnos = "\n".join(f"#ifdef {n}\n\t{{{n}, \"{n}\"}},\n#endif" for n in ERRNOS)
    head = (HEAD.replace("@UFFD_INCLUDE@", "#include <linux/userfaultfd.h>\n" if "uffd" in need
                         else "")
            .replace("@CLR@", str(p.clr_hugepage)).replace("@CLR_WHERE@", where)
            .replace("@ARENA@", str(p.arena)).replace("@SYSFS@", p.sysfs)
            .replace("@RECORDS@", str(p.records))
            .replace("@RECORDS_C@", RECORDS_EXECVE if "execve" in need else RECORDS))
    if p.facts or not kself:
        head += RET_TEXT.replace("@ERRNOS@", errnos)
    used = {SECTION_OF.get(k, k) for k in need}
    if used & {"touch", "uffd_register", "uffd_unregister", "uffd_copy", "uffd_close"}:
        used.add("uffd_state")
    if used & {"uffd_register", "uffd_unregister", "uffd_copy"}:
        used.add("uffd_base")
    return (head + "".join(SECTIONS[s] for s in SECTIONS if s in used)
            + (PROP_C if p.facts else ""))


def _header(p: Program, what: list[str], build: list[str]) -> str:
    trace = [f" *   {ln}" if ln else " *" for ln in p.trace_text.rstrip("\n").split("\n")]
    lines = ["// SPDX-License-Identifier: GPL-2.0", "/*", f" * {p.name}: {what[0]}", " *"]
    lines += _wrap(what[1])
    source = (f"Generated by `{p.command}` from the solver's counterexample.  " if p.command
              else "Generated by vmaflags.conformance.reproduce.  ")
    lines += [" *"] + _wrap(
        source + f"Every expected value is what the model of era {p.era.id} "
        f"({p.era.kernels}, features of {p.era.kernel}) predicts, by its concrete interpreter; "
        "do not edit, regenerate.")
    if p.statement:
        lines += [" *"] + _wrap(f"Theorem: {p.statement}.") + _wrap(f"Verdict: {p.verdict}.")
        lines += _wrap(f"Expected: {p.expected}.")
    lines += [" *", " * The trace, as `vmaflags replay` reads it:"] + trace + [" *"]
    lines += _wrap(
        "Each process runs in a fresh child of this program: the prctl state is per mm and "
        "survives fork and execve.  After every step it checks the step's return value, "
        "prctl(PR_GET_THP_DISABLE), THP_enabled of /proc/self/status and, for each VMA of the "
        f"arena ({p.arena} PMDs at 0x100000000000), VmFlags hg/nh/um/uw, THPeligible and "
        "AnonHugePages of /proc/self/smaps, as conformance/executor.c observes them "
        "(conformance/SCRIPT.md)" + ("; then the refutation:" if p.facts else "."))
    lines += [f" *   - {f.text}" for f in p.facts] + [" *"]
    lines += _wrap(f"Needs THP `enabled` = {p.sysfs} (/sys/kernel/mm/transparent_hugepage/"
                   "enabled is read, never written).")
    lines += [" *"] + [f" * {ln}" if ln else " *" for ln in build] + [" */", ""]
    return "\n".join(lines)


def _wrap(text: str) -> list[str]:
    return [f" * {ln}" for ln in textwrap.wrap(text, 94, break_long_words=False,
                                               break_on_hyphens=False)]


def _term(t) -> str:
    """A vf_term: record, property, offset (or PMD), the model's value, whose."""
    return f"{{{t.record}, {PROP_ENUM[t.prop]}, {t.at:#x}, {c_str(t.want)}, {c_str(t.who)}}}"


def _segments(p: Program, proc: str) -> list[list[Check]]:
    """A process's checks, cut after each execve step (the new image runs the next part)."""
    out: list[list[Check]] = [[]]
    for c in p.steps(proc):
        out[-1].append(c)
        if isinstance(c.step, Execve):
            out.append([c])  # the new image reports it
    return out


def ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "process"


# --- the standalone program ----------------------------------------------------------------

STANDALONE_DRIVER = r"""
static const char *const vf_what[] = {
@WHAT@
};

static int vf_failed, vf_skipped;

static void vf_print(const char *fmt, ...)
{
	char buf[20000];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (write(1, buf, n) < 0)
		_exit(1);
}

/* Append to buf (of n bytes), cutting what does not fit. */
static void vf_cat(char *buf, size_t n, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	if (len < n)
		vsnprintf(buf + len, n - len, fmt, ap);
	va_end(ap);
}

static void vf_obs_text(const struct vf_obs *o, const char *vmas, char *buf, size_t n)
{
	char r[32], g[32];

	buf[0] = 0;
	vf_cat(buf, n, "ret=%s get=%s thp=", vf_ret_text(o->ret, r, sizeof(r)),
	       vf_ret_text(o->get, g, sizeof(g)));
	if (o->thp < 0)
		vf_cat(buf, n, "- vmas=%s", vmas);
	else
		vf_cat(buf, n, "%d vmas=%s", o->thp, vmas);
}

/* Check n: observe after the step and compare with the model's prediction; one KTAP line,
 * with the fields that differ. */
static void vf_check(int n, long ret, long want_ret, long want_get, int want_thp,
		     const char *want_vmas)
{
	struct vf_obs *o = vf_observe(n - 1, ret), want = {want_ret, want_get, want_thp, 1, 1, ""};
	char exp[8400] = "", got[8400] = "", a[32], b[32], full[2][4300];

	if (o->ret != want_ret) {
		vf_cat(exp, sizeof(exp), " ret=%s", vf_ret_text(want_ret, a, sizeof(a)));
		vf_cat(got, sizeof(got), " ret=%s", vf_ret_text(o->ret, b, sizeof(b)));
	}
	if (o->get != want_get) {
		vf_cat(exp, sizeof(exp), " get=%s", vf_ret_text(want_get, a, sizeof(a)));
		vf_cat(got, sizeof(got), " get=%s", vf_ret_text(o->get, b, sizeof(b)));
	}
	if (o->thp != want_thp) {
		vf_cat(exp, sizeof(exp), want_thp < 0 ? " thp=-" : " thp=%d", want_thp);
		vf_cat(got, sizeof(got), o->thp < 0 ? " thp=-" : " thp=%d", o->thp);
	}
	if (strcmp(o->vmas, want_vmas)) {
		vf_cat(exp, sizeof(exp), " vmas=%s", want_vmas);
		vf_cat(got, sizeof(got), " vmas=%s", o->vmas);
	}
	o->ok = !exp[0];
	if (o->ok) {
		vf_print("ok %d step %s\n", n, vf_what[n - 1]);
		return;
	}
	vf_obs_text(&want, want_vmas, full[0], sizeof(full[0]));
	vf_obs_text(o, o->vmas, full[1], sizeof(full[1]));
	vf_print("not ok %d step %s expected%s got%s\n# model:  %s\n# kernel: %s\n", n,
		 vf_what[n - 1], exp, got, full[0], full[1]);
}

/* Run one process of the trace in a fresh child; then report the checks it did not reach. */
static void vf_run(const char *name, void (*fn)(void), int first, int last)
{
	int status = 0, n;
	pid_t pid;
	char why[96] = "";

	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (vf_setup_arena())
			_exit(3);
		fn();
		_exit(0);
	}
	while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (pid < 0)
		snprintf(why, sizeof(why), "fork failed: %s", strerror(errno));
	else if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "the %s process died of signal %d", name, WTERMSIG(status));
	else if (WEXITSTATUS(status) == 3)
		snprintf(why, sizeof(why), "the %s process cannot reserve its arena", name);
	else if (WEXITSTATUS(status) == 4)
		vf_skipped = 1;
	for (n = first; n <= last; n++) {
		if (vf_rec[n - 1].seen) {
			vf_failed += !vf_rec[n - 1].ok;
		} else if (vf_skipped) {
			vf_print("ok %d step %s # SKIP khugepaged did not finish two full scans in "
				 "time (tune khugepaged/scan_sleep_millisecs)\n", n, vf_what[n - 1]);
		} else {
			vf_failed++;
			vf_print("not ok %d step %s # not run: %s\n", n, vf_what[n - 1],
				 why[0] ? why : "the process ended early");
		}
	}
}
"""

FACT_STANDALONE = r"""
struct vf_term {
	int record, prop;
	unsigned long at;
	const char *want, *who;
};

/* Fact n of the refutation: every term has the model's value on this kernel. */
static void vf_fact(int n, const char *what, int nterms, const struct vf_term *t)
{
	char exp[1024] = "", got[1024] = "", buf[64];
	const char *v;
	int i, ok = 1;

	for (i = 0; vf_skipped && i < nterms; i++) {
		if (!vf_rec[t[i].record].seen) { /* after a khugepaged step that timed out */
			vf_print("ok %d refutation: %s # SKIP %s was not observed: khugepaged did "
				 "not finish two full scans in time\n", n, what, t[i].who);
			return;
		}
	}
	for (i = 0; i < nterms; i++) {
		v = vf_prop(t[i].record, t[i].prop, t[i].at, buf, sizeof(buf));
		ok &= !strcmp(v, t[i].want);
		vf_cat(exp, sizeof(exp), "%s %s: %s", i ? "," : "", t[i].who, t[i].want);
		vf_cat(got, sizeof(got), "%s %s: %s", i ? "," : "", t[i].who, v);
	}
	if (ok) {
		vf_print("ok %d refutation: %s\n", n, what);
	} else {
		vf_failed++;
		vf_print("not ok %d refutation: %s expected%s got%s\n", n, what, exp, got);
	}
}

"""

EXECVE_STANDALONE = r"""
/* The execve step: this program again, told which part of which process to go on with
 * (executor.c do_execve()); the records go along as a descriptor. */
static long vf_execve(int process, int part)
{
	char p[16], s[16], fd[16], *argv[] = {"vmaflags-reproducer", "--resume", p, s, fd, NULL};

	snprintf(p, sizeof(p), "%d", process);
	snprintf(s, sizeof(s), "%d", part);
	snprintf(fd, sizeof(fd), "%d", vf_records_fd);
	execv("/proc/self/exe", argv);
	return -errno;
}
"""


def _step_c(c: Check, checks: dict[tuple[str, str], Check], indent: str, kself: bool,
            segment: int, procno: int) -> list[str]:
    """The C of one check: perform the step (not for a fork child: its parent's step does),
    then compare the observation."""
    sc = c.step
    out = [f"{indent}/* {c.label}. {sc.text()} */"]
    if isinstance(sc, Fork):
        child = checks[(c.process, c.label + "c")]
        out += [f"{indent}ret = fork();", f"{indent}if (ret == 0) {{"]
        out += _compare(child, indent + "\t", kself, "0")
        out += [f"{indent}\t_exit(0);", f"{indent}}}"]
        if kself:
            out += [f"{indent}ASSERT_LE(0, ret);",
                    f"{indent}ASSERT_EQ(ret, waitpid(ret, &status, 0));",
                    f"{indent}ASSERT_EQ(0, status);", f"{indent}ret = 0;"]
        else:
            out += [f"{indent}if (ret > 0)",
                    f"{indent}\tret = waitpid(ret, NULL, 0) < 0 ? -errno : 0;",
                    f"{indent}else if (ret < 0)", f"{indent}\tret = -errno;"]
        out += _compare(c, indent, kself, "ret")
        return out
    if isinstance(sc, Execve):
        out += [f"{indent}ret = vf_execve({procno}, {segment + 1}); /* only on failure */"]
        return out + _compare(c, indent, kself, "ret")
    out += [f"{indent}ret = {call(sc)};"]
    if isinstance(sc, Khugepaged):
        out += [f"{indent}if (ret == -ETIMEDOUT) /* inconclusive, not a difference */",
                f"{indent}\t_exit(4);"]
    return out + _compare(c, indent, kself, "ret")


def _compare(c: Check, indent: str, kself: bool, ret: str) -> list[str]:
    """Observe after the step and compare with the model: a vf_check() or ASSERTs."""
    w = c.want
    vmas = c_str(",".join(v.text() for v in w.vmas))
    if not kself:
        line = f"{indent}vf_check({c.number}, {ret}, {c_ret(w.ret)}, {c_ret(w.get)}, {c_thp(w)}, "
        if len(line.expandtabs(8)) + len(vmas) + 2 <= 100:
            return [f"{line}{vmas});"]
        return [line.rstrip(), f"{indent}\t {vmas});"]
    return [f"{indent}o = vf_observe({c.number - 1}, {ret});",
            f"{indent}ASSERT_EQ({c_ret(w.ret)}, o->ret);",
            f"{indent}ASSERT_EQ({c_ret(w.get)}, o->get);",
            f"{indent}ASSERT_EQ({c_thp(w)}, o->thp);",
            f"{indent}ASSERT_STREQ({vmas}, o->vmas);"]


def _processes(p: Program, kself: bool) -> list[str]:
    """One C function per process (per part of it, around execve steps)."""
    checks = {(c.process, c.label): c for c in p.checks}
    out = []
    for k, proc in enumerate(p.processes):
        parts = _segments(p, proc.name)
        for s, part in enumerate(parts):
            fn = function(proc.name, s if len(parts) > 1 else None)
            own = [c for c in part if not c.label.endswith("c")]
            again = own[:1] if s else []  # the new image reports the execve step itself
            own = own[len(again):]
            head = ("static void %s(struct __test_metadata *_metadata)" if kself
                    else "static void %s(void)") % fn
            out += ["", f"/* process {proc.name!r}" + (f", part {s + 1}" if s else "")
                    + (f": checks {part[0].number}-{part[-1].number} */" if part else " */"),
                    head, "{"]
            decl = ["\tlong ret;"] if any(c.step is not None for c in own) else []
            if kself:
                decl = ["\tstruct vf_obs *o;"] + decl + (
                    ["\tint status;"] if any(isinstance(c.step, Fork) for c in own) else [])
            out += decl + ([""] if decl else [])
            for c in again:
                out += [f"\t/* {c.label}. {c.step.text()}: this image */"]
                out += _compare(c, "\t", kself, "0")
            for c in own:
                if c.step is None:
                    out += ["\t/* no step: a fresh process */"]
                    out += _compare(c, "\t", kself, "0")
                else:
                    out += _step_c(c, checks, "\t", kself, s, k)
            if proc.name in p.probes:
                out += [f"\tvf_fresh({p.probes[proc.name]});"]
            out += ["}"]
    return out


def function(process: str, part: int | None = None) -> str:
    """The C function that runs a process (part `part` of it, between execve steps)."""
    return "process_" + ident(process) + ("" if part is None else f"_{part}")


def kselftest_name(p: Program) -> str:
    return "vmaflags_" + ident(p.slug)


def standalone(p: Program) -> str:
    """The standalone program: KTAP on stdout; exit 0 when the kernel does what the model of
    the era predicts, 1 when it does not, 4 for SKIP."""
    name = p.slug
    what = ["a reproducer on a real kernel",
            "Runs the trace below on this kernel and checks every step against what the model "
            "predicts" + (", then what refutes the theorem." if p.facts else ".")]
    build = [f"Build: cc -O2 -Wall -o {name} \\", f"         {name}.c",
             f"Run:   ./{name}",
             "  KTAP on stdout.  Exit 0: this kernel does at every step what the model of",
             f"  era {p.era.id} predicts; 1: it does not (each difference is printed);",
             "  4: SKIP (another THP mode, no THP, khugepaged too slow)."]
    execve = any(isinstance(c.step, Execve) for c in p.checks)
    total = len(p.checks) + len(p.facts)
    out = [_header(p, what, build), _library(p, kself=False)]
    out.append(STANDALONE_DRIVER.replace("@WHAT@", "\n".join(
        f"\t{c_str(c.what)}," for c in p.checks)))
    if p.facts:
        out.append(FACT_STANDALONE)
    if execve:
        out.append(EXECVE_STANDALONE)
    out.append("\n".join(_processes(p, kself=False)))
    body = [
        "", "int main(int argc, char **argv)", "{", "\tchar why[256];", "\tpid_t keeper;", ""]
    if execve:
        parts = [(k, s) for k, pr in enumerate(p.processes)
                 for s in range(len(_segments(p, pr.name)))]
        body += ["\tif (argc == 5 && !strcmp(argv[1], \"--resume\")) {",
                 "\t\tint proc = atoi(argv[2]), part = atoi(argv[3]);", "",
                 "\t\tvf_records_fd = atoi(argv[4]);",
                 "\t\tvf_rec = mmap(NULL, VF_RECORDS * sizeof(*vf_rec), PROT_READ | "
                 "PROT_WRITE, MAP_SHARED,", "\t\t\t      vf_records_fd, 0);",
                 "\t\tif (vf_rec == MAP_FAILED || vf_setup_arena())", "\t\t\treturn 3;"]
        for k, s in parts:
            if s:
                fn = function(p.processes[k].name, s)
                body += [f"\t\tif (proc == {k} && part == {s})", f"\t\t\t{fn}();"]
        body += ["\t\treturn 0;", "\t}"]
    else:
        body += ["\t(void)argc;", "\t(void)argv;"]
    body += ["\tif (vf_sysfs_differs(why, sizeof(why))) {",
             "\t\tvf_print(\"KTAP version 1\\n1..0 # SKIP %s\\n\", why);", "\t\treturn 4;",
             "\t}",
             "\tif (vf_records()) {",
             "\t\tfprintf(stderr, \"cannot map the shared records: %s\\n\", strerror(errno));",
             "\t\treturn 1;", "\t}",
             f"\tvf_print(\"KTAP version 1\\n1..{total}\\n\");",
             "\tvf_print(\"# %s\\n\", " + c_str(
                 f"{p.name}: each step as the model of era {p.era.id} ({p.era.kernels}) "
                 "predicts it") + ");",
             "\tkeeper = vf_keeper();"]
    for proc in p.processes:
        mine = p.steps(proc.name)
        fn = function(proc.name, 0 if len(_segments(p, proc.name)) > 1 else None)
        body.append(f"\tvf_run({c_str(proc.name)}, {fn}, {mine[0].number}, {mine[-1].number});")
    body += ["\tvf_keeper_stop(keeper);"]
    for n, f in enumerate(p.facts, len(p.checks) + 1):
        body += [f"\tvf_fact({n}, {c_str(f.text)}, {len(f.terms)}, (const struct vf_term[]){{"]
        body += [f"\t\t{_term(t)}," for t in f.terms] + ["\t});"]
    era = f"era {p.era.id} ({p.era.kernels})"
    body += ["\tif (vf_failed) {",
             f"\t\tvf_print(\"# FAIL: %d of {total} checks differ from the model of {era}: \"",
             "\t\t\t \"this kernel is not in that era, or the model is wrong\\n\", vf_failed);",
             "\t\treturn 1;", "\t}",
             "\tif (vf_skipped) {",
             "\t\tvf_print(\"# SKIP: khugepaged was too slow; nothing differed before\\n\");",
             "\t\treturn 4;", "\t}",
             "\tvf_print(\"# %s\\n\", " + c_str(
                 f"PASS: this kernel behaves as the model of {era} predicts"
                 + (", and the refutation holds" if p.facts else "")) + ");",
             "\treturn 0;", "}", ""]
    out.append("\n".join(body))
    return "\n".join(out)


# --- the kselftest ---------------------------------------------------------------------------

def kselftest(p: Program) -> str:
    """A kselftest_harness.h test of the same steps, for tools/testing/selftests/mm/."""
    if any(isinstance(c.step, Execve) for c in p.checks):
        raise ReproduceError(f"{p.name}: the trace has an execve step; only the standalone "
                             "program can run it (a harness test cannot resume in a new image)")
    name = kselftest_name(p)
    test = ident(p.slug)
    what = ["a kselftest",
            "The trace below as a kselftest_harness.h test: every step's observation is "
            "ASSERTed as the model predicts it" + (", then what refutes the theorem."
                                                   if p.facts else ".")]
    build = ["Build in a kernel tree: copy this file to tools/testing/selftests/mm/, add",
             f"  TEST_GEN_FILES += {name}",
             "to its Makefile and run `make -C tools/testing/selftests TARGETS=mm`; or, in",
             f"that directory, `cc -O2 -Wall -o {name} {name}.c` (it includes",
             "../kselftest_harness.h).  Run ./" + name + "; a process's failed ASSERT shows",
             "as its exit status (SIGABRT) in the test's own ASSERT."]
    out = [_header(p, what, build), _library(p, kself=True).replace(
        "#define _GNU_SOURCE\n", "#define _GNU_SOURCE\n#include \"../kselftest_harness.h\"\n", 1)]
    out.append(r"""
/* Run one process of the trace in a fresh child: its exit status (128 + signal if killed). */
static int vf_run(struct __test_metadata *_metadata,
		  void (*fn)(struct __test_metadata *_metadata))
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if (vf_setup_arena())
			_exit(3);
		fn(_metadata);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}""")
    out.append("\n".join(_processes(p, kself=True)))
    body = ["", f"TEST({test})", "{", "\tchar why[256]" + (", buf[64];" if p.facts else ";"),
            "\tpid_t keeper;",
            "\tint status;", "",
            "\tif (vf_sysfs_differs(why, sizeof(why)))", "\t\tSKIP(return, \"%s\", why);",
            "\tASSERT_EQ(0, vf_records());", "\tkeeper = vf_keeper();"]
    for proc in p.processes:
        body += [f"\tstatus = vf_run(_metadata, {function(proc.name)});"]
        if any(isinstance(s, Khugepaged) for s in proc.script.steps):
            body += ["\tif (status == KSFT_SKIP) {", "\t\tvf_keeper_stop(keeper);",
                     "\t\tSKIP(return, \"khugepaged did not finish two full scans in time\");",
                     "\t}"]
        body += ["\tASSERT_EQ(0, status);"]
    body += ["\tvf_keeper_stop(keeper);"]
    for f in p.facts:
        body += [f"\t/* {f.text} */"]
        for t in f.terms:
            body += [f"\tASSERT_STREQ({c_str(t.want)}, vf_prop({t.record}, {PROP_ENUM[t.prop]}, "
                     f"{t.at:#x}, buf, sizeof(buf)));"]
    body += ["}", "", "TEST_HARNESS_MAIN", ""]
    out.append("\n".join(body))
    return "\n".join(out)
