/*-------------------------------------------------------------------------
 *
 * hostrow.c
 *	  A protected table's rows, seen from appguard: reading the values
 *	  appguard needs without running the table owner's code with
 *	  appguard's rights, and the caller's right to see a row.
 *
 * The row triggers of a protected table (appguard.grant_sync) run
 * as the extension's owner, a superuser, because they write appguard's
 * own tables.  Whatever they evaluate on the host's row must therefore be
 * code no ordinary role can define.  to_jsonb(NEW) is not: it calls a
 * user-defined cast to json of any column's type, so the owner of the
 * table could run a function as superuser just by adding a column.  So
 * the triggers read only the key, client and status columns, by number,
 * through their types' output functions: those of every type an ordinary
 * role can create (enums, domains, composites, ranges, arrays) are the
 * server's own, and a base type with functions of its own needs a
 * superuser to create.  No cast, operator or domain check is evaluated.
 *
 * The functions an auth server calls on a row of a protected table
 * (appguard_check_refresh(tbl, key), appguard_reapprove(tbl, key)) answer
 * only a caller who may SELECT that row: the table's SELECT privilege,
 * and where row-level security is on, a policy that shows the row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "hostrow.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(appguard_row_texts);

/*
 * The value of column attnum of tuple, printed by its type's output
 * function; NULL for a NULL, a dropped or a missing column.
 */
char *
hostrow_column_text(HeapTuple tuple, TupleDesc desc, int attnum)
{
	Form_pg_attribute att;
	Datum		value;
	bool		isnull;
	Oid			output;
	bool		varlena;

	if (attnum < 1 || attnum > desc->natts)
		return NULL;
	att = TupleDescAttr(desc, attnum - 1);
	if (att->attisdropped)
		return NULL;
	value = heap_getattr(tuple, attnum, desc, &isnull);
	if (isnull)
		return NULL;
	/* text prints as itself: no output function to look up (every token INSERT reads several) */
	if (att->atttypid == TEXTOID)
		return TextDatumGetCString(value);
	getTypeOutputInfo(att->atttypid, &output, &varlena);
	return OidOutputFunctionCall(output, value);
}

/*
 * appguard.row_texts(r record, attnums smallint[]) RETURNS text[]
 *
 * The columns attnums of r as text (see the top of this file).  For the
 * row triggers of protected tables only: granted to nobody.
 */
Datum
appguard_row_texts(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row;
	HeapTupleData tuple;
	ArrayType  *attnums;
	Datum	   *numbers;
	bool	   *number_nulls;
	int			n;
	TupleDesc	desc;
	Datum	   *texts;
	bool	   *text_nulls;
	int			dims[1];
	int			lbs[1] = {1};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	row = PG_GETARG_HEAPTUPLEHEADER(0);
	attnums = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(attnums, INT2OID, sizeof(int16), true, TYPALIGN_SHORT,
					  &numbers, &number_nulls, &n);
	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(row),
								  HeapTupleHeaderGetTypMod(row));
	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = row;
	texts = palloc0(Max(n, 1) * sizeof(Datum));
	text_nulls = palloc0(Max(n, 1) * sizeof(bool));
	for (int i = 0; i < n; i++)
	{
		char	   *t = number_nulls[i] ? NULL
			: hostrow_column_text(&tuple, desc, DatumGetInt16(numbers[i]));

		text_nulls[i] = (t == NULL);
		texts[i] = t ? CStringGetTextDatum(t) : (Datum) 0;
	}
	ReleaseTupleDesc(desc);
	dims[0] = n;
	PG_RETURN_ARRAYTYPE_P(construct_md_array(texts, text_nulls, 1, dims, lbs,
											 TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * The key column of relation rel, the first of its primary key (appguard
 * protects tables with a one-column primary key, or a partitioned table's
 * key column followed by its partition key): its number, name and type.
 */
static bool
primary_key_column(Relation rel, AttrNumber *attnum, char **typname)
{
	Oid			pkindex = RelationGetPrimaryKeyIndex(rel);
	HeapTuple	indtuple;
	Form_pg_index index;
	bool		found = false;

	if (!OidIsValid(pkindex))
		return false;
	indtuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkindex));
	if (!HeapTupleIsValid(indtuple))
		return false;
	index = (Form_pg_index) GETSTRUCT(indtuple);
	if (index->indnatts >= 1 && index->indkey.values[0] > 0)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), index->indkey.values[0] - 1);

		*attnum = att->attnum;
		*typname = format_type_extended(att->atttypid, att->atttypmod,
									   FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
		found = true;
	}
	ReleaseSysCache(indtuple);
	return found;
}

/*
 * Whether the current user sees the row keyed row_key of relid under its
 * row-level security policies: the host's own SELECT, run as the caller.
 */
static bool
row_visible_to_caller(Relation rel, const char *row_key)
{
	AttrNumber	attnum;
	char	   *typname;
	char	   *query;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		visible;

	if (!primary_key_column(rel, &attnum, &typname))
		return false;
	query = psprintf("SELECT FROM %s.%s WHERE %s OPERATOR(pg_catalog.=) $1::%s",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
					 quote_identifier(RelationGetRelationName(rel)),
					 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname)),
					 typname);
	args[0] = CStringGetTextDatum(row_key);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(query, 1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read a row of a protected table");
	visible = SPI_processed > 0;
	SPI_finish();
	return visible;
}

/*
 * Raise an error unless the current user may SELECT the row keyed row_key
 * (text) of table relid (see the top of this file).  what names the action for
 * the message ("check", "re-approve").
 */
void
hostrow_require_select(Oid relid, Datum row_key, const char *what)
{
	Relation	rel;
	bool		rls;

	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
	{
		char	   *name = get_rel_name(relid);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", name ? name : "(dropped)"),
				 errdetail("To %s a row of a protected table, a role needs the SELECT privilege on the table.",
						   what)));
	}
	rls = check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED;
	if (!rls)
		return;
	/* (an error closes the relation with the transaction) */
	rel = table_open(relid, AccessShareLock);
	if (!row_visible_to_caller(rel, TextDatumGetCString(row_key)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("no row of table %s with this key is visible to the current role",
						RelationGetRelationName(rel)),
				 errdetail("To %s a row of a protected table, a role must be able to SELECT that row; row-level security is enabled on the table.",
						   what)));
	table_close(rel, AccessShareLock);
}
