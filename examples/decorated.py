"""FlowApp: functions that run as tasks. Run it: `python decorated.py` (from this directory)."""

from __future__ import annotations

from flow import FlowApp

app = FlowApp()


@app.function(memory=512)
def train_model(data_path: str, epochs: int = 100) -> dict[str, object]:
    loss = 1.0
    for _ in range(epochs):
        loss *= 0.9
    return {"data": data_path, "epochs": epochs, "loss": round(loss, 6)}


@app.function()
def square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    print("local:", train_model("./local.csv", epochs=2))
    print("remote:", train_model.remote("s3://bucket/data", epochs=200))
    task = train_model.spawn("s3://bucket/other", epochs=3)
    print("spawned:", task.task_id, task.result())
    print("map:", square.map(range(5)))
