"""What clients and servers of the mesh share: id rules, channels and TLS, the metadata every call
carries (bearer token, correlation id), and how a contract violation reads.

It imports no service and no database, so the runner (or any client) may import it.
"""
