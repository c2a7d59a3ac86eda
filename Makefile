# appguard -- PGXS build
EXTENSION = appguard
EXTVERSION = 0.1.0

MODULE_big = appguard
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
HEADERS = $(wildcard src/*.h)

# The install script is assembled from sql/parts/ (one file per concern,
# in name order); upgrade scripts sql/$(EXTENSION)--A--B.sql are kept as is.
SQL_PARTS = $(sort $(wildcard sql/parts/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(wildcard sql/$(EXTENSION)--*--*.sql)

# pg_regress: every sql/*.sql that is not an extension script, outputs in expected/
REGRESS = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

PG_CPPFLAGS = $(shell pkg-config --cflags libcares openssl libpsl libidn2)
SHLIB_LINK = $(shell pkg-config --libs libcares openssl libpsl libidn2)

# CI builds with -Werror (make WERROR=1)
ifdef WERROR
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
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

# TAP tests live in test/t and use test/perl
TAP_TESTS = 1
PROVE_TESTS ?= test/t/*.pl
PROVE_FLAGS += -I ./test/perl

# Every object is rebuilt when a header changes (PGXS does not track them)
$(OBJS): $(wildcard src/*.h)

# TAP tests alone (they start their own clusters and servers)
.PHONY: prove_installcheck
prove_installcheck:
	$(prove_installcheck)
