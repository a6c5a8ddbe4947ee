"""From Slurm's words to task states: squeue and sacct lines (as Slurm 22.05 prints them)
and the runner's result. States a real cluster cannot produce on cue (TIMEOUT needs a whole
minute, OUT_OF_MEMORY, PREEMPTED and NODE_FAIL need a misbehaving cluster) are fed in here
as the lines sacct prints for them; test_jobs.py and friends cover the rest for real."""

from __future__ import annotations

import pytest
from runyard.states import State
from runyard_slurm import status
from runyard_slurm.status import SlurmJob

OK = {"exit_code": 0, "start": 100.0, "end": 160.0, "error": None}
FAILED = {"exit_code": 3, "start": 100.0, "end": 160.0, "error": "RuntimeError: boom"}


def test_squeue_lines_give_each_job_and_array_element() -> None:
    now, jobs = status.parse_squeue(
        "1764262000\n41|RUNNING|None\n42_0|COMPLETED|None\n42_1|PENDING|Priority\n43|CANCELLED|DependencyNeverSatisfied\n"
    )

    assert now == 1764262000.0
    assert jobs == {
        "41": SlurmJob("41", "RUNNING"),
        "42_0": SlurmJob("42_0", "COMPLETED"),
        "42_1": SlurmJob("42_1", "PENDING", "Priority"),
        "43": SlurmJob("43", "CANCELLED", "DependencyNeverSatisfied"),
    }


def test_squeue_that_forgot_every_job_is_not_an_error() -> None:
    assert status.squeue_forgot_all("slurm_load_jobs error: Invalid job id specified\n")


def test_sacct_lines_keep_the_base_state_and_the_exit_code() -> None:
    jobs = status.parse_sacct("29|CANCELLED by 0|0:15|None\n24|FAILED|3:0|None\n22_[4-9]|PENDING|0:0|None\n")

    assert jobs == {"29": SlurmJob("29", "CANCELLED", None, 0), "24": SlurmJob("24", "FAILED", None, 3)}


def test_sacct_without_accounting_is_recognised() -> None:
    assert status.accounting_missing("sacct: error: Slurm accounting storage is disabled\n")
    assert not status.accounting_missing("")


def test_the_commands_ask_for_every_job_at_once() -> None:
    assert status.squeue_command(["41", "42_0"]) == (
        "date +%s && squeue -h -r -t all -j 41,42_0 -O 'JobArrayID:|,State:|,Reason:|,RestartCnt:'"
    )
    assert (
        status.sacct_command(["41", "42_0"]) == "sacct -X -D -n -P -j 41,42_0 -o JobID,State,ExitCode,Reason"
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [("PENDING", State.SUBMITTED), ("REQUEUED", State.SUBMITTED), ("CONFIGURING", State.SUBMITTED),
     ("RUNNING", State.RUNNING), ("COMPLETING", State.RUNNING), ("SUSPENDED", State.PAUSED)],
)  # fmt: skip
def test_live_slurm_states_map_to_live_task_states(state: str, expected: State) -> None:
    decided = status.job_status(SlurmJob("1", state), None)
    assert decided is not None and decided.state is expected


def test_a_completed_job_takes_its_exit_code_and_times_from_the_result() -> None:
    decided = status.job_status(SlurmJob("1", "COMPLETED"), OK)

    assert decided is not None
    assert (decided.state, decided.exit_code) == (State.SUCCEEDED, 0)
    assert decided.start_time is not None and decided.start_time.timestamp() == 100.0


def test_a_failed_job_takes_its_exit_code_and_error_from_the_result() -> None:
    decided = status.job_status(SlurmJob("1", "FAILED"), FAILED)

    assert decided is not None
    assert (decided.state, decided.exit_code, decided.reason) == (State.FAILED, 3, "RuntimeError: boom")


def test_a_job_slurm_failed_after_its_first_process_succeeded_is_failed() -> None:
    decided = status.job_status(SlurmJob("1", "FAILED"), OK)

    assert decided is not None and decided.state is State.FAILED
    assert "another process" in (decided.reason or "")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("51|TIMEOUT|0:0|None", "TIMEOUT: the job reached its time limit"),
        ("52|OUT_OF_MEMORY|0:125|None", "OUT_OF_MEMORY: the job ran out of memory"),
        ("53|PREEMPTED|0:0|None", "PREEMPTED: the job was preempted"),
        ("54|NODE_FAIL|1:0|None", "NODE_FAIL: a node of the job failed"),
    ],
)
def test_slurm_endings_become_failed_with_their_reason(line: str, reason: str) -> None:
    [job] = status.parse_sacct(line + "\n").values()

    decided = status.job_status(job, None)

    assert decided is not None and decided.state is State.FAILED
    assert (decided.reason or "").startswith(reason)


def test_a_timed_out_job_keeps_the_exit_code_its_runner_wrote() -> None:
    decided = status.job_status(SlurmJob("51", "TIMEOUT"), {**FAILED, "exit_code": 143})

    assert decided is not None and (decided.state, decided.exit_code) == (State.FAILED, 143)


def test_a_job_cancelled_in_slurm_is_cancelled() -> None:
    decided = status.job_status(SlurmJob("1", "CANCELLED"), None)

    assert decided is not None
    assert (decided.state, decided.reason) == (State.CANCELLED, status.CANCELLED_OUTSIDE)
    assert decided.failure == "cancelled"


def test_a_job_slurm_dropped_for_a_failed_dependency_is_cancelled_for_that() -> None:
    for reason in ("DependencyNeverSatisfied", "Dependency"):
        decided = status.job_status(SlurmJob("1", "CANCELLED", reason), None)
        assert decided is not None and (decided.state, decided.reason) == (
            State.CANCELLED,
            "dependency failed",
        )


def test_a_job_slurm_forgot_gets_its_final_state_from_the_result() -> None:
    decided = status.job_status(None, FAILED)

    assert decided is not None and (decided.state, decided.exit_code) == (State.FAILED, 3)


def test_without_a_result_an_ended_or_forgotten_job_is_undecided() -> None:
    assert status.job_status(None, None) is None
    assert status.job_status(SlurmJob("1", "COMPLETED"), None) is None
    assert status.job_status(SlurmJob("1", "FAILED"), None) is None
