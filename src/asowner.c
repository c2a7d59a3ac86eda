/*-------------------------------------------------------------------------
 *
 * asowner.c
 *	  Run a statement on a protected table as that table's owner.
 *
 * appguard's functions are SECURITY DEFINER and run as the extension's
 * owner, a superuser.  When they update an auth server's token table
 * (suspending or re-approving a row), that table's own triggers, rules,
 * defaults and index expressions run too -- code its owner may change at
 * any time.  Run as the superuser, that code would be a way for the table
 * owner to act as superuser.  So, like VACUUM, ANALYZE and REFRESH
 * MATERIALIZED VIEW do in the server, these statements run with the table
 * owner's identity inside a security-restricted operation: whatever the
 * owner's code does, it does with the owner's own rights.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "identity.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(appguard_as_table_owner);
PG_FUNCTION_INFO_V1(appguard_as_table_owner_keys);

static Oid
table_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * Execute query with text parameters $1..$n; return the first column of
 * every row it returns, as text[] (NULLs kept).
 */
static ArrayType *
execute_returning_texts(const char *query, ArrayType *args)
{
	Datum	   *arg_values = NULL;
	bool	   *arg_nulls = NULL;
	int			nargs = 0;
	Oid		   *types;
	char	   *nulls;
	Datum	   *results;
	bool	   *result_nulls;
	int			nresults;
	ArrayType  *out;
	int			dims[1];
	int			lbs[1] = {1};

	if (args != NULL)
		deconstruct_array(args, TEXTOID, -1, false, TYPALIGN_INT,
						  &arg_values, &arg_nulls, &nargs);
	types = palloc((nargs + 1) * sizeof(Oid));
	nulls = palloc(nargs + 1);
	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		nulls[i] = arg_nulls[i] ? 'n' : ' ';
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(query, nargs, types, arg_values, nulls, false, 0) < 0)
		elog(ERROR, "could not run a statement on a protected table");
	nresults = SPI_tuptable ? (int) SPI_processed : 0;
	results = palloc((nresults + 1) * sizeof(Datum));
	result_nulls = palloc(nresults + 1);
	for (int i = 0; i < nresults; i++)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		result_nulls[i] = (value == NULL);
		results[i] = value ? PointerGetDatum(cstring_to_text(value)) : (Datum) 0;
	}
	dims[0] = nresults;
	out = construct_md_array(results, result_nulls, 1, dims, lbs,
							 TEXTOID, -1, false, TYPALIGN_INT);
	/* copy out of SPI's memory before it goes away */
	out = (ArrayType *) SPI_datumTransfer(PointerGetDatum(out), false, -1);
	SPI_finish();
	return out;
}

/*
 * Become the owner of relid in a security-restricted operation, with
 * search_path pinned: the owner's code must not see or keep ours
 * (identity.c; undone by identity_restore, or by the abort).
 */
static void
become_owner(Oid relid, SavedIdentity *saved)
{
	identity_become(table_owner(relid), SECURITY_RESTRICTED_OPERATION, true, saved);
}

/*
 * appguard.as_table_owner_keys(tbl regclass, query text, keys text[],
 *								 uris text[]) RETURNS text[]
 *
 * For the fan-out (appguard.write_host_suspensions): run query, with the
 * two arrays as its parameters $1 and $2 (text[]; uris: the error_uri
 * to write, as a one-element array), as tbl's owner; it
 * returns one row whose first column is a text[] (the keys written),
 * returned as is.  The arrays go to the statement as values, never through
 * their text form: 100,000 keys are one fan-out.
 */
Datum
appguard_as_table_owner_keys(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			types[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	SavedIdentity ctx;
	Datum		result = (Datum) 0;
	bool		isnull = true;
	SPIPlanPtr	plan;

	for (int i = 0; i < 2; i++)
	{
		nulls[i] = PG_ARGISNULL(2 + i) ? 'n' : ' ';
		values[i] = PG_ARGISNULL(2 + i) ? (Datum) 0 : PG_GETARG_DATUM(2 + i);
	}
	become_owner(relid, &ctx);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * Planned with the keys (a custom plan): the planner knows how many
	 * there are, and chooses between a look-up of each key (through the
	 * primary key; in every partition of a partitioned table) and one read
	 * of the table with the keys hashed, which for 100,000 keys of a table
	 * not much larger costs less (appguard.write_host_suspensions).
	 * Estimating "key = ANY (array)" element by element costs about 25 ms
	 * at 100,000 keys; a generic plan would guess ten keys and always look
	 * them up.
	 */
	plan = SPI_prepare_cursor(query, 2, types, CURSOR_OPT_CUSTOM_PLAN);
	if (plan == NULL)
		elog(ERROR, "could not prepare a statement on a protected table: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_execute_plan(plan, values, nulls, false, 0) < 0)
		elog(ERROR, "could not run a statement on a protected table");
	if (SPI_tuptable != NULL && SPI_processed > 0)
	{
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			result = SPI_datumTransfer(result, false, -1);
	}
	SPI_finish();
	identity_restore(&ctx);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * appguard.as_table_owner(tbl regclass, query text, args text[])
 *		RETURNS text[]
 *
 * For appguard's own SQL only (granted to nobody): query must touch tbl and
 * nothing of appguard's, since the owner has no rights on appguard's
 * tables.
 */
Datum
appguard_as_table_owner(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ArrayType  *args = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	SavedIdentity ctx;
	ArrayType  *result;

	become_owner(relid, &ctx);
	result = execute_returning_texts(query, args);
	identity_restore(&ctx);
	PG_RETURN_ARRAYTYPE_P(result);
}
