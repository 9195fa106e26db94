"""The CJ engine: pairing, Bradley-Terry scoring, reliability, stopping and grade projection.

Pure code on plain Python and numpy values: no grpc, no database, no generated messages, so it can
be tested and benchmarked alone. Essays are integer indices 0..n-1 here; the service maps ids.
"""
