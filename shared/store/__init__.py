"""Postgres: the pool and migrations, the orders' rows, and the group-committed steps of orders."""
