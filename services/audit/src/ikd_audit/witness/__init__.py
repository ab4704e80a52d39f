"""A witness of the audit log (c2sp.org/tlog-witness), meant to run at another organisation.

It holds its own Ed25519 key and its own SQLite file, and knows the log only by its URL, origin
and verifier key. It cosigns a checkpoint only if it extends the last one it cosigned, and
records an alarm otherwise.
"""
