# appguard -- PGXS build
EXTENSION = appguard
EXTVERSION = 0.2.0

MODULE_big = appguard
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script is assembled from sql/parts/ (one file per concern,
# in name order); upgrade scripts sql/$(EXTENSION)--A--B.sql are kept as is.
SQL_PARTS = $(sort $(wildcard sql/parts/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(wildcard sql/$(EXTENSION)--*--*.sql)

# make installcheck: pg_regress (every sql/*.sql that is not an extension
# script, outputs in expected/), then the isolation specs of test/isolation
# in a database prepared by the isolation_setup target below.  Either suite
# alone: make installcheck ISOLATION= / make installcheck REGRESS=
# lifecycle_own_writes, consent_lineage, explain_html, client_hosts and
# partitioned run last: they add suspensions and events (draw ids), which
# the expected outputs of the tests before them do not include.
LAST_REGRESS = lifecycle_own_writes consent_lineage explain_html client_hosts partitioned
REGRESS = $(filter-out $(LAST_REGRESS),$(sort $(patsubst sql/%.sql,%,$(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql))))) \
	$(LAST_REGRESS)
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)
ISOLATION = $(sort $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --use-existing
REGRESS_PREP = $(if $(ISOLATION),isolation_setup)

PG_CPPFLAGS = $(shell pkg-config --cflags libcares openssl libpsl libidn2)
SHLIB_LINK = $(shell pkg-config --libs libcares openssl libpsl libidn2)

# CI builds with -Werror (make WERROR=1).  PostgreSQL's server headers are
# not written for -Wextra (ilist.h, bufpage.h: unused parameters and signed
# comparisons in inline functions): -isystem reads them as system headers,
# so the warnings left are appguard's own.
ifdef WERROR
PG_CFLAGS += -Wall -Wextra -Werror
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server)
endif

# PGXS's "all" stays the default goal despite the rule below
.DEFAULT_GOAL := all

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	( echo '-- $(EXTENSION) $(EXTVERSION): generated from sql/parts/ by make; edit those files'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION $(EXTENSION)" to load this file. \quit'; \
	  for f in $(SQL_PARTS); do echo; echo "-- ==== $$f"; cat $$f; done ) > $@

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object is rebuilt when a header changes (PGXS does not track them)
$(OBJS): $(wildcard src/*.h)

# The isolation specs share one database (pg_isolation_regress --use-existing),
# made here: the extension, the test helpers, then the specs' own helpers.
.PHONY: isolation_setup
isolation_setup:
	'$(bindir)/psql' -X -q -v ON_ERROR_STOP=1 -d postgres \
		-c 'DROP DATABASE IF EXISTS "$(ISOLATION_TESTDB)"' -c 'CREATE DATABASE "$(ISOLATION_TESTDB)"'
	'$(bindir)/psql' -X -q -v ON_ERROR_STOP=1 -d '$(ISOLATION_TESTDB)' -c 'CREATE EXTENSION $(EXTENSION)' \
		-f sql/lifecycle_helpers.inc -f test/isolation/setup.sql >/dev/null

# TAP tests (test/t, they start their own clusters and servers), apart from
# make installcheck: make prove_installcheck [PROVE_TESTS=test/t/NNN_x.pl]
PROVE_TESTS ?= test/t/*.pl
PROVE_FLAGS += -I ./test/perl
EXTRA_CLEAN = tmp_check

.PHONY: prove_installcheck
prove_installcheck:
	$(prove_installcheck)
