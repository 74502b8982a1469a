-- A row Kafka refuses for good (larger than the producer's max request, an invalid topic) is parked instead
-- of being retried with its whole batch forever: `parked_at` and the broker's `error` say why. The relay and
-- the admission's age probe skip it and the later rows of its order (sending those would skip a seq); a
-- writer that writes the order again still tries it first, so once the cause is fixed (say, a larger
-- max.request.size) the order's rows flow again. `UPDATE outbox SET parked_at = NULL` releases them at once.
ALTER TABLE outbox ADD COLUMN parked_at timestamptz, ADD COLUMN error text;
CREATE INDEX outbox_parked ON outbox (key, id) WHERE parked_at IS NOT NULL;
