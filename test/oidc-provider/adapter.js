// A PostgreSQL adapter for node-oidc-provider (schema.sql).
//
// oidc-provider asks an adapter class, one instance per model name, to
// upsert, find, consume and destroy payloads.  Refresh tokens go to
// oidc_refresh_tokens, the table appguard guards; everything else to
// oidc_models.  What matters for appguard:
//   - a refresh token row has plain client_id, account_id and grant_id
//     columns, copied from the payload once at insert (an upsert never
//     rewrites them, nor the status);
//   - only an 'active' row is a usable token; a 'consumed' one (rotated
//     away) is handed back flagged consumed, so that oidc-provider sees a
//     reuse and revokes the grant; a 'suspended' (appguard) or 'revoked'
//     row is not found;
//   - consume, destroy and revokeByGrantId write the status column: the
//     server's own decisions, which appguard records and never undoes
//     (a rotation consumes the old row and inserts the new one);
//   - with guardRefresh, the refresh is checked with appguard in the
//     statement that reads the token (findRefresh).

import { Provider } from 'oidc-provider';

export function makeAdapter(pool, { guardRefresh = false } = {})
{
	const epoch = (d) => (d ? Math.floor(d.getTime() / 1000) : undefined);

	return class PostgresAdapter
	{
		constructor(name)
		{
			this.name = name;
			this.isRefresh = name === 'RefreshToken';
		}

		async upsert(id, payload, expiresIn)
		{
			const expires = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
			if (this.isRefresh)
			{
				await pool.query(
					`INSERT INTO oidc_refresh_tokens (id, client_id, account_id, grant_id, payload, expires_at)
					 VALUES ($1, $2, $3, $4, $5, $6)
					 ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at`,
					[id, payload.clientId, payload.accountId, payload.grantId, payload, expires]);
				return;
			}
			await pool.query(
				`INSERT INTO oidc_models (model, id, payload, grant_id, uid, user_code, expires_at)
				 VALUES ($1, $2, $3, $4, $5, $6, $7)
				 ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload,
					grant_id = EXCLUDED.grant_id, uid = EXCLUDED.uid,
					user_code = EXCLUDED.user_code, expires_at = EXCLUDED.expires_at`,
				[this.name, id, payload, payload.grantId ?? null, payload.uid ?? null,
					payload.userCode ?? null, expires]);
		}

		// At the token endpoint's refresh (grant_type=refresh_token), the
		// row is read together with appguard's verdict, in one statement:
		// appguard_check_refresh(tbl, row_key) reads appguard's state of the
		// grant, consistent with the row.  A refusal of the requesting
		// client's token is kept on the request (ctx.state.appguardRefusal:
		// the invalid_grant body with error_uri, which server.js answers
		// instead of oidc-provider's) and the token is not found.  55P03
		// (appguard busy with this app's grants) is kept likewise, for a 503.
		async #findRefresh(id)
		{
			const ctx = Provider.ctx;
			if (!guardRefresh || ctx?.oidc?.route !== 'token' || ctx.oidc.params?.grant_type !== 'refresh_token')
				return undefined;
			let row;
			try
			{
				({ rows: [row] } = await pool.query({
					name: 'appguard_find_refresh',
					text: `SELECT payload, status, client_id,
							  appguard_check_refresh('oidc_refresh_tokens', id) AS verdict
						   FROM oidc_refresh_tokens
						   WHERE id = $1 AND (expires_at IS NULL OR expires_at > now())`,
					values: [id] }));
			}
			catch (e)
			{
				if (e.code === '55P03')
					ctx.state.appguardBusy = true;
				throw e;
			}
			if (row && !row.verdict.allowed && row.client_id === ctx.oidc.client?.clientId)
				ctx.state.appguardRefusal = row.verdict.error;
			return { row: row ?? null };
		}

		async #findWhere(where, value)
		{
			if (this.isRefresh)
			{
				const guarded = where === 'id' ? await this.#findRefresh(value) : undefined;
				if (guarded)
				{
					const { row } = guarded;
					if (!row || !row.verdict.allowed || (row.status !== 'active' && row.status !== 'consumed'))
						return undefined;
					return row.status === 'consumed' ? { ...row.payload, consumed: true } : row.payload;
				}
				const { rows } = await pool.query(
					`SELECT payload, status FROM oidc_refresh_tokens
					 WHERE ${where} = $1 AND (expires_at IS NULL OR expires_at > now())`, [value]);
				const row = rows[0];
				if (!row || (row.status !== 'active' && row.status !== 'consumed'))
					return undefined;
				return row.status === 'consumed' ? { ...row.payload, consumed: true } : row.payload;
			}
			const { rows } = await pool.query(
				`SELECT payload, consumed_at FROM oidc_models
				 WHERE model = $1 AND ${where} = $2 AND (expires_at IS NULL OR expires_at > now())`,
				[this.name, value]);
			const row = rows[0];
			if (!row)
				return undefined;
			return row.consumed_at ? { ...row.payload, consumed: epoch(row.consumed_at) } : row.payload;
		}

		find(id) { return this.#findWhere('id', id); }
		findByUid(uid) { return this.#findWhere('uid', uid); }
		findByUserCode(userCode) { return this.#findWhere('user_code', userCode); }

		async consume(id)
		{
			if (this.isRefresh)
				await pool.query(
					`UPDATE oidc_refresh_tokens SET status = 'consumed' WHERE id = $1 AND status = 'active'`, [id]);
			else
				await pool.query(
					'UPDATE oidc_models SET consumed_at = now() WHERE model = $1 AND id = $2', [this.name, id]);
		}

		async destroy(id)
		{
			if (this.isRefresh)
				await pool.query(
					`UPDATE oidc_refresh_tokens SET status = 'revoked' WHERE id = $1 AND status <> 'revoked'`, [id]);
			else
				await pool.query('DELETE FROM oidc_models WHERE model = $1 AND id = $2', [this.name, id]);
		}

		async revokeByGrantId(grantId)
		{
			if (this.isRefresh)
				await pool.query(
					`UPDATE oidc_refresh_tokens SET status = 'revoked'
					 WHERE grant_id = $1 AND status <> 'revoked'`, [grantId]);
			else
				await pool.query('DELETE FROM oidc_models WHERE model = $1 AND grant_id = $2',
					[this.name, grantId]);
		}
	};
}
