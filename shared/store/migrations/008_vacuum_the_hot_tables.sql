-- The outbox lives a few milliseconds per row (inserted, sent, deleted) and each transition rewrites an order
-- row: at 300 orders/s a minute leaves ~100,000 dead outbox rows behind ~500 live ones and ~60,000 dead
-- order versions. Autovacuum's defaults (20 % of the table) waited a full minute, and every scan of the
-- outbox (the relay, the per-order probe, the admission's age probe) and of the open orders (the sweep,
-- admission) slowed as the run went on. Vacuum these two by a fixed count of dead rows, without throttling.
-- (How soon it looks is the server's autovacuum_naptime: docs/operations.md.)
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000
);
ALTER TABLE orders SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0
);
