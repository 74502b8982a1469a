"""Notifier: streams each order's status events to WebSocket clients."""
