"""What every long-running service shares: logging, signals, counters, probes, status records."""
