-- Settlement by a conflicting write. The executor's sweep used to decide that a submission never landed by
-- reading the ledger after its valid_until: a swap whose INSERT passed the window check and then stalled
-- before COMMIT was invisible to that read, so the order was marked failed (or retried) while the venue
-- swapped. Now the sweep writes an `expired` row under the order's swap key for the attempt it settles: it
-- waits on the unique key for any swap still in flight, and once it is in, that attempt can never land (its
-- INSERT conflicts). Whichever of the two writes comes second sees the first. A later attempt's swap takes
-- the key over from an earlier attempt's `expired` row; nothing takes it from a swap.
ALTER TABLE mock_dex_swaps
    ADD COLUMN kind text NOT NULL DEFAULT 'swap' CHECK (kind IN ('swap', 'expired')),
    ADD COLUMN attempt integer,
    ALTER COLUMN dex DROP NOT NULL,
    ALTER COLUMN amount_in DROP NOT NULL,
    ALTER COLUMN amount_out DROP NOT NULL,
    ALTER COLUMN executed_price DROP NOT NULL,
    ALTER COLUMN tx_hash DROP NOT NULL,
    ADD CONSTRAINT mock_dex_swaps_a_swap_is_complete CHECK (
        kind = 'expired'
        OR (dex IS NOT NULL AND amount_in IS NOT NULL AND amount_out IS NOT NULL
            AND executed_price IS NOT NULL AND tx_hash IS NOT NULL)
    );
