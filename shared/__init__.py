"""Code every service shares: settings, event schemas, topics, database access, the mock DEX, logging."""
