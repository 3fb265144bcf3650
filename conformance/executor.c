// SPDX-License-Identifier: GPL-2.0
/*
 * vmaflags conformance executor: runs one script (conformance/SCRIPT.md) on the running kernel
 * and prints, after every step, the return value, PR_GET_THP_DISABLE, THP_enabled and the
 * arena's VMAs as /proc/self/smaps shows them.
 *
 *   executor SCRIPT        (a path, or - for standard input)
 *   executor --check SCRIPT    (parse only: exit 0, or 2 with the first error on stderr)
 *   executor --serve       (many scripts on standard input, each in a fresh child: see serve())
 *   executor --serve --guest   (the same, plus the test VM's control lines: see guest_command())
 *   executor --version
 *
 * Static, libc + uapi headers only; runs on 3.15 .. 6.18 kernels (missing features degrade to
 * "-" or to the syscall's -ENAME).
 * Build: cc -static-pie -O2 -Wall -Wextra -Werror [-DCLR_HUGEPAGE=N]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#define EXECUTOR_VERSION "vmaflags-executor 1"

#ifndef CLR_HUGEPAGE
#define CLR_HUGEPAGE 26
#endif

/* ---- constants old headers may lack -------------------------------------------------------- */
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
#ifndef PR_GET_THP_DISABLE
#define PR_GET_THP_DISABLE 42
#endif
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0x4000
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_SIGBUS
#define UFFD_FEATURE_SIGBUS (1 << 7)
#endif
#ifndef UFFDIO_REGISTER_MODE_WP
#define UFFDIO_REGISTER_MODE_WP ((__u64)1 << 1)
#endif
#ifndef __NR_userfaultfd
#if defined(__x86_64__)
#define __NR_userfaultfd 323
#elif defined(__aarch64__)
#define __NR_userfaultfd 282
#elif defined(__i386__)
#define __NR_userfaultfd 374
#endif
#endif
#ifndef __NR_memfd_create
#if defined(__x86_64__)
#define __NR_memfd_create 319
#elif defined(__aarch64__)
#define __NR_memfd_create 279
#elif defined(__i386__)
#define __NR_memfd_create 356
#endif
#endif

#define ARENA_BASE 0x100000000000UL
#define PMD_SIZE (2UL << 20)
#define ARENA_MAX 64 /* model: arena 1..64 */

/* ---- small output helpers (write(2), no stdio buffering) ----------------------------------- */
struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_reserve(struct sbuf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		static const char m[] = "executor: out of memory\n";
		if (write(2, m, sizeof(m) - 1) < 0) { /* nothing to do */ }
		_exit(1);
	}
	b->p = p;
	b->cap = cap;
}

static void sb_mem(struct sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void sb_str(struct sbuf *b, const char *s) { sb_mem(b, s, strlen(s)); }

static void sb_chr(struct sbuf *b, char c) { sb_mem(b, &c, 1); }

static void sb_u64(struct sbuf *b, uint64_t v)
{
	char t[24];
	int i = sizeof(t);
	do {
		t[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	sb_mem(b, t + i, sizeof(t) - i);
}

static void sb_i64(struct sbuf *b, int64_t v)
{
	if (v < 0) {
		sb_chr(b, '-');
		sb_u64(b, -(uint64_t)v);
	} else {
		sb_u64(b, v);
	}
}

static void sb_hex(struct sbuf *b, int64_t sv)
{
	char t[24];
	int i = sizeof(t);
	uint64_t v = sv < 0 ? -(uint64_t)sv : (uint64_t)sv;
	do {
		t[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	if (sv < 0)
		sb_chr(b, '-');
	sb_mem(b, "0x", 2);
	sb_mem(b, t + i, sizeof(t) - i);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= w;
	}
}

/* ---- errno names --------------------------------------------------------------------------- */
static const struct {
	int num;
	const char *name;
} errnames[] = {
	{EPERM, "EPERM"},     {ENOENT, "ENOENT"},   {ESRCH, "ESRCH"},       {EINTR, "EINTR"},
	{EIO, "EIO"},         {ENXIO, "ENXIO"},     {E2BIG, "E2BIG"},       {ENOEXEC, "ENOEXEC"},
	{EBADF, "EBADF"},     {ECHILD, "ECHILD"},   {EAGAIN, "EAGAIN"},     {ENOMEM, "ENOMEM"},
	{EACCES, "EACCES"},   {EFAULT, "EFAULT"},   {EBUSY, "EBUSY"},       {EEXIST, "EEXIST"},
	{EXDEV, "EXDEV"},     {ENODEV, "ENODEV"},   {ENOTDIR, "ENOTDIR"},   {EISDIR, "EISDIR"},
	{EINVAL, "EINVAL"},   {ENFILE, "ENFILE"},   {EMFILE, "EMFILE"},     {ENOTTY, "ENOTTY"},
	{ETXTBSY, "ETXTBSY"}, {EFBIG, "EFBIG"},     {ENOSPC, "ENOSPC"},     {ESPIPE, "ESPIPE"},
	{EROFS, "EROFS"},     {EMLINK, "EMLINK"},   {EPIPE, "EPIPE"},       {EDOM, "EDOM"},
	{ERANGE, "ERANGE"},   {EDEADLK, "EDEADLK"}, {ENAMETOOLONG, "ENAMETOOLONG"},
	{ENOSYS, "ENOSYS"},   {ELOOP, "ELOOP"},     {EOVERFLOW, "EOVERFLOW"},
	{EOPNOTSUPP, "EOPNOTSUPP"},                 {ECANCELED, "ECANCELED"},
	{EHWPOISON, "EHWPOISON"},                   {ENODATA, "ENODATA"},
	{ETIMEDOUT, "ETIMEDOUT"},
	{524, "ENOTSUPP"}, /* kernel-internal, leaks from some paths */
};

static void sb_errno(struct sbuf *b, int e)
{
	sb_chr(b, '-');
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].num == e) {
			sb_str(b, errnames[i].name);
			return;
		}
	sb_chr(b, 'E');
	sb_u64(b, (unsigned)e);
}

/* ---- the script ---------------------------------------------------------------------------- */
enum op {
	OP_MMAP, OP_MUNMAP, OP_TOUCH, OP_MADVISE, OP_PRCTL_SET, OP_PRCTL_GET, OP_UFFD_REGISTER,
	OP_UFFD_UNREGISTER, OP_UFFD_COPY, OP_UFFD_CLOSE, OP_FORK, OP_EXECVE, OP_SYSFS,
	OP_KHUGEPAGED,
};

static const struct {
	const char *name;
	enum op op;
} opnames[] = {
	{"mmap", OP_MMAP},
	{"munmap", OP_MUNMAP},
	{"touch", OP_TOUCH},
	{"madvise", OP_MADVISE},
	{"prctl_set", OP_PRCTL_SET},
	{"prctl_get", OP_PRCTL_GET},
	{"uffd_register", OP_UFFD_REGISTER},
	{"uffd_unregister", OP_UFFD_UNREGISTER},
	{"uffd_copy", OP_UFFD_COPY},
	{"uffd_close", OP_UFFD_CLOSE},
	{"fork", OP_FORK},
	{"execve", OP_EXECVE},
	{"sysfs", OP_SYSFS},
	{"khugepaged", OP_KHUGEPAGED},
};

struct step {
	enum op op;
	int line;
	uint64_t off, len;
	int adv;        /* madvise */
	int clr;        /* madvise clr_hugepage: the advice is resolved at run time */
	uint64_t a[4];  /* prctl raw arguments */
	uint64_t mode;  /* uffd_register mode bits */
	const char *s;  /* sysfs mode */
	uint64_t ms;    /* khugepaged */
};

static struct step *steps;
static size_t nsteps;
static unsigned arena_blocks = 4;
static char *script_text;
static size_t script_len;

static int parse_line_no;

__attribute__((noreturn, format(printf, 1, 2))) static void parse_fail(const char *fmt, ...);

static void parse_fail(const char *fmt, ...)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "executor: line %d: ", parse_line_no);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(msg) - 2)
		n = sizeof(msg) - 2;
	msg[n++] = '\n';
	write_all(2, msg, n);
	exit(2);
}

/* A token quoted for a parse_fail message, as the model's parser quotes it: its first
 * QUOTE_MAX bytes (then "..."), printable ASCII as is and every other byte as \xNN, in single
 * quotes.  (The process exits right after.) */
#define QUOTE_MAX 40
static const char *quote(const char *t)
{
	static char o[4 * QUOTE_MAX + 6];
	char *w = o;
	const char *stop = t + strnlen(t, QUOTE_MAX);
	*w++ = '\'';
	for (; t < stop; t++) {
		unsigned char c = *t;
		if (c >= 0x20 && c < 0x7f)
			*w++ = c;
		else
			w += sprintf(w, "\\x%02x", c);
	}
	*w++ = '\'';
	strcpy(w, *t ? "..." : "");
	return o;
}

/*
 * The script language's words and numbers, exactly as SCRIPT.md and the model's parser
 * (vmaflags.model.syscalls, the same messages) define them; tests/test_script_language.py
 * feeds both parsers the same scripts.  NUM is 0x HEX+ or DEC+, ASCII only.  parse_num parses
 * NUM at t: 0 with *end past it, -1 if there is none, -2 if it is 2^64 or more.
 */
static int parse_num(const char *t, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = t;
	int digits = 0, over = 0;
	if (p[0] == '0' && p[1] == 'x') {
		for (p += 2;; p++, digits++) {
			int d;
			if (*p >= '0' && *p <= '9') d = *p - '0';
			else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
			else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
			else break;
			over |= (v >> 60) != 0;
			v = v * 16 + d;
		}
	} else {
		for (; *p >= '0' && *p <= '9'; p++, digits++) {
			over |= v > (UINT64_MAX - (*p - '0')) / 10;
			v = v * 10 + (*p - '0');
		}
	}
	if (!digits)
		return -1;
	*end = p;
	*out = v;
	return over ? -2 : 0;
}

/* SIZE: NUM with an optional K or M suffix, below 2^64. */
static uint64_t need_size(const char *t)
{
	uint64_t v;
	const char *p;
	int r = parse_num(t, &p, &v);
	unsigned shift = 0;
	if (r != -1 && *p == 'K') shift = 10, p++;
	else if (r != -1 && *p == 'M') shift = 20, p++;
	if (r == -1 || *p)
		parse_fail("bad size %s", quote(t));
	if (r || (shift && (v >> (64 - shift))))
		parse_fail("size %s does not fit in 64 bits", quote(t));
	return v << shift;
}

/* INT: -?NUM, as a sign and a magnitude: 0, -1 (not an INT) or -2 (magnitude 2^64 or more). */
static int parse_int(const char *t, int *neg, uint64_t *mag)
{
	const char *p;
	*neg = *t == '-';
	int r = parse_num(t + *neg, &p, mag);
	return r == -1 || *p ? -1 : r;
}

/* An INT within [-lo_mag, hi]: its two's complement. */
static uint64_t need_int(const char *t, uint64_t lo_mag, uint64_t hi, const char *range)
{
	int neg;
	uint64_t m;
	int r = parse_int(t, &neg, &m);
	if (r == -1)
		parse_fail("bad number %s", quote(t));
	if (r || m > (neg ? lo_mag : hi))
		parse_fail("number %s out of range (%s)", quote(t), range);
	return neg ? 0 - m : m;
}

/* An int (the guest's "clr N", VMAFLAGS_CLR_HUGEPAGE): 0, or -1 if t is none. */
static int parse_c_int(const char *t, int *out)
{
	int neg;
	uint64_t m;
	if (parse_int(t, &neg, &m) || m > (neg ? (uint64_t)INT_MAX + 1 : (uint64_t)INT_MAX))
		return -1;
	*out = neg ? (int)(0 - (int64_t)m) : (int)m;
	return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

#define MAX_TOKENS 8 /* kept of a line; more are counted (no step takes more than 4) */

static void parse_script(char *text, size_t len)
{
	size_t cap = 0;
	char *p = text, *end = text + len;
	int lineno = 0, arena_line = 0;
	while (p < end) {
		char *nl = memchr(p, '\n', end - p);
		char *eol = nl ? nl : end;
		lineno++;
		parse_line_no = lineno;
		char *hash = memchr(p, '#', eol - p);
		if (hash)
			eol = hash;
		if (memchr(p, 0, eol - p))
			parse_fail("NUL byte");
		*eol = 0; /* the text is ours; execve re-reads the file, not this copy */
		char *tok[MAX_TOKENS];
		int nt = 0;
		char *q = p;
		while (*q) {
			while (*q && is_space(*q))
				q++;
			if (!*q)
				break;
			if (nt < MAX_TOKENS)
				tok[nt] = q;
			nt++;
			while (*q && !is_space(*q))
				q++;
			if (*q)
				*q++ = 0;
		}
		p = nl ? nl + 1 : end;
		if (!nt)
			continue;
		if (!strcmp(tok[0], "arena")) {
			if (nsteps || arena_line)
				parse_fail("arena comes once, before the first step");
			if (nt != 2)
				parse_fail("arena takes a block count from 1 to %d", ARENA_MAX);
			arena_blocks = need_int(tok[1], 0, ARENA_MAX, "1..64");
			if (!arena_blocks)
				parse_fail("number %s out of range (1..%d)", quote(tok[1]), ARENA_MAX);
			arena_line = lineno;
			continue;
		}
		struct step s;
		memset(&s, 0, sizeof(s));
		s.line = lineno;
		size_t k;
		for (k = 0; k < sizeof(opnames) / sizeof(opnames[0]); k++)
			if (!strcmp(tok[0], opnames[k].name))
				break;
		if (k == sizeof(opnames) / sizeof(opnames[0]))
			parse_fail("unknown step %s", quote(tok[0]));
		s.op = opnames[k].op;
		int nargs = nt - 1;
		switch (s.op) {
		case OP_PRCTL_SET:
		case OP_PRCTL_GET:
			if (nargs > 4)
				parse_fail("%s takes at most 4 arguments", tok[0]);
			for (int i = 0; i < nargs; i++) /* raw unsigned longs; negative: two's complement */
				s.a[i] = need_int(tok[1 + i], (uint64_t)1 << 63, UINT64_MAX,
						  "-9223372036854775808..18446744073709551615");
			break;
		case OP_MMAP:
		case OP_MUNMAP:
		case OP_TOUCH:
		case OP_UFFD_UNREGISTER:
		case OP_UFFD_COPY:
		case OP_MADVISE:
		case OP_UFFD_REGISTER: {
			int want = (s.op == OP_MADVISE || s.op == OP_UFFD_REGISTER) ? 3 : 2;
			if (nargs != want)
				parse_fail("%s takes %d arguments", tok[0], want);
			s.off = need_size(tok[1]);
			s.len = need_size(tok[2]);
			if (s.op == OP_MADVISE) {
				const char *a = tok[3];
				if (!strcmp(a, "hugepage")) s.adv = MADV_HUGEPAGE;
				else if (!strcmp(a, "nohugepage")) s.adv = MADV_NOHUGEPAGE;
				else if (!strcmp(a, "collapse")) s.adv = MADV_COLLAPSE;
				else if (!strcmp(a, "clr_hugepage")) s.clr = 1;
				else if (*a == '-') /* madvise()'s int behavior; never negative */
					parse_fail("bad advice %s", quote(a));
				else
					s.adv = (int)need_int(a, 0, INT_MAX, "0..2147483647");
			} else if (s.op == OP_UFFD_REGISTER) {
				for (const char *m = tok[3];; m++) { /* words joined by '+' */
					size_t n = strcspn(m, "+");
					if (n == 7 && !strncmp(m, "missing", 7))
						s.mode |= UFFDIO_REGISTER_MODE_MISSING;
					else if (n == 2 && !strncmp(m, "wp", 2))
						s.mode |= UFFDIO_REGISTER_MODE_WP;
					else
						parse_fail("bad uffd mode %s (missing, wp or missing+wp)",
							   quote(tok[3]));
					m += n;
					if (!*m)
						break;
				}
			}
			uint64_t arena = (uint64_t)arena_blocks * PMD_SIZE;
			if (s.off > arena || s.len > arena - s.off)
				parse_fail("range 0x%llx+0x%llx leaves the arena (0x%llx bytes)",
					   (unsigned long long)s.off, (unsigned long long)s.len,
					   (unsigned long long)arena);
			break;
		}
		case OP_SYSFS:
			if (nargs != 1 || (strcmp(tok[1], "always") && strcmp(tok[1], "madvise") &&
					   strcmp(tok[1], "never")))
				parse_fail("sysfs takes one of always, madvise, never");
			s.s = tok[1];
			break;
		case OP_KHUGEPAGED:
			if (nargs > 1)
				parse_fail("khugepaged takes at most 1 argument");
			if (nargs)
				s.ms = need_int(tok[1], 0, UINT64_MAX, "0..18446744073709551615");
			break;
		default:
			if (nargs)
				parse_fail("%s takes no arguments", tok[0]);
		}
		if (nsteps == cap) {
			cap = cap ? cap * 2 : 64;
			steps = realloc(steps, cap * sizeof(*steps));
			if (!steps)
				parse_fail("out of memory");
		}
		steps[nsteps++] = s;
	}
}

/* ---- process state ------------------------------------------------------------------------- */
static uintptr_t base = ARENA_BASE;
static uint64_t arena_len;
static long page_size;
static long clr_hugepage = CLR_HUGEPAGE;
static const char *script_arg; /* path given on the command line ("-" = stdin) */
static const char *argv0;
static int uffd = -1;
static int uffd_sigbus; /* the open uffd has UFFD_FEATURE_SIGBUS */
static char *pattern; /* the UFFDIO_COPY source: pattern_fd mapped read-only */
static size_t pattern_len;
static int pattern_fd = -1;
static int script_fd = -1; /* memfd holding a stdin script, for execve */

/*
 * /proc files kept open between steps and read line by line.  A seq_file formats its records
 * as they are read, a few KiB per read(), so a reader that stops early spares the kernel the
 * rest: smaps lists VMAs in address order, and the arena lies below everything else of this
 * static-pie process, so one observation formats little more than the arena's own records.
 */
struct procfile {
	const char *path;
	int fd;
	size_t n, p; /* bytes in buf, start of the next line */
	int eof;
	char buf[1 << 16];
};
/*
 * Bytes asked per read(): less than one smaps record (~1.3 KiB).  seq_read_iter() formats
 * records until the buffer it copies from holds what was asked for, and a record that does not
 * fit its page-sized buffer is formatted and thrown away; asking for less than a record means
 * every record is formatted once.  ~12% off the executor's time on random scripts.
 */
#define PROC_READ 1024
static struct procfile smaps_pf = {"/proc/self/smaps", -1, 0, 0, 0, {0}};
static struct procfile status_pf = {"/proc/self/status", -1, 0, 0, 0, {0}};

/* Start reading pf from its beginning; -1 if it cannot be opened. */
static int proc_rewind(struct procfile *pf)
{
	pf->n = pf->p = 0;
	pf->eof = 0;
	if (pf->fd >= 0 && lseek(pf->fd, 0, SEEK_SET) == 0)
		return 0;
	if (pf->fd >= 0)
		close(pf->fd);
	pf->fd = open(pf->path, O_RDONLY | O_CLOEXEC);
	return pf->fd < 0 ? -1 : 0;
}

/* The next line as [*s, *e) without its newline: 1, or 0 at the end, or -1 on a read error.
 * The line stays valid until the next call. */
static int proc_line(struct procfile *pf, const char **s, const char **e)
{
	for (;;) {
		char *nl = memchr(pf->buf + pf->p, '\n', pf->n - pf->p);
		if (nl || (pf->eof && pf->p < pf->n)) {
			*s = pf->buf + pf->p;
			*e = nl ? nl : pf->buf + pf->n;
			pf->p = *e - pf->buf + (nl != NULL);
			return 1;
		}
		if (pf->eof)
			return 0;
		memmove(pf->buf, pf->buf + pf->p, pf->n - pf->p);
		pf->n -= pf->p;
		pf->p = 0;
		if (pf->n == sizeof(pf->buf))
			return -1; /* a line longer than the buffer: not a file we know */
		size_t want = sizeof(pf->buf) - pf->n;
		ssize_t r = read(pf->fd, pf->buf + pf->n, want < PROC_READ ? want : PROC_READ);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		pf->eof = r == 0;
		pf->n += r;
	}
}

static void proc_forget(void) /* after fork: the open files describe the parent */
{
	if (smaps_pf.fd >= 0)
		close(smaps_pf.fd);
	if (status_pf.fd >= 0)
		close(status_pf.fd);
	smaps_pf.fd = status_pf.fd = -1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* After "Key:" at p (line ends at e): the first token, as [*ts, *te). */
static void first_token(const char *p, const char *e, const char **ts, const char **te)
{
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	*ts = p;
	while (p < e && *p != ' ' && *p != '\t' && *p != '\r')
		p++;
	*te = p;
}

static int key_is(const char *p, const char *e, const char *key, size_t klen)
{
	return (size_t)(e - p) >= klen && !memcmp(p, key, klen);
}

/* A field's first token, copied out of the line buffer (empty: the kernel did not print it). */
struct token {
	char s[24];
};

static void token_set(struct token *t, const char *p, const char *e)
{
	const char *ts, *te;
	first_token(p, e, &ts, &te);
	size_t n = (size_t)(te - ts) < sizeof(t->s) - 1 ? (size_t)(te - ts) : sizeof(t->s) - 1;
	memcpy(t->s, ts, n);
	t->s[n] = 0;
}

struct vma_rec {
	uint64_t start, end;
	unsigned flags; /* 1 hg, 2 nh, 4 um, 8 uw */
	struct token elig, ahp;
};

static void emit_vma(struct sbuf *o, const struct vma_rec *v, int *first)
{
	static const char *const fl[] = {"hg", "nh", "um", "uw"};
	if (!*first)
		sb_chr(o, ',');
	*first = 0;
	sb_hex(o, (int64_t)(v->start - base));
	sb_chr(o, '-');
	sb_hex(o, (int64_t)(v->end - base));
	sb_chr(o, ':');
	if (!v->flags) {
		sb_chr(o, '-');
	} else {
		int n = 0;
		for (int i = 0; i < 4; i++)
			if (v->flags & (1u << i)) {
				if (n++)
					sb_chr(o, '+');
				sb_str(o, fl[i]);
			}
	}
	sb_chr(o, ':');
	sb_str(o, v->elig.s[0] ? v->elig.s : "-");
	sb_chr(o, ':');
	sb_str(o, v->ahp.s[0] ? v->ahp.s : "-");
}

/* Append the arena's VMAs (those that intersect [base, base+arena_len)) from smaps; stop at
 * the first VMA that starts at or after the arena's end. */
static void observe_vmas(struct sbuf *o)
{
	const uint64_t lo = base, hi = base + arena_len;
	struct vma_rec v;
	int in = 0, first = 1, r = -1;
	const char *p, *e;
	if (proc_rewind(&smaps_pf) == 0) {
		while ((r = proc_line(&smaps_pf, &p, &e)) > 0) {
			char c = *p;
			if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
				/* a VMA header: "start-end perms offset dev inode [path]" */
				if (in)
					emit_vma(o, &v, &first);
				uint64_t s = 0, t = 0;
				const char *q = p;
				int d;
				while (q < e && (d = hexval(*q)) >= 0)
					s = s * 16 + d, q++;
				if (q < e && *q == '-')
					q++;
				while (q < e && (d = hexval(*q)) >= 0)
					t = t * 16 + d, q++;
				in = s < hi && t > lo;
				if (s >= hi)
					break;
				if (in) {
					memset(&v, 0, sizeof(v));
					v.start = s;
					v.end = t;
				}
			} else if (in) {
				if (c == 'V' && key_is(p, e, "VmFlags:", 8)) {
					const char *q = p + 8, *ts, *te;
					for (;;) {
						first_token(q, e, &ts, &te);
						if (ts == te)
							break;
						if (te - ts == 2) {
							if (ts[0] == 'h' && ts[1] == 'g') v.flags |= 1;
							else if (ts[0] == 'n' && ts[1] == 'h') v.flags |= 2;
							else if (ts[0] == 'u' && ts[1] == 'm') v.flags |= 4;
							else if (ts[0] == 'u' && ts[1] == 'w') v.flags |= 8;
						}
						q = te;
					}
				} else if (c == 'T' && key_is(p, e, "THPeligible:", 12)) {
					token_set(&v.elig, p + 12, e);
				} else if (c == 'A' && key_is(p, e, "AnonHugePages:", 14)) {
					token_set(&v.ahp, p + 14, e);
				}
			}
		}
	}
	if (r < 0) {
		sb_chr(o, '?');
		return;
	}
	if (in)
		emit_vma(o, &v, &first);
}

static void observe_thp_enabled(struct sbuf *o)
{
	const char *p, *e;
	if (proc_rewind(&status_pf) == 0) {
		while (proc_line(&status_pf, &p, &e) > 0) {
			if (*p == 'T' && key_is(p, e, "THP_enabled:", 12)) {
				const char *ts, *te;
				first_token(p + 12, e, &ts, &te);
				if (te > ts) {
					sb_mem(o, ts, te - ts);
					return;
				}
				break;
			}
		}
	}
	sb_chr(o, '-');
}

static struct sbuf out;

/* Print "<label> ret=<ret> get=.. thp=.. vmas=.." in one write. */
static void report(const char *label, const char *ret)
{
	out.len = 0;
	sb_str(&out, label);
	sb_str(&out, " ret=");
	sb_str(&out, ret);
	sb_str(&out, " get=");
	long g = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	if (g < 0)
		sb_errno(&out, errno);
	else
		sb_i64(&out, g);
	sb_str(&out, " thp=");
	observe_thp_enabled(&out);
	sb_str(&out, " vmas=");
	observe_vmas(&out);
	sb_chr(&out, '\n');
	write_all(1, out.p, out.len);
}

/* ---- the arena ------------------------------------------------------------------------------ */
static void setup_arena(void)
{
	arena_len = (uint64_t)arena_blocks * PMD_SIZE;
	size_t rlen = arena_len + 2 * PMD_SIZE;
	void *want = (void *)(base - PMD_SIZE);
	int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p = mmap(want, rlen, PROT_NONE, fl | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != MAP_FAILED && p != want) {
		/* a kernel before 4.17 took NOREPLACE as a hint and put it elsewhere */
		munmap(p, rlen);
		p = MAP_FAILED;
	}
	if (p == MAP_FAILED && errno != EEXIST)
		p = mmap(want, rlen, PROT_NONE, fl | MAP_FIXED, -1, 0);
	if (p != want) {
		char m[160];
		int n = snprintf(m, sizeof(m), "executor: cannot reserve the arena at %#lx: %s\n",
				 (unsigned long)want, strerror(errno));
		write_all(2, m, n);
		exit(1);
	}
	if (munmap((void *)base, arena_len)) {
		write_all(2, "executor: cannot empty the arena\n", 33);
		exit(1);
	}
}

/* ---- touch: faults become results ---------------------------------------------------------- */
static sigjmp_buf touch_env;
static volatile sig_atomic_t touching;

static void on_fault(int sig)
{
	if (touching) {
		touching = 0;
		siglongjmp(touch_env, sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
}

static const char *do_touch(const struct step *s)
{
	static volatile char *volatile addr;
	static volatile uintptr_t stop;
	addr = (volatile char *)(base + s->off);
	stop = base + s->off + s->len;
	/*
	 * Without UFFD_FEATURE_SIGBUS (4.3..4.13) a missing fault in a registered range would
	 * wait forever for a handler that is us; a timer turns that into TIMEOUT.
	 */
	static volatile int timed;
	timed = uffd >= 0 && !uffd_sigbus;
	int sig = sigsetjmp(touch_env, 1);
	if (sig) {
		if (timed)
			setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
		return sig == SIGBUS ? "SIGBUS" : sig == SIGSEGV ? "SIGSEGV" : "TIMEOUT";
	}
	if (timed)
		setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {2, 0}}, NULL);
	touching = 1;
	while ((uintptr_t)addr < stop) {
		*addr = 1;
		addr = (volatile char *)(((uintptr_t)addr & ~(uintptr_t)(page_size - 1)) + page_size);
	}
	touching = 0;
	if (timed)
		setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
	return "0";
}

/* ---- userfaultfd ---------------------------------------------------------------------------- */
static int uffd_try(int flags, __u64 features)
{
#ifdef __NR_userfaultfd
	int fd = syscall(__NR_userfaultfd, flags);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
#else
	(void)flags;
	(void)features;
	return -ENOSYS;
#endif
}

/* Returns 0 or -errno. */
static int uffd_open(void)
{
	if (uffd >= 0)
		return 0;
	int flags = O_CLOEXEC | O_NONBLOCK;
	int fd = uffd_try(flags | UFFD_USER_MODE_ONLY, UFFD_FEATURE_SIGBUS);
	if (fd == -EINVAL) /* before 5.11: no UFFD_USER_MODE_ONLY */
		fd = uffd_try(flags, UFFD_FEATURE_SIGBUS);
	uffd_sigbus = 1;
	if (fd == -EINVAL) { /* before 4.14: no UFFD_FEATURE_SIGBUS (a fresh fd: API is one-shot) */
		fd = uffd_try(flags | UFFD_USER_MODE_ONLY, 0);
		if (fd == -EINVAL)
			fd = uffd_try(flags, 0);
		uffd_sigbus = 0;
	}
	if (fd < 0)
		return fd;
	uffd = fd;
	return 0;
}

/*
 * The UFFDIO_COPY source: page i holds 0x5a ^ i (never a zero page).  It lives in a memfd that
 * a --serve process creates once and its children share, and is mapped read-only: a fault
 * maps page-cache pages (16 at a time) instead of allocating, zeroing and filling anonymous
 * ones, and a shmem mapping (shmem_enabled=never) cannot register the mm with khugepaged as a
 * large anonymous one would under `always`.  memfd_create (3.17) predates userfaultfd (4.3).
 */
static int pattern_open(void)
{
	if (pattern_fd < 0) {
#ifdef __NR_memfd_create
		pattern_fd = syscall(__NR_memfd_create, "vmaflags-pattern", 1 /* MFD_CLOEXEC */);
#endif
		if (pattern_fd < 0)
			return -errno;
	}
	return 0;
}

static int pattern_map(size_t need)
{
	if (need <= pattern_len)
		return 0;
	int e = pattern_open();
	if (e)
		return e;
	struct stat st;
	if (fstat(pattern_fd, &st))
		return -errno;
	static char chunk[1 << 16];
	for (size_t off = st.st_size; off < need;) { /* the file only grows: pages stay valid */
		size_t n = 0;
		for (; n < sizeof(chunk) && off + n < need; n += page_size)
			memset(chunk + n, 0x5a ^ (int)(((off + n) / page_size) & 0xff), page_size);
		ssize_t w = pwrite(pattern_fd, chunk, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0 || (size_t)w % page_size)
			return w < 0 ? -errno : -EIO;
		off += w;
	}
	if (pattern)
		munmap(pattern, pattern_len);
	pattern = mmap(NULL, need, PROT_READ, MAP_SHARED, pattern_fd, 0);
	if (pattern == MAP_FAILED) {
		pattern = NULL;
		pattern_len = 0;
		return -ENOMEM;
	}
	pattern_len = need;
	return 0;
}

static int ioctl_ret(int r) { return r ? -errno : 0; }

static int do_uffd(const struct step *s)
{
	if (s->op == OP_UFFD_CLOSE) {
		if (uffd < 0)
			return 0; /* nothing open: the step only ensures none is */
		int r = close(uffd);
		uffd = -1;
		return r ? -errno : 0;
	}
	int r = uffd_open();
	if (r)
		return r;
	switch (s->op) {
	case OP_UFFD_REGISTER: {
		struct uffdio_register reg = {.range = {.start = base + s->off, .len = s->len},
					      .mode = s->mode};
		return ioctl_ret(ioctl(uffd, UFFDIO_REGISTER, &reg));
	}
	case OP_UFFD_UNREGISTER: {
		struct uffdio_range rng = {.start = base + s->off, .len = s->len};
		return ioctl_ret(ioctl(uffd, UFFDIO_UNREGISTER, &rng));
	}
	case OP_UFFD_COPY: {
		size_t need = s->len ? (s->len + page_size - 1) & ~(uint64_t)(page_size - 1)
				     : (size_t)page_size;
		int e = pattern_map(need);
		if (e)
			return e;
		struct uffdio_copy cp = {.dst = base + s->off, .src = (uintptr_t)pattern,
					 .len = s->len, .mode = 0};
		return ioctl_ret(ioctl(uffd, UFFDIO_COPY, &cp));
	}
	default:
		return -EINVAL;
	}
}

/* ---- execve --------------------------------------------------------------------------------- */
static int do_execve(size_t idx)
{
	char path_buf[64];
	const char *path = script_arg;
	if (!strcmp(script_arg, "-")) {
		if (script_fd < 0) {
			int fd = -1;
#ifdef __NR_memfd_create
			fd = syscall(__NR_memfd_create, "vmaflags-script", 0);
#endif
			if (fd < 0) { /* before 3.17: an unlinked temporary file */
				static const char *const dirs[] = {"/tmp", "/dev/shm", "/run", "."};
				for (size_t i = 0; fd < 0 && i < sizeof(dirs) / sizeof(dirs[0]); i++) {
					char tmpl[64];
					snprintf(tmpl, sizeof(tmpl), "%s/vmaflags-XXXXXX", dirs[i]);
					fd = mkstemp(tmpl);
					if (fd >= 0)
						unlink(tmpl);
				}
			}
			if (fd < 0)
				return -errno;
			size_t done = 0;
			while (done < script_len) {
				ssize_t w = write(fd, script_text + done, script_len - done);
				if (w < 0) {
					int e = errno;
					close(fd);
					return -e;
				}
				done += w;
			}
			script_fd = fd;
		}
		snprintf(path_buf, sizeof(path_buf), "/proc/self/fd/%d", script_fd);
		path = path_buf;
	}
	char resume[32], pfd[32];
	snprintf(resume, sizeof(resume), "--resume=%zu", idx);
	snprintf(pfd, sizeof(pfd), "--pattern-fd=%d", pattern_fd);
	/* the new image keeps filling the same pattern file rather than a fresh one */
	char *const args[] = {(char *)argv0, resume, pattern_fd >= 0 ? pfd : (char *)path,
			      pattern_fd >= 0 ? (char *)path : NULL, NULL};
	extern char **environ;
	if (pattern_fd >= 0)
		fcntl(pattern_fd, F_SETFD, 0);
	execve("/proc/self/exe", args, environ);
	return -errno;
}

/* ---- khugepaged: wait for two full scans ----------------------------------------------------- */
#define FULL_SCANS "/sys/kernel/mm/transparent_hugepage/khugepaged/full_scans"

static long read_full_scans(void)
{
	char buf[32];
	int fd = open(FULL_SCANS, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * Two increments of full_scans mean khugepaged went over every registered mm, ours included,
 * at least once after this step began (the selftest's wait_for_scan does the same).  0 when
 * seen within ms (0: 20 s, the model's `khugepaged` means a scan happened), -ETIMEDOUT when
 * not; without the counter, just sleep ms.
 */
static int do_khugepaged(uint64_t ms)
{
	long start = read_full_scans();
	if (!ms)
		ms = 20000;
	if (start < 0) {
		sleep_ms(ms);
		return 0;
	}
	for (uint64_t waited = 0; waited < ms; waited += 5) {
		sleep_ms(5);
		if (read_full_scans() >= start + 2)
			return 0;
	}
	return -ETIMEDOUT;
}

/* ---- the loop ------------------------------------------------------------------------------- */
static void run_step(size_t idx)
{
	const struct step *s = &steps[idx];
	char label[32], retbuf[48];
	snprintf(label, sizeof(label), "%zu", idx + 1);
	struct sbuf rb = {retbuf, 0, sizeof(retbuf)};
	const char *ret = NULL;
	long r = 0;
	void *a = (void *)(base + s->off);

	switch (s->op) {
	case OP_MMAP: {
		void *p = mmap(a, s->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			       -1, 0);
		r = p == MAP_FAILED ? -errno : 0;
		break;
	}
	case OP_MUNMAP:
		r = munmap(a, s->len) ? -errno : 0;
		break;
	case OP_TOUCH:
		ret = do_touch(s);
		break;
	case OP_MADVISE: {
		r = madvise(a, s->len, s->clr ? (int)clr_hugepage : s->adv) ? -errno : 0;
		break;
	}
	case OP_PRCTL_SET:
	case OP_PRCTL_GET:
		r = prctl(s->op == OP_PRCTL_SET ? PR_SET_THP_DISABLE : PR_GET_THP_DISABLE,
			  (unsigned long)s->a[0], (unsigned long)s->a[1], (unsigned long)s->a[2],
			  (unsigned long)s->a[3]);
		if (r < 0)
			r = -errno;
		break;
	case OP_UFFD_REGISTER:
	case OP_UFFD_UNREGISTER:
	case OP_UFFD_COPY:
	case OP_UFFD_CLOSE:
		r = do_uffd(s);
		break;
	case OP_FORK: {
		pid_t pid = fork();
		if (pid == 0) {
			proc_forget();
			char cl[32];
			snprintf(cl, sizeof(cl), "%zuc", idx + 1);
			report(cl, "0");
			_exit(0);
		}
		if (pid < 0) {
			r = -errno;
		} else {
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			r = 0;
		}
		break;
	}
	case OP_EXECVE:
		r = do_execve(idx); /* returns only on failure */
		break;
	case OP_SYSFS: {
		int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
		} else {
			r = write(fd, s->s, strlen(s->s)) < 0 ? -errno : 0;
			close(fd);
		}
		break;
	}
	case OP_KHUGEPAGED:
		r = do_khugepaged(s->ms);
		break;
	}
	if (!ret) {
		if (r < 0)
			sb_errno(&rb, (int)-r);
		else
			sb_i64(&rb, r);
		sb_chr(&rb, 0);
		ret = retbuf;
	}
	report(label, ret);
}

static int read_script(const char *path)
{
	int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : 0;
	if (fd < 0)
		return -1;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);
	while (buf) {
		if (n == cap) {
			char *p = realloc(buf, cap * 2 + 1);
			if (!p)
				break;
			buf = p;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		if (!r) {
			if (fd)
				close(fd);
			buf[n] = 0;
			script_text = buf;
			script_len = n;
			return 0;
		}
		n += r;
	}
	int e = buf ? errno : ENOMEM;
	free(buf);
	if (fd)
		close(fd);
	errno = e;
	return -1;
}

__attribute__((noreturn)) static void cannot_read(void)
{
	char m[512];
	int n = snprintf(m, sizeof(m), "executor: cannot read %s: %s\n", script_arg,
			 strerror(errno));
	write_all(2, m, n);
	exit(2);
}

static void usage(void)
{
	static const char m[] = "usage: executor SCRIPT   (a path, or - for standard input)\n"
				"       executor --check SCRIPT   (parse only)\n"
				"       executor --serve [--guest]\n"
				"       executor --version\n";
	write_all(2, m, sizeof(m) - 1);
	exit(2);
}

/* Run the script in script_text from step `resume` + 1 (an execve step's new image) or from
 * the start (resume < 0); returns the exit status. */
static int run_script(long resume)
{
	/* parse a copy: execve needs the pristine text of a stdin script */
	char *copy = malloc(script_len + 1);
	if (!copy)
		return 2;
	memcpy(copy, script_text, script_len + 1);
	parse_script(copy, script_len);
	if (resume >= 0 && ((size_t)resume >= nsteps || steps[resume].op != OP_EXECVE)) {
		write_all(2, "executor: --resume does not name an execve step\n", 48);
		return 2;
	}

	page_size = sysconf(_SC_PAGESIZE);
	setup_arena();
	install_handlers();

	size_t start = 0;
	if (resume >= 0) {
		char label[32];
		snprintf(label, sizeof(label), "%ld", resume + 1);
		report(label, "0");
		start = resume + 1;
	}
	for (size_t k = start; k < nsteps; k++)
		run_step(k);
	return 0;
}

/* ---- --serve: one fresh child per script ----------------------------------------------------- */
static char in_buf[1 << 16];
static size_t in_n, in_p;

/* Exactly n bytes of standard input into dst: 1, or 0 if it ends first. */
static int serve_read(char *dst, size_t n)
{
	while (n) {
		if (in_p == in_n) {
			ssize_t r = read(0, in_buf, sizeof(in_buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 0;
			in_n = r;
			in_p = 0;
		}
		size_t k = in_n - in_p < n ? in_n - in_p : n;
		memcpy(dst, in_buf + in_p, k);
		in_p += k;
		dst += k;
		n -= k;
	}
	return 1;
}

static void on_sigchld(int sig) { (void)sig; } /* only to end a ppoll() in serve_wait */

/* The signal mask serve_wait() waits under: the server's, with SIGCHLD let through. */
static sigset_t serve_waitmask;

#define SERVE_TIMEOUT (-1)
#define SERVE_HANGUP (-2)

/*
 * The exit status of child `pid`, killing it after `secs` seconds: 0..255, 128 + signal, or
 * SERVE_TIMEOUT.  SIGCHLD is blocked in the server except inside ppoll(), so it can be waited
 * for with a timeout.  The child is killed as well, and SERVE_HANGUP returned, when nobody
 * reads our standard output any more (a pipe without readers polls POLLERR): the driver is
 * gone, killed say, and a script inside a long khugepaged wait must not keep us alive.  (Not
 * the end of our input: a caller may write every script at once and close it.)
 */
static int serve_wait(pid_t pid, uint64_t secs)
{
	struct timespec now, end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += secs;
	struct pollfd out = {.fd = 1, .events = 0}; /* POLLERR and POLLHUP come unasked */
	int status, killed = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, killed ? 0 : WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return SERVE_TIMEOUT;
		if (killed)
			continue;
		clock_gettime(CLOCK_MONOTONIC, &now);
		struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
		if (left.tv_nsec < 0)
			left.tv_sec--, left.tv_nsec += 1000000000L;
		if (left.tv_sec < 0) {
			killed = SERVE_TIMEOUT;
		} else if (ppoll(&out, 1, &left, &serve_waitmask) > 0) {
			if (out.revents & POLLNVAL) /* no standard output at all: nothing to watch */
				out.fd = -1;
			else
				killed = SERVE_HANGUP;
		}
		if (killed)
			kill(pid, SIGKILL);
	}
	if (killed)
		return killed;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * Keep an mm of our own on khugepaged's list while the server runs (conformance/khugepaged.py
 * explains why): registering into an empty list wakes khugepaged at once (__khugepaged_enter),
 * so a script's first MADV_HUGEPAGE would be followed by a scan that lands between the step and
 * its observation, while the model collapses only at `khugepaged` steps.  Best effort: under
 * enabled=never nothing registers, and khugepaged does not run either.
 */
/* In a child of the server: die with it (also if it died before we asked). */
static void serve_child(pid_t server)
{
	signal(SIGCHLD, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != server)
		_exit(1);
}

/* The keeper, once it has registered: the server serves no script before that, or the first
 * scripts would meet the empty list the keeper is there to prevent. */
static pid_t serve_keeper(void)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC))
		ready[0] = ready[1] = -1;
	pid_t server = getpid(), pid = fork();
	if (pid != 0) {
		char c;
		close(ready[1]);
		while (ready[0] >= 0 && read(ready[0], &c, 1) < 0 && errno == EINTR)
			; /* a byte, or end of file if the keeper died first */
		close(ready[0]);
		return pid;
	}
	serve_child(server);
	for (int fd = 0; fd < 3; fd++) /* the caller's pipes reach EOF with the server alone */
		close(fd);
	char *p = mmap(NULL, 2 * PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p != MAP_FAILED) {
		char *a = (char *)(((uintptr_t)p + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
		a[0] = 1; /* an anon_vma first: khugepaged only takes VMAs that have one */
		madvise(a, PMD_SIZE, MADV_HUGEPAGE); /* khugepaged_enter_vma(): on the list */
	}
	close(ready[0]);
	write_all(ready[1], "", 1);
	close(ready[1]);
	for (;;)
		pause();
}

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage/"

/* A THP tunable's name: letters, digits, '_' and at most one '/' (khugepaged/...); no "..". */
static int tunable_ok(const char *name)
{
	int slashes = 0;
	if (!*name || *name == '/')
		return 0;
	for (const char *p = name; *p; p++) {
		if (*p == '/')
			slashes++;
		else if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return 0;
	}
	return slashes <= 1;
}

/* "sysfs NAME": print the tunable's first line; "sysfs NAME VALUE": write VALUE to it.
 * Returns 0 or an errno. */
static int guest_sysfs(const char *name, const char *value)
{
	char path[128], buf[256];
	if (!tunable_ok(name) || snprintf(path, sizeof(path), THP_SYSFS "%s", name) >= (int)sizeof(path))
		return EINVAL;
	int fd = open(path, (value ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return errno;
	ssize_t n = value ? write(fd, value, strlen(value)) : read(fd, buf, sizeof(buf) - 1);
	int e = n < 0 ? errno : 0;
	close(fd);
	if (!e && !value) {
		char *nl = memchr(buf, '\n', n);
		buf[nl ? nl - buf : n] = '\n';
		write_all(1, buf, (nl ? nl - buf : n) + 1);
	}
	return e;
}

/* "run PATH": run a program of the guest's initramfs (a kselftest) with its output on ours. */
static int guest_run(const char *path, pid_t server, const sigset_t *old)
{
	pid_t pid = fork();
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old, NULL);
		serve_child(server);
		dup2(1, 2);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	return pid < 0 ? -1 : serve_wait(pid, 3600);
}

/*
 * The control lines of `--serve --guest`, for conformance/vm/guest.py driving a test VM over its
 * serial port (this process is then the VM's only worker): "clr N" sets the MADV_CLR_HUGEPAGE
 * number of the scripts that follow; "sysfs NAME [VALUE]" reads or writes a THP tunable; "run
 * PATH" runs a program.  Each ends with "end <status>" like a script (status: 0, an errno for
 * sysfs, the program's exit status or -1 for run).  Returns 0 if `line` was none of these.
 */
static int guest_command(char *line, pid_t server, const sigset_t *old)
{
	char *arg = strchr(line, ' '), m[32];
	if (!arg)
		return 0;
	*arg++ = 0;
	int status;
	if (!strcmp(line, "clr")) {
		int v;
		status = parse_c_int(arg, &v) ? EINVAL : 0;
		if (!status)
			clr_hugepage = v;
	} else if (!strcmp(line, "sysfs")) {
		char *value = strchr(arg, ' ');
		if (value)
			*value++ = 0;
		status = guest_sysfs(arg, value);
	} else if (!strcmp(line, "run")) {
		status = guest_run(arg, server, old);
	} else {
		arg[-1] = ' ';
		return 0;
	}
	write_all(1, m, snprintf(m, sizeof(m), "end %d\n", status));
	return 1;
}

/*
 * Read "script <bytes> <timeout seconds>\n" + the script text, again and again; run each script
 * in a child forked from this process, which never maps the arena nor changes any THP state,
 * so that every child starts as a freshly executed process would.  After the child's lines
 * print "end <status>" (see serve_wait; "end timeout" when it was killed).  Saves a fork+exec
 * of the caller and an exec of the executor per script.  An empty line ends the server (a
 * serial line has no end of file).
 */
static int serve(int guest)
{
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	serve_waitmask = old;
	sigdelset(&serve_waitmask, SIGCHLD);
	struct sigaction sa = {.sa_handler = on_sigchld};
	sigaction(SIGCHLD, &sa, NULL);
	pattern_open(); /* shared by the children; without it each makes its own */
	pid_t keeper = serve_keeper();
	int rc = 0;
	for (;;) {
		char line[64];
		size_t n = 0;
		while (n < sizeof(line) - 1 && serve_read(line + n, 1) && line[n] != '\n')
			n++;
		if (n == 0)
			break;
		line[n] = 0;
		if (guest && guest_command(line, getpid(), &old))
			continue;
		unsigned long len, secs;
		char tail;
		if (sscanf(line, "script %lu %lu%c", &len, &secs, &tail) != 2 || len > (1UL << 30)) {
			write_all(2, "executor: --serve wants \"script <bytes> <seconds>\" lines\n", 57);
			rc = 2;
			break;
		}
		char *text = malloc(len + 1);
		if (!text || !serve_read(text, len)) {
			write_all(2, "executor: --serve: a script was cut short\n", 42);
			rc = 2;
			break;
		}
		text[len] = 0;
		pid_t server = getpid(), pid = fork();
		if (pid == 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			serve_child(server);
			script_text = text;
			script_len = len;
			script_arg = "-";
			_exit(run_script(-1));
		}
		free(text);
		if (pid < 0)
			write_all(2, "executor: --serve: fork failed\n", 31);
		char m[32];
		int status = pid < 0 ? 1 : serve_wait(pid, secs);
		if (status == SERVE_HANGUP)
			break;
		int k = status < 0 ? snprintf(m, sizeof(m), "end timeout\n")
				   : snprintf(m, sizeof(m), "end %d\n", status);
		write_all(1, m, k);
	}
	if (keeper > 0) { /* gone by the time the caller has waited for the server */
		kill(keeper, SIGKILL);
		waitpid(keeper, NULL, 0);
	}
	return rc;
}

int main(int argc, char **argv)
{
	argv0 = argc ? argv[0] : "executor";
	long resume = -1;
	int i = 1;
	if (argc == 2 && !strcmp(argv[1], "--version")) {
		char m[96];
		int n = snprintf(m, sizeof(m), "%s (clr_hugepage=%d)\n", EXECUTOR_VERSION,
				 CLR_HUGEPAGE);
		write_all(1, m, n);
		return 0;
	}
	const char *env = getenv("VMAFLAGS_CLR_HUGEPAGE");
	if (env && *env) {
		int v;
		if (parse_c_int(env, &v)) {
			write_all(2, "executor: bad VMAFLAGS_CLR_HUGEPAGE\n", 36);
			return 2;
		}
		clr_hugepage = v;
	}
	if (argc == 3 && !strcmp(argv[1], "--check")) { /* parse only: exit 0, or 2 and why */
		script_arg = argv[2];
		if (read_script(script_arg))
			cannot_read();
		parse_script(script_text, script_len);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--serve"))
		return serve(0);
	if (argc == 3 && !strcmp(argv[1], "--serve") && !strcmp(argv[2], "--guest"))
		return serve(1);
	if (i < argc && !strncmp(argv[i], "--resume=", 9)) {
		char *e;
		resume = strtol(argv[i] + 9, &e, 10);
		if (*e || resume < 0)
			usage();
		i++;
		if (i < argc && !strncmp(argv[i], "--pattern-fd=", 13)) {
			pattern_fd = (int)strtol(argv[i] + 13, &e, 10);
			if (*e || pattern_fd < 0 || fcntl(pattern_fd, F_SETFD, FD_CLOEXEC))
				usage();
			i++;
		}
	}
	if (argc - i != 1)
		usage();
	script_arg = argv[i];
	if (read_script(script_arg))
		cannot_read();
	return run_script(resume);
}
