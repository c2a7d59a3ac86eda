/*-------------------------------------------------------------------------
 *
 * shim.c
 *	  The few PostgreSQL backend symbols the fuzzed modules need, for a
 *	  standalone libFuzzer binary.
 *
 * The harnessed code (dnswire.c, dns.c, facts_dns.c, facts_tls.c, chainverify.c,
 * jsonw.c, guard.c, drift_rules.c) is linked unchanged.  StringInfo,
 * psprintf, snprintf and the JSON parser come from PostgreSQL's own
 * libpgcommon and libpgport; this file adds:
 *
 *	- palloc and friends over malloc, each chunk on a list, and
 *	  shim_reset() freeing them all: a memory-context reset after every
 *	  input, so AddressSanitizer sees each chunk's real bounds and any use
 *	  after the "context" is gone;
 *	- the error machinery PG_TRY/PG_FINALLY uses; an ereport(ERROR)
 *	  reaching this shim is a bug in the harnessed code (it must turn
 *	  outside input into facts, never into errors), so it aborts, which
 *	  libFuzzer reports as a crash;
 *	- escape_json (the backend's, in utils/adt/json.c), and the appguard
 *	  settings the modules read, at their defaults.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/elog.h"

#include "shim.h"

/* ---- appguard settings at their defaults (appguard.c is not linked) ---- */
char	   *appguard_dns_servers = "";
int			appguard_timeout_ms = 5000;
int			appguard_connect_timeout_ms = 1000;
int			appguard_dns_timeout_ms = 2000;
char	   *appguard_ca_file = "";
char	   *appguard_allowed_ports = "443";
bool		appguard_allow_private_addresses = false;
char	   *appguard_ownership_prefix = "appguard-client-id";
int			appguard_sweep_concurrency = 128;

/* ---- memory: malloc'd chunks on one list, freed by shim_reset ---- */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	/* 16-byte alignment for what follows, as palloc gives MAXALIGN */
	long double align[];
} Chunk;

static Chunk *chunks = NULL;
static size_t live_chunks = 0;

static void *
chunk_alloc(size_t size, bool zero)
{
	Chunk	   *c;

	if (size > MaxAllocSize)
	{
		fprintf(stderr, "shim: invalid memory alloc request size %zu\n", size);
		abort();
	}
	c = zero ? calloc(1, sizeof(Chunk) + size) : malloc(sizeof(Chunk) + size);
	if (c == NULL)
		abort();
	c->size = size;
	c->prev = NULL;
	c->next = chunks;
	if (chunks)
		chunks->prev = c;
	chunks = c;
	live_chunks++;
	return c->align;
}

static Chunk *
chunk_of(void *p)
{
	return (Chunk *) ((char *) p - offsetof(Chunk, align));
}

static void
chunk_unlink(Chunk *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	live_chunks--;
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *p)
{
	Chunk	   *c = chunk_of(p);

	chunk_unlink(c);
	free(c);
}

void *
repalloc(void *p, Size size)
{
	Chunk	   *c = chunk_of(p);
	void	   *fresh = chunk_alloc(size, false);

	memcpy(fresh, p, Min(size, c->size));
	pfree(p);
	return fresh;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len + 1);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

void
shim_reset(void)
{
	while (chunks)
	{
		Chunk	   *c = chunks;

		chunk_unlink(c);
		free(c);
	}
}

size_t
shim_live_chunks(void)
{
	return live_chunks;
}

/* ---- errors ---- */
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;

bool
errstart(int elevel, const char *domain)
{
	return elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	fprintf(stderr, "shim: ereport(ERROR) at %s:%d (%s): the harnessed code must not raise errors on outside input\n",
			filename, lineno, funcname);
	abort();
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

int
errdetail(const char *fmt,...)
{
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

void
pg_re_throw(void)
{
	if (PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);
	fprintf(stderr, "shim: error thrown outside PG_TRY\n");
	abort();
}

/* ---- escape_json, as utils/adt/json.c writes it ---- */
void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoCharMacro(buf, '"');
	for (const char *p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}
