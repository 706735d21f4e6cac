"""One APIRouter per area: pages (the dashboard), api (JSON under /api/v1), probes (/healthz, /readyz, /metrics)."""
