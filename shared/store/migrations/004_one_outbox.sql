-- One commit-then-publish mechanism for every process (shared/outbox.py). A transaction that changes an order
-- writes its messages to `outbox`; rows are deleted once Kafka has acknowledged them, so the table holds only
-- what is still to publish (no published_at, no published_seq mark per event).

-- Events a stage committed and (per published_seq) never published: into the outbox, in seq order.
INSERT INTO outbox (topic, key, payload, correlation_id)
SELECT 'order.status', o.id::text, e.value, o.correlation_id
FROM orders o CROSS JOIN LATERAL jsonb_array_elements(o.logs) AS e(value)
WHERE o.published_seq < o.seq AND (e.value ->> 'seq')::int > o.published_seq
ORDER BY o.id, (e.value ->> 'seq')::int;

DELETE FROM outbox WHERE published_at IS NOT NULL;
ALTER TABLE outbox DROP COLUMN published_at;  -- drops outbox_unpublished with it
ALTER TABLE orders DROP COLUMN published_seq;  -- drops orders_unpublished with it

-- A writer publishes the older rows of the orders it writes before its own: found by key.
CREATE INDEX outbox_key ON outbox (key);

-- Admission control (ingress/admission.py): each stage process says every second how much it can take.
CREATE TABLE stage_members (
    member      text PRIMARY KEY,           -- host:pid:stage
    stage       text NOT NULL,              -- router | executor
    slots       integer NOT NULL,           -- jobs it runs at once
    busy        integer NOT NULL,           -- jobs running now
    service_ms  double precision NOT NULL,  -- how long one job takes (recent average)
    rate        double precision NOT NULL,  -- jobs finished per second (recent average)
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A row holds the message's bytes exactly as the writer serialised them (JSON text): what the writer sends
-- and what the relay sends are the same bytes, and nothing parses JSON on the way in.
ALTER TABLE outbox ALTER COLUMN payload TYPE text USING payload::text;
