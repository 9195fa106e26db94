"""The service's values and the contract's enums: every value has its enum, and back."""

from __future__ import annotations

import pytest
from huleedu.cj.v1 import assessment_pb2
from huleedu.common.v1 import common_pb2

from cj_svc.assessment_service import BATCH_STATES, WINNERS, state_value
from cj_svc.vocabulary import BatchState, Winner
from mesh_common.error_codes import ErrorCode
from mesh_server.status import error_code_value


def test_every_batch_state_has_its_contract_value_and_every_contract_value_its_state() -> None:
    assert set(BATCH_STATES) == set(BatchState)
    named = {assessment_pb2.BatchState.Name(value).removeprefix("BATCH_STATE_") for value in BATCH_STATES.values()}
    assert named == {state.value for state in BatchState}
    assert set(assessment_pb2.BatchState.values()) - set(BATCH_STATES.values()) == {
        assessment_pb2.BATCH_STATE_UNSPECIFIED
    }


def test_every_winner_has_its_contract_value() -> None:
    assert set(WINNERS) == set(Winner)
    assert set(assessment_pb2.Winner.values()) - set(WINNERS.values()) == {assessment_pb2.WINNER_UNSPECIFIED}


def test_an_unknown_state_is_an_error_not_unspecified() -> None:
    assert state_value("RUNNING") == assessment_pb2.BATCH_STATE_RUNNING
    with pytest.raises(ValueError, match="SLEEPING"):
        state_value("SLEEPING")


def test_the_mesh_reports_exactly_the_contracts_error_codes() -> None:
    contract = {name.removeprefix("ERROR_CODE_") for name in common_pb2.ErrorCode.keys()} - {"UNSPECIFIED"}
    assert {code.value for code in ErrorCode} == contract
    assert error_code_value("RATE_LIMIT") == common_pb2.ERROR_CODE_RATE_LIMIT
    with pytest.raises(ValueError, match="KAFKA_PUBLISH_ERROR"):
        error_code_value("KAFKA_PUBLISH_ERROR")  # a code of the system the mesh replaces


def test_every_judge_provider_of_the_contract_is_a_judge_the_service_runs() -> None:
    from cj_svc.assessment_service import JUDGE_PROVIDERS
    from cj_svc.judges.factory import PROVIDERS

    assert set(assessment_pb2.JudgeProvider.values()) - set(JUDGE_PROVIDERS) == {
        assessment_pb2.JUDGE_PROVIDER_UNSPECIFIED
    }
    assert sorted(JUDGE_PROVIDERS.values()) == sorted(PROVIDERS)
    for value, name in JUDGE_PROVIDERS.items():  # the runner's --provider names are the contract's
        assert assessment_pb2.JudgeProvider.Name(value) == f"JUDGE_PROVIDER_{name.upper()}"


def test_every_judge_mode_of_the_contract_has_its_name() -> None:
    from cj_svc.assessment_service import JUDGE_MODES
    from cj_svc.vocabulary import JudgeMode

    assert set(assessment_pb2.JudgeMode.values()) - set(JUDGE_MODES) == {assessment_pb2.JUDGE_MODE_UNSPECIFIED}
    assert sorted(JUDGE_MODES.values()) == sorted(JudgeMode)
    for value, name in JUDGE_MODES.items():
        assert assessment_pb2.JudgeMode.Name(value) == f"JUDGE_MODE_{name}"
