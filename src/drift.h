/*-------------------------------------------------------------------------
 *
 * drift.h
 *	  Drift between two facts documents: reading a document into the view
 *	  the rules compare (drift_rules.h), and the SQL entry points.
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_DRIFT_H
#define APPGUARD_DRIFT_H

#include "postgres.h"

#include "drift_rules.h"
#include "utils/jsonb.h"

/*
 * The most elements appguard_facts_diff reads from one array of a facts
 * document (dns.a, dns.ns, dns.caa, ...).  A real probe records a few; the
 * bound keeps one call's work and memory in check (ERROR 54000 above it).
 */
#define DRIFT_MAX_LIST_ITEMS 100000

/*
 * Read a facts document into a view.  Missing keys and values of the wrong
 * type become unknown facts; the strings are palloc'd in the current memory
 * context.  ERROR (22023) when the document is not a JSON object or has a
 * schema outside APPGUARD_FACTS_SCHEMA_OLDEST to APPGUARD_FACTS_SCHEMA, and
 * ERROR (54000) when an array
 * has more than DRIFT_MAX_LIST_ITEMS elements; argname names it in the
 * message.  Every list of the view is sorted (drift_list_sort).
 */
extern void facts_view_from_jsonb(Jsonb *facts, const char *argname,
								  FactsView *view);

#endif							/* APPGUARD_DRIFT_H */
