"""kopf operator for the ZeekPipeline custom resource."""
