-- The executor's sweeps look for open orders that have not moved for a while (a swap window passed, a lost
-- message). They filtered every open order's row, once a second each: ~10 ms per sweep with 3,000 orders in
-- flight, growing with them. With this index (and orders_open_by_created) a sweep reads only the orders old
-- enough to be due. Each step already rewrites every index entry of the row (the open orders' predicate
-- names `status`), so this one adds one entry per step.
-- Building it blocks writes to `orders` meanwhile: on a large live table, first run the same statement with
-- CREATE INDEX CONCURRENTLY by hand; this one then finds it there.
CREATE INDEX IF NOT EXISTS orders_open_by_updated ON orders (updated_at) WHERE status NOT IN ('confirmed', 'failed', 'cancelled');
