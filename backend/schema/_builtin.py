"""Tables the engine itself writes and functions may read."""

from __future__ import annotations

from piccolo.columns import JSONB, Varchar

from ._spec import Document, Index


class AuditLog(Document, tablename="audit_log", tenant="business_id"):
    """One row per write to an audited table, appended in the writing transaction."""

    business_id = Varchar(null=True)
    table_name = Varchar()
    document_id = Varchar()
    operation = Varchar()
    actor = Varchar(null=True)
    function_path = Varchar()
    request_id = Varchar(null=True)
    before = JSONB(null=True)
    after = JSONB(null=True)
    indexes = [Index("by_document", "document_id"), Index("by_table", "table_name")]
