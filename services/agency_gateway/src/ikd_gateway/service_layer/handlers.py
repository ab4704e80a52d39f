"""The gateway's use cases, by seam: `stream` (profile and consent records, retention),
`prefill` (answers and denials), `webhooks` (endpoints and delivery), `context` (what each
needs). Re-exported here for the entrypoints."""

from ikd_gateway.service_layer.context import Clock, GatewayContext, UnitOfWorkFactory, utcnow
from ikd_gateway.service_layer.prefill import (
    Denial,
    DeniedRequest,
    PrefillAnswer,
    prefill,
    record_denial,
    resolve_citizen,
    resolve_service,
)
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    StreamResult,
    apply_consent_batch,
    apply_consents,
    apply_profile,
    apply_profiles,
    sweep_retention,
)

__all__ = [
    "Clock",
    "ConsentRecord",
    "Denial",
    "DeniedRequest",
    "GatewayContext",
    "PrefillAnswer",
    "ProfileRecord",
    "StreamResult",
    "UnitOfWorkFactory",
    "apply_consent_batch",
    "apply_consents",
    "apply_profile",
    "apply_profiles",
    "prefill",
    "record_denial",
    "resolve_citizen",
    "resolve_service",
    "sweep_retention",
    "utcnow",
]
