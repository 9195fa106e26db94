"""Judges: given two essay texts (and the assignment's prompt and rubric), say which is better.

They know no wire format and no database. The judge sees "Essay A" and "Essay B" only: never essay
ids, never which essay is an anchor.
"""
