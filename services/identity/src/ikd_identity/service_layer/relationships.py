"""Publishing a citizen's relationships: every profile record carries those in force.

Used inside a command's unit of work, after the change (a consent, a registration) is saved,
so the record and the change commit together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ikd_identity.domain.model import ProfileRecord, ProfileStatus, event_message
from ikd_identity.domain.relationships import RelationshipRecord, in_force, of_consent
from ikd_identity.service_layer.unit_of_work import UnitOfWork
from ikd_shared.credentials import VerifiedCredential
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import Relationship, RelationshipsChanged
from ikd_shared.events.topics import PROFILE


async def stored_relationships(
    uow: UnitOfWork, pseudonym: str, at: dt.datetime
) -> list[RelationshipRecord]:
    """The citizen's relationships not over at `at` (active consents mirrored)."""
    return (await uow.relationships.current([pseudonym], at)).get(pseudonym, [])


def _as_relationship(item: Relationship | Consent | RelationshipRecord) -> Relationship:
    if isinstance(item, Consent):
        return of_consent(item)
    if isinstance(item, RelationshipRecord):
        return item.relationship
    return item


async def publish_relationships(
    uow: UnitOfWork,
    pseudonym: str,
    now: dt.datetime,
    *,
    started: Sequence[Relationship | Consent | RelationshipRecord] = (),
    ended: Sequence[Relationship | Consent | RelationshipRecord] = (),
    credential: VerifiedCredential | None = None,
) -> ProfileRecord | None:
    """Publish RelationshipsChanged: the next version of the citizen's record.

    Call it after the change is saved; the record lists the relationships in force then. A
    citizen with no profile yet gets one from `credential` (version 1); without one, or for a
    deceased or revoked citizen (whose record ended in a tombstone), nothing is published.
    """
    current = await uow.profiles.get_for_update(pseudonym)
    if current is None:
        if credential is None:
            return None
        record = ProfileRecord(
            pseudonym=pseudonym,
            version=1,
            profile=credential.profile,
            status=ProfileStatus.ACTIVE,
            verified_at=now,
            updated_at=now,
        )
    elif current.status is not ProfileStatus.ACTIVE:
        return None
    else:
        record = ProfileRecord(
            pseudonym=pseudonym,
            version=current.version + 1,
            profile=current.profile,
            status=current.status,
            verified_at=current.verified_at,
            updated_at=now,
        )
    event = RelationshipsChanged(
        pseudonym=pseudonym,
        version=record.version,
        profile=record.profile,
        verified_at=record.verified_at,
        changed_at=now,
        started=[_as_relationship(item) for item in started],
        ended=[_as_relationship(item) for item in ended],
        relationships=in_force(await stored_relationships(uow, pseudonym, now), now),
    )
    await uow.profiles.save(record, [event_message(event, topic=PROFILE, key=pseudonym)])
    return record
