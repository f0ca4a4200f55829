"""Winograd F(2x2, 3x3) against xpnet's im2col convolution on NumPy, forward, per
DeepConvNet layer shape: time (min and median of interleaved runs, one thread) and
float32 error against the float64 im2col result.

    PYTHONPATH=. python tools/winograd_probe.py [--batch 100] [--rounds 15]

A probe, not a kernel: 4x4 input tiles gathered by xpnet's strided im2col (stride 2),
B^T d B and A^T m A as eight and eight whole-array adds, the 16 GEMMs as one batched
``np.matmul``. It measured no faster than im2col (docs/performance.md), so xpnet does
not ship it; rerun it on a quiet machine before trying again.
"""
import argparse
import sys
import time

import numpy as np

from xpnet.backend import cpu_threads
from xpnet.backend import numpy_fast as nf

G = np.array([[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]])
def wfilter(W):
    U = np.einsum('ik,fckl,jl->ijfc', G, W.astype(np.float64), G)   # (4,4,FN,C)
    return U.reshape(16, W.shape[0], W.shape[1]).astype(W.dtype)
def wino_fwd(x, U, b, ph, pw, bufs):
    n, C, H, Wd = x.shape
    FN = U.shape[1]
    OH, OW = H + 2*ph - 2, Wd + 2*pw - 2
    th, tw = -(-OH//2), -(-OW//2)
    T = n*th*tw
    D = bufs.get('D')
    if D is None:
        D = bufs['D'] = np.empty((4,4,C,n,th,tw), x.dtype)
        bufs['t'] = np.empty((4,4,C*T), x.dtype); bufs['V'] = np.empty((4,4,C,T), x.dtype)
        bufs['M'] = np.empty((16, FN, T), x.dtype); bufs['S'] = np.empty((2,4,FN*T), x.dtype)
        bufs['Y'] = np.empty((2,2,FN,n,th,tw), x.dtype)
    nf._im2col_numpy(x, D.transpose(2,0,1,3,4,5), 2, 2, ph, pw, 0)
    d = D.reshape(4,4,C*T); t = bufs['t']
    np.subtract(d[0], d[2], out=t[0]); np.add(d[1], d[2], out=t[1])
    np.subtract(d[2], d[1], out=t[2]); np.subtract(d[1], d[3], out=t[3])
    V = bufs['V'].reshape(4,4,C*T)
    np.subtract(t[:,0], t[:,2], out=V[:,0]); np.add(t[:,1], t[:,2], out=V[:,1])
    np.subtract(t[:,2], t[:,1], out=V[:,2]); np.subtract(t[:,1], t[:,3], out=V[:,3])
    M = bufs['M']
    np.matmul(U, bufs['V'].reshape(16, C, T), out=M)
    m = M.reshape(4,4,FN*T); S = bufs['S']
    np.add(m[0], m[1], out=S[0]); S[0] += m[2]
    np.subtract(m[1], m[2], out=S[1]); S[1] -= m[3]
    Y = bufs['Y']; y4 = Y.reshape(2,2,FN*T)
    np.add(S[:,0], S[:,1], out=y4[:,0]); y4[:,0] += S[:,2]
    np.subtract(S[:,1], S[:,2], out=y4[:,1]); y4[:,1] -= S[:,3]
    y = np.empty((n, FN, OH, OW), x.dtype)
    if OH % 2 == 0 and OW % 2 == 0:
        yv = y.reshape(n, FN, th, 2, tw, 2).transpose(3,5,1,0,2,4)
        np.add(Y, b.reshape(FN,1,1,1), out=yv)
    else:
        raise NotImplementedError("odd output sizes are not handled by this probe")
    return y


SHAPES = [(1, 28, 16, 1), (16, 28, 16, 1), (16, 14, 32, 1), (32, 14, 32, 2), (32, 8, 64, 1),
          (64, 8, 64, 1)]   # DeepConvNet's convolutions: C, H (=W), FN, pad


def interleaved(fns, rounds):
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: (min(v) * 1e3, float(np.median(v)) * 1e3) for k, v in ts.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args(argv)
    cpu_threads.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("%-22s %10s %10s %9s %9s" % ("conv (batch %d)" % a.batch, "im2col ms", "wino ms",
                                       "err im2col", "err wino"))
    for C, H, FN, pad in SHAPES:
        x = rng.random((a.batch, C, H, H), dtype=np.float32)
        W = rng.standard_normal((FN, C, 3, 3), dtype=np.float32)
        b = rng.random(FN, dtype=np.float32)
        ws, bufs, U = {}, {}, wfilter(W)
        ref, _ = nf.conv2d_forward(*(v.astype(np.float64) for v in (x, W, b)), (1, 1), (pad, pad))
        err = lambda y: np.abs(y - ref).max() / np.abs(ref).max()
        e_i = err(nf.conv2d_forward(x, W, b, (1, 1), (pad, pad))[0])
        e_w = err(wino_fwd(x, U, b, pad, pad, bufs))
        r = interleaved({"im2col": lambda: nf.conv2d_forward(x, W, b, (1, 1), (pad, pad), ws),
                         "wino": lambda: wino_fwd(x, U, b, pad, pad, bufs)}, a.rounds)
        print("%-22s %4.2f/%5.2f %4.2f/%5.2f %9.1e %9.1e" % (
            "%d->%d, %dx%d pad %d" % (C, FN, H, H, pad), *r["im2col"], *r["wino"], e_i, e_w))
    print("times: min/median ms over %d interleaved rounds, one thread" % a.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
