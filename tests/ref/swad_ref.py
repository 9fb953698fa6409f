"""swad_ref: an independent rendering of SWAD's LossValley rule (Cha et al.,
NeurIPS 2021) in the paper's terms (t_s, t_e over evaluations), with the walk
back and the lagged decisions of its code but without the code's indexing
defects (its issue #28), checked against lib/train/swad through swad_run.

    swad_ref.py DRIVER

For each scripted run (hand-made cases and seeded random ones) it runs DRIVER
(tests/ref/swad_run.c) and compares the convergence segment, the evaluation
at which the valley died, the steps whose iterates are averaged and the
average itself (float64 mean of the float32 iterates) on small vectors."""
import random
import subprocess
import sys

import numpy as np

NUMEL = 5


def rule(losses, ns, ne, r):
    """(t_s, t_e, stop) over segment indices: t_s the first segment averaged
    (after the walk back), t_e the last, conv the convergence segment, stop
    the number of evaluations run (None: all); None for t_s when the rule
    never converged."""
    E = len(losses) - 1
    conv = thr = None
    for i in range(ns - 1, E + 1):
        win = losses[i - ns + 1:i + 1]
        if all(win[0] <= x for x in win):
            conv, seen = i - ns + 1, i
            total = 0.0
            for x in win:
                total += x
            thr = (1.0 + r) * (total / ns)
            break
    if conv is None:
        return None, None, None, None
    # the walk back over at most ne - ns segments before the convergence one
    t_s = conv
    while t_s - 1 >= max(0, conv - max(ne - ns, 0)) and not losses[t_s - 1] > thr:
        t_s -= 1
    # the valley dies at the first window of ne losses after conv, all above
    for i in range(conv + ne, E + 1):
        if min(losses[i - ne + 1:i + 1]) > thr:
            return t_s, i - ne, conv, max(i, seen) + 1
    # alive at the end: every segment up to the last one at or under thr
    t_e = max(k for k in range(conv, E + 1) if not losses[k] > thr)
    return t_s, t_e, conv, None


def iterate(t):
    return np.array([np.float32((7 * t + 13 * i) % 101) / np.float32(101) - np.float32(0.5)
                     for i in range(NUMEL)], dtype=np.float32)


def expect(steps, losses, ns, ne, r):
    t_s, t_e, conv, stop = rule(losses, ns, ne, r)
    start = lambda j: steps[j - 1] + 1 if j > 0 else 0
    if t_s is None:  # not converged: the last segment
        t_s = t_e = len(losses) - 1
        conv = -1
    lo, hi = start(t_s), steps[t_e]
    avg = np.mean([iterate(t).astype(np.float64) for t in range(lo, hi + 1)], axis=0)
    return conv, stop if stop is not None else -1, (lo, hi, hi - lo + 1), avg


def run(driver, steps, losses, ns, ne, r):
    script = "".join("%d %r\n" % (s, l) for s, l in zip(steps, losses))
    out = subprocess.run([driver, str(ns), str(ne), repr(r), str(NUMEL)], input=script, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    conv = int(out[0].split()[1])
    dead = int(out[1].split()[1])
    w = tuple(int(x) for x in out[2].split()[1:])
    avg = np.array([float(x) for x in out[3:3 + NUMEL]])
    return conv, dead, w, avg


def every(n, k):  # DomainBed's evaluations: step 0, every k, the last
    return sorted(set(list(range(0, n, k)) + [n - 1]))


CASES = [
    ("never converges", [3.0 - 0.1 * i for i in range(12)]),
    ("early convergence (segment 0)", [1.0, 1.1, 1.2, 1.15, 1.1, 1.2, 1.25, 1.3, 1.2, 1.1, 1.2, 1.3]),
    ("walk back stops above the threshold", [3.0, 2.0, 1.2, 1.0, 1.05, 1.1, 1.3, 1.2, 1.1, 1.2, 1.25, 1.3]),
    ("walk back over Ne-Ns segments at most", [1.10, 1.09, 1.08, 1.07, 1.06, 1.05, 1.0, 1.01, 1.02, 1.1, 1.0]),
    ("dead valley", [2, 1.5, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 0.5, 0.4]),
    ("convergence at the last evaluation", [3.0, 2.0, 1.0, 1.1, 1.2]),
    ("ties", [1.0] * 10),
    ("one evaluation", [1.0]),
]


def main():
    driver = sys.argv[1]
    checks = []
    for name, losses in CASES:
        checks.append((name, every(20 * len(losses) - 15, 20)[:len(losses)], losses, 3, 6, 0.3))
    rnd = random.Random(11)
    for k in range(300):
        n = rnd.randint(1, 30)
        steps, s = [], rnd.randint(0, 3)
        for _ in range(n):
            steps.append(s)
            s += rnd.randint(1, 5)
        losses, l = [], rnd.uniform(0.5, 3)
        for _ in range(n):
            l = max(0.01, l + rnd.uniform(-0.5, 0.4))
            losses.append(round(l, rnd.choice([1, 2, 6])))
        ns, ne = rnd.randint(1, 4), rnd.randint(1, 7)
        checks.append(("random %d (Ns %d, Ne %d)" % (k, ns, ne), steps, losses, ns, ne, rnd.choice([0.0, 0.1, 0.3])))
    bad = 0
    for name, steps, losses, ns, ne, r in checks:
        want = expect(steps, losses, ns, ne, r)
        got = run(driver, steps, losses, ns, ne, r)
        same = want[:3] == got[:3] and np.allclose(got[3], want[3], rtol=0, atol=2e-6)
        if not same or not name.startswith("random"):
            print("%s: swad %s: convergence %d, dead %d, steps %d..%d (%d)%s" % (
                "PASS" if same else "FAIL", name, got[0], got[1], got[2][0], got[2][1], got[2][2],
                "" if same else "; want convergence %d, dead %d, steps %d..%d (%d), average error %.3g" % (
                    want[0], want[1], want[2][0], want[2][1], want[2][2], np.abs(got[3] - want[3]).max())))
        bad += not same
    print("%s: swad: %d random scripted runs (Ns 1-4, Ne 1-7) choose the reference's segments and average" % (
        "PASS" if bad == 0 else "FAIL", len(checks) - len(CASES)))


if __name__ == "__main__":
    main()
