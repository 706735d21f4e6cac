"""Thin confluent-kafka helpers: client configuration from settings, topic management, errors."""
