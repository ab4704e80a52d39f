"""Event documentation generated from the models: JSON Schemas and an AsyncAPI 3 document.

`ikdctl docs generate` writes `docs/events/schemas/<ce type>.json` (JSON Schema 2020-12, `$id`
equal to the `ce_dataschema` producers set) and `docs/events/asyncapi.yaml` (AsyncAPI 3.0.0);
a unit test regenerates them and fails when the committed files are stale.

Everything here is derived from the topic registry (`topics.ALL_TOPICS` and the agency topic
template `topics.AGENCY`) and the pydantic
models, except what the models cannot say: who produces and who consumes each topic, and one
example per event type. Output is deterministic (registry order, sorted collections).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ikd_shared.events import access_v1, agency_v1, consent_v1, event_type_of, profile_v1
from ikd_shared.events.envelope import JSON, SPEC_VERSION
from ikd_shared.events.topics import (
    ACCESS,
    AGENCY,
    ALL_TOPICS,
    AUDIT_DEAD_LETTER,
    CONSENT,
    GATEWAY_DEAD_LETTER,
    PROFILE,
    WEBHOOK_DEAD_LETTER,
    TopicSpec,
)
from ikd_shared.legal import CODE_PATTERN, LegalBasis
from ikd_shared.nik import Sex, make_nik
from ikd_shared.pseudonym import PSEUDONYM_PATTERN, pseudonymize

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
LOCAL_BROKER = "127.0.0.1:19092"
SCHEMAS_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.yaml"
TOMBSTONE_NAME = "CitizenErased"
DOCUMENTED_TOPICS: tuple[TopicSpec, ...] = (*ALL_TOPICS, AGENCY)
"""The core topics, then the agency topic template (one topic per agency)."""

Schema = dict[str, Any]


def schema_id(event_type: str) -> str:
    """`$id` of an event type's JSON Schema; producers set it as `ce_dataschema`."""
    return f"urn:ikd:schema:{event_type}"


def schema_path(event_type: str) -> str:
    return f"{SCHEMAS_DIR}/{event_type}.json"


# ---------------------------------------------------------------------------------------------
# What the models cannot say: producers, consumers, descriptions and examples.


@dataclass(frozen=True, slots=True)
class Application:
    name: str
    label: str  # subject of a sentence: "The identity service"
    description: str
    consumer_group: Schema | None = None  # JSON Schema of its group id, when it consumes


IDENTITY = Application(
    "identity", "The identity service", "the identity service (services/identity), via its outbox"
)
GATEWAY = Application(
    "gateway",
    "Each agency gateway",
    "an agency gateway (services/agency_gateway), one deployment per agency",
    {
        "type": "string",
        "pattern": f"^ikd-gateway-{CODE_PATTERN[1:]}",
        "description": "one consumer group per agency: ikd-gateway-<agency code>",
    },
)
AGENCY_BACKEND = Application(
    "agency",
    "An agency backend",
    "an agency's own backend, outside the core zone, with its own Kafka principal",
    {
        "type": "string",
        "description": "the agency's own consumer group; its principal may use no other",
    },
)
AUDIT = Application(
    "audit",
    "The audit service",
    "the audit service (services/audit)",
    {"type": "string", "const": "ikd-audit"},
)

GATEWAY_SOURCE = {
    "type": "string",
    "pattern": f"^/ikd/gateway/{CODE_PATTERN[1:]}",
    "description": "the gateway that served, pushed or denied: /ikd/gateway/<agency code>",
    "examples": ["/ikd/gateway/bpjs-kesehatan"],
}
IDENTITY_SOURCE = {
    "type": "string",
    "const": profile_v1.SOURCE,
    "description": "the identity service",
}


@dataclass(frozen=True, slots=True)
class TopicRoles:
    producers: tuple[Application, ...]
    consumers: tuple[Application, ...]
    source: Schema | None  # ce_source of its events; None: records are not CloudEvents


ROLES: dict[str, TopicRoles] = {
    PROFILE.name: TopicRoles((IDENTITY,), (GATEWAY,), IDENTITY_SOURCE),
    CONSENT.name: TopicRoles((IDENTITY,), (GATEWAY,), IDENTITY_SOURCE),
    ACCESS.name: TopicRoles((GATEWAY,), (AUDIT,), GATEWAY_SOURCE),
    GATEWAY_DEAD_LETTER.name: TopicRoles((GATEWAY,), (), None),
    WEBHOOK_DEAD_LETTER.name: TopicRoles((GATEWAY,), (), None),
    AUDIT_DEAD_LETTER.name: TopicRoles((AUDIT,), (), None),
    AGENCY.name: TopicRoles((GATEWAY,), (AGENCY_BACKEND,), GATEWAY_SOURCE),
}
CORE_ZONE = (
    "Core zone only: read and written by the platform's own services under their own "
    "principals. Agency backends have no access; they read their agency topic "
    f"(`{AGENCY.name}`), call their gateway's API and receive its webhooks."
)

DEAD_LETTER_PAYLOADS: dict[str, str] = {
    GATEWAY_DEAD_LETTER.name: (
        "The original record's value, unchanged, with its original headers plus dlq_* headers."
    ),
    WEBHOOK_DEAD_LETTER.name: (
        "A JSON summary of the failed delivery: message_id, endpoint_id, agency, service, "
        "pseudonym, version, event_type, fields (names only), attempts, last_status, "
        "last_error, reason."
    ),
    AUDIT_DEAD_LETTER.name: (
        "The original access event's value, unchanged, with its original headers plus dlq_* "
        "headers."
    ),
}

SUMMARIES: dict[str, str] = {
    consent_v1.ConsentGranted.event_type: (
        "A citizen (or an MPP officer on the citizen's behalf) granted an agency a consent."
    ),
    consent_v1.ConsentRevoked.event_type: "A consent was revoked before it expired.",
    access_v1.AccessRecorded.event_type: (
        "An agency gateway read, pushed or denied citizen data; field names only, never values."
    ),
}

TOMBSTONE_DESCRIPTION = (
    "Erasure of a citizen from the compacted profile topic: a Kafka record with the citizen's "
    "pseudonym as key, CloudEvents headers (ce_type " + profile_v1.TOMBSTONE_TYPE + ") and a "
    "null value (no data, no content-type). It follows CitizenDied and CredentialRevoked. "
    "Delete everything held for that pseudonym."
)

PURGED_DESCRIPTION = (
    "The agency may hold nothing of the citizen any more (consent revoked or expired, retention "
    "over, death, revoked credential, erasure): a Kafka record with the citizen's pseudonym as "
    "key, CloudEvents headers (ce_type " + agency_v1.PURGED_TYPE + ") and a null value (no data, "
    "no content-type, no reason). Delete everything held for that pseudonym."
)


@dataclass(frozen=True, slots=True)
class Tombstone:
    event_type: str
    name: str
    description: str
    source: str


TOMBSTONES: dict[str, Tombstone] = {
    PROFILE.name: Tombstone(
        profile_v1.TOMBSTONE_TYPE, TOMBSTONE_NAME, TOMBSTONE_DESCRIPTION, profile_v1.SOURCE
    ),
    AGENCY.name: Tombstone(
        agency_v1.PURGED_TYPE,
        agency_v1.PURGED_NAME,
        PURGED_DESCRIPTION,
        agency_v1.source("bank-bjb"),
    ),
}

_EXAMPLE_TIME = dt.datetime(2026, 1, 15, 2, 30, tzinfo=dt.UTC)
_EXAMPLE_PSEUDONYM_KEY = b"example pseudonym key (not the platform's)"


def example_profile() -> profile_v1.CitizenProfile:
    """A fictitious citizen (valid NIK for a woman born 17 May 1990 in Kabupaten Cirebon)."""
    born = dt.date(1990, 5, 17)
    return profile_v1.CitizenProfile(
        nik=make_nik("320901", born, Sex.FEMALE, 1),
        full_name="Siti Rahmawati",
        place_of_birth="Cirebon",
        date_of_birth=born,
        sex=Sex.FEMALE,
        blood_type=profile_v1.BloodType.O,
        address=profile_v1.Address(
            street="Jl. Siliwangi No. 12",
            rt="003",
            rw="005",
            village="Sumber",
            district="Sumber",
            regency="Kabupaten Cirebon",
            province="Jawa Barat",
            postal_code="45611",
        ),
        religion=profile_v1.Religion.ISLAM,
        marital_status=profile_v1.MaritalStatus.KAWIN,
        occupation="Wiraswasta",
        nationality=profile_v1.Nationality.WNI,
        family_card_number="3209010101100001",
    )


def example_pseudonym() -> str:
    return pseudonymize(example_profile().nik, _EXAMPLE_PSEUDONYM_KEY)


def _example_consent(status: consent_v1.ConsentStatus) -> consent_v1.Consent:
    return consent_v1.Consent(
        consent_id=uuid.UUID("7f0c2a55-3b1e-4d8a-9c61-2f4b8e0d1a93"),
        pseudonym=example_pseudonym(),
        agency="bank-bjb",
        service="pembukaan-rekening",
        fields=["full_name", "address.street", "address.village", "occupation"],
        purpose_code="account-opening",
        purpose_text="Membuka rekening tabungan tanpa mengisi ulang data diri",
        starts_at=_EXAMPLE_TIME,
        expires_at=_EXAMPLE_TIME + dt.timedelta(days=365),
        status=status,
        granted_by=consent_v1.GrantedBy.CITIZEN,
        revoked_at=(
            _EXAMPLE_TIME + dt.timedelta(days=30)
            if status is consent_v1.ConsentStatus.REVOKED
            else None
        ),
    )


@functools.cache
def examples() -> dict[str, BaseModel]:
    """One example payload per event type, keyed by CloudEvents type."""
    pseudonym = example_pseudonym()
    active = _example_consent(consent_v1.ConsentStatus.ACTIVE)
    skck = profile_v1.Relationship(
        relationship_id=uuid.UUID("5d1f0c2a-7b3e-4a69-9e28-1c4b7a6d3f90"),
        kind=profile_v1.RelationshipKind.SERVICE_REQUEST,
        agency="polres-cirebon",
        service="skck",
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        starts_at=_EXAMPLE_TIME,
        expires_at=_EXAMPLE_TIME + dt.timedelta(days=1825),
    )
    aid = profile_v1.Relationship(
        relationship_id=uuid.UUID("8e2a6b1d-4c7f-4d05-b3a9-2f6e9c1d7a44"),
        kind=profile_v1.RelationshipKind.REGISTRATION,
        agency="dinsos-cirebon",
        service="social-assistance",
        legal_basis=LegalBasis.PUBLIC_TASK,
        legal_reference="UU 13/2011 Penanganan Fakir Miskin; Permensos 3/2021",
        starts_at=_EXAMPLE_TIME + dt.timedelta(days=3),
        expires_at=_EXAMPLE_TIME + dt.timedelta(days=3 + 1825),
    )
    items: list[BaseModel] = [
        profile_v1.ProfileVerified(
            pseudonym=pseudonym,
            version=1,
            profile=example_profile(),
            verified_at=_EXAMPLE_TIME,
            verified_by="disdukcapil-cirebon",
            changed_fields=list(profile_v1.PROFILE_FIELDS),
            relationships=[skck],
        ),
        profile_v1.ProfileUpdated(
            pseudonym=pseudonym,
            version=2,
            profile=example_profile(),
            verified_at=_EXAMPLE_TIME,
            updated_at=_EXAMPLE_TIME + dt.timedelta(days=2),
            changed_fields=["marital_status"],
            relationships=[skck],
        ),
        profile_v1.RelationshipsChanged(
            pseudonym=pseudonym,
            version=3,
            profile=example_profile(),
            verified_at=_EXAMPLE_TIME,
            changed_at=aid.starts_at,
            started=[aid],
            relationships=[skck, aid],
        ),
        profile_v1.CitizenDied(
            pseudonym=pseudonym,
            version=3,
            date_of_death=dt.date(2026, 3, 1),
            recorded_at=_EXAMPLE_TIME + dt.timedelta(days=47),
        ),
        profile_v1.CredentialRevoked(
            pseudonym=pseudonym,
            version=3,
            reason="credential reported lost",
            revoked_at=_EXAMPLE_TIME + dt.timedelta(days=10),
        ),
        consent_v1.ConsentGranted(
            pseudonym=pseudonym, consents_version=1, consent=active, active_consents=[active]
        ),
        consent_v1.ConsentRevoked(
            pseudonym=pseudonym,
            consents_version=2,
            consent=_example_consent(consent_v1.ConsentStatus.REVOKED),
            active_consents=[],
        ),
        access_v1.AccessRecorded(
            access_id=uuid.UUID("0b6a4f3e-8d2c-4e71-a5f9-6c3d2b1e0f48"),
            occurred_at=_EXAMPLE_TIME,
            agency="bank-bjb",
            service="pembukaan-rekening",
            pseudonym=pseudonym,
            fields=["address.street", "address.village", "full_name", "occupation"],
            purpose="account-opening",
            legal_basis=LegalBasis.CONSENT,
            channel=access_v1.Channel.PREFILL,
            outcome=access_v1.Outcome.SERVED,
            correlation_id="c0ffee00-counter-7",
        ),
        agency_v1.AgencyRecordChanged(
            agency="bank-bjb",
            pseudonym=pseudonym,
            version=2,
            verified_at=_EXAMPLE_TIME,
            changed_fields=["occupation"],
            services=[
                agency_v1.ServiceFields(
                    service="pembukaan-rekening",
                    purpose="account-opening",
                    legal_basis=LegalBasis.CONSENT,
                    fields={
                        "address.street": "Jl. Siliwangi No. 12",
                        "address.village": "Sumber",
                        "full_name": "Siti Rahmawati",
                        "occupation": "Wiraswasta",
                    },
                )
            ],
        ),
    ]
    return {event_type_of(type(item)): item for item in items}


# ---------------------------------------------------------------------------------------------
# JSON Schemas.


def event_models() -> Iterator[tuple[TopicSpec, type[BaseModel]]]:
    """Every (topic, event model) pair of the registry, in registry order."""
    for topic in DOCUMENTED_TOPICS:
        for model in topic.event_types:
            yield topic, model


def _description(model: type[BaseModel]) -> str:
    event_type = event_type_of(model)
    own = model.__dict__.get("__doc__")
    return SUMMARIES.get(event_type) or (own.strip() if own else model.__name__)


def _annotate(node: Any) -> None:
    """Say in the schema what the field types enforce but pydantic cannot express."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            nik = properties.get("nik")
            if isinstance(nik, dict) and nik.get("type") == "string":
                nik.setdefault("pattern", "^[0-9]{16}$")
                nik.setdefault(
                    "description",
                    "NIK: province, regency, district, birth date (+40 on the day for women), "
                    "serial",
                )
            pseudonym = properties.get("pseudonym")
            if isinstance(pseudonym, dict) and PSEUDONYM_PATTERN in json.dumps(pseudonym):
                pseudonym.setdefault(
                    "description",
                    "citizen pseudonym: lower-case hex HMAC-SHA256 of the NIK; equals the "
                    "record key",
                )
        for value in node.values():
            _annotate(value)
    elif isinstance(node, list):
        for value in node:
            _annotate(value)


def _model_schema(model: type[BaseModel]) -> Schema:
    schema = model.model_json_schema(mode="validation")
    _annotate(schema)
    return schema


def event_schema(topic: TopicSpec, model: type[BaseModel]) -> Schema:
    """The standalone JSON Schema (2020-12) of one event type's data."""
    event_type = event_type_of(model)
    schema = _model_schema(model)
    schema.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(event_type),
        "title": model.__name__,
        "description": (
            f"{_description(model)}\n\nData of CloudEvents type `{event_type}` on Kafka topic "
            f"`{topic.name}`; record key = the citizen pseudonym."
        ),
        **{name: value for name, value in schema.items() if name != "title"},
    }


def tombstone_schema(tombstone: Tombstone | None = None) -> Schema:
    tombstone = tombstone or TOMBSTONES[PROFILE.name]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(tombstone.event_type),
        "title": tombstone.name,
        "description": f"{tombstone.description}\n\nThe record value is null: no data.",
        "type": "null",
    }


def json_schemas() -> dict[str, Schema]:
    """Every event type's JSON Schema, tombstone included, keyed by CloudEvents type."""
    schemas = {event_type_of(model): event_schema(topic, model) for topic, model in event_models()}
    for tombstone in TOMBSTONES.values():
        schemas[tombstone.event_type] = tombstone_schema(tombstone)
    return schemas


# ---------------------------------------------------------------------------------------------
# AsyncAPI 3.0.0.


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            name: (
                value.replace("#/$defs/", "#/components/schemas/")
                if name == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for name, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(value) for value in node]
    return node


def _add_component(schemas: dict[str, Schema], name: str, schema: Schema) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r}")
    schemas[name] = schema


def _component_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {}
    for _topic, model in event_models():
        schema = _model_schema(model)
        for name, definition in schema.pop("$defs", {}).items():
            _add_component(schemas, name, _rewrite_refs(definition))
        schema["description"] = _description(model)
        _add_component(schemas, model.__name__, _rewrite_refs(schema))
    for tombstone in TOMBSTONES.values():
        _add_component(
            schemas, tombstone.name, {"type": "null", "description": "no data: the value is null"}
        )
    return dict(sorted(schemas.items()))


def _headers(event_type: str | None, roles: TopicRoles, *, data: bool) -> Schema:
    source = roles.source or {"type": "string"}
    properties: dict[str, Schema] = {
        "ce_specversion": {"type": "string", "const": SPEC_VERSION},
        "ce_id": {
            "type": "string",
            "description": "unique event id: deduplicate by it (delivery is at least once)",
        },
        "ce_source": {**source, "description": source.get("description", "the producer")},
        "ce_type": (
            {"type": "string", "const": event_type}
            if event_type
            else {"type": "string", "description": "the event type"}
        ),
        "ce_time": {
            "type": "string",
            "format": "date-time",
            "description": "when the event happened (RFC 3339, UTC)",
        },
    }
    required = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"]
    if data and event_type:
        properties["ce_dataschema"] = {
            "type": "string",
            "const": schema_id(event_type),
            "description": "`$id` of this event type's JSON Schema",
        }
        properties["content-type"] = {"type": "string", "const": JSON}
        required.append("content-type")
    return {
        "type": "object",
        "description": (
            "Kafka record headers (UTF-8): CloudEvents 1.0 attributes in binary content mode"
            + ("" if data else "; no content-type, as there is no data")
            + ". Other headers (for example W3C traceparent) may be present."
        ),
        "properties": properties,
        "required": required,
    }


def _key_binding(*, nullable: bool = False) -> Schema:
    key: Schema = {
        "type": "string",
        "pattern": PSEUDONYM_PATTERN,
        "description": (
            "citizen pseudonym: lower-case hex HMAC-SHA256 of the NIK under the platform's secret "
            "key; never the NIK. All of one citizen's records share a partition, in order."
        ),
    }
    if nullable:
        key = {"anyOf": [key, {"type": "null"}], "description": "the original record's key"}
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}


def _example_headers(event_type: str, source: str, *, data: bool) -> dict[str, str]:
    headers = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": str(uuid.uuid5(uuid.NAMESPACE_URL, schema_id(event_type))),
        "ce_source": source,
        "ce_type": event_type,
        "ce_time": _EXAMPLE_TIME.isoformat().replace("+00:00", "Z"),
    }
    if data:
        headers["ce_dataschema"] = schema_id(event_type)
        headers["content-type"] = JSON
    return headers


def _event_message(topic: TopicSpec, model: type[BaseModel], roles: TopicRoles) -> Schema:
    event_type = event_type_of(model)
    example = examples().get(event_type)
    if example is None:
        raise KeyError(f"add an example of {event_type} to ikd_dev.event_docs.examples()")
    source = "/ikd/gateway/bank-bjb" if roles.source is GATEWAY_SOURCE else profile_v1.SOURCE
    return {
        "name": event_type,
        "title": model.__name__,
        "summary": _description(model).splitlines()[0],
        "contentType": JSON,
        "headers": _headers(event_type, roles, data=True),
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        "bindings": _key_binding(),
        "description": (
            f"{_description(model)}\n\nStandalone JSON Schema: {schema_path(event_type)} "
            f"(`$id` {schema_id(event_type)})."
        ),
        "examples": [
            {
                "name": f"{model.__name__}Example",
                "headers": _example_headers(event_type, source, data=True),
                "payload": example.model_dump(mode="json"),
            }
        ],
    }


def _tombstone_message(roles: TopicRoles, tombstone: Tombstone) -> Schema:
    return {
        "name": tombstone.event_type,
        "title": tombstone.name,
        "summary": "Tombstone: the citizen is erased from the compacted topic (null value).",
        "description": (
            f"{tombstone.description}\n\nStandalone JSON Schema: "
            f"{schema_path(tombstone.event_type)}."
        ),
        "headers": _headers(tombstone.event_type, roles, data=False),
        "payload": {"$ref": f"#/components/schemas/{tombstone.name}"},
        "bindings": _key_binding(),
        "examples": [
            {
                "name": f"{tombstone.name}Example",
                "headers": _example_headers(tombstone.event_type, tombstone.source, data=False),
            }
        ],
    }


def _dead_letter_message(topic: TopicSpec) -> Schema:
    dlq = {
        "dlq_reason": {"type": "string", "description": "why the record was given up"},
        "dlq_service": {"type": "string", "description": "the service that gave it up"},
        "dlq_source_topic": {"type": "string", "description": "where the record came from"},
        "dlq_partition": {"type": "string", "description": "its partition there"},
        "dlq_offset": {"type": "string", "description": "its offset there"},
        "dlq_agency": {"type": "string", "description": "the agency (webhook dead letters)"},
    }
    return {
        "name": f"{topic.name}.record",
        "title": _message_name(topic),
        "summary": topic.description,
        "headers": {
            "type": "object",
            "description": "dlq_* headers (UTF-8) beside the original record's headers",
            "properties": dlq,
            "required": ["dlq_reason", "dlq_service"],
        },
        "payload": {"description": DEAD_LETTER_PAYLOADS.get(topic.name, topic.description)},
        "bindings": _key_binding(nullable=True),
    }


def _message_name(topic: TopicSpec) -> str:
    words = topic.name.split(".")[1:-1]
    return "".join(word.title() for word in words).replace("Deadletter", "DeadLetter")


def _channel_id(topic: TopicSpec) -> str:
    return topic.name.replace("{", "").replace("}", "")  # a component key has no braces


def _topic_configuration(topic: TopicSpec) -> Schema:
    config = topic.topic_config()
    binding: Schema = {"cleanup.policy": [value for value in config["cleanup.policy"].split(",")]}
    for name in ("retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes"):
        if name in config:
            binding[name] = int(config[name])
    return binding


def _channel_messages(topic: TopicSpec, roles: TopicRoles) -> dict[str, Schema]:
    messages = {model.__name__: _event_message(topic, model, roles) for model in topic.event_types}
    tombstone = TOMBSTONES.get(topic.name)
    if tombstone is not None:
        messages[tombstone.name] = _tombstone_message(roles, tombstone)
    if not messages:
        messages[_message_name(topic)] = _dead_letter_message(topic)
    return messages


def _channel(topic: TopicSpec, roles: TopicRoles, message_names: Iterable[str]) -> Schema:
    config = ", ".join(f"{name}={value}" for name, value in topic.topic_config().items())
    producers = "; ".join(app.description for app in roles.producers)
    consumers = "; ".join(app.description for app in roles.consumers) or "operators"
    zone = (
        "One topic per agency; only that agency's principal may read it, in its own group."
        if topic is AGENCY
        else CORE_ZONE
    )
    channel: Schema = {
        "address": topic.name,
        "title": topic.name,
        "summary": topic.description,
        "description": (
            f"{topic.description}.\n\nProduced by {producers}. Consumed by {consumers}.\n"
            f"{zone}\n"
            f"Partitions: {topic.partitions}. Topic configuration: {config}.\n"
            "A deployment may prefix every topic name (IKD_KAFKA_TOPIC_PREFIX)."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in message_names},
        "bindings": {
            "kafka": {
                "topic": topic.name,
                "partitions": topic.partitions,
                "topicConfiguration": _topic_configuration(topic),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if topic is AGENCY:
        channel["parameters"] = {
            "agency": {
                "description": "the agency's code in the MPP policy (e.g. bank-bjb)",
                "examples": ["bank-bjb", "bpjs-kesehatan"],
            }
        }
    return channel


def _operation_id(app: Application, action: str, topic: TopicSpec) -> str:
    return f"{app.name}.{action}.{_channel_id(topic)}"


def _operation(
    app: Application, action: str, topic: TopicSpec, message_names: Iterable[str]
) -> Schema:
    channel = _channel_id(topic)
    verb = "publishes to" if action == "send" else "consumes"
    operation: Schema = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": f"{app.name} {verb} {topic.name}",
        "summary": f"{app.label} {verb} {topic.name}.",
        "tags": [{"name": app.name}],
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in message_names],
    }
    if action == "receive" and app.consumer_group is not None:
        operation["bindings"] = {
            "kafka": {"groupId": app.consumer_group, "bindingVersion": KAFKA_BINDING_VERSION}
        }
    return operation


def _info_description() -> str:
    lines = [
        "Kafka events of the IKD MPP platform: an IKD-verified citizen profile flows once to "
        "every agency entitled to it, consents travel beside it, and every read, push or denial "
        "of citizen data is recorded for audit.",
        "",
        "## Trust zones: what an agency may consume",
        "",
        f"An agency backend consumes one topic: its agency topic `{AGENCY.name}`, in its own "
        "consumer group, with its own credentials. Each record holds, for one citizen, exactly "
        "what the agency's services may use now (the policy, and the citizen's consent where a "
        "service needs one): the same fields as a prefill answer or a webhook body. The topic is "
        "compacted by pseudonym, so its latest record per citizen is the agency's whole current "
        "view of that citizen: replace what you hold with it. A tombstone (`ce_type` "
        f"`{agency_v1.PURGED_TYPE}`, null value) says the agency may hold nothing of the citizen "
        "any more: delete everything. Records of one citizen arrive in order; deduplicate by "
        "`ce_id`. Every record published to an agency topic is recorded in the audit log "
        "(channel `agency_topic`).",
        "",
        "The other topics are core zone only: the platform's own services read and write them "
        "under their own principals; agency backends have no access to them.",
        "",
        "## Connecting: TLS and SASL/SCRAM-SHA-512",
        "",
        "Every client connects with `security.protocol=SASL_SSL` and "
        "`sasl.mechanism=SCRAM-SHA-512`, trusting the platform's CA certificate, as its own "
        "principal (an agency backend: `agency-<agency>`, the credentials it received at "
        "onboarding). An unauthenticated client cannot connect; an authenticated one may do "
        "only what its ACLs allow, and the broker answers anything else with an authorisation "
        "error (docs/trust-zones.md lists each principal's rights).",
        "",
        "## Topics",
        "",
    ]
    for topic in DOCUMENTED_TOPICS:
        types = ", ".join(f"`{event_type_of(model)}`" for model in topic.event_types)
        tombstone = TOMBSTONES.get(topic.name)
        if tombstone is not None:
            types += f", `{tombstone.event_type}` (tombstone)"
        lines.append(
            f"- `{topic.name}` ({topic.cleanup_policy.value}, {topic.partitions} "
            f"partition{'' if topic.partitions == 1 else 's'}): "
            f"{topic.description}." + (f" Events: {types}." if types else "")
        )
    delete_retention_ms = int(PROFILE.topic_config().get("delete.retention.ms", "86400000"))
    lines += [
        "",
        "Field names (in policies, consents, agency records, `changed_fields` and access records; "
        "the address "
        "is granted part by part): "
        + ", ".join(f"`{name}`" for name in profile_v1.PROFILE_FIELDS)
        + ".",
        "",
        "## Record key",
        "",
        "The key of every record is the citizen pseudonym: the lower-case hex HMAC-SHA256 of the "
        "NIK under a secret key held by the platform. It is never the NIK, so NIKs do not spread "
        "through keys, partitions and logs; the pseudonym cannot be reversed or recomputed "
        "outside the platform. All records of one citizen land in one partition, in order. The "
        "payload's `pseudonym` always equals the key.",
        "",
        "## Envelope: CloudEvents 1.0, Kafka binary content mode",
        "",
        "CloudEvents attributes travel as `ce_*` headers (`ce_specversion` 1.0, `ce_id`, "
        "`ce_source`, `ce_type`, `ce_time`, `ce_dataschema`), the data as the record value "
        "(UTF-8 JSON) with a `content-type: application/json` header. Any CloudEvents SDK reads "
        "them (Python: the `cloudevents` package's Kafka binding, `from_binary`). Select the "
        "schema by `ce_type`; `ce_dataschema` is `urn:ikd:schema:<ce_type>`, the `$id` of that "
        "type's JSON Schema published beside this document (schemas/<ce_type>.json). Delivery "
        "is at least once: deduplicate by `ce_id`.",
        "",
        "## Versions",
        "",
        "Event types and topics end in `.v1`. The schemas are closed (no additional "
        "properties): any change of an event's shape comes as a new version (`.v2` type on a "
        "`.v2` topic). Within a topic, profile events carry the citizen's `version` and consent "
        "events `consents_version`, each growing by one with every change of that citizen: "
        "ignore an event whose version is not greater than the one you already hold (a "
        "redelivery or a stale record), and apply the rest.",
        "",
        "## Profile topic: event-carried state and tombstones",
        "",
        "`ProfileVerified` and `ProfileUpdated` carry the whole profile (the NIK included), so "
        "the compacted topic holds each citizen's latest state; keep only the fields your "
        "agency's policy allows (the gateways do; agencies read their agency topic). "
        "`CitizenDied` and `CredentialRevoked` are followed by a "
        f"tombstone: same key, null value, `ce_type` `{profile_v1.TOMBSTONE_TYPE}`, no "
        "content-type. On a tombstone delete everything you hold for that pseudonym. Compaction "
        f"keeps tombstones for {delete_retention_ms // 3_600_000} hours (delete.retention.ms), "
        "then the citizen disappears from the topic.",
        "",
        "## Consent topic: the whole active set",
        "",
        "The consent topic is compacted by pseudonym too, so each `ConsentGranted` and "
        "`ConsentRevoked` carries, besides the consent it is about, `active_consents`: all of "
        "the citizen's consents in force after the change. Replace what you hold for the "
        "citizen with that set (do not merge); the latest record alone rebuilds it.",
    ]
    return "\n".join(lines)


def asyncapi_document() -> Schema:
    """The AsyncAPI 3.0.0 document of every topic in the registry."""
    channels: dict[str, Schema] = {}
    messages: dict[str, Schema] = {}
    operations: dict[str, Schema] = {}
    for topic in DOCUMENTED_TOPICS:
        roles = ROLES.get(topic.name)
        if roles is None:
            raise KeyError(f"add the producers and consumers of {topic.name} to docs.ROLES")
        topic_messages = _channel_messages(topic, roles)
        for name, message in topic_messages.items():
            if name in messages:
                raise ValueError(f"message {name!r} is on two topics")
            messages[name] = message
        channels[_channel_id(topic)] = _channel(topic, roles, topic_messages)
        for app in roles.producers:
            operations[_operation_id(app, "send", topic)] = _operation(
                app, "send", topic, topic_messages
            )
        for app in roles.consumers:
            operations[_operation_id(app, "receive", topic)] = _operation(
                app, "receive", topic, topic_messages
            )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "IKD MPP citizen data events",
            "version": DOCUMENT_VERSION,
            "description": _info_description(),
            "tags": [
                {"name": IDENTITY.name, "description": IDENTITY.description},
                {"name": GATEWAY.name, "description": GATEWAY.description},
                {"name": AUDIT.name, "description": AUDIT.description},
                {"name": AGENCY_BACKEND.name, "description": AGENCY_BACKEND.description},
            ],
        },
        "defaultContentType": JSON,
        "servers": {
            "local": {
                "host": LOCAL_BROKER,
                # kafka-secure: TLS on the connection; SASL runs inside it.
                "protocol": "kafka-secure",
                "protocolVersion": "4.1",
                "description": (
                    "Development broker (Apache Kafka 4.1, KRaft) started by "
                    "deploy/scripts/kafka.sh or `make up`; production brokers are set per "
                    "deployment (IKD_KAFKA_BOOTSTRAP_SERVERS). Its only client listener is "
                    "SASL_SSL: TLS with a certificate of the platform's CA (development: "
                    "`.run/dev/kafka/ca.pem`, written by `make setup`), then "
                    "SASL/SCRAM-SHA-512 as the client's own principal. There is no PLAINTEXT "
                    "listener, and the broker denies whatever no ACL allows."
                ),
                "security": [{"$ref": "#/components/securitySchemes/scramSha512"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _component_schemas(),
            "messages": messages,
            "securitySchemes": {
                "scramSha512": {
                    "type": "scramSha512",
                    "description": (
                        "SASL/SCRAM-SHA-512 over TLS (security.protocol=SASL_SSL, "
                        "sasl.mechanism=SCRAM-SHA-512), as a principal of the platform's "
                        "operator: `identity`, `audit`, `gateway-<agency>` in the core zone, "
                        "`agency-<agency>` for an agency backend (created with its ACLs, "
                        "its topic and its OAuth client when the agency is onboarded; "
                        "credentials handed over once). An agency principal may read only "
                        "its agency topic, in its consumer group `ikd-agency-<agency>`. "
                        "See docs/trust-zones.md."
                    ),
                }
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Rendering and writing.


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, no anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_yaml(document: Any) -> str:
    rendered: str = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return rendered


def generated_files() -> dict[str, str]:
    """Relative path under docs/events/ -> content, for every generated file."""
    files = {
        schema_path(event_type): render_json(schema)
        for event_type, schema in sorted(json_schemas().items())
    }
    files[ASYNCAPI_FILE] = "# Generated by `ikdctl docs generate`; do not edit.\n" + render_yaml(
        copy.deepcopy(asyncapi_document())
    )
    return files


def _stale_schema_files(out_dir: Path, expected: dict[str, str]) -> list[str]:
    folder = out_dir / SCHEMAS_DIR
    if not folder.is_dir():
        return []
    return sorted(
        f"{SCHEMAS_DIR}/{path.name}"
        for path in folder.glob("*.json")
        if f"{SCHEMAS_DIR}/{path.name}" not in expected
    )


def differences(out_dir: Path) -> list[str]:
    """Generated files that are missing, different, or no longer generated."""
    expected = generated_files()
    differ = [
        name
        for name, content in expected.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text("utf-8") != content
    ]
    return sorted(differ + _stale_schema_files(out_dir, expected))


def write(out_dir: Path) -> list[str]:
    """Write every generated file and remove schemas no longer generated; return what changed."""
    expected = generated_files()
    changed = differences(out_dir)
    for name in _stale_schema_files(out_dir, expected):
        (out_dir / name).unlink()
    for name, content in expected.items():
        if name in changed:
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, "utf-8")
    return changed
