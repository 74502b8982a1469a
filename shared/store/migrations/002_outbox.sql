-- The transactional outbox. Ingress writes an order and the messages that announce it in ONE
-- transaction; a relay publishes unpublished rows to Kafka in id order and marks them only after the broker
-- acknowledged them. A crash between commit and publish therefore delays an order, never loses it.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    topic          text NOT NULL,          -- catalogue name (shared/topics.py), without TOPIC_PREFIX
    key            text NOT NULL,          -- the orderId: every topic is keyed by it
    payload        jsonb NOT NULL,
    correlation_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);

-- What the relay (FOR UPDATE SKIP LOCKED, in id order) and the backlog probe read: the unpublished rows.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Operators and support look orders up by the client's own reference.
CREATE INDEX orders_client_order_id ON orders (client_order_id) WHERE client_order_id IS NOT NULL;
