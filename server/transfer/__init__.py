"""Moving the whole database between SQLite and PostgreSQL, in any direction, verified before it commits.

The command is `command`; each dialect is one module behind the small interface in `stream`; `verify`
holds the checksums every side computes alike.
"""
