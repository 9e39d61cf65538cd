"""The exception tree of Parlo.

    ParloError
    ├── ConfigError            settings that cannot be used (bad PARLO_* values, unreadable files)
    ├── ServiceError           an infrastructure service misbehaves
    │   ├── PortInUse          a port we must listen on is taken by something else
    │   ├── ServiceUnavailable a service cannot be reached (retryable)
    │   └── ServiceStartFailed an embedded service did not start
    ├── MigrationError         the schema directory or the applied history is inconsistent
    │   ├── MigrationMissing   an applied migration's file is gone, or numbering has a gap
    │   └── MigrationTampered  an applied migration's file changed since it was applied
    ├── Unauthenticated        no valid credentials (bad password, invalid/expired/forged token)
    ├── Forbidden              authenticated, but not allowed
    └── NotFound / Conflict / InvalidInput   domain-level answers for callers

Lower-library errors are translated at the boundary (``raise ServiceUnavailable(...) from exc``)
so that callers decide on one tree. ``retryable`` tells the outbox and the AI fallback chain
whether trying again can help.
"""

from __future__ import annotations


class ParloError(Exception):
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ParloError):
    pass


class ServiceError(ParloError):
    pass


class PortInUse(ServiceError):
    pass


class ServiceUnavailable(ServiceError):
    retryable = True


class ServiceStartFailed(ServiceError):
    pass


class MigrationError(ParloError):
    pass


class MigrationMissing(MigrationError):
    pass


class MigrationTampered(MigrationError):
    pass


class NotFound(ParloError):
    pass


class Conflict(ParloError):
    pass


class InvalidInput(ParloError):
    pass


class Unauthenticated(ParloError):
    pass


class Forbidden(ParloError):
    pass
