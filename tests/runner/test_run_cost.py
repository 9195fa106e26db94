"""What a run costs, against a local server speaking the OpenAI and Anthropic protocols: the plan's
estimate against the recorded cost, a rerun that pays for no pair twice, prompt-cache tokens read
and priced, and a cost ceiling that stops a batch whose results are still served."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
from huleedu.cj.v1 import assessment_pb2

from mesh_common.pricing import DEFAULT_MODELS, PriceTable, Usage, cost
from tests.runner.test_runner_cli import essays_folder, runner
from tests.support.cj import register_anchor, submit_request
from tests.support.providers import provider_server
from tests.support.tools import run, tool

ENG5 = Path(__file__).parents[2] / "examples" / "eng5"


async def eng5_assignment(mesh, tmp_path: Path, assignment_id: str) -> list[str]:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    made = await runner(mesh, "admin", "create-assignment", "--assignment-id", assignment_id, "--grade-scale",
                        "eng5_np_legacy_9_step", "--prompt", str(ENG5 / "prompt.md"), "--rubric",
                        str(ENG5 / "rubric.md"), *cache)  # fmt: skip
    assert made.code == 0, made.output
    anchors = await runner(mesh, "admin", "register-anchors", str(ENG5), "--assignment-id", assignment_id, *cache)
    assert anchors.code == 0, anchors.output
    return cache


def run_folder(output: str, runs: Path) -> Path:
    batch_id = re.search(r"(?:submitted|attached to) batch ([0-9a-f]{32})", output).group(1)
    (folder,) = [f for f in runs.iterdir() if f.name.endswith(batch_id)]
    return folder


def results_of(output: str, runs: Path) -> dict:
    return json.loads((run_folder(output, runs) / "results.json").read_text())


@pytest.mark.timeout(300)
async def test_estimate_of_comparisons_and_cost_holds_and_a_rerun_pays_nothing(mesh, tmp_path) -> None:
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider="openai", openai_base_url=provider.url, batch_concurrency=8)
        cache = await eng5_assignment(mesh, tmp_path, "eng5-cost")
        judge = ["--provider", "openai", "--model", "gpt-4o-mini"]
        plan = await run(tool("cj-runner"), "plan", str(ENG5), *judge)
        assert plan.code == 0 and "priced for openai gpt-4o-mini" in plan.stdout, plan.output
        dry = await run(tool("cj-runner"), "dry-run", str(ENG5), "--assignment-id", "eng5-cost", *judge)
        estimate = json.loads(dry.stdout)["estimate"]
        assert f"~{estimate['comparisons']} comparisons" in plan.stdout

        runs = ["--runs-dir", str(tmp_path / "runs")]
        first = await runner(mesh, "run", str(ENG5), "--assignment-id", "eng5-cost", *judge, "--seed", "1",
                             *runs, *cache)  # fmt: skip
        assert first.code == 0, first.output
        results = results_of(first.output, tmp_path / "runs")
        usage = results["judge_usage"]
        done = results["batch"]["progress"]["comparisons_done"]
        assert usage["model"] == "gpt-4o-mini" and usage["calls"] == done == provider.calls
        assert usage["cached_answers"] == 0
        # The recorded cost is the tokens the provider reported, priced by the shipped table.
        price = PriceTable.load().price("openai", "gpt-4o-mini")
        assert usage["cost_usd"] == pytest.approx(
            cost(price, Usage(int(usage["tokens_in"]), int(usage["tokens_out"]), int(usage["tokens_cached"])))
        )
        error = abs(usage["cost_usd"] - estimate["cost_usd"]) / usage["cost_usd"]
        print(f"estimate ${estimate['cost_usd']:.5f} for {estimate['comparisons']} comparisons; recorded "
              f"${usage['cost_usd']:.5f} for {done} ({error:.0%} apart)")  # fmt: skip
        # The comparisons are the service's own; the estimate expects them within a quarter.
        assert abs(estimate["comparisons"] - done) <= 0.25 * done
        # The tokens are the provider's. The estimate is made for real tokenizers (1.33 tokens a word)
        # and verdicts of about 100 tokens; this local provider counts a token per word or mark and
        # answers in about 30, so the estimate must stay above its cost, and not far above.
        assert usage["cost_usd"] <= estimate["cost_usd"] <= 1.5 * usage["cost_usd"]

        # The same folder again as a fresh batch: every pair's answer is reused, nothing is paid.
        again = await runner(mesh, "run", str(ENG5), "--assignment-id", "eng5-cost", *judge, "--seed", "1", "--new",
                             *runs, *cache)  # fmt: skip
        assert again.code == 0, again.output
        assert provider.calls == done  # zero new judge calls
        rerun = results_of(again.output, tmp_path / "runs")
        assert rerun["batch"]["batch_id"] != results["batch"]["batch_id"]
        assert rerun["judge_usage"]["cached_answers"] == rerun["batch"]["progress"]["comparisons_done"] == done
        assert rerun["judge_usage"]["calls"] == 0 and rerun["judge_usage"]["cost_usd"] == 0
        assert [(e["essay_id"], e["score"]) for e in rerun["essays"]] == [
            (e["essay_id"], e["score"]) for e in results["essays"]
        ]
        comparisons = (await mesh.assessment.ListComparisons(assessment_pb2.ListComparisonsRequest(
            batch_id=rerun["batch"]["batch_id"], page_size=1000))).comparisons  # fmt: skip
        assert all(c.cached and c.cost_usd == 0 and c.tokens_in == 0 for c in comparisons)
        report = (run_folder(again.output, tmp_path / "runs") / "report.md").read_text()
        assert "- cost: $0 (US dollars" in report and f"{done} answers reused from earlier judgements" in report
        report = (run_folder(first.output, tmp_path / "runs") / "report.md").read_text()
        assert f"- cost: ${usage['cost_usd']:.4g} (US dollars" in report

        # --no-cache pays again, for every pair.
        paid = await runner(mesh, "run", str(ENG5), "--assignment-id", "eng5-cost", *judge, "--seed", "1", "--new",
                            "--no-cache", "--budget", "40", *runs, *cache)  # fmt: skip
        assert paid.code == 0, paid.output
        assert provider.calls == done + results_of(paid.output, tmp_path / "runs")["judge_usage"]["calls"] > done


@pytest.mark.timeout(300)
async def test_max_cost_asks_first_then_stops_the_batch_at_the_ceiling_with_results(mesh, tmp_path) -> None:
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider="openai", openai_base_url=provider.url, batch_concurrency=4)
        cache = await eng5_assignment(mesh, tmp_path, "eng5-ceiling")
        runs = ["--runs-dir", str(tmp_path / "runs")]
        judge = ["--provider", "openai", "--model", "gpt-4o-mini"]
        ceiling = "0.02"  # the estimate is about $0.05
        refused = await runner(mesh, "run", str(ENG5), "--assignment-id", "eng5-ceiling", *judge, "--max-cost",
                               ceiling, *runs, *cache)  # fmt: skip
        assert refused.code == 2 and "is above --max-cost $0.02: nothing was sent" in refused.stderr
        assert "add --yes" in refused.stderr and provider.calls == 0

        stopped = await runner(mesh, "run", str(ENG5), "--assignment-id", "eng5-ceiling", *judge, "--max-cost",
                               ceiling, "--yes", *runs, *cache)  # fmt: skip
        assert stopped.code == 0, stopped.output
        results = results_of(stopped.output, tmp_path / "runs")
        batch = results["batch"]
        assert batch["state"] == "BATCH_STATE_COMPLETED" and "cost_ceiling" in batch["state_reason"]
        recorded, per_call = results["judge_usage"]["cost_usd"], results["judge_usage"]["cost_usd"] / provider.calls
        print(f"ceiling $0.02: stopped at ${recorded:.5f} after {provider.calls} calls ({batch['state_reason']})")
        # At the ceiling: it stops when the next call would not fit, or once the ceiling is passed by
        # the calls in flight when it was reached (a few here: 4 at a time, planned at the mean cost).
        assert 0.02 - 2 * per_call <= recorded <= 0.02 + 8 * per_call
        assert batch["progress"]["max_cost_usd"] == 0.02 and batch["progress"]["cost_usd"] == recorded
        # The results are served as usual: every essay scored, students graded.
        assert len(results["essays"]) == 42 and results["grades_projected"]
        status = await runner(mesh, "status", batch["batch_id"])
        assert status.code == 0 and f"${recorded:.4g}" in status.stdout and "cost_ceiling" in status.stdout

        # A ceiling needs a price: a model the table does not know is refused, naming the field.
        request = submit_request(["0" * 32, "1" * 32], max_cost_usd=1.0)
        request.judge.model = "llama-local"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.assessment.SubmitBatch(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_cost_usd" in caught.value.details() and "llama-local" in caught.value.details()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
async def test_prompt_cache_tokens_are_read_and_priced(mesh, tmp_path, provider_name) -> None:
    """A rubric long enough for the provider's prompt cache: the first call writes the shared prefix
    (Anthropic bills the writing), the others read it; all are recorded and priced at their rates."""
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider=provider_name, batch_concurrency=1,
                              **{f"{provider_name}_base_url": provider.url})  # fmt: skip
        folder = essays_folder(tmp_path)
        rubric = " ".join(f"Criterion {i}: the essay states its point clearly and supports it." for i in range(120))
        cache = ["--cache-dir", str(tmp_path / "cache")]
        made = await runner(mesh, "admin", "create-assignment", "--assignment-id", "cached", "--grade-scale",
                            "eng5_np_legacy_9_step", "--instructions", rubric, *cache)  # fmt: skip
        assert made.code == 0, made.output
        for grade, words in (("E-", 8), ("B", 40)):
            await register_anchor(mesh, "cached", f"anchor_{grade}", grade, "My journey was long. " * words)
        done = await runner(mesh, "run", str(folder), "--assignment-id", "cached", "--provider", provider_name,
                            "--budget", "10", "--runs-dir", str(tmp_path / "runs"), *cache)  # fmt: skip
        assert done.code == 0, done.output
        usage = results_of(done.output, tmp_path / "runs")["judge_usage"]
        # The estimate counts the assignment's instructions (sent with every comparison) and its anchors.
        estimated = int(re.search(r"~([0-9,]+) input", done.stderr).group(1).replace(",", ""))
        assert "8 essays" in done.stderr and 0.75 <= estimated / int(usage["tokens_in"]) <= 1.25
        model = DEFAULT_MODELS[provider_name]
        assert usage["model"] == model and usage["calls"] == provider.calls == 10
        read, written = int(usage["tokens_cached"]), int(usage["tokens_cache_written"])
        if provider_name == "anthropic":  # written once (and billed for it), read nine times
            assert written >= 1024 and read == 9 * written
        else:  # OpenAI writes its cache unasked and unbilled, and reads it in steps of 128 tokens
            assert written == 0 and read >= 9 * 1024 and read % (9 * 128) == 0
        price = PriceTable.load().price(provider_name, model)
        expected = cost(price, Usage(int(usage["tokens_in"]), int(usage["tokens_out"]), read, written))
        assert usage["cost_usd"] == pytest.approx(expected)
        assert usage["cost_usd"] < cost(price, Usage(int(usage["tokens_in"]), int(usage["tokens_out"]))) * 0.7


@pytest.mark.timeout(300)
async def test_batch_api_run_from_the_runner_costs_half(mesh, tmp_path) -> None:
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider="openai", openai_base_url=provider.url, batch_poll_seconds=0.05)
        folder = essays_folder(tmp_path)
        judge = ["--provider", "openai", "--budget", "12", "--runs-dir", str(tmp_path / "runs"),
                 "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        direct = await runner(mesh, "run", str(folder), *judge)
        assert direct.code == 0, direct.output
        batched = await runner(mesh, "run", str(folder), *judge, "--batch-api", "--no-cache")
        assert batched.code == 0, batched.output
        assert "priced for openai gpt-4o-mini through its batch API" in batched.stderr
        assert provider.jobs and sum(len(job) for job in provider.jobs.values()) == 12  # every wave a job
        by_direct = results_of(direct.output, tmp_path / "runs")["judge_usage"]
        by_jobs = results_of(batched.output, tmp_path / "runs")["judge_usage"]
        per_token = [u["cost_usd"] / (int(u["tokens_in"]) + 4 * int(u["tokens_out"])) for u in (by_direct, by_jobs)]
        assert per_token[1] == pytest.approx(per_token[0] / 2)
