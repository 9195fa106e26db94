"""Every command in the README's `sh` blocks works: run top to bottom against fresh services.

The blocks run as one bash script in a scratch folder (with the repo's .venv and examples), with
two additions made here: throwaway PostgreSQL URLs for the production section, and BATCH_ID taken
from the batch that `cj-runner run` created. `make` targets (in plain blocks) are what CI runs.
"""

from __future__ import annotations

import re
import shutil

from tests.support.tools import ROOT, run

FIND_BATCH = (
    "BATCH_ID=$(grpcurl -plaintext $CJ huleedu.cj.v1.AssessmentService/ListBatches"
    ' | python -c \'import json,sys; print(json.load(sys.stdin)["batches"][0]["batch_id"])\')'
)


def readme_script() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    lines = []
    for line in "".join(blocks).splitlines():
        lines.append(line)
        if line.startswith("cj-runner run "):
            lines.append(FIND_BATCH)
    return "\n".join(lines)


async def test_readme_commands_work(pg_cluster, tmp_path) -> None:
    databases = {name: pg_cluster.new_database(f"readme_{name}") for name in ("content", "cj")}
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "var").mkdir()
    script = (
        "set -euo pipefail\n"
        "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
        f"export CONTENT_DATABASE_URL={databases['content']} CJ_DATABASE_URL={databases['cj']}\n"
        f"cd {tmp_path}\n" + readme_script() + "\necho README-DONE\n"
    )
    result = await run("bash", "-c", script, timeout=240)
    assert result.code == 0, result.output[-4000:]
    assert "README-DONE" in result.stdout
    assert "Code: InvalidArgument" in result.output and "google.rpc.BadRequest" in result.output
    assert '"status": "SERVING"' in result.stdout
    assert "swedish_8_anchor" in result.stdout  # list-scales, also through the token-protected server
    assert "rank,essay_id" in result.stdout  # results --format csv
    assert "Kendall tau-b" in result.stdout and "plot.png" in result.stdout  # report
    assert "BATCH_STATE_COMPLETED" in result.stdout  # WatchBatch through grpcurl
    assert '"batch_label": "by hand"' in result.stdout  # SubmitBatch through grpcurl
