"""The normalizer-enricher: zeek-raw -> core Transformer -> zeek-normalized (+ zeek-dlq), exactly-once by default.

Modules: `service` (the consume -> transform -> produce loop, rebalance and shutdown), `transactions`
(exactly-once output: one transactional producer per instance), `at_least_once` (the idempotent option),
`batch` (when a batch ends, what it covered), `dlq` (lineage and dead-letter headers), `cli`.
"""
