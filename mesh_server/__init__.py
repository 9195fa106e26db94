"""Server plumbing shared by the mesh's services: errors, the interceptor, bootstrap, metrics.

It knows no service's domain.
"""
