"""Every cj-runner command against a secured mesh: bearer tokens on both services, and mutual TLS."""

from __future__ import annotations

import re
import shutil

import pytest

from mesh_server.auth import hash_token
from tests.conftest import start_cj, start_content
from tests.runner.test_runner_cli import essays_folder
from tests.support.tls import CertificateAuthority
from tests.support.tools import ROOT, run, tool

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("security", ["tokens", "mutual TLS"])
async def test_every_command_works_on_a_secured_mesh(security: str, sqlite_url, tmp_path) -> None:
    if security == "tokens":
        # One token for the teacher (an admin here, to create the assignment), one for the CJ Service.
        spec = f"{hash_token('teacher-secret')}:admin+user:ada,{hash_token('cj-secret')}:service:cj-svc"
        content_options = {"tokens": spec}
        cj_options = {"tokens": spec, "content_token": "cj-secret"}
        client = ["--token", "teacher-secret"]
    else:
        ca = CertificateAuthority(tmp_path / "pki")
        content_cert, cj_cert = ca.issue("content-svc", server=True), ca.issue("cj-svc", server=True)
        cj_client, runner_cert = ca.issue("cj-svc-client", server=False), ca.issue("cj-runner", server=False)
        content_options = {
            "tls_cert": content_cert.cert,
            "tls_key": content_cert.key,
            "tls_client_ca": ca.ca_file.as_posix(),
        }
        cj_options = {"tls_cert": cj_cert.cert, "tls_key": cj_cert.key, "tls_client_ca": ca.ca_file.as_posix(),
                      "content_tls_ca": cj_client.ca, "content_tls_cert": cj_client.cert, "content_tls_key": cj_client.key}  # fmt: skip
        client = ["--tls-ca", runner_cert.ca, "--tls-cert", runner_cert.cert, "--tls-key", runner_cert.key]
    content = await start_content(sqlite_url, tmp_path / "blobs", **content_options)
    cj = await start_cj(f"sqlite:///{tmp_path}/cj.db", content.address, judge_provider="simulated", **cj_options)
    folder = essays_folder(tmp_path, n=4)
    shutil.copytree(ROOT / "examples" / "eng5" / "anchors", folder / "anchors")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    runs = ["--runs-dir", str(tmp_path / "runs")]

    async def runner(*args: str):
        result = await run(tool("cj-runner"), "--content-address", content.address, "--cj-address", cj.address,
                           *client, *args, timeout=120)  # fmt: skip
        assert result.code == 0, (args, result.output)
        assert "Traceback" not in result.output
        return result

    try:
        await runner("admin", "create-assignment", "--assignment-id", "secured", "--grade-scale",
                     "eng5_np_legacy_9_step", "--prompt", str(folder / "prompt.md"), *cache)  # fmt: skip
        await runner("admin", "register-anchors", str(folder), "--assignment-id", "secured", *cache)
        done = await runner("run", str(folder), "--assignment-id", "secured", "--budget", "20", *runs, *cache)
        batch_id = re.search(r"submitted batch ([0-9a-f]{32})", done.output).group(1)
        assert batch_id in (await runner("status", batch_id)).output
        assert "rank,essay_id" in (await runner("results", batch_id, "--format", "csv")).output
        assert batch_id in (await runner("batches")).output
        attached = await runner("attach", batch_id, *runs)
        assert "run folder" in attached.output
        (run_dir,) = (tmp_path / "runs").iterdir()
        await runner("report", str(run_dir))
        # cancel: the batch has finished, so the service refuses (exit 2), saying so
        refused = await run(tool("cj-runner"), "--content-address", content.address, "--cj-address", cj.address,
                            *client, "cancel", batch_id, timeout=60)  # fmt: skip
        assert refused.code == 2 and "can no longer be cancelled" in refused.output
    finally:
        await cj.stop()
        await content.stop()
