"""Artifacts that live on the cluster (``store="slurm"``): recorded where they are with the
size and SHA-256 computed there, listed, and fetched over SFTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster
from runyard.errors import ArtifactError
from runyard_slurm.tunnel import session_for

ADDRESS = "ssh://{user}@{host}:{port}"


def address(cluster: Cluster, path: str) -> str:
    f = cluster.facts
    return ADDRESS.format(user=f.user, host=f.host, port=f.port) + path


def put(cluster: Cluster, path: str, data: bytes) -> None:
    cluster.sh(f"mkdir -p {path.rsplit('/', 1)[0]}")
    session_for(cluster.tunnel()).write(path, data)


@pytest.fixture
def remote(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    folder = f"{cluster.job_dir}/artifacts-{request.node.name}"
    yield folder  # type: ignore[misc]
    cluster.sh(f"rm -rf {folder}")


def test_a_file_on_the_cluster_is_recorded_with_its_size_and_sha256(cluster: Cluster, remote: str) -> None:
    data = b"weights" * 1000
    put(cluster, f"{remote}/model.pt", data)
    exp = run.Experiment("artifacts")

    artifact = exp.add_artifact("model", f"{remote}/model.pt", "the model", store="slurm")

    assert artifact.path == address(cluster, f"{remote}/model.pt")
    assert (artifact.size, artifact.sha256, artifact.store) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        "slurm",
    )
    assert exp.get_artifacts()["model"].path == artifact.path


@pytest.mark.alone
def test_a_recorded_file_is_fetched_over_sftp(cluster: Cluster, remote: str, tmp_path: Path) -> None:
    put(cluster, f"{remote}/model.pt", b"weights")
    exp = run.Experiment("artifacts")
    exp.add_artifact("model", f"{remote}/model.pt", store="slurm")

    fetched = exp.fetch_artifact("model", str(tmp_path / "model.pt"))

    assert Path(fetched).read_bytes() == b"weights"
    cached = Path(exp.fetch_artifact("model"))  # no destination: a cache under the runyard home
    assert cached.read_bytes() == b"weights" and "slurm-artifacts" in str(cached)


def test_a_file_changed_since_it_was_recorded_is_refused(
    cluster: Cluster, remote: str, tmp_path: Path
) -> None:
    put(cluster, f"{remote}/model.pt", b"weights")
    exp = run.Experiment("artifacts")
    exp.add_artifact("model", f"{remote}/model.pt", store="slurm")
    put(cluster, f"{remote}/model.pt", b"overwritten")

    with pytest.raises(ArtifactError, match="has changed since it was recorded"):
        exp.fetch_artifact("model", str(tmp_path / "model.pt"))
    assert not (tmp_path / "model.pt").exists()


def test_a_folder_is_recorded_listed_and_fetched(cluster: Cluster, remote: str, tmp_path: Path) -> None:
    put(cluster, f"{remote}/ckpt/a.bin", b"a")
    put(cluster, f"{remote}/ckpt/sub/b.bin", b"bb")
    exp = run.Experiment("artifacts")

    artifact = exp.add_artifact("ckpt", f"{remote}/ckpt", store="slurm")

    assert artifact.size == 3
    from runyard.plugins import plugin_manager

    assert plugin_manager().artifact_store("slurm").list(artifact) == ["a.bin", "sub/b.bin"]
    fetched = Path(exp.fetch_artifact("ckpt", str(tmp_path / "ckpt")))
    assert (fetched / "a.bin").read_bytes() == b"a" and (fetched / "sub" / "b.bin").read_bytes() == b"bb"


def test_a_relative_path_is_in_the_experiments_folder_on_the_cluster(cluster: Cluster) -> None:
    exp = run.Experiment("artifacts")
    exp.add(
        run.Script(inline='echo trained > "$RUNYARD_TASK_DIR/model.txt"'),
        executor=cluster.executor(),
        name="train",
    )
    exp.run()

    artifact = exp.add_artifact("model", "tasks/train/model.txt", store="slurm")

    assert artifact.path == address(cluster, f"{cluster.job_dir}/{exp.experiment_id}/tasks/train/model.txt")
    assert artifact.size == len(b"trained\n")


def test_a_path_that_does_not_exist_is_refused(cluster: Cluster, remote: str) -> None:
    exp = run.Experiment("artifacts")

    with pytest.raises(ArtifactError, match=r"does not exist on root@127\.0\.0\.1"):
        exp.add_artifact("model", f"{remote}/nothing.pt", store="slurm")


def test_an_ssh_address_names_the_host_explicitly(cluster: Cluster, remote: str) -> None:
    put(cluster, f"{remote}/x.txt", b"x")
    exp = run.Experiment("artifacts")

    artifact = exp.add_artifact("x", address(cluster, f"{remote}/x.txt"), store="slurm")

    assert (artifact.size, artifact.sha256) == (1, hashlib.sha256(b"x").hexdigest())


def test_task_outputs_can_be_used_as_cluster_artifacts(cluster: Cluster) -> None:
    exp = run.Experiment("artifacts")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(), name="t")
    exp.run()

    artifact = exp.add_artifact("stdout", "tasks/t/attempt-1/stdout.log", store="slurm")

    assert artifact.sha256 == hashlib.sha256(b"hello world\n").hexdigest()
