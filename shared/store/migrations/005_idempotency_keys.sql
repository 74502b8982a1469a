-- Idempotency-Key, durable with the order it names (ingress/repository.py): the key's row is written in the
-- same statement as the order, so a key exists exactly when its order committed. A request whose commit was
-- ambiguous (a lost connection during COMMIT) can therefore be retried with its key: it either replays the
-- committed order or places it now, never a second one. Redis no longer holds keys.
CREATE TABLE idempotency_keys (
    scope       text NOT NULL,         -- the client the key belongs to (the auth principal; the IP today)
    key_hash    bytea NOT NULL,        -- sha256 of the Idempotency-Key header
    fingerprint text NOT NULL,         -- digest of the canonical order body (PlaceOrder.fingerprint)
    order_id    uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),  -- Postgres's clock: expiry never mixes clocks
    PRIMARY KEY (scope, key_hash)
);

-- Expired keys are pruned in order of age (ingress/service.py).
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
