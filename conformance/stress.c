// SPDX-License-Identifier: GPL-2.0
/*
 * vmaflags stress: races that proofs/concurrency.py decides, tried on the running kernel.
 *
 *   stress RACE TRIES SECONDS     RACE: fault-vs-prctl | collapse-vs-nh | collapse-vs-prctl
 *                                       | collapse-alone (the harness sees collapses at all)
 *
 * Each try runs in a fresh child process (the prctl state is per mm).  Two threads race: the
 * "worker" faults or collapses, the "protector" sets the protection (prctl or MADV_NOHUGEPAGE)
 * at a pseudo-random moment, then reads AnonHugePages of the region from smaps, stops the
 * worker, waits for its operation in flight to end and reads AnonHugePages again.  A THP that
 * appears between the two reads was installed after the protection had returned: a sighting.
 * Prints one line: "<race> tries=N sightings=S windows=W seconds=T" and exits 0 (or 2 for bad
 * arguments, 1 if the harness itself failed).  W counts the tries where the worker had an
 * operation in flight when the protection returned (the race was on at all).
 *
 * Build: cc -static -O2 -pthread
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef PR_SET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#endif

#define PMD (2UL << 20)
#define PMDS 16 /* fault-vs-prctl: PMDs faulted one after the other */

enum race { FAULT_VS_PRCTL, COLLAPSE_VS_NH, COLLAPSE_VS_PRCTL, COLLAPSE_ALONE };
static const char *const names[] = {"fault-vs-prctl", "collapse-vs-nh", "collapse-vs-prctl",
				    "collapse-alone"};

static enum race race;
static char *region; /* PMD aligned */
static size_t region_len;
static atomic_int stop, busy, started;

/* AnonHugePages (kB) of the VMA at `region`, from /proc/self/smaps. */
static long anon_huge(void)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[256];
	long kb = -1;
	int in = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = lo <= (uintptr_t)region && (uintptr_t)region < hi;
		else if (in && sscanf(line, "AnonHugePages: %ld", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

static void *worker(void *arg)
{
	(void)arg;
	atomic_store(&started, 1);
	if (race == FAULT_VS_PRCTL) {
		for (size_t i = 0; i < PMDS && !atomic_load(&stop); i++) {
			atomic_store(&busy, 1);
			region[i * PMD] = 1; /* a THP fault: allocate, clear 2 MiB, install */
			atomic_store(&busy, 0);
		}
	} else {
		atomic_store(&busy, 1);
		madvise(region, PMD, MADV_COLLAPSE);
		atomic_store(&busy, 0);
	}
	return NULL;
}

static unsigned long long rnd_state;

static unsigned rnd(unsigned n)
{
	rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)(rnd_state >> 33) % n;
}

static void spin_us(unsigned us)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < (long)us);
}

/* One try, in a fresh process: exit 0 nothing, 10 window without sighting, 11 sighting. */
static int one_try(unsigned delay_us)
{
	region_len = (race == FAULT_VS_PRCTL ? PMDS : 1) * PMD;
	char *p = mmap(NULL, region_len + PMD, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	region = (char *)(((uintptr_t)p + PMD - 1) & ~(PMD - 1));
	/* a VMA of its own, so that its smaps record counts only the region's THPs */
	if (madvise(region, region_len, MADV_DONTFORK))
		return 1;
	if (race == FAULT_VS_PRCTL) {
		if (madvise(region, region_len, MADV_HUGEPAGE)) /* the huge fault path */
			return 1;
	} else {
		/* a PTE-mapped PMD for MADV_COLLAPSE, in any sysfs mode: written under
		 * MADV_NOHUGEPAGE, which MADV_HUGEPAGE then replaces (MADV_COLLAPSE refuses nh).
		 * khugepaged may collapse it too: it must respect the protection as well. */
		if (madvise(region, PMD, MADV_NOHUGEPAGE))
			return 1;
		for (size_t o = 0; o < PMD; o += 4096)
			region[o] = 1;
		if (madvise(region, PMD, MADV_HUGEPAGE) || anon_huge() != 0)
			return 1;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL))
		return 1;
	while (!atomic_load(&started))
		;
	spin_us(delay_us);
	int r = 0;
	if (race == FAULT_VS_PRCTL || race == COLLAPSE_VS_PRCTL)
		r = prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	else if (race == COLLAPSE_VS_NH)
		r = madvise(region, PMD, MADV_NOHUGEPAGE);
	int window = atomic_load(&busy);
	long before = anon_huge();
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	long after = anon_huge();
	if (r || before < 0 || after < 0)
		return 1;
	if (race == COLLAPSE_ALONE)
		return after > 0 ? 11 : 0;
	return after > before ? 11 : window ? 10 : 0;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		goto usage;
	race = (enum race)-1;
	for (int i = 0; i < 4; i++)
		if (!strcmp(argv[1], names[i]))
			race = i;
	char *e1, *e2;
	long tries = strtol(argv[2], &e1, 10);
	double secs = strtod(argv[3], &e2);
	if ((int)race < 0 || *e1 || *e2 || tries < 1 || secs <= 0)
		goto usage;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long done = 0, sightings = 0, windows = 0;
	double elapsed = 0;
	rnd_state = 20251130;
	/* the protector's delay: within the faults of the region, or a collapse (~0.2-1 ms) */
	unsigned span = race == FAULT_VS_PRCTL ? 2000 : 600;
	while (done < tries && elapsed < secs) {
		unsigned delay = rnd(span);
		pid_t pid = fork();
		if (pid == 0)
			_exit(one_try(delay));
		int st;
		if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
		    (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) < 10)) {
			fprintf(stderr, "stress: try %ld failed\n", done);
			return 1;
		}
		sightings += WEXITSTATUS(st) == 11;
		windows += WEXITSTATUS(st) >= 10;
		done++;
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
	}
	printf("%s tries=%ld sightings=%ld windows=%ld seconds=%.2f\n", names[race], done,
	       sightings, windows, elapsed);
	fflush(stdout);
	return 0;
usage:
	fprintf(stderr, "usage: stress fault-vs-prctl|collapse-vs-nh|collapse-vs-prctl|"
			"collapse-alone TRIES SECONDS\n");
	return 2;
}
