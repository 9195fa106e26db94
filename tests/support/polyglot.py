"""What the clients in other languages (tests/polyglot) must have done."""

from __future__ import annotations


def assert_client_did_it_all(report: dict, refused_as: str) -> None:
    """What a client in another language printed: 4 essays uploaded, a batch watched to its end, the
    results read, and the violation of a sha256 sent as a storage id decoded (`refused_as`: the
    status code as that language names it)."""
    assert all(len(s) == 32 for s in report["storage_ids"]) and len(set(report["storage_ids"])) == 4
    assert report["states"][-1] == "BATCH_STATE_COMPLETED"
    assert report["comparisons_done"] == 8
    assert sorted(e["rank"] for e in report["ranked"]) == [1, 2, 3, 4]
    assert report["violations"]["code"] == refused_as
    fields = {v["field"]: v["description"] for v in report["violations"]["fields"]}
    assert "essays[1].text_storage_id" in fields and "32" in fields["essays[1].text_storage_id"]
