"""Recipe A (docs/accuracy.md): SimpleConvNet on the MNIST sample embedded in xpnet,
with random shifts of up to 2 pixels and a cosine learning-rate schedule.

Data: ``xpnet.datasets.load_mnist_sample(flatten=False)``: the embedded 5,000 real MNIST
digits split (stratified, seed 0) into 4,000 training and 1,000 held-out test images;
the test images are never trained on nor used to pick an epoch. Recipe: the book's
SimpleConvNet with He initialisation, Adam (lr 0.001), batch 100, 20 epochs,
``lr_schedule="cosine"``, ``augment="shift:2"``; seeds 0, 1, 2. It prints each seed's
test accuracy after the last epoch and their mean.

    python tools/recipe_a.py                 # all three seeds (minutes each on 2 cores)
    python tools/recipe_a.py --seeds 0 --epochs 5 --augment ''     # a quick variant
    python tools/recipe_a.py --torch         # also PyTorch with the same recipe

``--torch`` trains the same architecture in PyTorch with the same data, batches and
schedule, and the same augmentation written with torch ops (zero padding by 2 and a
random 28x28 crop: what torchvision's ``RandomCrop(28, padding=2)`` does).
"""
import argparse
import json
import math
import time

import xpnet
from xpnet.datasets import load_mnist_sample
from xpnet.trainer import Trainer


def run_xpnet(seed, a, data):
    (x, t), (xt, tt) = data
    net = xpnet.SimpleConvNet(weight_init_std="he", seed=seed)
    t0 = time.perf_counter()
    h = Trainer(net, x, t, xt, tt, epochs=a.epochs, mini_batch_size=a.batch_size,
                optimizer="Adam", optimizer_param={"lr": a.lr}, seed=seed, verbose=a.verbose,
                lr_schedule=None if a.no_schedule else "cosine",
                augment=a.augment or None).train()
    return h["test_acc"][-1], time.perf_counter() - t0, h["test_acc"]


def run_torch(seed, a, data):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    (x, t), (xt, tt) = data
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, eps=1e-7)
    steps = -(-len(x) // a.batch_size) * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(
        math.pi * min(1.0, s / steps)))) if not a.no_schedule else None
    X, T, XT = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64)), torch.from_numpy(xt)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    accs = []
    for _ in range(a.epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), a.batch_size):
            idx = perm[i:i + a.batch_size]
            xb = X[idx]
            if a.augment:               # RandomCrop(28, padding=2), per image
                p = F.pad(xb, (2, 2, 2, 2))
                off = torch.from_numpy(rng.integers(0, 5, size=(len(idx), 2)))
                xb = torch.stack([p[k, :, off[k, 0]:off[k, 0] + 28, off[k, 1]:off[k, 1] + 28]
                                  for k in range(len(idx))])
            loss = F.cross_entropy(net(xb), T[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(XT[i:i + 500]).argmax(1) for i in range(0, len(xt), 500)])
        accs.append(float((pred.numpy() == tt).mean()))
    return accs[-1], time.perf_counter() - t0, accs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--augment", default="shift:2",
                    help="xpnet's augmentation spec ('' for none); --torch does shifts only")
    ap.add_argument("--no-schedule", action="store_true")
    ap.add_argument("--torch", action="store_true", help="also run PyTorch with the recipe")
    ap.add_argument("--skip-xpnet", action="store_true", help="with --torch: PyTorch only")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    data = load_mnist_sample(flatten=False)
    print("train %d / held-out test %d images (embedded MNIST sample, split seed 0)"
          % (len(data[0][0]), len(data[1][0])), flush=True)
    runners = ([] if a.skip_xpnet and a.torch else [("xpnet", run_xpnet)]) + (
        [("pytorch", run_torch)] if a.torch else [])
    for name, run in runners:
        finals = []
        for seed in a.seeds:
            acc, secs, per_epoch = run(seed, a, data)
            finals.append(acc)
            print(json.dumps({"library": name, "seed": seed, "test_acc": acc,
                              "seconds": round(secs, 1),
                              "per_epoch": [round(v, 4) for v in per_epoch]}), flush=True)
        print("%s: mean test accuracy over seeds %s: %.2f %%"
              % (name, a.seeds, 100 * sum(finals) / len(finals)), flush=True)


if __name__ == "__main__":
    main()
