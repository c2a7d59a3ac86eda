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
 * Read a facts document into a view.  Missing keys and values of the wrong
 * type become unknown facts; the strings are palloc'd in the current memory
 * context.  ERROR (22023) when the document is not a JSON object or has a
 * schema other than APPGUARD_FACTS_SCHEMA; argname names it in the message.
 */
extern void facts_view_from_jsonb(Jsonb *facts, const char *argname,
								  FactsView *view);

#endif							/* APPGUARD_DRIFT_H */
