"""The booking platform's tables. Every row belongs to a business; the engine enforces it."""

from __future__ import annotations

from piccolo.columns import JSONB, ForeignKey, Integer, Varchar

from backend import Id
from backend.schema import Document, Index, Tenancy, define_schema


class Businesses(Document, tablename="businesses", tenant_root=True, audited=True, soft_delete=True):
    name = Varchar()
    timezone = Varchar()
    currency = Varchar()
    settings = JSONB()


class Members(Document, tablename="members", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    subject = Varchar()
    role = Varchar()
    status = Varchar()
    name = Varchar(null=True)
    email = Varchar(null=True)
    indexes = [Index("by_subject", "subject", unique=True), Index("by_role", "role")]


class Counters(Document, tablename="counters"):
    """A tenant-free table for engine tests and benchmarks."""

    name = Varchar()
    value = Integer()
    indexes = [Index("by_name", "name")]


schema = define_schema([Businesses, Members, Counters], tenancy=Tenancy())

# Id types for function signatures: ``venue_id: VenueId`` rejects ids of any other table.
BusinessId = Id["businesses"]
MemberId = Id["members"]
