-- Orders: the durable record behind GET and the WebSocket snapshot. Every stage advances an order with a
-- conditional UPDATE on (id, seq), so a redelivered Kafka message can never apply twice.
CREATE TYPE order_status AS ENUM ('pending', 'routing', 'building', 'submitted', 'confirmed', 'failed');

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    type            text NOT NULL CHECK (type = 'market'),
    token_in        text NOT NULL,
    token_out       text NOT NULL,
    amount_in       numeric NOT NULL CHECK (amount_in > 0),
    slippage        numeric NOT NULL CHECK (slippage > 0 AND slippage <= 0.5),
    status          order_status NOT NULL DEFAULT 'pending',
    seq             integer NOT NULL DEFAULT 1 CHECK (seq >= 1),
    attempt         integer NOT NULL DEFAULT 0,
    dex_used        text,
    raydium_quote   jsonb,
    meteora_quote   jsonb,
    executed_price  numeric,
    amount_out      numeric,
    tx_hash         text,
    failure_reason  text,
    error           text,
    logs            jsonb NOT NULL DEFAULT '[]'::jsonb,
    correlation_id  text,
    client_order_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The sweeper and the deadline scan look only at orders that are not terminal yet.
CREATE INDEX orders_open_by_created ON orders (created_at) WHERE status NOT IN ('confirmed', 'failed');
CREATE INDEX orders_created_at ON orders (created_at);

-- The mock DEX's ledger: one row per swap that really happened, keyed by the swap's idempotency key.
-- It belongs to the mock venue, not to the engine; tests read it to prove at most one swap per order.
CREATE TABLE mock_dex_swaps (
    idempotency_key text PRIMARY KEY,
    order_id        uuid NOT NULL,
    dex             text NOT NULL,
    amount_in       numeric NOT NULL,
    amount_out      numeric NOT NULL,
    executed_price  numeric NOT NULL,
    tx_hash         text NOT NULL UNIQUE,
    executed_at     timestamptz NOT NULL DEFAULT now()
);
