"""Server plumbing shared by the mesh's services: ids, errors, the interceptor, bootstrap, metrics.

It knows no service's domain.
"""
