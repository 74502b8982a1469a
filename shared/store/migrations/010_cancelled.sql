-- `cancelled`: a terminal status, reached only from pending, routing or building (DELETE /api/orders/{id}).
-- Alone in its file: a new enum value cannot be used in the transaction that adds it (011 uses it).
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'cancelled';
