"""Train the lecture's MLP on the disk problem and print the train and test error.

python examples/train_disk.py                       # NumPy
PORTPROP_BACKEND=torch python examples/train_disk.py
PORTPROP_BACKEND=jax python examples/train_disk.py
"""

from __future__ import annotations

import argparse
import time

import portprop as pp


def error_rate(model: pp.Module, X: object, y: object) -> float:
    xp = model.backend.xp
    predicted = xp.argmax(model.forward(X), axis=1)
    return float(xp.mean(xp.astype(predicted != y, model.dtype)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=["cross_entropy", "mse"], default="cross_entropy")
    parser.add_argument("--epochs", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pp.manual_seed(args.seed)
    X_train, y_train = pp.datasets.make_disk(1000)
    X_test, y_test = pp.datasets.make_disk(1000)
    model = pp.Sequential(
        pp.Linear(2, 25),
        pp.ReLU(),
        pp.Linear(25, 25),
        pp.ReLU(),
        pp.Linear(25, 25),
        pp.ReLU(),
        pp.Linear(25, 2),
    )
    xp = model.backend.xp
    if args.loss == "mse":
        loss: pp.Loss = pp.MSELoss()
        targets = xp.astype(
            y_train[:, None] == xp.arange(2, device=model.backend.device), model.dtype
        )
    else:
        loss = pp.CrossEntropyLoss()
        targets = y_train
    opt = pp.SGD(model.parameters(), lr=0.1 if args.loss == "cross_entropy" else 0.05, momentum=0.9)

    start = time.perf_counter()
    batch = 100
    for _epoch in range(args.epochs):
        for i in range(0, 1000, batch):
            out = model.forward(X_train[i : i + batch, :])
            loss.forward(out, targets[i : i + batch])
            model.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            opt.step()
    elapsed = time.perf_counter() - start
    print(
        f"backend {model.backend.name}, loss {args.loss}, {args.epochs} epochs in {elapsed:.1f} s"
    )
    print(f"train error {100 * error_rate(model, X_train, y_train):.1f}%")
    print(f"test error  {100 * error_rate(model, X_test, y_test):.1f}%")


if __name__ == "__main__":
    main()
