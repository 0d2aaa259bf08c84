"""The PostgreSQL store's functions, created after the migrations (postgres_schema)."""

from __future__ import annotations

# The per-poll and per-article calls as functions: one round trip each, atomic (a function
# called by one statement runs in that statement's transaction), and their advisory locks
# last until it ends. Replaced at every start, so they always match this release.
FUNCTIONS = """
CREATE OR REPLACE FUNCTION ingestor_register_fingerprint(
    p_id TEXT, p_scheme TEXT, p_signature BYTEA, p_bands BIGINT[], p_at DOUBLE PRECISION
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lsh_bands WHERE record_id = p_id AND NOT (band_key = ANY(p_bands));
    INSERT INTO lsh_bands SELECT k, p_id FROM unnest(p_bands) AS k ON CONFLICT DO NOTHING;
    INSERT INTO fingerprints VALUES (p_id, p_scheme, p_signature, p_at)
        ON CONFLICT (record_id) DO UPDATE SET scheme = excluded.scheme,
        signature = excluded.signature, ingested_at = excluded.ingested_at;
END $$;

-- Claim feed polls: the feed's lease, then its host's (hosts go to one instance at a time).
-- Feeds another transaction is claiming right now are skipped (not returned).
CREATE OR REPLACE FUNCTION ingestor_claim_feeds(
    p_ids TEXT[], p_hosts TEXT[], p_blank TEXT[], p_me TEXT, p_now DOUBLE PRECISION,
    p_until DOUBLE PRECISION, p_force BOOLEAN
) RETURNS TABLE (r_feed TEXT, r_data TEXT, r_wait DOUBLE PRECISION, r_why TEXT,
                 r_took_host BOOLEAN) LANGUAGE plpgsql AS $$
DECLARE
    f RECORD;
    allowed DOUBLE PRECISION;
BEGIN
    INSERT INTO feeds (feed_id, data, host) SELECT * FROM unnest(p_ids, p_blank, p_hosts)
        ON CONFLICT (feed_id) DO NOTHING;
    FOR f IN SELECT feeds.feed_id, feeds.data, feeds.next_due, feeds.owner, feeds.lease_until,
                    req.host
             FROM feeds JOIN unnest(p_ids, p_hosts) AS req(id, host) ON req.id = feeds.feed_id
             FOR UPDATE OF feeds SKIP LOCKED
    LOOP
        r_feed := f.feed_id; r_data := NULL; r_wait := NULL; r_why := NULL;
        r_took_host := false;
        IF f.owner IS NOT NULL AND f.owner <> p_me AND f.lease_until > p_now THEN
            r_wait := f.lease_until; r_why := 'being polled by instance ' || f.owner;
        ELSIF NOT p_force AND f.next_due > p_now THEN
            r_wait := f.next_due; r_why := 'polled recently by another instance';
        ELSE
            INSERT INTO hosts AS h (host, owner, lease_until) VALUES (f.host, p_me, p_until)
                ON CONFLICT (host) DO UPDATE SET owner = excluded.owner,
                lease_until = excluded.lease_until
                WHERE h.owner IS NULL OR h.owner = excluded.owner OR h.lease_until <= p_now
                RETURNING h.next_allowed_at INTO allowed;
            IF NOT FOUND THEN
                r_wait := p_now + 2;
                r_why := 'its host ' || f.host || ' is leased by another instance';
            ELSE
                r_took_host := true;
                IF allowed > p_now THEN
                    r_wait := allowed; r_why := 'its host ' || f.host || ' asked for a pause';
                ELSE
                    UPDATE feeds SET owner = p_me, lease_until = p_until
                        WHERE feeds.feed_id = f.feed_id;
                    r_data := f.data;
                END IF;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- Claim up to p_counts[i] due items of each host p_hosts[i], taking the host's lease first
-- (the empty host, articles with no page to fetch, needs none). One row per item, then one
-- per host: r_taken (the host is ours) and r_next (its earliest unclaimed item, or when
-- it may be sent the next request).
CREATE OR REPLACE FUNCTION ingestor_claim_articles(
    p_hosts TEXT[], p_counts INTEGER[], p_me TEXT, p_now DOUBLE PRECISION,
    p_until DOUBLE PRECISION
) RETURNS TABLE (r_host TEXT, r_taken BOOLEAN, r_next DOUBLE PRECISION, r_item BIGINT,
                 r_feed TEXT, r_canonical TEXT, r_payload TEXT, r_update BOOLEAN,
                 r_attempts INTEGER, r_enqueued DOUBLE PRECISION, r_error TEXT, r_known TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    i INTEGER;
    allowed DOUBLE PRECISION;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_hosts), 0) LOOP
        r_host := p_hosts[i]; r_next := NULL; r_taken := true; allowed := 0;
        IF r_host <> '' THEN
            INSERT INTO hosts AS h (host, owner, lease_until) VALUES (r_host, p_me, p_until)
                ON CONFLICT (host) DO UPDATE SET owner = excluded.owner,
                lease_until = excluded.lease_until
                WHERE h.owner IS NULL OR h.owner = excluded.owner OR h.lease_until <= p_now
                RETURNING h.next_allowed_at INTO allowed;
            r_taken := FOUND;
        END IF;
        IF r_taken AND allowed <= p_now THEN
            FOR r_item, r_feed, r_canonical, r_payload, r_update, r_attempts, r_enqueued,
                r_error IN
                UPDATE frontier f SET owner = p_me, lease_until = p_until
                WHERE f.item_id IN (
                    SELECT q.item_id FROM frontier q WHERE q.host = r_host
                    AND q.not_before <= p_now AND q.lease_until <= p_now
                    ORDER BY q.not_before, q.item_id LIMIT p_counts[i] FOR UPDATE SKIP LOCKED)
                RETURNING f.item_id, f.feed_id, f.canonical_url, f.payload, f.is_update,
                          f.attempts, f.enqueued_at, f.last_error
            LOOP
                SELECT rr.record_id INTO r_known FROM records rr
                    WHERE rr.canonical_url = r_canonical AND rr.done;
                RETURN NEXT;
            END LOOP;
            SELECT min(q.not_before) INTO r_next FROM frontier q
                WHERE q.host = r_host AND q.lease_until <= p_now;
        ELSIF r_taken THEN
            r_next := allowed;
        END IF;
        r_item := NULL; r_feed := NULL; r_canonical := NULL; r_payload := NULL;
        r_update := NULL; r_attempts := NULL; r_enqueued := NULL; r_error := NULL;
        r_known := NULL;
        RETURN NEXT;
    END LOOP;
END $$;

-- The daemon's schedule, shared: claim up to p_limit due feeds that no other live instance
-- holds, on hosts no other live instance holds, earliest first; one row per feed claimed.
CREATE OR REPLACE FUNCTION ingestor_claim_due_feeds(
    p_me TEXT, p_now DOUBLE PRECISION, p_until DOUBLE PRECISION, p_limit INTEGER
) RETURNS TABLE (r_feed TEXT, r_data TEXT) LANGUAGE plpgsql AS $$
DECLARE
    f RECORD;
BEGIN
    FOR f IN SELECT feeds.feed_id, feeds.data, feeds.host FROM feeds
             LEFT JOIN hosts h ON h.host = feeds.host
             WHERE feeds.next_due <= p_now
             AND (feeds.owner IS NULL OR feeds.lease_until <= p_now)
             AND (h.owner IS NULL OR h.owner = p_me OR h.lease_until <= p_now)
             AND coalesce(h.next_allowed_at, 0) <= p_now
             ORDER BY feeds.next_due LIMIT p_limit
             FOR UPDATE OF feeds SKIP LOCKED
    LOOP
        IF f.host <> '' THEN
            INSERT INTO hosts AS h (host, owner, lease_until) VALUES (f.host, p_me, p_until)
                ON CONFLICT (host) DO UPDATE SET owner = excluded.owner,
                lease_until = excluded.lease_until
                WHERE h.owner IS NULL OR h.owner = excluded.owner OR h.lease_until <= p_now;
            CONTINUE WHEN NOT FOUND;  -- taken by another instance a moment ago
        END IF;
        UPDATE feeds SET owner = p_me, lease_until = p_until WHERE feeds.feed_id = f.feed_id;
        r_feed := f.feed_id; r_data := f.data;
        RETURN NEXT;
    END LOOP;
END $$;

-- Reserve a record's location and claim its body for dedup. Two instances finishing near
-- duplicates at once serialize on the LSH band keys, so the second sees the first's claim.
CREATE OR REPLACE FUNCTION ingestor_prepare_article(
    p_id TEXT, p_canonical TEXT, p_location TEXT, p_now DOUBLE PRECISION, p_hash TEXT,
    p_scheme TEXT, p_bands BIGINT[], p_since DOUBLE PRECISION, p_signature BYTEA,
    p_want_signature BOOLEAN
) RETURNS TABLE (r_inserted BOOLEAN, r_canonical TEXT, r_location TEXT, r_done BOOLEAN,
                 r_hash TEXT, r_first DOUBLE PRECISION, r_exact TEXT, r_ids TEXT[],
                 r_signatures BYTEA[], r_times DOUBLE PRECISION[], r_old_signature BYTEA,
                 r_deleted BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_hash IS NOT NULL AND cardinality(p_bands) > 0 THEN
        PERFORM pg_advisory_xact_lock(k) FROM unnest(p_bands) AS k ORDER BY k;
    END IF;
    INSERT INTO records (record_id, canonical_url, location, done, first_ingested)
        VALUES (p_id, p_canonical, p_location, false, p_now) ON CONFLICT DO NOTHING;
    r_inserted := FOUND;
    SELECT canonical_url, location, done, content_hash, first_ingested, deleted_at IS NOT NULL
        INTO r_canonical, r_location, r_done, r_hash, r_first, r_deleted
        FROM records WHERE record_id = p_id;
    r_location := coalesce(r_location, p_location);
    IF p_want_signature AND NOT r_inserted THEN
        SELECT signature INTO r_old_signature FROM fingerprints
            WHERE record_id = p_id AND scheme = p_scheme;
    END IF;
    IF p_hash IS NOT NULL THEN
        INSERT INTO content_claims VALUES (p_hash, p_id) ON CONFLICT DO NOTHING;
        SELECT c.record_id INTO r_exact FROM content_claims c
            WHERE c.content_hash = p_hash AND c.record_id <> p_id;
        IF r_exact IS NULL AND cardinality(p_bands) > 0 THEN
            SELECT array_agg(x.record_id ORDER BY x.ingested_at, x.record_id),
                   array_agg(x.signature ORDER BY x.ingested_at, x.record_id),
                   array_agg(x.ingested_at ORDER BY x.ingested_at, x.record_id)
                INTO r_ids, r_signatures, r_times
                FROM (SELECT DISTINCT f.record_id, f.signature, f.ingested_at
                      FROM lsh_bands b JOIN fingerprints f ON f.record_id = b.record_id
                      WHERE b.band_key = ANY(p_bands) AND f.scheme = p_scheme
                      AND f.ingested_at >= p_since AND f.record_id <> p_id
                      ORDER BY f.ingested_at, f.record_id LIMIT 200) AS x;
        END IF;
        IF p_signature IS NOT NULL AND (r_inserted OR NOT r_done) THEN
            PERFORM ingestor_register_fingerprint(p_id, p_scheme, p_signature, p_bands, p_now);
        END IF;
    END IF;
    RETURN NEXT;
END $$;

-- The next journal seq and its line, in the caller's transaction: the counter row stays
-- locked until that commits, so lines become visible in seq order and none is skipped.
CREATE OR REPLACE FUNCTION ingestor_journal_append(
    p_op TEXT, p_record TEXT, p_path TEXT, p_hash TEXT, p_at DOUBLE PRECISION, p_writer TEXT
) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    r_seq BIGINT;
BEGIN
    UPDATE journal_counter SET seq = seq + 1 RETURNING seq INTO r_seq;
    INSERT INTO journal VALUES (r_seq, p_op, p_record, p_path, p_hash, p_at, p_writer);
    RETURN r_seq;
END $$;

-- A frontier item finished: its record (if written) done and journalled (the seq is
-- returned), a dropped reservation gone, the entry seen, the item out of the frontier.
CREATE OR REPLACE FUNCTION ingestor_commit_article(
    p_item BIGINT, p_feed TEXT, p_entry TEXT, p_at DOUBLE PRECISION, p_seen TEXT,
    p_entry_updated DOUBLE PRECISION, p_release TEXT, p_failure TEXT, p_failed_url TEXT,
    p_record TEXT, p_hash TEXT, p_record_feed TEXT, p_scheme TEXT, p_signature BYTEA,
    p_bands BIGINT[], p_committed DOUBLE PRECISION, p_op TEXT, p_writer TEXT,
    OUT r_seq BIGINT, OUT r_path TEXT
) LANGUAGE plpgsql AS $$
BEGIN
    IF p_record IS NOT NULL THEN
        UPDATE records SET done = true, content_hash = p_hash, feed_id = p_record_feed,
            committed_at = p_committed WHERE record_id = p_record RETURNING location INTO r_path;
        r_seq := ingestor_journal_append(p_op, p_record, r_path, p_hash, p_committed, p_writer);
        INSERT INTO content_claims VALUES (p_hash, p_record) ON CONFLICT DO NOTHING;
        IF p_signature IS NOT NULL THEN
            PERFORM ingestor_register_fingerprint(
                p_record, p_scheme, p_signature, p_bands, p_committed);
        END IF;
    END IF;
    IF p_release IS NOT NULL THEN
        DELETE FROM records WHERE record_id = p_release AND NOT done;
        DELETE FROM content_claims WHERE record_id = p_release;
        DELETE FROM lsh_bands WHERE record_id = p_release;
        DELETE FROM fingerprints WHERE record_id = p_release;
    END IF;
    INSERT INTO entries (feed_id, entry_key, seen_at, record_id, entry_updated)
        VALUES (p_feed, p_entry, p_at, coalesce(p_record, p_seen), p_entry_updated)
        ON CONFLICT (feed_id, entry_key) DO UPDATE SET seen_at = excluded.seen_at,
        record_id = coalesce(excluded.record_id, entries.record_id),
        entry_updated = coalesce(excluded.entry_updated, entries.entry_updated);
    DELETE FROM frontier WHERE item_id = p_item;
    IF p_failure IS NOT NULL THEN
        INSERT INTO article_failures VALUES (p_feed, p_failed_url, p_failure, p_at)
            ON CONFLICT (feed_id) DO UPDATE SET url = excluded.url, error = excluded.error,
            at = excluded.at;
    END IF;
END $$;
"""
