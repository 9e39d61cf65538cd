"""The inbox: what agents do with conversations, and with each other, through the REST API.

Every function takes a :class:`~engine.inbox.principal.Principal` (who is asking) and a connection
already inside :func:`engine.db.tenancy.tenant_transaction` for that principal's tenant. The
functions scope every query by tenant themselves; row-level security is the second wall. Every
mutation writes the audit log (:mod:`engine.inbox.audit`) in the same transaction and returns the
live events to publish after commit (:class:`engine.inbox.principal.Changes`).
"""
