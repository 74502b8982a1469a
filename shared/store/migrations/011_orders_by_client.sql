-- Who placed each order (the principal's subject, else the client's IP: the scope of its Idempotency-Key),
-- so GET /api/orders lists a caller's own orders newest first and DELETE cancels only the caller's own.
-- Neither column ever changes after the insert, so the index keeps status updates HOT. Orders placed before
-- this migration have no client: no caller lists or cancels them.
ALTER TABLE orders ADD COLUMN client text;
CREATE INDEX orders_by_client ON orders (client, created_at DESC, id DESC) WHERE client IS NOT NULL;

-- A cancelled order is as finished as a confirmed one: out of the open orders' index.
DROP INDEX orders_open_by_created;
CREATE INDEX orders_open_by_created ON orders (created_at) WHERE status NOT IN ('confirmed', 'failed', 'cancelled');
