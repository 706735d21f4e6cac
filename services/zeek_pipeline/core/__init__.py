"""The pure transform library: Kafka message body -> three-layer document, with no Kafka and no I/O.

decode (message forms, reject reasons) -> normalize (promotions of config/normalization.json) ->
enrich (time parts, locality, direction, service, Community ID) -> serialize; `transform.Transformer`
glues them together for the normalizer service and the offline `normalize` command.
"""
