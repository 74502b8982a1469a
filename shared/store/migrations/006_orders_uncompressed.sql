-- An order's row (its event log included) stays a few KiB; by default Postgres compresses any row over
-- ~2 KiB, so every transition decompressed and recompressed the whole log. Rows up to a page's worth are
-- now kept inline as written.
ALTER TABLE orders SET (toast_tuple_target = 8160);
