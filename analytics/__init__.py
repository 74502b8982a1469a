"""An example consumer of the public `order.status` stream: what an analytics team would build on it."""
