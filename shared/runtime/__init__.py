"""What every process runs on: settings, logging, metrics, health checks, the clock, tasks, the CLI."""
