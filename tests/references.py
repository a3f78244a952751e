"""Slow, obviously-correct loop references written from the specs (``../shared/ucdir-spec.md``,
``../shared/protoot-spec.md``), shared by the loss, method and ProtoOT tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def unit(*shape, seed=0):
    """Unit rows of a seeded float64 normal matrix of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


# ----------------------------------------------------------------------------- UCDIR (spec section 2)
def ref_instance(q, k, bank, ids, T):
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / T)
        neg = sum(math.exp(float(q[i] @ bank[j]) / T) for j in range(bank.shape[0]) if j != int(ids[i]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_cluster(q, k, bank, ids, assign, protos, T, thr):
    num, den = 0.0, 0.0
    for i in range(q.shape[0]):
        s = [float(q[i] @ bank[j]) / T for j in range(bank.shape[0])]
        lse = math.log(sum(math.exp(v) for v in s))
        c = int(assign[ids[i]])
        pos = [j for j in range(bank.shape[0]) if int(assign[j]) == c]
        l_i = sum(s[j] - lse for j in pos) / (len(pos) + 1e-8)
        logits = [float(k[i] @ protos[m]) / T for m in range(protos.shape[0])]
        conf = math.exp(logits[c]) / sum(math.exp(v) for v in logits)
        w = 1.0 if conf > thr else 0.0
        num += w * l_i
        den += w
    return -num / (den + 1e-8)


def ref_entropy(q, protos, tau):
    total = 0.0
    for i in range(q.shape[0]):
        z = [float(q[i] @ protos[m]) / tau for m in range(protos.shape[0])]
        mx = max(z)
        e = [math.exp(v - mx) for v in z]
        p = [v / sum(e) for v in e]
        total += -sum(pi * math.log(pi) for pi in p if pi > 0)
    return total / q.shape[0]


def ref_dod(q, pa, pb, tau):
    def soft(x, P):
        z = [float(x @ P[m]) / tau for m in range(P.shape[0])]
        mx = max(z)
        e = [math.exp(v - mx) for v in z]
        return [v / sum(e) for v in e]

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    a = [soft(x, pa) for x in q]
    b = [soft(x, pb) for x in q]
    n = len(a)
    return sum(sum(((1 - cos(a[i], a[j])) - (1 - cos(b[i], b[j]))) ** 2 for j in range(n)) for i in range(n)) / n


# ----------------------------------------------------------------------------- ProtoOT (spec sections 3-5)
def sinkhorn_loop(S, beta, eps, iters):
    """Section 3, written with Python lists."""
    n, k = len(S), len(S[0])
    Q = [[math.exp(S[i][j] / eps) for i in range(n)] for j in range(k)]  # K x N
    total = sum(map(sum, Q))
    Q = [[v / total for v in row] for row in Q]
    for _ in range(iters):
        for j in range(k):
            s = sum(Q[j])
            Q[j] = [v / s * beta[j] for v in Q[j]]
        for i in range(n):
            s = sum(Q[j][i] for j in range(k))
            for j in range(k):
                Q[j][i] = Q[j][i] / s / n
    return [[Q[j][i] * n for j in range(k)] for i in range(n)]  # N x K


def ce_loop(pos, negs, t):
    logits = [pos / t] + [v / t for v in negs]
    m = max(logits)
    return -(logits[0] - m - math.log(sum(math.exp(v - m) for v in logits)))


def in_domain_loop(q, k, bank, ids, P, plan, t, w_nn, w_p):
    """Section 4, one query at a time."""
    out = []
    for i in range(len(q)):
        ti = int(ids[i])
        m = max(range(len(P)), key=lambda j: float(plan[ti][j]))
        sims = [float(k[i] @ bank[j]) for j in range(len(bank))]
        norm = math.sqrt(sum(v * v for v in sims))
        sims = [v / norm for v in sims]  # the reference's row normalisation (argmax unchanged)
        nn = max((j for j in range(len(bank)) if j != ti), key=lambda j: sims[j])
        negs = [float(q[i] @ P[j]) for j in range(len(P)) if j != m]
        out.append(ce_loop(float(q[i] @ k[i]), negs, t) + w_nn * ce_loop(float(q[i] @ bank[nn]), negs, t)
                   + w_p * ce_loop(float(q[i] @ P[m]), negs, t))
    return sum(out) / len(out)


def cross_loop(q, ids, Pe, plan, t, normalised, Pd=None):
    """Section 5, one query at a time; with ``Pd`` the own domain's prototypes join the negatives
    (the opt-in ``"joint"``)."""
    out = []
    for i in range(len(q)):
        c = max(range(len(Pe)), key=lambda j: float(plan[int(ids[i])][j]))
        row = [float(q[i] @ Pe[j]) for j in range(len(Pe))]
        norm = math.sqrt(sum(v * v for v in row)) if normalised else 1.0
        own = [] if Pd is None else [float(q[i] @ Pd[j]) for j in range(len(Pd))]
        out.append(ce_loop(row[c], [row[j] / norm for j in range(len(Pe)) if j != c] + own, t))
    return sum(out) / len(out)
