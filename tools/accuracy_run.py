"""Train a ready net on a data set and record per-epoch test accuracy (the figures in
docs/accuracy.md come from this script).

    python tools/accuracy_run.py --model simple_conv --dataset fashion-mnist --epochs 15 \
        --out runs/acc-simple
"""
import argparse
import json
import math
import os
import time

import numpy as np

import xpnet
from xpnet import datasets
from xpnet.serialization import atomic_write_bytes, save_net

MODELS = {"simple_conv": xpnet.SimpleConvNet, "deep_conv": xpnet.DeepConvNet}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), default="simple_conv")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", choices=["const", "cosine"], default="cosine")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="runs/accuracy")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    (x, t), (xt, tt) = datasets.load(a.dataset, flatten=False)
    xpnet.seed(a.seed)
    net = MODELS[a.model](weight_decay_lambda=a.weight_decay, seed=a.seed, device=a.device)
    opt = xpnet.Adam(lr=a.lr)
    rng = np.random.default_rng(a.seed)
    n = len(x)
    steps = n // a.batch_size
    hist = {"args": vars(a), "epochs": [], "numpy": np.__version__, "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    for ep in range(a.epochs):
        if a.schedule == "cosine":
            opt.lr = a.lr * (0.5 * (1 + math.cos(math.pi * ep / a.epochs)))
        perm = rng.permutation(n)
        e0 = time.perf_counter()
        losses = []
        for i in range(steps):
            idx = perm[i * a.batch_size:(i + 1) * a.batch_size]
            net.gradient(x[idx], t[idx])
            opt.update(net.params, net.grads)
            if i % 50 == 0:
                losses.append(float(net.last_loss))
        train_s = time.perf_counter() - e0
        acc = net.accuracy(xt, tt, batch_size=500)
        tr = net.accuracy(x[:10000], t[:10000], batch_size=500)
        rec = {"epoch": ep + 1, "lr": opt.lr, "loss": float(np.mean(losses)), "train_acc_10k": tr,
               "test_acc": acc, "train_seconds": round(train_s, 1),
               "elapsed": round(time.perf_counter() - t0, 1)}
        hist["epochs"].append(rec)
        print(json.dumps(rec), flush=True)
        save_net(net, os.path.join(a.out, "params.npz"))
        atomic_write_bytes(os.path.join(a.out, "history.json"),
                           json.dumps(hist, indent=1).encode())


if __name__ == "__main__":
    main()
