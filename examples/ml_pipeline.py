"""The experiment guide's ML pipeline, run on this machine with the local executor.

    python examples/ml_pipeline.py

    data-preparation ──> training-0 (lr 0.01) ──┐
                    ├──> training-1 (lr 0.1)  ──┼──> evaluation ──> deployment
                    └──> training-2 (lr 0.5)  ──┘

Each stage is a task process doing real (tiny, pure-Python) work: data preparation writes
a synthetic regression dataset, each training run fits a linear model to it by gradient
descent (printing ``loss: ...`` as it goes), evaluation scores every trained model on the
held-out rows and picks the best, and deployment copies the best model to a ``deployed``
folder. Every file goes to the experiment's folder, under ``$RUNYARD_HOME`` (default
``~/.runyard``). The task targets are defined in this script: runyard loads them from this
file in each task process (without running the ``__main__`` block again).

Exits 0 when every task succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time

import runyard as run

LEARNING_RATES = [0.01, 0.1, 0.5]
EPOCHS = 30
TRUE_WEIGHTS = (2.5, -1.5)
TRUE_BIAS = 0.7


# ----------------------------------------------------------------------------- the tasks
def _read_rows(path: str) -> list[tuple[float, float, float]]:
    with open(path) as f:
        next(f)  # header
        return [tuple(float(v) for v in line.split(",")) for line in f]  # type: ignore[misc]


def _mse(weights: list[float], bias: float, rows: list[tuple[float, float, float]]) -> float:
    return sum((weights[0] * x1 + weights[1] * x2 + bias - y) ** 2 for x1, x2, y in rows) / len(rows)


def prepare_data(out_dir: str, rows: int = 200, validation_share: float = 0.25, seed: int = 0) -> None:
    """Write train.csv and valid.csv: y = 2.5 x1 - 1.5 x2 + 0.7 + noise."""
    rng = random.Random(seed)
    data = []
    for _ in range(rows):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        y = TRUE_WEIGHTS[0] * x1 + TRUE_WEIGHTS[1] * x2 + TRUE_BIAS + rng.gauss(0, 0.1)
        data.append((x1, x2, y))
    n_valid = int(rows * validation_share)
    os.makedirs(out_dir, exist_ok=True)
    for name, part in (("valid.csv", data[:n_valid]), ("train.csv", data[n_valid:])):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("x1,x2,y\n")
            f.writelines(f"{x1:.6f},{x2:.6f},{y:.6f}\n" for x1, x2, y in part)
    print(f"wrote {rows - n_valid} training and {n_valid} validation rows to {out_dir}")


def train(data_dir: str, learning_rate: float, model_path: str, epochs: int = EPOCHS) -> None:
    """Fit y = w1 x1 + w2 x2 + b by full-batch gradient descent; save the model as JSON."""
    rows = _read_rows(os.path.join(data_dir, "train.csv"))
    n = len(rows)
    weights, bias = [0.0, 0.0], 0.0
    loss = _mse(weights, bias, rows)
    print(f"training with learning rate {learning_rate} on {n} rows, initial loss: {loss:.4f}")
    for epoch in range(1, epochs + 1):
        errors = [weights[0] * x1 + weights[1] * x2 + bias - y for x1, x2, y in rows]
        weights[0] -= learning_rate * 2 * sum(e * r[0] for e, r in zip(errors, rows, strict=True)) / n
        weights[1] -= learning_rate * 2 * sum(e * r[1] for e, r in zip(errors, rows, strict=True)) / n
        bias -= learning_rate * 2 * sum(errors) / n
        loss = _mse(weights, bias, rows)
        print(f"epoch {epoch} loss: {loss:.4f}")  # (runyard reads these lines as the metric "loss")
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    with open(model_path, "w") as f:
        json.dump({"learning_rate": learning_rate, "weights": weights, "bias": bias, "train_loss": loss}, f)
    print(f"saved {model_path}")


def evaluate(data_dir: str, model_paths: list[str], report_path: str) -> None:
    """Score every model on the validation rows; write a report naming the best."""
    rows = _read_rows(os.path.join(data_dir, "valid.csv"))
    scores = {}
    for path in model_paths:
        with open(path) as f:
            model = json.load(f)
        scores[path] = {
            "learning_rate": model["learning_rate"],
            "train_loss": model["train_loss"],
            "validation_loss": _mse(model["weights"], model["bias"], rows),
        }
        print(f"lr {model['learning_rate']}: validation_loss={scores[path]['validation_loss']:.4f}")
    best = min(scores, key=lambda p: scores[p]["validation_loss"])
    with open(report_path, "w") as f:
        json.dump({"best_model_path": best, "models": scores}, f, indent=2)
    print(f"best: lr {scores[best]['learning_rate']} ({best})")


def deploy(report_path: str, deploy_dir: str) -> None:
    """Copy the best model to ``deploy_dir`` and mark it deployed."""
    with open(report_path) as f:
        best = json.load(f)["best_model_path"]
    os.makedirs(deploy_dir, exist_ok=True)
    shutil.copyfile(best, os.path.join(deploy_dir, "model.json"))
    with open(os.path.join(deploy_dir, "deployed"), "w") as f:
        f.write(f"{best} deployed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    print(f"deployed {best} to {deploy_dir}")


# ----------------------------------------------------------------------------- the experiment
def create_ml_pipeline() -> tuple[run.Experiment, dict[str, str]]:
    """The experiment, its tasks added (not launched), and where its files go."""
    exp = run.Experiment(
        "ml-pipeline",
        description="Learning-rate sweep of a linear model, evaluated and deployed",
        tags=["example", "sweep"],
        metadata={"model": "linear-regression", "learning_rates": LEARNING_RATES, "epochs": EPOCHS},
    )
    work = os.path.join(exp.directory, "work")
    paths = {
        "data": os.path.join(work, "data"),
        "models": os.path.join(work, "models"),
        "report": os.path.join(work, "evaluation.json"),
        "deployed": os.path.join(work, "deployed"),
    }
    executor = run.LocalExecutor()
    with exp:
        data_id = exp.add(
            run.Config(prepare_data, out_dir=paths["data"]), executor=executor, name="data-preparation"
        )
        model_paths = [os.path.join(paths["models"], f"lr-{lr}.json") for lr in LEARNING_RATES]
        training_ids = exp.add(
            [
                run.Config(train, data_dir=paths["data"], learning_rate=lr, model_path=path)
                for lr, path in zip(LEARNING_RATES, model_paths, strict=True)
            ],
            executor=executor,
            name="training",
            dependencies=[data_id],
        )
        evaluation_id = exp.add(
            run.Config(
                evaluate, data_dir=paths["data"], model_paths=model_paths, report_path=paths["report"]
            ),
            executor=executor,
            name="evaluation",
            dependencies=training_ids,  # fans in: waits for every variant
        )
        exp.add(
            run.Config(deploy, report_path=paths["report"], deploy_dir=paths["deployed"]),
            executor=executor,
            name="deployment",
            dependencies=[evaluation_id],
        )
    return exp, paths


def main() -> int:
    exp, paths = create_ml_pipeline()
    state = exp.run()  # attached: live progress until every task has ended

    print(f"\nfinal status: {state}")
    for task in exp.tasks:
        took = f"{task.duration.total_seconds():.2f}s" if task.duration is not None else "-"
        print(f"  {task.name:<17} {task.status:<9} {took:>7}" + (f"  ({task.reason})" if task.reason else ""))
    if state != "SUCCEEDED":
        print(
            f"the pipeline did not succeed; a task's output: runyard logs {exp.experiment_id} TASK",
            file=sys.stderr,
        )
        return 1

    with open(paths["report"]) as f:
        report = json.load(f)
    print("\nlearning rate  train loss  validation loss")
    for score in report["models"].values():
        print(f"  {score['learning_rate']:<12} {score['train_loss']:<11.4f} {score['validation_loss']:.4f}")
    best = report["models"][report["best_model_path"]]
    print(f"best learning rate: {best['learning_rate']}")

    exp.add_metadata(
        {"best_learning_rate": best["learning_rate"], "best_validation_loss": best["validation_loss"]}
    )
    artifact = exp.add_artifact(
        "best_model",
        report["best_model_path"],
        description=f"linear model trained with lr {best['learning_rate']}",
    )
    print(f"best model artifact: {artifact.path} ({artifact.size} bytes, sha256 {artifact.sha256[:12]}...)")
    print(f"deployed: {os.path.join(paths['deployed'], 'model.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
