"""The order domain: statuses and their transitions, the order, the messages that carry its steps, and the
errors. Pure: nothing here does I/O."""
