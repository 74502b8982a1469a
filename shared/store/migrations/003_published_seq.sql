-- Which of an order's events have reached `order.status`. A stage commits an event (the conditional
-- UPDATE) and then publishes it; if it dies in between, the executor's sweep publishes the events above
-- published_seq from the order's logs. Rows that exist already were published by the stage that wrote them.
ALTER TABLE orders ADD COLUMN published_seq integer;
UPDATE orders SET published_seq = seq;
ALTER TABLE orders ALTER COLUMN published_seq SET DEFAULT 1, ALTER COLUMN published_seq SET NOT NULL;
CREATE INDEX orders_unpublished ON orders (updated_at) WHERE published_seq < seq;
