"""Train a classifier on scikit-learn's bundled digits data (no download) and log its accuracy.

Runs the same way under mltrain (metrics go to the run history) and by hand (``python train.py``),
where ``Run.get_context()`` returns an offline run.
"""

import argparse
import os
import pickle

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

try:
    from mltrain import Run
except ImportError:  # running by hand, without mltrain on the path
    Run = None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="CSV of 64 pixel columns then the label; default: sklearn's digits")
    parser.add_argument("--model-dir", default="outputs", help="folder to write model.pkl to")
    args = parser.parse_args()

    run = Run.get_context() if Run else None
    if args.data:
        table = np.loadtxt(args.data, delimiter=",")
        features, labels = table[:, :-1], table[:, -1].astype(int)
    else:
        digits = load_digits()
        features, labels = digits.data, digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=args.seed, stratify=labels
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    classes = np.unique(labels)
    model = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=args.seed)
    rng = np.random.default_rng(args.seed)
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        accuracy = accuracy_score(y_test, model.predict(x_test))
        print(f"epoch {epoch:2d}  accuracy {accuracy:.4f}")
        if run:
            run.log("accuracy", accuracy, step=epoch)
    if run:
        run.log("final_accuracy", accuracy)
        run.set_tags({"model": "SGDClassifier"})
    os.makedirs(args.model_dir, exist_ok=True)
    path = os.path.join(args.model_dir, "model.pkl")
    with open(path, "wb") as f:
        pickle.dump({"scaler": scaler, "model": model}, f)
    print(f"final accuracy {accuracy:.4f}; model written to {path}")


if __name__ == "__main__":
    main()
