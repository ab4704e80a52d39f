"""Event docs: committed files are current, every event has a schema, the schemas and the
AsyncAPI document describe what producers really send."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from pydantic import BaseModel
from referencing import Registry, Resource
from typer.testing import CliRunner

from ikd_dev import event_docs
from ikd_dev.synthetic import citizen
from ikd_ops.docs_cli import docs_app
from ikd_shared.events import event_type_of, to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.agency_v1 import AgencyRecordChanged, ServiceFields
from ikd_shared.events.consent_v1 import (
    Consent,
    ConsentGranted,
    ConsentRevoked,
    ConsentStatus,
    GrantedBy,
)
from ikd_shared.events.envelope import CloudEvent, to_kafka
from ikd_shared.events.profile_v1 import (
    TOMBSTONE_TYPE,
    CitizenDied,
    CredentialRevoked,
    ProfileUpdated,
    ProfileVerified,
    Relationship,
    RelationshipKind,
    RelationshipsChanged,
)
from ikd_shared.events.topics import PROFILE
from ikd_shared.legal import LegalBasis
from ikd_shared.pseudonym import PSEUDONYM_PATTERN, pseudonymize

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"
REGENERATE = "run `ikdctl docs generate` and commit docs/events/"
NOW = dt.datetime(2025, 11, 3, 8, 15, 42, 123456, tzinfo=dt.UTC)
KEY = b"test pseudonym key"
ALL_TOPICS = event_docs.DOCUMENTED_TOPICS  # the core topics and the agency topic template
TOMBSTONE_TYPES = {tombstone.event_type for tombstone in event_docs.TOMBSTONES.values()}
REGISTRY_MODELS = [model for topic in ALL_TOPICS for model in topic.event_types]


# -- sample events, built here independently of the examples in the docs -----------------------


def _pseudonym(index: int = 0) -> str:
    return pseudonymize(citizen(11, index).nik, KEY)


def _consent(status: ConsentStatus = ConsentStatus.ACTIVE) -> Consent:
    return Consent(
        consent_id=uuid.uuid4(),
        pseudonym=_pseudonym(),
        agency="bpjs-kesehatan",
        service="pendaftaran-peserta",
        fields=["full_name", "date_of_birth", "address.regency"],
        purpose_code="enrolment",
        purpose_text="Pendaftaran peserta JKN",
        legal_basis=LegalBasis.CONSENT,
        starts_at=NOW,
        expires_at=NOW + dt.timedelta(days=90),
        status=status,
        granted_by=GrantedBy.OFFICER,
        officer_id="officer-17",
        revoked_at=NOW if status is ConsentStatus.REVOKED else None,
    )


def _relationship() -> Relationship:
    return Relationship(
        relationship_id=uuid.uuid4(),
        kind=RelationshipKind.SERVICE_REQUEST,
        agency="polres-cirebon",
        service="skck",
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        starts_at=NOW,
        expires_at=NOW + dt.timedelta(days=1825),
    )


SAMPLES: dict[type[BaseModel], Callable[[], BaseModel]] = {
    ProfileVerified: lambda: ProfileVerified(
        pseudonym=_pseudonym(),
        version=1,
        profile=citizen(11, 0),
        verified_at=NOW,
        changed_fields=["full_name"],
    ),
    ProfileUpdated: lambda: ProfileUpdated(
        pseudonym=_pseudonym(1),
        version=7,
        profile=citizen(11, 1),
        verified_at=NOW,
        updated_at=NOW,
        changed_fields=["address.street", "marital_status"],
    ),
    RelationshipsChanged: lambda: RelationshipsChanged(
        pseudonym=_pseudonym(1),
        version=8,
        profile=citizen(11, 1),
        verified_at=NOW,
        changed_at=NOW,
        started=[_relationship()],
        relationships=[_relationship()],
    ),
    CitizenDied: lambda: CitizenDied(
        pseudonym=_pseudonym(), version=2, date_of_death=dt.date(2025, 11, 1), recorded_at=NOW
    ),
    CredentialRevoked: lambda: CredentialRevoked(
        pseudonym=_pseudonym(), version=2, reason="fraud suspected", revoked_at=NOW
    ),
    ConsentGranted: lambda: ConsentGranted(
        pseudonym=_pseudonym(),
        consents_version=1,
        consent=_consent(),
        active_consents=[_consent(), _consent()],
    ),
    ConsentRevoked: lambda: ConsentRevoked(
        pseudonym=_pseudonym(),
        consents_version=3,
        consent=_consent(ConsentStatus.REVOKED),
        active_consents=[],
    ),
    AccessRecorded: lambda: AccessRecorded(
        access_id=uuid.uuid4(),
        occurred_at=NOW,
        agency="dinas-sosial",
        channel=Channel.PREFILL,
        outcome=Outcome.DENIED,
        reason="service_not_in_policy",
    ),
    AgencyRecordChanged: lambda: AgencyRecordChanged(
        agency="dinas-sosial",
        pseudonym=_pseudonym(),
        version=3,
        verified_at=NOW,
        changed_fields=["full_name"],
        services=[
            ServiceFields(
                service="bansos",
                purpose="eligibility",
                legal_basis=LegalBasis.PUBLIC_TASK,
                fields={"full_name": "Warga", "date_of_birth": "1990-01-01"},
            )
        ],
    ),
}


def _sample(model: type[BaseModel]) -> BaseModel:
    if model not in SAMPLES:
        pytest.fail(f"{model.__name__} is in the topic registry: add a sample to SAMPLES")
    return SAMPLES[model]()


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _schemas() -> dict[str, dict[str, Any]]:
    return event_docs.json_schemas()


def _asyncapi() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCS / event_docs.ASYNCAPI_FILE).read_text("utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# -- the committed files ------------------------------------------------------------------------


def test_committed_event_docs_are_current() -> None:
    stale = event_docs.differences(DOCS)
    assert not stale, f"event docs are stale ({', '.join(stale)}): {REGENERATE}"


def test_generation_is_deterministic() -> None:
    assert event_docs.generated_files() == event_docs.generated_files()


def test_readme_links_every_schema_file() -> None:
    readme = (DOCS / "README.md").read_text("utf-8")
    for event_type in _schemas():
        assert f"({event_docs.schema_path(event_type)})" in readme, event_type


def test_cli_generate_writes_check_detects_stale_files(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(docs_app, ["check", "--out", str(tmp_path)]).exit_code == 1

    generated = runner.invoke(docs_app, ["generate", "--out", str(tmp_path)])
    assert generated.exit_code == 0, generated.output
    assert runner.invoke(docs_app, ["check", "--out", str(tmp_path)]).exit_code == 0

    (tmp_path / event_docs.SCHEMAS_DIR / "id.go.mpp.gone.v1.json").write_text("{}")
    (tmp_path / event_docs.ASYNCAPI_FILE).write_text("asyncapi: 3.0.0\n")
    checked = runner.invoke(docs_app, ["check", "--out", str(tmp_path)])
    assert checked.exit_code == 1
    assert "ikdctl docs generate" in checked.output
    assert runner.invoke(docs_app, ["generate", "--out", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / event_docs.SCHEMAS_DIR / "id.go.mpp.gone.v1.json").exists()
    assert event_docs.differences(tmp_path) == []


# -- JSON Schemas -------------------------------------------------------------------------------


def test_every_registry_event_and_the_tombstone_have_a_schema() -> None:
    schemas = _schemas()
    expected = {event_type_of(model) for model in REGISTRY_MODELS} | TOMBSTONE_TYPES
    assert set(schemas) == expected
    for event_type, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:ikd:schema:{event_type}"
        assert schema["title"]
        assert schema["description"]
        assert (DOCS / event_docs.schema_path(event_type)).is_file(), REGENERATE
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda model: model.__name__)
def test_schema_id_is_the_dataschema_producers_set(model: type[BaseModel]) -> None:
    event = to_cloudevent(_sample(model), source="/ikd/identity", key=_pseudonym())
    assert event.dataschema == _schemas()[event.type]["$id"]


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda model: model.__name__)
def test_sample_event_validates_against_its_schema(model: type[BaseModel]) -> None:
    sample = _sample(model)
    schema = _schemas()[event_type_of(model)]
    _validator(schema).validate(sample.model_dump(mode="json"))
    _validator(schema).validate(event_docs.examples()[event_type_of(model)].model_dump(mode="json"))


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda model: model.__name__)
def test_schema_rejects_what_the_model_rejects(model: type[BaseModel]) -> None:
    data = _sample(model).model_dump(mode="json")
    validator = _validator(_schemas()[event_type_of(model)])
    for bad in (
        {**data, "unexpected": 1},
        {**data, "pseudonym": "not-a-pseudonym"} if "pseudonym" in data else {**data, "agency": 1},
        {name: value for name, value in data.items() if name != next(iter(data))},
    ):
        with pytest.raises(ValidationError):
            validator.validate(bad)
        with pytest.raises(ValueError, match="validation error"):
            model.model_validate(bad)


def test_tombstone_schema_allows_no_data() -> None:
    validator = _validator(_schemas()[TOMBSTONE_TYPE])
    validator.validate(None)
    with pytest.raises(ValidationError):
        validator.validate({})


def _schema_registry() -> Registry:
    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in _schemas().values()
    )


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda model: model.__name__)
def test_cloudevents_sdk_reads_records_and_dataschema_finds_the_schema(
    model: type[BaseModel],
) -> None:
    # What the README tells agency developers to do, on a record our producers make.
    record = to_kafka(to_cloudevent(_sample(model), source="/ikd/identity", key=_pseudonym()))
    event = from_binary_event(
        KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value or b"")
    )
    assert event.get_type() == event_type_of(model)
    schema = _schema_registry().contents(event.get_dataschema() or "")
    _validator(schema).validate(event.get_data())


def test_cloudevents_sdk_reads_a_tombstone() -> None:
    tombstone = CloudEvent(type=TOMBSTONE_TYPE, source="/ikd/identity", key=_pseudonym(), data=None)
    record = to_kafka(tombstone)
    event = from_binary_event(
        KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value or b"")
    )
    assert event.get_type() == TOMBSTONE_TYPE
    _validator(_schemas()[TOMBSTONE_TYPE]).validate(event.get_data())


# -- AsyncAPI -----------------------------------------------------------------------------------
# No maintained Python validator for AsyncAPI 3 exists on PyPI, nor a package shipping the
# official AsyncAPI 3.0.0 JSON Schema; these check the parts of that schema the doc relies on.

COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"unresolved $ref {ref}"
        assert part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def _deref(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and set(node) == {"$ref"}:
        node = _resolve(document, node["$ref"])
    return node


def test_asyncapi_key_fields() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    info = doc["info"]
    assert info["title"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"])
    for needle in (
        "HMAC-SHA256",
        "never the NIK",
        "ce_",
        "content-type",
        "tombstone",
        "active_consents",
        "version",
    ):
        assert needle in info["description"], needle
    assert doc["servers"]["local"] == {
        **doc["servers"]["local"],
        "host": "127.0.0.1:19092",
        "protocol": "kafka-secure",
    }
    for section in ("channels", "operations"):
        assert all(COMPONENT_KEY.match(key) for key in doc[section]), section
    for section in ("schemas", "messages"):
        assert all(COMPONENT_KEY.match(key) for key in doc["components"][section]), section


def test_asyncapi_servers_require_scram_sha_512_over_tls() -> None:
    doc = _asyncapi()
    for server in doc["servers"].values():
        assert server["protocol"] == "kafka-secure"
        schemes = [_resolve(doc, ref["$ref"]) for ref in server["security"]]
        assert [scheme["type"] for scheme in schemes] == ["scramSha512"]
    assert "SASL_SSL" in doc["components"]["securitySchemes"]["scramSha512"]["description"]


def test_asyncapi_every_reference_resolves() -> None:
    doc = _asyncapi()
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)


def test_asyncapi_has_a_channel_per_topic_with_kafka_bindings() -> None:
    channels = {channel["address"]: channel for channel in _asyncapi()["channels"].values()}
    assert set(channels) == {topic.name for topic in ALL_TOPICS}
    for topic in ALL_TOPICS:
        binding = channels[topic.name]["bindings"]["kafka"]
        assert binding["topic"] == topic.name
        assert binding["partitions"] == topic.partitions
        assert binding["topicConfiguration"]["cleanup.policy"] == [topic.cleanup_policy.value]
        assert channels[topic.name]["messages"], topic.name


def test_asyncapi_messages_describe_every_event_type() -> None:
    doc = _asyncapi()
    channels = {channel["address"]: channel for channel in doc["channels"].values()}
    for topic in ALL_TOPICS:
        messages = [_deref(doc, m) for m in channels[topic.name]["messages"].values()]
        by_type = {message["name"]: message for message in messages}
        expected = {event_type_of(model) for model in topic.event_types}
        if topic.name in event_docs.TOMBSTONES:
            expected.add(event_docs.TOMBSTONES[topic.name].event_type)
        assert expected <= set(by_type), topic.name
        for event_type in expected:
            message = by_type[event_type]
            headers = message["headers"]
            assert headers["type"] == "object"
            assert headers["properties"]["ce_type"]["const"] == event_type
            assert {"ce_specversion", "ce_id", "ce_source", "ce_type"} <= set(headers["required"])
            key = message["bindings"]["kafka"]["key"]
            assert key["pattern"] == PSEUDONYM_PATTERN
            assert "never the NIK" in key["description"]
            payload = _deref(doc, message["payload"])
            assert isinstance(payload, dict)
        for model in topic.event_types:
            payload = _deref(doc, by_type[event_type_of(model)]["payload"])
            assert set(payload["properties"]) == set(model.model_fields), model.__name__
    tombstone = next(
        _deref(doc, m)
        for m in channels[PROFILE.name]["messages"].values()
        if _deref(doc, m)["name"] == TOMBSTONE_TYPE
    )
    assert _deref(doc, tombstone["payload"])["type"] == "null"
    assert "content-type" not in tombstone["headers"]["properties"]


def test_asyncapi_operations() -> None:
    doc = _asyncapi()
    actions: dict[str, set[str]] = {}
    for operation_id, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), operation_id
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        channel = _resolve(doc, channel_ref)
        assert operation["messages"], operation_id
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), operation_id
            _resolve(doc, message["$ref"])
        actions.setdefault(channel["address"], set()).add(operation["action"])
        if operation["action"] == "receive":
            assert "groupId" in operation["bindings"]["kafka"], operation_id
    for topic in ALL_TOPICS:
        assert "send" in actions.get(topic.name, set()), topic.name
        if topic.event_types:
            assert actions[topic.name] == {"send", "receive"}, topic.name


def test_asyncapi_examples_validate_against_their_message() -> None:
    doc = _asyncapi()
    checked = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            headers = Draft202012Validator(message["headers"], format_checker=FormatChecker())
            headers.validate(example["headers"])
            payload = Draft202012Validator(
                {**message["payload"], "components": doc["components"]},
                format_checker=FormatChecker(),
            )
            payload.validate(example.get("payload"))
            checked += 1
        if name in {model.__name__ for model in REGISTRY_MODELS}:
            assert message.get("examples"), name
    assert checked >= len(REGISTRY_MODELS) + 1
