"""The health service: a FastAPI dashboard and JSON API over the status channel and Kafka consumer lag.

It holds no state that matters: on start it rebuilds its view from the compacted status topic and the
AdminClient, and keeps only a 15-minute in-memory history for the throughput chart and the verdict's trends.
"""
