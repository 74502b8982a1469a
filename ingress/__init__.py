"""Ingress: the HTTP API that accepts market orders and answers questions about them."""
