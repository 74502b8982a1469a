"""The venues an order can be swapped on: the `Venue` protocol, and the mock Raydium and Meteora behind it."""
